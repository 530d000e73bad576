//! Files known to have no `security.capability` attribute. The kernel asks a FUSE filesystem for
//! that attribute before every `write(2)` (a write must drop file capabilities), which would be
//! a master round trip per write. A file this mount just created, or found to have none, is
//! answered at once for as long as the kernel may cache attributes; a change of the file's
//! attributes through this mount drops it.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use elkfs_proto::InodeId;

/// The attribute's name.
pub const NAME: &[u8] = b"security.capability";

/// Entries kept at most; more are dropped (they are only an optimisation).
const MAX_ENTRIES: usize = 65_536;

/// Files found without `security.capability`, and when.
pub struct NoCapabilities {
    entries: Mutex<HashMap<InodeId, Instant>>,
    ttl: Duration,
}

impl NoCapabilities {
    /// An empty set whose entries answer for `ttl`.
    pub fn new(ttl: Duration) -> NoCapabilities {
        NoCapabilities {
            entries: Mutex::new(HashMap::new()),
            ttl,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<InodeId, Instant>> {
        self.entries.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// `inode` has no `security.capability` now (it was just created, or the master said so).
    pub fn note(&self, inode: InodeId) {
        if self.ttl.is_zero() {
            return;
        }
        let mut entries = self.lock();
        if entries.len() >= MAX_ENTRIES {
            let ttl = self.ttl;
            entries.retain(|_, at| at.elapsed() < ttl);
            if entries.len() >= MAX_ENTRIES {
                entries.clear();
            }
        }
        entries.insert(inode, Instant::now());
    }

    /// Whether `inode` was found without the attribute less than the time-to-live ago.
    pub fn known(&self, inode: InodeId) -> bool {
        self.lock()
            .get(&inode)
            .is_some_and(|at| at.elapsed() < self.ttl)
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
    fn known_until_forgotten_or_stale() {
        let known = NoCapabilities::new(Duration::from_secs(60));
        assert!(!known.known(InodeId(5)));
        known.note(InodeId(5));
        assert!(known.known(InodeId(5)));
        assert!(known.known(InodeId(5)), "an entry answers more than once");
        known.forget(InodeId(5));
        assert!(!known.known(InodeId(5)));
        let short = NoCapabilities::new(Duration::from_millis(1));
        short.note(InodeId(6));
        std::thread::sleep(Duration::from_millis(5));
        assert!(!short.known(InodeId(6)));
        let off = NoCapabilities::new(Duration::ZERO);
        off.note(InodeId(7));
        assert!(!off.known(InodeId(7)));
    }
}
