//! Extended attributes this mount knows a file does not have, so that it answers the kernel's
//! questions for them itself instead of asking the master:
//! - `security.capability`, which the kernel asks for before every `write(2)` (a write must drop
//!   file capabilities): known absent for a file this mount just created or found without it;
//! - any attribute of a file listed by READDIRPLUS with none at all: `ls -l` asks every file for
//!   its ACL and SELinux label.
//!
//! Knowledge lasts as long as the kernel may cache attributes, counted from when the master
//! said so; a change of the file's extended attributes through this mount drops it.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use elkfs_proto::InodeId;

/// The attribute the kernel asks for before every write.
pub const CAPABILITY: &[u8] = b"security.capability";

/// Entries kept at most; more are dropped (they are only an optimisation).
const MAX_ENTRIES: usize = 65_536;

/// What is known to be absent from one file.
#[derive(Clone, Copy)]
struct Absent {
    /// When the master's answer that it is absent was current.
    since: Instant,
    /// No extended attribute at all, not only `security.capability`.
    all: bool,
}

/// Files known to lack `security.capability` or every extended attribute, and since when.
pub struct AbsentXattrs {
    entries: Mutex<HashMap<InodeId, Absent>>,
    ttl: Duration,
}

impl AbsentXattrs {
    /// An empty set whose entries answer for `ttl`.
    pub fn new(ttl: Duration) -> AbsentXattrs {
        AbsentXattrs {
            entries: Mutex::new(HashMap::new()),
            ttl,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<InodeId, Absent>> {
        self.entries.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// `inode` has no `security.capability` now (it was just created, or the master said so).
    pub fn note_no_capability(&self, inode: InodeId) {
        self.note(inode, Instant::now(), false);
    }

    /// `inode` had no extended attribute at all at `since` (as a listing fetched then said).
    pub fn note_none_since(&self, inode: InodeId, since: Instant) {
        self.note(inode, since, true);
    }

    fn note(&self, inode: InodeId, since: Instant, all: bool) {
        if self.ttl.is_zero() || since.elapsed() >= self.ttl {
            return;
        }
        let mut entries = self.lock();
        if entries.len() >= MAX_ENTRIES {
            let ttl = self.ttl;
            entries.retain(|_, a| a.since.elapsed() < ttl);
            // Mostly fresh: start again, so the next scan is at least half the map away
            // instead of at the next note.
            if entries.len() >= MAX_ENTRIES / 2 {
                entries.clear();
            }
        }
        entries.insert(inode, Absent { since, all });
    }

    /// Whether `inode` is known, now, to lack the attribute `name`.
    pub fn lacks(&self, inode: InodeId, name: &[u8]) -> bool {
        self.fresh(inode)
            .is_some_and(|a| a.all || name == CAPABILITY)
    }

    /// Whether `inode` is known, now, to have no extended attribute at all.
    pub fn lacks_all(&self, inode: InodeId) -> bool {
        self.fresh(inode).is_some_and(|a| a.all)
    }

    fn fresh(&self, inode: InodeId) -> Option<Absent> {
        self.lock()
            .get(&inode)
            .copied()
            .filter(|a| a.since.elapsed() < self.ttl)
    }

    /// Drops what is known of `inode` (its extended attributes are being changed).
    pub fn forget(&self, inode: InodeId) {
        self.lock().remove(&inode);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_capability_is_known_until_forgotten_or_stale() {
        let known = AbsentXattrs::new(Duration::from_secs(60));
        assert!(!known.lacks(InodeId(5), CAPABILITY));
        known.note_no_capability(InodeId(5));
        assert!(known.lacks(InodeId(5), CAPABILITY));
        assert!(
            known.lacks(InodeId(5), CAPABILITY),
            "an entry answers more than once"
        );
        assert!(!known.lacks(InodeId(5), b"system.posix_acl_access"));
        assert!(!known.lacks_all(InodeId(5)));
        known.forget(InodeId(5));
        assert!(!known.lacks(InodeId(5), CAPABILITY));
        let short = AbsentXattrs::new(Duration::from_millis(1));
        short.note_no_capability(InodeId(6));
        std::thread::sleep(Duration::from_millis(5));
        assert!(!short.lacks(InodeId(6), CAPABILITY));
        let off = AbsentXattrs::new(Duration::ZERO);
        off.note_no_capability(InodeId(7));
        assert!(!off.lacks(InodeId(7), CAPABILITY));
    }

    #[test]
    fn a_file_without_any_lacks_every_name_for_the_rest_of_the_time_to_live() {
        let known = AbsentXattrs::new(Duration::from_millis(200));
        known.note_none_since(InodeId(8), Instant::now());
        assert!(known.lacks(InodeId(8), b"security.selinux"));
        assert!(known.lacks(InodeId(8), CAPABILITY));
        assert!(known.lacks_all(InodeId(8)));
        // Counted from when the listing was current, not from when it was noted.
        let old = Instant::now() - Duration::from_millis(150);
        known.note_none_since(InodeId(9), old);
        assert!(known.lacks_all(InodeId(9)));
        std::thread::sleep(Duration::from_millis(60));
        assert!(!known.lacks_all(InodeId(9)));
        assert!(known.lacks_all(InodeId(8)));
        let stale = Instant::now() - Duration::from_millis(300);
        known.note_none_since(InodeId(10), stale);
        assert!(!known.lacks_all(InodeId(10)));
    }
}
