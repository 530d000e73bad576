//! `elkfs-master`: parses the command line and runs the master until SIGTERM/SIGINT.

use std::path::PathBuf;

use clap::Parser;
use elkfs_common::defaults;
use elkfs_master::config::MasterConfig;

#[derive(Parser, Debug)]
#[command(
    name = "elkfs-master",
    version,
    about = "ElkFS metadata master: the namespace, the chunk map and the changelog",
    after_help = format!(
        "Defaults: listen {}, data dir {}, changelog fsync every {} ms.\n\
         Every option can also be set in the --config file (TOML).",
        defaults::MASTER_LISTEN,
        defaults::MASTER_DATA_DIR,
        defaults::COMMIT_INTERVAL.as_millis()
    )
)]
struct Args {
    /// TOML configuration file.
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Directory for the changelog and the metadata database.
    #[arg(long, value_name = "DIR")]
    data_dir: Option<PathBuf>,
    /// Address to listen on (HOST:PORT).
    #[arg(long, value_name = "ADDR")]
    listen: Option<String>,
    /// Exports file (who may mount what); without one only loopback clients are let in.
    #[arg(long, value_name = "FILE")]
    exports: Option<PathBuf>,
    /// Encrypt every connection with TLS (the `tls` setting); plain connections are refused.
    #[arg(long)]
    tls: bool,
    /// Write the bound address to FILE once listening.
    #[arg(long, value_name = "FILE")]
    ready_file: Option<PathBuf>,
}

fn main() -> anyhow::Result<()> {
    elkfs_common::malloc::limit_arenas();
    let args = Args::parse();
    elkfs_common::logging::init();
    let mut config: MasterConfig = elkfs_common::config::load(args.config.as_deref())?;
    if let Some(dir) = args.data_dir {
        config.data_dir = dir;
    }
    if let Some(listen) = args.listen {
        config.listen = listen;
    }
    if let Some(file) = args.ready_file {
        config.ready_file = Some(file);
    }
    if args.tls {
        config.tls = true;
    }
    if args.exports.is_some() {
        config.exports = args.exports;
    }
    elkfs_common::daemon::serve_until_stopped(|stop| elkfs_master::run(config, stop))
}
