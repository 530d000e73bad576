//! Messages between a chunkserver and the master: registration, reports and chunk commands.

use std::net::SocketAddr;

use serde::{Deserialize, Serialize};

use crate::ids::{ChunkId, ChunkVersion, ServerId};
use crate::status::Status;

/// A chunk as a chunkserver reports it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChunkReport {
    /// The chunk.
    pub chunk: ChunkId,
    /// The version of the copy on this server.
    pub version: ChunkVersion,
    /// The copy is in a data directory marked for removal: it serves reads but does not count
    /// toward the goal, so it gets copied elsewhere and then deleted.
    pub marked_for_removal: bool,
}

/// Disk space on a chunkserver.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Space {
    /// Bytes on all its data directories.
    pub total: u64,
    /// Bytes still free.
    pub available: u64,
}

/// A request from a chunkserver to the master.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum CsRequest {
    /// Announces the server; the first request after the hello. Its chunks follow in
    /// [`CsRequest::Chunks`] batches, ended by [`CsRequest::RegisterDone`].
    Register {
        /// A random id the server keeps in its data directory, the same across restarts.
        server_id: u64,
        /// The address clients and peers reach its data port at.
        data_addr: SocketAddr,
        /// Its disk space.
        space: Space,
        /// How many chunks it will report.
        chunk_count: u64,
        /// [`crate::auth::cluster_proof`] of the cluster key for the master's nonce.
        proof: [u8; 32],
    },
    /// A batch of the chunks it holds.
    Chunks(Vec<ChunkReport>),
    /// All chunks have been reported.
    RegisterDone,
    /// Periodic space update (also shows the server is alive).
    Heartbeat {
        /// Current disk space.
        space: Space,
    },
    /// A copy failed its hash check or could not be read; the master should replace it.
    ChunkDamaged {
        /// The damaged copy.
        chunk: ChunkReport,
    },
    /// The server is stopping on purpose (maintenance, upgrade): its copies are expected back,
    /// so only chunks left with a single copy are replicated before the grace period ends.
    Stopping,
    /// Asks the master to prove it holds the cluster key; the reply carries a nonce for the
    /// chunkserver's own proof in [`CsRequest::Register`]. The first request after the hello.
    Challenge {
        /// A random nonce for the master's proof.
        nonce: [u8; 32],
    },
    /// A write created this copy: a new chunk's first frames may reach the server before the
    /// master's command to create it. The master counts it unless it already knows a copy of
    /// the chunk there (its own record is never lowered by a late report).
    ChunkCreated {
        /// The copy the write made.
        chunk: ChunkReport,
    },
}

/// The master's answer to a [`CsRequest`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum CsReply {
    /// Registration accepted under this id.
    Registered {
        /// The server's id for this master run.
        server: ServerId,
        /// The master's clock, seconds since the epoch: capabilities expire by it.
        clock: u64,
    },
    /// Acknowledged.
    Done,
    /// The master's proof of the cluster key, and its nonce for the chunkserver's proof.
    Challenge {
        /// [`crate::auth::cluster_proof`] of the cluster key for the chunkserver's nonce.
        proof: [u8; 32],
        /// The nonce the chunkserver must prove the key for.
        nonce: [u8; 32],
    },
}

/// A command from the master to a chunkserver.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum CsCommand {
    /// Creates an empty chunk; one already held at that version is kept as it is (a client
    /// writing under the first lease may have created it first).
    Create {
        /// The new chunk.
        chunk: ChunkId,
        /// Its first version.
        version: ChunkVersion,
    },
    /// Moves a copy to a new version before a write.
    SetVersion {
        /// The chunk.
        chunk: ChunkId,
        /// The version the copy must have now.
        from: ChunkVersion,
        /// Its new version.
        to: ChunkVersion,
    },
    /// Cuts or extends a copy and moves it to a new version.
    Truncate {
        /// The chunk.
        chunk: ChunkId,
        /// The version the copy must have now.
        from: ChunkVersion,
        /// Its new version.
        to: ChunkVersion,
        /// The new data length.
        length: u32,
    },
    /// Deletes a copy.
    Delete {
        /// The chunk.
        chunk: ChunkId,
        /// The version that may be deleted (a newer copy is kept).
        version: ChunkVersion,
    },
    /// Copies a chunk from another server (replication, balancing).
    Replicate {
        /// The chunk.
        chunk: ChunkId,
        /// The version to copy.
        version: ChunkVersion,
        /// A server holding a valid copy.
        source: SocketAddr,
    },
    /// Copies a local chunk into a new chunk (copy-on-write after a snapshot).
    Duplicate {
        /// The shared chunk.
        chunk: ChunkId,
        /// Its version.
        version: ChunkVersion,
        /// The new chunk.
        new_chunk: ChunkId,
        /// The new chunk's version.
        new_version: ChunkVersion,
    },
    /// Deletes copies of chunks no file refers to any more, many per command: the master
    /// gathers the copies files free for a moment and sends them together. Every copy is tried;
    /// the answer is the first failure, if any.
    DeleteMany {
        /// Each chunk with the version that may be deleted (a newer copy is kept).
        chunks: Vec<(ChunkId, ChunkVersion)>,
    },
}

/// The chunkserver's answer to a [`CsCommand`].
pub type CsCommandResult = Result<(), Status>;

/// The body of every master response to a chunkserver.
pub type CsResponse = Result<CsReply, Status>;
