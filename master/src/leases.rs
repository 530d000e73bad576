//! Write leases: one writer per chunk of a file at a time. Another writer waits until the lease
//! is ended, its session goes away, or it times out unrenewed. A holder that outlives its lease
//! is fenced off by the chunk version, which the next lease bumps.
//!
//! A snapshot holds a whole file ([`Leases::hold_file`]): new leases on its chunks wait, and the
//! snapshot waits for the ones held to end, so no write under a lease lands in a chunk after the
//! snapshot shares it without first copying it. (A writer whose lease lapsed under it is not
//! fenced off by a snapshot, which bumps no version.)

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use elkfs_proto::{ChunkId, InodeId, SessionId};
use tokio::sync::Notify;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// Which chunk slot a lease covers.
pub type LeaseKey = (InodeId, u32);

/// The key of a file's append lease (`AppendBegin`), which orders appenders; their data goes
/// under the leases of the chunks it lands in.
pub const APPEND_SLOT: u32 = u32::MAX;

struct Lease {
    holder: SessionId,
    expires: Instant,
    chunk: Option<ChunkId>,
    /// A retry left servers out of its chain: the chunk may be short of copies once written.
    short: bool,
}

#[derive(Default)]
struct Table {
    leases: HashMap<LeaseKey, Lease>,
    /// Files whose chunks take no new lease for now, with how many holds each has.
    held_files: HashMap<InodeId, usize>,
    /// Slots whose writer's lease ended without a report of what it wrote (its session went
    /// away, the lease lapsed, or a retry was refused), with when that stops counting.
    unreported: HashMap<LeaseKey, Instant>,
}

impl Table {
    /// When the last live lease on one of `inode`'s chunks expires; `None` when none is left.
    fn chunk_leases_until(&self, inode: InodeId, now: Instant) -> Option<Instant> {
        self.leases
            .iter()
            .filter(|((i, slot), l)| *i == inode && *slot != APPEND_SLOT && l.expires > now)
            .map(|(_, l)| l.expires)
            .max()
    }

    /// Removes the lease on `key` if `session` holds it.
    fn remove_held(&mut self, key: LeaseKey, session: SessionId) -> Option<Lease> {
        match self.leases.get(&key) {
            Some(l) if l.holder == session => self.leases.remove(&key),
            _ => None,
        }
    }

    /// Notes that the lease on `key`, writing a chunk, ended without a report.
    fn note_unreported(&mut self, key: LeaseKey, lease: &Lease, grace: Duration) {
        if lease.chunk.is_none() || key.1 == APPEND_SLOT {
            return;
        }
        let now = Instant::now();
        self.unreported.retain(|_, until| *until > now);
        self.unreported.insert(key, now + grace);
    }
}

/// What one try at taking a lease found.
enum Attempt {
    Taken,
    /// Another session holds it, until then unless renewed or released.
    HeldUntil(Instant),
    /// Its file is held ([`Leases::hold_file`]).
    FileHeld,
}

/// Every lease currently held.
pub struct Leases {
    table: Mutex<Table>,
    released: Notify,
    timeout: Duration,
    unreported_grace: Duration,
    /// Leases are not kept across restarts: until `unreported_grace` after this, any slot may
    /// have been written under a lease the previous run handed out.
    started: Instant,
}

/// New leases on a file's chunks wait while this lives (see [`Leases::hold_file`]).
pub struct FileHold<'a> {
    leases: &'a Leases,
    inode: InodeId,
}

impl Drop for FileHold<'_> {
    fn drop(&mut self) {
        {
            let mut table = self.leases.lock();
            if let Some(n) = table.held_files.get_mut(&self.inode) {
                *n -= 1;
                if *n == 0 {
                    table.held_files.remove(&self.inode);
                }
            }
        }
        self.leases.released.notify_waiters();
    }
}

impl Leases {
    /// An empty table whose leases last `timeout` unless renewed. A slot whose writer's lease
    /// ended without a report counts as written but unreported for `unreported_grace`
    /// ([`Leases::written_unreported_lately`]).
    pub fn new(timeout: Duration, unreported_grace: Duration) -> Leases {
        Leases {
            table: Mutex::new(Table::default()),
            released: Notify::new(),
            timeout,
            unreported_grace,
            started: Instant::now(),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Table> {
        self.table.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Takes (or renews) the lease on `key` for `session`, waiting while another session holds it
    /// or the file is held ([`Leases::hold_file`]; a lease `session` holds already is renewed).
    pub async fn acquire(&self, key: LeaseKey, session: SessionId) {
        loop {
            let notified = self.released.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            match self.try_take(key, session) {
                Attempt::Taken => return,
                Attempt::HeldUntil(t) => {
                    tokio::select! {
                        _ = notified => {}
                        _ = tokio::time::sleep_until(t) => {}
                    }
                }
                Attempt::FileHeld => notified.await,
            }
        }
    }

    /// [`Leases::acquire`] without the wait: whether `session` holds the lease on `key` now.
    /// For work that had better leave a slot alone than wait for its writer.
    pub fn try_acquire(&self, key: LeaseKey, session: SessionId) -> bool {
        matches!(self.try_take(key, session), Attempt::Taken)
    }

    fn try_take(&self, key: LeaseKey, session: SessionId) -> Attempt {
        let mut table = self.lock();
        let now = Instant::now();
        let file_held = key.1 != APPEND_SLOT && table.held_files.contains_key(&key.0);
        match table.leases.get_mut(&key) {
            Some(l) if l.expires > now && l.holder != session => Attempt::HeldUntil(l.expires),
            Some(l) if l.expires > now => {
                l.expires = now + self.timeout;
                Attempt::Taken
            }
            _ if file_held => Attempt::FileHeld,
            _ => {
                let lapsed = table.leases.remove(&key);
                // Its own lapsed lease keeps the chunk it was writing: a refused retry
                // must still count as ending a write without a report.
                let chunk = match lapsed {
                    Some(old) if old.holder == session => old.chunk,
                    Some(old) => {
                        table.note_unreported(key, &old, self.unreported_grace);
                        None
                    }
                    None => None,
                };
                table.leases.insert(
                    key,
                    Lease {
                        holder: session,
                        expires: now + self.timeout,
                        chunk,
                        short: false,
                    },
                );
                Attempt::Taken
            }
        }
    }

    /// [`Leases::acquire`] for a request whose connection may close meanwhile (`ended`):
    /// whether the lease was taken. A lease taken for a session that is gone would keep the slot
    /// from everyone until it timed out (the connection's end released the session's leases
    /// already, so one taken after it is let go here).
    pub async fn acquire_unless(
        &self,
        key: LeaseKey,
        session: SessionId,
        ended: &CancellationToken,
    ) -> bool {
        tokio::select! {
            () = self.acquire(key, session) => {}
            () = ended.cancelled() => return false,
        }
        if ended.is_cancelled() {
            // A lease renewed here may have been writing: its writer has not reported.
            self.release_unreported(key, session);
            return false;
        }
        true
    }

    /// Holds back new leases on `inode`'s chunks and waits until none is held any more (ended,
    /// its session gone, or timed out); they stay held back until the returned hold is dropped.
    pub async fn hold_file(&self, inode: InodeId) -> FileHold<'_> {
        *self.lock().held_files.entry(inode).or_default() += 1;
        let hold = FileHold {
            leases: self,
            inode,
        };
        loop {
            let notified = self.released.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            let Some(until) = self.lock().chunk_leases_until(inode, Instant::now()) else {
                return hold;
            };
            tokio::select! {
                _ = notified => {}
                _ = tokio::time::sleep_until(until) => {}
            }
        }
    }

    /// Whether `session` holds the lease on `key` (renewing it if so).
    pub fn renew(&self, key: LeaseKey, session: SessionId) -> bool {
        let mut table = self.lock();
        match table.leases.get_mut(&key) {
            Some(l) if l.holder == session => {
                l.expires = Instant::now() + self.timeout;
                true
            }
            _ => false,
        }
    }

    /// Records which chunk a held lease is writing.
    pub fn set_chunk(&self, key: LeaseKey, session: SessionId, chunk: ChunkId) {
        if let Some(l) = self.lock().leases.get_mut(&key)
            && l.holder == session
        {
            l.chunk = Some(chunk);
        }
    }

    /// Whether a live lease is writing `chunk` (its copies must not be copied or deleted now).
    pub fn chunk_busy(&self, chunk: ChunkId) -> bool {
        let now = Instant::now();
        self.lock()
            .leases
            .values()
            .any(|l| l.chunk == Some(chunk) && l.expires > now)
    }

    /// Notes that the held lease's chain left servers out (a retry after a failure).
    pub fn mark_short(&self, key: LeaseKey, session: SessionId) {
        if let Some(l) = self.lock().leases.get_mut(&key)
            && l.holder == session
        {
            l.short = true;
        }
    }

    /// Ends `session`'s lease on `key`, if it holds it; returns whether its chain had left
    /// servers out (the replication worker should look at the chunk now that it is free).
    pub fn release(&self, key: LeaseKey, session: SessionId) -> bool {
        let removed = self.lock().remove_held(key, session);
        let Some(lease) = removed else {
            return false;
        };
        self.released.notify_waiters();
        lease.short
    }

    /// Ends `session`'s lease on `key` without a report of what was written under it (a retry
    /// refused): see [`Leases::written_unreported_lately`].
    pub fn release_unreported(&self, key: LeaseKey, session: SessionId) {
        {
            let mut table = self.lock();
            let Some(lease) = table.remove_held(key, session) else {
                return;
            };
            table.note_unreported(key, &lease, self.unreported_grace);
        }
        self.released.notify_waiters();
    }

    /// Ends every lease of a session that went away.
    pub fn release_session(&self, session: SessionId) {
        {
            let mut table = self.lock();
            let ended: Vec<(LeaseKey, Lease)> = table
                .leases
                .extract_if(|_, l| l.holder == session)
                .collect();
            for (key, lease) in &ended {
                table.note_unreported(*key, lease, self.unreported_grace);
            }
        }
        self.released.notify_waiters();
    }

    /// Whether a writer's lease on `key` ended lately without a report of what it wrote. Its
    /// writer may be alive and on its way back (a connection cut, a master restart): data it
    /// stored past the file's end is not yet covered by the file's length, and must not be
    /// taken for a dead writer's leftovers while it may still report it. Every slot counts so
    /// until the grace has passed since the master started.
    pub fn written_unreported_lately(&self, key: LeaseKey) -> bool {
        let now = Instant::now();
        if now < self.started + self.unreported_grace {
            return true;
        }
        self.lock()
            .unreported
            .get(&key)
            .is_some_and(|until| *until > now)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: LeaseKey = (InodeId(5), 0);

    #[tokio::test]
    async fn a_second_writer_waits_until_the_first_releases() {
        let leases = std::sync::Arc::new(Leases::new(
            Duration::from_secs(60),
            Duration::from_secs(60),
        ));
        leases.acquire(KEY, SessionId(1)).await;
        let l2 = leases.clone();
        let waiter = tokio::spawn(async move { l2.acquire(KEY, SessionId(2)).await });
        tokio::task::yield_now().await;
        assert!(!waiter.is_finished());
        leases.release(KEY, SessionId(1));
        waiter.await.unwrap();
        assert!(leases.renew(KEY, SessionId(2)));
        assert!(!leases.renew(KEY, SessionId(1)));
    }

    #[tokio::test]
    async fn a_lease_whose_chain_left_servers_out_says_so_when_it_ends() {
        let leases = Leases::new(Duration::from_secs(60), Duration::from_secs(60));
        leases.acquire(KEY, SessionId(1)).await;
        assert!(!leases.release(KEY, SessionId(1)));
        leases.acquire(KEY, SessionId(1)).await;
        leases.mark_short(KEY, SessionId(2));
        assert!(!leases.release(KEY, SessionId(2)), "not its lease");
        leases.mark_short(KEY, SessionId(1));
        assert!(leases.release(KEY, SessionId(1)));
        leases.acquire(KEY, SessionId(1)).await;
        assert!(
            !leases.release(KEY, SessionId(1)),
            "a new lease starts whole"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn an_unrenewed_lease_expires() {
        let leases = Leases::new(Duration::from_secs(60), Duration::from_secs(60));
        leases.acquire(KEY, SessionId(1)).await;
        leases.acquire(KEY, SessionId(2)).await;
        assert!(leases.renew(KEY, SessionId(2)));
    }

    #[tokio::test]
    async fn a_held_file_waits_for_its_leases_and_holds_back_new_ones_until_let_go() {
        let leases = std::sync::Arc::new(Leases::new(
            Duration::from_secs(60),
            Duration::from_secs(60),
        ));
        let (file, other) = (InodeId(5), InodeId(6));
        leases.acquire((file, 0), SessionId(1)).await;
        leases.acquire((file, APPEND_SLOT), SessionId(3)).await;
        let l = leases.clone();
        let snapshot = tokio::spawn(async move {
            let _hold = l.hold_file(file).await;
            tokio::time::sleep(Duration::from_millis(50)).await;
        });
        tokio::task::yield_now().await;
        assert!(!snapshot.is_finished(), "slot 0 is still leased");
        // The holder renews what it has; nobody takes a new lease on the file meanwhile.
        leases.acquire((file, 0), SessionId(1)).await;
        let l = leases.clone();
        let writer = tokio::spawn(async move { l.acquire((file, 1), SessionId(2)).await });
        leases.acquire((other, 0), SessionId(2)).await;
        leases.release((file, 0), SessionId(1));
        tokio::task::yield_now().await;
        assert!(!writer.is_finished(), "the file is held");
        snapshot.await.unwrap();
        writer.await.unwrap();
        assert!(leases.renew((file, 1), SessionId(2)));
        assert!(
            leases.renew((file, APPEND_SLOT), SessionId(3)),
            "an append lease is not waited for"
        );
    }

    #[tokio::test]
    async fn a_request_whose_connection_closed_while_it_waited_takes_no_lease() {
        let leases = std::sync::Arc::new(Leases::new(
            Duration::from_secs(60),
            Duration::from_secs(60),
        ));
        leases.acquire(KEY, SessionId(1)).await;
        let ended = CancellationToken::new();
        let l = leases.clone();
        let e = ended.clone();
        let waiter = tokio::spawn(async move { l.acquire_unless(KEY, SessionId(2), &e).await });
        tokio::task::yield_now().await;
        ended.cancel();
        leases.release(KEY, SessionId(1));
        assert!(!waiter.await.unwrap());
        assert!(
            !leases.renew(KEY, SessionId(2)),
            "the gone session holds it"
        );
        let open = CancellationToken::new();
        assert!(leases.acquire_unless(KEY, SessionId(3), &open).await);
        open.cancel();
        assert!(
            !leases
                .acquire_unless((InodeId(9), 0), SessionId(3), &open)
                .await
        );
        assert!(!leases.renew((InodeId(9), 0), SessionId(3)));
    }

    const GRACE: Duration = Duration::from_secs(10);

    /// `session` takes the lease on `key` and is granted `chunk` under it.
    async fn writing(leases: &Leases, key: LeaseKey, session: SessionId, chunk: ChunkId) {
        leases.acquire(key, session).await;
        leases.set_chunk(key, session, chunk);
    }

    /// A table past its start-up grace, so only leases that ended count as unreported.
    async fn settled_table() -> Leases {
        let leases = Leases::new(Duration::from_secs(60), GRACE);
        assert!(
            leases.written_unreported_lately(KEY),
            "every slot counts as written unreported right after a start"
        );
        tokio::time::advance(GRACE + Duration::from_secs(1)).await;
        assert!(!leases.written_unreported_lately(KEY));
        leases
    }

    #[tokio::test(start_paused = true)]
    async fn a_writing_lease_that_ends_with_its_session_marks_its_slot_for_the_grace_only() {
        let leases = settled_table().await;
        let other = (InodeId(5), 1);
        writing(&leases, KEY, SessionId(1), ChunkId(7)).await;
        leases.acquire(other, SessionId(1)).await;
        leases.release_session(SessionId(1));
        assert!(leases.written_unreported_lately(KEY));
        assert!(
            !leases.written_unreported_lately(other),
            "a lease that was never granted a chunk wrote nothing"
        );
        tokio::time::advance(GRACE + Duration::from_secs(1)).await;
        assert!(!leases.written_unreported_lately(KEY));
    }

    #[tokio::test(start_paused = true)]
    async fn a_lease_ended_with_a_report_leaves_nothing_unreported() {
        let leases = settled_table().await;
        writing(&leases, KEY, SessionId(1), ChunkId(7)).await;
        leases.release(KEY, SessionId(1));
        assert!(!leases.written_unreported_lately(KEY));
    }

    #[tokio::test(start_paused = true)]
    async fn a_refused_retry_and_a_lapsed_lease_taken_over_mark_their_slots() {
        let leases = settled_table().await;
        writing(&leases, KEY, SessionId(1), ChunkId(7)).await;
        leases.release_unreported(KEY, SessionId(2));
        assert!(
            !leases.written_unreported_lately(KEY),
            "only the holder ends a lease"
        );
        leases.release_unreported(KEY, SessionId(1));
        assert!(leases.written_unreported_lately(KEY));

        let lapsing = (InodeId(6), 0);
        writing(&leases, lapsing, SessionId(1), ChunkId(8)).await;
        tokio::time::advance(Duration::from_secs(61)).await;
        leases.acquire(lapsing, SessionId(2)).await;
        assert!(leases.written_unreported_lately(lapsing));

        // Its own lapsed lease retaken, then the retry refused.
        let own = (InodeId(7), 0);
        writing(&leases, own, SessionId(3), ChunkId(9)).await;
        tokio::time::advance(Duration::from_secs(61)).await;
        leases.acquire(own, SessionId(3)).await;
        leases.release_unreported(own, SessionId(3));
        assert!(leases.written_unreported_lately(own));
        assert!(
            !leases.written_unreported_lately(KEY),
            "the first mark's grace has passed"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_try_takes_a_free_or_lapsed_lease_and_leaves_a_held_one() {
        let leases = settled_table().await;
        writing(&leases, KEY, SessionId(1), ChunkId(7)).await;
        assert!(
            !leases.try_acquire(KEY, SessionId(2)),
            "another session holds it"
        );
        assert!(
            leases.try_acquire(KEY, SessionId(1)),
            "its holder renews it"
        );

        tokio::time::advance(Duration::from_secs(61)).await;
        assert!(leases.try_acquire(KEY, SessionId(2)), "the lease lapsed");
        assert!(
            leases.written_unreported_lately(KEY),
            "a lapsed writing lease taken over by a try counts as written unreported"
        );
        assert!(!leases.try_acquire(KEY, SessionId(1)));
        leases.release(KEY, SessionId(2));

        let held = (InodeId(6), 0);
        let hold = leases.hold_file(held.0).await;
        assert!(
            !leases.try_acquire(held, SessionId(3)),
            "a snapshot holds the file"
        );
        drop(hold);
        assert!(leases.try_acquire(held, SessionId(3)));
    }
}
