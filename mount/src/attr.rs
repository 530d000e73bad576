//! Translating between ElkFS attributes and inode numbers and what the kernel expects.

use elkfs_proto::InodeId;
use elkfs_proto::types::{Attr, FileKind};
use fuser::{FileAttr, FileType, INodeNo};

/// Block size reported in `st_blksize`: programs size their I/O buffers by it.
pub const IO_BLOCK: u32 = 128 * 1024;

/// Maps inode numbers between the session's view (its root is FUSE inode 1) and the master's.
#[derive(Clone, Copy, Debug)]
pub struct InodeMap {
    root: InodeId,
}

impl InodeMap {
    /// A map for a session whose root directory is `root`.
    pub fn new(root: InodeId) -> InodeMap {
        InodeMap { root }
    }

    /// The master's inode for a kernel inode number.
    pub fn to_elk(&self, ino: INodeNo) -> InodeId {
        self.swap(InodeId(ino.0))
    }

    /// The kernel's inode number for a master inode.
    pub fn to_fuse(&self, inode: InodeId) -> INodeNo {
        INodeNo(self.swap(inode).0)
    }

    /// Exchanges the root with inode 1 (which is never inside a mounted subdirectory).
    fn swap(&self, inode: InodeId) -> InodeId {
        if inode == self.root {
            InodeId::ROOT
        } else if inode == InodeId::ROOT {
            self.root
        } else {
            inode
        }
    }
}

/// The kernel's file type for an inode kind.
pub fn file_type(kind: FileKind) -> FileType {
    match kind {
        FileKind::File => FileType::RegularFile,
        FileKind::Dir => FileType::Directory,
        FileKind::Symlink => FileType::Symlink,
        FileKind::Fifo => FileType::NamedPipe,
        FileKind::Socket => FileType::Socket,
        FileKind::CharDevice => FileType::CharDevice,
        FileKind::BlockDevice => FileType::BlockDevice,
    }
}

/// The inode kind for the `S_IFMT` bits of a mode, if it is one `mknod` may create.
pub fn kind_of_mode(mode: u32) -> Option<FileKind> {
    match mode & libc::S_IFMT {
        libc::S_IFREG | 0 => Some(FileKind::File),
        libc::S_IFIFO => Some(FileKind::Fifo),
        libc::S_IFSOCK => Some(FileKind::Socket),
        libc::S_IFCHR => Some(FileKind::CharDevice),
        libc::S_IFBLK => Some(FileKind::BlockDevice),
        _ => None,
    }
}

/// The kernel's attributes for an inode.
pub fn file_attr(map: &InodeMap, attr: &Attr) -> FileAttr {
    FileAttr {
        ino: map.to_fuse(attr.inode),
        size: attr.size,
        blocks: attr.size.div_ceil(512),
        atime: attr.atime.to_system_time(),
        mtime: attr.mtime.to_system_time(),
        ctime: attr.ctime.to_system_time(),
        crtime: attr.ctime.to_system_time(),
        kind: file_type(attr.kind),
        perm: (attr.mode & 0o7777) as u16,
        nlink: attr.nlink,
        uid: attr.uid,
        gid: attr.gid,
        rdev: attr.rdev,
        blksize: IO_BLOCK,
        flags: 0,
    }
}

/// Attributes for the `.` and `..` entries of a READDIRPLUS answer, whose attributes the
/// kernel does not use.
pub fn placeholder_dir(ino: INodeNo) -> FileAttr {
    FileAttr {
        ino,
        size: 0,
        blocks: 0,
        atime: std::time::UNIX_EPOCH,
        mtime: std::time::UNIX_EPOCH,
        ctime: std::time::UNIX_EPOCH,
        crtime: std::time::UNIX_EPOCH,
        kind: FileType::Directory,
        perm: 0o755,
        nlink: 2,
        uid: 0,
        gid: 0,
        rdev: 0,
        blksize: IO_BLOCK,
        flags: 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_subdirectory_root_is_inode_one_to_the_kernel() {
        let map = InodeMap::new(InodeId(42));
        assert_eq!(map.to_fuse(InodeId(42)), INodeNo(1));
        assert_eq!(map.to_elk(INodeNo(1)), InodeId(42));
        assert_eq!(map.to_elk(INodeNo(7)), InodeId(7));
        let whole = InodeMap::new(InodeId::ROOT);
        assert_eq!(whole.to_elk(INodeNo(1)), InodeId::ROOT);
    }
}
