//! Attributes the master sent along with the reply to another request: a directory's after a
//! change made in it (a create, link, unlink, ...), a file's when it was opened without writing.
//! The kernel forgets those attributes right then (after a change in a directory; on an open,
//! because the mount tells it to, for close-to-open consistency) and asks for them before the
//! next permission check or read; answering that one question from the reply saves a round trip
//! to the master. Each entry answers at most once and only for a short while (no longer than the
//! kernel itself may cache attributes), and anything else this client does that may change the
//! inode drops it.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use elkfs_proto::InodeId;
use elkfs_proto::types::{Attr, eattr};

/// Entries kept at most; more are dropped (they are only an optimisation).
const MAX_ENTRIES: usize = 4096;

/// Attributes just sent by the master along with another reply, by inode.
pub struct FreshAttrs {
    entries: Mutex<HashMap<InodeId, (Attr, Instant)>>,
    ttl: Duration,
}

impl FreshAttrs {
    /// An empty set whose entries answer for `ttl` after they arrive.
    pub fn new(ttl: Duration) -> FreshAttrs {
        FreshAttrs {
            entries: Mutex::new(HashMap::new()),
            ttl,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<InodeId, (Attr, Instant)>> {
        self.entries.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Remembers an inode's attributes as the master just sent them (not for one whose
    /// attributes must never be cached).
    pub fn put(&self, attr: Attr) {
        if attr.eattrs & eattr::NOATTRCACHE != 0 || self.ttl.is_zero() {
            return;
        }
        let mut entries = self.lock();
        if entries.len() >= MAX_ENTRIES {
            entries.clear();
        }
        entries.insert(attr.inode, (attr, Instant::now()));
    }

    /// The attributes of `inode` if they arrived less than the time-to-live ago; they answer
    /// only this once.
    pub fn take(&self, inode: InodeId) -> Option<Attr> {
        let (attr, at) = self.lock().remove(&inode)?;
        (at.elapsed() < self.ttl).then_some(attr)
    }

    /// Drops what is known of `inode` (this client is changing it another way).
    pub fn forget(&self, inode: InodeId) {
        self.lock().remove(&inode);
    }

    /// Drops everything (a directory is being removed or replaced, and which one is not known
    /// here: its attributes must not answer for it afterwards).
    pub fn forget_all(&self) {
        self.lock().clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_attrs::dir;

    #[test]
    fn an_entry_answers_once() {
        let fresh = FreshAttrs::new(Duration::from_secs(60));
        fresh.put(dir(5, 0));
        assert_eq!(fresh.take(InodeId(5)), Some(dir(5, 0)));
        assert_eq!(fresh.take(InodeId(5)), None);
    }

    #[test]
    fn forgotten_stale_and_uncacheable_entries_do_not_answer() {
        let fresh = FreshAttrs::new(Duration::from_secs(60));
        fresh.put(dir(5, 0));
        fresh.forget(InodeId(5));
        assert_eq!(fresh.take(InodeId(5)), None);
        fresh.put(dir(6, eattr::NOATTRCACHE));
        assert_eq!(fresh.take(InodeId(6)), None);
        let stale = FreshAttrs::new(Duration::from_millis(1));
        stale.put(dir(7, 0));
        std::thread::sleep(Duration::from_millis(5));
        assert_eq!(stale.take(InodeId(7)), None);
        fresh.put(dir(9, 0));
        fresh.forget_all();
        assert_eq!(fresh.take(InodeId(9)), None);
        let off = FreshAttrs::new(Duration::ZERO);
        off.put(dir(8, 0));
        assert_eq!(off.take(InodeId(8)), None);
    }
}
