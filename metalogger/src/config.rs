//! The metalogger's settings: a TOML file (`--config`), overridden by command-line flags.

use std::path::PathBuf;

use elkfs_common::defaults;
use serde::Deserialize;

/// Every setting of a metalogger, with its default.
#[derive(Clone, Debug, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MetaloggerConfig {
    /// The master, `HOST[:PORT]` (default `localhost:9421`, or `$ELKFS_MASTER`).
    pub master: String,
    /// Where the copy lives (default `/var/lib/elkfs/metalogger`): a valid master data directory.
    pub data_dir: PathBuf,
    /// Size of each local changelog file before the next one starts, in MiB (default 64).
    pub changelog_file_mib: u64,
    /// File to write the master's address to once the copy is up to date for the first time.
    pub ready_file: Option<PathBuf>,
    /// A copy of the master's cluster key file (default: `cluster.key` in the data directory;
    /// a key given elsewhere is copied there, so a promoted master has it).
    pub cluster_key: Option<PathBuf>,
    /// Encrypt the link to the master with TLS (default false); must match the master's `tls`.
    pub tls: bool,
}

impl Default for MetaloggerConfig {
    fn default() -> Self {
        MetaloggerConfig {
            master: std::env::var(defaults::MASTER_ENV)
                .unwrap_or_else(|_| defaults::MASTER_ADDR.to_string()),
            data_dir: PathBuf::from(defaults::METALOGGER_DATA_DIR),
            changelog_file_mib: 64,
            ready_file: None,
            cluster_key: None,
            tls: false,
        }
    }
}
