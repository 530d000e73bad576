//! `docs/PERFORMANCE.md`: the machine the run was on, how it was measured, the table, every
//! run's values, and what ElkFS logged at WARN or ERROR meanwhile.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;

use crate::report::{Report, markdown_table};
use crate::workloads::Sizes;

/// Facts about the machine and the software measured, as (what, value) pairs.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Machine {
    /// The facts, in display order.
    pub facts: Vec<(String, String)>,
}

impl Machine {
    /// Looks at the machine; a fact that cannot be read says so instead of failing the run.
    pub fn describe(work_dir: &Path, workspace: &Path) -> Self {
        let unknown = || "unknown".to_owned();
        let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
        let cpu = cpuinfo
            .lines()
            .find_map(|l| l.strip_prefix("model name"))
            .and_then(|l| l.split_once(':'))
            .map_or_else(unknown, |(_, v)| v.trim().to_owned());
        let cores =
            std::thread::available_parallelism().map_or_else(|_| unknown(), |n| n.to_string());
        let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
        let ram = meminfo
            .lines()
            .find_map(|l| l.strip_prefix("MemTotal:"))
            .and_then(|v| v.split_whitespace().next()?.parse::<f64>().ok())
            .map_or_else(unknown, |kib| format!("{:.1} GiB", kib / (1024.0 * 1024.0)));
        let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease")
            .map_or_else(|_| unknown(), |s| s.trim().to_owned());
        let os = std::fs::read_to_string("/etc/os-release")
            .ok()
            .and_then(|t| {
                t.lines()
                    .find_map(|l| l.strip_prefix("PRETTY_NAME="))
                    .map(|v| v.trim_matches('"').to_owned())
            })
            .unwrap_or_else(unknown);
        let disk = output(
            "df",
            &["-h", "--output=source,fstype,size,avail,target"],
            Some(work_dir),
        )
        .and_then(|t| {
            t.lines()
                .nth(1)
                .map(|l| l.split_whitespace().collect::<Vec<_>>().join(" "))
        })
        .map_or_else(unknown, |d| {
            format!("{d} (source, type, size, free, mounted on)")
        });
        let moosefs = output("mfsmaster", &["-v"], None)
            .map_or_else(unknown, |v| v.trim().replace("version: ", ""));
        let fio = output("fio", &["--version"], None).map_or_else(unknown, |v| v.trim().to_owned());
        let commit = commit_in(workspace).unwrap_or_else(unknown);
        let facts = [
            ("CPU", cpu),
            ("cores (nproc)", cores),
            ("memory", ram),
            ("kernel", kernel),
            ("OS", os),
            ("disk holding all data (df)", disk),
            ("load average at start", load_average()),
            ("ElkFS commit", commit),
            ("MooseFS", moosefs),
            ("fio", fio),
        ];
        Machine {
            facts: facts.into_iter().map(|(k, v)| (k.to_owned(), v)).collect(),
        }
    }

    /// Adds a fact at the end.
    pub fn add(&mut self, what: &str, value: String) {
        self.facts.push((what.to_owned(), value));
    }

    /// The facts as a two-column Markdown table.
    pub fn table(&self) -> String {
        let header = vec!["".to_owned(), "".to_owned()];
        let body: Vec<Vec<String>> = self
            .facts
            .iter()
            .map(|(k, v)| vec![k.clone(), v.clone()])
            .collect();
        markdown_table(&header, &body, &[false, false])
    }
}

/// The workspace's commit, marked when tracked files have uncommitted changes.
fn commit_in(workspace: &Path) -> Option<String> {
    let git = |args: &[&str]| {
        Command::new("git")
            .arg("-C")
            .arg(workspace)
            .args(args)
            .output()
            .ok()
            .filter(|o| o.status.success())
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
    };
    let commit = git(&["rev-parse", "--short", "HEAD"])?;
    let dirty =
        git(&["status", "--porcelain", "--untracked-files=no"]).is_some_and(|s| !s.is_empty());
    Some(if dirty {
        format!("{commit} (with uncommitted changes)")
    } else {
        commit
    })
}

/// The 1, 5 and 15 minute load averages.
pub fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .map(|t| t.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|| "unknown".to_owned())
}

/// The UTC date and time, from `date`.
pub fn now_utc() -> String {
    output("date", &["-u", "+%Y-%m-%d %H:%M UTC"], None)
        .map_or_else(|| "unknown date".to_owned(), |d| d.trim().to_owned())
}

fn output(program: &str, args: &[&str], path_arg: Option<&Path>) -> Option<String> {
    let mut command = Command::new(program);
    command.args(args);
    if let Some(path) = path_arg {
        command.arg(path);
    }
    let out = command.output().ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
}

/// The WARN and ERROR lines (and panics) of a log, without their timestamps, each with how many
/// times it occurred, most frequent first.
pub fn problem_lines(log: &str) -> Vec<(usize, String)> {
    let mut counts: BTreeMap<String, usize> = BTreeMap::new();
    for line in log.lines() {
        let is_problem = line.contains(" WARN ")
            || line.contains(" ERROR ")
            || line.starts_with("WARN ")
            || line.starts_with("ERROR ")
            || line.contains("panicked at");
        if !is_problem {
            continue;
        }
        let mut words = line.split_whitespace().peekable();
        if words
            .peek()
            .is_some_and(|w| w.starts_with(|c: char| c.is_ascii_digit()) && w.contains('T'))
        {
            words.next();
        }
        let message = words.collect::<Vec<_>>().join(" ");
        *counts.entry(message).or_default() += 1;
    }
    let mut lines: Vec<(usize, String)> = counts.into_iter().map(|(m, n)| (n, m)).collect();
    lines.sort_by(|a, b| b.0.cmp(&a.0).then_with(|| a.1.cmp(&b.1)));
    lines
}

/// The problem lines of every `*.log` in `dir`, at most `per_file` distinct ones each, as
/// `file: N× message` lines.
pub fn log_summary(dir: &Path, per_file: usize) -> Vec<String> {
    let mut files: Vec<_> = std::fs::read_dir(dir)
        .map(|entries| entries.flatten().map(|e| e.path()).collect())
        .unwrap_or_default();
    files.retain(|p| p.extension().is_some_and(|e| e == "log"));
    files.sort();
    let mut out = Vec::new();
    for file in files {
        let text = std::fs::read(&file)
            .map(|b| String::from_utf8_lossy(&b).into_owned())
            .unwrap_or_default();
        let name = file
            .file_name()
            .map_or_else(String::new, |n| n.to_string_lossy().into_owned());
        let lines = problem_lines(&text);
        let distinct = lines.len();
        for (count, message) in lines.into_iter().take(per_file) {
            out.push(format!("{name}: {count}× {message}"));
        }
        if distinct > per_file {
            out.push(format!(
                "{name}: … and {} more distinct lines",
                distinct - per_file
            ));
        }
    }
    out
}

/// Everything the report file says.
pub struct Document<'a> {
    /// When the run started.
    pub date: String,
    /// The command line that produced it.
    pub command: String,
    /// How long the run took.
    pub duration_secs: f64,
    /// Whether it was a `--quick` run.
    pub quick: bool,
    /// Sizes of the run.
    pub sizes: &'a Sizes,
    /// The machine.
    pub machine: &'a Machine,
    /// The results.
    pub report: &'a Report,
    /// Observations made during the run.
    pub notes: &'a [String],
    /// What ElkFS's processes logged at WARN or ERROR.
    pub elk_log: &'a [String],
}

/// What MooseFS's fsync guarantees, as found in its source.
const MOOSEFS_FSYNC: &str = "\
**What fsync means.** ElkFS's fsync returns once the data is on disk on every copy. \
MooseFS's does less: in mfsmount, `mfs_fsync` runs the same code as the flush on close, \
`write_data_flush`, which waits until the mount's write cache for the file has been sent to \
the chunkservers and every chunkserver of the chain has acknowledged its part. A chunkserver \
acknowledges after `pwrite` into the chunk file; it fsyncs chunk files only with \
`HDD_FSYNC_BEFORE_CLOSE = 1` (the default is 0, and the chunkservers started here log \
`HDD_FSYNC_BEFORE_CLOSE - '0'`), and even then in a background loop when it closes the chunk, \
not before answering. So after MooseFS's fsync the data is in the chunkservers' page caches, \
not necessarily on disk. Found by reading MooseFS's public source (`mfsclient/mfs_fuse.c`, \
`mfsclient/writedata.c`, `mfschunkserver/hddspacemgr.c`, 3.x and 4.x versions of these \
files, not the exact 3.0.117 tarball); the client side is certain, the chunkserver side as \
certain as the default shown in its own log.";

/// How the numbers were measured.
fn method(sizes: &Sizes) -> String {
    format!(
        "\
- **Clusters.** Both run on this machine at once, on 127.0.0.1, every daemon's data under one \
work directory on the disk described above: one master, {cs} chunkservers, goal 2, no \
metalogger. MooseFS's trash time is set to 0 on its root (`mfssettrashtime -r 0`, and \
`mfssetgoal -r 2`); ElkFS's is set to 0 the same way (`elkfs settrashtime -r 0`). MooseFS is mounted twice on \
the same cluster: with its defaults (cache mode AUTO) and with `-o mfscachemode=DIRECT`.
- **MooseFS's settings.** Defaults, except what loopback needs (`REMAP_*` on the master, \
`MASTER_HOST = 0.0.0.0` and `BIND_HOST`/`CSSERV_LISTEN_HOST = 127.0.0.1` on the chunkservers) \
and `REPLICATIONS_DELAY_INIT = 0` (otherwise nothing is replicated in the first minute after \
the master starts). ElkFS's master gets the same, `replication_startup_delay_secs = 0` \
(otherwise 15 s); everything else is its defaults.
- **Priority.** MooseFS's daemons and mfsmount renice themselves to -19 by default; ElkFS's \
processes are started with `nice -n -19` so that both get the same share of the CPU.
- **Fairness.** Before every timed step the harness runs `sync` and drops the page, dentry \
and inode caches (`echo 3 > /proc/sys/vm/drop_caches`): reads start from the disk, writes start \
with no writeback of an earlier step going on. Caches inside the mount processes (mfsmount's \
read-ahead buffers) are not dropped. Each repetition measures ElkFS, MooseFS and MooseFS \
DIRECT in turn, so a change in the machine's load hits all three; the table shows the median \
of {runs} run{s}.
- **Sequential I/O.** One {file} file written with 1 MiB `write` calls, timed from `open` to \
the end of `close` (what `cp` sees), with or without an `fsync` before the close; read back \
with 1 MiB `read` calls, every block checked. The data is pseudo-random (MooseFS stores zero \
blocks sparsely).
- **Random reads.** fio, `psync` engine, 4 KiB blocks, buffered, {secs} s after 1 s of \
warm-up, on that file; with 4 readers each reads its own quarter of the file, so no reader \
hits pages another one brought in. Reads that come back to a 64 KiB block read before may be \
answered from the page cache (ElkFS's mount puts the rest of each block it reads there), so a \
second row reads 4 KiB in each of {first_touch} blocks in a shuffled order, one reader, after a \
cache drop, each block once: a cold random read.
- **Metadata.** One thread, one call at a time through `std::fs`: `open(O_CREAT|O_EXCL)` + \
`close` (with a 4 KiB `write` for the small files), `lstat`, `open` + `read` + `close`, \
`unlink`, {files} files per phase; while one system runs them, the other system's mounts are \
unmounted (an idle `mfsmount` slowed ElkFS's creates by up to a third after each cache drop). \
`ls -l` is GNU ls with `LC_ALL=C`, its lines counted. \
After ElkFS's unlinks of the small files the harness waits until its chunkservers have \
deleted the freed chunk copies (ElkFS deletes them once none has been freed for 250 ms), so \
that this work of ElkFS's does not fall into MooseFS's next timed step. MooseFS deletes chunk \
files much later (none of 4 000 copies within a minute of their unlinks here), which is not \
waited for.
- **RSS.** `VmRSS` of each master process, once just started and once after the large \
directory was filled (by then the other workloads have come and gone).
- **Chunkserver loss.** Measured once per cluster (it cannot be repeated on the same \
cluster): one chunkserver, the one holding most of the file's chunks, killed with SIGKILL \
after a {loss} MiB file was written with fsync and every chunk had 2 copies; then the time until every chunk of that file has 2 \
copies again, not counting the killed server's (MooseFS: `mfsfileinfo` every 100 ms; ElkFS, which has no status command yet: \
the chunk files in the surviving chunkservers' directories, which works on one machine), \
giving up after {timeout} s.
- **Ratios** are ElkFS ÷ MooseFS of the medians: above 1 is better for rates, below 1 is \
better for times and memory. Targets are the issue's; \"met\"/\"missed\" compare the ratio \
with them.",
        cs = crate::cluster_elkfs::CHUNKSERVERS,
        runs = sizes.runs,
        s = if sizes.runs == 1 { "" } else { "s" },
        file = if sizes.file_bytes & ((1 << 30) - 1) == 0 {
            format!("{} GiB", sizes.file_bytes >> 30)
        } else {
            format!("{} MiB", sizes.file_bytes >> 20)
        },
        secs = sizes.randread_secs,
        first_touch = crate::stats::group_thousands(
            crate::workloads::first_touch_count(sizes.file_bytes) as f64
        ),
        files = crate::stats::group_thousands(sizes.files as f64),
        loss = sizes.loss_file_bytes >> 20,
        timeout = sizes.recovery_timeout.as_secs(),
    )
}

/// The whole Markdown document.
pub fn render(doc: &Document<'_>) -> String {
    let mut out = String::new();
    out.push_str("# ElkFS performance, compared with MooseFS\n\n");
    out.push_str(
        "Written by `elkfs-bench` (`tools/bench`), which starts a local ElkFS cluster and a \
         local MooseFS 3 cluster of the same shape, runs the same workloads through their \
         mounts and writes this file. To reproduce (as root; it installs MooseFS and fio from \
         Debian's packages if they are missing and builds ElkFS in release mode):\n\n",
    );
    out.push_str(&format!("```sh\n{}\n```\n\n", doc.command));
    out.push_str(&format!(
        "This run: {}, {:.0} minutes{}. `--quick` makes a short run and a workload can be \
         picked by name (`--help` lists them).\n\n",
        doc.date,
        doc.duration_secs / 60.0,
        if doc.quick {
            " (a `--quick` run: smaller sizes, one repetition)"
        } else {
            ""
        }
    ));
    out.push_str("## Results\n\n");
    out.push_str(&doc.report.table());
    out.push_str(
        "\nEach value is the median of the runs (all of them are listed at the end). Ratios are \
         ElkFS ÷ MooseFS: above 1 is better for rates, below 1 is better for times and memory.\n\n",
    );
    out.push_str(MOOSEFS_FSYNC);
    out.push_str("\n\n");
    if !doc.notes.is_empty() {
        out.push_str("## Observed during the run\n\n");
        for note in doc.notes {
            out.push_str(&format!("- {note}\n"));
        }
        out.push('\n');
    }
    out.push_str("## Machine\n\n");
    out.push_str(&doc.machine.table());
    out.push_str("\n## How it is measured\n\n");
    out.push_str(&method(doc.sizes));
    out.push_str("\n\n## Every run\n\n");
    out.push_str(&doc.report.samples());
    out.push_str("\n## ElkFS's log lines at WARN or ERROR\n\n");
    if doc.elk_log.is_empty() {
        out.push_str("None.\n");
    } else {
        out.push_str("```text\n");
        for line in doc.elk_log {
            out.push_str(line);
            out.push('\n');
        }
        out.push_str("```\n");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::{Column, Metric};
    use crate::stats::Unit;

    #[test]
    fn problem_lines_drop_timestamps_and_count_repeats() {
        let log = "2025-01-02T03:04:05.678Z  INFO listening on 127.0.0.1:1\n\
                   2025-01-02T03:04:06.000Z  WARN lost chunkserver 2\n\
                   2025-01-02T03:04:07.000Z  WARN lost chunkserver 2\n\
                   2025-01-02T03:04:08.000Z ERROR cannot fsync the changelog\n\
                   thread 'main' panicked at src/x.rs:1:2:\n";
        let lines = problem_lines(log);
        assert_eq!(lines[0], (2, "WARN lost chunkserver 2".to_owned()));
        assert!(lines.contains(&(1, "ERROR cannot fsync the changelog".to_owned())));
        assert!(lines.iter().any(|(_, m)| m.contains("panicked at")));
        assert_eq!(lines.len(), 3);
    }

    #[test]
    fn the_document_has_the_command_table_and_notes() {
        let mut report = Report::default();
        let m = Metric {
            key: "k",
            label: "creates".into(),
            unit: Unit::OpsPerSec,
            goals: vec![],
        };
        report.add_sample(&m, Column::Elk, 5000.0);
        let machine = Machine {
            facts: vec![("cores (nproc)".into(), "2".into())],
        };
        let notes = vec!["something odd".to_owned()];
        let text = render(&Document {
            date: "2025-01-01 00:00 UTC".into(),
            command: "cargo run --release -p elkfs-bench".into(),
            duration_secs: 600.0,
            quick: false,
            sizes: &Sizes::full(),
            machine: &machine,
            report: &report,
            notes: &notes,
            elk_log: &[],
        });
        assert!(text.contains("```sh\ncargo run --release -p elkfs-bench\n```"));
        assert!(text.contains("| creates "));
        assert!(text.contains("5 000/s"));
        assert!(text.contains("- something odd"));
        assert!(text.contains("| cores (nproc) | 2"));
        assert!(text.contains("median of 3 runs"));
        assert!(text.contains("None.\n"));
    }
}
