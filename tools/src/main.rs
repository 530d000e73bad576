//! `elkfs`: the ElkFS command-line tool. `elkfs up` runs a local cluster; the other commands
//! work on paths inside any ElkFS mount (the mount tells which master to ask) with the names and
//! output of MooseFS's tools (`mfsgetgoal`, `mfsfileinfo`, ...), or `--json` for scripts.

mod dirinfo;
mod eattr;
mod failure;
mod fileinfo;
mod goal;
mod locate;
mod output;
mod progress;
mod session;
mod snapshot;
mod status;
mod trash;
mod trashtime;
mod tree;
mod up;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use crate::output::Report;
use crate::session::Session;

#[derive(Parser, Debug)]
#[command(
    name = "elkfs",
    version,
    about = "ElkFS command-line tool",
    after_help = "Commands taking PATHs work on files inside any ElkFS mount and find the \
                  master from the mount. Exit status: 0 if every PATH succeeded, 1 if any \
                  failed (each failure is printed as `elkfs: PATH: reason`), 2 for bad usage."
)]
struct Cli {
    /// Print one JSON document (an array with an object per PATH, errors included) instead of
    /// text.
    #[arg(long, global = true)]
    json: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Start a complete local cluster (master, metalogger, chunkservers, a mount) in the foreground;
    /// Ctrl-C unmounts and stops everything. Running it again brings back the same files.
    Up {
        /// Directory holding everything (metadata, chunks, logs, the mount point).
        #[arg(long, default_value = "elkfs-local")]
        dir: PathBuf,
        /// Number of chunkservers.
        #[arg(long, default_value_t = 3)]
        chunkservers: usize,
        /// Where to mount the filesystem (default DIR/mnt).
        #[arg(long)]
        mountpoint: Option<PathBuf>,
        /// Master port; chunkservers use the ports after it (0: any free ports).
        #[arg(long, default_value_t = elkfs_common::defaults::MASTER_PORT)]
        port: u16,
        /// Encrypt every connection with TLS (the cluster's certificate is DIR/master/ca.crt).
        #[arg(long)]
        tls: bool,
    },
    /// Show the goal (number of copies) of files and directories.
    Getgoal(goal::GetArgs),
    /// Set the goal of files and directories (-r: whole trees).
    #[command(allow_negative_numbers = true)]
    Setgoal(goal::SetArgs),
    /// Show how long deleted files stay in the trash.
    Gettrashtime(trashtime::GetArgs),
    /// Set how long deleted files stay in the trash (-r: whole trees).
    #[command(allow_negative_numbers = true)]
    Settrashtime(trashtime::SetArgs),
    /// Show extra attributes (noowner, noattrcache, noentrycache, nodatacache).
    Geteattr(eattr::GetArgs),
    /// Turn extra attributes on.
    Seteattr(eattr::ChangeArgs),
    /// Turn extra attributes off.
    Deleattr(eattr::ChangeArgs),
    /// Show every chunk of files with each copy's server and state.
    Fileinfo(fileinfo::Args),
    /// Count the chunks of files by how many valid copies they have.
    Checkfile(fileinfo::Args),
    /// Show inodes, directories, files, chunks and space of trees.
    Dirinfo(dirinfo::Args),
    /// List, restore or purge deleted files.
    #[command(subcommand)]
    Trash(trash::TrashCommand),
    /// Make copy-on-write snapshots of files or trees.
    Snapshot(snapshot::Args),
    /// Show the cluster at a glance: master, chunkservers, metaloggers, chunk states, workers.
    Status(status::Args),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Command::Up {
        dir,
        chunkservers,
        mountpoint,
        port,
        tls,
    } = cli.command
    {
        return edge(up::run(up::UpOptions {
            dir,
            chunkservers,
            mountpoint,
            port,
            tls,
        }));
    }
    let mut session = match Session::new() {
        Ok(s) => s,
        Err(e) => return edge(Err(e)),
    };
    if let Command::Status(args) = &cli.command {
        return status::run(args, cli.json, &mut session);
    }
    let mut report = Report::new(cli.json);
    let (s, r) = (&mut session, &mut report);
    match &cli.command {
        Command::Getgoal(args) => goal::get(args, s, r),
        Command::Setgoal(args) => goal::set(args, s, r),
        Command::Gettrashtime(args) => trashtime::get(args, s, r),
        Command::Settrashtime(args) => trashtime::set(args, s, r),
        Command::Geteattr(args) => eattr::get(args, s, r),
        Command::Seteattr(args) => eattr::change(args, true, s, r),
        Command::Deleattr(args) => eattr::change(args, false, s, r),
        Command::Fileinfo(args) => fileinfo::fileinfo(args, s, r),
        Command::Checkfile(args) => fileinfo::checkfile(args, s, r),
        Command::Dirinfo(args) => dirinfo::run(args, s, r),
        Command::Trash(command) => trash::run(command, s, r),
        Command::Snapshot(args) => snapshot::run(args, s, r),
        Command::Up { .. } | Command::Status(_) => {}
    }
    report.finish()
}

/// Turns a whole-command error into `elkfs: reason` and exit status 1.
fn edge(result: anyhow::Result<()>) -> ExitCode {
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("elkfs: {e:#}");
            ExitCode::FAILURE
        }
    }
}
