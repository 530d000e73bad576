//! Byte-range locks (POSIX `fcntl` and BSD `flock`) held across every mount of the cluster.
//!
//! A lock belongs to a (session, owner) pair, the owner being what the kernel names it (a
//! process's file table, or an open file for `flock`). Taking a lock replaces the owner's locks
//! on the range, as POSIX says; waiters are woken whenever locks on the file change.
//!
//! A session's locks outlive its connection for a while (`LOCK_RECLAIM_GRACE`): a client that
//! reconnects claims them for its new session (`reclaim`), and after a master restart, which
//! forgets them all, takes them again unless another session took a conflicting one first.
//!
//! The kernel's flag telling `flock` requests from `fcntl` ones does not reach us (fuser drops
//! it), so locks of one process (same session and pid) never conflict: that keeps a process's
//! `fcntl` and `flock` locks independent, as on Linux. The one difference left: two `flock`s on
//! two separate opens of a file in one process do not exclude each other here.

use std::collections::{HashMap, HashSet};
use std::sync::Mutex;

use elkfs_proto::lock_ranges::{after_request, overlaps};
use elkfs_proto::master::{Lock, LockKind, MAX_RECLAIM};
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
    /// The client each session belongs to, until the session's locks are released.
    clients: Mutex<HashMap<SessionId, u64>>,
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
                // A session released already (its connection ended, or a later session of its
                // client took its locks over) must not take any more.
                if !self.clients().contains_key(&session) {
                    return Err(Status::Io);
                }
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

    /// Notes which client a new session belongs to, so that a later session of the same client
    /// can claim its locks.
    pub fn open_session(&self, session: SessionId, client: u64) {
        self.clients().insert(session, client);
    }

    fn clients(&self) -> std::sync::MutexGuard<'_, HashMap<SessionId, u64>> {
        self.clients.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Gives `session` the locks its client claims (those it held through earlier sessions),
    /// one batch at a time: each claim is granted unless it conflicts with a lock of a session
    /// other than the client's earlier ones, or is not a lock; with the `last` batch, the earlier
    /// sessions' locks are dropped and those sessions take no more. Returns the claims refused
    /// (all of them for a session released already, and all beyond the first [`MAX_RECLAIM`]).
    pub fn reclaim(
        &self,
        session: SessionId,
        claims: Vec<(InodeId, Lock)>,
        last: bool,
    ) -> Vec<(InodeId, Lock)> {
        let mut table = self.lock();
        let earlier: HashSet<SessionId> = {
            let mut clients = self.clients();
            let Some(&client) = clients.get(&session) else {
                return claims;
            };
            let earlier: HashSet<SessionId> = clients
                .iter()
                .filter(|&(&s, &c)| s < session && c == client)
                .map(|(&s, _)| s)
                .collect();
            if last {
                clients.retain(|s, _| !earlier.contains(s));
            }
            earlier
        };
        let mut refused = Vec::new();
        for (i, (inode, lock)) in claims.into_iter().enumerate() {
            if i >= MAX_RECLAIM || lock.kind == LockKind::Unlock || lock.start > lock.end {
                refused.push((inode, lock));
                continue;
            }
            let locks = table.entry(inode).or_default();
            let blocked = locks
                .iter()
                .any(|h| !earlier.contains(&h.session) && conflicts(h, session, &lock));
            if blocked {
                refused.push((inode, lock));
            } else {
                replace_range(locks, session, lock);
            }
        }
        if last {
            table.retain(|_, locks| {
                locks.retain(|h| !earlier.contains(&h.session));
                !locks.is_empty()
            });
        }
        table.retain(|_, locks| !locks.is_empty());
        drop(table);
        self.changed.notify_waiters();
        refused
    }

    /// Ends `session`, whose connection closed. A session holding locks keeps them, for its
    /// client to claim (`release_session` later; returns true); one holding none is released at
    /// once and takes no more (returns false, with its client if no other session of that client
    /// is left).
    pub fn end_session(&self, session: SessionId) -> (bool, Option<u64>) {
        let table = self.lock();
        if table
            .values()
            .any(|locks| locks.iter().any(|h| h.session == session))
        {
            return (true, None);
        }
        (false, self.forget_session(session))
    }

    /// Forgets which client `session` belongs to; returns that client if it has no other
    /// session left.
    fn forget_session(&self, session: SessionId) -> Option<u64> {
        let mut clients = self.clients();
        clients
            .remove(&session)
            .filter(|client| !clients.values().any(|c| c == client))
    }

    /// Whether `client` has a session.
    pub fn has_client(&self, client: u64) -> bool {
        self.clients().values().any(|&c| c == client)
    }

    /// The clients whose sessions hold locks now.
    pub fn clients_holding(&self) -> HashSet<u64> {
        let sessions: HashSet<SessionId> = self
            .lock()
            .values()
            .flat_map(|locks| locks.iter().map(|h| h.session))
            .collect();
        let clients = self.clients();
        sessions
            .iter()
            .filter_map(|s| clients.get(s).copied())
            .collect()
    }

    /// The client `session` belongs to, while it may hold locks.
    pub fn client_of(&self, session: SessionId) -> Option<u64> {
        self.clients().get(&session).copied()
    }

    /// Releases every lock of a session that went away (a while after its connection closed,
    /// unless a later session of its client claimed them). Returns its client if no other
    /// session of that client is left.
    pub fn release_session(&self, session: SessionId) -> Option<u64> {
        let last_of_client = self.forget_session(session);
        let mut table = self.lock();
        table.retain(|_, locks| {
            locks.retain(|h| h.session != session);
            !locks.is_empty()
        });
        drop(table);
        self.changed.notify_waiters();
        last_of_client
    }
}

/// Applies `want` to its owner's locks in `locks` (see [`after_request`]).
fn replace_range(locks: &mut Vec<Held>, session: SessionId, want: Lock) {
    let (mine, mut kept): (Vec<Held>, Vec<Held>) = locks
        .drain(..)
        .partition(|h| h.same_owner(session, want.owner));
    let mine = after_request(mine.into_iter().map(|h| h.lock).collect(), want);
    kept.extend(mine.into_iter().map(|lock| Held { session, lock }));
    *locks = kept;
}

#[cfg(test)]
mod tests {
    use super::*;

    const F: InodeId = InodeId(3);

    /// A table where sessions 1 to 9 are open, each of its own client.
    fn table() -> LockTable {
        let t = LockTable::default();
        for s in 1..10 {
            t.open_session(SessionId(s), 100 + s);
        }
        t
    }

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
        let t = table();
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
        let t = table();
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
        let t = std::sync::Arc::new(table());
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
    async fn a_client_s_new_session_takes_over_its_earlier_session_s_locks_and_no_one_else_s() {
        let t = LockTable::default();
        let (old, other, new) = (SessionId(1), SessionId(2), SessionId(3));
        t.open_session(old, 77);
        t.open_session(other, 88);
        t.open_session(new, 77);
        let whole = lock(LockKind::Write, 0, u64::MAX, 1);
        t.set(F, old, whole, false).await.unwrap();
        let g = InodeId(4);
        t.set(g, other, lock(LockKind::Write, 0, 9, 5), false)
            .await
            .unwrap();
        // The old session's lock still stands in the way of others until claimed.
        assert_eq!(
            t.set(F, other, lock(LockKind::Read, 0, 0, 5), false).await,
            Err(Status::Locked)
        );
        let refused = t.reclaim(
            new,
            vec![(F, whole), (g, lock(LockKind::Read, 5, 5, 1))],
            true,
        );
        assert_eq!(refused, vec![(g, lock(LockKind::Read, 5, 5, 1))]);
        let held = t.lock().get(&F).cloned().unwrap();
        assert_eq!(
            held,
            vec![Held {
                session: new,
                lock: whole
            }]
        );
        // Once the old session is released, the new one keeps what it claimed.
        t.release_session(old);
        assert!(t.test(F, other, &lock(LockKind::Read, 0, 0, 5)).is_some());
    }

    #[tokio::test]
    async fn claims_in_several_batches_keep_others_out_until_the_last() {
        let t = LockTable::default();
        let (old, other, new) = (SessionId(1), SessionId(2), SessionId(3));
        t.open_session(old, 77);
        t.open_session(other, 88);
        t.open_session(new, 77);
        let g = InodeId(4);
        let (on_f, on_g) = (
            lock(LockKind::Write, 0, 9, 1),
            lock(LockKind::Write, 0, 9, 1),
        );
        t.set(F, old, on_f, false).await.unwrap();
        t.set(g, old, on_g, false).await.unwrap();
        let theirs = lock(LockKind::Write, 0, 0, 5);
        assert!(t.reclaim(new, vec![(F, on_f)], false).is_empty());
        assert_eq!(
            t.set(g, other, theirs, false).await,
            Err(Status::Locked),
            "the lock of the second batch is still the old session's"
        );
        assert!(t.reclaim(new, vec![(g, on_g)], true).is_empty());
        for file in [F, g] {
            let held = t.lock().get(&file).cloned().unwrap();
            assert_eq!(held.len(), 1);
            assert_eq!(held[0].session, new);
        }
        assert_eq!(t.set(F, other, theirs, false).await, Err(Status::Locked));
        assert_eq!(t.set(F, old, theirs, false).await, Err(Status::Io));
    }

    #[tokio::test]
    async fn a_session_released_or_taken_over_takes_no_more_locks() {
        let t = table();
        t.release_session(SessionId(1));
        assert_eq!(
            t.set(F, SessionId(1), lock(LockKind::Read, 0, 0, 1), false)
                .await,
            Err(Status::Io)
        );
        t.open_session(SessionId(20), 102);
        assert!(t.reclaim(SessionId(20), vec![], true).is_empty());
        assert_eq!(
            t.set(F, SessionId(2), lock(LockKind::Read, 0, 0, 1), false)
                .await,
            Err(Status::Io),
            "session 2 (client 102) was taken over by session 20"
        );
        let too_many: Vec<_> = (0..MAX_RECLAIM as u64 + 2)
            .map(|i| (InodeId(1000 + i), lock(LockKind::Read, 0, 0, 1)))
            .collect();
        let refused = t.reclaim(SessionId(20), too_many, false);
        assert_eq!(refused.len(), 2);
        let bad = vec![
            (F, lock(LockKind::Unlock, 0, 9, 1)),
            (F, lock(LockKind::Read, 9, 0, 1)),
        ];
        assert_eq!(t.reclaim(SessionId(20), bad.clone(), true), bad);
        let late = vec![(F, lock(LockKind::Read, 0, 0, 1))];
        assert_eq!(
            t.reclaim(SessionId(2), late.clone(), true),
            late,
            "a session taken over claims nothing"
        );
    }

    #[tokio::test]
    async fn after_a_restart_claims_are_granted_unless_they_conflict() {
        let t = LockTable::default();
        t.open_session(SessionId(1), 5);
        t.set(F, SessionId(1), lock(LockKind::Read, 0, 9, 1), false)
            .await
            .unwrap();
        t.open_session(SessionId(2), 6);
        let refused = t.reclaim(
            SessionId(2),
            vec![
                (F, lock(LockKind::Read, 0, 9, 2)),
                (F, lock(LockKind::Write, 20, 29, 2)),
                (F, lock(LockKind::Write, 5, 5, 3)),
            ],
            true,
        );
        assert_eq!(refused, vec![(F, lock(LockKind::Write, 5, 5, 3))]);
        assert!(
            t.test(F, SessionId(1), &lock(LockKind::Read, 20, 20, 1))
                .is_some()
        );
    }

    #[tokio::test]
    async fn an_owner_can_upgrade_its_own_lock() {
        let t = table();
        t.set(F, SessionId(1), lock(LockKind::Read, 0, 9, 1), false)
            .await
            .unwrap();
        t.set(F, SessionId(1), lock(LockKind::Write, 5, 20, 1), false)
            .await
            .unwrap();
        let held = t.lock().get(&F).cloned().unwrap();
        assert_eq!(held.len(), 2, "{held:?}");
    }

    #[tokio::test]
    async fn the_clients_holding_locks_are_known_and_a_client_s_last_session_is_told() {
        let t = table();
        // Session 10 is a second session of session 1's client.
        t.open_session(SessionId(10), 101);
        t.set(F, SessionId(1), lock(LockKind::Write, 0, 9, 1), false)
            .await
            .unwrap();
        t.set(F, SessionId(2), lock(LockKind::Read, 20, 29, 2), false)
            .await
            .unwrap();
        t.set(F, SessionId(2), lock(LockKind::Unlock, 20, 29, 2), false)
            .await
            .unwrap();
        assert_eq!(t.clients_holding(), HashSet::from([101]));
        assert_eq!(
            t.end_session(SessionId(1)),
            (true, None),
            "it keeps its lock"
        );
        assert_eq!(
            t.end_session(SessionId(2)),
            (false, Some(102)),
            "its only lock was undone"
        );
        assert_eq!(
            t.set(F, SessionId(2), lock(LockKind::Read, 20, 29, 2), false)
                .await,
            Err(Status::Io),
            "an ended session takes no more"
        );
        assert!(t.has_client(101));
        assert!(!t.has_client(102));

        assert_eq!(t.release_session(SessionId(1)), None, "session 10 is left");
        assert!(t.clients_holding().is_empty());
        assert_eq!(t.end_session(SessionId(10)), (false, Some(101)));
        assert!(!t.has_client(101));
        assert_eq!(t.release_session(SessionId(2)), None, "released already");
    }
}
