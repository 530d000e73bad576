//! What the `elkfs` tool asks the master about files, trees, the trash and the cluster.

use std::net::SocketAddr;

use serde::{Deserialize, Serialize};

use crate::ids::{ChunkId, ChunkVersion, InodeId};
use crate::types::Timestamp;

/// The state of one copy of a chunk, as `elkfs fileinfo` shows it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum CopyState {
    /// Current and counted toward the goal.
    Valid,
    /// Current, in a directory marked for removal (serves reads, not counted).
    Marked,
    /// An older version (missed a write): never served, about to be deleted.
    Stale,
    /// Found damaged by its server: never served, deleted once a good copy exists elsewhere.
    Damaged,
}

/// One copy of a chunk.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CopyInfo {
    /// The chunkserver holding it.
    pub server: SocketAddr,
    /// Its version there.
    pub version: ChunkVersion,
    /// What it is worth.
    pub state: CopyState,
}

/// One chunk of a file with its copies.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChunkCopies {
    /// Index of the chunk in the file.
    pub index: u32,
    /// The chunk.
    pub chunk: ChunkId,
    /// Its current version.
    pub version: ChunkVersion,
    /// Files sharing it (more than one after a snapshot).
    pub refs: u32,
    /// Its copies.
    pub copies: Vec<CopyInfo>,
}

/// Totals over a tree, as `elkfs dirinfo` shows them.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DirStats {
    /// Inodes of every kind.
    pub inodes: u64,
    /// Directories.
    pub dirs: u64,
    /// Regular files.
    pub files: u64,
    /// Chunks of those files.
    pub chunks: u64,
    /// Sum of file lengths.
    pub length: u64,
    /// Sum of the space the files' data takes on one copy (64 KiB blocks).
    pub size: u64,
    /// `size` times each file's goal: the space all copies take.
    pub realsize: u64,
}

/// A deleted file waiting in the trash.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TrashEntry {
    /// Its inode (what `trash restore` and `trash purge` take).
    pub inode: InodeId,
    /// Where it was, from the root of the filesystem.
    pub path: String,
    /// When it was deleted.
    pub deleted: Timestamp,
    /// When it will be purged.
    pub expires: Timestamp,
    /// Its length.
    pub length: u64,
}

/// One chunkserver as `elkfs status` shows it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServerStatus {
    /// Its data address.
    pub addr: SocketAddr,
    /// Copies it holds.
    pub chunks: u64,
    /// Bytes on its disks.
    pub total: u64,
    /// Bytes still free.
    pub available: u64,
}

/// One connected metalogger.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MetaloggerStatus {
    /// Where it connects from.
    pub addr: SocketAddr,
    /// The last metadata version it holds on disk (what it asked to continue after).
    pub version: u64,
}

/// The cluster at a glance.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClusterStatus {
    /// The master's program and version.
    pub master_version: String,
    /// Version of the last metadata change.
    pub metadata_version: u64,
    /// Inodes in the namespace.
    pub inodes: u64,
    /// Chunks in the chunk table.
    pub chunks: u64,
    /// Connected chunkservers.
    pub chunkservers: Vec<ServerStatus>,
    /// Connected metaloggers.
    pub metaloggers: Vec<MetaloggerStatus>,
    /// Chunks below their goal in the last replication pass.
    pub under_goal: u64,
    /// Chunks above their goal in the last replication pass.
    pub over_goal: u64,
    /// Chunks without a single valid copy in the last pass.
    pub missing: u64,
    /// Background workers and what they are doing.
    pub workers: Vec<(String, String)>,
}
