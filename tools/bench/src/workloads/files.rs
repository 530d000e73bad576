//! The metadata workloads: many empty files (create, stat, unlink), many 4 KiB files (create and
//! write, read back, unlink), and `ls -l` of one large directory, after which each master's RSS
//! is read. Each phase starts from dropped caches and is timed as a whole.

use std::collections::HashSet;
use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};

use super::{Bench, close, cluster, settle, timed};
use crate::interrupt;
use crate::progress;
use crate::report::{Column, Goal, Metric};
use crate::stats::{Unit, group_thousands};

/// Size of each small file.
const SMALL_FILE: usize = 4096;

fn name(i: usize) -> String {
    format!("f{i:06}")
}

fn count_label(n: usize) -> String {
    group_thousands(n as f64)
}

/// Creates `n` files in `dir`, each with `content` (none: empty), closing each one.
pub fn create_files(dir: &Path, n: usize, content: &[u8]) -> anyhow::Result<()> {
    for i in 0..n {
        interrupt::check()?;
        let path = dir.join(name(i));
        let mut file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&path)
            .with_context(|| format!("creating {}", path.display()))?;
        if !content.is_empty() {
            file.write_all(content)
                .with_context(|| format!("writing {}", path.display()))?;
        }
        close(file, &path)?;
    }
    Ok(())
}

fn stat_files(dir: &Path, n: usize) -> anyhow::Result<()> {
    for i in 0..n {
        interrupt::check()?;
        let path = dir.join(name(i));
        std::fs::symlink_metadata(&path).with_context(|| format!("stat {}", path.display()))?;
    }
    Ok(())
}

fn read_files(dir: &Path, n: usize, expected: &[u8]) -> anyhow::Result<()> {
    let mut buf = Vec::with_capacity(expected.len() + 1);
    for i in 0..n {
        interrupt::check()?;
        let path = dir.join(name(i));
        let mut file = File::open(&path).with_context(|| format!("opening {}", path.display()))?;
        buf.clear();
        file.read_to_end(&mut buf)
            .with_context(|| format!("reading {}", path.display()))?;
        if buf != expected {
            bail!(
                "{} holds {} bytes that differ from the {} written",
                path.display(),
                buf.len(),
                expected.len()
            );
        }
        close(file, &path)?;
    }
    Ok(())
}

fn unlink_files(dir: &Path, n: usize) -> anyhow::Result<()> {
    for i in 0..n {
        interrupt::check()?;
        let path = dir.join(name(i));
        std::fs::remove_file(&path).with_context(|| format!("unlinking {}", path.display()))?;
    }
    Ok(())
}

fn metric(key: &'static str, label: String, goal: Option<f64>) -> Metric {
    Metric {
        key,
        label,
        unit: Unit::OpsPerSec,
        goals: goal.map(Goal::at_least).into_iter().collect(),
    }
}

/// How long ElkFS may take to delete the copies of the chunks of files just unlinked (it
/// deletes them once none has been freed for 250 ms).
const DELETION_WAIT: Duration = Duration::from_secs(30);

/// Waits until the ElkFS cluster holds no chunk copy but those in `before`: its chunkservers'
/// deletion of the copies the unlinks freed is work of ElkFS's, not to be timed against the
/// MooseFS step that follows. (MooseFS deletes chunk files much later, at a limited rate; that
/// is not waited for.)
fn wait_for_deleted_copies(b: &mut Bench, before: HashSet<(usize, u64)>) -> anyhow::Result<()> {
    let deadline = Instant::now() + DELETION_WAIT;
    loop {
        let left = b.elk.chunk_copies()?.difference(&before).count();
        if left == 0 {
            return Ok(());
        }
        if Instant::now() >= deadline {
            b.notes.push(format!(
                "ElkFS still held {left} chunk copies of the small files {} s after their \
                 unlinks.",
                DELETION_WAIT.as_secs()
            ));
            return Ok(());
        }
        interrupt::sleep(Duration::from_millis(100))?;
    }
}

/// Creates, stats and unlinks empty files; each phase timed from dropped caches.
pub fn empty_files(b: &mut Bench) -> anyhow::Result<()> {
    let n = b.sizes.files;
    let count = count_label(n);
    let creates = metric(
        "creates",
        format!("creates ({count} empty files)"),
        Some(1.5),
    );
    let stats = metric("stats", format!("stats ({count} empty files)"), Some(1.5));
    let unlinks = metric(
        "unlinks",
        format!("unlinks ({count} empty files)"),
        Some(1.5),
    );
    for _ in 0..b.sizes.runs {
        for column in Column::ALL {
            b.isolate(column)?;
            let dir = b.scratch_dir(column, "empty-files")?;
            settle()?;
            let secs = timed(|| create_files(&dir, n, &[]))?;
            b.record(&creates, column, n as f64 / secs);
            settle()?;
            let secs = timed(|| stat_files(&dir, n))?;
            b.record(&stats, column, n as f64 / secs);
            settle()?;
            let secs = timed(|| unlink_files(&dir, n))?;
            b.record(&unlinks, column, n as f64 / secs);
        }
    }
    b.mount_both()
}

/// Creates and writes, reads back and unlinks 4 KiB files; each phase timed from dropped caches.
pub fn small_files(b: &mut Bench) -> anyhow::Result<()> {
    let n = b.sizes.files;
    let count = count_label(n);
    let writes = metric(
        "small-write",
        format!("4 KiB files created and written ({count})"),
        Some(3.0),
    );
    let reads = metric(
        "small-read",
        format!("4 KiB files read ({count})"),
        Some(3.0),
    );
    let unlinks = metric(
        "small-unlink",
        format!("4 KiB files unlinked ({count})"),
        None,
    );
    let content: Vec<u8> = (0..SMALL_FILE).map(|i| (i * 31 % 251) as u8 + 1).collect();
    for _ in 0..b.sizes.runs {
        for column in Column::ALL {
            b.isolate(column)?;
            let dir = b.scratch_dir(column, "small-files")?;
            let copies_before = match column {
                Column::Elk => Some(b.elk.chunk_copies()?),
                Column::Mfs | Column::MfsDirect => None,
            };
            settle()?;
            let secs = timed(|| create_files(&dir, n, &content))?;
            b.record(&writes, column, n as f64 / secs);
            settle()?;
            let secs = timed(|| read_files(&dir, n, &content))?;
            b.record(&reads, column, n as f64 / secs);
            settle()?;
            let secs = timed(|| unlink_files(&dir, n))?;
            b.record(&unlinks, column, n as f64 / secs);
            if let Some(before) = copies_before {
                wait_for_deleted_copies(b, before)?;
            }
        }
    }
    b.mount_both()
}

/// Fills one directory per cluster with empty files, reads each master's RSS, then times
/// `ls -l` of it through every mount.
pub fn large_dir(b: &mut Bench) -> anyhow::Result<()> {
    let n = b.sizes.dir_entries;
    let count = count_label(n);
    let ls = Metric {
        key: "ls-l",
        label: format!("`ls -l` of a {count}-entry directory"),
        unit: Unit::Seconds,
        goals: vec![],
    };
    let idle = Metric {
        key: "rss-idle",
        label: "master RSS, just started".into(),
        unit: Unit::Mib,
        goals: vec![],
    };
    let full = Metric {
        key: "rss-full",
        label: format!("master RSS with {count} more files"),
        unit: Unit::Mib,
        goals: vec![Goal::at_most(0.25)],
    };
    // MooseFS's DIRECT mount reads the directory made through its default mount.
    let dir_of = |b: &Bench, column: Column| -> anyhow::Result<PathBuf> {
        Ok(b.mount(column)?.join("elkfs-bench").join("large-dir"))
    };
    for column in [Column::Elk, Column::Mfs] {
        let dir = dir_of(b, column)?;
        if dir.exists() {
            std::fs::remove_dir_all(&dir).with_context(|| format!("removing {}", dir.display()))?;
        }
        std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        progress::step(&format!(
            "  {:<15} creating {count} files in one directory",
            column.label()
        ));
        let secs = timed(|| create_files(&dir, n, &[]))?;
        progress::step(&format!(
            "  {:<15} created them at {}",
            column.label(),
            Unit::OpsPerSec.format(n as f64 / secs)
        ));
        let pid = match column {
            Column::Elk => b.elk.master_pid()?,
            _ => b.mfs.master_pid()?,
        };
        if let Some(&rss) = b.idle_rss.get(&column) {
            b.report.add_sample(&idle, column, rss);
        }
        let rss = cluster::rss_mib(pid)?;
        b.record(&full, column, rss);
    }
    b.report.set_note(&idle, Column::MfsDirect, "(same master)");
    b.report.set_note(&full, Column::MfsDirect, "(same master)");
    for _ in 0..b.sizes.runs {
        for column in Column::ALL {
            interrupt::check()?;
            let dir = dir_of(b, column)?;
            settle()?;
            let mut lines = 0;
            let secs = timed(|| {
                lines = ls_long(&dir)?;
                Ok(())
            })?;
            if lines != n + 1 {
                bail!(
                    "`ls -l {}` printed {lines} lines instead of {} (a total and {n} entries)",
                    dir.display(),
                    n + 1
                );
            }
            b.record(&ls, column, secs);
        }
    }
    Ok(())
}

/// Runs `ls -l DIR` (C locale) and returns the number of lines it printed.
fn ls_long(dir: &Path) -> anyhow::Result<usize> {
    let mut child = Command::new("ls")
        .arg("-l")
        .arg(dir)
        .env("LC_ALL", "C")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .spawn()
        .context("running ls")?;
    let mut lines = 0;
    if let Some(mut out) = child.stdout.take() {
        let mut buf = vec![0u8; 1 << 16];
        loop {
            let n = out.read(&mut buf).context("reading the output of ls")?;
            if n == 0 {
                break;
            }
            lines += buf[..n].iter().filter(|&&c| c == b'\n').count();
        }
    }
    let status = child.wait().context("waiting for ls")?;
    if !status.success() {
        bail!("ls -l {} failed ({status})", dir.display());
    }
    Ok(lines)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn files_are_created_read_and_unlinked() {
        let dir = tempfile::tempdir().expect("temp dir");
        create_files(dir.path(), 5, b"hello").expect("create");
        stat_files(dir.path(), 5).expect("stat");
        read_files(dir.path(), 5, b"hello").expect("read");
        assert!(read_files(dir.path(), 5, b"other").is_err());
        assert_eq!(ls_long(dir.path()).expect("ls"), 6);
        unlink_files(dir.path(), 5).expect("unlink");
        assert_eq!(std::fs::read_dir(dir.path()).expect("list").count(), 0);
        assert!(create_files(dir.path(), 0, b"").is_ok());
    }
}
