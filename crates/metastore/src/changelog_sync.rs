//! fsyncs of the changelog's current file, from any thread, that never report success after
//! one failed. Linux reports a failed writeback to one fsync only and marks the pages clean: an
//! fsync after it succeeds, although the records it failed to write may never reach the disk.
//! Saying "on disk" then would break the durability contract, so once an fsync failed every
//! later one fails too. A restart does not make the file trustworthy again (the page cache may
//! still show records the disk lacks): docs/OPERATIONS.md says what to do instead.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, OnceLock};

use crate::error::StoreError;

/// The changelog's current file, for fsyncs.
pub struct ChangelogSync {
    state: Mutex<SyncState>,
    /// What the first failed fsync said; read without waiting for an fsync that holds the
    /// state (every commit looks).
    failure: OnceLock<String>,
}

struct SyncState {
    file: File,
    path: PathBuf,
}

impl ChangelogSync {
    /// fsyncs of `file`, the changelog file at `path`.
    pub fn new(file: File, path: &Path) -> ChangelogSync {
        ChangelogSync {
            state: Mutex::new(SyncState {
                file,
                path: path.to_path_buf(),
            }),
            failure: OnceLock::new(),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, SyncState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// fsyncs the current file: every record appended to the changelog before the call is on
    /// disk when it succeeds (earlier files were fsynced when the next one started).
    pub fn sync(&self) -> Result<(), StoreError> {
        let state = self.lock();
        if let Some(first) = self.failure.get() {
            return Err(StoreError::Changelog {
                path: state.path.clone(),
                source: std::io::Error::other(format!(
                    "an earlier fsync failed ({first}): records written before it may be \
                     missing on disk, whatever the page cache shows"
                )),
            });
        }
        state.file.sync_data().map_err(|source| {
            let _ = self.failure.set(source.to_string());
            StoreError::Changelog {
                path: state.path.clone(),
                source,
            }
        })
    }

    /// Whether an fsync failed (without waiting for one running).
    pub fn failed(&self) -> bool {
        self.failure.get().is_some()
    }

    /// Moves on to the file a rotation started (the previous one was fsynced through
    /// [`ChangelogSync::sync`] first).
    pub(crate) fn replace(&self, file: File, path: &Path) {
        let mut state = self.lock();
        state.file = file;
        state.path = path.to_path_buf();
    }

    /// The inode of the file fsynced now (for tests of rotation).
    #[cfg(test)]
    pub(crate) fn inode(&self) -> u64 {
        use std::os::unix::fs::MetadataExt;
        self.lock().file.metadata().expect("metadata").ino()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn after_a_failed_fsync_none_succeeds() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("log");
        std::fs::write(&path, b"records").unwrap();
        let sync = ChangelogSync::new(File::open(&path).unwrap(), &path);
        sync.sync()
            .expect("a file opened for reading can be fsynced on Linux");
        assert!(!sync.failed());
        // An fsync that fails as a failed writeback would.
        sync.failure
            .set("Input/output error (os error 5)".into())
            .expect("not failed yet");
        assert!(sync.failed());
        let error = sync.sync().expect_err("sticky");
        assert!(
            error.to_string().contains("an earlier fsync failed"),
            "{error}"
        );
        // Not even a new file makes it succeed again: the records lost were in the old one.
        sync.replace(File::open(&path).unwrap(), &path);
        assert!(sync.sync().is_err());
    }
}
