//! Write leases: one writer per chunk of a file at a time. Another writer waits until the lease
//! is ended, its session goes away, or it times out unrenewed. A holder that outlives its lease
//! is fenced off by the chunk version, which the next lease bumps.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use elkfs_proto::{ChunkId, InodeId, SessionId};
use tokio::sync::Notify;
use tokio::time::Instant;

/// Which chunk slot a lease covers.
pub type LeaseKey = (InodeId, u32);

struct Lease {
    holder: SessionId,
    expires: Instant,
    chunk: Option<ChunkId>,
    /// A retry left servers out of its chain: the chunk may be short of copies once written.
    short: bool,
}

/// Every lease currently held.
pub struct Leases {
    held: Mutex<HashMap<LeaseKey, Lease>>,
    released: Notify,
    timeout: Duration,
}

impl Leases {
    /// An empty table whose leases last `timeout` unless renewed.
    pub fn new(timeout: Duration) -> Leases {
        Leases {
            held: Mutex::new(HashMap::new()),
            released: Notify::new(),
            timeout,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<LeaseKey, Lease>> {
        self.held.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Takes (or renews) the lease on `key` for `session`, waiting while another session holds it.
    pub async fn acquire(&self, key: LeaseKey, session: SessionId) {
        loop {
            let notified = self.released.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            let wait_until = {
                let mut held = self.lock();
                let now = Instant::now();
                match held.get(&key) {
                    Some(l) if l.holder != session && l.expires > now => l.expires,
                    _ => {
                        held.insert(
                            key,
                            Lease {
                                holder: session,
                                expires: now + self.timeout,
                                chunk: None,
                                short: false,
                            },
                        );
                        return;
                    }
                }
            };
            tokio::select! {
                _ = notified => {}
                _ = tokio::time::sleep_until(wait_until) => {}
            }
        }
    }

    /// Whether `session` holds the lease on `key` (renewing it if so).
    pub fn renew(&self, key: LeaseKey, session: SessionId) -> bool {
        let mut held = self.lock();
        match held.get_mut(&key) {
            Some(l) if l.holder == session => {
                l.expires = Instant::now() + self.timeout;
                true
            }
            _ => false,
        }
    }

    /// Records which chunk a held lease is writing.
    pub fn set_chunk(&self, key: LeaseKey, session: SessionId, chunk: ChunkId) {
        if let Some(l) = self.lock().get_mut(&key)
            && l.holder == session
        {
            l.chunk = Some(chunk);
        }
    }

    /// Whether a live lease is writing `chunk` (its copies must not be copied or deleted now).
    pub fn chunk_busy(&self, chunk: ChunkId) -> bool {
        let now = Instant::now();
        self.lock()
            .values()
            .any(|l| l.chunk == Some(chunk) && l.expires > now)
    }

    /// The chunk slots of `inode` that some session holds a live lease on.
    pub fn held_slots(&self, inode: InodeId) -> Vec<u32> {
        let now = Instant::now();
        self.lock()
            .iter()
            .filter(|((i, _), l)| *i == inode && l.expires > now)
            .map(|((_, index), _)| *index)
            .collect()
    }

    /// Notes that the held lease's chain left servers out (a retry after a failure).
    pub fn mark_short(&self, key: LeaseKey, session: SessionId) {
        if let Some(l) = self.lock().get_mut(&key)
            && l.holder == session
        {
            l.short = true;
        }
    }

    /// Ends `session`'s lease on `key`, if it holds it; returns whether its chain had left
    /// servers out (the replication worker should look at the chunk now that it is free).
    pub fn release(&self, key: LeaseKey, session: SessionId) -> bool {
        let removed = {
            let mut held = self.lock();
            match held.get(&key) {
                Some(l) if l.holder == session => held.remove(&key),
                _ => None,
            }
        };
        let Some(lease) = removed else {
            return false;
        };
        self.released.notify_waiters();
        lease.short
    }

    /// Ends every lease of a session that went away.
    pub fn release_session(&self, session: SessionId) {
        self.lock().retain(|_, l| l.holder != session);
        self.released.notify_waiters();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: LeaseKey = (InodeId(5), 0);

    #[tokio::test]
    async fn a_second_writer_waits_until_the_first_releases() {
        let leases = std::sync::Arc::new(Leases::new(Duration::from_secs(60)));
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
        let leases = Leases::new(Duration::from_secs(60));
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
        let leases = Leases::new(Duration::from_secs(60));
        leases.acquire(KEY, SessionId(1)).await;
        leases.acquire(KEY, SessionId(2)).await;
        assert!(leases.renew(KEY, SessionId(2)));
    }
}
