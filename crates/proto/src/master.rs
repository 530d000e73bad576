//! Messages between a client (mount or CLI) and the master: the namespace and chunk leases.

use std::net::SocketAddr;

use serde::{Deserialize, Serialize};

use crate::ids::{ChunkId, ChunkVersion, InodeId, SessionId};
use crate::status::Status;
use crate::types::{Attr, Caller, DirEntry, FileKind, FsStats, SetAttr};

/// A request from a client to the master.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum MasterRequest {
    /// Opens a session; the first request on every client connection.
    OpenSession {
        /// The subdirectory of the namespace to use as this session's root (`/` for all).
        subdir: String,
        /// Where the client mounted it (for `elkfs status`).
        mount_point: String,
    },
    /// Finds `name` in directory `parent`.
    Lookup {
        /// Directory to search.
        parent: InodeId,
        /// Name to find.
        name: Vec<u8>,
    },
    /// Reads an inode's attributes.
    GetAttr {
        /// The inode.
        inode: InodeId,
    },
    /// Changes attributes (chmod, chown, truncate, utimens).
    SetAttr {
        /// The inode.
        inode: InodeId,
        /// What to change.
        changes: SetAttr,
        /// Who asks.
        caller: Caller,
    },
    /// Creates a non-directory inode: regular file, fifo, socket or device node.
    Mknod {
        /// Directory to create it in.
        parent: InodeId,
        /// Its name.
        name: Vec<u8>,
        /// What to create.
        kind: FileKind,
        /// Permission bits as the program asked for them.
        mode: u32,
        /// The program's umask (applied unless the directory has a default ACL).
        umask: u32,
        /// Device number for device nodes.
        rdev: u32,
        /// Owner of the new inode.
        caller: Caller,
    },
    /// Creates a directory.
    Mkdir {
        /// Directory to create it in.
        parent: InodeId,
        /// Its name.
        name: Vec<u8>,
        /// Permission bits as the program asked for them.
        mode: u32,
        /// The program's umask (applied unless the directory has a default ACL).
        umask: u32,
        /// Owner of the new directory.
        caller: Caller,
    },
    /// Creates a symbolic link.
    Symlink {
        /// Directory to create it in.
        parent: InodeId,
        /// Its name.
        name: Vec<u8>,
        /// What it points to.
        target: Vec<u8>,
        /// Owner of the link.
        caller: Caller,
    },
    /// Adds a hard link to an existing inode.
    Link {
        /// The existing inode.
        inode: InodeId,
        /// Directory for the new name.
        parent: InodeId,
        /// The new name.
        name: Vec<u8>,
    },
    /// Reads a symbolic link's target.
    ReadLink {
        /// The link.
        inode: InodeId,
    },
    /// Removes a non-directory name.
    Unlink {
        /// Directory holding it.
        parent: InodeId,
        /// The name.
        name: Vec<u8>,
    },
    /// Removes an empty directory.
    Rmdir {
        /// Directory holding it.
        parent: InodeId,
        /// The name.
        name: Vec<u8>,
    },
    /// Renames or moves an entry, replacing the target as POSIX says.
    Rename {
        /// Directory holding the entry.
        parent: InodeId,
        /// Its name.
        name: Vec<u8>,
        /// Directory to move it to.
        new_parent: InodeId,
        /// Its new name.
        new_name: Vec<u8>,
        /// `RENAME_NOREPLACE` / `RENAME_EXCHANGE` bits as Linux defines them.
        flags: u32,
    },
    /// Lists a directory from a position (`after` = 0 for the start).
    ReadDir {
        /// The directory.
        inode: InodeId,
        /// Cookie of the last entry already seen.
        after: u64,
        /// Most entries to return.
        limit: u32,
    },
    /// Space and inode counts.
    StatFs,
    /// Where to read chunk `index` of a file.
    ReadChunk {
        /// The file.
        inode: InodeId,
        /// Chunk number within the file.
        index: u32,
    },
    /// Asks to write chunk `index` of a file: creates or copies the chunk as needed, bumps its
    /// version and grants this session the write lease.
    WriteChunk {
        /// The file.
        inode: InodeId,
        /// Chunk number within the file.
        index: u32,
    },
    /// Ends a write lease and reports the file's length after the writes.
    WriteEnd {
        /// The file.
        inode: InodeId,
        /// Chunk number within the file.
        index: u32,
        /// The chunk the lease was for.
        chunk: ChunkId,
        /// The file's length as the writer now knows it (the master keeps the larger one).
        length: u64,
    },
    /// Makes every metadata change so far durable (changelog fsynced) before replying.
    Fsync,
    /// Reads one extended attribute.
    GetXattr {
        /// The inode.
        inode: InodeId,
        /// Full name (`user.foo`, `security.selinux`, `system.posix_acl_access`).
        name: Vec<u8>,
    },
    /// Lists the names of an inode's extended attributes.
    ListXattr {
        /// The inode.
        inode: InodeId,
    },
    /// Sets an extended attribute (`flags`: `XATTR_CREATE` = 1, `XATTR_REPLACE` = 2).
    SetXattr {
        /// The inode.
        inode: InodeId,
        /// Full name.
        name: Vec<u8>,
        /// Value.
        value: Vec<u8>,
        /// Create-only / replace-only.
        flags: u32,
    },
    /// Removes an extended attribute.
    RemoveXattr {
        /// The inode.
        inode: InodeId,
        /// Full name.
        name: Vec<u8>,
    },
    /// This session opened the file (an unlinked file lives on while some session has it open).
    Open {
        /// The file.
        inode: InodeId,
    },
    /// This session closed its last handle on the file.
    Close {
        /// The file.
        inode: InodeId,
    },
    /// After reconnecting: the files this session still has open.
    Reopen {
        /// The files.
        inodes: Vec<InodeId>,
    },
    /// Takes, changes or releases a byte-range lock (POSIX `fcntl` or BSD `flock`).
    SetLock {
        /// The file.
        inode: InodeId,
        /// The lock and its owner.
        lock: Lock,
        /// Wait until it can be granted (`F_SETLKW`); otherwise fail with `Locked`.
        wait: bool,
    },
    /// Finds a lock that would conflict with `lock` (`F_GETLK`).
    TestLock {
        /// The file.
        inode: InodeId,
        /// The lock that would be taken.
        lock: Lock,
    },
    /// Releases every lock an owner holds on a file (close, or the end of a process).
    ReleaseLocks {
        /// The file.
        inode: InodeId,
        /// The owner (as the kernel names it).
        owner: u64,
    },
    /// Sets the goal of an inode, or of a whole tree.
    SetGoal {
        /// The inode (a directory when `recursive`).
        inode: InodeId,
        /// Copies to keep, 1..=9.
        goal: u8,
        /// Apply to everything below too.
        recursive: bool,
    },
    /// Like [`MasterRequest::WriteChunk`], after a chain failed: the listed servers are left
    /// out of the new chain.
    RetryWriteChunk {
        /// The file.
        inode: InodeId,
        /// Chunk number within the file.
        index: u32,
        /// Servers that failed in the previous chain.
        failed: Vec<SocketAddr>,
    },
}

/// What a byte-range lock covers and who holds it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Lock {
    /// Shared, exclusive, or unlock.
    pub kind: LockKind,
    /// First byte.
    pub start: u64,
    /// Last byte (inclusive; `u64::MAX` for "to the end").
    pub end: u64,
    /// The owner as the kernel names it (a process's file table, or an open file for flock).
    pub owner: u64,
    /// The process, for `F_GETLK` answers.
    pub pid: u32,
}

/// The kind of a byte-range lock.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum LockKind {
    /// Shared (read) lock.
    Read,
    /// Exclusive (write) lock.
    Write,
    /// Release the range.
    Unlock,
}

/// The master's answer to a [`MasterRequest`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum MasterReply {
    /// A session was opened.
    Session {
        /// Its id.
        session: SessionId,
        /// The inode that is this session's root.
        root: InodeId,
    },
    /// Attributes of the inode found, created or changed.
    Attr(Attr),
    /// A page of a directory listing; empty when the end was reached.
    Entries(Vec<DirEntry>),
    /// A symbolic link's target.
    Target(Vec<u8>),
    /// The request succeeded and has nothing to return.
    Done,
    /// Space and inode counts.
    Stats(FsStats),
    /// Where to read a chunk.
    ReadLocation(ReadLocation),
    /// A write lease.
    WriteLease(WriteLease),
    /// An extended attribute's value.
    Xattr(Vec<u8>),
    /// Extended attribute names.
    XattrNames(Vec<Vec<u8>>),
    /// A conflicting lock (for `F_GETLK`), or none.
    Conflict(Option<Lock>),
    /// How a goal change went.
    GoalSet {
        /// Inodes whose goal changed.
        changed: u64,
        /// Inodes that already had it.
        unchanged: u64,
    },
}

/// Where chunk data can be read.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReadLocation {
    /// The file's current length.
    pub file_length: u64,
    /// The chunk and its current version; `None` for a hole (reads as zeros).
    pub chunk: Option<(ChunkId, ChunkVersion)>,
    /// Servers holding a valid copy, best first.
    pub servers: Vec<SocketAddr>,
}

/// Permission to write one chunk, and where to send the data.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct WriteLease {
    /// The chunk to write.
    pub chunk: ChunkId,
    /// Its new version; every server in the chain has it.
    pub version: ChunkVersion,
    /// The servers to write to, in chain order: send to the first, which forwards to the rest.
    pub chain: Vec<SocketAddr>,
    /// The file's length when the lease was granted.
    pub file_length: u64,
}

/// The body of every master response.
pub type MasterResponse = Result<MasterReply, Status>;
