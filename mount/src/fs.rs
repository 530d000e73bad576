//! The FUSE callbacks: each decodes its arguments and starts the work, which runs on the kernel's
//! thread until it first waits and then on the tokio runtime (`first_poll.rs`); the reply is sent
//! from wherever the work ends, and the kernel's request loop never waits on the network.

use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use elkfs_client::closes::PendingClose;
use elkfs_proto::master::{Lock, LockKind};
use elkfs_proto::types::{Caller, SetAttr, TimeSet, Timestamp};
use fuser::{
    BsdFileFlags, Errno, FileHandle, Filesystem, FopenFlags, Generation, INodeNo, InitFlags,
    KernelConfig, LockOwner, Notifier, OpenFlags, RenameFlags, ReplyAttr, ReplyCreate, ReplyData,
    ReplyDirectory, ReplyDirectoryPlus, ReplyEmpty, ReplyEntry, ReplyLock, ReplyOpen, ReplyStatfs,
    ReplyWrite, ReplyXattr, Request, TimeOrNow, WriteFlags,
};
use tokio::runtime::Handle;

use crate::attr::{self, InodeMap, kind_of_mode};
use crate::first_poll;
use crate::open_dirs;
use crate::ops::Ops;
use crate::read_around;
use crate::view::View;

/// Largest read or write the kernel sends in one request.
pub const MAX_IO: u32 = 1024 * 1024;

/// Block size reported by statfs.
const STATFS_BLOCK: u32 = 65536;

/// The mounted filesystem as the kernel sees it.
pub struct ElkFs {
    ops: Arc<Ops>,
    view: Arc<View>,
    runtime: Handle,
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
        let view = Arc::new(View::new(InodeMap::new(ops.client.root()), ttl));
        ElkFs {
            ops,
            view,
            runtime,
            notifier,
        }
    }

    fn caller(req: &Request) -> Caller {
        Caller {
            uid: req.uid(),
            gid: req.gid(),
        }
    }

    /// Tells the master of a close in the background; a later unlink waits for it.
    fn send_close(&self, close: PendingClose) {
        let _runtime = self.runtime.enter();
        self.ops.send_close(close);
    }

    /// Starts a request's work here and leaves the rest to the runtime; the work replies.
    fn spawn<F>(&self, work: impl FnOnce(Arc<Ops>, Arc<View>) -> F)
    where
        F: Future<Output = ()> + Send + 'static,
    {
        let task = work(self.ops.clone(), self.view.clone());
        let in_flight = self.ops.in_flight.start();
        first_poll::run(&self.runtime, async move {
            task.await;
            drop(in_flight);
        });
    }
}

fn time_set(t: TimeOrNow) -> TimeSet {
    match t {
        TimeOrNow::Now => TimeSet::Now,
        TimeOrNow::SpecificTime(t) => TimeSet::At(Timestamp::from_system_time(t)),
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
        // `ls -l` gets names and attributes in one request per page; a plain `ls` or `find`
        // gets names only after the first page (the kernel decides, by whether the names are
        // looked at).
        let plus = InitFlags::FUSE_DO_READDIRPLUS | InitFlags::FUSE_READDIRPLUS_AUTO;
        if let Err(missing) = config.add_capabilities(plus) {
            tracing::warn!(
                ?missing,
                "the kernel cannot list directories with attributes"
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

    fn lookup(&self, req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        let caller = Self::caller(req);
        let dir = self.view.map.to_elk(parent);
        // Names the kernel may not keep are not kept here either.
        let keeps = !self.view.entry_ttl(dir).is_zero();
        if keeps && let Some((attr, age)) = self.ops.lookup_now(dir, name.as_bytes()) {
            return self.view.reply_aged_entry(reply, dir, caller, &attr, age);
        }
        if self.ops.knows_absent(dir, name.as_bytes()) {
            return reply.error(Errno::ENOENT);
        }
        let name = name.as_bytes().to_vec();
        self.spawn(|ops, view| async move {
            view.reply_entry(reply, dir, caller, ops.lookup(dir, &name, keeps).await);
        });
    }

    fn getattr(&self, req: &Request, ino: INodeNo, _fh: Option<FileHandle>, reply: ReplyAttr) {
        let caller = Self::caller(req);
        if let Some(attr) = self.ops.getattr_now(self.view.map.to_elk(ino)) {
            return self.view.reply_attr(reply, caller, Ok(attr));
        }
        self.spawn(|ops, view| async move {
            view.reply_attr(reply, caller, ops.getattr(view.map.to_elk(ino)).await);
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
        self.spawn(|ops, view| async move {
            let result = ops.setattr(view.map.to_elk(ino), changes, caller).await;
            view.reply_attr(reply, caller, result);
        });
    }

    fn readlink(&self, _req: &Request, ino: INodeNo, reply: ReplyData) {
        self.spawn(|ops, view| async move {
            match ops.readlink(view.map.to_elk(ino)).await {
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
        self.spawn(|ops, view| async move {
            let result = ops
                .mknod(
                    view.map.to_elk(parent),
                    &name,
                    kind,
                    perm,
                    umask,
                    rdev,
                    caller,
                )
                .await;
            view.reply_entry(reply, view.map.to_elk(parent), caller, result);
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
        self.spawn(|ops, view| async move {
            let result = ops
                .mkdir(view.map.to_elk(parent), &name, perm, umask, caller)
                .await;
            view.reply_entry(reply, view.map.to_elk(parent), caller, result);
        });
    }

    fn unlink(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        let name = name.as_bytes().to_vec();
        self.spawn(|ops, view| async move {
            reply_empty(reply, ops.unlink(view.map.to_elk(parent), &name).await);
        });
    }

    fn rmdir(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        let name = name.as_bytes().to_vec();
        self.spawn(|ops, view| async move {
            reply_empty(reply, ops.rmdir(view.map.to_elk(parent), &name).await);
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
        self.spawn(|ops, view| async move {
            let result = ops
                .symlink(view.map.to_elk(parent), &name, &target, caller)
                .await;
            view.reply_entry(reply, view.map.to_elk(parent), caller, result);
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
        self.spawn(|ops, view| async move {
            let result = ops
                .rename(
                    view.map.to_elk(parent),
                    &name,
                    view.map.to_elk(newparent),
                    &newname,
                    flags.bits(),
                )
                .await;
            reply_empty(reply, result);
        });
    }

    fn link(
        &self,
        req: &Request,
        ino: INodeNo,
        newparent: INodeNo,
        newname: &OsStr,
        reply: ReplyEntry,
    ) {
        let name = newname.as_bytes().to_vec();
        let caller = Self::caller(req);
        self.spawn(|ops, view| async move {
            let result = ops
                .link(view.map.to_elk(ino), view.map.to_elk(newparent), &name)
                .await;
            view.reply_entry(reply, view.map.to_elk(newparent), caller, result);
        });
    }

    fn open(&self, _req: &Request, ino: INodeNo, flags: OpenFlags, reply: ReplyOpen) {
        let notifier = self.notifier.clone();
        self.spawn(|ops, view| async move {
            let inode = view.map.to_elk(ino);
            match ops.open(inode, flags.0, !view.uncached_data(inode)).await {
                Ok((fh, direct)) => {
                    // Close-to-open: the kernel must not trust a cached length from before the open.
                    if let Some(n) = notifier.get() {
                        let _ = n.inval_inode(ino, -1, 0);
                    }
                    let flags = if direct || view.uncached_data(view.map.to_elk(ino)) {
                        FopenFlags::FOPEN_DIRECT_IO
                    } else {
                        FopenFlags::empty()
                    };
                    reply.opened(FileHandle(fh), flags)
                }
                Err(e) => reply.error(e),
            }
        });
    }

    fn read(
        &self,
        _req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        size: u32,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyData,
    ) {
        let notifier = self.notifier.clone();
        self.spawn(|ops, view| async move {
            let inode = view.map.to_elk(ino);
            ops.note_access(inode, Some(fh.0));
            if let Some(data) = ops.early_read(fh.0, offset, size).await {
                return reply.data(&data);
            }
            let around = read_around::block_around(offset, size).filter(|_| {
                !view.uncached_data(inode) && ops.client.writer_if_open(inode).is_none()
            });
            let Some((start, len)) = around else {
                return match ops.read(inode, offset, size).await {
                    Ok(data) => reply.data(&data),
                    Err(e) => reply.error(e),
                };
            };
            let around = ops.store_gate.begin(inode);
            match ops.read(inode, start, len).await {
                Ok(block) => {
                    let read = read_around::split(block, start, offset, size);
                    reply.data(&read.asked);
                    if let Some(notifier) = notifier.get().cloned()
                        && !read.rest.is_empty()
                    {
                        let client = ops.client.clone();
                        let writing = move || client.writer_if_open(inode).is_some();
                        let gate = ops.store_gate.clone();
                        read_around::store(gate, around, writing, ino, read.rest, notifier);
                    }
                }
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
        write_flags: WriteFlags,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyWrite,
    ) {
        let data = Bytes::copy_from_slice(data);
        let kill = write_flags.contains(WriteFlags::FUSE_WRITE_KILL_SUIDGID);
        self.spawn(|ops, _view| async move {
            match ops.write(fh.0, offset, data, kill).await {
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
        let inode = self.view.map.to_elk(ino);
        if let Some(answer) = self.ops.flush_now(inode, fh.0, lock_owner.0) {
            return reply_empty(reply, answer);
        }
        self.spawn(|ops, _view| async move {
            reply_empty(reply, ops.flush(inode, fh.0, lock_owner.0).await);
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
        let owner = lock_owner.map(|o| o.0);
        let Some(releasing) = self.ops.begin_release(fh.0) else {
            return reply.ok();
        };
        match self.ops.release_now(releasing, owner) {
            Ok((answer, close)) => {
                if let Some(close) = close {
                    self.send_close(close);
                }
                reply_empty(reply, answer);
            }
            Err(releasing) => self.spawn(|ops, _view| async move {
                reply_empty(reply, ops.release(releasing, owner).await);
            }),
        }
    }

    fn fsync(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        _datasync: bool,
        reply: ReplyEmpty,
    ) {
        self.spawn(|ops, view| async move {
            reply_empty(reply, ops.fsync(view.map.to_elk(ino)).await);
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
        self.spawn(|ops, view| async move {
            match ops.getlk(view.map.to_elk(ino), lock).await {
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
        self.spawn(|ops, view| async move {
            reply_empty(reply, ops.setlk(view.map.to_elk(ino), lock, sleep).await);
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
        self.spawn(|ops, view| async move {
            reply_empty(
                reply,
                ops.fallocate(view.map.to_elk(ino), offset, length, mode, caller)
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
        self.spawn(|ops, _view| async move {
            reply_empty(reply, ops.fsyncdir().await);
        });
    }

    fn opendir(&self, _req: &Request, ino: INodeNo, _flags: OpenFlags, reply: ReplyOpen) {
        self.spawn(|ops, view| async move {
            match ops.opendir(view.map.to_elk(ino)).await {
                Ok(fh) => reply.opened(FileHandle(fh), FopenFlags::empty()),
                Err(e) => reply.error(e),
            }
        });
    }

    fn releasedir(
        &self,
        _req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        _flags: OpenFlags,
        reply: ReplyEmpty,
    ) {
        if let Some(close) = self.ops.begin_releasedir(self.view.map.to_elk(ino), fh.0) {
            self.send_close(close);
        }
        reply.ok();
    }

    fn readdir(
        &self,
        _req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        mut reply: ReplyDirectory,
    ) {
        self.spawn(|ops, view| async move {
            let dir = view.map.to_elk(ino);
            if offset == 0 {
                ops.note_access(dir, None);
            }
            if offset < 1 && reply.add(ino, 1, fuser::FileType::Directory, ".") {
                return reply.ok();
            }
            if offset < 2 && reply.add(INodeNo(1), 2, fuser::FileType::Directory, "..") {
                return reply.ok();
            }
            let after = offset.max(open_dirs::START);
            match ops.readdir(dir, fh.0, after, false).await {
                Ok(page) => {
                    for listed in page.after(after).unwrap_or_default() {
                        let e = &listed.entry;
                        let full = reply.add(
                            view.map.to_fuse(e.inode),
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

    fn readdirplus(
        &self,
        req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        mut reply: ReplyDirectoryPlus,
    ) {
        let caller = Self::caller(req);
        self.spawn(|ops, view| async move {
            let dir = view.map.to_elk(ino);
            if offset == 0 {
                ops.note_access(dir, None);
            }
            // The kernel takes only the names of these two, never their attributes.
            let dots = [(ino, "."), (INodeNo(1), "..")];
            for (i, (dot_ino, name)) in dots.into_iter().enumerate() {
                let cookie = i as u64 + 1;
                let dot = attr::placeholder_dir(dot_ino);
                if offset < cookie
                    && reply.add(dot_ino, cookie, name, &Duration::ZERO, &dot, Generation(0))
                {
                    return reply.ok();
                }
            }
            let after = offset.max(open_dirs::START);
            match ops.readdir(dir, fh.0, after, true).await {
                Ok(page) => {
                    // What the kernel is told expires when it would have had it been fetched now.
                    let age = page.fetched().elapsed();
                    let entry_ttl = view.entry_ttl(dir);
                    for listed in page.after(after).unwrap_or_default() {
                        let Some(found) = &listed.attr else {
                            break;
                        };
                        ops.store_gate.settle(found.inode).await;
                        let found = ops.client.with_local_writes(found.clone());
                        let (shown, attr_ttl) = view.attr(&found, caller);
                        let ttl = attr_ttl.min(entry_ttl).saturating_sub(age);
                        let full = reply.add(
                            view.map.to_fuse(listed.entry.inode),
                            listed.entry.cookie,
                            OsStr::from_bytes(&listed.entry.name),
                            &ttl,
                            &shown,
                            Generation(0),
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
        if name.as_bytes() == elkfs_client::mount_info::XATTR.as_bytes() {
            let info = self.ops.info(self.view.map.to_elk(ino));
            return reply_xattr(reply, size, Ok(info.into_bytes()));
        }
        if let Some(answer) = self
            .ops
            .getxattr_now(self.view.map.to_elk(ino), name.as_bytes())
        {
            return reply_xattr(reply, size, answer);
        }
        let name = name.as_bytes().to_vec();
        self.spawn(|ops, view| async move {
            reply_xattr(reply, size, ops.getxattr(view.map.to_elk(ino), &name).await);
        });
    }

    fn listxattr(&self, _req: &Request, ino: INodeNo, size: u32, reply: ReplyXattr) {
        if let Some(answer) = self.ops.listxattr_now(self.view.map.to_elk(ino)) {
            return reply_xattr(reply, size, answer);
        }
        self.spawn(|ops, view| async move {
            reply_xattr(reply, size, ops.listxattr(view.map.to_elk(ino)).await);
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
        self.spawn(|ops, view| async move {
            reply_empty(
                reply,
                ops.setxattr(view.map.to_elk(ino), &name, &value, flags)
                    .await,
            );
        });
    }

    fn removexattr(&self, _req: &Request, ino: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        let name = name.as_bytes().to_vec();
        self.spawn(|ops, view| async move {
            reply_empty(reply, ops.removexattr(view.map.to_elk(ino), &name).await);
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
        self.spawn(|ops, _view| async move {
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
        self.spawn(|ops, view| async move {
            match ops
                .create(view.map.to_elk(parent), &name, perm, umask, flags, caller)
                .await
            {
                Ok((a, fh, direct)) => {
                    let (shown, ttl) = view.attr(&a, caller);
                    let flags = if direct || view.uncached_data(a.inode) {
                        FopenFlags::FOPEN_DIRECT_IO
                    } else {
                        FopenFlags::empty()
                    };
                    reply.created(&ttl, &shown, Generation(0), FileHandle(fh), flags)
                }
                Err(e) => reply.error(e),
            }
        });
    }
}
