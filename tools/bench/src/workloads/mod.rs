//! The workloads and what they share: the two clusters, the sizes of this run, the report the
//! results go into, and the helpers for a fair measurement (caches dropped before each timed step,
//! systems interleaved run by run so slow drifts in the machine's load hit all of them alike).

mod cluster;
mod files;
mod io;
mod master_scale;
mod master_scale_mfs;

pub use io::first_touch_count;

use std::collections::HashMap;
use std::fs::File;
use std::os::fd::IntoRawFd;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::ValueEnum;

use crate::cluster_elkfs::{ElkBinaries, ElkCluster};
use crate::cluster_moosefs::MfsCluster;
use crate::interrupt;
use crate::progress;
use crate::report::{Column, Metric, Report};

/// A workload that can be picked by name on the command line. They always run in this order
/// (the chunkserver loss last: it leaves both clusters one chunkserver short).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, ValueEnum)]
pub enum Workload {
    /// Sequential write of one file in 1 MiB blocks, timed from open to close (what cp sees).
    SeqWrite,
    /// The same write with an fsync before the close.
    SeqWriteFsync,
    /// Sequential read of that file in 1 MiB blocks, after dropping the page caches.
    SeqRead,
    /// 4 KiB random reads of that file with fio, 1 and 4 parallel readers, and reads that each
    /// touch a 64 KiB block for the first time.
    RandRead,
    /// Empty files in one directory: create, stat, unlink.
    EmptyFiles,
    /// 4 KiB files: create and write, read back, unlink.
    SmallFiles,
    /// ElkFS's creates per second with `sync_commit = true`, when the master has that setting.
    SyncCommit,
    /// `ls -l` of a directory with 100 000 entries, and each master's RSS with those files.
    LargeDir,
    /// ElkFS only: a million files created through the client library, the master's RSS at
    /// 100 000 and 1 000 000 of them, and the time from a restart after SIGKILL to its first
    /// lookup answered.
    MasterScale,
    /// A chunkserver killed: time until every chunk is back at goal 2.
    ChunkserverLoss,
}

impl Workload {
    /// Every workload, in running order.
    pub fn all() -> Vec<Workload> {
        Workload::value_variants().to_vec()
    }

    /// The name used on the command line.
    pub fn name(self) -> String {
        self.to_possible_value()
            .map(|v| v.get_name().to_owned())
            .unwrap_or_else(|| format!("{self:?}"))
    }
}

/// How big and how long this run's workloads are.
#[derive(Clone, Debug, PartialEq)]
pub struct Sizes {
    /// Size of the sequentially written file (and the one read at random).
    pub file_bytes: u64,
    /// Files in the empty-file and 4 KiB-file workloads.
    pub files: usize,
    /// Entries in the large directory.
    pub dir_entries: usize,
    /// Repetitions of each measurement.
    pub runs: usize,
    /// Seconds each fio random-read job is measured.
    pub randread_secs: u32,
    /// Size of the file written before a chunkserver is killed.
    pub loss_file_bytes: u64,
    /// How long chunks get to be back at goal after a chunkserver is lost.
    pub recovery_timeout: Duration,
    /// Files the master-scale workload creates.
    pub scale_files: usize,
}

const MIB: u64 = 1 << 20;

impl Sizes {
    /// A full run (about 20 minutes).
    pub fn full() -> Self {
        Sizes {
            file_bytes: 1024 * MIB,
            files: 10_000,
            dir_entries: 100_000,
            runs: 3,
            randread_secs: 8,
            loss_file_bytes: 1024 * MIB,
            recovery_timeout: Duration::from_secs(60),
            scale_files: 1_000_000,
        }
    }

    /// A short run (about 3 minutes): smaller sizes, one repetition.
    pub fn quick() -> Self {
        Sizes {
            file_bytes: 256 * MIB,
            files: 2_000,
            dir_entries: 10_000,
            runs: 1,
            randread_secs: 3,
            loss_file_bytes: 256 * MIB,
            recovery_timeout: Duration::from_secs(20),
            scale_files: 100_000,
        }
    }
}

/// Everything a workload works with.
pub struct Bench {
    /// The ElkFS cluster (default settings).
    pub elk: ElkCluster,
    /// The MooseFS cluster with its two mounts.
    pub mfs: MfsCluster,
    /// The ElkFS binaries, for clusters a workload starts itself.
    pub bins: ElkBinaries,
    /// Where clusters a workload starts itself keep their files.
    pub work_dir: PathBuf,
    /// Sizes of this run.
    pub sizes: Sizes,
    /// The results.
    pub report: Report,
    /// Observations worth a line in the report (failures, things that are not measured).
    pub notes: Vec<String>,
    /// The file the sequential workloads last wrote through each column's mount.
    data_files: HashMap<Column, PathBuf>,
    /// Each master's RSS right after the clusters started, in MiB.
    idle_rss: HashMap<Column, f64>,
}

impl Bench {
    /// Takes the started clusters and notes each master's RSS while it is still empty.
    pub fn new(
        elk: ElkCluster,
        mfs: MfsCluster,
        bins: ElkBinaries,
        work_dir: &Path,
        sizes: Sizes,
    ) -> anyhow::Result<Self> {
        let idle_rss = HashMap::from([
            (Column::Elk, cluster::rss_mib(elk.master_pid()?)?),
            (Column::Mfs, cluster::rss_mib(mfs.master_pid()?)?),
        ]);
        Ok(Bench {
            elk,
            mfs,
            bins,
            work_dir: work_dir.to_path_buf(),
            sizes,
            report: Report::default(),
            notes: Vec::new(),
            data_files: HashMap::new(),
            idle_rss,
        })
    }

    /// Runs `workloads` in their fixed order.
    pub fn run(&mut self, workloads: &[Workload]) -> anyhow::Result<()> {
        let mut order = workloads.to_vec();
        order.sort();
        order.dedup();
        for workload in order {
            interrupt::check()?;
            progress::step(&format!("== {} ==", workload.name()));
            match workload {
                Workload::SeqWrite => io::seq_write(self, false),
                Workload::SeqWriteFsync => io::seq_write(self, true),
                Workload::SeqRead => io::seq_read(self),
                Workload::RandRead => io::rand_read(self),
                Workload::EmptyFiles => files::empty_files(self),
                Workload::SmallFiles => files::small_files(self),
                Workload::SyncCommit => cluster::sync_commit(self),
                Workload::LargeDir => files::large_dir(self),
                Workload::MasterScale => master_scale::master_scale(self),
                Workload::ChunkserverLoss => cluster::chunkserver_loss(self),
            }
            .with_context(|| format!("workload {}", workload.name()))?;
        }
        Ok(())
    }

    /// Leaves mounted only the system `column` belongs to (both MooseFS mounts for either
    /// MooseFS column). An idle mount of the other system was measured to slow metadata
    /// operations after each cache drop: with an idle `mfsmount` beside it, ElkFS's creates in
    /// `elkfs up` ran a third slower after a `sync` and a cache drop, and 2-19 % slower with it
    /// unmounted (docs/PERFORMANCE.md).
    pub fn isolate(&mut self, column: Column) -> anyhow::Result<()> {
        match column {
            Column::Elk => {
                self.mfs.unmount();
                self.elk.mount()
            }
            Column::Mfs | Column::MfsDirect => {
                self.elk.unmount();
                self.mfs.mount()
            }
        }
    }

    /// Mounts both systems again after [`Bench::isolate`].
    pub fn mount_both(&mut self) -> anyhow::Result<()> {
        self.elk.mount()?;
        self.mfs.mount()
    }

    /// The mountpoint a column's workloads run in.
    pub fn mount(&self, column: Column) -> anyhow::Result<PathBuf> {
        Ok(match column {
            Column::Elk => self.elk.mount_path()?,
            Column::Mfs => self.mfs.mount_path(MfsCluster::DEFAULT_MOUNT)?,
            Column::MfsDirect => self.mfs.mount_path(MfsCluster::DIRECT_MOUNT)?,
        }
        .to_path_buf())
    }

    /// A fresh, empty directory for one step of a workload on `column`'s mount. MooseFS's two
    /// mounts share a namespace, so the name includes the column.
    pub fn scratch_dir(&self, column: Column, name: &str) -> anyhow::Result<PathBuf> {
        let key = match column {
            Column::Elk => "elk",
            Column::Mfs => "mfs",
            Column::MfsDirect => "mfs-direct",
        };
        let dir = self
            .mount(column)?
            .join("elkfs-bench")
            .join(format!("{key}-{name}"));
        if dir.exists() {
            std::fs::remove_dir_all(&dir).with_context(|| format!("removing {}", dir.display()))?;
        }
        std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        Ok(dir)
    }

    /// Records one run's value and prints it.
    pub fn record(&mut self, metric: &Metric, column: Column, value: f64) {
        progress::step(&format!(
            "  {:<15} {}: {}",
            column.label(),
            metric.label,
            metric.unit.format(value)
        ));
        self.report.add_sample(metric, column, value);
    }
}

/// Writes dirty pages out and drops the page, dentry and inode caches, so that a timed step
/// starts from the disk and from a quiet machine (no writeback of the previous step running).
pub fn settle() -> anyhow::Result<()> {
    // SAFETY: sync(2) has no preconditions.
    unsafe { libc::sync() };
    std::fs::write("/proc/sys/vm/drop_caches", "3\n").context("dropping the page cache")
}

/// Runs `f` and returns how many seconds it took.
pub fn timed(f: impl FnOnce() -> anyhow::Result<()>) -> anyhow::Result<f64> {
    let start = Instant::now();
    f()?;
    Ok(start.elapsed().as_secs_f64())
}

/// Closes `file` and reports the error a plain drop would hide (a FUSE flush can fail there).
pub fn close(file: File, path: &Path) -> anyhow::Result<()> {
    let fd = file.into_raw_fd();
    // SAFETY: `fd` was just taken from a `File`, so it is open and owned by nobody else.
    if unsafe { libc::close(fd) } != 0 {
        return Err(std::io::Error::last_os_error())
            .with_context(|| format!("closing {}", path.display()));
    }
    Ok(())
}
