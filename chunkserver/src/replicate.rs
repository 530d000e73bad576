//! Copying a chunk from another chunkserver on the master's command (replication, balancing).
//!
//! The copy is built under version 0, which no valid chunk ever has, and takes its real version
//! only once complete: a copy cut short by a crash is stale at the next start, never served.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use elkfs_proto::capability::Capability;
use elkfs_proto::data::{DataReply, DataRequest};
use elkfs_proto::geometry::{CHUNK_SIZE, MAX_DATA_PAYLOAD};
use elkfs_proto::{ChunkId, ChunkVersion, DataPool, Status};

use crate::storage::{Store, blocking, status_of};

/// The version an incomplete copy has.
pub const BUILDING: ChunkVersion = ChunkVersion(0);

/// Reads kept in flight from the source.
const WINDOW: usize = 4;

/// How long one read from the source may take. A source that stops answering (a hung server,
/// a connection that died without a word) fails the copy and frees the chunk's turn, so the
/// master can order it again, instead of holding both for good.
const READ_TIMEOUT: Duration = Duration::from_secs(20);

/// Copies `chunk` at `version` from `source` into this server's store.
pub async fn replicate(
    store: &Store,
    peers: &DataPool,
    chunk: ChunkId,
    version: ChunkVersion,
    source: SocketAddr,
    capability: Capability,
) -> Result<(), Status> {
    if let Some(info) = store.info(chunk) {
        if info.version == version {
            // Held already (a server the master chose while it was registering): counted if
            // its disk has it.
            return blocking(store, move |s| s.sync(chunk))
                .await
                .map_err(|e| status_of(&e));
        }
        // An older copy is in the way; the master has given up on it.
        let old = info.version;
        blocking(store, move |s| s.delete(chunk, old))
            .await
            .map_err(|e| status_of(&e))?;
    }
    blocking(store, move |s| s.create(chunk, BUILDING))
        .await
        .map_err(|e| status_of(&e))?;
    let made = match copy_data(store, peers, chunk, version, source, capability).await {
        // On disk before its name says it is complete, and under that name before the master
        // hears of it: the master may delete the copy it was made from at once.
        Ok(()) => blocking(store, move |s| {
            s.sync(chunk)?;
            s.set_version(chunk, BUILDING, version)?;
            s.sync(chunk)
        })
        .await
        .map_err(|e| {
            tracing::warn!(error = %e, "cannot complete a copy");
            status_of(&e)
        }),
        Err(status) => Err(status),
    };
    if made.is_err() {
        // Whichever version it got to, the copy is not one to keep.
        let removed = blocking(store, move |s| match s.info(chunk) {
            Some(info) => s.delete(chunk, info.version),
            None => Ok(()),
        });
        if let Err(e) = removed.await {
            tracing::warn!(%chunk, error = %e, "cannot remove an incomplete copy");
        }
    }
    made
}

/// What a copy that failed for want of its source answers (the source's own refusals pass
/// through as they are): not `Io`, which tells the master that this server's disk or network
/// failed, so that it is passed over for a while.
const SOURCE_FAILED: Status = Status::NoValidCopy;

async fn copy_data(
    store: &Store,
    peers: &DataPool,
    chunk: ChunkId,
    version: ChunkVersion,
    source: SocketAddr,
    capability: Capability,
) -> Result<(), Status> {
    let conn = peers.get(source).await.map_err(|e| {
        tracing::warn!(%chunk, %source, error = %e, "cannot reach the replication source");
        SOURCE_FAILED
    })?;
    let piece = MAX_DATA_PAYLOAD;
    let mut next_offset: u64 = 0;
    let mut in_flight = VecDeque::new();
    loop {
        while in_flight.len() < WINDOW && next_offset < CHUNK_SIZE {
            let request = DataRequest::Read {
                chunk,
                version,
                offset: next_offset as u32,
                length: piece,
                capability,
            };
            let pending = conn.send(&request, Bytes::new()).await.map_err(|e| {
                tracing::warn!(%chunk, %source, error = %e, "lost the replication source");
                SOURCE_FAILED
            })?;
            in_flight.push_back((next_offset as u32, pending));
            next_offset += piece as u64;
        }
        let Some((offset, pending)) = in_flight.pop_front() else {
            return Ok(());
        };
        let Ok(answer) = tokio::time::timeout(READ_TIMEOUT, pending.wait()).await else {
            tracing::warn!(%chunk, %source, offset, "the replication source did not answer in time");
            // Whatever holds the connection up, the next copy gets a new one.
            conn.close("a replication read timed out");
            return Err(SOURCE_FAILED);
        };
        let data = match answer {
            Ok((Ok(DataReply::Read), data)) => data,
            // The source's disk failed the read: not this server's.
            Ok((Err(e), _)) if e.status == Status::Io => return Err(SOURCE_FAILED),
            Ok((Err(e), _)) => return Err(e.status),
            Ok((Ok(_), _)) => return Err(Status::Protocol),
            Err(e) => {
                tracing::warn!(%chunk, %source, error = %e, "lost the replication source");
                return Err(SOURCE_FAILED);
            }
        };
        let len = data.len();
        if len > 0 {
            blocking(store, move |s| s.write(chunk, BUILDING, offset, &data))
                .await
                .map_err(|e| {
                    tracing::warn!(error = %e, "cannot store a copy being made");
                    status_of(&e)
                })?;
        }
        if len < piece as usize {
            // The end of the chunk's data: later reads in flight are empty.
            return Ok(());
        }
    }
}
