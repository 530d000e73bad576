//! A file's size set by hand (`truncate`): its chunks are made to agree with the new size
//! before the size is committed, so that what becomes part of the file reads as zeros.
//!
//! - **Shrinking** into the middle of a chunk cuts that chunk's copies (under its lease), so
//!   that growing the file again later reads zeros there, never the old bytes. Chunks wholly
//!   past the new end go with the size change itself.
//! - **Growing** makes the bytes between the old end and the new one part of the file, so what
//!   a writer left there without reporting it is cleared first ([`crate::past_end`]). A
//!   truncate waits for the lease of each slot it clears: a writer still at work there finishes
//!   and reports its length first, and what it wrote stays.
//!
//! Only records that replay as they always did are used (`SetChunkVersion`, `ClearChunks`):
//! what is dropped is decided here, not when the size change is replayed.

use elkfs_proto::geometry::{CHUNK_SIZE, MAX_FILE_SIZE};
use elkfs_proto::{InodeId, Status};
use tokio_util::sync::CancellationToken;

use crate::past_end::{self, GrownBy, SlotLease};
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
    let mut end = past_end::file_size(state, inode).await?;
    // A size past the largest is refused by the commit itself.
    if size > end && size <= MAX_FILE_SIZE {
        past_end::clear(state, ended, inode, end, size, GrownBy::Truncate).await?;
        // The file may have grown meanwhile (a writer reported).
        end = past_end::file_size(state, inode).await?;
    }
    let held = if size >= end || size.is_multiple_of(CHUNK_SIZE) {
        None
    } else {
        let index = (size / CHUNK_SIZE) as u32;
        let lease = SlotLease::take(state, ended, (inode, index)).await?;
        past_end::cut_chunk(state, &lease, size % CHUNK_SIZE).await?;
        Some(lease)
    };
    if ended.is_cancelled() {
        return Err(Status::Io);
    }
    Ok(SizeChange { _held: held })
}
