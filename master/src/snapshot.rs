//! Copy-on-write snapshots of files and trees: new inodes that share every chunk with the
//! originals; a shared chunk is copied on the first write to either side (see `chunk_ops`).

use elkfs_metastore::MetaOp;
use elkfs_proto::master::{MasterReply, MasterResponse};
use elkfs_proto::types::{FileKind, Timestamp};
use elkfs_proto::{InodeId, Status};

use crate::client_service::MAX_DIR_PAGE;
use crate::state::MasterState;

/// Snapshots `source` as `name` in `parent`, entry by entry for a tree.
pub async fn snapshot(
    state: &MasterState,
    source: InodeId,
    parent: InodeId,
    name: Vec<u8>,
) -> MasterResponse {
    if inside(state, parent, source).await? {
        return Err(Status::Loop);
    }
    let mut pending = vec![(source, parent, name)];
    let mut made = 0u64;
    while let Some((src, dst_parent, dst_name)) = pending.pop() {
        let op = MetaOp::Snapshot {
            source: src,
            parent: dst_parent,
            name: dst_name,
            time: Timestamp::now(),
        };
        let (_, outcome) = state.meta.commit(op).await?;
        made += 1;
        let Some(copy) = outcome.attr else {
            continue;
        };
        if copy.kind != FileKind::Dir {
            continue;
        }
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
        denied: 0,
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
