//! `elkfs status`: the cluster at a glance, in the shapes of `mfscli -SIN -SCS -SMB`: master
//! version, metadata and chunk counts, chunks missing, under and over goal, each chunkserver, the
//! metaloggers, and what each background worker is doing. On a terminal it prints tables; on a
//! pipe (or with `-p`) tab-separated lines as `mfscli` prints them there, for scripts.

use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use elkfs_proto::info::ClusterStatus;
use elkfs_proto::master::{MasterReply, MasterRequest};
use serde_json::{Value, json};

use crate::failure::Failure;
use crate::locate::cluster_master;
use crate::output::{print_json, print_text};
use crate::session::Session;

/// `elkfs status`.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// A path inside an ElkFS mount, to ask that mount's master (default: the current directory
    /// if it is on ElkFS, else $ELKFS_MASTER, else localhost:9421).
    pub path: Option<PathBuf>,
    /// Ask this master instead.
    #[arg(long, value_name = "HOST[:PORT]")]
    pub master: Option<String>,
    /// Refresh every SECS seconds (default 2) until Ctrl-C.
    #[arg(long, value_name = "SECS", num_args = 0..=1, default_missing_value = "2")]
    pub watch: Option<f64>,
    /// Tab-separated lines, as on a pipe, even on a terminal.
    #[arg(short, long)]
    pub plain: bool,
}

/// Runs `elkfs status`.
pub fn run(args: &Args, json: bool, session: &mut Session) -> ExitCode {
    let shown = match &args.path {
        Some(p) => p.display().to_string(),
        None => "status".to_string(),
    };
    let master = match cluster_master(args.master.as_deref(), args.path.as_deref()) {
        Ok(m) => m,
        Err(f) => {
            eprintln!("elkfs: {shown}: {f}");
            return ExitCode::FAILURE;
        }
    };
    let tty = std::io::stdout().is_terminal();
    let tables = tty && !args.plain && !json;
    loop {
        let outcome = fetch(session, &master);
        if args.watch.is_some() && tty {
            print_text("\x1b[H\x1b[2J");
        }
        let ok = match &outcome {
            Ok(status) if json => {
                print_json(&to_json(&master, status));
                true
            }
            Ok(status) if tables => {
                print_text(&tables_text(&master, status));
                true
            }
            Ok(status) => {
                print_text(&plain_text(status));
                true
            }
            Err(f) => {
                eprintln!("elkfs: {master}: {f}");
                if json {
                    print_json(&json!({ "master": master, "error": f.reason, "errno": f.errno }));
                }
                false
            }
        };
        let Some(secs) = args.watch else {
            return if ok {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            };
        };
        if !tty && !json {
            print_text("\n");
        }
        let pause = Duration::from_secs_f64(secs.clamp(0.1, 86_400.0));
        let interrupted = session.block_on(async {
            tokio::select! {
                _ = tokio::time::sleep(pause) => false,
                _ = tokio::signal::ctrl_c() => true,
            }
        });
        if interrupted {
            return ExitCode::SUCCESS;
        }
    }
}

fn fetch(session: &mut Session, master: &str) -> Result<ClusterStatus, Failure> {
    match session.ask(master, &MasterRequest::Status, None)? {
        MasterReply::Status(status) => Ok(status),
        _ => Err(Failure::unexpected()),
    }
}

/// The version number alone (`elkfs-master 0.1.0` → `0.1.0`), as mfscli shows versions.
fn version_number(master_version: &str) -> &str {
    master_version
        .rsplit_once(' ')
        .map_or(master_version, |(_, v)| v)
}

fn totals(status: &ClusterStatus) -> (u64, u64, u64) {
    let total = status.chunkservers.iter().map(|s| s.total).sum();
    let available = status.chunkservers.iter().map(|s| s.available).sum();
    let copies = status.chunkservers.iter().map(|s| s.chunks).sum();
    (total, available, copies)
}

/// `mfscli`'s plain (pipe) format: `section:<TAB>field<TAB>value` lines, a blank line between
/// sections. Chunkserver lines keep mfscli's columns (ip, port, id, labels, version, load,
/// maintenance, chunks, used, total, and the marked-for-removal ones); `-` where ElkFS has no
/// such thing.
fn plain_text(status: &ClusterStatus) -> String {
    let (total, available, copies) = totals(status);
    let mut out = String::new();
    let master = [
        (
            "master version",
            version_number(&status.master_version).to_string(),
        ),
        ("metadata version", status.metadata_version.to_string()),
        ("total space", total.to_string()),
        ("avail space", available.to_string()),
        ("all fs objects", status.inodes.to_string()),
        ("chunks", status.chunks.to_string()),
        ("all chunk copies", copies.to_string()),
    ];
    for (field, value) in master {
        out.push_str(&format!("master info:\t{field}\t{value}\n"));
    }
    out.push('\n');
    for (class, n) in [
        ("missing", status.missing),
        ("undergoal", status.under_goal),
        ("overgoal", status.over_goal),
    ] {
        out.push_str(&format!("all chunks matrix:\tchunkclass {class}:\t{n}\n"));
    }
    out.push('\n');
    for (i, s) in status.chunkservers.iter().enumerate() {
        out.push_str(&format!(
            "chunk servers:\t{}\t{}\t{}\t-\t-\t-\t-\t{}\t{}\t{}\t-\t0\t0\t0\n",
            s.addr.ip(),
            s.addr.port(),
            i + 1,
            s.chunks,
            s.total.saturating_sub(s.available),
            s.total
        ));
    }
    out.push('\n');
    for m in &status.metaloggers {
        out.push_str(&format!(
            "metadata backup loggers:\t{}\t{}\t{}\n",
            m.addr.ip(),
            m.addr.port(),
            m.version
        ));
    }
    if !status.metaloggers.is_empty() {
        out.push('\n');
    }
    for (name, what) in &status.workers {
        out.push_str(&format!("workers:\t{name}\t{what}\n"));
    }
    out
}

/// Aligned tables for a person at a terminal.
fn tables_text(master: &str, status: &ClusterStatus) -> String {
    let (total, available, copies) = totals(status);
    let used = total.saturating_sub(available);
    let mut out = format!("Master {master}\n");
    let rows = [
        ("version", status.master_version.clone()),
        ("metadata version", status.metadata_version.to_string()),
        ("fs objects", status.inodes.to_string()),
        ("chunks", format!("{} ({copies} copies)", status.chunks)),
        (
            "chunk states",
            format!(
                "missing {}, under goal {}, over goal {}",
                status.missing, status.under_goal, status.over_goal
            ),
        ),
        (
            "space",
            format!(
                "{} used of {} ({} available)",
                human(used),
                human(total),
                human(available)
            ),
        ),
    ];
    for (field, value) in rows {
        out.push_str(&format!("  {field:<17} {value}\n"));
    }
    out.push_str("\nChunk servers\n");
    if status.chunkservers.is_empty() {
        out.push_str("  none connected\n");
    } else {
        let addr_w = status
            .chunkservers
            .iter()
            .map(|s| s.addr.to_string().len())
            .max()
            .unwrap_or(0)
            .max(7);
        out.push_str(&format!(
            "  {:<addr_w$}  {:>8}  {:>9}  {:>9}  {:>6}  state\n",
            "address", "chunks", "used", "total", "used%"
        ));
        for s in &status.chunkservers {
            let used = s.total.saturating_sub(s.available);
            let percent = if s.total > 0 {
                format!("{:.1}%", used as f64 * 100.0 / s.total as f64)
            } else {
                "-".into()
            };
            out.push_str(&format!(
                "  {:<addr_w$}  {:>8}  {:>9}  {:>9}  {:>6}  connected\n",
                s.addr.to_string(),
                s.chunks,
                human(used),
                human(s.total),
                percent
            ));
        }
    }
    out.push_str("\nMetaloggers\n");
    if status.metaloggers.is_empty() {
        out.push_str("  none connected\n");
    }
    for m in &status.metaloggers {
        let behind = status.metadata_version.saturating_sub(m.version);
        out.push_str(&format!(
            "  {}  at metadata version {} ({behind} behind)\n",
            m.addr, m.version
        ));
    }
    out.push_str("\nWorkers\n");
    let name_w = status
        .workers
        .iter()
        .map(|(n, _)| n.len())
        .max()
        .unwrap_or(0);
    for (name, what) in &status.workers {
        out.push_str(&format!("  {name:<name_w$}  {what}\n"));
    }
    out
}

fn to_json(master: &str, status: &ClusterStatus) -> Value {
    let (total, available, copies) = totals(status);
    let servers: Vec<Value> = status
        .chunkservers
        .iter()
        .map(|s| {
            json!({
                "address": s.addr.to_string(),
                "chunks": s.chunks,
                "used": s.total.saturating_sub(s.available),
                "total": s.total,
                "available": s.available,
                "state": "connected",
            })
        })
        .collect();
    let workers: Vec<Value> = status
        .workers
        .iter()
        .map(|(name, what)| json!({ "name": name, "status": what }))
        .collect();
    json!({
        "master": master,
        "master_version": status.master_version,
        "metadata_version": status.metadata_version,
        "inodes": status.inodes,
        "chunks": status.chunks,
        "chunk_copies": copies,
        "total_space": total,
        "available_space": available,
        "missing": status.missing,
        "under_goal": status.under_goal,
        "over_goal": status.over_goal,
        "chunkservers": servers,
        "metaloggers": status
            .metaloggers
            .iter()
            .map(|m| json!({ "addr": m.addr.to_string(), "version": m.version }))
            .collect::<Vec<_>>(),
        "workers": workers,
    })
}

/// Bytes with a binary unit, as `mfscli` shows space (`459 MiB`, `9.5 GiB`).
fn human(bytes: u64) -> String {
    const UNITS: [&str; 7] = ["B", "KiB", "MiB", "GiB", "TiB", "PiB", "EiB"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit < UNITS.len() - 1 {
        value /= 1024.0;
        unit += 1;
    }
    match unit {
        0 => format!("{bytes} B"),
        _ if value < 10.0 => format!("{value:.1} {}", UNITS[unit]),
        _ => format!("{value:.0} {}", UNITS[unit]),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use elkfs_proto::info::ServerStatus;

    fn sample() -> ClusterStatus {
        ClusterStatus {
            master_version: "elkfs-master 0.1.0".into(),
            metadata_version: 53,
            inodes: 11,
            chunks: 3,
            chunkservers: vec![ServerStatus {
                addr: "127.0.0.1:9422".parse().expect("address"),
                chunks: 3,
                total: 1000,
                available: 400,
            }],
            metaloggers: Vec::new(),
            under_goal: 1,
            over_goal: 0,
            missing: 0,
            workers: vec![("trash".into(), "0 files in the trash, 0 purged".into())],
        }
    }

    #[test]
    fn plain_lines_keep_mfscli_columns() {
        let text = plain_text(&sample());
        assert!(
            text.starts_with("master info:\tmaster version\t0.1.0\n"),
            "{text}"
        );
        let cs = text
            .lines()
            .find(|l| l.starts_with("chunk servers:"))
            .expect("a chunkserver line");
        let fields: Vec<&str> = cs.split('\t').collect();
        assert_eq!(fields[1], "127.0.0.1");
        assert_eq!(fields[2], "9422");
        assert_eq!(fields[8], "3");
        assert_eq!(fields[9], "600");
        assert_eq!(fields[10], "1000");
        assert!(text.contains("all chunks matrix:\tchunkclass undergoal:\t1\n"));
        assert!(text.contains("workers:\ttrash\t0 files in the trash, 0 purged\n"));
    }

    #[test]
    fn sizes_read_like_mfscli() {
        assert_eq!(human(0), "0 B");
        assert_eq!(human(481_341_440), "459 MiB");
        assert_eq!(human(9_961_472), "9.5 MiB");
    }
}
