//! `elkfs-chunkserver`: parses the command line and runs a chunkserver until SIGTERM/SIGINT.

use std::path::PathBuf;

use clap::Parser;
use elkfs_chunkserver::config::ChunkserverConfig;
use elkfs_common::defaults;

#[derive(Parser, Debug)]
#[command(
    name = "elkfs-chunkserver",
    version,
    about = "ElkFS chunkserver: stores chunks on local directories and serves them",
    after_help = format!(
        "Defaults: master {} (or ${}), listen {}.\n\
         Every option can also be set in the --config file (TOML).",
        defaults::MASTER_ADDR,
        defaults::MASTER_ENV,
        defaults::CHUNKSERVER_LISTEN
    )
)]
struct Args {
    /// TOML configuration file.
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// A data directory (repeat for several disks); '*DIR' marks one for removal.
    #[arg(long = "data", value_name = "DIR")]
    data: Vec<String>,
    /// The master, HOST[:PORT].
    #[arg(long, value_name = "ADDR")]
    master: Option<String>,
    /// Address for the data port (HOST:PORT).
    #[arg(long, value_name = "ADDR")]
    listen: Option<String>,
    /// Write the data address to FILE once registered with the master.
    #[arg(long, value_name = "FILE")]
    ready_file: Option<PathBuf>,
    /// A copy of the master's cluster key file (its DATA_DIR/cluster.key); default: cluster.key
    /// in the first data directory.
    #[arg(long, value_name = "FILE")]
    cluster_key: Option<PathBuf>,
    /// Encrypt the link to the master and the data port with TLS (as the master's `tls`).
    #[arg(long)]
    tls: bool,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    elkfs_common::logging::init();
    elkfs_common::malloc::keep_freed_buffers();
    let mut config: ChunkserverConfig = elkfs_common::config::load(args.config.as_deref())?;
    if !args.data.is_empty() {
        config.data = args.data;
    }
    if let Some(master) = args.master {
        config.master = master;
    }
    if let Some(listen) = args.listen {
        config.listen = listen;
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
    if config.data.is_empty() {
        anyhow::bail!(
            "no data directory: give at least one --data DIR (or `data` in the config file)"
        );
    }
    elkfs_common::daemon::serve_until_stopped(|stop| elkfs_chunkserver::run(config, stop))
}
