//! Changelog records: one per metadata change, carrying every value the master chose (times,
//! versions, ids), so that replaying a record on the same state always gives the same result.
//!
//! New variants go at the end; existing ones never change shape (old changelogs must replay).

use elkfs_proto::types::{FileKind, SetAttr, Timestamp};
use elkfs_proto::{ChunkId, ChunkVersion, InodeId};
use serde::{Deserialize, Serialize};

/// One metadata change.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum MetaOp {
    /// Creates the root directory of a new filesystem.
    Format {
        /// Creation time.
        time: Timestamp,
        /// The root's goal.
        goal: u8,
        /// The root's trash time.
        trash_time: u32,
    },
    /// Creates a non-directory inode.
    Mknod {
        /// Directory.
        parent: InodeId,
        /// Name.
        name: Vec<u8>,
        /// Kind (not a directory or symlink).
        kind: FileKind,
        /// Permission bits as asked for.
        mode: u32,
        /// The caller's umask (ignored under a default ACL).
        umask: u32,
        /// Owner.
        uid: u32,
        /// Group (before setgid-directory inheritance).
        gid: u32,
        /// Device number.
        rdev: u32,
        /// When.
        time: Timestamp,
    },
    /// Creates a directory.
    Mkdir {
        /// Parent directory.
        parent: InodeId,
        /// Name.
        name: Vec<u8>,
        /// Permission bits as asked for.
        mode: u32,
        /// The caller's umask (ignored under a default ACL).
        umask: u32,
        /// Owner.
        uid: u32,
        /// Group (before setgid-directory inheritance).
        gid: u32,
        /// When.
        time: Timestamp,
    },
    /// Creates a symbolic link.
    Symlink {
        /// Directory.
        parent: InodeId,
        /// Name.
        name: Vec<u8>,
        /// Target.
        target: Vec<u8>,
        /// Owner.
        uid: u32,
        /// Group.
        gid: u32,
        /// When.
        time: Timestamp,
    },
    /// Adds a name for an existing inode.
    Link {
        /// The inode.
        inode: InodeId,
        /// Directory of the new name.
        parent: InodeId,
        /// The new name.
        name: Vec<u8>,
        /// When.
        time: Timestamp,
    },
    /// Removes a non-directory name (and the inode with its last name).
    Unlink {
        /// Directory.
        parent: InodeId,
        /// Name.
        name: Vec<u8>,
        /// When.
        time: Timestamp,
    },
    /// Removes an empty directory.
    Rmdir {
        /// Parent directory.
        parent: InodeId,
        /// Name.
        name: Vec<u8>,
        /// When.
        time: Timestamp,
    },
    /// Renames, replacing or exchanging as `flags` say.
    Rename {
        /// Source directory.
        parent: InodeId,
        /// Source name.
        name: Vec<u8>,
        /// Target directory.
        new_parent: InodeId,
        /// Target name.
        new_name: Vec<u8>,
        /// `RENAME_NOREPLACE` / `RENAME_EXCHANGE`.
        flags: u32,
        /// When.
        time: Timestamp,
    },
    /// Changes attributes; a size change drops the chunks wholly past the new end.
    SetAttr {
        /// The inode.
        inode: InodeId,
        /// What to change (`TimeSet::Now` means `time`).
        changes: SetAttr,
        /// When.
        time: Timestamp,
    },
    /// Records the length a writer reached (the larger of it and the current length wins).
    ExtendLength {
        /// The file.
        inode: InodeId,
        /// Its length after the writes.
        length: u64,
        /// When the writes ended (the new mtime).
        time: Timestamp,
    },
    /// Adds a new chunk to a file.
    CreateChunk {
        /// The file.
        inode: InodeId,
        /// The chunk's index in it.
        index: u32,
        /// The chunk id (from the reserved range).
        chunk: ChunkId,
        /// Its first version.
        version: ChunkVersion,
    },
    /// Moves a chunk to a newer version (a write or truncate started, or a newer copy was
    /// found); a version not above the recorded one changes nothing.
    SetChunkVersion {
        /// The chunk.
        chunk: ChunkId,
        /// Its version from now on, if higher.
        version: ChunkVersion,
    },
    /// Reserves chunk ids below `up_to` for allocation, so ids are never handed out twice even
    /// if the master dies before the chunk's creation is logged.
    ReserveChunkIds {
        /// The new bound.
        up_to: u64,
    },
    /// Sets an extended attribute.
    SetXattr {
        /// The inode.
        inode: InodeId,
        /// Full name.
        name: Vec<u8>,
        /// Value.
        value: Vec<u8>,
        /// `XATTR_CREATE` (1) / `XATTR_REPLACE` (2).
        flags: u32,
        /// When (the new ctime).
        time: Timestamp,
    },
    /// Removes an extended attribute.
    RemoveXattr {
        /// The inode.
        inode: InodeId,
        /// Full name.
        name: Vec<u8>,
        /// When (the new ctime).
        time: Timestamp,
    },
    /// Deletes an unlinked file for good (its last close happened, or nobody reopened it).
    Purge {
        /// The file.
        inode: InodeId,
    },
    /// Sets an inode's goal (and, for a file, its chunks').
    SetGoal {
        /// The inode.
        inode: InodeId,
        /// Copies to keep, 1..=9.
        goal: u8,
        /// When (the new ctime).
        time: Timestamp,
    },
    /// Sets an inode's trash time.
    SetTrashTime {
        /// The inode.
        inode: InodeId,
        /// Seconds a deleted file stays in the trash.
        seconds: u32,
        /// When (the new ctime).
        time: Timestamp,
    },
    /// Sets an inode's MooseFS-style extra attributes.
    SetEattr {
        /// The inode.
        inode: InodeId,
        /// The new flags.
        eattrs: u8,
        /// When (the new ctime).
        time: Timestamp,
    },
    /// Drops the chunks `first..end` of a file (punching a hole).
    ClearChunks {
        /// The file.
        inode: InodeId,
        /// First index dropped.
        first: u32,
        /// One past the last index dropped.
        end: u32,
        /// When (the new mtime and ctime).
        time: Timestamp,
    },
    /// Records a read: sets the access time only (no ctime change, as on Linux).
    SetAtime {
        /// The inode.
        inode: InodeId,
        /// The new access time.
        time: Timestamp,
    },
    /// Puts a trashed file back at its old path, recreating missing directories.
    TrashRestore {
        /// The file.
        inode: InodeId,
        /// When.
        time: Timestamp,
    },
    /// Creates `name` in `parent` as a copy-on-write copy of `source` (its chunks shared).
    Snapshot {
        /// What to copy (a directory is copied empty; the master copies its entries).
        source: InodeId,
        /// Directory for the copy.
        parent: InodeId,
        /// Name of the copy.
        name: Vec<u8>,
        /// Owner and group of the copy (the source's when `None`).
        owner: Option<(u32, u32)>,
        /// When.
        time: Timestamp,
    },
    /// Points a file's chunk slot at a private copy of a shared chunk (copy-on-write).
    ReplaceChunk {
        /// The file.
        inode: InodeId,
        /// The slot.
        index: u32,
        /// The new chunk (from the reserved range).
        chunk: ChunkId,
        /// Its version.
        version: ChunkVersion,
    },
    /// A change made for a client's numbered request, remembered so a retry is not made twice.
    Tagged {
        /// The client process.
        client: u64,
        /// The request's number.
        seq: u64,
        /// When.
        time: Timestamp,
        /// The change.
        op: Box<MetaOp>,
    },
    /// Forgets the numbered requests carried out before `before` (retries come within seconds).
    ForgetRequests {
        /// The cut-off time.
        before: Timestamp,
    },
    /// Records that `version` of `chunk` may be handed to chunkservers, before the first one is
    /// told (a lower or equal one than already recorded changes nothing). The master's next bump
    /// goes past it, so a copy that a master bumped and died before logging it never shares a
    /// version with a copy written at a version bumped later.
    IssueChunkVersion {
        /// The chunk.
        chunk: ChunkId,
        /// The version about to be handed out.
        version: ChunkVersion,
    },
    /// A change made for a client's numbered request, remembered in the client's request slot
    /// (in place of the slot's previous request) so that a retry is not made twice.
    TaggedInSlot {
        /// The client process.
        client: u64,
        /// The request slot the request holds.
        slot: u16,
        /// The request's number.
        seq: u64,
        /// When.
        time: Timestamp,
        /// The change.
        op: Box<MetaOp>,
    },
    /// Records the length a writer reached in one chunk slot, as [`MetaOp::ExtendLength`] does,
    /// but only while the slot still holds the chunk written: a write whose chunk a truncate
    /// dropped meanwhile must not make the file long again.
    ExtendLengthIn {
        /// The file.
        inode: InodeId,
        /// The chunk slot written.
        index: u32,
        /// The chunk the writes went to.
        chunk: ChunkId,
        /// The file's length after the writes.
        length: u64,
        /// When the writes ended (the new mtime).
        time: Timestamp,
    },
}
