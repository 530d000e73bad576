//! `elkfs-metalogger`: keeps a ready copy of the master's metadata until SIGTERM/SIGINT.

use std::path::PathBuf;

use clap::Parser;
use elkfs_common::defaults;
use elkfs_metalogger::config::MetaloggerConfig;

#[derive(Parser, Debug)]
#[command(
    name = "elkfs-metalogger",
    version,
    about = "ElkFS metalogger: follows the master's changelog; its directory is a ready master data directory",
    after_help = format!(
        "Defaults: master {} (or ${}), data dir {}.\n\
         Promote it by starting elkfs-master --data-dir on its directory (docs/OPERATIONS.md).",
        defaults::MASTER_ADDR,
        defaults::MASTER_ENV,
        defaults::METALOGGER_DATA_DIR
    )
)]
struct Args {
    /// TOML configuration file.
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Where to keep the copy.
    #[arg(long, value_name = "DIR")]
    data_dir: Option<PathBuf>,
    /// The master, HOST[:PORT].
    #[arg(long, value_name = "ADDR")]
    master: Option<String>,
    /// Write the master's address to FILE once the copy is up to date.
    #[arg(long, value_name = "FILE")]
    ready_file: Option<PathBuf>,
    /// A copy of the master's cluster key file (its DATA_DIR/cluster.key); default: cluster.key
    /// in the data directory.
    #[arg(long, value_name = "FILE")]
    cluster_key: Option<PathBuf>,
    /// Encrypt the link to the master with TLS (as the master's `tls`).
    #[arg(long)]
    tls: bool,
}

fn main() -> anyhow::Result<()> {
    elkfs_common::malloc::limit_arenas();
    let args = Args::parse();
    elkfs_common::logging::init();
    let mut config: MetaloggerConfig = elkfs_common::config::load(args.config.as_deref())?;
    if let Some(dir) = args.data_dir {
        config.data_dir = dir;
    }
    if let Some(master) = args.master {
        config.master = master;
    }
    if let Some(file) = args.ready_file {
        config.ready_file = Some(file);
    }
    if let Some(file) = args.cluster_key {
        config.cluster_key = Some(file);
    }
    if args.tls {
        config.tls = true;
    }
    elkfs_common::daemon::serve_until_stopped(|stop| elkfs_metalogger::run(config, stop))
}
