//! Test harness for ElkFS end-to-end tests: starts a real master, chunkservers and FUSE mounts
//! as processes on 127.0.0.1, all in one temporary directory, waits for each to write its ready
//! file, and on drop unmounts, stops everything and fails the test if a daemon logged an
//! unexpected `ERROR`.
//!
//! With [`ClusterBuilder::private_network`] every process runs on a host of its own instead, a
//! network namespace on a private subnet (see [`Network`]), so a test can cut a host's link.
//!
//! The binaries are taken from the cargo target directory (or `ELKFS_BIN_DIR`); build them with
//! `cargo build --workspace --bins`, or run `cargo test --workspace`, which builds them.
//!
//! ```no_run
//! use elkfs_testkit::Cluster;
//!
//! let mut cluster = Cluster::builder().chunkservers(3).mounts(1).start();
//! let file = cluster.mount_path(0).join("hello");
//! std::fs::write(&file, b"world").expect("write through the mount");
//! cluster.restart_all();
//! assert_eq!(std::fs::read(&file).expect("read after restart"), b"world");
//! ```

#![warn(missing_docs)]

mod bin_dir;
mod builder;
mod cluster;
mod daemon;
mod error;
mod handles;
mod launcher;
mod lifecycle;
mod log_scan;
mod metaloggers;
mod mountinfo;
mod network;
mod prereq;
mod teardown;
mod wait;

pub use bin_dir::{
    BIN_DIR_ENV, CHUNKSERVER_BIN, CLI_BIN, MASTER_BIN, METALOGGER_BIN, MOUNT_BIN, bin_dir, binary,
    cluster_binaries_available,
};
pub use builder::{ClusterBuilder, READY_TIMEOUT};
pub use cluster::{Cluster, MASTER_ENV};
pub use error::StartError;
pub use handles::{ChunkserverHandle, MasterHandle, MetaloggerHandle, MountHandle, Process};
pub use lifecycle::STOP_TIMEOUT;
pub use network::{Host, Network, OnHost};
pub use prereq::fuse_available;
pub use teardown::KEEP_DIR_ENV;
pub use wait::wait_until;
