//! Deleting the copies of the chunks purged files freed, in batches. A purge frees its chunks in
//! the metadata at once; their copies are deleted a moment later, many per command
//! ([`CsCommand::DeleteMany`]), so that an `rm -r` costs each chunkserver a command per batch
//! instead of a command, and two thread hand-offs, per copy. (Chunks a truncate frees are
//! deleted at once, see `ChunkOps::delete_freed`.) A batch lost with its chunkserver
//! leaves copies the master no longer knows, which it deletes when that server registers again
//! (`cs_service.rs`, orphans).

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use elkfs_proto::chunkserver::CsCommand;
use elkfs_proto::{ChunkId, ChunkVersion, ServerId};

use crate::chunk_ops::run_command;
use crate::cluster::Target;

/// How long the first copy queued waits for others to join its batch.
const GATHER: Duration = Duration::from_millis(50);

/// The most copies one command deletes.
const BATCH: usize = 1024;

/// Copies waiting to be deleted on one chunkserver.
type Queued = (Target, Vec<(ChunkId, ChunkVersion)>);

/// Copies waiting to be deleted, per chunkserver.
#[derive(Default)]
pub struct FreedCopies {
    pending: Mutex<HashMap<ServerId, Queued>>,
}

impl FreedCopies {
    /// Queues the deletion of `chunk` at `version` on `target`. The first copy queued while
    /// none is waiting starts a task that sends everything queued [`GATHER`] later.
    pub fn queue(self: &Arc<Self>, target: &Target, chunk: ChunkId, version: ChunkVersion) {
        let first = {
            let mut pending = self.pending.lock().unwrap_or_else(PoisonError::into_inner);
            let was_empty = pending.is_empty();
            pending
                .entry(target.server)
                .or_insert_with(|| (target.clone(), Vec::new()))
                .1
                .push((chunk, version));
            was_empty
        };
        if first {
            let this = self.clone();
            tokio::spawn(async move {
                tokio::time::sleep(GATHER).await;
                this.send_all();
            });
        }
    }

    /// Sends every queued copy to its server, [`BATCH`] per command, one command at a time per
    /// server (a purge of a whole tree does not take every blocking thread a server has).
    fn send_all(&self) {
        let pending =
            std::mem::take(&mut *self.pending.lock().unwrap_or_else(PoisonError::into_inner));
        for (target, copies) in pending.into_values() {
            tokio::spawn(async move {
                for batch in copies.chunks(BATCH) {
                    let cmd = CsCommand::DeleteMany {
                        chunks: batch.to_vec(),
                    };
                    if let Err(e) = run_command(&target, &cmd).await {
                        tracing::debug!(
                            server = %target.data_addr,
                            copies = batch.len(),
                            error = %e,
                            "could not delete chunk copies"
                        );
                    }
                }
            });
        }
    }
}
