//! The chunk test: re-reads every chunk at a bounded rate, checks every block against its hash,
//! and reports damage to the master, which replaces the copy.

use std::time::Duration;

use elkfs_common::worker::{Worker, WorkerState};
use elkfs_proto::ChunkId;
use tokio::sync::mpsc;

use crate::master_link::CopyReport;
use crate::storage::{Store, blocking};

/// Pause between passes over all chunks, at the least.
const PASS_PAUSE: Duration = Duration::from_secs(1);

/// What re-reading one chunk costs beyond its bytes, counted against the rate: opening its file
/// and reaching its header, hashes and data take a disk about as long as reading a MiB. Counted
/// by bytes alone, a disk of 4 KiB files was re-read at hundreds of chunks a second per server,
/// and the users' reads of small files waited behind it.
const PER_CHUNK_COST: u64 = 1 << 20;

/// How long the test rests after checking a chunk of `bytes`, to keep to `bytes_per_sec`.
fn pause_after(bytes: u64, bytes_per_sec: u64) -> Duration {
    Duration::from_secs_f64((bytes + PER_CHUNK_COST) as f64 / bytes_per_sec.max(1) as f64)
}

/// The background chunk test.
pub struct ChunkTest {
    store: Store,
    reports: mpsc::Sender<CopyReport>,
    bytes_per_sec: u64,
    queue: Vec<ChunkId>,
    pause: Duration,
    checked_chunks: u64,
    checked_bytes: u64,
    damaged: u64,
}

impl ChunkTest {
    /// A test of `store` reading at most `bytes_per_sec`, reporting damage on `reports`.
    pub fn new(store: Store, reports: mpsc::Sender<CopyReport>, bytes_per_sec: u64) -> ChunkTest {
        ChunkTest {
            store,
            reports,
            bytes_per_sec: bytes_per_sec.max(1),
            queue: Vec::new(),
            pause: Duration::ZERO,
            checked_chunks: 0,
            checked_bytes: 0,
            damaged: 0,
        }
    }
}

impl Worker for ChunkTest {
    fn name(&self) -> &'static str {
        "chunk-test"
    }

    async fn work(&mut self) -> WorkerState {
        if self.queue.is_empty() {
            self.queue = self.store.list().into_iter().map(|c| c.id).collect();
            self.queue.sort_unstable_by(|a, b| b.cmp(a));
            self.pause = PASS_PAUSE;
            return WorkerState::Idle;
        }
        let Some(chunk) = self.queue.pop() else {
            return WorkerState::Idle;
        };
        let Some(info) = self.store.info(chunk) else {
            return WorkerState::Busy;
        };
        match blocking(&self.store, move |s| s.verify(chunk)).await {
            Ok(bytes) => {
                self.checked_chunks += 1;
                self.checked_bytes += bytes;
                self.pause = pause_after(bytes, self.bytes_per_sec);
            }
            Err(e) if e.is_damage() => {
                self.damaged += 1;
                tracing::warn!(error = %e, "chunk test found a damaged copy");
                let report = CopyReport::damaged(&self.store, chunk, info.version);
                let _ = self.reports.send(report).await;
            }
            Err(e) => tracing::debug!(error = %e, "chunk test skipped a chunk"),
        }
        WorkerState::Idle
    }

    async fn wait_for_work(&mut self) {
        tokio::time::sleep(std::mem::take(&mut self.pause)).await;
    }

    fn status(&self) -> String {
        format!(
            "checked {} chunks ({} MiB), {} damaged, {} left in this pass",
            self.checked_chunks,
            self.checked_bytes >> 20,
            self.damaged,
            self.queue.len()
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn small_chunks_are_paced_like_a_mib_and_full_ones_by_their_bytes() {
        let rate = 8 << 20;
        assert!(pause_after(4096, rate) >= Duration::from_millis(125));
        assert!(pause_after(0, rate) >= Duration::from_millis(125));
        let full = pause_after(64 << 20, rate);
        assert!(full >= Duration::from_secs(8) && full < Duration::from_millis(8200));
        assert_eq!(pause_after(1 << 20, 0), Duration::from_secs(2 << 20));
    }
}
