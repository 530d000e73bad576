//! Messages between a client (mount or CLI) and the master: the namespace and chunk leases.

use std::net::SocketAddr;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::capability::Capability;
use crate::ids::{ChunkId, ChunkVersion, InodeId, SessionId};
use crate::status::Status;
use crate::types::{Attr, Caller, DirEntry, DirEntryPlus, FileKind, FsStats, SetAttr};

/// How long a directory lease ([`MasterReply::LeasedDir`]) lasts after the master grants or
/// renews it. A change by another session waits at most this long for a holder that does not
/// give the lease back (a mount cut off from the master).
pub const DIR_LEASE: Duration = Duration::from_secs(10);

/// How long a session whose lease on a directory was recalled does not get it again through
/// [`MasterRequest::LeaseDir`] (and a client does not ask for it after a recall, a refusal or
/// a give-back), so that two sessions changing names in one directory do not take the lease
/// from each other on every change.
pub const LEASE_HOLD_OFF: Duration = Duration::from_secs(30);

/// A request from a client to the master.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum MasterRequest {
    /// Opens a session; the first request on every client connection.
    OpenSession {
        /// The subdirectory of the namespace to use as this session's root (`/` for all).
        subdir: String,
        /// Where the client mounted it (for `elkfs status`).
        mount_point: String,
        /// For exports with a password: [`crate::auth::password_proof`] of it and the nonce of
        /// this connection's [`MasterRequest::Challenge`]; the password never crosses the wire.
        proof: Option<[u8; 32]>,
        /// The client's id, the same for all its sessions (see [`MasterRequest::ReclaimLocks`]).
        client: u64,
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
        /// Register the new file as open by this session (create-and-open in one request).
        open: bool,
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
    /// version and grants this session the write lease. Bytes the chunk holds past both the
    /// file's end and `carried` were left by a writer that never reported them: the master cuts
    /// them off (and drops chunks lying wholly between the file's end and this one), so that
    /// they never become part of the file when this write grows it.
    WriteChunk {
        /// The file.
        inode: InodeId,
        /// Chunk number within the file.
        index: u32,
        /// The end (an offset in the file) of what this session stored in the slot under an
        /// earlier lease and has not reported yet, to be reported under this one; 0 for none.
        carried: u64,
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
    /// Answered with [`MasterReply::Opened`].
    Open {
        /// The file.
        inode: InodeId,
    },
    /// This session closed its last handles on these files (a client sends the closes of a
    /// short while together).
    Close {
        /// The files.
        inodes: Vec<InodeId>,
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
    /// Changes goal, trash time or eattrs of an inode, or of a whole tree.
    ChangeTree {
        /// The inode (a directory when `recursive`).
        inode: InodeId,
        /// Which attribute.
        attr: TreeAttr,
        /// How to change it.
        change: Change,
        /// Apply to everything below too.
        recursive: bool,
        /// Who asks (only an inode's owner or root may change it).
        caller: Caller,
    },
    /// The file or directory was read: its access time moves as Linux's `relatime` says.
    Access {
        /// The inode.
        inode: InodeId,
    },
    /// Starts an append to a file: waits for other appenders and returns the current length,
    /// where the caller then writes.
    AppendBegin {
        /// The file.
        inode: InodeId,
    },
    /// Ends an append (the caller has ended its chunk write leases, so the length is set).
    AppendEnd {
        /// The file.
        inode: InodeId,
    },
    /// Drops the chunks `first..end` of a file (they read as zeros afterwards); for punching
    /// holes.
    ClearChunks {
        /// The file.
        inode: InodeId,
        /// First chunk index dropped.
        first: u32,
        /// One past the last index dropped.
        end: u32,
    },
    /// Every chunk of a file with its copies (`elkfs fileinfo`).
    FileInfo {
        /// The file.
        inode: InodeId,
    },
    /// Totals over a tree (`elkfs dirinfo`).
    DirInfo {
        /// The top of the tree.
        inode: InodeId,
    },
    /// How a tree's values of an attribute are spread (`elkfs getgoal -r`).
    SummarizeTree {
        /// The top of the tree.
        inode: InodeId,
        /// Which attribute.
        attr: TreeAttr,
    },
    /// The files in the trash (a user sees their own; root sees all).
    TrashList {
        /// Who asks.
        caller: Caller,
    },
    /// Puts a deleted file back where it was (recreating missing directories).
    TrashRestore {
        /// The trashed file.
        inode: InodeId,
        /// Who asks (the file's owner, or root).
        caller: Caller,
    },
    /// Deletes trashed files for good: one, or all of them.
    TrashPurge {
        /// The file, or `None` for everything in the trash the caller may purge.
        inode: Option<InodeId>,
        /// Who asks (the file's owner, or root).
        caller: Caller,
    },
    /// Makes a copy-on-write snapshot of `source` (a file or a tree) as `name` in `parent`.
    Snapshot {
        /// What to snapshot.
        source: InodeId,
        /// Directory for the copy.
        parent: InodeId,
        /// Name of the copy.
        name: Vec<u8>,
        /// Who asks (owns the copy's new directories).
        caller: Caller,
    },
    /// The cluster at a glance (`elkfs status`).
    Status,
    /// A change that must not happen twice: if the master already carried out this client's
    /// request `seq` (the reply was lost with a connection), it answers as it did then.
    Tagged {
        /// The client process (random, chosen at start).
        client: u64,
        /// Which of the client's request slots the request holds until it is answered: the
        /// master keeps one record per slot, so a client's records are as many as the requests
        /// it ever had in flight at once, not as many as it made.
        slot: u16,
        /// The request's number in that client.
        seq: u64,
        /// Sent before (the connection failed before the answer came): the master looks for
        /// its record. A first send cannot have been carried out, so it skips the look.
        retry: bool,
        /// The change (never itself tagged: decoding refuses nesting, so a peer cannot
        /// overflow the decoder's stack with a deep one).
        #[serde(deserialize_with = "one_level")]
        request: Box<MasterRequest>,
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
    /// Asks for a fresh nonce for this connection, to prove a password with at `OpenSession`.
    Challenge,
    /// Like [`MasterRequest::ReadDir`], with each entry's attributes, so that `ls -l` needs no
    /// lookup per name (the kernel's READDIRPLUS).
    ReadDirPlus {
        /// The directory.
        inode: InodeId,
        /// Cookie of the last entry already seen.
        after: u64,
        /// Most entries to return.
        limit: u32,
    },
    /// Finds `name` in `parent` as [`MasterRequest::Lookup`] does, and also returns the names
    /// that follow it in byte order, with their attributes, so that a client looking names up
    /// one after another in sorted order (`rsync`, a script over `f000001`, `f000002`, ...) can
    /// answer the next ones itself for as long as it may cache attributes. Answered with
    /// [`MasterReply::EntriesPlus`]: `name` first if it exists, then the names after it, at
    /// most `limit` in all. A name after `name` removed while the answer is being read may be
    /// left out.
    LookupAhead {
        /// The directory.
        parent: InodeId,
        /// The name looked up.
        name: Vec<u8>,
        /// Most entries to return.
        limit: u32,
    },
    /// Waits until the master recalls directory leases of this session (see
    /// [`MasterReply::LeasedDir`]); gives back the ones this client has let go of since it last
    /// asked, and renews the ones it still uses. Answered with [`MasterReply::Recalled`] when
    /// there is something to recall, at once when it gave back the session's last leases (or
    /// is the session's first), or else after a while (soon enough to renew again while the
    /// session holds a lease). A mount keeps one of these waiting at all times; the master
    /// grants directory leases only to a session that has sent one.
    AwaitRecalls {
        /// Leases this client no longer uses: recalled ones, ones it dropped itself, and ones
        /// of its earlier connection to the master.
        returned: Vec<InodeId>,
        /// Leases to renew for [`DIR_LEASE`] from now.
        renew: Vec<InodeId>,
        /// This client's id (the one its tagged requests carry): leases granted to an earlier
        /// session of the same client may be given back on this one.
        client: u64,
    },
    /// Asks for a lease on the names of a directory this session did not make, once several
    /// names looked up there did not exist (a copy or an unpack into a directory that is
    /// already there). Answered with [`MasterReply::LeasedNames`] when granted, on the same
    /// terms as [`MasterReply::LeasedDir`], and with [`MasterReply::Done`] when not (the
    /// directory holds too many names, another session holds its lease, or its names are
    /// changing).
    LeaseDir {
        /// The directory.
        dir: InodeId,
    },
    /// After reconnecting: the byte-range locks this client held through its earlier sessions.
    /// Those sessions' locks (kept for a while after their connection closed) pass to this one;
    /// after a master restart, which forgets every lock, each is taken again unless another
    /// session took a conflicting one meanwhile. Answered with [`MasterReply::Reclaimed`].
    ReclaimLocks {
        /// Each lock, with its file (at most [`MAX_RECLAIM`]).
        locks: Vec<(InodeId, Lock)>,
        /// The last batch: the earlier sessions' locks go (until then they stay, so that what
        /// is not claimed yet still keeps others out).
        last: bool,
    },
}

/// Which directories' names a request may change, for the master to recall the leases on them
/// held by other sessions before it carries the request out.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum NameChanges {
    /// No name anywhere.
    None,
    /// Names in these directories only.
    In(Vec<InodeId>),
    /// Names anywhere (a restore from the trash: the file's old directory, and any directories
    /// it needs made again, are found only as it is carried out).
    Anywhere,
}

impl MasterRequest {
    /// The directories whose names this request may add, remove or replace.
    pub fn name_changes(&self) -> NameChanges {
        match self {
            MasterRequest::Mknod { parent, .. }
            | MasterRequest::Mkdir { parent, .. }
            | MasterRequest::Symlink { parent, .. }
            | MasterRequest::Link { parent, .. }
            | MasterRequest::Unlink { parent, .. }
            | MasterRequest::Rmdir { parent, .. } => NameChanges::In(vec![*parent]),
            MasterRequest::Rename {
                parent, new_parent, ..
            } => NameChanges::In(vec![*parent, *new_parent]),
            // The master fills the directories a snapshot copies under their own recalls.
            MasterRequest::Snapshot { parent, .. } => NameChanges::In(vec![*parent]),
            MasterRequest::TrashRestore { .. } => NameChanges::Anywhere,
            MasterRequest::Tagged { request, .. } => request.name_changes(),
            _ => NameChanges::None,
        }
    }
}

/// An attribute the CLI reads or changes on whole trees.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum TreeAttr {
    /// Copies to keep of each chunk.
    Goal,
    /// Seconds a deleted file stays in the trash.
    TrashTime,
    /// MooseFS-style extra attributes (bit flags, see [`crate::types::eattr`]).
    Eattr,
}

/// How to change a [`TreeAttr`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Change {
    /// Set it to this value.
    Set(u64),
    /// Raise it to this value where it is lower.
    Raise(u64),
    /// Lower it to this value where it is higher.
    Lower(u64),
    /// Turn these flags on.
    AddFlags(u64),
    /// Turn these flags off.
    RemoveFlags(u64),
}

/// Most locks one [`MasterRequest::ReclaimLocks`] may claim; the master refuses those beyond.
pub const MAX_RECLAIM: usize = 4096;

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
        /// The export is read-only: every change is refused with `ReadOnly`.
        read_only: bool,
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
    /// The length an append starts at.
    AppendAt(u64),
    /// A file's chunks and their copies.
    FileChunks(Vec<crate::info::ChunkCopies>),
    /// Totals over a tree.
    DirStats(crate::info::DirStats),
    /// (value, count) pairs for files and for directories.
    TreeSummary {
        /// Regular files (and other non-directories).
        files: Vec<(u64, u64)>,
        /// Directories.
        dirs: Vec<(u64, u64)>,
    },
    /// The files in the trash.
    Trash(Vec<crate::info::TrashEntry>),
    /// The cluster at a glance.
    Status(crate::info::ClusterStatus),
    /// How a tree change went.
    TreeChanged {
        /// Inodes changed.
        changed: u64,
        /// Inodes that already had the value.
        unchanged: u64,
        /// Inodes the caller may not change.
        denied: u64,
    },
    /// The nonce for [`MasterRequest::Challenge`].
    Challenge {
        /// Random, new for each challenge.
        nonce: [u8; 32],
    },
    /// The session was not opened; the reason is meant for the user (it names the exports
    /// file to edit on the master).
    Refused {
        /// Why.
        reason: String,
    },
    /// A name was made (file, directory, link): the new entry's attributes and its directory's
    /// as they are after the change, so the client need not ask for the directory again.
    Entry {
        /// The entry's inode.
        attr: Attr,
        /// The directory it was made in.
        parent: Attr,
    },
    /// A name was removed: its directory's attributes after the change.
    Removed {
        /// The directory it was removed from.
        parent: Attr,
    },
    /// The answer to [`MasterRequest::Open`]: the inode's attributes as the open found them
    /// and, for a file, where its first chunk can be read, so that reading a small file just
    /// opened needs no further question to the master.
    Opened {
        /// The inode's attributes.
        attr: Attr,
        /// Where chunk 0 can be read (`None` for a directory or another kind of inode).
        first_chunk: Option<ReadLocation>,
    },
    /// The answer to [`MasterRequest::ReadDirPlus`] and [`MasterRequest::LookupAhead`].
    EntriesPlus(Vec<DirEntryPlus>),
    /// A directory was made, and this session holds a lease on its names: until the master
    /// recalls it ([`MasterRequest::AwaitRecalls`]) or it runs out, no other session adds a
    /// name to it or removes one, so the client may answer that a name it has not made there
    /// does not exist without asking. The lease runs [`DIR_LEASE`] from when the master made
    /// the directory, and again from each renewal ([`MasterRequest::AwaitRecalls`]).
    LeasedDir {
        /// The new directory.
        attr: Attr,
        /// The directory it was made in.
        parent: Attr,
    },
    /// The answer to [`MasterRequest::AwaitRecalls`].
    Recalled {
        /// Leases the master recalls: the client stops using them and gives them back.
        recalled: Vec<InodeId>,
        /// Leases renewed, for [`DIR_LEASE`] from when the master received the request.
        renewed: Vec<InodeId>,
    },
    /// The answer to a granted [`MasterRequest::LeaseDir`]: every name in the directory when
    /// the lease was granted. The lease runs [`DIR_LEASE`] from then.
    LeasedNames(Vec<Vec<u8>>),
    /// The answer to [`MasterRequest::ReclaimLocks`]: the locks that could not be taken again
    /// (lost: another session holds a conflicting lock).
    Reclaimed(Vec<(InodeId, Lock)>),
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
    /// Permission to read the chunk from them (none for a hole).
    pub capability: Option<Capability>,
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
    /// Permission to write the chunk at its new version, for every server of the chain.
    pub capability: Capability,
}

/// The body of every master response.
pub type MasterResponse = Result<MasterReply, Status>;

thread_local! {
    /// How many `Tagged` requests the decoder on this thread is inside of.
    static TAGGED_DEPTH: std::cell::Cell<u32> = const { std::cell::Cell::new(0) };
}

/// Decodes the request inside a `Tagged` one, refusing a `Tagged` inside it.
fn one_level<'de, D>(deserializer: D) -> Result<Box<MasterRequest>, D::Error>
where
    D: serde::Deserializer<'de>,
{
    struct Leave;
    impl Drop for Leave {
        fn drop(&mut self) {
            TAGGED_DEPTH.with(|d| d.set(d.get().saturating_sub(1)));
        }
    }
    let outer = TAGGED_DEPTH.with(|d| d.replace(d.get() + 1));
    let _leave = Leave;
    if outer > 0 {
        return Err(serde::de::Error::custom(
            "a tagged request inside a tagged request",
        ));
    }
    MasterRequest::deserialize(deserializer).map(Box::new)
}
