//! Messages on a chunkserver's data port: reads, chained writes, syncs.

use std::net::SocketAddr;

use serde::{Deserialize, Serialize};

use crate::capability::Capability;
use crate::ids::{ChunkId, ChunkVersion};
use crate::status::Status;

/// A request to a chunkserver's data port; writes carry their bytes as the frame's data.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum DataRequest {
    /// Reads up to `length` bytes at `offset`; the reply's data holds them (short at the end of
    /// the chunk's data: the rest of the file's range reads as zeros).
    Read {
        /// The chunk.
        chunk: ChunkId,
        /// The version the reader expects.
        version: ChunkVersion,
        /// Offset in the chunk.
        offset: u32,
        /// Bytes wanted.
        length: u32,
        /// The master's permission to read this version of the chunk.
        capability: Capability,
    },
    /// Writes the frame's data at `offset`, then forwards to `chain[0]` with the rest of the chain.
    Write {
        /// The chunk.
        chunk: ChunkId,
        /// The version the write lease gave.
        version: ChunkVersion,
        /// Offset in the chunk.
        offset: u32,
        /// The servers after this one that must store the data too.
        chain: Vec<SocketAddr>,
        /// The master's permission to write this version of the chunk (forwarded along).
        capability: Capability,
        /// Create the chunk first where it is missing. Honoured only under `Create` access, and
        /// a client sets it only on the frames it sends before the chain first acknowledged
        /// one: afterwards a missing chunk was deleted or lost, and the write must fail.
        create: bool,
    },
    /// fsyncs the chunk here and on every server of `chain`.
    Sync {
        /// The chunk.
        chunk: ChunkId,
        /// The servers after this one.
        chain: Vec<SocketAddr>,
        /// Any capability for the chunk (syncing changes no data).
        capability: Capability,
    },
}

/// A chunkserver's answer to a [`DataRequest`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum DataReply {
    /// The bytes read are the frame's data.
    Read,
    /// Stored on this server and every server after it in the chain.
    Written,
    /// Synced on this server and every server after it in the chain.
    Synced,
}

/// Why a data request failed, and on which server of the chain.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[error("{status} on chunkserver {server}")]
pub struct DataError {
    /// What went wrong.
    pub status: Status,
    /// The server where it went wrong (the one answering, or one further down the chain).
    pub server: SocketAddr,
}

/// The body of every data-port response.
pub type DataResponse = Result<DataReply, DataError>;
