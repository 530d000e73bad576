//! Closes on their way to the master. The kernel does not wait for a file's RELEASE before it
//! sends the next request, so an unlink could otherwise reach the master before the close of the
//! same file, and the master would keep the file as unlinked-but-open instead of sending it to
//! the trash. A close is counted here before the kernel's RELEASE is answered, and requests that
//! drop names wait until every counted close has reached the master.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use elkfs_proto::InodeId;
use tokio::sync::Notify;

/// Counts closes not yet answered by the master.
#[derive(Default)]
pub struct CloseTracker {
    pending: AtomicUsize,
    done: Notify,
}

impl CloseTracker {
    /// Counts one close of `inode` until the returned value is dropped.
    pub fn start(self: &Arc<Self>, inode: InodeId) -> PendingClose {
        self.pending.fetch_add(1, Ordering::SeqCst);
        PendingClose {
            inode,
            tracker: self.clone(),
        }
    }

    /// Waits until every close counted so far is done.
    pub async fn settled(&self) {
        loop {
            let done = self.done.notified();
            tokio::pin!(done);
            done.as_mut().enable();
            if self.pending.load(Ordering::SeqCst) == 0 {
                return;
            }
            done.await;
        }
    }
}

/// A close the master has not heard of yet; dropping it (after sending, or when giving up)
/// lets waiting requests go.
pub struct PendingClose {
    /// The file being closed.
    pub inode: InodeId,
    tracker: Arc<CloseTracker>,
}

impl Drop for PendingClose {
    fn drop(&mut self) {
        self.tracker.pending.fetch_sub(1, Ordering::SeqCst);
        self.tracker.done.notify_waiters();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test]
    async fn waiting_ends_when_every_counted_close_is_done() {
        let tracker = Arc::new(CloseTracker::default());
        tracker.settled().await;
        let first = tracker.start(InodeId(1));
        let second = tracker.start(InodeId(2));
        let waiting = tokio::spawn({
            let tracker = tracker.clone();
            async move { tracker.settled().await }
        });
        drop(first);
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert!(!waiting.is_finished(), "went on with a close still pending");
        drop(second);
        tokio::time::timeout(Duration::from_secs(5), waiting)
            .await
            .expect("still waiting after the last close")
            .unwrap();
    }
}
