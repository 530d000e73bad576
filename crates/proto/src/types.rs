//! Plain data shared by several messages: attributes, directory entries, times, caller identity.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use crate::ids::InodeId;

/// What kind of inode this is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum FileKind {
    /// A regular file with data in chunks.
    File,
    /// A directory.
    Dir,
    /// A symbolic link; its target is stored with the inode.
    Symlink,
    /// A named pipe (metadata only).
    Fifo,
    /// A Unix socket (metadata only).
    Socket,
    /// A character device node (metadata only).
    CharDevice,
    /// A block device node (metadata only).
    BlockDevice,
}

/// A point in time with nanoseconds, as stored for atime/mtime/ctime (times before 1970 and after
/// 2038 are representable).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Timestamp {
    /// Seconds since the Unix epoch (negative before it).
    pub secs: i64,
    /// Nanoseconds within the second, 0..1e9.
    pub nanos: u32,
}

impl Timestamp {
    /// The current wall-clock time.
    pub fn now() -> Timestamp {
        Timestamp::from_system_time(SystemTime::now())
    }

    /// Converts from the standard library's time.
    pub fn from_system_time(t: SystemTime) -> Timestamp {
        match t.duration_since(UNIX_EPOCH) {
            Ok(d) => Timestamp {
                secs: d.as_secs() as i64,
                nanos: d.subsec_nanos(),
            },
            Err(e) => {
                let d = e.duration();
                if d.subsec_nanos() == 0 {
                    Timestamp {
                        secs: -(d.as_secs() as i64),
                        nanos: 0,
                    }
                } else {
                    Timestamp {
                        secs: -(d.as_secs() as i64) - 1,
                        nanos: 1_000_000_000 - d.subsec_nanos(),
                    }
                }
            }
        }
    }

    /// Converts to the standard library's time.
    pub fn to_system_time(self) -> SystemTime {
        if self.secs >= 0 {
            UNIX_EPOCH + Duration::new(self.secs as u64, self.nanos)
        } else {
            UNIX_EPOCH - Duration::from_secs(self.secs.unsigned_abs())
                + Duration::from_nanos(self.nanos as u64)
        }
    }
}

/// Every attribute of an inode that a client may see.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Attr {
    /// The inode these attributes belong to.
    pub inode: InodeId,
    /// File, directory, symlink, ...
    pub kind: FileKind,
    /// Permission bits including setuid, setgid and sticky (`0o7777`).
    pub mode: u32,
    /// Number of directory entries naming it (directories: 2 + subdirectories).
    pub nlink: u32,
    /// Owner.
    pub uid: u32,
    /// Group.
    pub gid: u32,
    /// Length in bytes (files), target length (symlinks), a nominal size (directories).
    pub size: u64,
    /// Last access.
    pub atime: Timestamp,
    /// Last data change.
    pub mtime: Timestamp,
    /// Last attribute change.
    pub ctime: Timestamp,
    /// Device number for device nodes.
    pub rdev: u32,
    /// Number of copies to keep of each chunk (1..=9).
    pub goal: u8,
    /// Seconds a deleted file stays in the trash.
    pub trash_time: u32,
    /// MooseFS-style extra attributes ([`eattr`] flags).
    pub eattrs: u8,
}

/// How old an access time may get before a read moves it again (`relatime`): a day.
pub const RELATIME_MAX_AGE_SECS: i64 = 86_400;

impl Attr {
    /// Whether a read at `now` moves the access time, by `relatime`'s rule: the first read
    /// after a change of the data or attributes, or one a day.
    pub fn read_moves_atime(&self, now: Timestamp) -> bool {
        self.atime <= self.mtime
            || self.atime <= self.ctime
            || now.secs.saturating_sub(self.atime.secs) >= RELATIME_MAX_AGE_SECS
    }
}

/// MooseFS-style extra attributes, as bit flags.
pub mod eattr {
    /// Every user (but root) sees the inode as their own.
    pub const NOOWNER: u8 = 1;
    /// The kernel must not cache the inode's attributes.
    pub const NOATTRCACHE: u8 = 2;
    /// The kernel must not cache names in this directory.
    pub const NOENTRYCACHE: u8 = 4;
    /// The kernel must not cache the file's data.
    pub const NODATACACHE: u8 = 8;
    /// Every flag with its name, as the CLI shows them.
    pub const NAMES: [(u8, &str); 4] = [
        (NOOWNER, "noowner"),
        (NOATTRCACHE, "noattrcache"),
        (NOENTRYCACHE, "noentrycache"),
        (NODATACACHE, "nodatacache"),
    ];
}

/// The user on whose behalf a request is made, for ownership of what it creates.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Caller {
    /// Effective user id.
    pub uid: u32,
    /// Effective group id.
    pub gid: u32,
}

/// One name in a directory listing.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DirEntry {
    /// The name (any bytes but `/` and NUL).
    pub name: Vec<u8>,
    /// The inode it names.
    pub inode: InodeId,
    /// The inode's kind, so `ls` need not stat.
    pub kind: FileKind,
    /// Position to continue a listing after this entry; stays valid while the directory changes.
    pub cookie: u64,
}

/// One name in a directory listing with what `ls -l` asks about it next.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DirEntryPlus {
    /// The name, inode, kind and position.
    pub entry: DirEntry,
    /// The inode's attributes.
    pub attr: Attr,
    /// Whether the inode has any extended attribute (ACLs included); without any, a client
    /// can answer questions for one (`ls -l` asks for ACLs and SELinux labels) itself.
    pub has_xattrs: bool,
}

/// What a `setattr` changes; `None` leaves a field alone.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SetAttr {
    /// New permission bits.
    pub mode: Option<u32>,
    /// New owner.
    pub uid: Option<u32>,
    /// New group.
    pub gid: Option<u32>,
    /// New length (truncate or extend).
    pub size: Option<u64>,
    /// New access time.
    pub atime: Option<TimeSet>,
    /// New modification time.
    pub mtime: Option<TimeSet>,
}

/// A time to set: a given value, or "now" as the master's clock says.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum TimeSet {
    /// The master's current time.
    Now,
    /// This exact time.
    At(Timestamp),
}

/// Space and inode counts for `statfs`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct FsStats {
    /// Bytes of disk on all connected chunkservers.
    pub total_bytes: u64,
    /// Bytes still free on them.
    pub available_bytes: u64,
    /// Inodes in use.
    pub inodes: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_round_trip_through_system_time() {
        for (secs, nanos) in [
            (0, 0),
            (1, 5),
            (-1, 0),
            (-2, 999_999_999),
            (4_102_444_800, 7),
        ] {
            let t = Timestamp { secs, nanos };
            assert_eq!(Timestamp::from_system_time(t.to_system_time()), t);
        }
    }
}
