//! The master's settings: a TOML file (`--config`), overridden by command-line flags.

use std::path::PathBuf;
use std::time::Duration;

use elkfs_common::defaults;
use elkfs_metastore::StoreConfig;
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
    /// Every acknowledgement waits for the changelog fsync (default false); concurrent
    /// changes share one fsync. Without it a power cut may lose the last `commit_interval_ms`.
    pub sync_commit: bool,
    /// RAM for cached metadata, in MiB (default 64): sled's page cache and the read cache in
    /// front of it together. sled's bookkeeping of the pages it does not cache comes on top and
    /// grows with the number of files (about 100 bytes of RSS per file with sled 0.34).
    pub metadata_cache_mb: u64,
    /// Most metadata records kept in the read cache in front of sled (default 100 000; it also
    /// stays within an eighth of `metadata_cache_mb`), so hot lookups and getattrs are answered
    /// without waiting for a disk read.
    pub metadata_hot_entries: usize,
    /// A metadata image is written after this many changelog records since the last one
    /// (default 1 000 000); a new filesystem gets its first after 1000.
    pub image_every_records: u64,
    /// A metadata image is written after this many seconds since the last one, if anything
    /// changed (default 3600).
    pub image_every_secs: u64,
    /// Size in MiB past which the changelog starts a new file (default 64); files an image
    /// covers are deleted.
    pub changelog_file_mib: u64,
    /// Seconds a write lease lasts without being renewed or ended (default 60, at least 30:
    /// writers take a new lease every 20 s while they write one chunk).
    pub write_lease_timeout_secs: u64,
    /// Seconds a chunk slot whose writer's lease ended without a report (its connection cut,
    /// the master restarted, the lease lapsed) is left alone by a truncate or a write that grows
    /// the file (default 300): what the writer stored past the file's end stays for it to report
    /// when it comes back. Past that, such bytes are a dead writer's and are cut. It must outlast a
    /// live writer's way back: the mounts' `master_timeout` (60 s) of retries, plus the 20 s a
    /// writer goes on under one lease, plus a stuck chain's drain (up to 160 s).
    pub unreported_write_grace_secs: u64,
    /// Seconds a mount has to come back, after a master start or after its connection broke,
    /// and say which files it has open (default 60). Meanwhile no file deleted while open is
    /// purged: not the ones the vanished session had open, and after a start none at all (the
    /// master cannot know which mounts are still to come back). Past it, a mount that was away
    /// finds the files it held purged if nobody else kept them open.
    pub reopen_grace_secs: u64,
    /// Longest time, in seconds, new locks wait after a start for the clients that held locks
    /// before it to claim them again (default 20; 0: no wait, so a lock may be granted twice).
    pub lock_grace_secs: u64,
    /// The exports file (who may mount what, MooseFS's `mfsexports.cfg` shape); without one
    /// only loopback clients are let in. Reloaded on SIGHUP.
    pub exports: Option<PathBuf>,
    /// Every connection is encrypted with TLS (default false): mounts need `-o tls` and the
    /// master's `ca.crt`, chunkservers and metaloggers `--tls`. Plain connections are refused.
    pub tls: bool,
    /// File to write the bound address to once listening (for supervisors and tests).
    pub ready_file: Option<PathBuf>,
    /// Seconds chunks with a copy left wait for a chunkserver that vanished without a word
    /// (crash, network cut) to come back before they are copied elsewhere (default 15).
    pub replication_delay_lost_secs: u64,
    /// The same wait after a chunkserver stopped on purpose, e.g. for an upgrade (default 300).
    pub replication_delay_planned_secs: u64,
    /// Seconds after the master starts before anything is copied, while chunkservers
    /// re-register (default 15).
    pub replication_startup_delay_secs: u64,
    /// Chunk copies one chunkserver takes part in at once (default 2).
    pub replications_per_server: usize,
    /// Used-space difference, in percentage points, that balancing evens out (default 4).
    pub balance_threshold_percent: f64,
}

impl Default for MasterConfig {
    fn default() -> Self {
        MasterConfig {
            listen: defaults::MASTER_LISTEN.to_string(),
            data_dir: PathBuf::from(defaults::MASTER_DATA_DIR),
            commit_interval_ms: defaults::COMMIT_INTERVAL.as_millis() as u64,
            sync_commit: false,
            metadata_cache_mb: defaults::METADATA_CACHE_BYTES / (1024 * 1024),
            metadata_hot_entries: elkfs_metastore::store::DEFAULT_HOT_ENTRIES,
            image_every_records: elkfs_metastore::store::DEFAULT_IMAGE_EVERY_RECORDS,
            image_every_secs: elkfs_metastore::store::DEFAULT_IMAGE_EVERY.as_secs(),
            changelog_file_mib: elkfs_metastore::changelog::DEFAULT_FILE_BYTES / (1024 * 1024),
            write_lease_timeout_secs: defaults::WRITE_LEASE_TIMEOUT.as_secs(),
            unreported_write_grace_secs: 300,
            reopen_grace_secs: crate::state::DEFAULT_REOPEN_GRACE.as_secs(),
            lock_grace_secs: crate::lock_holders::DEFAULT_LOCK_GRACE.as_secs(),
            exports: None,
            tls: false,
            ready_file: None,
            replication_delay_lost_secs: 15,
            replication_delay_planned_secs: 300,
            replication_startup_delay_secs: 15,
            replications_per_server: 2,
            balance_threshold_percent: 4.0,
        }
    }
}

impl MasterConfig {
    /// The metadata store's settings.
    pub fn store(&self) -> StoreConfig {
        StoreConfig {
            cache_bytes: self.metadata_cache_mb * 1024 * 1024,
            changelog_file_bytes: self.changelog_file_mib.max(1) * 1024 * 1024,
            image_every_records: self.image_every_records.max(1),
            image_every: Duration::from_secs(self.image_every_secs.max(1)),
            hot_entries: self.metadata_hot_entries,
            ..StoreConfig::default()
        }
    }

    /// The fsync interval of the changelog.
    pub fn commit_interval(&self) -> Duration {
        Duration::from_millis(self.commit_interval_ms.max(1))
    }

    /// The replication worker's settings.
    pub fn replication(&self) -> crate::replication::ReplicationSettings {
        crate::replication::ReplicationSettings {
            lost_delay: Duration::from_secs(self.replication_delay_lost_secs),
            planned_delay: Duration::from_secs(self.replication_delay_planned_secs),
            startup_delay: Duration::from_secs(self.replication_startup_delay_secs),
            per_server: self.replications_per_server.max(1),
            balance_threshold: (self.balance_threshold_percent / 100.0).max(0.001),
            pass_pause: Duration::from_secs(1),
            quiet_page_pause: Duration::from_millis(200),
            quiet_pass_longest: Duration::from_secs(60),
        }
    }

    /// How long an unrenewed write lease lasts: at least
    /// [`defaults::WRITE_LEASE_TIMEOUT_MIN`], as writers take a new lease only every
    /// [`defaults::WRITE_LEASE_RENEWAL`].
    pub fn write_lease_timeout(&self) -> Duration {
        Duration::from_secs(self.write_lease_timeout_secs).max(defaults::WRITE_LEASE_TIMEOUT_MIN)
    }

    /// How long mounts have to reconnect and say which files they have open.
    pub fn reopen_grace(&self) -> Duration {
        Duration::from_secs(self.reopen_grace_secs)
    }

    /// How long new locks wait after a start for the clients that held locks to claim them.
    pub fn lock_grace(&self) -> Duration {
        Duration::from_secs(self.lock_grace_secs)
    }

    /// How long a slot written under a lease that ended without a report is left alone by a
    /// truncate or a write that grows the file.
    pub fn unreported_write_grace(&self) -> Duration {
        Duration::from_secs(self.unreported_write_grace_secs)
    }
}
