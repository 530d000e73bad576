//! The metadata store as async code sees it: every call runs on the blocking pool, and store
//! failures become `Status::Io` with one log line where they happen. Also the worker that writes
//! metadata images in the background when they are due.

use std::sync::Arc;
use std::time::{Duration, Instant};

use elkfs_common::worker::{Worker, WorkerState};
use elkfs_metastore::{ExecError, MetaOp, MetaStore, Outcome, StoreError};
use elkfs_proto::{MetaVersion, Status};

/// Shared handle to the master's metadata store.
#[derive(Clone)]
pub struct Meta {
    store: Arc<MetaStore>,
    committed: Arc<tokio::sync::watch::Sender<u64>>,
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
        let version = store.version().0;
        Meta {
            store: Arc::new(store),
            committed: Arc::new(tokio::sync::watch::channel(version).0),
        }
    }

    /// Commits one change (checked, logged, applied).
    pub async fn commit(&self, op: MetaOp) -> Result<(MetaVersion, Outcome), Status> {
        let store = self.store.clone();
        let result = tokio::task::spawn_blocking(move || store.commit(&op))
            .await
            .map_err(|_| Status::Io)?
            .map_err(to_status);
        if let Ok((version, _)) = &result {
            self.committed.send_if_modified(|v| {
                let newer = version.0 > *v;
                *v = (*v).max(version.0);
                newer
            });
        }
        result
    }

    /// Watches the version of the last committed change (metaloggers wait on it).
    pub fn committed(&self) -> tokio::sync::watch::Receiver<u64> {
        self.committed.subscribe()
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

/// How often the image worker asks the store whether an image is due.
const IMAGE_CHECK_INTERVAL: Duration = Duration::from_secs(2);

/// How long the image worker waits after a failed image before trying again.
const IMAGE_RETRY_DELAY: Duration = Duration::from_secs(60);

/// Writes a metadata image whenever the store says one is due (every `image_every_records`
/// records or `image_every_secs`), on a blocking thread while commits go on; after a good image
/// the store deletes the changelog files and images no longer needed.
pub struct ImageWorker {
    meta: Meta,
    status: String,
    retry_at: Option<Instant>,
}

impl ImageWorker {
    /// A worker for `meta`'s store.
    pub fn new(meta: Meta) -> ImageWorker {
        ImageWorker {
            meta,
            status: "no image written since start".to_string(),
            retry_at: None,
        }
    }
}

impl Worker for ImageWorker {
    fn name(&self) -> &'static str {
        "metadata-image"
    }

    async fn work(&mut self) -> WorkerState {
        if self.retry_at.is_some_and(|at| Instant::now() < at) || !self.meta.store.image_due() {
            return WorkerState::Idle;
        }
        let store = self.meta.store.clone();
        match tokio::task::spawn_blocking(move || store.write_image()).await {
            Ok(Ok(image)) => {
                tracing::info!(
                    version = image.version,
                    keys = image.keys,
                    bytes = image.bytes,
                    ms = image.elapsed.as_millis() as u64,
                    saved_values = image.saved_values,
                    removed_images = image.removed_images,
                    removed_changelogs = image.removed_changelogs,
                    path = %image.path.display(),
                    "metadata image written"
                );
                self.status = format!(
                    "last image: version {}, {} keys, {} ms",
                    image.version,
                    image.keys,
                    image.elapsed.as_millis()
                );
                self.retry_at = None;
            }
            Ok(Err(e)) => {
                tracing::warn!(error = %e, "cannot write a metadata image; retrying in a minute");
                self.status = format!("last image failed: {e}");
                self.retry_at = Some(Instant::now() + IMAGE_RETRY_DELAY);
            }
            Err(e) => {
                tracing::error!(error = %e, "the metadata image writer failed");
                self.status = format!("last image failed: {e}");
                self.retry_at = Some(Instant::now() + IMAGE_RETRY_DELAY);
            }
        }
        WorkerState::Idle
    }

    async fn wait_for_work(&mut self) {
        tokio::time::sleep(IMAGE_CHECK_INTERVAL).await;
    }

    fn status(&self) -> String {
        self.status.clone()
    }
}
