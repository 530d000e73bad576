//! The chunkserver's settings: a TOML file (`--config`), overridden by command-line flags.

use std::path::PathBuf;

use elkfs_common::defaults;
use serde::Deserialize;

/// Every setting of a chunkserver, with its default.
#[derive(Clone, Debug, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ChunkserverConfig {
    /// The master, `HOST[:PORT]` (default `localhost:9421`, or `$ELKFS_MASTER`).
    pub master: String,
    /// Address for the data port (default `0.0.0.0:9422`).
    pub listen: String,
    /// Data directories; a leading `*` marks one for removal (its chunks move elsewhere).
    pub data: Vec<String>,
    /// File to write the data address to once registered with the master.
    pub ready_file: Option<PathBuf>,
    /// How fast the background chunk test re-reads chunks, in MiB/s (default 8).
    pub chunk_test_mib_per_sec: u64,
    /// Seconds between passes that fsync every chunk file changed since the last (default 5):
    /// a power cut loses at most this much of the data no client fsynced. 0 counts as 1.
    pub sync_interval_secs: u64,
    /// Write the page-aligned middle of each large write (256 KiB or more) past a chunk's end to
    /// the disk directly, past the page cache (default true). False sends every write through
    /// the page cache: for a disk whose direct I/O is slow.
    pub direct_writes: bool,
    /// Read each large range of chunk data (256 KiB or more) the page cache holds next to nothing
    /// of, and that was not read lately, from the disk directly, past the page cache (default
    /// true). False reads everything through the page cache: for a disk whose direct I/O is slow.
    pub direct_reads: bool,
    /// A copy of the master's cluster key file (default: `cluster.key` in the first data
    /// directory).
    pub cluster_key: Option<PathBuf>,
    /// Encrypt the links to the master and the data port with TLS (default false); must match
    /// the master's `tls`.
    pub tls: bool,
}

impl Default for ChunkserverConfig {
    fn default() -> Self {
        ChunkserverConfig {
            master: std::env::var(defaults::MASTER_ENV)
                .unwrap_or_else(|_| defaults::MASTER_ADDR.to_string()),
            listen: defaults::CHUNKSERVER_LISTEN.to_string(),
            data: Vec::new(),
            ready_file: None,
            chunk_test_mib_per_sec: 8,
            sync_interval_secs: defaults::CHUNK_SYNC_INTERVAL.as_secs(),
            direct_writes: true,
            direct_reads: true,
            cluster_key: None,
            tls: false,
        }
    }
}

impl ChunkserverConfig {
    /// The time between sync passes (at least a second).
    pub fn sync_interval(&self) -> std::time::Duration {
        std::time::Duration::from_secs(self.sync_interval_secs.max(1))
    }
}
