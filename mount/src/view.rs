//! How inodes look to the kernel: numbers mapped for subdirectory mounts, attributes shaped by
//! the MooseFS-style eattrs (`noowner` shows the caller as owner; `noattrcache` and
//! `noentrycache` turn the kernel's caches off; `nodatacache` bypasses the page cache), and how
//! long the kernel may cache what it is told.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use elkfs_proto::InodeId;
use elkfs_proto::types::{Attr, Caller, eattr};
use fuser::{FileAttr, Generation, ReplyAttr, ReplyEntry};

use crate::attr::{InodeMap, file_attr};

/// The kernel-facing view of the mounted tree.
pub struct View {
    /// Inode numbers as the kernel knows them.
    pub map: InodeMap,
    ttl: Duration,
    /// Eattrs of inodes that have any, learned from every attribute passed to the kernel.
    flags: Mutex<HashMap<InodeId, u8>>,
}

impl View {
    /// A view with the given inode map and cache time.
    pub fn new(map: InodeMap, ttl: Duration) -> View {
        View {
            map,
            ttl,
            flags: Mutex::new(HashMap::new()),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<InodeId, u8>> {
        self.flags.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn remember(&self, attr: &Attr) {
        let mut flags = self.lock();
        if attr.eattrs == 0 {
            flags.remove(&attr.inode);
        } else {
            flags.insert(attr.inode, attr.eattrs);
        }
    }

    fn flags_of(&self, inode: InodeId) -> u8 {
        self.lock().get(&inode).copied().unwrap_or(0)
    }

    /// The attributes to give the kernel for `caller`, and how long it may keep them.
    pub fn attr(&self, attr: &Attr, caller: Caller) -> (FileAttr, Duration) {
        self.remember(attr);
        let mut shown = file_attr(&self.map, attr);
        let mut ttl = self.ttl;
        if attr.eattrs & eattr::NOOWNER != 0 {
            // Every user but root sees it as their own, so nothing may be cached across users.
            ttl = Duration::ZERO;
            if caller.uid != 0 {
                shown.uid = caller.uid;
                shown.gid = caller.gid;
            }
        }
        if attr.eattrs & eattr::NOATTRCACHE != 0 {
            ttl = Duration::ZERO;
        }
        (shown, ttl)
    }

    /// How long the kernel may remember names found in `parent`.
    pub fn entry_ttl(&self, parent: InodeId) -> Duration {
        if self.flags_of(parent) & eattr::NOENTRYCACHE != 0 {
            Duration::ZERO
        } else {
            self.ttl
        }
    }

    /// Whether reads and writes of `inode` must bypass the kernel's page cache.
    pub fn uncached_data(&self, inode: InodeId) -> bool {
        self.flags_of(inode) & eattr::NODATACACHE != 0
    }

    /// Answers a lookup-like request (lookup, create, mkdir, ...) with a new entry of `parent`.
    pub fn reply_entry(
        &self,
        reply: ReplyEntry,
        parent: InodeId,
        caller: Caller,
        result: Result<Attr, fuser::Errno>,
    ) {
        match result {
            Ok(a) => self.reply_aged_entry(reply, parent, caller, &a, Duration::ZERO),
            Err(e) => reply.error(e),
        }
    }

    /// Answers a lookup with an entry of `parent` the master sent `age` ago: the kernel keeps
    /// it only until it would have had it been fetched then.
    pub fn reply_aged_entry(
        &self,
        reply: ReplyEntry,
        parent: InodeId,
        caller: Caller,
        attr: &Attr,
        age: Duration,
    ) {
        let (shown, attr_ttl) = self.attr(attr, caller);
        let entry_ttl = self.entry_ttl(parent);
        reply.entry_with_ttls(
            &attr_ttl.saturating_sub(age),
            &entry_ttl.saturating_sub(age),
            &shown,
            Generation(0),
        );
    }

    /// Answers a getattr-like request.
    pub fn reply_attr(&self, reply: ReplyAttr, caller: Caller, result: Result<Attr, fuser::Errno>) {
        match result {
            Ok(a) => {
                let (shown, ttl) = self.attr(&a, caller);
                reply.attr(&ttl, &shown);
            }
            Err(e) => reply.error(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use elkfs_proto::types::{FileKind, Timestamp};

    fn attr(eattrs: u8) -> Attr {
        let t = Timestamp { secs: 0, nanos: 0 };
        Attr {
            inode: InodeId(5),
            kind: FileKind::File,
            mode: 0o600,
            nlink: 1,
            uid: 10,
            gid: 10,
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

    #[test]
    fn noowner_shows_the_caller_as_owner_and_disables_caching() {
        let view = View::new(InodeMap::new(InodeId::ROOT), Duration::from_secs(1));
        let alice = Caller {
            uid: 1000,
            gid: 100,
        };
        let (shown, ttl) = view.attr(&attr(eattr::NOOWNER), alice);
        assert_eq!((shown.uid, shown.gid, ttl), (1000, 100, Duration::ZERO));
        let (shown, ttl) = view.attr(&attr(0), alice);
        assert_eq!((shown.uid, ttl), (10, Duration::from_secs(1)));
    }

    #[test]
    fn flags_are_remembered_for_entries_and_data() {
        let view = View::new(InodeMap::new(InodeId::ROOT), Duration::from_secs(1));
        let root = Caller { uid: 0, gid: 0 };
        view.attr(&attr(eattr::NOENTRYCACHE | eattr::NODATACACHE), root);
        assert_eq!(view.entry_ttl(InodeId(5)), Duration::ZERO);
        assert!(view.uncached_data(InodeId(5)));
        view.attr(&attr(0), root);
        assert!(!view.uncached_data(InodeId(5)));
    }
}
