//! Deleting the copies of the chunks purged files freed, in batches, once the files stop
//! coming. A purge frees its chunks in the metadata at once; their copies are deleted a
//! moment later, many per command ([`CsCommand::DeleteMany`]), so that an `rm -r` costs each
//! chunkserver a command per batch instead of a command, and two thread hand-offs, per copy.
//! The batches wait until no copy has been freed for [`QUIET`] (at most [`MAX_WAIT`]): deleting
//! a copy costs its server a rename and the freeing of its blocks, work that on two cores
//! slowed the `rm` that caused it by a fifth when done alongside it. (Chunks a truncate frees
//! are deleted at once, see `ChunkOps::delete_freed`.) A batch lost with its chunkserver, or
//! still gathering when the master stops, leaves copies the master no longer knows; they are
//! deleted, in batches too, when that server registers again (`cs_service.rs`, orphans).

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use elkfs_proto::chunkserver::CsCommand;
use elkfs_proto::{ChunkId, ChunkVersion, ServerId};
use tokio::time::Instant;

use crate::chunk_ops::run_command;
use crate::cluster::Target;

/// How long no copy may have been freed before the queued ones are deleted.
const QUIET: Duration = Duration::from_millis(250);

/// The longest a copy waits for a quiet moment: during a long removal, space is given back at
/// least this often.
const MAX_WAIT: Duration = Duration::from_secs(5);

/// The most copies one command deletes.
const BATCH: usize = 1024;

/// Copies waiting to be deleted on one chunkserver.
type Queued = (Target, Vec<(ChunkId, ChunkVersion)>);

/// Copies waiting to be deleted, per chunkserver, and when copies were queued.
#[derive(Default)]
pub struct FreedCopies {
    pending: Mutex<Pending>,
}

#[derive(Default)]
struct Pending {
    copies: HashMap<ServerId, Queued>,
    /// When the first and the last of the queued copies were queued; `None` while none is.
    queued: Option<(Instant, Instant)>,
}

/// When copies first queued at `first`, the last at `last`, are to be deleted.
fn send_at(first: Instant, last: Instant) -> Instant {
    (last + QUIET).min(first + MAX_WAIT)
}

impl FreedCopies {
    /// Queues the deletion of `chunk` at `version` on `target`. The first copy queued while
    /// none is waiting starts a task that sends everything queued once no copy has been queued
    /// for [`QUIET`], or [`MAX_WAIT`] after that first copy.
    pub fn queue(self: &Arc<Self>, target: &Target, chunk: ChunkId, version: ChunkVersion) {
        let now = Instant::now();
        let first = {
            let mut pending = self.lock();
            pending
                .copies
                .entry(target.server)
                .or_insert_with(|| (target.clone(), Vec::new()))
                .1
                .push((chunk, version));
            let (first, was_empty) = match pending.queued {
                Some((first, _)) => (first, false),
                None => (now, true),
            };
            pending.queued = Some((first, now));
            was_empty
        };
        if first {
            let this = self.clone();
            tokio::spawn(async move { this.send_when_quiet().await });
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Pending> {
        self.pending.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Waits until the queued copies are due ([`send_at`]), then sends them all.
    async fn send_when_quiet(&self) {
        loop {
            let due = {
                let pending = self.lock();
                match pending.queued {
                    Some((first, last)) => send_at(first, last),
                    None => return,
                }
            };
            if Instant::now() >= due {
                break;
            }
            tokio::time::sleep_until(due).await;
        }
        self.send_all();
    }

    /// Sends every queued copy to its server, [`BATCH`] per command, one command at a time per
    /// server (a purge of a whole tree does not take every blocking thread a server has).
    fn send_all(&self) {
        let pending = std::mem::take(&mut *self.lock());
        for (target, copies) in pending.copies.into_values() {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn copies_wait_for_a_quiet_moment_but_never_longer_than_the_longest_wait() {
        let start = Instant::now();
        assert_eq!(send_at(start, start), start + QUIET);
        let busy = start + Duration::from_secs(2);
        assert_eq!(send_at(start, busy), busy + QUIET);
        let still_busy = start + MAX_WAIT;
        assert_eq!(send_at(start, still_busy), start + MAX_WAIT);
    }
}
