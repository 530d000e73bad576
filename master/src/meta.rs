//! The metadata store as async code sees it: every call runs on the blocking pool, and store
//! failures become `Status::Io` with one log line where they happen.

use std::sync::Arc;

use elkfs_metastore::{ExecError, MetaOp, MetaStore, Outcome, StoreError};
use elkfs_proto::{MetaVersion, Status};

/// Shared handle to the master's metadata store.
#[derive(Clone)]
pub struct Meta {
    store: Arc<MetaStore>,
}

/// Turns a store result into what a client is told.
pub fn to_status(e: ExecError) -> Status {
    match e {
        ExecError::Refused(s) => s,
        ExecError::Store(e) => {
            tracing::error!(error = %e, "metadata store failed");
            Status::Io
        }
    }
}

impl Meta {
    /// Wraps an opened store.
    pub fn new(store: MetaStore) -> Meta {
        Meta {
            store: Arc::new(store),
        }
    }

    /// Commits one change (checked, logged, applied).
    pub async fn commit(&self, op: MetaOp) -> Result<(MetaVersion, Outcome), Status> {
        let store = self.store.clone();
        tokio::task::spawn_blocking(move || store.commit(&op))
            .await
            .map_err(|_| Status::Io)?
            .map_err(to_status)
    }

    /// Runs a read against the store on the blocking pool.
    pub async fn read<T: Send + 'static>(
        &self,
        f: impl FnOnce(&MetaStore) -> Result<T, ExecError> + Send + 'static,
    ) -> Result<T, Status> {
        let store = self.store.clone();
        tokio::task::spawn_blocking(move || f(&store))
            .await
            .map_err(|_| Status::Io)?
            .map_err(to_status)
    }

    /// fsyncs the changelog.
    pub async fn sync(&self) -> Result<(), StoreError> {
        let store = self.store.clone();
        tokio::task::spawn_blocking(move || store.sync())
            .await
            .map_err(|e| StoreError::Changelog {
                path: Default::default(),
                source: std::io::Error::other(e.to_string()),
            })?
    }

    /// The store itself, for code already on a blocking thread.
    pub fn store(&self) -> &Arc<MetaStore> {
        &self.store
    }
}
