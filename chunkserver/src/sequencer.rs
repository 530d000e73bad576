//! Runs the jobs touching one chunk one after another, in the order they were submitted, while
//! jobs on different chunks run in parallel. Submitting never waits, so a connection that queues
//! a write behind a slow one keeps reading (and serving reads) meanwhile.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};

use elkfs_proto::ChunkId;
use tokio::sync::mpsc;

/// One unit of work on a chunk; the next job of that chunk starts when it completes.
pub type Job = Pin<Box<dyn Future<Output = ()> + Send>>;

/// Per-chunk job queues, each drained by its own task while it has work.
#[derive(Default)]
pub struct Sequencer {
    queues: Mutex<HashMap<ChunkId, mpsc::UnboundedSender<Job>>>,
}

impl Sequencer {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<ChunkId, mpsc::UnboundedSender<Job>>> {
        self.queues.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Queues `job` behind every job submitted earlier for `chunk`.
    pub fn submit(self: &Arc<Self>, chunk: ChunkId, job: Job) {
        let mut queues = self.lock();
        let job = match queues.get(&chunk) {
            Some(tx) => match tx.send(job) {
                Ok(()) => return,
                Err(mpsc::error::SendError(job)) => job,
            },
            None => job,
        };
        let (tx, rx) = mpsc::unbounded_channel();
        let _ = tx.send(job);
        queues.insert(chunk, tx);
        tokio::spawn(self.clone().drain(chunk, rx));
    }

    async fn drain(self: Arc<Self>, chunk: ChunkId, mut rx: mpsc::UnboundedReceiver<Job>) {
        loop {
            match rx.try_recv() {
                Ok(job) => job.await,
                Err(mpsc::error::TryRecvError::Disconnected) => return,
                Err(mpsc::error::TryRecvError::Empty) => {
                    // Senders send while holding the map lock, so an empty queue seen under it
                    // stays empty once its entry is gone.
                    let mut queues = self.lock();
                    if rx.is_empty() {
                        queues.remove(&chunk);
                        return;
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn jobs_of_a_chunk_run_in_submission_order_and_the_table_empties() {
        let seq = Arc::new(Sequencer::default());
        let order = Arc::new(Mutex::new(Vec::new()));
        let (done_tx, mut done_rx) = mpsc::unbounded_channel();
        for i in 0..50u32 {
            let (order, done_tx) = (order.clone(), done_tx.clone());
            seq.submit(
                ChunkId(i as u64 % 2),
                Box::pin(async move {
                    // Early jobs take longer: a later job must still wait for them.
                    tokio::time::sleep(std::time::Duration::from_micros(((50 - i) * 20) as u64))
                        .await;
                    order.lock().unwrap().push(i);
                    let _ = done_tx.send(());
                }),
            );
        }
        for _ in 0..50 {
            done_rx.recv().await.unwrap();
        }
        let order = order.lock().unwrap().clone();
        for chunk in 0..2 {
            let of_chunk: Vec<u32> = order.iter().copied().filter(|i| i % 2 == chunk).collect();
            let mut sorted = of_chunk.clone();
            sorted.sort();
            assert_eq!(of_chunk, sorted);
        }
        tokio::task::yield_now().await;
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        assert!(seq.lock().is_empty());
    }
}
