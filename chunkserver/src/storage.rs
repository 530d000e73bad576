//! The chunk store as async code uses it: its blocking calls on the blocking pool, errors as wire
//! statuses.

use std::sync::Arc;

use elkfs_chunkstore::{ChunkError, ChunkStore};
use elkfs_proto::{ChunkId, Status};

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
        ChunkError::Io { .. } | ChunkError::WriteLost { .. } => Status::Io,
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
        Err(e) => Err(store_failed(
            elkfs_proto::ChunkId(0),
            format!("store task failed: {e}"),
        )),
    }
}

/// Runs a store call on a thread that answers the peer itself: a panic in the store becomes an
/// I/O error for this request instead of a request left unanswered.
pub fn unpanicked<T>(
    chunk: ChunkId,
    f: impl FnOnce() -> Result<T, ChunkError>,
) -> Result<T, ChunkError> {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(f))
        .unwrap_or_else(|_| Err(store_failed(chunk, "the chunk store panicked".into())))
}

/// The I/O error a store call that did not finish (it panicked) stands for.
fn store_failed(chunk: ChunkId, reason: String) -> ChunkError {
    ChunkError::Io {
        chunk,
        path: Default::default(),
        source: std::io::Error::other(reason),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_store_call_that_panics_fails_as_an_io_error_and_others_pass_through() {
        let chunk = ChunkId(7);
        let panicked = unpanicked::<Vec<u8>>(chunk, || panic!("a bug in the store"));
        match panicked {
            Err(ChunkError::Io { chunk: c, .. }) => assert_eq!(c, chunk),
            other => panic!("expected an I/O error, got {other:?}"),
        }
        assert_eq!(
            status_of(&unpanicked::<()>(chunk, || panic!("again")).unwrap_err()),
            Status::Io
        );
        assert_eq!(unpanicked(chunk, || Ok(3u8)).unwrap(), 3);
        let refused = unpanicked::<()>(chunk, || Err(ChunkError::NotFound { chunk }));
        assert_eq!(status_of(&refused.unwrap_err()), Status::NotFound);
    }
}
