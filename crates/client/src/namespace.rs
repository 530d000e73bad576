//! Namespace operations as typed calls on the master session.

use elkfs_proto::master::{Change, Lock, LockKind, MasterReply, MasterRequest, TreeAttr};
use elkfs_proto::types::{Attr, Caller, DirEntry, DirEntryPlus, FileKind, FsStats, SetAttr};
use elkfs_proto::{InodeId, Status};

use std::time::Duration;

use crate::Client;
use crate::lookahead::FetchStart;

fn attr(reply: MasterReply) -> Result<Attr, Status> {
    match reply {
        MasterReply::Attr(a) => Ok(a),
        _ => Err(Status::Protocol),
    }
}

fn done(reply: MasterReply) -> Result<(), Status> {
    match reply {
        MasterReply::Done | MasterReply::Attr(_) => Ok(()),
        _ => Err(Status::Protocol),
    }
}

impl Client {
    /// The new entry's attributes from the reply to a request that made a name; the
    /// directory's attributes, when the master sent them along, are kept for the next getattr.
    fn made(&self, reply: MasterReply) -> Result<Attr, Status> {
        match reply {
            MasterReply::Entry { attr, parent } | MasterReply::LeasedDir { attr, parent } => {
                self.fresh.put(parent);
                Ok(attr)
            }
            other => attr(other),
        }
    }

    /// The same for a request that removed a name.
    fn removed(&self, reply: MasterReply) -> Result<(), Status> {
        match reply {
            MasterReply::Removed { parent } => {
                self.fresh.put(parent);
                Ok(())
            }
            other => done(other),
        }
    }

    /// Finds `name` in `parent`.
    pub async fn lookup(&self, parent: InodeId, name: &[u8]) -> Result<Attr, Status> {
        if self.master.knows_absent(parent, name) {
            return Err(Status::NotFound);
        }
        let request = MasterRequest::Lookup {
            parent,
            name: name.to_vec(),
        };
        Ok(self.with_local_writes(attr(self.master.request(&request).await?)?))
    }

    /// `name` in `parent` from the names looked up ahead (see `lookahead.rs`), with how long
    /// ago the master sent it, without waiting for anything; `None` when the master must be
    /// asked.
    pub fn lookup_now(&self, parent: InodeId, name: &[u8]) -> Option<(Attr, Duration)> {
        let changes = self.master.recent_changes();
        let count = changes.count();
        let (attr, age) = self.lookahead.answer(parent, name, changes)?;
        let attr = self.with_local_writes(attr);
        // A write that ended between the two looks (reported, then no longer busy) is neither
        // in the window nor counted by `with_local_writes`: ask the master then.
        (changes.count() == count).then_some((attr, age))
    }

    /// Like [`Client::lookup`], for a caller that may keep the answer (the kernel, for the
    /// attribute cache time): after a few lookups in increasing order in `parent`, the names
    /// that follow come along, and [`Client::lookup_now`] answers them.
    pub async fn lookup_in_order(&self, parent: InodeId, name: &[u8]) -> Result<Attr, Status> {
        if self.master.knows_absent(parent, name) {
            return Err(Status::NotFound);
        }
        let Some(asked) = self.lookahead.missed(parent, name) else {
            let found = self.lookup(parent, name).await;
            if found.is_ok() {
                self.lookahead.found(parent);
            }
            return found;
        };
        let changes = self.master.recent_changes();
        let start = FetchStart::now(changes);
        let request = MasterRequest::LookupAhead {
            parent,
            name: name.to_vec(),
            limit: asked,
        };
        let entries = match self.master.request(&request).await? {
            MasterReply::EntriesPlus(e) => e,
            _ => return Err(Status::Protocol),
        };
        self.lookahead
            .fetched(parent, start, asked, &entries, changes);
        match entries.into_iter().next() {
            Some(first) if first.entry.name == name => Ok(self.with_local_writes(first.attr)),
            _ => Err(Status::NotFound),
        }
    }

    /// `attr` as the master sent it, with the length this client has written to the file but
    /// not yet reported (the kernel must not be told a shorter file than it wrote).
    pub fn with_local_writes(&self, mut attr: Attr) -> Attr {
        if let Some(w) = self.writer_if_open(attr.inode)
            && w.is_busy()
        {
            attr.size = attr.size.max(w.written_end());
        }
        attr
    }

    /// Attributes of `inode`, with the length this client has written but not yet reported.
    pub async fn getattr(&self, inode: InodeId) -> Result<Attr, Status> {
        if let Some(a) = self.getattr_now(inode) {
            return Ok(a);
        }
        let a = attr(
            self.master
                .request(&MasterRequest::GetAttr { inode })
                .await?,
        )?;
        Ok(self.with_local_writes(a))
    }

    /// [`Client::getattr`]'s answer when the master just sent the attributes with another reply
    /// (see `fresh_attrs.rs`), without waiting for anything; `None` when it must be asked (also
    /// while this client has the file open for writing: its writes change them).
    pub fn getattr_now(&self, inode: InodeId) -> Option<Attr> {
        if self.writer_if_open(inode).is_some() {
            self.fresh.forget(inode);
            return None;
        }
        self.fresh.take(inode)
    }

    /// Registers an open of `inode` with the master (the first of this client's): cached chunk
    /// locations are dropped (close-to-open consistency), and what the master sends back (where
    /// the first chunk is and, for an open that does not write, the attributes) answers the
    /// first read and the kernel's next getattr without asking again. Returns the file's
    /// attributes when the master answered (the first open of it here).
    pub async fn open(&self, inode: InodeId, writes: bool) -> Result<Option<Attr>, Status> {
        self.locations.forget_file(inode);
        match self.master.opened(inode).await? {
            Some(MasterReply::Opened { attr, first_chunk }) => {
                if !writes {
                    self.fresh.put(attr.clone());
                }
                if let Some(location) = first_chunk {
                    self.locations.put(inode, 0, location);
                }
                Ok(Some(attr))
            }
            Some(other) => done(other).map(|()| None),
            None => Ok(None),
        }
    }

    /// Changes attributes; a size change first flushes this client's buffered writes.
    pub async fn setattr(
        &self,
        inode: InodeId,
        changes: SetAttr,
        caller: Caller,
    ) -> Result<Attr, Status> {
        // Buffered writes happened before this change and must not land after it (their length
        // and mtime would override what is being set).
        let writer = self.writer_if_open(inode);
        if let Some(w) = &writer {
            w.flush().await?;
        }
        let size = changes.size;
        self.fresh.forget(inode);
        let request = MasterRequest::SetAttr {
            inode,
            changes,
            caller,
        };
        let a = attr(self.master.request(&request).await?)?;
        if let (Some(size), Some(w)) = (size, &writer) {
            w.set_length(size);
        }
        if size.is_some() {
            self.forget_locations(inode);
        }
        Ok(a)
    }

    /// Creates a regular file, fifo, socket or device node (`umask` applies unless the
    /// directory has a default ACL).
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
    ) -> Result<Attr, Status> {
        let request = MasterRequest::Mknod {
            parent,
            name: name.to_vec(),
            kind,
            mode,
            umask,
            rdev,
            caller,
            open: false,
        };
        self.made(self.master.request(&request).await?)
    }

    /// Creates a regular file and opens it for this client, in one request.
    pub async fn create_open(
        &self,
        parent: InodeId,
        name: &[u8],
        mode: u32,
        umask: u32,
        caller: Caller,
    ) -> Result<Attr, Status> {
        let request = MasterRequest::Mknod {
            parent,
            name: name.to_vec(),
            kind: FileKind::File,
            mode,
            umask,
            rdev: 0,
            caller,
            open: true,
        };
        let (reply, answered_in) = self.master.request_answered_in(&request).await;
        let attr = self.made(reply?)?;
        self.master.opened_by_create(attr.inode, answered_in).await;
        Ok(attr)
    }

    /// Creates a directory (`umask` applies unless the parent has a default ACL).
    pub async fn mkdir(
        &self,
        parent: InodeId,
        name: &[u8],
        mode: u32,
        umask: u32,
        caller: Caller,
    ) -> Result<Attr, Status> {
        let request = MasterRequest::Mkdir {
            parent,
            name: name.to_vec(),
            mode,
            umask,
            caller,
        };
        self.made(self.master.request(&request).await?)
    }

    /// Creates a symbolic link.
    pub async fn symlink(
        &self,
        parent: InodeId,
        name: &[u8],
        target: &[u8],
        caller: Caller,
    ) -> Result<Attr, Status> {
        let request = MasterRequest::Symlink {
            parent,
            name: name.to_vec(),
            target: target.to_vec(),
            caller,
        };
        self.made(self.master.request(&request).await?)
    }

    /// Adds a hard link.
    pub async fn link(&self, inode: InodeId, parent: InodeId, name: &[u8]) -> Result<Attr, Status> {
        self.fresh.forget(inode);
        let request = MasterRequest::Link {
            inode,
            parent,
            name: name.to_vec(),
        };
        self.made(self.master.request(&request).await?)
    }

    /// Reads a symbolic link.
    pub async fn readlink(&self, inode: InodeId) -> Result<Vec<u8>, Status> {
        match self
            .master
            .request(&MasterRequest::ReadLink { inode })
            .await?
        {
            MasterReply::Target(t) => Ok(t),
            _ => Err(Status::Protocol),
        }
    }

    /// Removes a file name (after this client's closes have reached the master, so a file
    /// closed just before goes to the trash, not to the unlinked-but-open files).
    pub async fn unlink(&self, parent: InodeId, name: &[u8]) -> Result<(), Status> {
        self.master.closes_settled().await;
        // The file's link count changes; which inode it is, is not known here.
        self.fresh.forget_all();
        let request = MasterRequest::Unlink {
            parent,
            name: name.to_vec(),
        };
        self.removed(self.master.request(&request).await?)
    }

    /// Removes an empty directory.
    pub async fn rmdir(&self, parent: InodeId, name: &[u8]) -> Result<(), Status> {
        self.fresh.forget_all();
        let request = MasterRequest::Rmdir {
            parent,
            name: name.to_vec(),
        };
        let reply = self.master.request(&request).await?;
        // The directory removed may have attributes kept (a change in it just before).
        self.fresh.forget_all();
        self.removed(reply)
    }

    /// Renames an entry (`flags`: `RENAME_NOREPLACE`, `RENAME_EXCHANGE`), after this client's
    /// closes have reached the master.
    pub async fn rename(
        &self,
        parent: InodeId,
        name: &[u8],
        new_parent: InodeId,
        new_name: &[u8],
        flags: u32,
    ) -> Result<(), Status> {
        // A name it replaces may be the last of a file this client just closed.
        self.master.closes_settled().await;
        self.fresh.forget_all();
        let request = MasterRequest::Rename {
            parent,
            name: name.to_vec(),
            new_parent,
            new_name: new_name.to_vec(),
            flags,
        };
        let reply = self.master.request(&request).await?;
        // It may have replaced a directory whose attributes are kept, or moved one (`..`).
        self.fresh.forget_all();
        done(reply)
    }

    /// A page of a directory listing after cookie `after`.
    pub async fn readdir(
        &self,
        inode: InodeId,
        after: u64,
        limit: u32,
    ) -> Result<Vec<DirEntry>, Status> {
        let request = MasterRequest::ReadDir {
            inode,
            after,
            limit,
        };
        match self.master.request(&request).await? {
            MasterReply::Entries(e) => Ok(e),
            _ => Err(Status::Protocol),
        }
    }

    /// A page of a directory listing after cookie `after`, with each entry's attributes.
    pub async fn readdir_plus(
        &self,
        inode: InodeId,
        after: u64,
        limit: u32,
    ) -> Result<Vec<DirEntryPlus>, Status> {
        let request = MasterRequest::ReadDirPlus {
            inode,
            after,
            limit,
        };
        match self.master.request(&request).await? {
            MasterReply::EntriesPlus(e) => Ok(e),
            _ => Err(Status::Protocol),
        }
    }

    /// Space and inode counts of the cluster.
    pub async fn statfs(&self) -> Result<FsStats, Status> {
        match self.master.request(&MasterRequest::StatFs).await? {
            MasterReply::Stats(s) => Ok(s),
            _ => Err(Status::Protocol),
        }
    }

    /// Makes the master's metadata durable (changelog fsynced).
    pub async fn sync_metadata(&self) -> Result<(), Status> {
        done(self.master.request(&MasterRequest::Fsync).await?)
    }

    /// One extended attribute.
    pub async fn getxattr(&self, inode: InodeId, name: &[u8]) -> Result<Vec<u8>, Status> {
        let request = MasterRequest::GetXattr {
            inode,
            name: name.to_vec(),
        };
        match self.master.request(&request).await? {
            MasterReply::Xattr(v) => Ok(v),
            _ => Err(Status::Protocol),
        }
    }

    /// The names of an inode's extended attributes.
    pub async fn listxattr(&self, inode: InodeId) -> Result<Vec<Vec<u8>>, Status> {
        match self
            .master
            .request(&MasterRequest::ListXattr { inode })
            .await?
        {
            MasterReply::XattrNames(v) => Ok(v),
            _ => Err(Status::Protocol),
        }
    }

    /// Sets an extended attribute.
    pub async fn setxattr(
        &self,
        inode: InodeId,
        name: &[u8],
        value: &[u8],
        flags: u32,
    ) -> Result<(), Status> {
        let request = MasterRequest::SetXattr {
            inode,
            name: name.to_vec(),
            value: value.to_vec(),
            flags,
        };
        self.fresh.forget(inode);
        done(self.master.request(&request).await?)
    }

    /// Removes an extended attribute.
    pub async fn removexattr(&self, inode: InodeId, name: &[u8]) -> Result<(), Status> {
        let request = MasterRequest::RemoveXattr {
            inode,
            name: name.to_vec(),
        };
        self.fresh.forget(inode);
        done(self.master.request(&request).await?)
    }

    /// Takes, changes or releases a byte-range lock held across every mount.
    pub async fn set_lock(&self, inode: InodeId, lock: Lock, wait: bool) -> Result<(), Status> {
        // An owner that lost locks after a reconnect hears of it at its next request that takes
        // a lock (an unlock goes ahead: failing it would leave its other locks held).
        if lock.kind != LockKind::Unlock && self.master.locks.tell_lost(inode, lock.owner) {
            return Err(Status::Io);
        }
        done(
            self.master
                .request(&MasterRequest::SetLock { inode, lock, wait })
                .await?,
        )?;
        self.master.locks.granted(inode, lock);
        Ok(())
    }

    /// A lock that conflicts with `lock`, if any.
    pub async fn test_lock(&self, inode: InodeId, lock: Lock) -> Result<Option<Lock>, Status> {
        match self
            .master
            .request(&MasterRequest::TestLock { inode, lock })
            .await?
        {
            MasterReply::Conflict(c) => Ok(c),
            _ => Err(Status::Protocol),
        }
    }

    /// Whether `owner` holds locks on `inode` through this client (so closing must release them).
    pub fn holds_locks(&self, inode: InodeId, owner: u64) -> bool {
        self.master.locks.holds(inode, owner)
    }

    /// Releases every lock `owner` holds on `inode` (a no-op without a round trip when it holds
    /// none through this client). With `report_lost`, fails with `Io` if the owner lost locks
    /// there after a reconnect and has not been told yet (a close reports it; a release, whose
    /// answer reaches no process, passes `false` and only forgets it).
    pub async fn release_locks(
        &self,
        inode: InodeId,
        owner: u64,
        report_lost: bool,
    ) -> Result<(), Status> {
        let lost = self.master.locks.tell_lost(inode, owner) && report_lost;
        if self.master.locks.release(inode, owner) {
            done(
                self.master
                    .request(&MasterRequest::ReleaseLocks { inode, owner })
                    .await?,
            )?;
        }
        if lost { Err(Status::Io) } else { Ok(()) }
    }

    /// Changes goal, trash time or eattrs of an inode (or a whole tree); returns how many
    /// inodes changed, were already so, and were not the caller's to change.
    pub async fn change_tree(
        &self,
        inode: InodeId,
        attr: TreeAttr,
        change: Change,
        recursive: bool,
        caller: Caller,
    ) -> Result<(u64, u64, u64), Status> {
        // A recursive change reaches inodes below, whose attributes may be kept.
        self.fresh.forget_all();
        let request = MasterRequest::ChangeTree {
            inode,
            attr,
            change,
            recursive,
            caller,
        };
        match self.master.request(&request).await? {
            MasterReply::TreeChanged {
                changed,
                unchanged,
                denied,
            } => Ok((changed, unchanged, denied)),
            _ => Err(Status::Protocol),
        }
    }

    /// Sets the goal of an inode (or of a whole tree) as root; returns (changed, unchanged).
    pub async fn set_goal(
        &self,
        inode: InodeId,
        goal: u8,
        recursive: bool,
    ) -> Result<(u64, u64), Status> {
        let root = Caller { uid: 0, gid: 0 };
        let (changed, unchanged, _) = self
            .change_tree(
                inode,
                TreeAttr::Goal,
                Change::Set(goal as u64),
                recursive,
                root,
            )
            .await?;
        Ok((changed, unchanged))
    }

    /// Tells the master the inode was read (it keeps `relatime` access times).
    pub async fn access(&self, inode: InodeId) {
        self.fresh.forget(inode);
        if let Err(status) = self.master.request(&MasterRequest::Access { inode }).await {
            tracing::debug!(%inode, %status, "cannot record an access time");
        }
    }
}
