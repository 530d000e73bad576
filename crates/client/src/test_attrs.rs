//! Attributes for unit tests.

use elkfs_proto::InodeId;
use elkfs_proto::types::{Attr, FileKind, Timestamp};

/// A directory's attributes with the given inode number and eattrs.
pub fn dir(inode: u64, eattrs: u8) -> Attr {
    Attr {
        mode: 0o755,
        nlink: 2,
        size: 3,
        ..file(inode, FileKind::Dir, 1, eattrs)
    }
}

/// Attributes of an inode of `kind` with `nlink` names and the given eattrs, owned by root.
pub fn file(inode: u64, kind: FileKind, nlink: u32, eattrs: u8) -> Attr {
    let t = Timestamp { secs: 1, nanos: 0 };
    Attr {
        inode: InodeId(inode),
        kind,
        mode: 0o644,
        nlink,
        uid: 0,
        gid: 0,
        size: 0,
        atime: t,
        mtime: t,
        ctime: t,
        rdev: 0,
        goal: 2,
        trash_time: 0,
        eattrs,
    }
}
