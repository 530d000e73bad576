//! Files that lost their last name, purged in the background, so that an unlink is answered
//! without waiting for the purge's own commit. The file is recorded as unlinked by the unlink
//! itself: a purge that has not run when the master stops is done at its next start. The same
//! worker looks again, every few seconds, at the files whose purge was put aside (one that
//! failed, on a full disk).

use std::sync::{Arc, Mutex};

use elkfs_common::worker::{Worker, WorkerState};
use elkfs_proto::InodeId;
use tokio::sync::Notify;

use crate::state::MasterState;

/// How long the worker lets unlinked files gather once one is queued.
const GATHER: std::time::Duration = std::time::Duration::from_millis(5);

/// How often the files whose purge was put aside are looked at again.
const PUT_ASIDE_RETRY: std::time::Duration = std::time::Duration::from_secs(5);

/// Unlinked files waiting for the purge worker.
#[derive(Default)]
pub struct PurgeQueue {
    queued: Mutex<Vec<InodeId>>,
    wake: Notify,
}

impl PurgeQueue {
    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<InodeId>> {
        self.queued.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Queues files to purge once nobody has them open.
    pub fn push(&self, inodes: Vec<InodeId>) {
        if inodes.is_empty() {
            return;
        }
        self.lock().extend(inodes);
        self.wake.notify_one();
    }

    /// Wakes the worker without queueing anything: files were put aside for it to look at
    /// again later.
    pub fn nudge(&self) {
        self.wake.notify_one();
    }

    fn take(&self) -> Vec<InodeId> {
        std::mem::take(&mut *self.lock())
    }

    /// How many files wait.
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    /// Whether none waits.
    pub fn is_empty(&self) -> bool {
        self.lock().is_empty()
    }
}

/// Purges the queued files (those still open are purged at their last close instead).
pub struct PurgeWorker {
    state: Arc<MasterState>,
    purged: u64,
    /// When the files put aside were last looked at.
    put_aside_tried: tokio::time::Instant,
}

impl PurgeWorker {
    /// A worker for this master.
    pub fn new(state: Arc<MasterState>) -> PurgeWorker {
        PurgeWorker {
            state,
            purged: 0,
            put_aside_tried: tokio::time::Instant::now(),
        }
    }
}

impl Worker for PurgeWorker {
    fn name(&self) -> &'static str {
        "purge"
    }

    async fn work(&mut self) -> WorkerState {
        let batch = self.state.purges.take();
        if !batch.is_empty() {
            self.purged += self.state.purge_all_if_unused(batch).await as u64;
            return WorkerState::Busy;
        }
        if self.state.put_aside() > 0 && self.put_aside_tried.elapsed() >= PUT_ASIDE_RETRY {
            self.put_aside_tried = tokio::time::Instant::now();
            self.purged += self.state.purge_put_aside().await as u64;
        }
        WorkerState::Idle
    }

    async fn wait_for_work(&mut self) {
        if self.state.put_aside() == 0 {
            self.state.purges.wake.notified().await;
        } else {
            let retry = self.put_aside_tried + PUT_ASIDE_RETRY;
            tokio::select! {
                () = self.state.purges.wake.notified() => {}
                () = tokio::time::sleep_until(retry) => return,
            }
        }
        // Unlinks come in runs (`rm -r`, a cleanup): a moment's wait purges a run together.
        tokio::time::sleep(GATHER).await;
    }

    fn status(&self) -> String {
        format!(
            "{} unlinked files waiting, {} put aside, {} purged",
            self.state.purges.len(),
            self.state.put_aside(),
            self.purged
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn queued_files_come_out_once_and_wake_the_worker() {
        let queue = PurgeQueue::default();
        queue.push(vec![]);
        assert!(queue.is_empty());
        queue.push(vec![InodeId(5), InodeId(6)]);
        queue.push(vec![InodeId(7)]);
        // The pushes left a wake-up for a worker that was not waiting yet.
        tokio::time::timeout(std::time::Duration::from_secs(1), queue.wake.notified())
            .await
            .expect("woken");
        assert_eq!(queue.len(), 3);
        assert_eq!(queue.take(), vec![InodeId(5), InodeId(6), InodeId(7)]);
        assert!(queue.take().is_empty());
    }
}
