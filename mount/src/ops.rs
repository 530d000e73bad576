//! The filesystem's behaviour as plain async functions returning errno on failure, so it can be
//! reasoned about (and tested) apart from the FUSE plumbing.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use elkfs_client::Client;
use elkfs_client::closes::PendingClose;
use elkfs_client::errno::errno_of;
use elkfs_proto::master::Lock;
use elkfs_proto::types::{Attr, Caller, FileKind, FsStats, SetAttr, Timestamp};
use elkfs_proto::{InodeId, Status};
use fuser::Errno;

use crate::absent_xattrs::{self, AbsentXattrs};
use crate::early_read::EarlyReads;
use crate::handles::{AtimeAtOpen, Handles, OpenFile};
use crate::open_dirs::{Listed, OpenDirs, Page};
use crate::read_around::StoreGate;

/// A handle being closed: forgotten already, its writes and its master close still to finish.
pub struct Releasing {
    file: Arc<OpenFile>,
    close: Option<PendingClose>,
}

/// A time an hour from now: an access time the master would move by then (`relatime`'s day
/// running out) is reported, whatever this host's clock is off by, up to an hour.
fn in_an_hour() -> Timestamp {
    let now = Timestamp::now();
    Timestamp {
        secs: now.secs.saturating_add(3600),
        ..now
    }
}

/// Entries fetched from the master per directory page.
const DIR_PAGE: u32 = 1024;

/// An errno for the kernel.
pub fn errno(status: Status) -> Errno {
    Errno::from_i32(errno_of(status))
}

/// What the mounted filesystem does.
pub struct Ops {
    /// The client session.
    pub client: Arc<Client>,
    /// Open handles.
    pub handles: Handles,
    /// Whether the mount is read-only.
    pub read_only: bool,
    /// Kernel requests being worked on.
    pub in_flight: Arc<InFlight>,
    /// Access-time notes on their way to the master.
    pub access_notes: Arc<crate::access_notes::AccessNotes>,
    /// Which reads move access times (`-o noatime`, `-o nodiratime`).
    pub atime: crate::options::AtimeUpdates,
    /// Extended attributes known to be absent (asked for before writes and by `ls -l`).
    pub absent_xattrs: AbsentXattrs,
    /// Open directories and their listings' last pages.
    pub open_dirs: OpenDirs,
    /// The cluster authority's certificate, when the mount uses TLS (the CLI uses it too).
    pub tls_ca: Option<std::path::PathBuf>,
    /// Keeps blocks read around a small read from landing in the kernel's cache over newer
    /// pages.
    pub store_gate: Arc<StoreGate>,
    /// Small files' reads started at their open.
    pub early_reads: EarlyReads,
    /// Changes to attributes or names this mount asked for (each may move a file's change
    /// time, and with it whether a read moves the access time), counted before they are sent.
    pub changes_here: AtomicU64,
}

/// Counts kernel requests being worked on, so unmounting can wait for their replies.
#[derive(Default)]
pub struct InFlight {
    count: std::sync::atomic::AtomicUsize,
    idle: tokio::sync::Notify,
}

/// One request being worked on; finished when dropped.
pub struct InFlightGuard(Arc<InFlight>);

impl InFlight {
    /// Marks a request as started.
    pub fn start(self: &Arc<Self>) -> InFlightGuard {
        self.count.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        InFlightGuard(self.clone())
    }

    /// Waits until no request is being worked on, or `timeout` passes.
    pub async fn wait_idle(&self, timeout: std::time::Duration) {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let idle = self.idle.notified();
            tokio::pin!(idle);
            idle.as_mut().enable();
            if self.count.load(std::sync::atomic::Ordering::SeqCst) == 0 {
                return;
            }
            if tokio::time::timeout_at(deadline, idle).await.is_err() {
                return;
            }
        }
    }
}

impl Drop for InFlightGuard {
    fn drop(&mut self) {
        if self
            .0
            .count
            .fetch_sub(1, std::sync::atomic::Ordering::SeqCst)
            == 1
        {
            self.0.idle.notify_waiters();
        }
    }
}

type Result<T> = std::result::Result<T, Errno>;

impl Ops {
    fn writable(&self) -> Result<()> {
        if self.read_only {
            Err(Errno::EROFS)
        } else {
            Ok(())
        }
    }

    /// Looks up a name.
    pub async fn lookup(&self, parent: InodeId, name: &[u8], keeps: bool) -> Result<Attr> {
        let found = match keeps {
            true => self.client.lookup_in_order(parent, name).await,
            false => self.client.lookup(parent, name).await,
        };
        self.settled(found.map_err(errno)).await
    }

    /// `attr` once it may go to the kernel: a read around its file in progress stores nothing
    /// after it (see `read_around`).
    async fn settled(&self, attr: Result<Attr>) -> Result<Attr> {
        if let Ok(a) = &attr {
            self.store_gate.settle(a.inode).await;
        }
        attr
    }

    /// `name` in `parent` from names looked up ahead, with how long ago the master sent it.
    pub fn lookup_now(&self, parent: InodeId, name: &[u8]) -> Option<(Attr, Duration)> {
        self.client
            .lookup_now(parent, name)
            .filter(|(a, _)| !self.store_gate.busy(a.inode))
    }

    /// Whether `name` is known not to exist in `parent` without asking the master (a directory
    /// this mount made and holds the lease on).
    pub fn knows_absent(&self, parent: InodeId, name: &[u8]) -> bool {
        self.client.master.knows_absent(parent, name)
    }

    /// Reads attributes.
    pub async fn getattr(&self, inode: InodeId) -> Result<Attr> {
        self.access_notes.settled(inode).await;
        self.settled(self.client.getattr(inode).await.map_err(errno))
            .await
    }

    /// Changes attributes.
    pub async fn setattr(&self, inode: InodeId, changes: SetAttr, caller: Caller) -> Result<Attr> {
        self.writable()?;
        self.count_change();
        let truncates = changes.size.is_some();
        let attr = self
            .client
            .setattr(inode, changes, caller)
            .await
            .map_err(errno);
        // Even after an error: the master may have cut the file before the answer was lost.
        if truncates {
            self.store_gate.changed(inode).await;
            return attr;
        }
        self.settled(attr).await
    }

    /// Creates a node (file, fifo, socket, device).
    #[allow(clippy::too_many_arguments)]
    pub async fn mknod(
        &self,
        parent: InodeId,
        name: &[u8],
        kind: FileKind,
        mode: u32,
        umask: u32,
        rdev: u32,
        caller: Caller,
    ) -> Result<Attr> {
        self.writable()?;
        self.client
            .mknod(parent, name, kind, mode, umask, rdev, caller)
            .await
            .map_err(errno)
    }

    /// Creates a directory.
    pub async fn mkdir(
        &self,
        parent: InodeId,
        name: &[u8],
        mode: u32,
        umask: u32,
        caller: Caller,
    ) -> Result<Attr> {
        self.writable()?;
        self.client
            .mkdir(parent, name, mode, umask, caller)
            .await
            .map_err(errno)
    }

    /// Creates a symbolic link.
    pub async fn symlink(
        &self,
        parent: InodeId,
        name: &[u8],
        target: &[u8],
        caller: Caller,
    ) -> Result<Attr> {
        self.writable()?;
        self.client
            .symlink(parent, name, target, caller)
            .await
            .map_err(errno)
    }

    /// Adds a hard link.
    pub async fn link(&self, inode: InodeId, parent: InodeId, name: &[u8]) -> Result<Attr> {
        self.writable()?;
        self.count_change();
        let attr = self.client.link(inode, parent, name).await.map_err(errno);
        self.settled(attr).await
    }

    /// Reads a symbolic link.
    pub async fn readlink(&self, inode: InodeId) -> Result<Vec<u8>> {
        self.client.readlink(inode).await.map_err(errno)
    }

    /// Removes a file name.
    pub async fn unlink(&self, parent: InodeId, name: &[u8]) -> Result<()> {
        self.writable()?;
        self.count_change();
        self.client.unlink(parent, name).await.map_err(errno)
    }

    /// Removes a directory.
    pub async fn rmdir(&self, parent: InodeId, name: &[u8]) -> Result<()> {
        self.writable()?;
        self.client.rmdir(parent, name).await.map_err(errno)
    }

    /// Renames.
    pub async fn rename(
        &self,
        parent: InodeId,
        name: &[u8],
        new_parent: InodeId,
        new_name: &[u8],
        flags: u32,
    ) -> Result<()> {
        self.writable()?;
        self.count_change();
        self.client
            .rename(parent, name, new_parent, new_name, flags)
            .await
            .map_err(errno)
    }

    /// Opens a file; handles opened for writing share the file's write-behind buffer. Returns
    /// the handle and whether the kernel must bypass its page cache for it (appends).
    pub async fn open(&self, inode: InodeId, flags: i32, cached: bool) -> Result<(u64, bool)> {
        let writes = flags & libc::O_ACCMODE != libc::O_RDONLY;
        if writes {
            self.writable()?;
        }
        // A truncate or a writer's close on this mount while the master answers may not be in
        // the length it sends: no read at open then.
        let changes_before = self.store_gate.change_count(inode);
        let changes_here = self.changes_here.load(Ordering::SeqCst);
        // Close-to-open consistency: whatever another client wrote before we opened is read fresh.
        let attr = self.client.open(inode, writes).await.map_err(errno)?;
        let append = writes && flags & libc::O_APPEND != 0;
        // The writer first: stores checking after the wait below see it.
        let writer = writes.then(|| self.client.writer(inode));
        self.store_gate.changed(inode).await;
        let seen = changes_before + 1;
        let changes_at_open = (!writes
            && self.store_gate.change_count(inode) == seen
            && self.client.writer_if_open(inode).is_none())
        .then_some(seen);
        let attr = attr.filter(|_| changes_at_open.is_some());
        let early_read = match &attr {
            Some(attr) if cached => self.early_reads.start(&self.client, inode, attr.size),
            _ => None,
        };
        let atime_at_open = attr.map(|attr| AtimeAtOpen { attr, changes_here });
        let fh = self.handles.insert(OpenFile {
            inode,
            writer,
            append,
            accessed: Default::default(),
            changes_at_open,
            atime_at_open,
            privileges_dropped: Default::default(),
            early_read: std::sync::Mutex::new(early_read),
        });
        Ok((fh, append))
    }

    /// Opens a directory (an open directory outlives its removal, like an open file).
    pub async fn opendir(&self, inode: InodeId) -> Result<u64> {
        self.client.open(inode, false).await.map_err(errno)?;
        Ok(self.open_dirs.open())
    }

    /// Closes a directory: counts the close at once; the master must still hear of it
    /// ([`Ops::send_close`]).
    pub fn begin_releasedir(&self, inode: InodeId, fh: u64) -> Option<PendingClose> {
        self.open_dirs.release(fh);
        self.client.master.start_close(inode)
    }

    /// Reports a read of `inode` for its access time (once per handle, in the background),
    /// unless `-o noatime` or `-o nodiratime` turned that off.
    pub fn note_access(&self, inode: InodeId, fh: Option<u64>) {
        let wanted = match fh {
            Some(_) => self.atime.files,
            None => self.atime.dirs,
        };
        if !wanted {
            return;
        }
        if let Some(fh) = fh {
            let Some(file) = self.handles.get(fh) else {
                return;
            };
            // Looked at for every read until one is reported: the file may change meanwhile.
            if self.atime_stays(&file) {
                return;
            }
            if file.accessed.swap(true, Ordering::Relaxed) {
                return;
            }
        }
        let client = self.client.clone();
        let notes = self.access_notes.clone();
        let done = notes.start(inode);
        tokio::spawn(async move {
            client.access(inode).await;
            notes.finish(inode, done);
        });
    }

    /// Whether nothing on this mount changed the file of `file`, a handle that does not
    /// write, since its open: no open, truncate or close of a writable handle moved the file's
    /// change counter, and no handle of it is open for writing.
    fn unchanged_since_open(&self, file: &OpenFile) -> bool {
        file.changes_at_open == Some(self.store_gate.change_count(file.inode))
            && self.client.writer_if_open(file.inode).is_none()
    }

    /// Whether the master would leave the access time of `file`'s file as it is for a read now
    /// (`relatime`), judged from the times its open brought: nothing on this mount changed the
    /// file, its attributes or any names since, and they say so, with the day counted an hour
    /// short.
    fn atime_stays(&self, file: &OpenFile) -> bool {
        file.atime_at_open.as_ref().is_some_and(|at_open| {
            self.changes_here.load(Ordering::SeqCst) == at_open.changes_here
                && self.unchanged_since_open(file)
                && !at_open.attr.read_moves_atime(in_an_hour())
        })
    }

    /// Counts a change to attributes or names, before it is sent (see `changes_here`).
    fn count_change(&self) {
        self.changes_here.fetch_add(1, Ordering::SeqCst);
    }

    /// Creates and opens a regular file (one master request for both).
    #[allow(clippy::too_many_arguments)]
    pub async fn create(
        &self,
        parent: InodeId,
        name: &[u8],
        mode: u32,
        umask: u32,
        flags: i32,
        caller: Caller,
    ) -> Result<(Attr, u64, bool)> {
        self.writable()?;
        let attr = self
            .client
            .create_open(parent, name, mode, umask, caller)
            .await
            .map_err(errno)?;
        // A new file has no file capabilities (inherited ACLs are other attributes).
        self.absent_xattrs.note_no_capability(attr.inode);
        // A new inode (numbers are never reused): the kernel holds no page of it to protect
        // from a store (see `read_around`).
        let writes = flags & libc::O_ACCMODE != libc::O_RDONLY;
        let append = writes && flags & libc::O_APPEND != 0;
        let fh = self.handles.insert(OpenFile {
            inode: attr.inode,
            writer: writes.then(|| self.client.writer(attr.inode)),
            append,
            accessed: Default::default(),
            changes_at_open: None,
            atime_at_open: None,
            privileges_dropped: Default::default(),
            early_read: Default::default(),
        });
        Ok((attr, fh, append))
    }

    /// The attributes of `inode` when they can be given without waiting (the master sent them
    /// with the reply to a change or an open a moment ago).
    pub fn getattr_now(&self, inode: InodeId) -> Option<Attr> {
        if self.access_notes.pending(inode) || self.store_gate.busy(inode) {
            return None;
        }
        self.client.getattr_now(inode)
    }

    /// The answer to the first read through handle `fh` from the file's read at open, if one
    /// was started and may answer it (see `early_read`).
    pub async fn early_read(&self, fh: u64, offset: u64, size: u32) -> Option<Bytes> {
        let file = self.handles.get(fh)?;
        let early = file
            .early_read
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take()?;
        early
            .answer(|| self.unchanged_since_open(&file), offset, size)
            .await
    }

    /// Reads file data.
    pub async fn read(&self, inode: InodeId, offset: u64, size: u32) -> Result<Bytes> {
        self.client.read(inode, offset, size).await.map_err(errno)
    }

    /// Buffers a write (write-behind); earlier write errors surface here. Appends go to the end
    /// of the file as every mount sees it, whatever offset the kernel computed.
    pub async fn write(
        &self,
        fh: u64,
        offset: u64,
        data: Bytes,
        kill_privileges: bool,
    ) -> Result<u32> {
        let file = self.handles.get(fh).ok_or(Errno::EBADF)?;
        let writer = file.writer.as_ref().ok_or(Errno::EBADF)?;
        if kill_privileges
            && !file
                .privileges_dropped
                .swap(true, std::sync::atomic::Ordering::Relaxed)
        {
            self.drop_privileges(file.inode).await?;
        }
        let len = data.len() as u32;
        if file.append {
            self.client.append(file.inode, data).await.map_err(errno)?;
        } else {
            writer.write(offset, data).await.map_err(errno)?;
        }
        Ok(len)
    }

    /// A write by a process that may not keep them clears setuid, and setgid on a
    /// group-executable file, as on a local filesystem (the kernel leaves it to us).
    async fn drop_privileges(&self, inode: InodeId) -> Result<()> {
        let attr = self.client.getattr(inode).await.map_err(errno)?;
        let mut mode = attr.mode;
        mode &= !0o4000;
        if mode & 0o2010 == 0o2010 {
            mode &= !0o2000;
        }
        if mode == attr.mode {
            return Ok(());
        }
        let change = SetAttr {
            mode: Some(mode),
            ..Default::default()
        };
        let root = Caller { uid: 0, gid: 0 };
        self.client
            .setattr(inode, change, root)
            .await
            .map_err(errno)?;
        Ok(())
    }

    /// Waits for the handle's buffered writes and drops the closing process's POSIX locks (on
    /// every `close`, as POSIX says).
    pub async fn flush(&self, inode: InodeId, fh: u64, lock_owner: u64) -> Result<()> {
        let flushed = match self.handles.get(fh).and_then(|f| f.writer.clone()) {
            Some(w) => w.flush().await.map_err(errno),
            None => Ok(()),
        };
        self.client
            .release_locks(inode, lock_owner, true)
            .await
            .map_err(errno)?;
        flushed
    }

    /// [`Ops::flush`]'s answer when it needs no waiting (nothing of the handle's file is
    /// buffered or on its way, and the owner holds no locks), so the kernel thread can give it;
    /// `None` otherwise.
    pub fn flush_now(&self, inode: InodeId, fh: u64, lock_owner: u64) -> Option<Result<()>> {
        if self.client.holds_locks(inode, lock_owner) {
            return None;
        }
        match self.handles.get(fh).and_then(|f| f.writer.clone()) {
            None => Some(Ok(())),
            Some(w) => w.flushed_now().map(|r| r.map_err(errno)),
        }
    }

    /// Starts closing a handle, before the kernel's next request is looked at: the handle is
    /// forgotten, and when it was this client's last on the file, the master's close is counted
    /// so that a later unlink waits for it. `None` for a handle that is not open.
    pub fn begin_release(&self, fh: u64) -> Option<Releasing> {
        let file = self.handles.remove(fh)?;
        if file.writer.is_some() {
            self.store_gate.writer_closed(file.inode);
        }
        let close = self.client.master.start_close(file.inode);
        Some(Releasing { file, close })
    }

    /// The answer to a release when nothing is left to wait for (no data going out, no `flock`
    /// lock to drop), with the close the master must still hear of; the release back otherwise.
    #[allow(clippy::result_large_err)]
    pub fn release_now(
        &self,
        releasing: Releasing,
        flock_owner: Option<u64>,
    ) -> std::result::Result<(Result<()>, Option<PendingClose>), Releasing> {
        let inode = releasing.file.inode;
        if flock_owner.is_some_and(|owner| self.client.holds_locks(inode, owner)) {
            return Err(releasing);
        }
        let flushed = match &releasing.file.writer {
            None => Ok(()),
            Some(w) => match w.flushed_now() {
                Some(result) => result.map_err(errno),
                None => return Err(releasing),
            },
        };
        Ok((flushed, releasing.close))
    }

    /// Finishes closing a handle: flushes its writes and drops its `flock` locks; the master
    /// hears of the close after that, in the background.
    pub async fn release(&self, releasing: Releasing, flock_owner: Option<u64>) -> Result<()> {
        let Releasing { file, close } = releasing;
        let flushed = match &file.writer {
            Some(w) => w.flush().await.map_err(errno),
            None => Ok(()),
        };
        let unlocked = match flock_owner {
            Some(owner) => self
                .client
                .release_locks(file.inode, owner, false)
                .await
                .map_err(errno),
            None => Ok(()),
        };
        if let Some(close) = close {
            self.send_close(close);
        }
        unlocked.and(flushed)
    }

    /// Tells the master of a close in the background (nothing waits on it but a later unlink).
    pub fn send_close(&self, close: PendingClose) {
        self.client.master.queue_close(close);
    }

    /// Makes the file's data and the metadata durable on every server holding them (data
    /// written through any handle of this client).
    pub async fn fsync(&self, inode: InodeId) -> Result<()> {
        if let Some(w) = self.client.writer_if_open(inode) {
            w.sync_data().await.map_err(errno)?;
        }
        self.client.sync_metadata().await.map_err(errno)
    }

    /// What the CLI needs to reach the cluster about `inode` (see `elkfs_client::mount_info`).
    pub fn info(&self, inode: InodeId) -> String {
        elkfs_client::mount_info::MountInfo {
            master: self.client.master.target().to_string(),
            subdir: self.client.master.subdir().to_string(),
            inode,
            tls_ca: self.tls_ca.as_ref().map(|p| p.display().to_string()),
        }
        .encode()
    }

    /// Reads an extended attribute.
    pub async fn getxattr(&self, inode: InodeId, name: &[u8]) -> Result<Vec<u8>> {
        let result = self.client.getxattr(inode, name).await.map_err(errno);
        if name == absent_xattrs::CAPABILITY && result == Err(Errno::ENODATA) {
            self.absent_xattrs.note_no_capability(inode);
        }
        result
    }

    /// [`Ops::getxattr`]'s answer when it is known without asking: ENODATA for an attribute
    /// the file is known not to have.
    pub fn getxattr_now(&self, inode: InodeId, name: &[u8]) -> Option<Result<Vec<u8>>> {
        self.absent_xattrs
            .lacks(inode, name)
            .then_some(Err(Errno::ENODATA))
    }

    /// [`Ops::listxattr`]'s answer when it is known without asking: none for a file known to
    /// have no extended attribute.
    pub fn listxattr_now(&self, inode: InodeId) -> Option<Result<Vec<u8>>> {
        self.absent_xattrs
            .lacks_all(inode)
            .then_some(Ok(Vec::new()))
    }

    /// Lists extended attribute names, each followed by a NUL byte.
    pub async fn listxattr(&self, inode: InodeId) -> Result<Vec<u8>> {
        let names = self.client.listxattr(inode).await.map_err(errno)?;
        let mut out = Vec::new();
        for name in names {
            out.extend_from_slice(&name);
            out.push(0);
        }
        Ok(out)
    }

    /// Sets an extended attribute.
    pub async fn setxattr(
        &self,
        inode: InodeId,
        name: &[u8],
        value: &[u8],
        flags: i32,
    ) -> Result<()> {
        self.writable()?;
        self.count_change();
        self.absent_xattrs.forget(inode);
        let result = self
            .client
            .setxattr(inode, name, value, flags as u32)
            .await
            .map_err(errno);
        self.absent_xattrs.forget(inode);
        result
    }

    /// Removes an extended attribute.
    pub async fn removexattr(&self, inode: InodeId, name: &[u8]) -> Result<()> {
        self.writable()?;
        self.count_change();
        self.absent_xattrs.forget(inode);
        let result = self.client.removexattr(inode, name).await.map_err(errno);
        self.absent_xattrs.forget(inode);
        result
    }

    /// Takes or releases a lock held across all mounts.
    pub async fn setlk(&self, inode: InodeId, lock: Lock, wait: bool) -> Result<()> {
        self.client.set_lock(inode, lock, wait).await.map_err(errno)
    }

    /// Finds a lock that conflicts with `lock`.
    pub async fn getlk(&self, inode: InodeId, lock: Lock) -> Result<Option<Lock>> {
        self.client.test_lock(inode, lock).await.map_err(errno)
    }

    /// `fallocate`: mode 0 grows the file to `offset + length` (space is not reserved ahead:
    /// chunks are created as data arrives); `KEEP_SIZE` alone does nothing; `PUNCH_HOLE` and
    /// `ZERO_RANGE` make the range read as zeros. Other modes are not supported.
    pub async fn fallocate(
        &self,
        inode: InodeId,
        offset: u64,
        length: u64,
        mode: i32,
        caller: Caller,
    ) -> Result<()> {
        self.writable()?;
        let keep_size = mode & libc::FALLOC_FL_KEEP_SIZE != 0;
        let zeroing = libc::FALLOC_FL_PUNCH_HOLE | libc::FALLOC_FL_ZERO_RANGE;
        if mode & !(libc::FALLOC_FL_KEEP_SIZE | zeroing) != 0 {
            return Err(Errno::from_i32(libc::EOPNOTSUPP));
        }
        if mode & zeroing != 0 {
            if mode & libc::FALLOC_FL_PUNCH_HOLE != 0 && !keep_size {
                return Err(Errno::EINVAL);
            }
            return self
                .client
                .zero_range(inode, offset, length, keep_size, caller)
                .await
                .map_err(errno);
        }
        let end = offset
            .checked_add(length)
            .ok_or(Errno::from_i32(libc::EFBIG))?;
        let attr = self.client.getattr(inode).await.map_err(errno)?;
        if keep_size || end <= attr.size {
            return Ok(());
        }
        let grow = SetAttr {
            size: Some(end),
            ..Default::default()
        };
        self.client
            .setattr(inode, grow, caller)
            .await
            .map_err(errno)?;
        Ok(())
    }

    /// Makes the metadata durable (fsync on a directory).
    pub async fn fsyncdir(&self) -> Result<()> {
        self.client.sync_metadata().await.map_err(errno)
    }

    /// The page of the listing of directory `inode` (open as `fh`) that holds the names after
    /// cookie `after`: the handle's kept page when it can answer, else a new one from the
    /// master, with the entries' attributes when `with_attrs` (READDIRPLUS). Files a page with
    /// attributes shows without extended attributes are noted as such.
    pub async fn readdir(
        &self,
        inode: InodeId,
        fh: u64,
        after: u64,
        with_attrs: bool,
    ) -> Result<Arc<Page>> {
        let changes = self.client.master.changes();
        if let Some(page) = self.open_dirs.page_for(fh, after, with_attrs, changes) {
            return Ok(page);
        }
        let fetched = std::time::Instant::now();
        let entries: Vec<Listed> = if with_attrs {
            let entries = self.client.readdir_plus(inode, after, DIR_PAGE).await;
            let entries = entries.map_err(errno)?;
            // Not when an attribute was set through this mount while the page was on its way:
            // the page may predate it.
            if self.client.master.changes() == changes {
                for e in entries.iter().filter(|e| !e.has_xattrs) {
                    self.absent_xattrs.note_none_since(e.entry.inode, fetched);
                }
            }
            entries
                .into_iter()
                .map(|e| Listed {
                    entry: e.entry,
                    attr: Some(e.attr),
                })
                .collect()
        } else {
            let entries = self.client.readdir(inode, after, DIR_PAGE).await;
            entries
                .map_err(errno)?
                .into_iter()
                .map(|entry| Listed { entry, attr: None })
                .collect()
        };
        let page = Arc::new(Page::new(
            after,
            entries,
            DIR_PAGE as usize,
            with_attrs,
            (fetched, changes),
        ));
        self.open_dirs.keep(fh, page.clone());
        Ok(page)
    }

    /// Space and inode counts.
    pub async fn statfs(&self) -> Result<FsStats> {
        self.client.statfs().await.map_err(errno)
    }

    /// Flushes every open writer (before unmounting).
    pub async fn flush_all(&self) {
        for w in self.handles.writers() {
            if let Err(status) = w.flush().await {
                tracing::warn!(%status, "buffered writes failed while unmounting");
            }
        }
    }
}
