//! Byte-range locks (POSIX `fcntl` and BSD `flock`) held across every mount of the cluster.
//!
//! A lock belongs to a (session, owner) pair, the owner being what the kernel names it (a
//! process's file table, or an open file for `flock`). Taking a lock replaces the owner's locks
//! on the range, as POSIX says; waiters are woken whenever locks on the file change.
//!
//! The kernel's flag telling `flock` requests from `fcntl` ones does not reach us (fuser drops
//! it), so locks of one process (same session and pid) never conflict: that keeps a process's
//! `fcntl` and `flock` locks independent, as on Linux. The one difference left: two `flock`s on
//! two separate opens of a file in one process do not exclude each other here.

use std::collections::HashMap;
use std::sync::Mutex;

use elkfs_proto::master::{Lock, LockKind};
use elkfs_proto::{InodeId, SessionId, Status};
use tokio::sync::Notify;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Held {
    session: SessionId,
    lock: Lock,
}

impl Held {
    fn same_owner(&self, session: SessionId, owner: u64) -> bool {
        self.session == session && self.lock.owner == owner
    }
}

fn overlaps(a: &Lock, b: &Lock) -> bool {
    a.start <= b.end && b.start <= a.end
}

fn conflicts(held: &Held, session: SessionId, want: &Lock) -> bool {
    let same_process = held.session == session && held.lock.pid == want.pid && want.pid != 0;
    !held.same_owner(session, want.owner)
        && !same_process
        && overlaps(&held.lock, want)
        && (held.lock.kind == LockKind::Write || want.kind == LockKind::Write)
}

/// Every lock on every file.
#[derive(Default)]
pub struct LockTable {
    held: Mutex<HashMap<InodeId, Vec<Held>>>,
    changed: Notify,
}

impl LockTable {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<InodeId, Vec<Held>>> {
        self.held.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A lock that would keep `want` from being granted, if any.
    pub fn test(&self, inode: InodeId, session: SessionId, want: &Lock) -> Option<Lock> {
        let held = self.lock();
        held.get(&inode)?
            .iter()
            .find(|h| conflicts(h, session, want))
            .map(|h| h.lock)
    }

    /// Takes, changes or releases a lock; waits for conflicting locks to go when `wait`.
    pub async fn set(
        &self,
        inode: InodeId,
        session: SessionId,
        want: Lock,
        wait: bool,
    ) -> Result<(), Status> {
        if want.start > want.end {
            return Err(Status::Invalid);
        }
        loop {
            let changed = self.changed.notified();
            tokio::pin!(changed);
            changed.as_mut().enable();
            {
                let mut table = self.lock();
                let locks = table.entry(inode).or_default();
                let blocked = want.kind != LockKind::Unlock
                    && locks.iter().any(|h| conflicts(h, session, &want));
                if !blocked {
                    replace_range(locks, session, want);
                    if locks.is_empty() {
                        table.remove(&inode);
                    }
                    drop(table);
                    self.changed.notify_waiters();
                    return Ok(());
                }
                if !wait {
                    return Err(Status::Locked);
                }
            }
            changed.await;
        }
    }

    /// Releases every lock of one owner on one file.
    pub fn release_owner(&self, inode: InodeId, session: SessionId, owner: u64) {
        let mut table = self.lock();
        if let Some(locks) = table.get_mut(&inode) {
            locks.retain(|h| !h.same_owner(session, owner));
            if locks.is_empty() {
                table.remove(&inode);
            }
        }
        drop(table);
        self.changed.notify_waiters();
    }

    /// Releases every lock of a session that went away.
    pub fn release_session(&self, session: SessionId) {
        let mut table = self.lock();
        table.retain(|_, locks| {
            locks.retain(|h| h.session != session);
            !locks.is_empty()
        });
        drop(table);
        self.changed.notify_waiters();
    }
}

/// Removes the owner's locks on `want`'s range (splitting those that stick out), then adds
/// `want` unless it is an unlock, merging with the owner's adjacent locks of the same kind.
fn replace_range(locks: &mut Vec<Held>, session: SessionId, want: Lock) {
    let mut kept = Vec::with_capacity(locks.len() + 1);
    for h in locks.drain(..) {
        if !h.same_owner(session, want.owner) || !overlaps(&h.lock, &want) {
            kept.push(h);
            continue;
        }
        if h.lock.start < want.start {
            kept.push(Held {
                lock: Lock {
                    end: want.start - 1,
                    ..h.lock
                },
                ..h
            });
        }
        if h.lock.end > want.end {
            kept.push(Held {
                lock: Lock {
                    start: want.end + 1,
                    ..h.lock
                },
                ..h
            });
        }
    }
    if want.kind != LockKind::Unlock {
        let mut new = want;
        kept.retain(|h| {
            let adjacent = h.same_owner(session, want.owner)
                && h.lock.kind == want.kind
                && (h.lock.end.checked_add(1) == Some(new.start)
                    || new.end.checked_add(1) == Some(h.lock.start));
            if adjacent {
                new.start = new.start.min(h.lock.start);
                new.end = new.end.max(h.lock.end);
            }
            !adjacent
        });
        kept.push(Held { session, lock: new });
    }
    *locks = kept;
}

#[cfg(test)]
mod tests {
    use super::*;

    const F: InodeId = InodeId(3);

    fn lock(kind: LockKind, start: u64, end: u64, owner: u64) -> Lock {
        Lock {
            kind,
            start,
            end,
            owner,
            pid: owner as u32,
        }
    }

    #[tokio::test]
    async fn a_process_s_fcntl_and_flock_locks_do_not_conflict() {
        let t = LockTable::default();
        let posix = Lock {
            pid: 77,
            ..lock(LockKind::Write, 0, u64::MAX, 1)
        };
        let flock = Lock { owner: 2, ..posix };
        t.set(F, SessionId(1), posix, false).await.unwrap();
        t.set(F, SessionId(1), flock, false).await.unwrap();
        let other_process = Lock {
            pid: 78,
            owner: 3,
            ..posix
        };
        assert_eq!(
            t.set(F, SessionId(1), other_process, false).await,
            Err(Status::Locked)
        );
    }

    #[tokio::test]
    async fn readers_share_writers_exclude_and_unlock_splits() {
        let t = LockTable::default();
        let (a, b) = (SessionId(1), SessionId(2));
        t.set(F, a, lock(LockKind::Read, 0, 99, 1), false)
            .await
            .unwrap();
        t.set(F, b, lock(LockKind::Read, 50, 150, 2), false)
            .await
            .unwrap();
        assert_eq!(
            t.set(F, b, lock(LockKind::Write, 0, 10, 2), false).await,
            Err(Status::Locked)
        );
        t.set(F, a, lock(LockKind::Unlock, 0, 20, 1), false)
            .await
            .unwrap();
        t.set(F, b, lock(LockKind::Write, 0, 10, 2), false)
            .await
            .unwrap();
        assert!(t.test(F, b, &lock(LockKind::Write, 21, 30, 2)).is_some());
        assert!(t.test(F, a, &lock(LockKind::Write, 151, 200, 1)).is_none());
    }

    #[tokio::test]
    async fn a_waiter_gets_the_lock_when_the_holder_goes_away() {
        let t = std::sync::Arc::new(LockTable::default());
        t.set(
            F,
            SessionId(1),
            lock(LockKind::Write, 0, u64::MAX, 1),
            false,
        )
        .await
        .unwrap();
        let t2 = t.clone();
        let waiter = tokio::spawn(async move {
            t2.set(F, SessionId(2), lock(LockKind::Write, 0, u64::MAX, 2), true)
                .await
        });
        tokio::task::yield_now().await;
        assert!(!waiter.is_finished());
        t.release_session(SessionId(1));
        waiter.await.unwrap().unwrap();
    }

    #[tokio::test]
    async fn an_owner_can_upgrade_its_own_lock() {
        let t = LockTable::default();
        t.set(F, SessionId(1), lock(LockKind::Read, 0, 9, 1), false)
            .await
            .unwrap();
        t.set(F, SessionId(1), lock(LockKind::Write, 5, 20, 1), false)
            .await
            .unwrap();
        let held = t.lock().get(&F).cloned().unwrap();
        assert_eq!(held.len(), 2, "{held:?}");
    }
}
