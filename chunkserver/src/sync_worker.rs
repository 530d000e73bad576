//! The background sync: a pass over the chunk store every `sync_interval_secs` fsyncs what
//! changed since the last one (`ChunkStore::sync_changed`), so that a power cut loses at most
//! about that interval of data no client fsynced. The first pass syncs the data directories'
//! file systems whole, for what an earlier run left unwritten.
//!
//! A chunk whose fsync failed lost data the kernel could not write (Linux marks such pages
//! clean and reports the error once), so its copy is reported damaged and the master replaces
//! it from another; the store fails every later sync and write of it, and the report is
//! repeated at every pass until the copy is gone. Other failures (a file that cannot
//! be opened: no descriptors left) are logged and tried again at the next pass.

use std::collections::HashSet;
use std::time::Duration;

use elkfs_chunkstore::{ChunkError, SyncPass};
use elkfs_common::worker::{Worker, WorkerState};
use elkfs_proto::ChunkId;
use tokio::sync::mpsc;

use crate::master_link::CopyReport;
use crate::storage::Store;

/// The background sync of one chunkserver.
pub struct SyncWorker {
    store: Store,
    reports: mpsc::Sender<CopyReport>,
    every: Duration,
    passes: u64,
    synced: u64,
    failed: u64,
    /// Copies found to have lost writes, reported at every pass until they are gone (a report
    /// can be lost with the link to the master); each is logged once.
    lost: HashSet<ChunkId>,
}

impl SyncWorker {
    /// A sync of `store` every `every`, reporting copies that lost data on `reports`.
    pub fn new(store: Store, reports: mpsc::Sender<CopyReport>, every: Duration) -> SyncWorker {
        // Copies marked lost before the start were logged with their directories then.
        let lost = store.lost_copies().into_iter().map(|c| c.id).collect();
        SyncWorker {
            store,
            reports,
            every,
            passes: 0,
            synced: 0,
            failed: 0,
            lost,
        }
    }

    /// One pass, on the blocking pool.
    async fn pass(&self, first: bool) -> SyncPass {
        let store = self.store.clone();
        tokio::task::spawn_blocking(move || {
            if first {
                for (dir, error) in store.sync_file_systems() {
                    tracing::warn!(dir = %dir.display(), %error, "cannot sync the file system of a data directory");
                }
            }
            store.sync_changed()
        })
        .await
        .unwrap_or_else(|e| {
            tracing::error!(error = %e, "the sync pass failed");
            SyncPass::default()
        })
    }

    /// Logs a chunk that could not be synced, and tells the master of a copy that lost data.
    /// Never waits: a pass must not stall behind a link to the master that is down.
    fn failed(&mut self, chunk: ChunkId, error: ChunkError, lost_now: &mut HashSet<ChunkId>) {
        if !lost_data(&error) {
            self.failed += 1;
            tracing::warn!(%chunk, %error, "cannot sync a chunk file; will try again");
            return;
        }
        lost_now.insert(chunk);
        if !self.lost.contains(&chunk) {
            self.failed += 1;
            tracing::error!(%chunk, %error, "a chunk file could not be written to disk; its copy is reported damaged");
        }
        let Some(info) = self.store.info(chunk) else {
            return;
        };
        let report = CopyReport::damaged(&self.store, chunk, info.version);
        if self.reports.try_send(report).is_err() {
            tracing::debug!(%chunk, "the reports to the master are backed up; the damaged copy is reported again at the next pass");
        }
    }
}

/// Whether a sync failure means the disk did not take the file's data.
fn lost_data(error: &ChunkError) -> bool {
    matches!(error, ChunkError::WriteLost { .. })
}

impl Worker for SyncWorker {
    fn name(&self) -> &'static str {
        "sync"
    }

    async fn work(&mut self) -> WorkerState {
        let pass = self.pass(self.passes == 0).await;
        self.passes += 1;
        self.synced += pass.synced as u64;
        if pass.synced > 0 {
            tracing::debug!(
                chunks = pass.synced,
                whole_file_systems = pass.whole_file_systems,
                "synced changed chunk files"
            );
        }
        let mut lost_now = HashSet::new();
        for (chunk, error) in pass.failed {
            self.failed(chunk, error, &mut lost_now);
        }
        self.lost = lost_now;
        WorkerState::Idle
    }

    async fn wait_for_work(&mut self) {
        tokio::time::sleep(self.every).await;
    }

    fn status(&self) -> String {
        format!(
            "{} passes, {} chunk files synced, {} failed",
            self.passes, self.synced, self.failed
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_failed_fsync_counts_as_lost_data() {
        let lost = ChunkError::WriteLost {
            chunk: ChunkId(1),
            path: Default::default(),
            source: std::io::Error::from_raw_os_error(libc::ENOSPC),
        };
        assert!(lost_data(&lost));
        let opening = ChunkError::Io {
            chunk: ChunkId(1),
            path: Default::default(),
            source: std::io::Error::from_raw_os_error(libc::EMFILE),
        };
        assert!(!lost_data(&opening));
        assert!(!lost_data(&ChunkError::NotFound { chunk: ChunkId(1) }));
    }
}
