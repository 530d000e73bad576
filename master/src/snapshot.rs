//! Copy-on-write snapshots of files and trees: new inodes that share every chunk with the
//! originals; a shared chunk is copied on the first write to either side (see `chunk_ops`).

use elkfs_metastore::MetaOp;
use elkfs_proto::master::{MasterReply, MasterResponse};
use elkfs_proto::types::{Caller, FileKind, Timestamp};
use elkfs_proto::{InodeId, Status};

use crate::client_service::{MAX_DIR_PAGE, tagged};
use crate::state::MasterState;
use crate::tree::permits;

/// Snapshots `source` as `name` in `parent`, entry by entry for a tree. Like a copy, it needs
/// write access to `parent` and read access to what is copied (unreadable entries of a tree are
/// left out and counted as denied); a user's copies are the user's.
pub async fn snapshot(
    state: &MasterState,
    source: InodeId,
    parent: InodeId,
    name: Vec<u8>,
    caller: Caller,
) -> MasterResponse {
    if inside(state, parent, source).await? {
        return Err(Status::Loop);
    }
    let dir = state.meta.read(move |s| s.attr(parent)).await?;
    let top = state.meta.read(move |s| s.attr(source)).await?;
    if !permits(caller, &dir, 3) || !permits(caller, &top, 4) {
        return Err(Status::AccessDenied);
    }
    let owner = (caller.uid != 0).then_some((caller.uid, caller.gid));
    // Each copied directory is filled after it is made: no lease on it may hide what is to come.
    let mut filling = Vec::new();
    let mut pending = vec![(source, parent, name)];
    let (mut made, mut denied) = (0u64, 0u64);
    while let Some((src, dst_parent, dst_name)) = pending.pop() {
        let attr = state.meta.read(move |s| s.attr(src)).await?;
        let readable = if attr.kind == FileKind::Dir {
            permits(caller, &attr, 5)
        } else {
            attr.kind == FileKind::Symlink || permits(caller, &attr, 4)
        };
        if !readable {
            denied += 1;
            continue;
        }
        let op = MetaOp::Snapshot {
            source: src,
            parent: dst_parent,
            name: dst_name,
            owner,
            time: Timestamp::now(),
        };
        // A snapshot of one file is one commit, so a retry of the request can be answered from
        // its record; a tree's is one per entry, and its first record says nothing of the rest.
        let op = match src == source && attr.kind != FileKind::Dir {
            true => tagged(op),
            false => op,
        };
        // A file is copied while no client writes it: a lease holder may still send data under
        // its lease, which would land in a chunk the snapshot shares. New leases wait until the
        // chunks are shared, so the next write copies them first.
        let hold = match attr.kind {
            FileKind::File => Some(state.leases.hold_file(src).await),
            _ => None,
        };
        let committed = state.meta.commit(op).await;
        drop(hold);
        let (_, outcome) = committed?;
        made += 1;
        let Some(copy) = outcome.attr else {
            continue;
        };
        if copy.kind != FileKind::Dir {
            continue;
        }
        filling.push(state.dir_leases.before_filling(copy.inode).await);
        let mut after = 0;
        loop {
            let page = state
                .meta
                .read(move |s| s.read_dir(src, after, MAX_DIR_PAGE))
                .await?;
            let Some(last) = page.last() else {
                break;
            };
            after = last.cookie;
            pending.extend(page.into_iter().map(|e| (e.inode, copy.inode, e.name)));
        }
    }
    Ok(MasterReply::TreeChanged {
        changed: made,
        unchanged: 0,
        denied,
    })
}

/// Whether `dir` is `ancestor` or below it (a snapshot must not land inside its own source).
async fn inside(state: &MasterState, dir: InodeId, ancestor: InodeId) -> Result<bool, Status> {
    let mut cur = dir;
    for _ in 0..4096 {
        if cur == ancestor {
            return Ok(true);
        }
        if cur == InodeId::ROOT {
            return Ok(false);
        }
        cur = state.meta.read(move |s| s.inode(cur)).await?.parent;
    }
    Ok(false)
}
