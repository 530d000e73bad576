//! The FUSE callbacks: each decodes its arguments, hands the work to the tokio runtime and
//! replies from there, so the kernel's request loop never waits on the network.

use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use elkfs_proto::master::{Lock, LockKind};
use elkfs_proto::types::{Caller, SetAttr, TimeSet, Timestamp};
use fuser::{
    BsdFileFlags, Errno, FileHandle, Filesystem, FopenFlags, Generation, INodeNo, InitFlags,
    KernelConfig, LockOwner, Notifier, OpenFlags, RenameFlags, ReplyAttr, ReplyCreate, ReplyData,
    ReplyDirectory, ReplyEmpty, ReplyEntry, ReplyLock, ReplyOpen, ReplyStatfs, ReplyWrite,
    ReplyXattr, Request, TimeOrNow, WriteFlags,
};
use tokio::runtime::Handle;

use crate::attr::{self, InodeMap, kind_of_mode};
use crate::ops::Ops;

/// Largest read or write the kernel sends in one request.
pub const MAX_IO: u32 = 1024 * 1024;

/// Block size reported by statfs.
const STATFS_BLOCK: u32 = 65536;

/// The mounted filesystem as the kernel sees it.
pub struct ElkFs {
    ops: Arc<Ops>,
    map: InodeMap,
    runtime: Handle,
    ttl: Duration,
    notifier: Arc<OnceLock<Notifier>>,
}

impl ElkFs {
    /// Wraps the filesystem logic for fuser; `notifier` is filled in once the session exists.
    pub fn new(
        ops: Arc<Ops>,
        runtime: Handle,
        ttl: Duration,
        notifier: Arc<OnceLock<Notifier>>,
    ) -> ElkFs {
        let map = InodeMap::new(ops.client.root());
        ElkFs {
            ops,
            map,
            runtime,
            ttl,
            notifier,
        }
    }

    fn caller(req: &Request) -> Caller {
        Caller {
            uid: req.uid(),
            gid: req.gid(),
        }
    }

    fn spawn<F>(&self, work: impl FnOnce(Arc<Ops>, InodeMap, Duration) -> F)
    where
        F: Future<Output = ()> + Send + 'static,
    {
        self.runtime
            .spawn(work(self.ops.clone(), self.map, self.ttl));
    }
}

fn time_set(t: TimeOrNow) -> TimeSet {
    match t {
        TimeOrNow::Now => TimeSet::Now,
        TimeOrNow::SpecificTime(t) => TimeSet::At(Timestamp::from_system_time(t)),
    }
}

fn reply_entry(
    reply: ReplyEntry,
    map: &InodeMap,
    ttl: Duration,
    result: Result<elkfs_proto::types::Attr, Errno>,
) {
    match result {
        Ok(a) => reply.entry(&ttl, &attr::file_attr(map, &a), Generation(0)),
        Err(e) => reply.error(e),
    }
}

/// A lock request as the master understands it.
fn lock_of(typ: i32, start: u64, end: u64, owner: LockOwner, pid: u32) -> Result<Lock, Errno> {
    let kind = match typ {
        libc::F_RDLCK => LockKind::Read,
        libc::F_WRLCK => LockKind::Write,
        libc::F_UNLCK => LockKind::Unlock,
        _ => return Err(Errno::EINVAL),
    };
    Ok(Lock {
        kind,
        start,
        end,
        owner: owner.0,
        pid,
    })
}

/// Answers an xattr query: its size when the caller asked with size 0, ERANGE when its buffer is
/// too small, the bytes otherwise.
fn reply_xattr(reply: ReplyXattr, size: u32, result: Result<Vec<u8>, Errno>) {
    match result {
        Ok(v) if size == 0 => reply.size(v.len() as u32),
        Ok(v) if v.len() > size as usize => reply.error(Errno::ERANGE),
        Ok(v) => reply.data(&v),
        Err(e) => reply.error(e),
    }
}

fn reply_empty(reply: ReplyEmpty, result: Result<(), Errno>) {
    match result {
        Ok(()) => reply.ok(),
        Err(e) => reply.error(e),
    }
}

impl Filesystem for ElkFs {
    fn init(&mut self, _req: &Request, config: &mut KernelConfig) -> std::io::Result<()> {
        if let Err(max) = config.set_max_write(MAX_IO) {
            let _ = config.set_max_write(max);
        }
        if let Err(max) = config.set_max_readahead(MAX_IO) {
            let _ = config.set_max_readahead(max);
        }
        let _ = config.set_max_background(64);
        // Locks go to the master so that they hold across every mount of the cluster.
        let locks = InitFlags::FUSE_POSIX_LOCKS | InitFlags::FUSE_FLOCK_LOCKS;
        if let Err(missing) = config.add_capabilities(locks) {
            tracing::warn!(
                ?missing,
                "the kernel cannot pass locks to the filesystem; locks stay local to this host"
            );
        }
        // The kernel enforces POSIX ACLs; new inodes inherit default ACLs in the master, which
        // therefore gets the umask unapplied.
        let acls = InitFlags::FUSE_POSIX_ACL | InitFlags::FUSE_DONT_MASK;
        if let Err(missing) = config.add_capabilities(acls) {
            tracing::warn!(
                ?missing,
                "the kernel cannot enforce POSIX ACLs on this mount"
            );
        }
        Ok(())
    }

    fn lookup(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        let name = name.as_bytes().to_vec();
        self.spawn(|ops, map, ttl| async move {
            let parent = map.to_elk(parent);
            reply_entry(reply, &map, ttl, ops.lookup(parent, &name).await);
        });
    }

    fn getattr(&self, _req: &Request, ino: INodeNo, _fh: Option<FileHandle>, reply: ReplyAttr) {
        self.spawn(|ops, map, ttl| async move {
            match ops.getattr(map.to_elk(ino)).await {
                Ok(a) => reply.attr(&ttl, &attr::file_attr(&map, &a)),
                Err(e) => reply.error(e),
            }
        });
    }

    fn setattr(
        &self,
        req: &Request,
        ino: INodeNo,
        mode: Option<u32>,
        uid: Option<u32>,
        gid: Option<u32>,
        size: Option<u64>,
        atime: Option<TimeOrNow>,
        mtime: Option<TimeOrNow>,
        _ctime: Option<SystemTime>,
        _fh: Option<FileHandle>,
        _crtime: Option<SystemTime>,
        _chgtime: Option<SystemTime>,
        _bkuptime: Option<SystemTime>,
        _flags: Option<BsdFileFlags>,
        reply: ReplyAttr,
    ) {
        let changes = SetAttr {
            mode: mode.map(|m| m & 0o7777),
            uid,
            gid,
            size,
            atime: atime.map(time_set),
            mtime: mtime.map(time_set),
        };
        let caller = Self::caller(req);
        self.spawn(|ops, map, ttl| async move {
            match ops.setattr(map.to_elk(ino), changes, caller).await {
                Ok(a) => reply.attr(&ttl, &attr::file_attr(&map, &a)),
                Err(e) => reply.error(e),
            }
        });
    }

    fn readlink(&self, _req: &Request, ino: INodeNo, reply: ReplyData) {
        self.spawn(|ops, map, _| async move {
            match ops.readlink(map.to_elk(ino)).await {
                Ok(target) => reply.data(&target),
                Err(e) => reply.error(e),
            }
        });
    }

    fn mknod(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        umask: u32,
        rdev: u32,
        reply: ReplyEntry,
    ) {
        let Some(kind) = kind_of_mode(mode) else {
            reply.error(Errno::EINVAL);
            return;
        };
        let name = name.as_bytes().to_vec();
        let caller = Self::caller(req);
        let perm = mode & 0o7777;
        self.spawn(|ops, map, ttl| async move {
            let result = ops
                .mknod(map.to_elk(parent), &name, kind, perm, umask, rdev, caller)
                .await;
            reply_entry(reply, &map, ttl, result);
        });
    }

    fn mkdir(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        umask: u32,
        reply: ReplyEntry,
    ) {
        let name = name.as_bytes().to_vec();
        let caller = Self::caller(req);
        let perm = mode & 0o7777;
        self.spawn(|ops, map, ttl| async move {
            let result = ops
                .mkdir(map.to_elk(parent), &name, perm, umask, caller)
                .await;
            reply_entry(reply, &map, ttl, result);
        });
    }

    fn unlink(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        let name = name.as_bytes().to_vec();
        self.spawn(|ops, map, _| async move {
            reply_empty(reply, ops.unlink(map.to_elk(parent), &name).await);
        });
    }

    fn rmdir(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        let name = name.as_bytes().to_vec();
        self.spawn(|ops, map, _| async move {
            reply_empty(reply, ops.rmdir(map.to_elk(parent), &name).await);
        });
    }

    fn symlink(
        &self,
        req: &Request,
        parent: INodeNo,
        link_name: &OsStr,
        target: &Path,
        reply: ReplyEntry,
    ) {
        let name = link_name.as_bytes().to_vec();
        let target = target.as_os_str().as_bytes().to_vec();
        let caller = Self::caller(req);
        self.spawn(|ops, map, ttl| async move {
            let result = ops
                .symlink(map.to_elk(parent), &name, &target, caller)
                .await;
            reply_entry(reply, &map, ttl, result);
        });
    }

    fn rename(
        &self,
        _req: &Request,
        parent: INodeNo,
        name: &OsStr,
        newparent: INodeNo,
        newname: &OsStr,
        flags: RenameFlags,
        reply: ReplyEmpty,
    ) {
        let name = name.as_bytes().to_vec();
        let newname = newname.as_bytes().to_vec();
        self.spawn(|ops, map, _| async move {
            let result = ops
                .rename(
                    map.to_elk(parent),
                    &name,
                    map.to_elk(newparent),
                    &newname,
                    flags.bits(),
                )
                .await;
            reply_empty(reply, result);
        });
    }

    fn link(
        &self,
        _req: &Request,
        ino: INodeNo,
        newparent: INodeNo,
        newname: &OsStr,
        reply: ReplyEntry,
    ) {
        let name = newname.as_bytes().to_vec();
        self.spawn(|ops, map, ttl| async move {
            let result = ops
                .link(map.to_elk(ino), map.to_elk(newparent), &name)
                .await;
            reply_entry(reply, &map, ttl, result);
        });
    }

    fn open(&self, _req: &Request, ino: INodeNo, flags: OpenFlags, reply: ReplyOpen) {
        let notifier = self.notifier.clone();
        self.spawn(|ops, map, _| async move {
            match ops.open(map.to_elk(ino), flags.0).await {
                Ok(fh) => {
                    // Close-to-open: the kernel must not trust a cached length from before the open.
                    if let Some(n) = notifier.get() {
                        let _ = n.inval_inode(ino, -1, 0);
                    }
                    reply.opened(FileHandle(fh), FopenFlags::empty())
                }
                Err(e) => reply.error(e),
            }
        });
    }

    fn read(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        size: u32,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyData,
    ) {
        self.spawn(|ops, map, _| async move {
            match ops.read(map.to_elk(ino), offset, size).await {
                Ok(data) => reply.data(&data),
                Err(e) => reply.error(e),
            }
        });
    }

    fn write(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        data: &[u8],
        _write_flags: WriteFlags,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyWrite,
    ) {
        let data = Bytes::copy_from_slice(data);
        self.spawn(|ops, _, _| async move {
            match ops.write(fh.0, offset, data).await {
                Ok(n) => reply.written(n),
                Err(e) => reply.error(e),
            }
        });
    }

    fn flush(
        &self,
        _req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        lock_owner: LockOwner,
        reply: ReplyEmpty,
    ) {
        self.spawn(|ops, map, _| async move {
            reply_empty(reply, ops.flush(map.to_elk(ino), fh.0, lock_owner.0).await);
        });
    }

    fn release(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        _flags: OpenFlags,
        lock_owner: Option<LockOwner>,
        _flush: bool,
        reply: ReplyEmpty,
    ) {
        self.spawn(|ops, _, _| async move {
            reply_empty(reply, ops.release(fh.0, lock_owner.map(|o| o.0)).await);
        });
    }

    fn fsync(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        _datasync: bool,
        reply: ReplyEmpty,
    ) {
        self.spawn(|ops, map, _| async move {
            reply_empty(reply, ops.fsync(map.to_elk(ino)).await);
        });
    }

    fn getlk(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        lock_owner: LockOwner,
        start: u64,
        end: u64,
        typ: i32,
        pid: u32,
        reply: ReplyLock,
    ) {
        let lock = match lock_of(typ, start, end, lock_owner, pid) {
            Ok(l) => l,
            Err(e) => return reply.error(e),
        };
        self.spawn(|ops, map, _| async move {
            match ops.getlk(map.to_elk(ino), lock).await {
                Ok(Some(c)) => {
                    let typ = if c.kind == LockKind::Read {
                        libc::F_RDLCK
                    } else {
                        libc::F_WRLCK
                    };
                    reply.locked(c.start, c.end, typ, c.pid)
                }
                Ok(None) => reply.locked(start, end, libc::F_UNLCK, 0),
                Err(e) => reply.error(e),
            }
        });
    }

    fn setlk(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        lock_owner: LockOwner,
        start: u64,
        end: u64,
        typ: i32,
        pid: u32,
        sleep: bool,
        reply: ReplyEmpty,
    ) {
        let lock = match lock_of(typ, start, end, lock_owner, pid) {
            Ok(l) => l,
            Err(e) => return reply.error(e),
        };
        self.spawn(|ops, map, _| async move {
            reply_empty(reply, ops.setlk(map.to_elk(ino), lock, sleep).await);
        });
    }

    fn fallocate(
        &self,
        req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        length: u64,
        mode: i32,
        reply: ReplyEmpty,
    ) {
        let caller = Self::caller(req);
        self.spawn(|ops, map, _| async move {
            reply_empty(
                reply,
                ops.fallocate(map.to_elk(ino), offset, length, mode, caller)
                    .await,
            );
        });
    }

    fn fsyncdir(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _datasync: bool,
        reply: ReplyEmpty,
    ) {
        self.spawn(|ops, _, _| async move {
            reply_empty(reply, ops.fsyncdir().await);
        });
    }

    fn readdir(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        mut reply: ReplyDirectory,
    ) {
        self.spawn(|ops, map, _| async move {
            let dir = map.to_elk(ino);
            if offset < 1 && reply.add(ino, 1, fuser::FileType::Directory, ".") {
                return reply.ok();
            }
            if offset < 2 && reply.add(INodeNo(1), 2, fuser::FileType::Directory, "..") {
                return reply.ok();
            }
            match ops.readdir(dir, offset.max(2)).await {
                Ok(entries) => {
                    for e in entries {
                        let full = reply.add(
                            map.to_fuse(e.inode),
                            e.cookie,
                            attr::file_type(e.kind),
                            OsStr::from_bytes(&e.name),
                        );
                        if full {
                            break;
                        }
                    }
                    reply.ok();
                }
                Err(e) => reply.error(e),
            }
        });
    }

    fn getxattr(&self, _req: &Request, ino: INodeNo, name: &OsStr, size: u32, reply: ReplyXattr) {
        let name = name.as_bytes().to_vec();
        self.spawn(|ops, map, _| async move {
            reply_xattr(reply, size, ops.getxattr(map.to_elk(ino), &name).await);
        });
    }

    fn listxattr(&self, _req: &Request, ino: INodeNo, size: u32, reply: ReplyXattr) {
        self.spawn(|ops, map, _| async move {
            reply_xattr(reply, size, ops.listxattr(map.to_elk(ino)).await);
        });
    }

    fn setxattr(
        &self,
        _req: &Request,
        ino: INodeNo,
        name: &OsStr,
        value: &[u8],
        flags: i32,
        _position: u32,
        reply: ReplyEmpty,
    ) {
        let name = name.as_bytes().to_vec();
        let value = value.to_vec();
        self.spawn(|ops, map, _| async move {
            reply_empty(
                reply,
                ops.setxattr(map.to_elk(ino), &name, &value, flags).await,
            );
        });
    }

    fn removexattr(&self, _req: &Request, ino: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        let name = name.as_bytes().to_vec();
        self.spawn(|ops, map, _| async move {
            reply_empty(reply, ops.removexattr(map.to_elk(ino), &name).await);
        });
    }

    fn ioctl(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _flags: fuser::IoctlFlags,
        _cmd: u32,
        _in_data: &[u8],
        _out_size: u32,
        reply: fuser::ReplyIoctl,
    ) {
        reply.error(Errno::from_i32(libc::ENOTTY));
    }

    fn statfs(&self, _req: &Request, _ino: INodeNo, reply: ReplyStatfs) {
        self.spawn(|ops, _, _| async move {
            match ops.statfs().await {
                Ok(s) => {
                    let block = STATFS_BLOCK as u64;
                    let files = s.inodes.saturating_add(1 << 32);
                    reply.statfs(
                        s.total_bytes / block,
                        s.available_bytes / block,
                        s.available_bytes / block,
                        files,
                        files - s.inodes,
                        STATFS_BLOCK,
                        255,
                        STATFS_BLOCK,
                    );
                }
                Err(e) => reply.error(e),
            }
        });
    }

    fn create(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        umask: u32,
        flags: i32,
        reply: ReplyCreate,
    ) {
        let name = name.as_bytes().to_vec();
        let caller = Self::caller(req);
        let perm = mode & 0o7777;
        self.spawn(|ops, map, ttl| async move {
            match ops
                .create(map.to_elk(parent), &name, perm, umask, flags, caller)
                .await
            {
                Ok((a, fh)) => reply.created(
                    &ttl,
                    &attr::file_attr(&map, &a),
                    Generation(0),
                    FileHandle(fh),
                    FopenFlags::empty(),
                ),
                Err(e) => reply.error(e),
            }
        });
    }
}
