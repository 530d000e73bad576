//! `elkfs-bench`: starts a local ElkFS cluster and a local MooseFS 3 cluster of the same shape,
//! runs the same workloads through their mounts, prints one table (ElkFS, MooseFS, MooseFS
//! DIRECT, the ratios, the targets) and writes it with the machine's description into
//! `docs/PERFORMANCE.md`.
//!
//! Run it with `cargo run --release -p elkfs-bench -- [--quick] [WORKLOAD...]` as root.

mod cluster_elkfs;
mod cluster_moosefs;
mod doc;
mod fio;
mod interrupt;
mod master_log;
mod mountpoint;
mod namespace_client;
mod prereq;
mod process;
mod progress;
mod report;
mod stats;
mod workdir;
mod workloads;

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

use anyhow::Context;
use clap::Parser;

use crate::cluster_elkfs::ElkCluster;
use crate::cluster_moosefs::MfsCluster;
use crate::workdir::WorkDir;
use crate::workloads::{Bench, Sizes, Workload};

/// Benchmarks ElkFS against MooseFS 3 on this machine, through real mounts (run as root).
#[derive(Parser, Debug)]
#[command(
    name = "elkfs-bench",
    after_help = "Without WORKLOAD, every workload runs (about 20 minutes; --quick: about 3). \
                  MooseFS and fio are installed with apt-get if missing. A full run writes \
                  docs/PERFORMANCE.md; a partial or --quick run writes a report only with --doc."
)]
struct Args {
    /// Workloads to run (default: all); they always run in the order listed here.
    #[arg(value_enum)]
    workloads: Vec<Workload>,
    /// A short run: a 256 MiB file, 2 000 files, a 10 000-entry directory, one repetition.
    #[arg(long)]
    quick: bool,
    /// Files the master-scale workload creates (default 1 000 000, 100 000 with --quick).
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
    scale_files: Option<u64>,
    /// Repetitions of each measurement; the table shows the median (default 3, 1 with --quick).
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u16).range(1..))]
    runs: Option<u16>,
    /// Where the clusters keep their data, mounts and logs (default: the system temp dir). It
    /// decides which disk is measured.
    #[arg(long, value_name = "DIR")]
    work_dir: Option<PathBuf>,
    /// Keep the work directory (data and logs) at the end.
    #[arg(long)]
    keep: bool,
    /// Write the report to FILE (default for a full run: docs/PERFORMANCE.md).
    #[arg(long, value_name = "FILE")]
    doc: Option<PathBuf>,
    /// Write no report file.
    #[arg(long, conflicts_with = "doc")]
    no_doc: bool,
    /// Take the ElkFS binaries from DIR instead of building them with cargo build --release.
    #[arg(long, value_name = "DIR")]
    bin_dir: Option<PathBuf>,
}

fn main() -> ExitCode {
    let args = Args::parse();
    progress::start();
    if let Err(e) = interrupt::install() {
        eprintln!("elkfs-bench: {e:#}");
        return ExitCode::FAILURE;
    }
    match run(&args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("elkfs-bench: {e:#}");
            if interrupt::interrupted() {
                ExitCode::from(interrupt::INTERRUPTED_EXIT as u8)
            } else {
                ExitCode::FAILURE
            }
        }
    }
}

/// The command that reproduces this run, for the report.
fn command_line() -> String {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let mut command = "cargo run --release -p elkfs-bench".to_owned();
    if !args.is_empty() {
        command.push_str(" -- ");
        command.push_str(&args.join(" "));
    }
    command
}

fn run(args: &Args) -> anyhow::Result<()> {
    if cfg!(debug_assertions) {
        progress::step(
            "warning: elkfs-bench was built without --release; its own loops are slower",
        );
    }
    prereq::require_root()?;
    prereq::install_packages()?;
    let bins = prereq::elk_binaries(args.bin_dir.clone())?;

    let mut sizes = if args.quick {
        Sizes::quick()
    } else {
        Sizes::full()
    };
    if let Some(runs) = args.runs {
        sizes.runs = usize::from(runs);
    }
    if let Some(files) = args.scale_files {
        sizes.scale_files = usize::try_from(files).context("--scale-files is too large")?;
    }
    let mut workloads = if args.workloads.is_empty() {
        Workload::all()
    } else {
        args.workloads.clone()
    };
    workloads.sort();
    workloads.dedup();
    let full_run = !args.quick && workloads == Workload::all();
    let doc_path = match (&args.doc, args.no_doc) {
        (_, true) => None,
        (Some(path), false) => Some(path.clone()),
        (None, false) => full_run.then(|| prereq::workspace_root().join("docs/PERFORMANCE.md")),
    };

    let mut work = WorkDir::create(args.work_dir.as_deref(), args.keep)?;
    progress::step(&format!("work directory {}", work.path().display()));
    let mut machine = doc::Machine::describe(work.path(), &prereq::workspace_root());
    let date = doc::now_utc();
    let started = Instant::now();

    progress::step("starting the ElkFS cluster (master, 3 chunkservers, mount)");
    let elk = ElkCluster::start(&bins, &work.path().join("elkfs"), None)?;
    let elk_logs = elk.logs_dir().to_path_buf();
    progress::step("starting the MooseFS cluster (master, 3 chunkservers, 2 mounts)");
    let mfs = MfsCluster::start(&work.path().join("moosefs"))?;
    let mut bench = Bench::new(elk, mfs, bins, work.path(), sizes.clone())?;

    let result = bench.run(&workloads);
    progress::step("stopping the clusters");
    let mut problems = bench.elk.stop();
    problems.extend(bench.mfs.stop());
    let elk_log = doc::log_summary(&elk_logs, 12);
    machine.add("load average at the end", doc::load_average());
    let peak = progress::peak_load();
    machine.add("highest 1-minute load average seen", format!("{peak:.2}"));
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    if peak > cores as f64 {
        bench.notes.push(format!(
            "The machine was busy with other work during the run (1-minute load average up to \
             {peak:.1} on {cores} cores): absolute numbers are lower than on a quiet machine. \
             The ratios suffer less, as the three systems were measured in turn, run by run."
        ));
    }

    println!("\n{}", bench.report.table());
    if let Err(e) = result {
        println!("(partial results: the run stopped early)");
        return Err(e);
    }
    bench.notes.extend(problems);
    for note in &bench.notes {
        println!("- {note}");
    }
    if !elk_log.is_empty() {
        println!("\nElkFS logged at WARN or ERROR:");
        for line in &elk_log {
            println!("  {line}");
        }
    }
    if let Some(path) = doc_path {
        let text = doc::render(&doc::Document {
            date,
            command: command_line(),
            duration_secs: started.elapsed().as_secs_f64(),
            quick: args.quick,
            sizes: &sizes,
            machine: &machine,
            report: &bench.report,
            notes: &bench.notes,
            elk_log: &elk_log,
        });
        std::fs::write(&path, text).with_context(|| format!("writing {}", path.display()))?;
        progress::step(&format!("wrote {}", path.display()));
    }
    work.succeeded();
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn the_command_line_is_consistent() {
        Args::command().debug_assert();
    }

    #[test]
    fn workloads_are_named_as_documented() {
        let args = Args::try_parse_from(["elkfs-bench", "--quick", "seq-read", "large-dir"])
            .expect("parse");
        assert_eq!(args.workloads, vec![Workload::SeqRead, Workload::LargeDir]);
        assert!(Args::try_parse_from(["elkfs-bench", "no-such-workload"]).is_err());
        let args = Args::try_parse_from(["elkfs-bench", "master-scale", "--scale-files", "5000"])
            .expect("parse");
        assert_eq!(args.workloads, vec![Workload::MasterScale]);
        assert_eq!(args.scale_files, Some(5_000));
        assert!(Args::try_parse_from(["elkfs-bench", "--scale-files", "0"]).is_err());
        assert_eq!(Workload::ChunkserverLoss.name(), "chunkserver-loss");
        assert_eq!(Workload::all().last(), Some(&Workload::ChunkserverLoss));
    }
}
