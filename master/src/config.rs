//! The master's settings: a TOML file (`--config`), overridden by command-line flags.

use std::path::PathBuf;
use std::time::Duration;

use elkfs_common::defaults;
use serde::Deserialize;

/// Every setting of the master, with its default.
#[derive(Clone, Debug, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MasterConfig {
    /// Address to listen on for clients, chunkservers and metaloggers (default `0.0.0.0:9421`).
    pub listen: String,
    /// Directory holding the changelog and the metadata database (default `/var/lib/elkfs/master`).
    pub data_dir: PathBuf,
    /// The changelog is fsynced at least this often, in milliseconds (default 100).
    pub commit_interval_ms: u64,
    /// sled's page cache, in MiB (default 64): bounds the memory used for metadata.
    pub metadata_cache_mb: u64,
    /// Seconds a write lease lasts without being renewed or ended (default 60).
    pub write_lease_timeout_secs: u64,
    /// File to write the bound address to once listening (for supervisors and tests).
    pub ready_file: Option<PathBuf>,
}

impl Default for MasterConfig {
    fn default() -> Self {
        MasterConfig {
            listen: defaults::MASTER_LISTEN.to_string(),
            data_dir: PathBuf::from(defaults::MASTER_DATA_DIR),
            commit_interval_ms: defaults::COMMIT_INTERVAL.as_millis() as u64,
            metadata_cache_mb: defaults::METADATA_CACHE_BYTES / (1024 * 1024),
            write_lease_timeout_secs: defaults::WRITE_LEASE_TIMEOUT.as_secs(),
            ready_file: None,
        }
    }
}

impl MasterConfig {
    /// The fsync interval of the changelog.
    pub fn commit_interval(&self) -> Duration {
        Duration::from_millis(self.commit_interval_ms.max(1))
    }

    /// How long an unrenewed write lease lasts.
    pub fn write_lease_timeout(&self) -> Duration {
        Duration::from_secs(self.write_lease_timeout_secs.max(1))
    }
}
