//! The background sync: a pass over the chunk store every `sync_interval_secs` fsyncs what
//! changed since the last one (`ChunkStore::sync_changed`), so that a power cut loses at most
//! that interval of data no client fsynced. A copy whose fsync failed may have lost data the
//! kernel then drops from its cache, so it is reported damaged and the master replaces it.

use std::time::Duration;

use elkfs_chunkstore::{ChunkError, SyncPass};
use elkfs_common::worker::{Worker, WorkerState};
use elkfs_proto::chunkserver::ChunkReport;
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
}

impl SyncWorker {
    /// A sync of `store` every `every`, reporting copies it could not sync on `reports`.
    pub fn new(store: Store, reports: mpsc::Sender<CopyReport>, every: Duration) -> SyncWorker {
        SyncWorker {
            store,
            reports,
            every,
            passes: 0,
            synced: 0,
            failed: 0,
        }
    }

    /// Tells the master about a copy whose fsync failed.
    async fn report_failed(&mut self, chunk: elkfs_proto::ChunkId, error: ChunkError) {
        self.failed += 1;
        tracing::error!(%chunk, %error, "cannot sync a chunk file; its copy may have lost data and will be replaced");
        let Some(info) = self.store.info(chunk) else {
            return;
        };
        let report = ChunkReport {
            chunk,
            version: info.version,
            marked_for_removal: self.store.is_marked_for_removal(chunk),
        };
        let _ = self.reports.send(CopyReport::Damaged(report)).await;
    }
}

impl Worker for SyncWorker {
    fn name(&self) -> &'static str {
        "sync"
    }

    async fn work(&mut self) -> WorkerState {
        let store = self.store.clone();
        let pass = tokio::task::spawn_blocking(move || store.sync_changed())
            .await
            .unwrap_or_else(|e| {
                tracing::error!(error = %e, "the sync pass failed");
                SyncPass::default()
            });
        self.passes += 1;
        self.synced += pass.synced as u64;
        if pass.synced > 0 {
            tracing::debug!(
                chunks = pass.synced,
                whole_file_systems = pass.whole_file_systems,
                "synced changed chunk files"
            );
        }
        for (chunk, error) in pass.failed {
            self.report_failed(chunk, error).await;
        }
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
