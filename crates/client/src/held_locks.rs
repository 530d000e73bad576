//! The byte-range locks this client holds, as the master granted them: closing a file releases
//! its owner's locks only when there are some, and after a reconnect the client claims them all
//! for its new session (the master keeps a vanished session's locks for a while, and forgets
//! them all when it restarts).

use std::collections::{HashMap, HashSet};
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};

use elkfs_proto::InodeId;
use elkfs_proto::lock_ranges::after_request;
use elkfs_proto::master::{Lock, LockKind};

/// Every lock held through this client, by file and owner. The copy follows the master's
/// answers in the order they arrive, so two requests of one owner racing each other, or a
/// reconnect between a grant and its recording, can leave it slightly off the master's; the
/// owner's close releases everything at the master all the same.
#[derive(Default)]
pub struct HeldLocks {
    held: Mutex<HashMap<(InodeId, u64), Vec<Lock>>>,
    /// Whether any lock was ever granted through this client: the master then counts it among
    /// the clients to wait for after a restart, until it reconnects and claims.
    ever_granted: AtomicBool,
    /// (file, owner) pairs that lost locks after a reconnect and have not been told yet.
    untold: Mutex<HashSet<(InodeId, u64)>>,
}

impl HeldLocks {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<(InodeId, u64), Vec<Lock>>> {
        self.held.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Records a lock request the master granted (a lock, a change, or an unlock).
    pub fn granted(&self, inode: InodeId, lock: Lock) {
        if lock.kind != LockKind::Unlock {
            self.ever_granted.store(true, Ordering::Relaxed);
        }
        let mut held = self.lock();
        let owned = held.entry((inode, lock.owner)).or_default();
        *owned = after_request(std::mem::take(owned), lock);
    }

    /// Whether `owner` may hold locks on `inode`: it was granted one since its last release
    /// (kept even when unlocks seem to have emptied it, in case the master applied them in
    /// another order), so that closing releases them at the master.
    pub fn holds(&self, inode: InodeId, owner: u64) -> bool {
        self.lock().contains_key(&(inode, owner))
    }

    /// Whether a lock was ever granted through this client (the master may wait for it to
    /// reconnect after a restart before granting locks to others).
    pub fn ever_granted(&self) -> bool {
        self.ever_granted.load(Ordering::Relaxed)
    }

    /// Every (file, owner) that may hold locks.
    pub fn owners(&self) -> Vec<(InodeId, u64)> {
        self.lock().keys().copied().collect()
    }

    /// Forgets `owner`'s locks on `inode` (they are being released); whether it had any.
    pub fn release(&self, inode: InodeId, owner: u64) -> bool {
        self.lock().remove(&(inode, owner)).is_some()
    }

    /// Every lock, to claim for a new session.
    pub fn all(&self) -> Vec<(InodeId, Lock)> {
        let held = self.lock();
        held.iter()
            .flat_map(|(&(inode, _), locks)| locks.iter().map(move |&l| (inode, l)))
            .collect()
    }

    /// Whether `owner` lost locks on `inode` since it was last told so; it is told now (the
    /// caller fails the owner's request with EIO, as NFS does).
    pub fn tell_lost(&self, inode: InodeId, owner: u64) -> bool {
        self.untold
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&(inode, owner))
    }

    /// Forgets locks the master could not give back after a reconnect; their owners are told at
    /// their next lock request or close on the file ([`HeldLocks::tell_lost`]). An owner that
    /// released its locks on the file meanwhile (its close already answered) is not told: the
    /// kernel may have given its id to another owner since.
    pub fn lost(&self, lost: &[(InodeId, Lock)]) {
        let mut held = self.lock();
        let mut untold = self.untold.lock().unwrap_or_else(|p| p.into_inner());
        for &(inode, lock) in lost {
            tracing::error!(
                %inode,
                owner = lock.owner,
                start = lock.start,
                end = lock.end,
                "a lock held before the connection to the master was lost is gone: another client took it meanwhile"
            );
            let Some(owned) = held.get_mut(&(inode, lock.owner)) else {
                continue;
            };
            let unlock = Lock {
                kind: LockKind::Unlock,
                ..lock
            };
            *owned = after_request(std::mem::take(owned), unlock);
            untold.insert((inode, lock.owner));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lock(kind: LockKind, start: u64, end: u64, owner: u64) -> Lock {
        Lock {
            kind,
            start,
            end,
            owner,
            pid: 9,
        }
    }

    #[test]
    fn granted_locks_are_kept_by_owner_and_range_until_released_or_lost() {
        let h = HeldLocks::default();
        let f = InodeId(3);
        h.granted(f, lock(LockKind::Write, 0, 99, 1));
        h.granted(f, lock(LockKind::Read, 0, 0, 2));
        h.granted(f, lock(LockKind::Unlock, 10, 19, 1));
        let mut all = h.all();
        all.sort_by_key(|(_, l)| (l.owner, l.start));
        assert_eq!(
            all,
            vec![
                (f, lock(LockKind::Write, 0, 9, 1)),
                (f, lock(LockKind::Write, 20, 99, 1)),
                (f, lock(LockKind::Read, 0, 0, 2)),
            ]
        );
        h.lost(&[(f, lock(LockKind::Read, 0, 0, 2))]);
        assert!(h.holds(f, 2), "released at close all the same");
        assert_eq!(h.all().len(), 2);
        assert!(h.release(f, 1));
        assert!(!h.holds(f, 1));
        h.granted(f, lock(LockKind::Unlock, 0, u64::MAX, 1));
        assert!(h.all().is_empty() && h.holds(f, 1));
        assert_eq!(h.owners().len(), 2);
    }

    #[test]
    fn a_client_ever_granted_a_lock_says_so_after_releasing_it() {
        let h = HeldLocks::default();
        let f = InodeId(3);
        h.granted(f, lock(LockKind::Unlock, 0, 9, 1));
        assert!(!h.ever_granted(), "an unlock is no grant");
        h.granted(f, lock(LockKind::Read, 0, 9, 1));
        h.release(f, 1);
        assert!(h.owners().is_empty());
        assert!(h.ever_granted());
    }

    #[test]
    fn an_owner_that_lost_locks_is_told_once() {
        let h = HeldLocks::default();
        let f = InodeId(3);
        h.granted(f, lock(LockKind::Write, 0, 9, 1));
        h.granted(f, lock(LockKind::Write, 20, 29, 2));
        h.lost(&[(f, lock(LockKind::Write, 0, 9, 1))]);
        assert!(!h.tell_lost(f, 2), "owner 2 lost nothing");
        assert!(!h.tell_lost(InodeId(4), 1), "nor on another file");
        assert!(h.tell_lost(f, 1));
        assert!(!h.tell_lost(f, 1), "told already");
        assert!(h.holds(f, 1), "its close still goes to the master");

        h.release(f, 2);
        h.lost(&[(f, lock(LockKind::Write, 20, 29, 2))]);
        assert!(
            !h.tell_lost(f, 2),
            "an owner that released its locks meanwhile is not told"
        );
        assert!(!h.holds(f, 2));
    }
}
