//! Closes on their way to the master. The kernel does not wait for a file's RELEASE before it
//! sends the next request, so an unlink could otherwise reach the master before the close of the
//! same file, and the master would keep a file with no trash time as unlinked-but-open instead
//! of purging it. A close is counted here before the kernel's RELEASE is answered, and requests
//! that drop names wait until every close counted before them has reached the master.
//!
//! Closes wait a short while ([`CLOSE_DELAY`]) in a queue and go to the master together, in one
//! request. One request per close cost about a fifth of the time of a create (open, close) on a
//! small machine, for news nothing waits for but a later unlink or rename, which sends the
//! closes started before it at once.

use std::collections::BTreeSet;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use elkfs_proto::InodeId;
use tokio::sync::Notify;
use tokio::sync::futures::Notified;

use crate::dir_leases::Generation;

/// How long a close waits for others to go to the master with it.
pub const CLOSE_DELAY: Duration = Duration::from_millis(10);

/// Closes sent in one request at most.
pub const MAX_BATCH: usize = 1024;

/// Counts closes not yet answered by the master, numbered in the order they started.
#[derive(Default)]
pub struct CloseTracker {
    started: Mutex<Started>,
    done: Notify,
}

#[derive(Default)]
struct Started {
    /// The number of the last close started (0 before the first).
    last: u64,
    /// The numbers of those not done yet.
    pending: BTreeSet<u64>,
}

impl CloseTracker {
    fn lock(&self) -> std::sync::MutexGuard<'_, Started> {
        self.started.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Counts one close of `inode`, whose open the master knows as one of connection
    /// `generation`, until the returned value is dropped.
    pub fn start(self: &Arc<Self>, inode: InodeId, generation: Generation) -> PendingClose {
        let number = {
            let mut started = self.lock();
            started.last += 1;
            let number = started.last;
            started.pending.insert(number);
            number
        };
        PendingClose {
            inode,
            generation,
            number,
            tracker: self.clone(),
        }
    }

    /// The number of the last close started so far: [`CloseTracker::done_up_to`] it is what
    /// a request that drops a name waits for (not for closes started after it).
    fn last_started(&self) -> u64 {
        self.lock().last
    }

    /// Whether every close numbered up to `mark` is done.
    fn done_up_to(&self, mark: u64) -> bool {
        self.lock()
            .pending
            .first()
            .is_none_or(|&first| first > mark)
    }

    /// Completes when a close is done after this was called and enabled (check
    /// [`CloseTracker::done_up_to`] after enabling, before waiting).
    fn done(&self) -> Notified<'_> {
        self.done.notified()
    }
}

/// A close the master has not heard of yet; dropping it (after sending, or when giving up)
/// lets waiting requests go.
pub struct PendingClose {
    /// The file being closed.
    pub inode: InodeId,
    /// The connection whose session the master knows the file open in: only that session
    /// may hear of the close (a later one never had the file open, or has it open again).
    pub generation: Generation,
    /// Its number in the order closes started.
    number: u64,
    tracker: Arc<CloseTracker>,
}

impl Drop for PendingClose {
    fn drop(&mut self) {
        self.tracker.lock().pending.remove(&self.number);
        self.tracker.done.notify_waiters();
    }
}

/// Closes waiting to go to the master together.
#[derive(Default)]
pub struct CloseQueue {
    queued: Mutex<Vec<PendingClose>>,
    /// Wakes the sender: the queue was empty and is not.
    filled: Notify,
    /// Wakes those waiting for closes to be queued.
    pushed: Notify,
}

impl CloseQueue {
    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<PendingClose>> {
        self.queued.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Queues a close for the sender.
    pub fn push(&self, close: PendingClose) {
        let mut queued = self.lock();
        queued.push(close);
        if queued.len() == 1 {
            self.filled.notify_one();
        }
        self.pushed.notify_waiters();
    }

    /// Waits until every close `tracker` started before this call is done (answered, or
    /// dropped as moot), calling `send` whenever one of them waits here, so that none waits
    /// for [`CLOSE_DELAY`]. Closes started later do not hold it up.
    pub async fn settle<F, Sent>(&self, tracker: &CloseTracker, mut send: F)
    where
        F: FnMut() -> Sent,
        Sent: Future<Output = ()>,
    {
        let mark = tracker.last_started();
        loop {
            let done = tracker.done();
            let pushed = self.pushed.notified();
            tokio::pin!(done, pushed);
            done.as_mut().enable();
            pushed.as_mut().enable();
            if tracker.done_up_to(mark) {
                return;
            }
            if self.holds_up_to(mark) {
                send().await;
                continue;
            }
            tokio::select! {
                _ = done => {}
                _ = pushed => {}
            }
        }
    }

    /// Whether a close numbered up to `mark` (see [`CloseTracker::last_started`]) waits here.
    fn holds_up_to(&self, mark: u64) -> bool {
        self.lock().iter().any(|c| c.number <= mark)
    }

    /// Waits until a close is queued (at once if one was queued since the last wait).
    pub async fn filled(&self) {
        self.filled.notified().await;
    }

    /// Whether no close waits.
    pub fn is_empty(&self) -> bool {
        self.lock().is_empty()
    }

    /// Takes up to [`MAX_BATCH`] queued closes that the session of connection `current` must
    /// hear of. Closes of earlier connections are dropped: their opens ended with their
    /// sessions. Closes of a later connection (one being set up) stay queued.
    pub fn take(&self, current: Generation) -> Vec<PendingClose> {
        let mut queued = self.lock();
        queued.retain(|c| c.generation >= current);
        let mut batch = Vec::new();
        let mut i = 0;
        while i < queued.len() && batch.len() < MAX_BATCH {
            if queued[i].generation == current {
                batch.push(queued.swap_remove(i));
            } else {
                i += 1;
            }
        }
        batch
    }

    /// Drops every queued close (the master cannot be reached: the session is lost, and its
    /// opens with it).
    pub fn drop_all(&self) {
        let dropped = std::mem::take(&mut *self.lock());
        drop(dropped);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test]
    async fn waiting_ends_when_every_counted_close_is_done() {
        let tracker = Arc::new(CloseTracker::default());
        let queue = Arc::new(CloseQueue::default());
        // Sending answers at once: the closes taken are done.
        let send = |queue: Arc<CloseQueue>| {
            move || {
                drop(queue.take(1));
                std::future::ready(())
            }
        };
        queue.settle(&tracker, send(queue.clone())).await;
        let first = tracker.start(InodeId(1), 1);
        let second = tracker.start(InodeId(2), 1);
        let waiting = tokio::spawn({
            let (tracker, queue) = (tracker.clone(), queue.clone());
            async move { queue.settle(&tracker, send(queue.clone())).await }
        });
        drop(first);
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert!(!waiting.is_finished(), "went on with a close still pending");
        // Queued, the last one is sent by the waiter itself, not after the delay.
        queue.push(second);
        tokio::time::timeout(Duration::from_secs(5), waiting)
            .await
            .expect("still waiting after the last close")
            .unwrap();
        assert!(queue.is_empty());
    }

    fn inodes(closes: &[PendingClose]) -> Vec<u64> {
        let mut inodes: Vec<u64> = closes.iter().map(|c| c.inode.0).collect();
        inodes.sort();
        inodes
    }

    #[test]
    fn a_connection_hears_only_of_closes_of_its_own_opens() {
        let tracker = Arc::new(CloseTracker::default());
        let queue = CloseQueue::default();
        queue.push(tracker.start(InodeId(1), 1));
        queue.push(tracker.start(InodeId(2), 2));
        queue.push(tracker.start(InodeId(3), 3));
        queue.push(tracker.start(InodeId(4), 2));
        assert_eq!(inodes(&queue.take(2)), vec![2, 4]);
        assert!(
            !queue.is_empty(),
            "the close of a connection being set up waits"
        );
        assert_eq!(
            tracker.lock().pending.len(),
            1,
            "the close of an earlier connection is dropped, the sent ones are done"
        );
        assert_eq!(inodes(&queue.take(3)), vec![3]);
        assert!(queue.is_empty());
    }

    #[test]
    fn closes_go_in_batches_of_at_most_max_batch() {
        let tracker = Arc::new(CloseTracker::default());
        let queue = CloseQueue::default();
        for i in 0..MAX_BATCH as u64 + 5 {
            queue.push(tracker.start(InodeId(i), 7));
        }
        assert_eq!(queue.take(7).len(), MAX_BATCH);
        assert_eq!(queue.take(7).len(), 5);
        assert!(queue.take(7).is_empty());
        assert!(tracker.done_up_to(tracker.last_started()));
    }

    #[tokio::test]
    async fn the_sender_is_woken_when_the_queue_fills_and_not_before() {
        let tracker = Arc::new(CloseTracker::default());
        let queue = Arc::new(CloseQueue::default());
        let waiting = tokio::spawn({
            let queue = queue.clone();
            async move { queue.filled().await }
        });
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert!(!waiting.is_finished(), "woken with nothing queued");
        queue.push(tracker.start(InodeId(1), 1));
        tokio::time::timeout(Duration::from_secs(5), waiting)
            .await
            .expect("not woken by a close")
            .unwrap();
        queue.drop_all();
        assert!(queue.is_empty());
        assert!(tracker.done_up_to(tracker.last_started()));
    }

    #[test]
    fn a_wait_is_held_only_by_closes_started_before_it() {
        let tracker = Arc::new(CloseTracker::default());
        let queue = CloseQueue::default();
        let before = tracker.start(InodeId(1), 1);
        let mark = tracker.last_started();
        queue.push(tracker.start(InodeId(2), 1));
        assert!(!tracker.done_up_to(mark));
        assert!(
            !queue.holds_up_to(mark),
            "a close started after the mark is taken as one before it"
        );
        queue.push(before);
        assert!(queue.holds_up_to(mark));
        let sent = queue.take(1);
        assert!(!queue.holds_up_to(mark));
        assert!(!tracker.done_up_to(mark), "done before it was answered");
        drop(sent);
        assert!(tracker.done_up_to(mark));
        assert!(queue.is_empty());
    }
}
