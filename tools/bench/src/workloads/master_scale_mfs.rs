//! MooseFS's side of the master-scale workload: a MooseFS cluster of its own gets the same tree
//! of empty files through its mount, created by several threads at once (MooseFS has no client
//! library to drive its master directly), and its master's RSS is read at the same file counts.
//! MooseFS keeps all metadata in RAM, so this shows what a master without a bounded cache uses.

use std::fs::OpenOptions;
use std::ops::Range;
use std::path::Path;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context;

use super::{Bench, cluster};
use crate::cluster_moosefs::MfsCluster;
use crate::interrupt;
use crate::namespace_client::Tree;
use crate::progress;
use crate::report::{Column, Metric};
use crate::stats::{Unit, group_thousands};

/// Threads creating files through the mount at once.
pub const THREADS: usize = 16;
/// Files a thread claims at a time.
const CLAIM: usize = 100;
/// Files created between two progress lines.
const PROGRESS_EVERY: usize = 100_000;

/// How the MooseFS side went: its create rate through the mount.
pub struct MfsScale {
    /// Files per second, all threads together, RSS reads not counted.
    pub creates_per_sec: f64,
}

/// Starts a MooseFS cluster under `root`, creates the tree in `top` (a directory name in its
/// root), records its master's RSS at each of `points` in `rss_rows`, and stops the cluster.
pub fn run(
    b: &mut Bench,
    root: &Path,
    top: &str,
    tree: &Tree,
    points: &[usize],
    rss_rows: &[Metric],
) -> anyhow::Result<MfsScale> {
    progress::step("  starting a MooseFS cluster for the scale run");
    let mut mfs = MfsCluster::start(root)?;
    let result = (|| {
        let top = mfs.mount_path(MfsCluster::DEFAULT_MOUNT)?.join(top);
        make_dirs(&top, tree)?;
        let pid = mfs.master_pid()?;
        let mut done = 0;
        let mut creating = Duration::ZERO;
        for (&point, row) in points.iter().zip(rss_rows) {
            while done < point {
                interrupt::check()?;
                let end = (done + PROGRESS_EVERY).min(point);
                let start = Instant::now();
                create_through_mount(&top, tree, done..end, THREADS)?;
                creating += start.elapsed();
                done = end;
                progress::step(&format!(
                    "  MooseFS         {} files created, {}",
                    group_thousands(done as f64),
                    Unit::OpsPerSec.format(done as f64 / creating.as_secs_f64())
                ));
            }
            let rss = cluster::settled_rss_mib(pid)?;
            b.record(row, Column::Mfs, rss);
        }
        Ok(MfsScale {
            creates_per_sec: tree.files as f64 / creating.as_secs_f64(),
        })
    })();
    for problem in mfs.stop() {
        b.notes
            .push(format!("master-scale MooseFS cluster: {problem}"));
    }
    result
}

/// Creates `top` and the tree's directories in it.
pub fn make_dirs(top: &Path, tree: &Tree) -> anyhow::Result<()> {
    std::fs::create_dir(top).with_context(|| format!("creating {}", top.display()))?;
    for d in 0..tree.dirs() {
        let dir = top.join(Tree::dir_name(d));
        std::fs::create_dir(&dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    Ok(())
}

/// Creates files `range` of `tree` under `top` (empty, each opened with `O_EXCL` and closed) on
/// `threads` threads; stops at the first error or interrupt.
pub fn create_through_mount(
    top: &Path,
    tree: &Tree,
    range: Range<usize>,
    threads: usize,
) -> anyhow::Result<()> {
    let next = AtomicUsize::new(range.start);
    let failed = AtomicBool::new(false);
    let first_error: Mutex<Option<anyhow::Error>> = Mutex::new(None);
    std::thread::scope(|scope| {
        for _ in 0..threads.max(1) {
            scope.spawn(|| {
                while !failed.load(Ordering::Relaxed) {
                    let start = next.fetch_add(CLAIM, Ordering::Relaxed);
                    if start >= range.end {
                        return;
                    }
                    let claimed = start..(start + CLAIM).min(range.end);
                    if let Err(e) = create_some(top, tree, claimed) {
                        failed.store(true, Ordering::Relaxed);
                        first_error
                            .lock()
                            .unwrap_or_else(|p| p.into_inner())
                            .get_or_insert(e);
                        return;
                    }
                }
            });
        }
    });
    match first_error.into_inner().unwrap_or_else(|p| p.into_inner()) {
        Some(e) => Err(e),
        None => Ok(()),
    }
}

fn create_some(top: &Path, tree: &Tree, files: Range<usize>) -> anyhow::Result<()> {
    interrupt::check()?;
    for i in files {
        let path = top
            .join(Tree::dir_name(tree.dir_of(i)))
            .join(tree.file_name(i));
        let file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&path)
            .with_context(|| format!("creating {}", path.display()))?;
        super::close(file, &path)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn threads_create_every_file_of_the_range_once() {
        let dir = tempfile::tempdir().expect("temp dir");
        let top = dir.path().join("scale");
        let tree = Tree {
            files: 2_050,
            per_dir: 1_000,
        };
        make_dirs(&top, &tree).expect("dirs");
        create_through_mount(&top, &tree, 0..1_500, 4).expect("first part");
        create_through_mount(&top, &tree, 1_500..2_050, 3).expect("the rest");
        let count = |d: usize| {
            std::fs::read_dir(top.join(Tree::dir_name(d)))
                .expect("list")
                .count()
        };
        assert_eq!((count(0), count(1), count(2)), (1_000, 1_000, 50));
        assert!(create_through_mount(&top, &tree, 10..20, 2).is_err());
    }
}
