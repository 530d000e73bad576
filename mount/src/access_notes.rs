//! Access-time notes on their way to the master. A read replies at once and tells the master
//! about the access in the background; a stat of the same file waits for that note, so it sees
//! the access time the read caused, as on a local filesystem.

use std::collections::HashMap;
use std::sync::Mutex;

use elkfs_proto::InodeId;
use tokio::sync::watch;

/// The notes in flight, by inode.
#[derive(Default)]
pub struct AccessNotes {
    in_flight: Mutex<HashMap<InodeId, watch::Receiver<bool>>>,
}

impl AccessNotes {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<InodeId, watch::Receiver<bool>>> {
        self.in_flight.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Records a note about `inode` being sent; the returned sender is told when it arrived.
    pub fn start(&self, inode: InodeId) -> watch::Sender<bool> {
        let (done, waiting) = watch::channel(false);
        self.lock().insert(inode, waiting);
        done
    }

    /// The note about `inode` arrived (or failed); it is forgotten unless a newer one replaced
    /// it.
    pub fn finish(&self, inode: InodeId, done: watch::Sender<bool>) {
        let _ = done.send(true);
        let mut in_flight = self.lock();
        if in_flight.get(&inode).is_some_and(|rx| *rx.borrow()) {
            in_flight.remove(&inode);
        }
    }

    /// Whether a note about `inode` is on its way (a stat must wait for it).
    pub fn pending(&self, inode: InodeId) -> bool {
        self.lock().get(&inode).is_some_and(|rx| !*rx.borrow())
    }

    /// Waits until no note about `inode` is on its way.
    pub async fn settled(&self, inode: InodeId) {
        let waiting = self.lock().get(&inode).cloned();
        if let Some(mut waiting) = waiting {
            // An error means the sender is gone: nothing left to wait for.
            let _ = waiting.wait_for(|done| *done).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_stat_waits_for_the_note_in_flight_and_not_after_it() {
        let notes = std::sync::Arc::new(AccessNotes::default());
        let inode = InodeId(7);
        notes.settled(inode).await;
        let done = notes.start(inode);
        let waiter = {
            let notes = notes.clone();
            tokio::spawn(async move { notes.settled(inode).await })
        };
        tokio::task::yield_now().await;
        assert!(!waiter.is_finished());
        notes.finish(inode, done);
        waiter.await.unwrap();
        assert!(notes.lock().is_empty());
        notes.settled(inode).await;
    }
}
