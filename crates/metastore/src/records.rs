//! The values stored under the namespace keys.

use elkfs_proto::types::{Attr, FileKind, Timestamp};
use elkfs_proto::{ChunkId, ChunkVersion, InodeId};
use serde::{Deserialize, Serialize};

/// Everything stored about an inode.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct InodeRecord {
    /// File, directory, ...
    pub kind: FileKind,
    /// Permission bits with setuid/setgid/sticky.
    pub mode: u32,
    /// Owner.
    pub uid: u32,
    /// Group.
    pub gid: u32,
    /// Directory entries naming it (directories: 2 + subdirectories).
    pub nlink: u32,
    /// Length in bytes.
    pub size: u64,
    /// Last access.
    pub atime: Timestamp,
    /// Last data change.
    pub mtime: Timestamp,
    /// Last attribute change.
    pub ctime: Timestamp,
    /// Device number of device nodes.
    pub rdev: u32,
    /// Copies to keep of each chunk.
    pub goal: u8,
    /// Seconds deleted files stay in the trash.
    pub trash_time: u32,
    /// Directories: the parent (for `..` and loop checks). Others: the first parent.
    pub parent: InodeId,
    /// Directories: the cookie the next new entry gets.
    pub next_cookie: u64,
    /// MooseFS-style extra attributes (`elkfs_proto::types::eattr` flags).
    pub eattrs: u8,
    /// Its name in `parent` (the first name, for files with several), for paths in the trash.
    pub name: Vec<u8>,
}

impl InodeRecord {
    /// The attributes a client sees.
    pub fn attr(&self, inode: InodeId) -> Attr {
        Attr {
            inode,
            kind: self.kind,
            mode: self.mode,
            nlink: self.nlink,
            uid: self.uid,
            gid: self.gid,
            size: self.size,
            atime: self.atime,
            mtime: self.mtime,
            ctime: self.ctime,
            rdev: self.rdev,
            goal: self.goal,
            trash_time: self.trash_time,
            eattrs: self.eattrs,
        }
    }
}

/// A directory entry, stored under its name (and, with the name, under its cookie).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DirentRecord {
    /// The inode named.
    pub inode: InodeId,
    /// Its kind, so listings need not read inodes.
    pub kind: FileKind,
    /// Its position in the directory's listing order.
    pub cookie: u64,
}

/// A directory entry as stored under its position.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct OrderRecord {
    /// The entry's name.
    pub name: Vec<u8>,
    /// The inode named.
    pub inode: InodeId,
    /// Its kind.
    pub kind: FileKind,
}

/// What the master knows of a chunk besides where its copies are (which is soft state).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChunkRecord {
    /// The current version; copies with another version are stale.
    pub version: ChunkVersion,
    /// How many file slots refer to it (more than one after a snapshot).
    pub refs: u32,
    /// How many copies to keep (the goal of the file it belongs to).
    pub goal: u8,
}

/// A chunk of a file, as listed for a client or the CLI.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FileChunk {
    /// Index of the chunk within the file.
    pub index: u32,
    /// The chunk.
    pub chunk: ChunkId,
    /// Its current version.
    pub version: ChunkVersion,
}

/// A deleted file waiting in the trash.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TrashRecord {
    /// Where it was, from the root (`/a/b/file`).
    pub path: Vec<u8>,
    /// When it was deleted.
    pub deleted: elkfs_proto::types::Timestamp,
}

/// What a client's numbered request produced, to answer a retry the same way.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RequestRecord {
    /// The inode the change created or changed, when there is one.
    pub inode: Option<InodeId>,
    /// When it was carried out (old records are forgotten).
    pub time: elkfs_proto::types::Timestamp,
}

/// The last numbered request a client carried out in one request slot, to answer a retry of it
/// the same way.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SlotRecord {
    /// The request's number.
    pub seq: u64,
    /// The inode the change created or changed, when there is one.
    pub inode: Option<InodeId>,
    /// When it was carried out (old records are forgotten).
    pub time: elkfs_proto::types::Timestamp,
}

impl SlotRecord {
    /// What request `seq` produced, as a [`RequestRecord`], if this slot's last request was it.
    pub fn of(self, seq: u64) -> Option<RequestRecord> {
        (self.seq == seq).then_some(RequestRecord {
            inode: self.inode,
            time: self.time,
        })
    }
}
