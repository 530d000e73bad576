//! Everything the master's connection handlers share.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use elkfs_proto::SessionId;

use crate::chunk_ops::ChunkOps;
use crate::cluster::Cluster;
use crate::leases::Leases;
use crate::meta::Meta;

/// The master's shared state.
pub struct MasterState {
    /// The namespace.
    pub meta: Meta,
    /// Connected chunkservers and their copies.
    pub cluster: Arc<Cluster>,
    /// Write leases.
    pub leases: Leases,
    /// Chunk creation, versions, deletion.
    pub chunks: ChunkOps,
    next_session: AtomicU64,
}

impl MasterState {
    /// Assembles the shared state.
    pub fn new(meta: Meta, cluster: Arc<Cluster>, leases: Leases, chunks: ChunkOps) -> Self {
        MasterState {
            meta,
            cluster,
            leases,
            chunks,
            next_session: AtomicU64::new(1),
        }
    }

    /// A fresh session id (ids are per master run; 0 is the master's own).
    pub fn new_session(&self) -> SessionId {
        SessionId(self.next_session.fetch_add(1, Ordering::Relaxed))
    }
}

/// The session the master uses for its own leases (truncation).
pub const MASTER_SESSION: SessionId = SessionId(0);
