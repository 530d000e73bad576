//! Workloads about the cluster rather than one mount: a master's RSS, ElkFS's creates with every
//! acknowledgement fsynced (`sync_commit = true`), and how long chunks take to be back at goal 2
//! after a chunkserver is killed.

use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::Context;

use super::files::create_files;
use super::io::{read_file, write_file};
use super::{Bench, settle, timed};
use crate::cluster_elkfs::{ElkCluster, MasterRefused};
use crate::cluster_moosefs as mfs;
use crate::interrupt;
use crate::progress;
use crate::report::{Column, Metric};
use crate::stats::{Unit, group_thousands};

/// The goal both clusters keep chunks at.
const GOAL: usize = 2;
/// MooseFS's chunk size, to know how many chunks a file has.
const MFS_CHUNK: u64 = 64 << 20;
/// How long a freshly written file may take to show all its copies.
const SETTLE_COPIES: Duration = Duration::from_secs(30);
/// How often copies are counted while waiting.
const POLL: Duration = Duration::from_millis(100);

/// A `kB` field (`VmRSS`, `VmHWM`, ...) from the text of `/proc/PID/status`.
pub fn parse_status_kib(status: &str, field: &str) -> Option<u64> {
    status
        .lines()
        .find_map(|line| line.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|n| n.parse().ok())
}

/// A `kB` field of `/proc/PID/status`, in MiB.
fn status_mib(pid: u32, field: &str) -> anyhow::Result<f64> {
    let path = format!("/proc/{pid}/status");
    let text = std::fs::read_to_string(&path).with_context(|| format!("reading {path}"))?;
    let kib =
        parse_status_kib(&text, field).with_context(|| format!("no {field} line in {path}"))?;
    Ok(kib as f64 / 1024.0)
}

/// The resident set size of process `pid`, in MiB.
pub fn rss_mib(pid: u32) -> anyhow::Result<f64> {
    status_mib(pid, "VmRSS")
}

/// The RSS of process `pid` in MiB once two reads a second apart differ by less than 1 MiB
/// (or after 15 s): what a process holds once the work it was given has settled.
pub fn settled_rss_mib(pid: u32) -> anyhow::Result<f64> {
    let deadline = Instant::now() + Duration::from_secs(15);
    let mut last = rss_mib(pid)?;
    while Instant::now() < deadline {
        interrupt::sleep(Duration::from_secs(1))?;
        let now = rss_mib(pid)?;
        if (now - last).abs() < 1.0 {
            return Ok(now);
        }
        last = now;
    }
    Ok(last)
}

/// The highest resident set size process `pid` has had (`VmHWM`), in MiB.
pub fn peak_rss_mib(pid: u32) -> anyhow::Result<f64> {
    status_mib(pid, "VmHWM")
}

/// Creates per second on an ElkFS cluster whose master has `sync_commit = true`, beside MooseFS's
/// (measured again here, interleaved). "Not available" when the master refuses the setting.
pub fn sync_commit(b: &mut Bench) -> anyhow::Result<()> {
    let n = b.sizes.files;
    let metric = Metric {
        key: "creates-sync-commit",
        label: format!(
            "creates, ElkFS with `sync_commit = true` ({} empty files)",
            group_thousands(n as f64)
        ),
        unit: Unit::OpsPerSec,
        goals: vec![],
    };
    let root = b.work_dir.join("elkfs-sync-commit");
    progress::step("  starting an ElkFS cluster whose master has sync_commit = true");
    let mut synced = match ElkCluster::start(&b.bins, &root, Some("sync_commit = true\n")) {
        Ok(cluster) => cluster,
        Err(e) if e.downcast_ref::<MasterRefused>().is_some() => {
            let log = e
                .downcast_ref::<MasterRefused>()
                .map_or("", |r| r.log.as_str());
            let reason = refusal_line(log);
            progress::step(&format!("  not available: {reason}"));
            b.report.set_note(
                &metric,
                Column::Elk,
                "not available (master refuses the key)",
            );
            b.notes.push(format!(
                "`sync_commit = true`: the ElkFS master refuses the setting and exits: \
                 \"{reason}\"."
            ));
            return Ok(());
        }
        Err(e) => return Err(e),
    };
    let elk_mount = synced.mount_path()?.to_path_buf();
    for run in 0..b.sizes.runs {
        for column in Column::ALL {
            interrupt::check()?;
            let dir = match column {
                Column::Elk => {
                    let dir = elk_mount.join(format!("sync-commit-{run}"));
                    std::fs::create_dir(&dir)
                        .with_context(|| format!("creating {}", dir.display()))?;
                    dir
                }
                _ => b.scratch_dir(column, "sync-commit")?,
            };
            settle()?;
            let secs = timed(|| create_files(&dir, n, &[]))?;
            b.record(&metric, column, n as f64 / secs);
        }
    }
    for problem in synced.stop() {
        b.notes.push(format!("sync_commit cluster: {problem}"));
    }
    Ok(())
}

/// The most telling line of a refused start: the one naming the key, or the last one.
fn refusal_line(text: &str) -> String {
    let lines: Vec<&str> = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect();
    lines
        .iter()
        .rev()
        .find(|l| l.contains("sync_commit"))
        .or(lines.last())
        .map_or_else(String::new, |l| (*l).to_owned())
}

/// Kills one chunkserver of each cluster and times how long until every chunk of a freshly
/// written file has [`GOAL`] copies again. Reads of the file are checked afterwards.
pub fn chunkserver_loss(b: &mut Bench) -> anyhow::Result<()> {
    let metric = Metric {
        key: "chunkserver-loss",
        label: format!(
            "chunkserver killed: every chunk of a {} MiB file back at goal 2",
            b.sizes.loss_file_bytes >> 20
        ),
        unit: Unit::Seconds,
        goals: vec![],
    };
    b.report
        .set_note(&metric, Column::MfsDirect, "(same cluster)");
    mfs_loss(b, &metric)?;
    elk_loss(b, &metric)?;
    Ok(())
}

/// MooseFS: copies from `mfsfileinfo`. The master may list the killed chunkserver's copies for a
/// moment after the kill, so its copies never count.
fn mfs_loss(b: &mut Bench, metric: &Metric) -> anyhow::Result<()> {
    let size = b.sizes.loss_file_bytes;
    let path = b.scratch_dir(Column::Mfs, "chunkserver-loss")?.join("data");
    write_file(&path, size, true)?;
    let expected = size.div_ceil(MFS_CHUNK) as usize;
    let mut chunks = b.mfs.chunk_copies(&path)?;
    let deadline = Instant::now() + SETTLE_COPIES;
    while chunks.len() != expected || mfs::under_goal(&chunks, GOAL, None) > 0 {
        if Instant::now() >= deadline {
            b.notes.push(format!(
                "MooseFS: the file written for the chunkserver loss was not at goal 2 after \
                 {SETTLE_COPIES:?}."
            ));
            break;
        }
        interrupt::sleep(POLL)?;
        chunks = b.mfs.chunk_copies(&path)?;
    }
    // The victim is the server with most of the file's chunks, so the loss is the largest.
    let mut per_port: HashMap<u16, usize> = HashMap::new();
    for copy in chunks.iter().flatten() {
        *per_port.entry(copy.port).or_default() += 1;
    }
    let Some((port, victim)) = per_port
        .iter()
        .max_by_key(|(port, n)| (**n, **port))
        .and_then(|(port, _)| Some((*port, b.mfs.chunkserver_on_port(*port)?)))
    else {
        b.report.set_note(metric, Column::Mfs, "not measured");
        b.notes
            .push("MooseFS: mfsfileinfo lists no copy of the file on our chunkservers.".into());
        return Ok(());
    };
    progress::step(&format!(
        "  MooseFS         killing chunkserver {victim} (SIGKILL); {} chunks to watch",
        chunks.len()
    ));
    b.mfs.kill_chunkserver(victim)?;
    let start = Instant::now();
    let timeout = b.sizes.recovery_timeout;
    let mut recovered = None;
    while start.elapsed() < timeout {
        let chunks = b.mfs.chunk_copies(&path)?;
        if chunks.len() == expected && mfs::under_goal(&chunks, GOAL, Some(port)) == 0 {
            recovered = Some(start.elapsed());
            break;
        }
        interrupt::sleep(POLL)?;
    }
    match recovered {
        Some(t) => b.record(metric, Column::Mfs, t.as_secs_f64()),
        None => b.report.set_note(
            metric,
            Column::Mfs,
            &format!("not back at goal after {} s", timeout.as_secs()),
        ),
    }
    check_read_after_loss(b, "MooseFS", &path, size);
    Ok(())
}

/// ElkFS has no status command yet, so copies are counted from the chunkservers' directories
/// (valid on one machine): the chunk ids that appear while the file is written are its chunks,
/// and a copy counts when it has the newest version of that chunk.
fn elk_loss(b: &mut Bench, metric: &Metric) -> anyhow::Result<()> {
    let size = b.sizes.loss_file_bytes;
    let before: HashSet<u64> = all_ids(&b.elk.chunks_per_server()?);
    let path = b.scratch_dir(Column::Elk, "chunkserver-loss")?.join("data");
    write_file(&path, size, true)?;

    let mut chunks: Vec<u64> = Vec::new();
    let deadline = Instant::now() + SETTLE_COPIES;
    let mut at_goal = false;
    let mut per_server = b.elk.chunks_per_server()?;
    while Instant::now() < deadline {
        per_server = b.elk.chunks_per_server()?;
        chunks = all_ids(&per_server).difference(&before).copied().collect();
        if !chunks.is_empty() && under_goal(&per_server, &chunks) == 0 {
            at_goal = true;
            break;
        }
        interrupt::sleep(POLL)?;
    }
    if chunks.is_empty() {
        b.notes.push(
            "ElkFS: no new chunk files appeared in the chunkservers' directories for the file \
             written before the chunkserver loss; the loss was not measured."
                .into(),
        );
        b.report.set_note(metric, Column::Elk, "not measured");
        return Ok(());
    }
    if !at_goal {
        b.notes.push(format!(
            "ElkFS: {} of the {} chunks of the file written before the chunkserver loss had \
             fewer than 2 copies after {SETTLE_COPIES:?}.",
            under_goal(&per_server, &chunks),
            chunks.len()
        ));
    }
    // The victim is the server with most of the file's chunks, so the loss is the largest.
    let victim = (0..per_server.len())
        .max_by_key(|&i| {
            per_server[i]
                .as_ref()
                .map_or(0, |m| chunks.iter().filter(|c| m.contains_key(c)).count())
        })
        .unwrap_or(0);
    progress::step(&format!(
        "  ElkFS           killing chunkserver {victim} (SIGKILL); {} chunks to watch",
        chunks.len()
    ));
    b.elk.kill_chunkserver(victim)?;
    let start = Instant::now();
    let timeout = b.sizes.recovery_timeout;
    let mut recovered = None;
    let mut missing = chunks.len();
    while start.elapsed() < timeout {
        missing = under_goal(&b.elk.chunks_per_server()?, &chunks);
        if missing == 0 {
            recovered = Some(start.elapsed());
            break;
        }
        interrupt::sleep(POLL)?;
    }
    match recovered {
        Some(t) => b.record(metric, Column::Elk, t.as_secs_f64()),
        None => {
            let note = format!(
                "not back at goal after {} s ({missing} of {} chunks under goal)",
                timeout.as_secs(),
                chunks.len()
            );
            progress::step(&format!("  ElkFS           {note}"));
            b.report.set_note(
                metric,
                Column::Elk,
                &format!("not back at goal after {} s", timeout.as_secs()),
            );
            b.notes.push(format!(
                "ElkFS, chunkserver killed: {note}. ElkFS has no re-replication yet, so this \
                 cannot complete today; the workload counts chunk files in the chunkservers' \
                 directories and will time the recovery once replication lands."
            ));
        }
    }
    check_read_after_loss(b, "ElkFS", &path, size);
    Ok(())
}

/// Every chunk id any running chunkserver has.
fn all_ids(per_server: &[Option<HashMap<u64, u32>>]) -> HashSet<u64> {
    per_server
        .iter()
        .flatten()
        .flat_map(|m| m.keys().copied())
        .collect()
}

/// How many of `chunks` have fewer than [`GOAL`] copies of their newest version among the running
/// ElkFS chunkservers.
pub fn under_goal(per_server: &[Option<HashMap<u64, u32>>], chunks: &[u64]) -> usize {
    chunks
        .iter()
        .filter(|id| {
            let versions: Vec<u32> = per_server
                .iter()
                .flatten()
                .filter_map(|m| m.get(id).copied())
                .collect();
            let newest = versions.iter().copied().max();
            let copies = versions.iter().filter(|v| Some(**v) == newest).count();
            copies < GOAL
        })
        .count()
}

/// Reads the whole file back after the loss, and notes whether that worked.
fn check_read_after_loss(b: &mut Bench, system: &str, path: &Path, size: u64) {
    let result = settle().and_then(|()| read_file(path, size));
    let line = match result {
        Ok(()) => format!("{system}: the file reads back intact with one chunkserver killed."),
        Err(e) => format!("{system}: reading the file with one chunkserver killed failed: {e:#}"),
    };
    progress::step(&format!("  {line}"));
    b.notes.push(line);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vm_rss_is_read_in_kib() {
        let status = "Name:\tmfsmaster\nVmPeak:\t  999 kB\nVmRSS:\t  383012 kB\nThreads:\t1\n";
        assert_eq!(parse_status_kib(status, "VmRSS"), Some(383_012));
        assert_eq!(parse_status_kib("Name:\tx\n", "VmRSS"), None);
        assert_eq!(parse_status_kib(status, "VmPeak"), Some(999));
        assert_eq!(
            parse_status_kib("VmHWMX:\t5 kB\nVmHWM:\t7 kB\n", "VmHWM"),
            Some(7)
        );
    }

    #[test]
    fn copies_count_only_the_newest_version_on_running_servers() {
        let servers = vec![
            Some(HashMap::from([(1, 5), (2, 1)])),
            Some(HashMap::from([(1, 5), (2, 1), (3, 1)])),
            None,
            Some(HashMap::from([(2, 2), (3, 1)])),
        ];
        // 1: two copies of v5; 2: one copy of v2 (v1 is stale); 3: two copies; 4: none.
        assert_eq!(under_goal(&servers, &[1]), 0);
        assert_eq!(under_goal(&servers, &[2]), 1);
        assert_eq!(under_goal(&servers, &[1, 2, 3, 4]), 2);
        assert_eq!(all_ids(&servers), HashSet::from([1, 2, 3]));
    }

    #[test]
    fn the_refusal_line_names_the_key() {
        let text = "the ElkFS master exited before becoming ready:\n\
                    Error: invalid config file /x/master.toml\n\
                    Caused by: unknown field `sync_commit`, expected one of `listen`\n\
                    \n";
        assert!(refusal_line(text).starts_with("Caused by: unknown field `sync_commit`"));
        assert_eq!(refusal_line("a\nb\n"), "b");
    }
}
