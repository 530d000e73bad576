//! Bytes a writer left past a file's end without reporting them, cleared before the file grows
//! over them. Chunks hold nothing past the end in the normal course of things, but a writer
//! that died before it reported its length (or whose write failed) may have left bytes there,
//! and whatever makes the file longer would make them part of it: a truncate that grows the
//! file ([`crate::truncate`]) or a write past the end (`WriteChunk`).
//!
//! So the chunk holding the end is cut to it (a version bump and a `Truncate` on every copy,
//! after a copy of its own if a snapshot shares it), and chunks lying wholly past it are
//! dropped, each under its slot's lease. A slot whose writer lost its lease lately without
//! reporting (a cut connection, a lapsed lease, a master restart) is left alone for a grace
//! time: that writer may be alive and about to report what it stored.

use elkfs_metastore::{FileChunk, MetaOp};
use elkfs_proto::geometry::CHUNK_SIZE;
use elkfs_proto::types::Timestamp;
use elkfs_proto::{InodeId, SessionId, Status};
use tokio_util::sync::CancellationToken;

use crate::chunk_ops::Cut;
use crate::leases::LeaseKey;
use crate::state::MasterState;

/// What grows the file over the bytes being cleared, which decides how a slot in the way is
/// treated.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GrownBy {
    /// A truncate: it waits for the lease of a slot a writer holds (the writer finishes and
    /// reports first, and what it wrote stays), and fails when the chunk holding the end has
    /// no copy to cut, as a truncate into that chunk does.
    Truncate,
    /// A write further on in the file: it leaves a slot another writer holds alone (that writer
    /// reports what it stores) rather than wait for it, and goes ahead past a chunk it cannot
    /// cut (the write must not fail for another chunk's sake).
    Write,
}

/// Before the file grows from `end` to `size`: cuts the chunk holding the end to it and drops
/// the chunks wholly between the end and `size`. Gives up (`Io`) once `ended` is cancelled.
pub async fn clear(
    state: &MasterState,
    ended: &CancellationToken,
    inode: InodeId,
    end: u64,
    size: u64,
    grown_by: GrownBy,
) -> Result<(), Status> {
    if !end.is_multiple_of(CHUNK_SIZE) {
        let index = (end / CHUNK_SIZE) as u32;
        if let Some(lease) = SlotLease::get(state, ended, (inode, index), grown_by).await? {
            // A writer that held the lease has reported by now; the end may have moved.
            let end = file_size(state, inode).await?;
            if end < size
                && end / CHUNK_SIZE == u64::from(index)
                && !unreported(state, inode, index)
            {
                match cut_chunk(state, &lease, end % CHUNK_SIZE).await {
                    Err(status) if grown_by == GrownBy::Write => {
                        tracing::warn!(%inode, index, %status, "cannot cut the chunk holding a file's end; a write past it goes ahead");
                    }
                    other => other?,
                }
            }
        }
    }
    let first = end.div_ceil(CHUNK_SIZE);
    let past = size.div_ceil(CHUNK_SIZE);
    if first >= past {
        return Ok(());
    }
    let slots: Vec<u32> = state
        .meta
        .read(move |s| s.file_chunks(inode))
        .await?
        .into_iter()
        .map(|fc| fc.index)
        .filter(|&i| (first..past).contains(&u64::from(i)))
        .collect();
    for index in slots {
        let Some(_lease) = SlotLease::get(state, ended, (inode, index), grown_by).await? else {
            continue;
        };
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
pub fn unreported(state: &MasterState, inode: InodeId, index: u32) -> bool {
    let lately = state.leases.written_unreported_lately((inode, index));
    if lately {
        tracing::debug!(%inode, index, "a writer's lease on the slot ended lately without a report; what lies past the end is left for it");
    }
    lately
}

/// Cuts the chunk in `lease`'s slot to `length` bytes, if the slot holds one (copied first if a
/// snapshot shares it), while the lease is still held.
pub async fn cut_chunk(
    state: &MasterState,
    lease: &SlotLease<'_>,
    length: u64,
) -> Result<(), Status> {
    let (inode, index) = lease.key;
    let found: Option<FileChunk> = state.meta.read(move |s| s.file_chunk(inode, index)).await?;
    let Some(fc) = found else {
        return Ok(());
    };
    let fc = state.chunks.private_chunk(inode, fc).await?;
    let held = || lease.holds();
    let cut = Cut {
        length: length as u32,
        held: &held,
    };
    state.chunks.truncate_chunk(fc, cut).await
}

/// The file's size as the master knows it now.
pub async fn file_size(state: &MasterState, inode: InodeId) -> Result<u64, Status> {
    Ok(state.meta.read(move |s| s.attr(inode)).await?.size)
}

/// A lease the master takes on one chunk slot for one step, released on drop.
pub struct SlotLease<'a> {
    state: &'a MasterState,
    key: LeaseKey,
    holder: SessionId,
}

impl SlotLease<'_> {
    /// Waits for the lease on `key`; `Io` once `ended` is cancelled first.
    pub async fn take<'a>(
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

    /// The lease on `key`, waited for or not as `grown_by` says: `None` when a writer holds it
    /// and it is not waited for.
    async fn get<'a>(
        state: &'a MasterState,
        ended: &CancellationToken,
        key: LeaseKey,
        grown_by: GrownBy,
    ) -> Result<Option<SlotLease<'a>>, Status> {
        match grown_by {
            GrownBy::Truncate => Self::take(state, ended, key).await.map(Some),
            GrownBy::Write => {
                let holder = state.master_holder();
                Ok(state.leases.try_acquire(key, holder).then_some(SlotLease {
                    state,
                    key,
                    holder,
                }))
            }
        }
    }
}

impl SlotLease<'_> {
    /// Whether the lease is still held (renewing it if so): a long step may outlast it.
    pub fn holds(&self) -> bool {
        self.state.leases.renew(self.key, self.holder)
    }
}

impl Drop for SlotLease<'_> {
    fn drop(&mut self) {
        self.state.leases.release(self.key, self.holder);
    }
}
