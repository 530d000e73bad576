//! The chunk store as async code uses it: its blocking calls on the blocking pool, errors as wire
//! statuses.

use std::sync::Arc;

use elkfs_chunkstore::{ChunkError, ChunkStore};
use elkfs_proto::Status;

/// Shared handle to this server's chunk store.
pub type Store = Arc<ChunkStore>;

/// The status a peer is told for a store error.
pub fn status_of(e: &ChunkError) -> Status {
    match e {
        ChunkError::NotFound { .. } => Status::NotFound,
        ChunkError::AlreadyExists { .. } => Status::Exists,
        ChunkError::WrongVersion { .. } => Status::WrongVersion,
        ChunkError::Corrupt { .. } | ChunkError::BadHeader { .. } => Status::Corrupt,
        ChunkError::OutOfRange { .. } => Status::Invalid,
        ChunkError::NoSpace { .. } => Status::NoSpace,
        ChunkError::Io { .. } => Status::Io,
    }
}

/// Runs a store operation on the blocking pool.
pub async fn blocking<T: Send + 'static>(
    store: &Store,
    f: impl FnOnce(&ChunkStore) -> Result<T, ChunkError> + Send + 'static,
) -> Result<T, ChunkError> {
    let store = store.clone();
    match tokio::task::spawn_blocking(move || f(&store)).await {
        Ok(result) => result,
        Err(e) => Err(ChunkError::Io {
            chunk: elkfs_proto::ChunkId(0),
            path: Default::default(),
            source: std::io::Error::other(format!("store task failed: {e}")),
        }),
    }
}
