//! What this client's recent requests to the master may have changed: inodes whose attributes
//! (or extended attributes) may differ now, and names that may have come or gone. Something the
//! client keeps from an earlier answer (names looked up ahead, see `lookahead.rs`) replays the
//! changes made since it was fetched and drops what they touched, so it never answers with
//! what this client itself has changed since.
//!
//! A change is recorded once its request is answered or given up on; a fetch that starts
//! after that sees its effect at the master. So whatever was fetched after change number `n`
//! was recorded needs only the changes after `n`.

use std::collections::VecDeque;
use std::sync::Mutex;

use elkfs_proto::InodeId;
use elkfs_proto::master::MasterRequest;

/// Changes kept for replay; an older position cannot be replayed (everything counts as touched).
const KEPT: usize = 4096;

/// What one request may have changed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Touched {
    /// Only these inodes' attributes and these names (directory, name).
    Some {
        /// Inodes whose attributes or extended attributes may have changed.
        inodes: Vec<InodeId>,
        /// Names that may have been made, removed or replaced.
        names: Vec<(InodeId, Vec<u8>)>,
    },
    /// Anything (a whole tree changed, a snapshot or a restore from the trash).
    Everything,
}

/// What `request` may change in the namespace, `None` for a request that changes nothing.
pub fn touched_by(request: &MasterRequest) -> Option<Touched> {
    let some = |inodes: Vec<InodeId>, names: Vec<(InodeId, Vec<u8>)>| {
        Some(Touched::Some { inodes, names })
    };
    match request {
        MasterRequest::OpenSession { .. }
        | MasterRequest::Challenge
        | MasterRequest::Lookup { .. }
        | MasterRequest::LookupAhead { .. }
        | MasterRequest::GetAttr { .. }
        | MasterRequest::ReadLink { .. }
        | MasterRequest::ReadDir { .. }
        | MasterRequest::ReadDirPlus { .. }
        | MasterRequest::StatFs
        | MasterRequest::ReadChunk { .. }
        | MasterRequest::Fsync
        | MasterRequest::GetXattr { .. }
        | MasterRequest::ListXattr { .. }
        | MasterRequest::Reopen { .. }
        | MasterRequest::SetLock { .. }
        | MasterRequest::TestLock { .. }
        | MasterRequest::ReleaseLocks { .. }
        | MasterRequest::ReclaimLocks { .. }
        | MasterRequest::FileInfo { .. }
        | MasterRequest::DirInfo { .. }
        | MasterRequest::SummarizeTree { .. }
        | MasterRequest::TrashList { .. }
        | MasterRequest::AwaitRecalls { .. }
        | MasterRequest::LeaseDir { .. }
        | MasterRequest::Status => None,
        MasterRequest::Tagged { request, .. } => touched_by(request),
        MasterRequest::SetAttr { inode, .. }
        | MasterRequest::Open { inode }
        | MasterRequest::Access { inode }
        | MasterRequest::WriteChunk { inode, .. }
        | MasterRequest::RetryWriteChunk { inode, .. }
        | MasterRequest::WriteEnd { inode, .. }
        | MasterRequest::AppendBegin { inode }
        | MasterRequest::AppendEnd { inode }
        | MasterRequest::ClearChunks { inode, .. }
        | MasterRequest::SetXattr { inode, .. }
        | MasterRequest::RemoveXattr { inode, .. } => some(vec![*inode], vec![]),
        MasterRequest::Close { inodes } => some(inodes.clone(), vec![]),
        MasterRequest::Mknod { parent, name, .. }
        | MasterRequest::Mkdir { parent, name, .. }
        | MasterRequest::Symlink { parent, name, .. }
        | MasterRequest::Unlink { parent, name }
        | MasterRequest::Rmdir { parent, name } => {
            some(vec![*parent], vec![(*parent, name.clone())])
        }
        MasterRequest::Link {
            inode,
            parent,
            name,
        } => some(vec![*inode, *parent], vec![(*parent, name.clone())]),
        MasterRequest::Rename {
            parent,
            name,
            new_parent,
            new_name,
            ..
        } => some(
            vec![*parent, *new_parent],
            vec![(*parent, name.clone()), (*new_parent, new_name.clone())],
        ),
        MasterRequest::ChangeTree { .. }
        | MasterRequest::TrashRestore { .. }
        | MasterRequest::TrashPurge { .. }
        | MasterRequest::Snapshot { .. } => Some(Touched::Everything),
    }
}

/// The log of recent changes, numbered from 1.
#[derive(Default)]
pub struct RecentChanges {
    log: Mutex<Log>,
}

#[derive(Default)]
struct Log {
    /// How many changes were recorded before the first one kept.
    dropped: u64,
    kept: VecDeque<Touched>,
}

impl RecentChanges {
    fn lock(&self) -> std::sync::MutexGuard<'_, Log> {
        self.log.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// How many changes have been recorded: a fetch started now reflects all of them.
    pub fn count(&self) -> u64 {
        let log = self.lock();
        log.dropped + log.kept.len() as u64
    }

    /// Records what an answered (or abandoned) request may have changed.
    pub fn record(&self, request: &MasterRequest) {
        let Some(touched) = touched_by(request) else {
            return;
        };
        let mut log = self.lock();
        if log.kept.len() == KEPT {
            log.kept.pop_front();
            log.dropped += 1;
        }
        log.kept.push_back(touched);
    }

    /// Passes each change recorded after the first `seen` to `f`, oldest first, and returns
    /// the new count; `None` when some of them are no longer kept (treat everything as
    /// touched).
    pub fn since(&self, seen: u64, mut f: impl FnMut(&Touched)) -> Option<u64> {
        let log = self.lock();
        let skip = seen.checked_sub(log.dropped)?;
        for touched in log.kept.iter().skip(skip as usize) {
            f(touched);
        }
        Some(log.dropped + log.kept.len() as u64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use elkfs_proto::types::{Caller, SetAttr};

    fn unlink(name: &str) -> MasterRequest {
        MasterRequest::Unlink {
            parent: InodeId(1),
            name: name.as_bytes().to_vec(),
        }
    }

    fn collect(changes: &RecentChanges, seen: u64) -> Option<(u64, Vec<Touched>)> {
        let mut all = Vec::new();
        let count = changes.since(seen, |t| all.push(t.clone()))?;
        Some((count, all))
    }

    #[test]
    fn reads_are_not_recorded_and_changes_replay_from_where_a_fetch_started() {
        let changes = RecentChanges::default();
        changes.record(&MasterRequest::GetAttr { inode: InodeId(4) });
        assert_eq!(changes.count(), 0);
        changes.record(&unlink("a"));
        let seen = changes.count();
        changes.record(&MasterRequest::SetAttr {
            inode: InodeId(9),
            changes: SetAttr::default(),
            caller: Caller { uid: 0, gid: 0 },
        });
        let (count, after) = collect(&changes, seen).unwrap();
        assert_eq!(count, 2);
        assert_eq!(
            after,
            vec![Touched::Some {
                inodes: vec![InodeId(9)],
                names: vec![],
            }]
        );
        assert_eq!(collect(&changes, count).unwrap(), (2, vec![]));
    }

    #[test]
    fn a_tagged_change_counts_as_the_change_inside() {
        let tagged = MasterRequest::Tagged {
            client: 1,
            slot: 0,
            seq: 1,
            retry: false,
            request: Box::new(unlink("b")),
        };
        assert_eq!(
            touched_by(&tagged),
            Some(Touched::Some {
                inodes: vec![InodeId(1)],
                names: vec![(InodeId(1), b"b".to_vec())],
            })
        );
    }

    #[test]
    fn a_position_no_longer_kept_cannot_be_replayed() {
        let changes = RecentChanges::default();
        for i in 0..KEPT + 3 {
            changes.record(&unlink(&format!("f{i}")));
        }
        assert_eq!(changes.count(), KEPT as u64 + 3);
        assert!(collect(&changes, 2).is_none());
        let (_, rest) = collect(&changes, 3).unwrap();
        assert_eq!(rest.len(), KEPT);
    }
}
