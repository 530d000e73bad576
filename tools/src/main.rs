//! `elkfs`: the ElkFS command-line tool.

mod up;

use std::path::PathBuf;

use clap::{Parser, Subcommand};

#[derive(Parser, Debug)]
#[command(name = "elkfs", version, about = "ElkFS command-line tool")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Start a complete local cluster (master, chunkservers, a mount) in the foreground;
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
    },
}

fn main() {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Up {
            dir,
            chunkservers,
            mountpoint,
            port,
        } => up::run(up::UpOptions {
            dir,
            chunkservers,
            mountpoint,
            port,
        }),
    };
    if let Err(e) = result {
        eprintln!("elkfs: {e:#}");
        std::process::exit(1);
    }
}
