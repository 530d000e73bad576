//! The metadata store as async code sees it: a call runs in place when it needs only memory
//! (and, for a commit, one `write(2)` to the changelog), else on the blocking pool; store
//! failures become `Status::Io` with one log line where they happen, a full disk
//! `Status::NoSpace` with one line every [`NO_SPACE_LOG_EVERY`]. Also the worker that writes
//! metadata images in the background when they are due.

use std::sync::Arc;
use std::time::{Duration, Instant};

use elkfs_common::worker::{Worker, WorkerState};
use elkfs_metastore::kv_cache::cache_only;
use elkfs_metastore::{ExecError, MetaOp, MetaStore, Outcome, StoreError};
use elkfs_proto::{MetaVersion, Status};

/// Shared handle to the master's metadata store.
#[derive(Clone)]
pub struct Meta {
    store: Arc<MetaStore>,
    committed: Arc<tokio::sync::watch::Sender<u64>>,
    durable: Arc<GroupSync>,
    sync_commit: bool,
    /// When the files moved to the trash are due (the trash worker's schedule).
    pub trash_due: Arc<crate::trash_schedule::TrashSchedule>,
}

/// Group commit: one changelog fsync at a time, and everyone waiting for a version that the
/// running fsync covers shares it instead of starting another.
struct GroupSync {
    /// The version up to which the changelog is known to be on disk; watched by those who wait
    /// for an fsync someone else runs.
    synced: tokio::sync::watch::Sender<u64>,
    /// Held while an fsync runs; waiters queue here and usually find their version covered.
    running: tokio::sync::Mutex<()>,
}

/// How often a full disk under the metadata is logged while changes keep being refused.
pub const NO_SPACE_LOG_EVERY: Duration = Duration::from_secs(10);

/// When a change refused for want of room was last logged.
static NO_SPACE_LOGGED: std::sync::Mutex<Option<Instant>> = std::sync::Mutex::new(None);

/// Turns a store result into what a client is told. A full disk is ENOSPC, as a local file
/// system says: nothing was changed, and the same change works once there is room.
pub fn to_status(e: ExecError) -> Status {
    match e {
        ExecError::Refused(s) => s,
        ExecError::Store(e) if e.is_out_of_space() => {
            let mut logged = NO_SPACE_LOGGED.lock().unwrap_or_else(|p| p.into_inner());
            if logged.is_none_or(|at| at.elapsed() >= NO_SPACE_LOG_EVERY) {
                *logged = Some(Instant::now());
                tracing::error!(error = %e, "the master's disk is full: changes are refused (ENOSPC) until there is room in its data directory");
            }
            Status::NoSpace
        }
        ExecError::Store(e) => {
            tracing::error!(error = %e, "metadata store failed");
            Status::Io
        }
    }
}

impl Meta {
    /// Wraps an opened store. With `sync_commit`, a commit returns only once its record is
    /// fsynced (concurrent commits share one fsync).
    pub fn new(store: MetaStore, sync_commit: bool) -> Meta {
        let version = store.version().0;
        Meta {
            store: Arc::new(store),
            committed: Arc::new(tokio::sync::watch::channel(version).0),
            durable: Arc::new(GroupSync {
                synced: tokio::sync::watch::channel(0).0,
                running: Default::default(),
            }),
            sync_commit,
            trash_due: Arc::default(),
        }
    }

    /// Commits one change (checked, logged, applied; with `sync_commit`, also fsynced).
    pub async fn commit(&self, op: MetaOp) -> Result<(MetaVersion, Outcome), Status> {
        let result = match self.store.try_commit_in_memory(&op) {
            Some(result) => result.map_err(to_status),
            None => {
                let store = self.store.clone();
                tokio::task::spawn_blocking(move || store.commit(&op))
                    .await
                    .map_err(|_| Status::Io)?
                    .map_err(to_status)
            }
        };
        self.after_commit(result).await
    }

    /// Commits changes one after another on one blocking thread, each as [`Meta::commit`]
    /// would: for background work whose small commits would otherwise each cost a hand-off to
    /// the blocking pool and back.
    pub async fn commit_all(
        &self,
        ops: Vec<MetaOp>,
    ) -> Vec<Result<(MetaVersion, Outcome), Status>> {
        let count = ops.len();
        // Callers often have nothing to commit (a close that purges nothing): no hand-off then.
        if count == 0 {
            return Vec::new();
        }
        let store = self.store.clone();
        let results = tokio::task::spawn_blocking(move || {
            ops.iter()
                .map(|op| store.commit(op).map_err(to_status))
                .collect::<Vec<_>>()
        })
        .await
        .unwrap_or_else(|_| (0..count).map(|_| Err(Status::Io)).collect());
        let mut done = Vec::with_capacity(count);
        for result in results {
            done.push(self.after_commit(result).await);
        }
        done
    }

    /// What follows every commit: trash times noted, waiters on the version woken and, with
    /// `sync_commit`, the changelog fsynced before the change counts as made.
    async fn after_commit(
        &self,
        result: Result<(MetaVersion, Outcome), Status>,
    ) -> Result<(MetaVersion, Outcome), Status> {
        if let Ok((version, outcome)) = &result {
            self.trash_due.add(&outcome.trashed);
            self.committed.send_if_modified(|v| {
                let newer = version.0 > *v;
                *v = (*v).max(version.0);
                newer
            });
            if self.sync_commit
                && let Err(e) = self.sync_through(version.0).await
            {
                // Applied and logged, but not known to be on disk: the caller must not take it
                // as durable. A retried tagged request is answered from its record.
                tracing::error!(error = %e, version = version.0, "cannot fsync the changelog");
                return Err(Status::Io);
            }
        }
        result
    }

    /// Watches the version of the last committed change (metaloggers wait on it).
    pub fn committed(&self) -> tokio::sync::watch::Receiver<u64> {
        self.committed.subscribe()
    }

    /// Runs a read against the store: right here when everything it reads is in the store's
    /// cache, else again on the blocking pool (reads change nothing, so running one twice is
    /// harmless).
    pub async fn read<T: Send + 'static>(
        &self,
        f: impl Fn(&MetaStore) -> Result<T, ExecError> + Send + 'static,
    ) -> Result<T, Status> {
        match cache_only(|| f(&self.store)) {
            Err(ExecError::Store(StoreError::NotCached)) => {}
            result => return result.map_err(to_status),
        }
        let store = self.store.clone();
        tokio::task::spawn_blocking(move || f(&store))
            .await
            .map_err(|_| Status::Io)?
            .map_err(to_status)
    }

    /// fsyncs the changelog: every change committed before the call is on disk when it returns.
    pub async fn sync(&self) -> Result<(), StoreError> {
        self.sync_through(self.store.version().0).await
    }

    /// Returns once the changelog is on disk at least up to `version`, sharing an fsync that
    /// is running or starting one that covers everything logged so far.
    async fn sync_through(&self, version: u64) -> Result<(), StoreError> {
        let durable = &self.durable;
        if *durable.synced.borrow() >= version {
            return Ok(());
        }
        let _running = durable.running.lock().await;
        if *durable.synced.borrow() >= version {
            return Ok(());
        }
        // Everything logged by now goes to disk with this fsync, not only `version`.
        let covered = self.store.version().0;
        let store = self.store.clone();
        tokio::task::spawn_blocking(move || store.sync())
            .await
            .map_err(|e| StoreError::Changelog {
                path: Default::default(),
                source: std::io::Error::other(e.to_string()),
            })??;
        durable.synced.send_if_modified(|v| {
            let newer = covered > *v;
            *v = (*v).max(covered);
            newer
        });
        Ok(())
    }

    /// Returns once the changelog is on disk up to `version`, waiting up to `patience` for
    /// an fsync that someone else runs (the periodic one every `commit_interval`, a client's
    /// fsync) before running one itself. Metaloggers take records only once they are on the
    /// master's disk; waiting lets one fsync cover every record of the interval instead of
    /// one each.
    pub async fn durable_through(
        &self,
        version: u64,
        patience: Duration,
    ) -> Result<(), StoreError> {
        let mut synced = self.durable.synced.subscribe();
        let covered = async move { synced.wait_for(|v| *v >= version).await.is_ok() };
        match tokio::time::timeout(patience, covered).await {
            Ok(true) => Ok(()),
            _ => self.sync_through(version).await,
        }
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

#[cfg(test)]
mod tests {

    use elkfs_metastore::StoreConfig;

    use super::*;

    fn open(dir: &std::path::Path, sync_commit: bool) -> Meta {
        let (store, _) = MetaStore::open(dir, &StoreConfig::default()).unwrap();
        Meta::new(store, sync_commit)
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn with_sync_commit_every_acknowledged_change_is_already_fsynced() {
        let dir = tempfile::tempdir().unwrap();
        let meta = open(dir.path(), true);
        let tasks: Vec<_> = (0..64u64)
            .map(|i| {
                let meta = meta.clone();
                tokio::spawn(async move {
                    let (version, _) = meta
                        .commit(MetaOp::ReserveChunkIds { up_to: 1000 + i })
                        .await
                        .unwrap();
                    let synced = *meta.durable.synced.borrow();
                    assert!(
                        synced >= version.0,
                        "acknowledged {version:?}, synced {synced}"
                    );
                })
            })
            .collect();
        for task in tasks {
            task.await.unwrap();
        }
    }

    #[tokio::test]
    async fn commits_made_together_are_each_answered_in_order_and_announced() {
        let dir = tempfile::tempdir().unwrap();
        let meta = open(dir.path(), true);
        let watch = meta.committed();
        let ops = vec![
            MetaOp::ReserveChunkIds { up_to: 1000 },
            MetaOp::Purge {
                inode: elkfs_proto::InodeId(999_999),
            },
            MetaOp::ReserveChunkIds { up_to: 2000 },
        ];
        let results = meta.commit_all(ops).await;
        assert_eq!(results.len(), 3);
        let first = results[0].as_ref().unwrap().0;
        assert_eq!(results[1].as_ref().err(), Some(&Status::NotFound));
        let last = results[2].as_ref().unwrap().0;
        assert_eq!(last.0, first.0 + 1, "the refused change took no version");
        assert_eq!(*watch.borrow(), last.0);
        assert!(*meta.durable.synced.borrow() >= last.0, "sync_commit held");
        assert!(meta.commit_all(Vec::new()).await.is_empty());
    }

    #[tokio::test]
    async fn without_sync_commit_an_acknowledgement_does_not_wait_for_fsync() {
        let dir = tempfile::tempdir().unwrap();
        let meta = open(dir.path(), false);
        let (version, _) = meta
            .commit(MetaOp::ReserveChunkIds { up_to: 1000 })
            .await
            .unwrap();
        assert!(*meta.durable.synced.borrow() < version.0);
        meta.sync().await.unwrap();
        assert!(*meta.durable.synced.borrow() >= version.0);
    }

    #[tokio::test(start_paused = true)]
    async fn a_wait_for_durability_takes_someone_elses_fsync_or_runs_its_own_when_out_of_patience()
    {
        let dir = tempfile::tempdir().unwrap();
        let meta = open(dir.path(), false);
        let commit = |up_to| {
            let meta = meta.clone();
            async move {
                let (version, _) = meta
                    .commit(MetaOp::ReserveChunkIds { up_to })
                    .await
                    .unwrap();
                version.0
            }
        };
        let first = commit(1000).await;
        let waiting = {
            let meta = meta.clone();
            tokio::spawn(async move {
                let start = tokio::time::Instant::now();
                meta.durable_through(first, Duration::from_secs(10))
                    .await
                    .unwrap();
                start.elapsed()
            })
        };
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert!(!waiting.is_finished(), "it ran an fsync of its own at once");
        meta.sync().await.unwrap();
        let waited = waiting.await.unwrap();
        assert!(waited < Duration::from_secs(1), "waited {waited:?}");

        // Nobody else fsyncs: it does, once its patience is out.
        let second = commit(2000).await;
        meta.durable_through(second, Duration::from_secs(1))
            .await
            .unwrap();
        assert!(*meta.durable.synced.borrow() >= second);
    }
}
