//! A file's size set by hand (`truncate`): its chunks are made to agree with the new size
//! before the size is committed, so that what becomes part of the file reads as zeros.
//!
//! - **Shrinking** into the middle of a chunk cuts that chunk's copies (under its lease), so
//!   that growing the file again later reads zeros there, never the old bytes. Chunks wholly
//!   past the new end go with the size change itself.
//! - **Growing** makes the bytes between the old end and the new one part of the file. Chunks
//!   hold nothing there in the normal course of things, but a writer that died before it
//!   reported its length (or whose write failed) may have left bytes past the end. So the chunk
//!   holding the old end is cut to it (a version bump and a `Truncate` on every copy, after a
//!   copy of its own if a snapshot shares it), and chunks lying wholly between the old end and
//!   the new are dropped. Each is done under the slot's lease, so a writer still at work there
//!   finishes and reports its length first, and what it wrote stays. A slot whose writer lost
//!   its lease lately without reporting (a cut connection, a lapsed lease, a master restart) is
//!   left alone for a grace time: that writer may be alive and about to report what it stored.
//!   Growing a file that ends on a chunk boundary (every empty file) costs only a look at its
//!   chunk list.
//!
//! Only records that replay as they always did are used (`SetChunkVersion`, `ClearChunks`):
//! what is dropped is decided here, not when the size change is replayed.

use elkfs_metastore::{FileChunk, MetaOp};
use elkfs_proto::geometry::{CHUNK_SIZE, MAX_FILE_SIZE};
use elkfs_proto::types::Timestamp;
use elkfs_proto::{InodeId, SessionId, Status};
use tokio_util::sync::CancellationToken;

use crate::leases::LeaseKey;
use crate::state::MasterState;

/// The lease a size change holds until its new size is committed (released on drop).
pub struct SizeChange<'a> {
    _held: Option<SlotLease<'a>>,
}

/// Makes the chunks of `inode` agree with the size `size` about to be committed (see the
/// module's comment). Keep the answer until the commit is done. Gives up (`Io`) once `ended`
/// (the client's connection) is cancelled: a resend of the request may be under way, and this
/// one must not change the file after it.
pub async fn prepare<'a>(
    state: &'a MasterState,
    ended: &CancellationToken,
    inode: InodeId,
    size: u64,
) -> Result<SizeChange<'a>, Status> {
    let mut end = file_size(state, inode).await?;
    // A size past the largest is refused by the commit itself.
    if size > end && size <= MAX_FILE_SIZE {
        clear_past_end(state, ended, inode, end, size).await?;
        // The file may have grown meanwhile (a writer reported).
        end = file_size(state, inode).await?;
    }
    let held = if size >= end || size.is_multiple_of(CHUNK_SIZE) {
        None
    } else {
        let index = (size / CHUNK_SIZE) as u32;
        let lease = SlotLease::take(state, ended, (inode, index)).await?;
        cut_chunk(state, inode, index, size % CHUNK_SIZE).await?;
        Some(lease)
    };
    if ended.is_cancelled() {
        return Err(Status::Io);
    }
    Ok(SizeChange { _held: held })
}

/// Before the file grows from `end` to `size`: cuts the chunk holding the end to it and drops
/// the chunks wholly between the end and `size`.
async fn clear_past_end(
    state: &MasterState,
    ended: &CancellationToken,
    inode: InodeId,
    end: u64,
    size: u64,
) -> Result<(), Status> {
    if !end.is_multiple_of(CHUNK_SIZE) {
        let index = (end / CHUNK_SIZE) as u32;
        let _lease = SlotLease::take(state, ended, (inode, index)).await?;
        // A writer that held the lease has reported by now; the end may have moved.
        let end = file_size(state, inode).await?;
        if end < size && end / CHUNK_SIZE == u64::from(index) && !unreported(state, inode, index) {
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
        let _lease = SlotLease::take(state, ended, (inode, index)).await?;
        // Only while the slot still lies wholly past the end: a writer may have reported.
        if u64::from(index) * CHUNK_SIZE >= file_size(state, inode).await?
            && !unreported(state, inode, index)
        {
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

/// Whether slot `index` of `inode` may hold data a writer that is still alive has yet to
/// report (see [`crate::leases::Leases::written_unreported_lately`]): left alone then.
fn unreported(state: &MasterState, inode: InodeId, index: u32) -> bool {
    let lately = state.leases.written_unreported_lately((inode, index));
    if lately {
        tracing::debug!(%inode, index, "a writer's lease on the slot ended lately without a report; what lies past the end is left for it");
    }
    lately
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
    /// Waits for the lease on `key`; `Io` once `ended` is cancelled first.
    async fn take<'a>(
        state: &'a MasterState,
        ended: &CancellationToken,
        key: LeaseKey,
    ) -> Result<SlotLease<'a>, Status> {
        let holder = state.master_holder();
        if !state.leases.acquire_unless(key, holder, ended).await {
            return Err(Status::Io);
        }
        Ok(SlotLease { state, key, holder })
    }
}

impl Drop for SlotLease<'_> {
    fn drop(&mut self) {
        self.state.leases.release(self.key, self.holder);
    }
}
