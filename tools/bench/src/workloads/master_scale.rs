//! The master at scale: a fresh ElkFS cluster gets a million empty files (1 000 per directory),
//! created straight through the client library with many requests in flight; the master's RSS
//! is read at a tenth, half and all of them. Then the master is killed with SIGKILL and started
//! again on the same data, and the time until it answers its first lookup is measured, with its
//! RSS before and after lookups of random files. ElkFS only: MooseFS's numbers are explained in
//! the notes.

use std::path::PathBuf;
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use elkfs_proto::InodeId;

use super::{Bench, cluster, master_scale_mfs, settle, timed};
use crate::cluster_elkfs::{ElkCluster, Spawned};
use crate::interrupt;
use crate::master_log::MasterStart;
use crate::namespace_client::{self, IN_FLIGHT, NamespaceClient, Probe, Tree};
use crate::progress;
use crate::report::{Column, Goal, Metric};
use crate::stats::{Unit, group_thousands};

/// Files in each directory of the tree.
const PER_DIR: usize = 1_000;
/// The top directory of the tree.
const TOP: &str = "scale";
/// The master's page cache for metadata, in MiB (`metadata_cache_mb`, its default, set
/// explicitly): the most the RSS may grow by as the namespace grows.
const CACHE_MIB: u64 = 64;
/// Files created between two interrupt checks and progress lines.
const BATCH: usize = 20_000;
/// Random files looked up after each restart.
const WALK: usize = 10_000;
/// How long a restarted master may take to answer its first lookup before the run gives up.
const FIRST_LOOKUP_TIMEOUT: Duration = Duration::from_secs(300);
/// How long a stat through the mount may take after the restart before it is given up on.
const MOUNT_STAT_TIMEOUT: Duration = Duration::from_secs(120);
/// Pause between two lookups tried on a restarting master.
const PROBE_PAUSE: Duration = Duration::from_millis(5);
/// Keys of the RSS rows, one per checkpoint.
const RSS_KEYS: [&str; 3] = ["scale-rss-1", "scale-rss-2", "scale-rss-3"];

/// The file counts at which the RSS is read: a tenth, half and all of `files`.
pub fn checkpoints(files: usize) -> Vec<usize> {
    let mut points: Vec<usize> = [files / 10, files / 2, files]
        .into_iter()
        .filter(|&n| n > 0)
        .collect();
    points.dedup();
    points
}

/// `count` pseudo-random numbers below `below` (splitmix64 from `seed`: the same files every
/// time a run is repeated).
pub fn sample(seed: u64, below: usize, count: usize) -> Vec<usize> {
    let mut state = seed;
    (0..count)
        .map(|_| {
            state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
            let mut z = state;
            z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            z ^= z >> 31;
            (z % below.max(1) as u64) as usize
        })
        .collect()
}

/// The rows this workload fills.
struct Rows {
    create: Metric,
    rss: Vec<Metric>,
    peak: Metric,
    open: Metric,
    first_lookup: Metric,
    mount_stat: Metric,
    rss_restart: Metric,
    walk: Metric,
    rss_walk: Metric,
}

impl Rows {
    fn new(files: usize, points: &[usize]) -> Self {
        let count = group_thousands(files as f64);
        let base = RSS_KEYS[0];
        let bounded = Goal::bounded(base, CACHE_MIB as f64);
        let rss = points
            .iter()
            .zip(RSS_KEYS)
            .enumerate()
            .map(|(i, (&n, key))| Metric {
                key,
                label: format!("master RSS with {} files", group_thousands(n as f64)),
                unit: Unit::Mib,
                goals: if i == 0 { vec![] } else { vec![bounded] },
            })
            .collect();
        let restart = format!("master SIGKILLed with {count} files and restarted");
        Rows {
            create: Metric {
                key: "scale-create",
                label: format!(
                    "creates through the client library ({count} empty files, {IN_FLIGHT} in \
                     flight)"
                ),
                unit: Unit::OpsPerSec,
                goals: vec![],
            },
            rss,
            peak: Metric {
                key: "scale-rss-peak",
                label: format!("master peak RSS (VmHWM) while creating {count} files"),
                unit: Unit::Mib,
                goals: vec![],
            },
            open: Metric {
                key: "scale-open",
                label: format!("{restart}: metadata opened"),
                unit: Unit::Seconds,
                goals: vec![],
            },
            first_lookup: Metric {
                key: "scale-first-lookup",
                label: format!("{restart}: first lookup answered"),
                unit: Unit::Seconds,
                goals: vec![Goal::below(2.0)],
            },
            mount_stat: Metric {
                key: "scale-mount-stat",
                label: format!("{restart}: first `stat` through the mount"),
                unit: Unit::Seconds,
                goals: vec![],
            },
            rss_restart: Metric {
                key: "scale-rss-restart",
                label: "master RSS just after that first lookup".into(),
                unit: Unit::Mib,
                goals: vec![],
            },
            walk: Metric {
                key: "scale-walk",
                label: format!(
                    "lookups of {} random files after the restart",
                    group_thousands(WALK as f64)
                ),
                unit: Unit::OpsPerSec,
                goals: vec![],
            },
            rss_walk: Metric {
                key: "scale-rss-walk",
                label: "master RSS after those lookups".into(),
                unit: Unit::Mib,
                goals: vec![bounded],
            },
        }
    }
}

impl Rows {
    /// Every row, in table order.
    fn all(&self) -> Vec<&Metric> {
        let mut all = vec![&self.create];
        all.extend(&self.rss);
        all.extend([
            &self.peak,
            &self.open,
            &self.first_lookup,
            &self.mount_stat,
            &self.rss_restart,
            &self.walk,
            &self.rss_walk,
        ]);
        all
    }
}

/// Runs the workload on a cluster of its own (so the kills do not touch the shared one).
pub fn master_scale(b: &mut Bench) -> anyhow::Result<()> {
    let files = b.sizes.scale_files;
    let points = checkpoints(files);
    let rows = Rows::new(files, &points);
    for metric in rows.all() {
        b.report.declare(metric);
    }
    let root = b.work_dir.join("elkfs-master-scale");
    progress::step(&format!(
        "  starting an ElkFS cluster for {} files (metadata_cache_mb = {CACHE_MIB})",
        group_thousands(files as f64)
    ));
    let config = format!("metadata_cache_mb = {CACHE_MIB}\n");
    let mut elk = ElkCluster::start(&b.bins, &root, Some(&config))?;
    let tree = Tree {
        files,
        per_dir: PER_DIR,
    };
    let result = run_on(b, &mut elk, &rows, &points, &tree);
    for problem in elk.stop() {
        b.notes.push(format!("master-scale cluster: {problem}"));
    }
    result?;
    b.report
        .set_note(&rows.create, Column::Mfs, "(no client library)");
    let mfs_root = b.work_dir.join("moosefs-master-scale");
    let mfs_rate = match master_scale_mfs::run(b, &mfs_root, TOP, &tree, &points, &rows.rss) {
        Ok(scale) => format!(
            "MooseFS's tree was created through its mount by {} threads at {}; its master \
             keeps all metadata in RAM.",
            master_scale_mfs::THREADS,
            Unit::OpsPerSec.format(scale.creates_per_sec)
        ),
        Err(e) if interrupt::interrupted() => return Err(e),
        Err(e) => {
            progress::step(&format!("  MooseFS         failed: {e:#}"));
            format!("MooseFS's side failed: {e:#}.")
        }
    };
    b.notes.push(format!(
        "Master scale: ElkFS's files are created through `elkfs-client` with {IN_FLIGHT} \
         requests in flight on one session, {PER_DIR} per directory, not through the mount (one \
         create at a time through FUSE runs at a few thousand per second here). {mfs_rate} Each \
         cluster is a fresh one, started for this workload. The RSS rows are read once the RSS \
         is steady after the creates; \"bounded\" means that holding more files costs the ElkFS \
         master at most its metadata cache ({CACHE_MIB} MiB, `metadata_cache_mb`) more memory \
         than with the fewest. Before each kill the page cache is dropped, so the restarted \
         master reads its metadata from the disk; \"metadata opened\" is taken from the \
         timestamp of the master's log line. The restart is not measured on MooseFS: after a \
         SIGKILL its master only starts again with `mfsmaster -a` (recovery from its \
         changelogs)."
    ));
    Ok(())
}

fn run_on(
    b: &mut Bench,
    elk: &mut ElkCluster,
    rows: &Rows,
    points: &[usize],
    tree: &Tree,
) -> anyhow::Result<()> {
    let dirs = create_tree(b, elk, rows, points, tree)?;
    for run in 0..b.sizes.runs {
        interrupt::check()?;
        restart_once(b, elk, rows, tree, &dirs, run as u64)?;
    }
    Ok(())
}

/// Creates the tree, reading the RSS at each checkpoint; returns the directories' inodes.
fn create_tree(
    b: &mut Bench,
    elk: &mut ElkCluster,
    rows: &Rows,
    points: &[usize],
    tree: &Tree,
) -> anyhow::Result<Vec<InodeId>> {
    let client = NamespaceClient::connect(elk.master_addr())?;
    let top = client.mkdir(client.root(), TOP)?;
    let dirs = client.mkdir_tree(top, tree)?;
    let mut done = 0;
    let mut creating = Duration::ZERO;
    for (&point, rss_row) in points.iter().zip(&rows.rss) {
        while done < point {
            interrupt::check()?;
            let end = (done + BATCH).min(point);
            let start = Instant::now();
            client.create_files(tree, &dirs, done..end)?;
            creating += start.elapsed();
            done = end;
            if done % (BATCH * 10) == 0 || done == point {
                progress::step(&format!(
                    "  ElkFS           {} files created, {}",
                    group_thousands(done as f64),
                    Unit::OpsPerSec.format(done as f64 / creating.as_secs_f64())
                ));
            }
        }
        let rss = cluster::settled_rss_mib(elk.master_pid()?)?;
        b.record(rss_row, Column::Elk, rss);
    }
    b.record(
        &rows.create,
        Column::Elk,
        tree.files as f64 / creating.as_secs_f64(),
    );
    b.record(
        &rows.peak,
        Column::Elk,
        cluster::peak_rss_mib(elk.master_pid()?)?,
    );
    Ok(dirs)
}

/// A file of the tree, as the master and as the mount see it.
struct Target {
    parent: InodeId,
    name: String,
    path: PathBuf,
}

fn target(tree: &Tree, dirs: &[InodeId], mount: &std::path::Path, i: usize) -> Target {
    let dir = tree.dir_of(i);
    let name = tree.file_name(i);
    Target {
        parent: dirs[dir],
        path: mount.join(TOP).join(Tree::dir_name(dir)).join(&name),
        name,
    }
}

/// One kill and restart: the time to the first lookup answered (on a fresh session, tried
/// until it works) and to the first `stat` through the mount, then random lookups.
fn restart_once(
    b: &mut Bench,
    elk: &mut ElkCluster,
    rows: &Rows,
    tree: &Tree,
    dirs: &[InodeId],
    run: u64,
) -> anyhow::Result<()> {
    let mount = elk.mount_path()?.to_path_buf();
    let picks = sample(0x5CA1E + run, tree.files, WALK + 2);
    let probe = target(tree, dirs, &mount, picks[0]);
    let through_mount = target(tree, dirs, &mount, picks[1]);
    let runtime = namespace_client::runtime()?;
    settle()?;
    progress::step(&format!(
        "  ElkFS           run {}: killing the master (SIGKILL) and starting it again",
        run + 1
    ));
    elk.kill_master();
    let spawned = elk.restart_master()?;
    let mount_stat = stat_in_background(through_mount.path.clone());

    let missing = loop {
        interrupt::check()?;
        if let Some(status) = elk.master_exited() {
            bail!(
                "the restarted ElkFS master exited ({status}); last lines of its log:\n{}",
                elk.master_log_tail()
            );
        }
        match namespace_client::probe_lookup(&runtime, elk.master_addr(), probe.parent, &probe.name)
        {
            Probe::Found => break false,
            Probe::Missing => break true,
            Probe::NotYet(reason) if spawned.at.elapsed() > FIRST_LOOKUP_TIMEOUT => bail!(
                "the restarted ElkFS master answered no lookup within {FIRST_LOOKUP_TIMEOUT:?} \
                 (last: {reason})"
            ),
            Probe::NotYet(_) => thread::sleep(PROBE_PAUSE),
        }
    };
    let first = spawned.at.elapsed().as_secs_f64();
    let pid = elk.master_pid()?;
    let rss = cluster::rss_mib(pid)?;
    b.record(&rows.first_lookup, Column::Elk, first);
    if missing {
        b.notes.push(format!(
            "Master scale, run {}: the restarted master says {} does not exist, though its \
             create was acknowledged before the kill.",
            run + 1,
            probe.path.display()
        ));
    }
    elk.wait_master_ready(FIRST_LOOKUP_TIMEOUT)?;
    record_start(b, elk, rows, &spawned, run)?;
    b.record(&rows.rss_restart, Column::Elk, rss);

    match mount_stat.recv_timeout(MOUNT_STAT_TIMEOUT) {
        Ok((at, Ok(()))) => b.record(
            &rows.mount_stat,
            Column::Elk,
            at.duration_since(spawned.at).as_secs_f64(),
        ),
        Ok((at, Err(e))) => b.notes.push(format!(
            "Master scale, run {}: `stat {}` through the mount failed {:.1} s after the restart: \
             {e}",
            run + 1,
            through_mount.path.display(),
            at.duration_since(spawned.at).as_secs_f64()
        )),
        Err(_) => b.notes.push(format!(
            "Master scale, run {}: `stat {}` through the mount had no answer {} s after the \
             restart.",
            run + 1,
            through_mount.path.display(),
            MOUNT_STAT_TIMEOUT.as_secs()
        )),
    }

    let client = NamespaceClient::connect(elk.master_addr())?;
    let walk: Vec<(InodeId, String)> = picks[2..]
        .iter()
        .map(|&i| (dirs[tree.dir_of(i)], tree.file_name(i)))
        .collect();
    let mut found = namespace_client::Lookups::default();
    let secs = timed(|| {
        found = client.lookup_all(&walk)?;
        Ok(())
    })?;
    b.record(&rows.walk, Column::Elk, walk.len() as f64 / secs);
    if found.missing > 0 {
        b.notes.push(format!(
            "Master scale, run {}: {} of {} files looked up after the restart were missing.",
            run + 1,
            found.missing,
            walk.len()
        ));
    }
    b.record(&rows.rss_walk, Column::Elk, cluster::rss_mib(pid)?);
    Ok(())
}

/// Stats `path` on a thread of its own (it blocks while the mount waits for the master) and
/// sends back when it returned and how.
fn stat_in_background(path: PathBuf) -> mpsc::Receiver<(Instant, std::io::Result<()>)> {
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || {
        let result = std::fs::symlink_metadata(&path).map(|_| ());
        let _ = tx.send((Instant::now(), result));
    });
    rx
}

/// Records how long the master took to open its metadata, from its log, and notes its line.
fn record_start(
    b: &mut Bench,
    elk: &ElkCluster,
    rows: &Rows,
    spawned: &Spawned,
    run: u64,
) -> anyhow::Result<()> {
    let path = elk.master_log();
    let bytes = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    let from = usize::try_from(spawned.log_offset)
        .unwrap_or(0)
        .min(bytes.len());
    let start = MasterStart::parse(&String::from_utf8_lossy(&bytes[from..]));
    match start.open_secs(spawned.wall) {
        Some(secs) => b.record(&rows.open, Column::Elk, secs),
        None => b.notes.push(format!(
            "Master scale, run {}: the master's log has no timed \"metadata opened\" line.",
            run + 1
        )),
    }
    let listening = start
        .listening_secs(spawned.wall)
        .map_or_else(|| "?".to_owned(), |s| format!("{s:.2} s"));
    let line = start.opened.unwrap_or_else(|| "(no line)".to_owned());
    progress::step(&format!(
        "  ElkFS           listening after {listening}; {line}"
    ));
    b.notes.push(format!(
        "Master scale, restart {}: listening {listening} after the spawn; the master logged \
         \"{line}\".",
        run + 1
    ));
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn checkpoints_are_a_tenth_half_and_all() {
        assert_eq!(checkpoints(1_000_000), vec![100_000, 500_000, 1_000_000]);
        assert_eq!(checkpoints(100_000), vec![10_000, 50_000, 100_000]);
        assert_eq!(checkpoints(5), vec![2, 5]);
        assert_eq!(checkpoints(1), vec![1]);
        assert!(checkpoints(0).is_empty());
    }

    #[test]
    fn samples_are_repeatable_and_in_range() {
        let a = sample(7, 1_000, 500);
        assert_eq!(a, sample(7, 1_000, 500));
        assert_ne!(a, sample(8, 1_000, 500));
        assert!(a.iter().all(|&i| i < 1_000));
        let distinct: std::collections::HashSet<usize> = a.iter().copied().collect();
        assert!(distinct.len() > 300, "{}", distinct.len());
    }

    #[test]
    fn later_rss_rows_are_bounded_by_the_first() {
        let rows = Rows::new(1_000_000, &checkpoints(1_000_000));
        assert_eq!(rows.rss.len(), 3);
        assert!(rows.rss[0].goals.is_empty());
        assert_eq!(rows.rss[2].label, "master RSS with 1 000 000 files");
        assert_eq!(
            rows.rss[2].goals,
            vec![Goal::bounded("scale-rss-1", CACHE_MIB as f64)]
        );
        assert_eq!(rows.first_lookup.goals, vec![Goal::below(2.0)]);
    }
}
