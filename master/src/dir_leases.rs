//! Directory leases: a mount that makes a directory may answer lookups of names it has not made
//! there itself ("no such file") without asking, for as long as it holds the lease. Before
//! another session adds or removes a name in a leased directory, the master recalls the lease
//! and waits until the holder gives it back or the lease runs out.
//!
//! A create in a fresh directory then costs one round trip to the master instead of two (the
//! kernel looks every new name up before it creates it). A session may also ask for the lease
//! on a directory it did not make ([`MasterRequest::LeaseDir`]); it then gets every name in it
//! with the grant. Recalls reach a mount through the
//! [`MasterRequest::AwaitRecalls`] it keeps waiting, which also renews the leases it still
//! uses; only a session that sends those gets leases.
//!
//! The holder's lease always ends before the master's: it counts from when it sent the request
//! that was answered with the grant or renewal, the master from when it made either. A lease of
//! a session whose connection closed stays until it runs out or the same client gives it back
//! from a later session (a client opens a new connection only once it has stopped using the old
//! one's leases): the holder may not know yet that its connection is gone, and another client
//! may hold a lease on the same directory by then.
//!
//! A lease recalled from a session is not granted to it again through
//! [`MasterRequest::LeaseDir`] for [`LEASE_HOLD_OFF`]. The directories a snapshot copies are
//! filled by the master one entry at a time after each is made, each under its own recall
//! ([`DirLeases::before_filling`]).
//!
//! A lease is granted only when no other session's request that may change the directory's
//! names was under way at any time between the start of the grant (before the directory was
//! made, or before its names were read) and the grant itself. The session's own requests do not
//! stand in the way: its client adds every name it has sent to the lease it is granted.
//!
//! [`MasterRequest::AwaitRecalls`]: elkfs_proto::master::MasterRequest::AwaitRecalls
//! [`MasterRequest::LeaseDir`]: elkfs_proto::master::MasterRequest::LeaseDir

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use elkfs_proto::master::{DIR_LEASE, LEASE_HOLD_OFF, NameChanges};
use elkfs_proto::{InodeId, SessionId};
use tokio::sync::Notify;
use tokio::time::Instant;

/// How long an [`MasterRequest::AwaitRecalls`] of a session without leases waits before it is
/// answered with nothing.
///
/// [`MasterRequest::AwaitRecalls`]: elkfs_proto::master::MasterRequest::AwaitRecalls
pub const RECALL_POLL: Duration = Duration::from_secs(20);

/// How long it waits while the session holds a lease: the next one renews it in time.
pub const RENEW_POLL: Duration = Duration::from_millis(2500);

/// Most leases held at once; past this, new directories get none.
const MAX_LEASES: usize = 65_536;

/// Most names a directory may hold to be leased to a session that did not make it (they all go
/// to the session with the grant).
pub const MAX_LEASED_NAMES: usize = 4096;

/// Longest a [`MasterRequest::LeaseDir`] waits for another session's recalled lease to come
/// back before it is refused.
///
/// [`MasterRequest::LeaseDir`]: elkfs_proto::master::MasterRequest::LeaseDir
const RETURN_WAIT: Duration = Duration::from_secs(1);

/// Who fills the directories a snapshot copies: never a session that could be granted a lease.
const FILLER: SessionId = SessionId(u64::MAX);

struct Lease {
    holder: SessionId,
    /// The holder's client id, from its waits for recalls.
    client: u64,
    until: Instant,
    recalled: bool,
}

/// A connected session: whether it waits for recalls, and what it has not been told yet.
#[derive(Default)]
struct Poller {
    /// The client id its waits for recalls carry; `None` until it first waits.
    client: Option<u64>,
    recalls: Vec<InodeId>,
    wake: Arc<Notify>,
}

#[derive(Default)]
struct Table {
    leases: HashMap<InodeId, Lease>,
    pollers: HashMap<SessionId, Poller>,
    /// Counts grants begun and changes made, to order them.
    epoch: u64,
    /// The epochs at which the grants not decided yet began.
    pending: BTreeSet<u64>,
    /// Directories whose names changed while grants were pending, with the epoch of each
    /// session's last change: a grant to another session begun before it is refused.
    touched: HashMap<InodeId, HashMap<SessionId, u64>>,
    /// Directories whose names requests under way may change, with how many each session has.
    changing: HashMap<InodeId, HashMap<SessionId, usize>>,
    /// The last session whose lease on a directory was recalled, and when.
    recalled_from: HashMap<InodeId, (SessionId, Instant)>,
    /// Changes anywhere under way: no lease is granted meanwhile.
    anywhere: usize,
    /// The epoch at which the last change anywhere began.
    anywhere_epoch: u64,
}

impl Table {
    fn next_epoch(&mut self) -> u64 {
        self.epoch += 1;
        self.epoch
    }

    /// Notes that a change by `session` to the names in `dirs` started or ended: a grant to
    /// another session begun before then is refused.
    fn touch(&mut self, session: SessionId, dirs: &[InodeId]) {
        if !self.pending.is_empty() {
            let epoch = self.next_epoch();
            for dir in dirs {
                self.touched.entry(*dir).or_default().insert(session, epoch);
            }
        }
    }

    /// Whether `session` may not be granted the lease on `dir` now, whatever the names: a session
    /// holds it (the asking one included: a give-back of it may be on its way), or it was
    /// recalled from `session` lately.
    fn taken(&self, session: SessionId, dir: InodeId, now: Instant) -> bool {
        let held = self.leases.get(&dir).is_some_and(|l| l.until > now);
        let held_off = self
            .recalled_from
            .get(&dir)
            .is_some_and(|(from, at)| *from == session && now < *at + LEASE_HOLD_OFF);
        held || held_off
    }

    /// Whether a session other than `session` changed names in `dir` after `epoch`, or is
    /// changing them now.
    fn changed_by_others(&self, dir: InodeId, session: SessionId, epoch: u64) -> bool {
        let others = |s: &SessionId| *s != session;
        self.touched
            .get(&dir)
            .is_some_and(|by| by.iter().any(|(s, e)| others(s) && *e > epoch))
            || self
                .changing
                .get(&dir)
                .is_some_and(|by| by.keys().any(others))
    }

    fn holds_any(&self, session: SessionId) -> bool {
        let now = Instant::now();
        self.leases
            .values()
            .any(|l| l.holder == session && l.until > now)
    }
}

/// Every directory lease held, and the sessions that can be told of recalls.
#[derive(Default)]
pub struct DirLeases {
    table: Mutex<Table>,
    /// Wakes recalls waiting for a lease to be given back.
    released: Notify,
}

/// A grant begun: taken before the master makes the directory or reads its names, so that a
/// change to its names between then and [`DirLeases::grant`] keeps it from being leased.
pub struct PendingGrant<'a> {
    leases: &'a DirLeases,
    epoch: u64,
    /// A change anywhere was under way when it began.
    doomed: bool,
}

impl Drop for PendingGrant<'_> {
    fn drop(&mut self) {
        let mut table = self.leases.lock();
        table.pending.remove(&self.epoch);
        match table.pending.first().copied() {
            Some(oldest) => table.touched.retain(|_, by| {
                by.retain(|_, changed| *changed > oldest);
                !by.is_empty()
            }),
            None => table.touched.clear(),
        }
    }
}

/// Held while a request that may change names is carried out: no lease on the directories it
/// may change (on any, for a change anywhere) is granted meanwhile, nor by a grant begun before
/// it ends.
pub struct ChangeGuard<'a> {
    leases: Option<&'a DirLeases>,
    session: SessionId,
    dirs: Vec<InodeId>,
    anywhere: bool,
}

impl Drop for ChangeGuard<'_> {
    fn drop(&mut self) {
        let Some(leases) = self.leases else { return };
        let mut table = leases.lock();
        if self.anywhere {
            table.anywhere -= 1;
            table.anywhere_epoch = table.next_epoch();
        }
        for dir in &self.dirs {
            let Some(by) = table.changing.get_mut(dir) else {
                continue;
            };
            if let Some(count) = by.get_mut(&self.session) {
                *count -= 1;
                if *count == 0 {
                    by.remove(&self.session);
                }
            }
            if by.is_empty() {
                table.changing.remove(dir);
            }
        }
        table.touch(self.session, &self.dirs);
    }
}

impl DirLeases {
    fn lock(&self) -> std::sync::MutexGuard<'_, Table> {
        self.table.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Notes a session that has just opened; it gets leases once it waits for recalls.
    pub fn open(&self, session: SessionId) {
        self.lock().pollers.entry(session).or_default();
    }

    /// To be called before making a directory that may be leased.
    pub fn begin_grant(&self) -> PendingGrant<'_> {
        let mut table = self.lock();
        let epoch = table.next_epoch();
        table.pending.insert(epoch);
        PendingGrant {
            leases: self,
            epoch,
            doomed: table.anywhere > 0,
        }
    }

    /// Grants `session` the lease on `dir`, which it has just made or whose names have just been
    /// read; false when it does not wait for recalls, another session's change to the
    /// directory's names was under way at some time since `pending` was taken, a change anywhere
    /// was, a session holds the lease, it was recalled from `session` lately, or too many leases
    /// are held.
    pub fn grant(&self, pending: PendingGrant<'_>, session: SessionId, dir: InodeId) -> bool {
        let mut table = self.lock();
        let now = Instant::now();
        let refused = pending.doomed
            || table.anywhere > 0
            || table.anywhere_epoch > pending.epoch
            || table.changed_by_others(dir, session, pending.epoch)
            || table.taken(session, dir, now);
        let Some(poller) = table.pollers.get(&session) else {
            return false;
        };
        let Some(client) = poller.client.filter(|_| !refused) else {
            return false;
        };
        let wake = poller.wake.clone();
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
                client,
                until: now + DIR_LEASE,
                recalled: false,
            },
        );
        drop(table);
        drop(pending);
        // Its wait for recalls must now come back in time to renew the lease.
        wake.notify_one();
        true
    }

    /// Whether `session` may ask for the lease on `dir` at all (checked before its names are
    /// read; [`DirLeases::grant`] decides).
    pub fn may_lease(&self, session: SessionId, dir: InodeId) -> bool {
        let table = self.lock();
        let polls = table
            .pollers
            .get(&session)
            .is_some_and(|p| p.client.is_some());
        polls && !table.taken(session, dir, Instant::now())
    }

    /// Makes way for a snapshot to fill `dir`, a directory it has just copied: recalls any lease
    /// granted on it since (a session may have looked into it already) and keeps it from being
    /// leased until the guard is dropped.
    pub async fn before_filling(&self, dir: InodeId) -> ChangeGuard<'_> {
        let (waiting, guard) = self.changing_in(FILLER, None, &[dir]);
        self.wait_returned(waiting).await;
        guard
    }

    /// Notes a change by `changer` to the names in `dirs` as under way, and recalls the leases
    /// on them not held by `own`; returns the leases to wait for, and the guard.
    fn changing_in(
        &self,
        changer: SessionId,
        own: Option<SessionId>,
        dirs: &[InodeId],
    ) -> (Vec<InodeId>, ChangeGuard<'_>) {
        {
            let mut table = self.lock();
            for dir in dirs {
                let by = table.changing.entry(*dir).or_default();
                *by.entry(changer).or_default() += 1;
            }
            table.touch(changer, dirs);
        }
        let guard = ChangeGuard {
            leases: Some(self),
            session: changer,
            dirs: dirs.to_vec(),
            anywhere: false,
        };
        (self.recall(own, dirs), guard)
    }

    /// Makes way for a change by `session` to the names in `changes`: recalls the leases other
    /// sessions hold on those directories (every lease, for a change anywhere) and returns once
    /// each is given back or has run out. Hold the guard until the change is made.
    pub async fn before_change(
        &self,
        session: SessionId,
        changes: &NameChanges,
    ) -> ChangeGuard<'_> {
        let (waiting, guard) = match changes {
            NameChanges::None => {
                return ChangeGuard {
                    leases: None,
                    session,
                    dirs: Vec::new(),
                    anywhere: false,
                };
            }
            NameChanges::In(dirs) => self.changing_in(session, Some(session), dirs),
            NameChanges::Anywhere => {
                let all: Vec<InodeId> = {
                    let mut table = self.lock();
                    table.anywhere += 1;
                    table.anywhere_epoch = table.next_epoch();
                    table.leases.keys().copied().collect()
                };
                let guard = ChangeGuard {
                    leases: Some(self),
                    session,
                    dirs: Vec::new(),
                    anywhere: true,
                };
                (self.recall(None, &all), guard)
            }
        };
        self.wait_returned(waiting).await;
        guard
    }

    /// Returns once each of the leases on `waiting` is given back or has run out.
    async fn wait_returned(&self, mut waiting: Vec<InodeId>) {
        while !waiting.is_empty() {
            let released = self.released.notified();
            tokio::pin!(released);
            released.as_mut().enable();
            let now = Instant::now();
            let latest = {
                let table = self.lock();
                waiting.retain(|dir| table.leases.get(dir).is_some_and(|l| l.until > now));
                waiting
                    .iter()
                    .filter_map(|dir| table.leases.get(dir).map(|l| l.until))
                    .max()
            };
            let Some(latest) = latest else { break };
            let _ = tokio::time::timeout_at(latest, released).await;
        }
    }

    /// Waits (a little) until no other session holds a lease on `dir` that was recalled and is
    /// on its way back, so that `session` may be granted the lease after its own change
    /// recalled it.
    pub async fn returned(&self, session: SessionId, dir: InodeId) {
        let on_its_way = self
            .lock()
            .leases
            .get(&dir)
            .is_some_and(|l| l.holder != session && l.recalled);
        if on_its_way {
            let _ = tokio::time::timeout(RETURN_WAIT, self.wait_returned(vec![dir])).await;
        }
    }

    /// Recalls the leases on `dirs` not held by `own`; returns the ones to wait for.
    fn recall(&self, own: Option<SessionId>, dirs: &[InodeId]) -> Vec<InodeId> {
        let mut table = self.lock();
        let now = Instant::now();
        if table.recalled_from.len() >= MAX_LEASES {
            table
                .recalled_from
                .retain(|_, (_, at)| now < *at + LEASE_HOLD_OFF);
            if table.recalled_from.len() >= MAX_LEASES {
                // Forgetting hold-offs costs only some needless grants.
                table.recalled_from.clear();
            }
        }
        let Table {
            leases,
            pollers,
            recalled_from,
            ..
        } = &mut *table;
        let mut waiting = Vec::new();
        for &dir in dirs {
            let Some(lease) = leases.get_mut(&dir) else {
                continue;
            };
            if lease.until <= now {
                leases.remove(&dir);
                continue;
            }
            if Some(lease.holder) == own {
                continue;
            }
            if !lease.recalled {
                lease.recalled = true;
                recalled_from.insert(dir, (lease.holder, now));
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

    /// Serves a session's [`MasterRequest::AwaitRecalls`] from `client`: ends the leases it gave
    /// back (its own, or ones of the same client's earlier sessions), renews those of `renew`
    /// not recalled, then returns the recalls it has not been told of and the leases renewed,
    /// waiting up to
    /// `patience` for a recall ([`RENEW_POLL`] at most while it holds a lease).
    ///
    /// [`MasterRequest::AwaitRecalls`]: elkfs_proto::master::MasterRequest::AwaitRecalls
    pub async fn await_recalls(
        &self,
        session: SessionId,
        client: u64,
        returned: &[InodeId],
        renew: &[InodeId],
        patience: Duration,
    ) -> (Vec<InodeId>, Vec<InodeId>) {
        let start = Instant::now();
        let (wake, renewed, answer_now) = {
            let mut table = self.lock();
            // Give-backs count even when the session's connection has just closed (a mount that
            // is stopping gives its leases back as it goes), for the session's own leases and
            // those of the same client's earlier sessions (session ids only grow, and the client
            // stopped using a connection's leases before it opened the next); not for another
            // client's, which may hold a lease on the same directory now.
            let leases = &mut table.leases;
            let mine =
                |l: &Lease| l.holder == session || (l.client == client && l.holder < session);
            let mut gave_back = false;
            for dir in returned {
                if leases.get(dir).is_some_and(mine) {
                    leases.remove(dir);
                    gave_back = true;
                }
            }
            if gave_back {
                self.released.notify_waiters();
            }
            // A wait that gave back the session's last leases is answered at once: a client that
            // is going away waits for that answer.
            let gave_back_all = gave_back && renew.is_empty() && !table.holds_any(session);
            let Some(poller) = table.pollers.get_mut(&session) else {
                return (Vec::new(), Vec::new());
            };
            // The first is answered at once: the client waits for it before it starts, and a
            // reconnected client gives its earlier connection's leases back with the next.
            let first = poller.client.replace(client).is_none();
            let wake = poller.wake.clone();
            if table.leases.len() > 1024 {
                table.leases.retain(|_, l| l.until > start);
            }
            let leases = &mut table.leases;
            let mut renewed = Vec::new();
            for dir in renew {
                if let Some(lease) = leases.get_mut(dir)
                    && lease.holder == session
                    && !lease.recalled
                    && lease.until > start
                {
                    lease.until = start + DIR_LEASE;
                    renewed.push(*dir);
                }
            }
            (wake, renewed, first || gave_back_all)
        };
        let patience = if answer_now { Duration::ZERO } else { patience };
        loop {
            let woken = wake.notified();
            tokio::pin!(woken);
            woken.as_mut().enable();
            let deadline = {
                let mut table = self.lock();
                let holds = table.holds_any(session);
                let Some(poller) = table.pollers.get_mut(&session) else {
                    return (Vec::new(), renewed);
                };
                if !poller.recalls.is_empty() {
                    return (std::mem::take(&mut poller.recalls), renewed);
                }
                start
                    + if holds {
                        patience.min(RENEW_POLL)
                    } else {
                        patience
                    }
            };
            if tokio::time::timeout_at(deadline, woken).await.is_err() {
                return (Vec::new(), renewed);
            }
        }
    }

    /// A session's connection is gone: it is told of nothing more, and its leases are left to
    /// run out (it may not know yet) unless its client gives them back.
    pub fn release_session(&self, session: SessionId) {
        let mut table = self.lock();
        if let Some(poller) = table.pollers.remove(&session) {
            poller.wake.notify_one();
        }
        for lease in table.leases.values_mut() {
            if lease.holder == session {
                lease.recalled = true;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HOLDER: SessionId = SessionId(1);
    const OTHER: SessionId = SessionId(2);
    const HOLDER_CLIENT: u64 = 101;
    const DIR: InodeId = InodeId(10);

    /// A table where `HOLDER` waits for recalls.
    fn polling() -> Arc<DirLeases> {
        let leases = Arc::new(DirLeases::default());
        leases.open(HOLDER);
        leases.lock().pollers.get_mut(&HOLDER).unwrap().client = Some(HOLDER_CLIENT);
        leases
    }

    /// A table where `HOLDER` waits for recalls and holds the lease on `DIR`.
    fn leased() -> Arc<DirLeases> {
        let leases = polling();
        let pending = leases.begin_grant();
        assert!(leases.grant(pending, HOLDER, DIR));
        leases
    }

    fn changing(leases: &Arc<DirLeases>, session: SessionId) -> tokio::task::JoinHandle<()> {
        let leases = leases.clone();
        tokio::spawn(async move {
            let _ = leases
                .before_change(session, &NameChanges::In(vec![DIR]))
                .await;
        })
    }

    #[test]
    fn only_a_session_that_waits_for_recalls_gets_a_lease() {
        let leases = DirLeases::default();
        leases.open(HOLDER);
        assert!(!leases.grant(leases.begin_grant(), HOLDER, DIR));
        assert!(
            !leases.grant(leases.begin_grant(), OTHER, DIR),
            "never opened"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_directory_whose_names_changed_before_the_grant_is_not_leased() {
        let leases = leased();
        let pending = leases.begin_grant();
        let new_dir = InodeId(11);
        let _ = leases
            .before_change(OTHER, &NameChanges::In(vec![new_dir]))
            .await;
        assert!(!leases.grant(pending, HOLDER, new_dir));
        let pending = leases.begin_grant();
        assert!(leases.grant(pending, HOLDER, new_dir), "the next one is");
    }

    /// `leases` with `OTHER` waiting for recalls too.
    fn both_polling(leases: Arc<DirLeases>) -> Arc<DirLeases> {
        leases.open(OTHER);
        leases.lock().pollers.get_mut(&OTHER).unwrap().client = Some(HOLDER_CLIENT + 1);
        leases
    }

    #[tokio::test(start_paused = true)]
    async fn a_change_of_another_session_under_way_at_any_time_during_a_grant_refuses_it() {
        let leases = polling();
        let change = leases
            .before_change(OTHER, &NameChanges::In(vec![DIR]))
            .await;
        let pending = leases.begin_grant();
        assert!(!leases.grant(pending, HOLDER, DIR), "under way");
        drop(change);

        let pending = leases.begin_grant();
        let change = leases
            .before_change(OTHER, &NameChanges::In(vec![DIR]))
            .await;
        assert!(
            !leases.grant(pending, HOLDER, DIR),
            "begun during the grant"
        );

        let pending = leases.begin_grant();
        drop(change);
        assert!(
            !leases.grant(pending, HOLDER, DIR),
            "ended during the grant"
        );

        let change = leases
            .before_change(OTHER, &NameChanges::In(vec![DIR]))
            .await;
        let pending = leases.begin_grant();
        drop(change);
        assert!(
            !leases.grant(pending, HOLDER, DIR),
            "begun before the grant, ended during it"
        );
        assert!(leases.grant(leases.begin_grant(), HOLDER, DIR));
    }

    #[tokio::test(start_paused = true)]
    async fn a_session_is_not_granted_a_lease_it_holds_or_had_recalled_lately() {
        let leases = both_polling(leased());
        assert!(
            !leases.may_lease(HOLDER, DIR) && !leases.grant(leases.begin_grant(), HOLDER, DIR),
            "held already: a give-back of it may be on its way"
        );
        let change = changing(&leases, OTHER);
        let _ = leases
            .await_recalls(HOLDER, HOLDER_CLIENT, &[], &[], RECALL_POLL)
            .await;
        let _ = leases
            .await_recalls(HOLDER, HOLDER_CLIENT, &[DIR], &[], Duration::ZERO)
            .await;
        change.await.unwrap();
        assert!(!leases.may_lease(HOLDER, DIR), "recalled lately");
        assert!(leases.may_lease(OTHER, DIR));
        tokio::time::sleep(LEASE_HOLD_OFF).await;
        assert!(leases.grant(leases.begin_grant(), HOLDER, DIR));
    }

    #[tokio::test(start_paused = true)]
    async fn a_directory_a_snapshot_fills_is_recalled_and_not_leased_until_it_is_full() {
        let leases = both_polling(leased());
        let filling = tokio::spawn({
            let leases = leases.clone();
            async move {
                let _guard = leases.before_filling(DIR).await;
                let refused = !leases.grant(leases.begin_grant(), OTHER, DIR);
                tokio::time::sleep(Duration::from_secs(1)).await;
                refused
            }
        });
        let (recalled, _) = leases
            .await_recalls(HOLDER, HOLDER_CLIENT, &[], &[], RECALL_POLL)
            .await;
        assert_eq!(
            recalled,
            vec![DIR],
            "the holder's own lease is recalled too"
        );
        let _ = leases
            .await_recalls(HOLDER, HOLDER_CLIENT, &[DIR], &[], Duration::ZERO)
            .await;
        let pending = leases.begin_grant();
        assert!(filling.await.unwrap(), "leased while being filled");
        assert!(
            !leases.grant(pending, OTHER, DIR),
            "a grant begun while it was being filled"
        );
        assert!(leases.grant(leases.begin_grant(), OTHER, DIR));
    }

    #[tokio::test(start_paused = true)]
    async fn the_sessions_own_changes_under_way_do_not_refuse_its_grant() {
        let leases = polling();
        let change = leases
            .before_change(HOLDER, &NameChanges::In(vec![DIR]))
            .await;
        let pending = leases.begin_grant();
        let ended = leases
            .before_change(HOLDER, &NameChanges::In(vec![DIR]))
            .await;
        drop(ended);
        assert!(leases.grant(pending, HOLDER, DIR));
        drop(change);
        assert!(leases.lock().changing.is_empty());
    }

    #[tokio::test(start_paused = true)]
    async fn a_lease_another_session_holds_is_granted_once_its_recall_comes_back() {
        let leases = both_polling(leased());
        assert!(!leases.grant(leases.begin_grant(), OTHER, DIR), "held");
        drop(changing(&leases, OTHER));
        let (recalled, _) = leases
            .await_recalls(HOLDER, HOLDER_CLIENT, &[], &[], RECALL_POLL)
            .await;
        assert_eq!(recalled, vec![DIR]);
        let asking = tokio::spawn({
            let leases = leases.clone();
            async move {
                leases.returned(OTHER, DIR).await;
                leases.grant(leases.begin_grant(), OTHER, DIR)
            }
        });
        tokio::time::sleep(Duration::from_millis(500)).await;
        assert!(
            !asking.is_finished(),
            "did not wait for the lease to come back"
        );
        let giving_back = tokio::spawn({
            let leases = leases.clone();
            async move {
                leases
                    .await_recalls(HOLDER, HOLDER_CLIENT, &[DIR], &[], RECALL_POLL)
                    .await
            }
        });
        assert!(asking.await.unwrap(), "granted once given back");
        giving_back.abort();
    }

    #[tokio::test(start_paused = true)]
    async fn no_lease_is_granted_while_a_change_anywhere_is_under_way() {
        let leases = polling();
        let guard = leases.before_change(OTHER, &NameChanges::Anywhere).await;
        assert!(!leases.grant(leases.begin_grant(), HOLDER, DIR));
        drop(guard);
        assert!(leases.grant(leases.begin_grant(), HOLDER, DIR));
    }

    #[tokio::test(start_paused = true)]
    async fn the_holders_own_changes_go_ahead_at_once() {
        let leases = leased();
        tokio::time::timeout(Duration::from_millis(1), changing(&leases, HOLDER))
            .await
            .expect("the holder waited for its own lease")
            .unwrap();
    }

    #[tokio::test(start_paused = true)]
    async fn another_sessions_change_waits_until_the_holder_gives_the_lease_back() {
        let leases = leased();
        let change = changing(&leases, OTHER);
        let (recalled, _) = leases
            .await_recalls(HOLDER, HOLDER_CLIENT, &[], &[], RECALL_POLL)
            .await;
        assert_eq!(recalled, vec![DIR]);
        tokio::time::sleep(Duration::from_secs(1)).await;
        assert!(
            !change.is_finished(),
            "went ahead before the lease came back"
        );
        let start = Instant::now();
        let next = tokio::spawn({
            let leases = leases.clone();
            async move {
                leases
                    .await_recalls(HOLDER, HOLDER_CLIENT, &[DIR], &[], RECALL_POLL)
                    .await
            }
        });
        change.await.unwrap();
        assert!(start.elapsed() < Duration::from_millis(10));
        next.abort();
        assert!(!leases.lock().leases.contains_key(&DIR));
    }

    #[tokio::test(start_paused = true)]
    async fn a_holder_that_never_answers_is_waited_for_until_the_lease_runs_out() {
        let leases = leased();
        let start = Instant::now();
        let _ = leases.before_change(OTHER, &NameChanges::Anywhere).await;
        let waited = start.elapsed();
        assert!(waited >= DIR_LEASE - Duration::from_millis(1), "{waited:?}");
        assert!(waited <= DIR_LEASE + Duration::from_secs(1), "{waited:?}");
    }

    #[tokio::test(start_paused = true)]
    async fn a_lease_outlives_its_sessions_connection_until_given_back_by_the_same_client() {
        let leases = leased();
        let _ = leases
            .await_recalls(HOLDER, HOLDER_CLIENT, &[], &[], Duration::ZERO)
            .await;
        leases.release_session(HOLDER);
        let change = changing(&leases, OTHER);
        tokio::time::sleep(Duration::from_secs(1)).await;
        assert!(
            !change.is_finished(),
            "went ahead while the holder may still use its lease"
        );
        let give_back = |session: SessionId, client: u64| {
            leases.open(session);
            let leases = leases.clone();
            tokio::spawn(async move {
                leases
                    .await_recalls(session, client, &[DIR], &[], RECALL_POLL)
                    .await
            })
        };
        let stranger = give_back(SessionId(3), HOLDER_CLIENT + 1);
        tokio::time::sleep(Duration::from_secs(1)).await;
        assert!(
            !change.is_finished(),
            "another client gave back a lease it was not granted"
        );
        let reconnected = give_back(SessionId(4), HOLDER_CLIENT);
        tokio::time::timeout(Duration::from_millis(10), change)
            .await
            .expect("still waiting after the lease was given back")
            .unwrap();
        stranger.abort();
        reconnected.abort();
        let pending = leases.begin_grant();
        assert!(
            !leases.grant(pending, HOLDER, InodeId(12)),
            "a gone session got a lease"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_client_gives_back_its_earlier_sessions_leases_before_they_are_seen_closed() {
        let leases = polling();
        let _ = leases
            .await_recalls(HOLDER, HOLDER_CLIENT, &[], &[], Duration::ZERO)
            .await;
        assert!(leases.grant(leases.begin_grant(), HOLDER, DIR));
        let change = changing(&leases, OTHER);
        tokio::time::sleep(Duration::from_secs(1)).await;
        assert!(!change.is_finished(), "went ahead while the lease is held");
        let earlier = SessionId(0);
        leases.open(earlier);
        let _ = leases
            .await_recalls(earlier, HOLDER_CLIENT, &[DIR], &[], Duration::ZERO)
            .await;
        assert!(
            leases.lock().leases.contains_key(&DIR),
            "an earlier session gave back a later one's lease"
        );
        let later = SessionId(5);
        leases.open(later);
        let (_, renewed) = leases
            .await_recalls(later, HOLDER_CLIENT, &[DIR], &[], RECALL_POLL)
            .await;
        assert!(renewed.is_empty());
        tokio::time::timeout(Duration::from_millis(10), change)
            .await
            .expect("still waiting after the lease was given back")
            .unwrap();
    }

    #[tokio::test(start_paused = true)]
    async fn a_give_back_read_after_the_connection_closed_still_counts_and_is_answered_at_once() {
        let leases = leased();
        let change = changing(&leases, OTHER);
        leases.release_session(HOLDER);
        let _ = leases
            .await_recalls(HOLDER, HOLDER_CLIENT, &[DIR], &[], RECALL_POLL)
            .await;
        tokio::time::timeout(Duration::from_millis(10), change)
            .await
            .expect("still waiting after the lease was given back")
            .unwrap();
        let leases = leased();
        let start = Instant::now();
        let _ = leases
            .await_recalls(HOLDER, HOLDER_CLIENT, &[DIR], &[], RECALL_POLL)
            .await;
        assert_eq!(
            start.elapsed(),
            Duration::ZERO,
            "a wait that gave back every lease"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_change_anywhere_recalls_the_changers_own_leases_too() {
        let leases = leased();
        let change = tokio::spawn({
            let leases = leases.clone();
            async move {
                let _ = leases.before_change(HOLDER, &NameChanges::Anywhere).await;
            }
        });
        let (recalled, _) = leases
            .await_recalls(HOLDER, HOLDER_CLIENT, &[], &[], RECALL_POLL)
            .await;
        assert_eq!(recalled, vec![DIR]);
        let _ = tokio::time::timeout(
            Duration::from_millis(1),
            leases.await_recalls(HOLDER, HOLDER_CLIENT, &[DIR], &[], RECALL_POLL),
        )
        .await;
        tokio::time::timeout(Duration::from_millis(10), change)
            .await
            .expect("still waiting after the lease came back")
            .unwrap();
    }

    #[tokio::test(start_paused = true)]
    async fn a_restore_under_way_when_a_directory_is_made_keeps_it_unleased() {
        let leases = leased();
        let restore = leases.before_change(OTHER, &NameChanges::Anywhere).await;
        let pending = leases.begin_grant();
        drop(restore);
        assert!(!leases.grant(pending, HOLDER, InodeId(11)));
    }

    #[tokio::test(start_paused = true)]
    async fn changes_older_than_every_pending_grant_are_forgotten_and_refuse_nothing() {
        let leases = leased();
        let dir = InodeId(11);
        let first = leases.begin_grant();
        let _ = leases
            .before_change(OTHER, &NameChanges::In(vec![dir]))
            .await;
        let second = leases.begin_grant();
        drop(first);
        assert!(
            leases.lock().touched.is_empty(),
            "kept a change older than every pending grant"
        );
        assert!(leases.grant(second, HOLDER, dir));
    }

    #[tokio::test(start_paused = true)]
    async fn a_restore_that_came_and_went_during_a_grant_refuses_it() {
        let leases = polling();
        let pending = leases.begin_grant();
        drop(leases.before_change(OTHER, &NameChanges::Anywhere).await);
        assert!(!leases.grant(pending, HOLDER, DIR));
    }

    #[tokio::test(start_paused = true)]
    async fn the_first_wait_for_recalls_is_answered_at_once() {
        let leases = DirLeases::default();
        leases.open(HOLDER);
        let start = Instant::now();
        leases
            .await_recalls(HOLDER, HOLDER_CLIENT, &[], &[], RECALL_POLL)
            .await;
        assert!(start.elapsed() < Duration::from_millis(1));
        leases
            .await_recalls(HOLDER, HOLDER_CLIENT, &[], &[], RECALL_POLL)
            .await;
        assert!(start.elapsed() >= RECALL_POLL);
    }

    #[tokio::test(start_paused = true)]
    async fn a_wait_for_recalls_comes_back_in_time_to_renew_a_lease() {
        let leases = Arc::new(DirLeases::default());
        leases.open(HOLDER);
        leases
            .await_recalls(HOLDER, HOLDER_CLIENT, &[], &[], RECALL_POLL)
            .await;
        let start = Instant::now();
        let (recalled, renewed) = leases
            .await_recalls(HOLDER, HOLDER_CLIENT, &[], &[], Duration::from_secs(3))
            .await;
        assert!(recalled.is_empty() && renewed.is_empty());
        assert!(start.elapsed() >= Duration::from_secs(3));
        let poll = tokio::spawn({
            let leases = leases.clone();
            async move {
                leases
                    .await_recalls(HOLDER, HOLDER_CLIENT, &[], &[], RECALL_POLL)
                    .await
            }
        });
        tokio::time::sleep(Duration::from_secs(1)).await;
        let granted_at = Instant::now();
        assert!(leases.grant(leases.begin_grant(), HOLDER, DIR));
        poll.await.unwrap();
        assert!(
            granted_at.elapsed() <= RENEW_POLL,
            "{:?}",
            granted_at.elapsed()
        );
    }

    #[tokio::test(start_paused = true)]
    async fn renewing_keeps_a_lease_past_its_first_term_but_not_a_recalled_one() {
        let leases = leased();
        tokio::time::sleep(DIR_LEASE - Duration::from_secs(1)).await;
        let (_, renewed) = leases
            .await_recalls(HOLDER, HOLDER_CLIENT, &[], &[DIR], Duration::ZERO)
            .await;
        assert_eq!(renewed, vec![DIR]);
        tokio::time::sleep(Duration::from_secs(2)).await;
        assert_eq!(leases.recall(Some(OTHER), &[DIR]), vec![DIR], "ran out");
        let (recalled, renewed) = leases
            .await_recalls(HOLDER, HOLDER_CLIENT, &[], &[DIR], Duration::ZERO)
            .await;
        assert_eq!(recalled, vec![DIR]);
        assert!(renewed.is_empty(), "a recalled lease was renewed");
    }
}
