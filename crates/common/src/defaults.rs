//! Every default port, path and timeout, in one place so `--help` and the docs can print them.

use std::time::Duration;

/// Port the master listens on for clients, chunkservers and metaloggers.
pub const MASTER_PORT: u16 = 9421;

/// Port a chunkserver serves chunk data on.
pub const CHUNKSERVER_PORT: u16 = 9422;

/// The master's default listen address.
pub const MASTER_LISTEN: &str = "0.0.0.0:9421";

/// A chunkserver's default listen address.
pub const CHUNKSERVER_LISTEN: &str = "0.0.0.0:9422";

/// Where clients and daemons look for the master unless told otherwise.
pub const MASTER_ADDR: &str = "localhost:9421";

/// Environment variable that overrides the master address.
pub const MASTER_ENV: &str = "ELKFS_MASTER";

/// The master's default data directory.
pub const MASTER_DATA_DIR: &str = "/var/lib/elkfs/master";

/// Where the mount looks for the cluster authority's certificate (a copy of the master's
/// `ca.crt`) when `-o tls` names no `tlsca=FILE`.
pub const TLS_CA_FILE: &str = "/etc/elkfs/ca.crt";

/// The metalogger's default data directory.
pub const METALOGGER_DATA_DIR: &str = "/var/lib/elkfs/metalogger";

/// Goal (number of copies) of the root directory of a new filesystem.
pub const ROOT_GOAL: u8 = 2;

/// Trash time of the root directory of a new filesystem, in seconds (one day).
pub const ROOT_TRASH_TIME: u32 = 86_400;

/// How often the master's changelog is fsynced at the latest.
pub const COMMIT_INTERVAL: Duration = Duration::from_millis(100);

/// How often a chunkserver fsyncs the chunk files changed since it last did: the most data no
/// client fsynced that a power cut can lose (ext4 commits its journal as often).
pub const CHUNK_SYNC_INTERVAL: Duration = Duration::from_secs(5);

/// sled's page cache on the master, in bytes.
pub const METADATA_CACHE_BYTES: u64 = 64 * 1024 * 1024;

/// How long a client waits for the master before giving up on a request with EIO.
pub const MASTER_TIMEOUT: Duration = Duration::from_secs(60);

/// First delay before reconnecting to the master; it doubles up to [`RECONNECT_MAX`].
pub const RECONNECT_MIN: Duration = Duration::from_millis(100);

/// Longest delay between reconnection attempts.
pub const RECONNECT_MAX: Duration = Duration::from_secs(2);

/// How often a chunkserver reports its space to the master.
pub const HEARTBEAT_INTERVAL: Duration = Duration::from_secs(2);

/// A chunkserver that sends nothing for this long is treated as lost (its connection is cut).
pub const CHUNKSERVER_SILENCE: Duration = Duration::from_secs(6);

/// How long a client waits for a chunkserver's answer before trying another copy or chain.
pub const DATA_TIMEOUT: Duration = Duration::from_secs(10);

/// How long a write lease lasts without its holder renewing or ending it.
pub const WRITE_LEASE_TIMEOUT: Duration = Duration::from_secs(60);

/// How long a writer keeps one write lease while it goes on writing the chunk: past this it
/// ends the lease and takes a new one, so the master never sees the lease lapse (and, say,
/// copies the chunk elsewhere) while the chunk is still being written.
pub const WRITE_LEASE_RENEWAL: Duration = Duration::from_secs(20);

/// The shortest write lease timeout the master accepts: well above [`WRITE_LEASE_RENEWAL`].
pub const WRITE_LEASE_TIMEOUT_MIN: Duration = Duration::from_secs(30);

/// How long the mount lets the kernel cache attributes and names (as MooseFS's 1 s).
pub const ATTR_CACHE: Duration = Duration::from_secs(1);

/// How far ahead of a sequential reader the kernel reads a mount's files, in KiB
/// (`-o readahead_kb=N`). Linux gives a FUSE mount 128 KiB, one round trip to a chunkserver per
/// 128 KiB read; 16 MiB keeps about a dozen 1 MiB reads in flight, which read a large file
/// faster than 8 or 32 MiB once chunkservers read past their page cache (docs/PERFORMANCE.md,
/// "Large reads past the page cache").
pub const READAHEAD_KB: u32 = 16 * 1024;

/// Threads of the mount's async runtime (`-o workers=N`). With more than one, every request
/// the kernel hands over also woke a second thread that found nothing to do; on a 2-core
/// machine one thread made creates about 30% faster and left data rates where they were
/// (docs/PERFORMANCE.md, "Thread hand-offs").
pub const MOUNT_WORKERS: usize = 1;

/// Bytes of written data the mount buffers per open file before a write waits.
pub const WRITE_BUFFER_BYTES: usize = 32 * 1024 * 1024;

/// Data frames a writer keeps in flight to the first chunkserver of a chain.
pub const WRITE_WINDOW: usize = 16;

/// How long daemons wait for work in flight when stopping before they give up on it.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);
