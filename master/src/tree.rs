//! Changing goal, trash time or eattrs on an inode or a whole tree, in the master (one change
//! per inode, no round trip per file), with the counts MooseFS's tools print.

use elkfs_metastore::MetaOp;
use elkfs_proto::master::{Change, MasterReply, MasterResponse, TreeAttr};
use elkfs_proto::types::{Attr, Caller, FileKind, Timestamp, eattr};
use elkfs_proto::{InodeId, Status};

use crate::client_service::MAX_DIR_PAGE;
use crate::state::MasterState;

/// Whether `caller` may change what only an owner may: root, the owner, or anyone when the
/// inode has the `noowner` eattr (everyone is its owner, as in MooseFS).
pub fn owns(caller: Caller, attr: &Attr) -> bool {
    caller.uid == 0 || caller.uid == attr.uid || attr.eattrs & eattr::NOOWNER != 0
}

/// Whether `caller` may do what permission bits `want` (4 read, 2 write, 1 search) allow on
/// `attr`, by the owner, group and other bits (the groups a caller is in beyond its first are
/// not known to the master).
pub fn permits(caller: Caller, attr: &Attr, want: u32) -> bool {
    if caller.uid == 0 {
        return true;
    }
    let bits = if owns(caller, attr) {
        attr.mode >> 6
    } else if caller.gid == attr.gid {
        attr.mode >> 3
    } else {
        attr.mode
    };
    bits & want == want
}

/// The attribute's current value on an inode.
pub fn value_of(attr: &Attr, which: TreeAttr) -> u64 {
    match which {
        TreeAttr::Goal => attr.goal as u64,
        TreeAttr::TrashTime => attr.trash_time as u64,
        TreeAttr::Eattr => attr.eattrs as u64,
    }
}

/// The new value, or `None` when the change leaves it as it is.
pub fn changed_value(current: u64, change: Change) -> Option<u64> {
    let new = match change {
        Change::Set(v) => v,
        Change::Raise(v) => current.max(v),
        Change::Lower(v) => current.min(v),
        Change::AddFlags(f) => current | f,
        Change::RemoveFlags(f) => current & !f,
    };
    (new != current).then_some(new)
}

fn valid(which: TreeAttr, change: Change) -> bool {
    let value = match change {
        Change::Set(v) | Change::Raise(v) | Change::Lower(v) => v,
        Change::AddFlags(f) | Change::RemoveFlags(f) => f,
    };
    let flags = matches!(change, Change::AddFlags(_) | Change::RemoveFlags(_));
    match which {
        TreeAttr::Goal => !flags && (1..=elkfs_proto::geometry::MAX_COPIES as u64).contains(&value),
        TreeAttr::TrashTime => !flags && value <= u32::MAX as u64,
        TreeAttr::Eattr => {
            let all = eattr::NAMES.iter().fold(0u64, |a, (f, _)| a | *f as u64);
            value & !all == 0
        }
    }
}

fn op_for(inode: InodeId, which: TreeAttr, value: u64) -> MetaOp {
    let time = Timestamp::now();
    match which {
        TreeAttr::Goal => MetaOp::SetGoal {
            inode,
            goal: value as u8,
            time,
        },
        TreeAttr::TrashTime => MetaOp::SetTrashTime {
            inode,
            seconds: value as u32,
            time,
        },
        TreeAttr::Eattr => MetaOp::SetEattr {
            inode,
            eattrs: value as u8,
            time,
        },
    }
}

/// Visits an inode and, when recursive, every inode below it (depth first), one at a time.
pub struct TreeWalk<'a> {
    state: &'a MasterState,
    top: InodeId,
    recursive: bool,
    pending: Vec<InodeId>,
}

impl<'a> TreeWalk<'a> {
    /// A walk starting at `top`.
    pub fn new(state: &'a MasterState, top: InodeId, recursive: bool) -> TreeWalk<'a> {
        TreeWalk {
            state,
            top,
            recursive,
            pending: vec![top],
        }
    }

    /// The next inode's attributes, or `None` at the end.
    pub async fn next(&mut self) -> Result<Option<Attr>, Status> {
        while let Some(current) = self.pending.pop() {
            let attr = match self.state.meta.read(move |s| s.attr(current)).await {
                Ok(a) => a,
                // Removed while we walked: nothing to do there.
                Err(Status::NotFound) if current != self.top => continue,
                Err(e) => return Err(e),
            };
            if self.recursive && attr.kind == FileKind::Dir {
                let mut after = 0;
                loop {
                    let page = self
                        .state
                        .meta
                        .read(move |s| s.read_dir(current, after, MAX_DIR_PAGE))
                        .await?;
                    let Some(last) = page.last() else {
                        break;
                    };
                    after = last.cookie;
                    self.pending.extend(page.iter().map(|e| e.inode));
                }
            }
            return Ok(Some(attr));
        }
        Ok(None)
    }
}

/// Applies `change` to `which` on an inode or a tree; only an inode's owner (or root) may.
pub async fn change_tree(
    state: &MasterState,
    inode: InodeId,
    which: TreeAttr,
    change: Change,
    recursive: bool,
    caller: Caller,
) -> MasterResponse {
    if !valid(which, change) {
        return Err(Status::Invalid);
    }
    let (mut changed, mut unchanged, mut denied) = (0u64, 0u64, 0u64);
    let mut walk = TreeWalk::new(state, inode, recursive);
    while let Some(attr) = walk.next().await? {
        let Some(new) = changed_value(value_of(&attr, which), change) else {
            unchanged += 1;
            if which == TreeAttr::Goal
                && owns(caller, &attr)
                && chunks_off_goal(state, &attr).await?
            {
                // Kept higher while a snapshot shared them (see `SetGoal`): set again now.
                state
                    .meta
                    .commit(op_for(attr.inode, which, u64::from(attr.goal)))
                    .await?;
            }
            continue;
        };
        if !owns(caller, &attr) {
            denied += 1;
            continue;
        }
        state.meta.commit(op_for(attr.inode, which, new)).await?;
        changed += 1;
    }
    if which == TreeAttr::Goal {
        state.replication.wake();
    }
    Ok(MasterReply::TreeChanged {
        changed,
        unchanged,
        denied,
    })
}

/// Whether a file has a chunk whose goal is not the file's: one a snapshot shared when the
/// file's goal was lowered keeps the larger goal, also once it is the file's own again.
async fn chunks_off_goal(state: &MasterState, attr: &Attr) -> Result<bool, Status> {
    if attr.kind != FileKind::File {
        return Ok(false);
    }
    let (inode, goal) = (attr.inode, attr.goal);
    state
        .meta
        .read(move |s| {
            for fc in s.file_chunks(inode)? {
                if s.chunk(fc.chunk)?.is_some_and(|rec| rec.goal != goal) {
                    return Ok(true);
                }
            }
            Ok(false)
        })
        .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn raise_and_lower_only_move_one_way() {
        assert_eq!(changed_value(2, Change::Raise(3)), Some(3));
        assert_eq!(changed_value(4, Change::Raise(3)), None);
        assert_eq!(changed_value(4, Change::Lower(3)), Some(3));
        assert_eq!(changed_value(2, Change::Lower(3)), None);
        assert_eq!(changed_value(2, Change::Set(2)), None);
        assert_eq!(changed_value(0b01, Change::AddFlags(0b10)), Some(0b11));
        assert_eq!(changed_value(0b11, Change::RemoveFlags(0b01)), Some(0b10));
    }

    #[test]
    fn out_of_range_values_are_refused() {
        assert!(!valid(TreeAttr::Goal, Change::Set(0)));
        assert!(!valid(TreeAttr::Goal, Change::Set(10)));
        assert!(valid(TreeAttr::Goal, Change::Raise(9)));
        assert!(!valid(TreeAttr::Eattr, Change::AddFlags(64)));
        assert!(!valid(TreeAttr::TrashTime, Change::AddFlags(1)));
    }
}
