//! A file's size set by hand (`truncate`): its chunks are made to agree with the new size
//! before the size is committed, so that what becomes part of the file reads as zeros.
//!
//! - **Shrinking** into the middle of a chunk cuts that chunk's copies (under its lease), so
//!   that growing the file again later reads zeros there, never the old bytes. Chunks wholly
//!   past the new end go with the size change itself.
//! - **Growing** makes the bytes between the old end and the new one part of the file. Chunks
//!   hold nothing there in the normal course of things, but a writer that died before it
//!   reported its length (or whose write failed) may have left bytes past the end. So the chunk
//!   holding the old end is cut to it, and chunks lying wholly between the old end and the new
//!   are dropped. Each is done under the slot's lease, so a writer still at work there finishes
//!   and reports its length first, and what it wrote stays. A file without chunks past its end
//!   (the usual case, and every empty file) costs only a look at its chunk list.
//!
//! Only records that replay as they always did are used (`SetChunkVersion`, `ClearChunks`):
//! what is dropped is decided here, not when the size change is replayed.

use elkfs_metastore::{FileChunk, MetaOp};
use elkfs_proto::geometry::{CHUNK_SIZE, MAX_FILE_SIZE};
use elkfs_proto::types::Timestamp;
use elkfs_proto::{InodeId, SessionId, Status};

use crate::leases::LeaseKey;
use crate::state::MasterState;

/// The lease a size change holds until its new size is committed (released on drop).
pub struct SizeChange<'a> {
    _held: Option<SlotLease<'a>>,
}

/// Makes the chunks of `inode` agree with the size `size` about to be committed (see the
/// module's comment). Keep the answer until the commit is done.
pub async fn prepare(
    state: &MasterState,
    inode: InodeId,
    size: u64,
) -> Result<SizeChange<'_>, Status> {
    let mut end = file_size(state, inode).await?;
    // A size past the largest is refused by the commit itself.
    if size > end && size <= MAX_FILE_SIZE {
        clear_past_end(state, inode, end, size).await?;
        // The file may have grown meanwhile (a writer reported).
        end = file_size(state, inode).await?;
    }
    if size >= end || size.is_multiple_of(CHUNK_SIZE) {
        return Ok(SizeChange { _held: None });
    }
    let index = (size / CHUNK_SIZE) as u32;
    let lease = SlotLease::take(state, (inode, index)).await;
    cut_chunk(state, inode, index, size % CHUNK_SIZE).await?;
    Ok(SizeChange { _held: Some(lease) })
}

/// Before the file grows from `end` to `size`: cuts the chunk holding the end to it and drops
/// the chunks wholly between the end and `size`.
async fn clear_past_end(
    state: &MasterState,
    inode: InodeId,
    end: u64,
    size: u64,
) -> Result<(), Status> {
    if !end.is_multiple_of(CHUNK_SIZE) {
        let index = (end / CHUNK_SIZE) as u32;
        let _lease = SlotLease::take(state, (inode, index)).await;
        // A writer that held the lease has reported by now; the end may have moved.
        let end = file_size(state, inode).await?;
        if end < size && end / CHUNK_SIZE == u64::from(index) {
            cut_chunk(state, inode, index, end % CHUNK_SIZE).await?;
        }
    }
    let first = end.div_ceil(CHUNK_SIZE);
    let past = size.div_ceil(CHUNK_SIZE);
    let slots: Vec<u32> = state
        .meta
        .read(move |s| s.file_chunks(inode))
        .await?
        .into_iter()
        .map(|fc| fc.index)
        .filter(|&i| (first..past).contains(&u64::from(i)))
        .collect();
    for index in slots {
        let _lease = SlotLease::take(state, (inode, index)).await;
        // Only while the slot still lies wholly past the end: a writer may have reported.
        if u64::from(index) * CHUNK_SIZE >= file_size(state, inode).await? {
            let (_, outcome) = state
                .meta
                .commit(MetaOp::ClearChunks {
                    inode,
                    first: index,
                    end: index + 1,
                    time: Timestamp::now(),
                })
                .await?;
            state.chunks.delete_freed(outcome.freed_chunks);
        }
    }
    Ok(())
}

/// Cuts chunk `index` of `inode` to `length` bytes, if the slot holds one (copied first if a
/// snapshot shares it). The caller holds the slot's lease.
async fn cut_chunk(
    state: &MasterState,
    inode: InodeId,
    index: u32,
    length: u64,
) -> Result<(), Status> {
    let found: Option<FileChunk> = state.meta.read(move |s| s.file_chunk(inode, index)).await?;
    let Some(fc) = found else {
        return Ok(());
    };
    let fc = state.chunks.private_chunk(inode, fc).await?;
    state.chunks.truncate_chunk(fc, length as u32).await
}

async fn file_size(state: &MasterState, inode: InodeId) -> Result<u64, Status> {
    Ok(state.meta.read(move |s| s.attr(inode)).await?.size)
}

/// A lease the master takes on one chunk slot for one step, released on drop.
struct SlotLease<'a> {
    state: &'a MasterState,
    key: LeaseKey,
    holder: SessionId,
}

impl SlotLease<'_> {
    async fn take(state: &MasterState, key: LeaseKey) -> SlotLease<'_> {
        let holder = state.master_holder();
        state.leases.acquire(key, holder).await;
        SlotLease { state, key, holder }
    }
}

impl Drop for SlotLease<'_> {
    fn drop(&mut self) {
        self.state.leases.release(self.key, self.holder);
    }
}
