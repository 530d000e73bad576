//! Directory leases: a mount that makes a directory may answer lookups of names it has not made
//! there itself ("no such file") without asking, for as long as it holds the lease. Before
//! another session adds or removes a name in a leased directory, the master recalls the lease
//! and waits until the holder gives it back, its connection ends, or the lease runs out; so no
//! mount ever reports absent a name that exists.
//!
//! A create in a fresh directory then costs one round trip to the master instead of two (the
//! kernel looks every new name up before it creates it). Recalls reach a mount through the
//! [`MasterRequest::AwaitRecalls`] it keeps waiting; only a session that has one gets leases.
//!
//! [`MasterRequest::AwaitRecalls`]: elkfs_proto::master::MasterRequest::AwaitRecalls

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use elkfs_proto::master::{DIR_LEASE, NameChanges};
use elkfs_proto::{InodeId, SessionId};
use tokio::sync::Notify;
use tokio::time::Instant;

/// How long an [`MasterRequest::AwaitRecalls`] waits before it is answered with nothing.
///
/// [`MasterRequest::AwaitRecalls`]: elkfs_proto::master::MasterRequest::AwaitRecalls
pub const RECALL_POLL: Duration = Duration::from_secs(20);

/// Most leases held at once; past this, new directories get none.
const MAX_LEASES: usize = 65_536;

struct Lease {
    holder: SessionId,
    until: Instant,
    recalled: bool,
}

/// A session waiting for recalls, and what it has not been told yet.
#[derive(Default)]
struct Poller {
    recalls: Vec<InodeId>,
    wake: Arc<Notify>,
}

#[derive(Default)]
struct Table {
    leases: HashMap<InodeId, Lease>,
    pollers: HashMap<SessionId, Poller>,
}

/// Every directory lease held, and the sessions that can be told of recalls.
#[derive(Default)]
pub struct DirLeases {
    table: Mutex<Table>,
    /// Wakes recalls waiting for a lease to be given back.
    released: Notify,
}

impl DirLeases {
    fn lock(&self) -> std::sync::MutexGuard<'_, Table> {
        self.table.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Grants `session` the lease on `dir`, which it has just made; false when it cannot be told
    /// of recalls or too many leases are held.
    pub fn grant(&self, session: SessionId, dir: InodeId) -> bool {
        let mut table = self.lock();
        if !table.pollers.contains_key(&session) {
            return false;
        }
        let now = Instant::now();
        if table.leases.len() >= MAX_LEASES {
            table.leases.retain(|_, l| l.until > now);
            if table.leases.len() >= MAX_LEASES {
                return false;
            }
        }
        table.leases.insert(
            dir,
            Lease {
                holder: session,
                until: now + DIR_LEASE,
                recalled: false,
            },
        );
        true
    }

    /// Makes way for a change by `session` to the names in `changes`: renews the leases
    /// `session` holds on those directories, and recalls the others' (every lease, for a change
    /// anywhere), returning once each is given back or has run out.
    pub async fn before_change(&self, session: SessionId, changes: &NameChanges) {
        let mut waiting = match changes {
            NameChanges::None => return,
            NameChanges::In(dirs) => self.recall(Some(session), dirs.iter().copied()),
            NameChanges::Anywhere => {
                let all: Vec<InodeId> = self.lock().leases.keys().copied().collect();
                self.recall(None, all.into_iter())
            }
        };
        while !waiting.is_empty() {
            let released = self.released.notified();
            tokio::pin!(released);
            released.as_mut().enable();
            let now = Instant::now();
            let latest = {
                let table = self.lock();
                waiting.retain(|dir| {
                    table
                        .leases
                        .get(dir)
                        .is_some_and(|l| l.recalled && l.until > now)
                });
                waiting
                    .iter()
                    .filter_map(|dir| table.leases.get(dir).map(|l| l.until))
                    .max()
            };
            let Some(latest) = latest else { return };
            let _ = tokio::time::timeout_at(latest, released).await;
        }
    }

    /// Renews `own`'s leases among `dirs` and recalls everyone else's; returns the ones to wait
    /// for.
    fn recall(&self, own: Option<SessionId>, dirs: impl Iterator<Item = InodeId>) -> Vec<InodeId> {
        let mut table = self.lock();
        let Table { leases, pollers } = &mut *table;
        let now = Instant::now();
        let mut waiting = Vec::new();
        for dir in dirs {
            let Some(lease) = leases.get_mut(&dir) else {
                continue;
            };
            if lease.until <= now {
                leases.remove(&dir);
                continue;
            }
            if Some(lease.holder) == own {
                if !lease.recalled {
                    lease.until = now + DIR_LEASE;
                }
                continue;
            }
            if !lease.recalled {
                lease.recalled = true;
                if let Some(poller) = pollers.get_mut(&lease.holder) {
                    poller.recalls.push(dir);
                    poller.wake.notify_one();
                }
                tracing::debug!(%dir, holder = %lease.holder, "directory lease recalled");
            }
            waiting.push(dir);
        }
        waiting
    }

    /// Serves a session's [`MasterRequest::AwaitRecalls`]: ends the leases it gave back, then
    /// returns the recalls it has not been told of, waiting up to `patience` for one.
    ///
    /// [`MasterRequest::AwaitRecalls`]: elkfs_proto::master::MasterRequest::AwaitRecalls
    pub async fn await_recalls(
        &self,
        session: SessionId,
        returned: &[InodeId],
        patience: Duration,
    ) -> Vec<InodeId> {
        let wake = {
            let mut table = self.lock();
            let mut gave_back = false;
            for dir in returned {
                if table.leases.get(dir).is_some_and(|l| l.holder == session) {
                    table.leases.remove(dir);
                    gave_back = true;
                }
            }
            if gave_back {
                self.released.notify_waiters();
            }
            table.pollers.entry(session).or_default().wake.clone()
        };
        let deadline = Instant::now() + patience;
        loop {
            let woken = wake.notified();
            tokio::pin!(woken);
            woken.as_mut().enable();
            if let Some(poller) = self.lock().pollers.get_mut(&session)
                && !poller.recalls.is_empty()
            {
                return std::mem::take(&mut poller.recalls);
            }
            if tokio::time::timeout_at(deadline, woken).await.is_err() {
                return Vec::new();
            }
        }
    }

    /// Ends every lease of a session whose connection is gone.
    pub fn release_session(&self, session: SessionId) {
        let mut table = self.lock();
        table.pollers.remove(&session);
        table.leases.retain(|_, l| l.holder != session);
        self.released.notify_waiters();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HOLDER: SessionId = SessionId(1);
    const OTHER: SessionId = SessionId(2);
    const DIR: InodeId = InodeId(10);

    fn polled(leases: &DirLeases, session: SessionId) {
        leases.lock().pollers.entry(session).or_default();
    }

    #[test]
    fn only_a_session_that_waits_for_recalls_gets_a_lease() {
        let leases = DirLeases::default();
        assert!(!leases.grant(HOLDER, DIR));
        polled(&leases, HOLDER);
        assert!(leases.grant(HOLDER, DIR));
    }

    #[tokio::test(start_paused = true)]
    async fn the_holders_own_changes_go_ahead_at_once() {
        let leases = DirLeases::default();
        polled(&leases, HOLDER);
        leases.grant(HOLDER, DIR);
        tokio::time::timeout(
            Duration::from_millis(1),
            leases.before_change(HOLDER, &NameChanges::In(vec![DIR])),
        )
        .await
        .expect("the holder waited for its own lease");
    }

    #[tokio::test(start_paused = true)]
    async fn another_sessions_change_waits_until_the_holder_gives_the_lease_back() {
        let leases = Arc::new(DirLeases::default());
        polled(&leases, HOLDER);
        leases.grant(HOLDER, DIR);
        let change = tokio::spawn({
            let leases = leases.clone();
            async move {
                leases
                    .before_change(OTHER, &NameChanges::In(vec![DIR]))
                    .await
            }
        });
        let recalled = leases.await_recalls(HOLDER, &[], RECALL_POLL).await;
        assert_eq!(recalled, vec![DIR]);
        tokio::time::sleep(Duration::from_secs(1)).await;
        assert!(
            !change.is_finished(),
            "went ahead before the lease came back"
        );
        let start = Instant::now();
        let next = tokio::spawn({
            let leases = leases.clone();
            async move { leases.await_recalls(HOLDER, &[DIR], RECALL_POLL).await }
        });
        change.await.unwrap();
        assert!(start.elapsed() < Duration::from_millis(10));
        next.abort();
        assert!(!leases.lock().leases.contains_key(&DIR));
    }

    #[tokio::test(start_paused = true)]
    async fn a_holder_that_never_answers_is_waited_for_until_the_lease_runs_out() {
        let leases = DirLeases::default();
        polled(&leases, HOLDER);
        leases.grant(HOLDER, DIR);
        let start = Instant::now();
        leases.before_change(OTHER, &NameChanges::Anywhere).await;
        let waited = start.elapsed();
        assert!(waited >= DIR_LEASE - Duration::from_millis(1), "{waited:?}");
        assert!(waited <= DIR_LEASE + Duration::from_secs(1), "{waited:?}");
    }

    #[tokio::test(start_paused = true)]
    async fn a_holder_whose_connection_ends_releases_the_waiting_change() {
        let leases = Arc::new(DirLeases::default());
        polled(&leases, HOLDER);
        leases.grant(HOLDER, DIR);
        let change = tokio::spawn({
            let leases = leases.clone();
            async move {
                leases
                    .before_change(OTHER, &NameChanges::In(vec![DIR]))
                    .await
            }
        });
        tokio::time::sleep(Duration::from_millis(100)).await;
        leases.release_session(HOLDER);
        tokio::time::timeout(Duration::from_millis(10), change)
            .await
            .expect("still waiting after the holder went away")
            .unwrap();
        assert!(!leases.grant(HOLDER, DIR), "a gone session got a lease");
    }

    #[tokio::test(start_paused = true)]
    async fn a_change_anywhere_recalls_the_changers_own_leases_too() {
        let leases = Arc::new(DirLeases::default());
        polled(&leases, HOLDER);
        leases.grant(HOLDER, DIR);
        let change = tokio::spawn({
            let leases = leases.clone();
            async move { leases.before_change(HOLDER, &NameChanges::Anywhere).await }
        });
        let recalled = leases.await_recalls(HOLDER, &[], RECALL_POLL).await;
        assert_eq!(recalled, vec![DIR]);
        let _ = tokio::time::timeout(
            Duration::from_millis(1),
            leases.await_recalls(HOLDER, &[DIR], RECALL_POLL),
        )
        .await;
        tokio::time::timeout(Duration::from_millis(10), change)
            .await
            .expect("still waiting after the lease came back")
            .unwrap();
    }

    #[tokio::test(start_paused = true)]
    async fn a_wait_for_recalls_ends_empty_after_its_patience() {
        let leases = DirLeases::default();
        let start = Instant::now();
        let recalled = leases
            .await_recalls(HOLDER, &[], Duration::from_secs(3))
            .await;
        assert!(recalled.is_empty());
        assert!(start.elapsed() >= Duration::from_secs(3));
    }

    #[tokio::test(start_paused = true)]
    async fn renewing_by_the_holder_keeps_the_lease_past_its_first_term() {
        let leases = DirLeases::default();
        polled(&leases, HOLDER);
        leases.grant(HOLDER, DIR);
        tokio::time::sleep(DIR_LEASE - Duration::from_secs(1)).await;
        leases
            .before_change(HOLDER, &NameChanges::In(vec![DIR]))
            .await;
        tokio::time::sleep(Duration::from_secs(2)).await;
        let waiting = leases.recall(Some(OTHER), [DIR].into_iter());
        assert_eq!(waiting, vec![DIR], "the renewed lease had run out");
    }
}
