//! Answers to the `elkfs` tool's questions: a file's chunks and copies, totals over a tree, how
//! a tree's goals are spread, and the cluster at a glance.

use std::collections::BTreeMap;

use elkfs_proto::info::{ChunkCopies, ClusterStatus, CopyInfo, CopyState, DirStats, ServerStatus};
use elkfs_proto::master::{MasterReply, MasterResponse, TreeAttr};
use elkfs_proto::types::FileKind;
use elkfs_proto::{InodeId, Status};

use crate::state::MasterState;
use crate::tree::{TreeWalk, value_of};

/// Space one copy of a file takes: its length in whole 64 KiB blocks.
fn block_size(length: u64) -> u64 {
    length.div_ceil(elkfs_proto::geometry::BLOCK_SIZE as u64)
        * elkfs_proto::geometry::BLOCK_SIZE as u64
}

/// Every chunk of a file with each copy's server and state.
pub async fn file_info(state: &MasterState, inode: InodeId) -> MasterResponse {
    let chunks = state
        .meta
        .read(move |s| {
            let attr = s.attr(inode)?;
            if attr.kind != FileKind::File {
                return Err(Status::Invalid.into());
            }
            let mut out = Vec::new();
            for fc in s.file_chunks(inode)? {
                let refs = s.chunk(fc.chunk)?.map_or(1, |r| r.refs);
                out.push((fc, refs));
            }
            Ok(out)
        })
        .await?;
    let mut result = Vec::new();
    for (fc, refs) in chunks {
        let copies = state
            .cluster
            .copies(fc.chunk)
            .into_iter()
            .filter_map(|c| {
                let server = state.cluster.target(c.server)?.data_addr;
                let copy_state = match (c.version == fc.version, c.marked, c.damaged) {
                    (_, _, true) => CopyState::Damaged,
                    (true, false, false) => CopyState::Valid,
                    (true, true, false) => CopyState::Marked,
                    (false, _, false) => CopyState::Stale,
                };
                Some(CopyInfo {
                    server,
                    version: c.version,
                    state: copy_state,
                })
            })
            .collect();
        result.push(ChunkCopies {
            index: fc.index,
            chunk: fc.chunk,
            version: fc.version,
            refs,
            copies,
        });
    }
    Ok(MasterReply::FileChunks(result))
}

/// Inodes, directories, files, chunks and space over a tree.
pub async fn dir_info(state: &MasterState, inode: InodeId) -> MasterResponse {
    let mut stats = DirStats::default();
    let mut walk = TreeWalk::new(state, inode, true);
    while let Some(attr) = walk.next().await? {
        stats.inodes += 1;
        match attr.kind {
            FileKind::Dir => stats.dirs += 1,
            FileKind::File => {
                stats.files += 1;
                let i = attr.inode;
                stats.chunks += state.meta.read(move |s| s.file_chunks(i)).await?.len() as u64;
                stats.length += attr.size;
                let size = block_size(attr.size);
                stats.size += size;
                stats.realsize += size * attr.goal as u64;
            }
            _ => {}
        }
    }
    Ok(MasterReply::DirStats(stats))
}

/// How many files and directories of a tree have each value of an attribute.
pub async fn summarize(state: &MasterState, inode: InodeId, which: TreeAttr) -> MasterResponse {
    let mut files: BTreeMap<u64, u64> = BTreeMap::new();
    let mut dirs: BTreeMap<u64, u64> = BTreeMap::new();
    let mut walk = TreeWalk::new(state, inode, true);
    while let Some(attr) = walk.next().await? {
        let counts = if attr.kind == FileKind::Dir {
            &mut dirs
        } else {
            &mut files
        };
        *counts.entry(value_of(&attr, which)).or_default() += 1;
    }
    Ok(MasterReply::TreeSummary {
        files: files.into_iter().collect(),
        dirs: dirs.into_iter().collect(),
    })
}

/// The cluster at a glance.
pub async fn status(state: &MasterState) -> MasterResponse {
    let inodes = state
        .meta
        .read(|s| s.inode_count().map_err(Into::into))
        .await?;
    let copies = state.cluster.copies_per_server();
    let mut chunkservers: Vec<ServerStatus> = state
        .cluster
        .servers()
        .into_iter()
        .map(|s| ServerStatus {
            addr: s.data_addr,
            chunks: copies.get(&s.id).copied().unwrap_or(0),
            total: s.space.total,
            available: s.space.available,
        })
        .collect();
    chunkservers.sort_by_key(|s| s.addr);
    let pass = state.replication.last_pass().unwrap_or_default();
    let mut workers = state.workers.snapshot();
    if let Some(reason) = state.meta.store().refusing_changes() {
        workers.insert(
            0,
            (
                "metadata".to_string(),
                format!("every change is refused until the master restarts: {reason}"),
            ),
        );
    }
    Ok(MasterReply::Status(ClusterStatus {
        master_version: format!("elkfs-master {}", env!("CARGO_PKG_VERSION")),
        metadata_version: state.meta.store().version().0,
        inodes,
        chunks: pass.chunks,
        chunkservers,
        metaloggers: state.metaloggers.list(),
        under_goal: pass.under_goal,
        over_goal: pass.over_goal,
        missing: pass.without_copy,
        workers,
    }))
}
