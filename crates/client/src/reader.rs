//! Reading file data straight from chunkservers: the range is split into per-chunk pieces read
//! in parallel, each from the best copy, falling over to the next copy on any error. Holes and
//! the part of a chunk past its data read as zeros.

use bytes::{Bytes, BytesMut};
use elkfs_proto::data::{DataError, DataReply, DataRequest};
use elkfs_proto::geometry::{CHUNK_SIZE, MAX_DATA_PAYLOAD, chunk_index_of, offset_in_chunk};
use elkfs_proto::master::{MasterReply, MasterRequest, ReadLocation};
use elkfs_proto::{InodeId, Status};

use crate::Client;

/// Times a piece is retried with a fresh location from the master.
const LOCATION_ATTEMPTS: usize = 3;

/// Zeros for reads of holes: a piece of a read (at most [`MAX_DATA_PAYLOAD`]) is answered from
/// here without allocating and clearing a buffer (possibly on the kernel's thread, see the
/// mount's `first_poll.rs`). Never written, so it costs no memory beyond the kernel's zero page.
static ZEROS: [u8; MAX_DATA_PAYLOAD as usize] = [0; MAX_DATA_PAYLOAD as usize];

/// `len` zero bytes.
fn zeros(len: usize) -> Bytes {
    match ZEROS.get(..len) {
        Some(zeros) => Bytes::from_static(zeros),
        None => Bytes::from(vec![0u8; len]),
    }
}

impl Client {
    /// Reads up to `size` bytes at `offset` (fewer at the end of the file).
    pub async fn read(&self, inode: InodeId, offset: u64, size: u32) -> Result<Bytes, Status> {
        if let Some(writer) = self.writer_if_open(inode) {
            writer.flush().await?;
        }
        let end = offset.saturating_add(size as u64);
        let mut pieces = Vec::new();
        let mut at = offset;
        while at < end {
            let chunk_end = (at / CHUNK_SIZE + 1) * CHUNK_SIZE;
            let piece_end = end.min(chunk_end).min(at + MAX_DATA_PAYLOAD as u64);
            pieces.push((at, (piece_end - at) as u32));
            at = piece_end;
        }
        let reads = pieces
            .iter()
            .map(|&(at, len)| self.read_piece(inode, at, len));
        let results = futures::future::join_all(reads).await;
        let mut out: Option<BytesMut> = None;
        let mut single: Option<Bytes> = None;
        for (i, result) in results.into_iter().enumerate() {
            let bytes = result?;
            let full = bytes.len() == pieces[i].1 as usize;
            if i == 0 && pieces.len() == 1 {
                single = Some(bytes);
                break;
            }
            out.get_or_insert_with(|| BytesMut::with_capacity(size as usize))
                .extend_from_slice(&bytes);
            if !full {
                break;
            }
        }
        Ok(single.unwrap_or_else(|| out.map(BytesMut::freeze).unwrap_or_default()))
    }

    async fn location(
        &self,
        inode: InodeId,
        index: u32,
        fresh: bool,
    ) -> Result<ReadLocation, Status> {
        if !fresh && let Some(loc) = self.locations.get(inode, index) {
            return Ok(loc);
        }
        match self
            .master
            .request(&MasterRequest::ReadChunk { inode, index })
            .await?
        {
            MasterReply::ReadLocation(loc) => {
                self.locations.put(inode, index, loc.clone());
                Ok(loc)
            }
            _ => Err(Status::Protocol),
        }
    }

    /// Reads `len` bytes at file offset `at`, all inside one chunk; short only at end of file.
    async fn read_piece(&self, inode: InodeId, at: u64, len: u32) -> Result<Bytes, Status> {
        let index = chunk_index_of(at);
        let in_chunk = offset_in_chunk(at);
        let mut last_error = Status::NoValidCopy;
        for attempt in 0..LOCATION_ATTEMPTS {
            let loc = self.location(inode, index, attempt > 0).await?;
            if at >= loc.file_length {
                return Ok(Bytes::new());
            }
            let len = (len as u64).min(loc.file_length - at) as u32;
            let Some((chunk, version)) = loc.chunk else {
                return Ok(zeros(len as usize));
            };
            let Some(capability) = loc.capability else {
                return Err(Status::Protocol);
            };
            let request = DataRequest::Read {
                chunk,
                version,
                offset: in_chunk,
                length: len,
                capability,
            };
            for server in &loc.servers {
                let conn = match self.data.get(*server).await {
                    Ok(c) => c,
                    Err(e) => {
                        tracing::debug!(%server, error = %e, "cannot connect to chunkserver");
                        last_error = Status::Io;
                        continue;
                    }
                };
                let call = conn.call(&request, Bytes::new());
                let answer = tokio::time::timeout(elkfs_common::defaults::DATA_TIMEOUT, call)
                    .await
                    .unwrap_or_else(|_| {
                        Err(elkfs_proto::ConnError::Closed {
                            peer: server.to_string(),
                            reason: "no answer in time".to_string(),
                        })
                    });
                match answer {
                    Ok((Ok(DataReply::Read), data)) => return Ok(pad(data, len)),
                    Ok((Ok(_), _)) => last_error = Status::Protocol,
                    Ok((Err(DataError { status, server }), _)) => {
                        tracing::debug!(%chunk, %server, %status, "chunk read failed; trying the next copy");
                        last_error = status;
                        // Another copy would say the same: ask the master again.
                        if matches!(status, Status::WrongVersion | Status::BadCapability) {
                            break;
                        }
                    }
                    Err(e) => {
                        tracing::debug!(%chunk, %server, error = %e, "chunk read failed; trying the next copy");
                        self.data.forget(*server);
                        last_error = Status::Io;
                    }
                }
            }
            self.locations.forget(inode, index);
        }
        tracing::warn!(%inode, index, status = %last_error, "no copy of a chunk could be read");
        Err(match last_error {
            Status::NotFound | Status::WrongVersion | Status::Corrupt | Status::NoValidCopy => {
                Status::Io
            }
            other => other,
        })
    }
}

/// A chunk's data ends where it was last written; the file goes on with zeros up to `len`.
fn pad(data: Bytes, len: u32) -> Bytes {
    if data.len() >= len as usize {
        return data.slice(..len as usize);
    }
    let mut out = BytesMut::with_capacity(len as usize);
    out.extend_from_slice(&data);
    out.resize(len as usize, 0);
    out.freeze()
}
