//! The trash: listing, restoring and purging deleted files, and the worker that purges those
//! whose trash time has passed.

use std::sync::Arc;
use std::time::Duration;

use elkfs_common::worker::{Worker, WorkerState};
use elkfs_metastore::MetaOp;
use elkfs_metastore::namespace::trash_expiry;
use elkfs_proto::info::TrashEntry;
use elkfs_proto::master::{MasterReply, MasterResponse};
use elkfs_proto::types::{Attr, Caller, Timestamp};
use elkfs_proto::{InodeId, Status};

use crate::client_service::tagged;
use crate::state::MasterState;
use crate::tree::owns;

/// The master acting for itself.
const ROOT: Caller = Caller { uid: 0, gid: 0 };

/// How often the trash is checked for expired files.
const CHECK_EVERY: Duration = Duration::from_secs(1);

/// The files in the trash that `caller` may restore or purge: the caller's own (root's list
/// holds every file). The paths of other users' deleted files are theirs to see.
pub async fn list(state: &MasterState, caller: Caller) -> Result<Vec<TrashEntry>, Status> {
    trash_of(state, |attr| owns(caller, attr)).await
}

/// The files in the trash whose attributes pass `keep`.
async fn trash_of(
    state: &MasterState,
    keep: impl Fn(&Attr) -> bool,
) -> Result<Vec<TrashEntry>, Status> {
    let trash = state.meta.read(|s| s.trash()).await?;
    Ok(trash
        .into_iter()
        .filter(|(_, attr)| keep(attr))
        .map(|(record, attr)| TrashEntry {
            inode: attr.inode,
            path: String::from_utf8_lossy(&record.path).into_owned(),
            deleted: record.deleted,
            expires: trash_expiry(record.deleted, attr.trash_time),
            length: attr.size,
        })
        .collect())
}

/// Puts a trashed file back where it was (its owner or root may).
pub async fn restore(state: &MasterState, inode: InodeId, caller: Caller) -> MasterResponse {
    let attr = state.meta.read(move |s| s.attr(inode)).await?;
    if !owns(caller, &attr) {
        return Err(Status::AccessDenied);
    }
    let op = MetaOp::TrashRestore {
        inode,
        time: Timestamp::now(),
    };
    state.meta.commit(tagged(op)).await?;
    state.cancel_purge_at_close(inode);
    Ok(MasterReply::Done)
}

/// Deletes one trashed file for good (answered `Done`), or all those `caller` owns (answered
/// with the list of them). Files still open go at their last close.
pub async fn purge(state: &MasterState, inode: Option<InodeId>, caller: Caller) -> MasterResponse {
    let Some(i) = inode else {
        let owned = trash_of(state, |attr| owns(caller, attr)).await?;
        for entry in &owned {
            state.purge_by_hand(entry.inode).await;
        }
        return Ok(MasterReply::Trash(owned));
    };
    if state.meta.read(move |s| s.trash_expiry(i)).await?.is_none() {
        return Err(Status::NotFound);
    }
    let attr = state.meta.read(move |s| s.attr(i)).await?;
    if !owns(caller, &attr) {
        return Err(Status::AccessDenied);
    }
    state.purge_by_hand(i).await;
    Ok(MasterReply::Done)
}

/// Purges files whose trash time has passed: those the schedule says are due, each checked
/// against the metadata first. The schedule is filled from the whole trash once, at start.
pub struct TrashWorker {
    state: Arc<MasterState>,
    purged: u64,
    loaded: bool,
}

impl TrashWorker {
    /// A worker for this master.
    pub fn new(state: Arc<MasterState>) -> TrashWorker {
        TrashWorker {
            state,
            purged: 0,
            loaded: false,
        }
    }

    /// Schedules every file in the trash now. Those due within the reopen grace after the start
    /// wait for its end ([`MasterState::purge_all_if_unused`]): a file deleted while open (a log
    /// file a daemon still writes) whose trash time passed before this start lives on until its
    /// last close, as it would have without the restart.
    async fn load(&mut self) -> Result<(), Status> {
        let entries = list(&self.state, ROOT).await?;
        let due: Vec<(InodeId, Timestamp)> = entries.iter().map(|e| (e.inode, e.expires)).collect();
        self.state.meta.trash_due.add(&due);
        self.loaded = true;
        Ok(())
    }
}

impl Worker for TrashWorker {
    fn name(&self) -> &'static str {
        "trash"
    }

    async fn work(&mut self) -> WorkerState {
        if !self.loaded
            && let Err(status) = self.load().await
        {
            tracing::warn!(%status, "cannot list the trash");
            return WorkerState::Idle;
        }
        let now = Timestamp::now();
        let schedule = self.state.meta.trash_due.clone();
        let due = schedule.take_due(now);
        for (i, &inode) in due.iter().enumerate() {
            // Restored, purged or deleted again since it was scheduled?
            match self.state.meta.read(move |s| s.trash_expiry(inode)).await {
                Ok(Some(expires)) if expires <= now => {
                    // One still open is purged at its last close instead.
                    self.purged += u64::from(self.state.purge_if_unused(inode).await);
                }
                Ok(Some(expires)) => schedule.add(&[(inode, expires)]),
                Ok(None) | Err(Status::NotFound) => {}
                Err(status) => {
                    tracing::warn!(%inode, %status, "cannot check a file in the trash");
                    // This one and the rest are tried again at the next round.
                    let rest: Vec<_> = due[i..].iter().map(|&inode| (inode, now)).collect();
                    schedule.add(&rest);
                    return WorkerState::Idle;
                }
            }
        }
        WorkerState::Idle
    }

    async fn wait_for_work(&mut self) {
        tokio::time::sleep(CHECK_EVERY).await;
    }

    fn status(&self) -> String {
        format!(
            "{} files in the trash, {} purged",
            self.state.meta.trash_due.len(),
            self.purged
        )
    }
}
