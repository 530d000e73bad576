//! Open file handles: what the kernel's file handle numbers stand for.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use elkfs_client::writer::FileWriter;
use elkfs_proto::InodeId;

/// One open file.
pub struct OpenFile {
    /// The file.
    pub inode: InodeId,
    /// Its write-behind buffer, for handles opened for writing.
    pub writer: Option<Arc<FileWriter>>,
    /// Opened with `O_APPEND`: every write goes to the end as the master knows it.
    pub append: bool,
    /// The first read through this handle has been reported (for access times).
    pub accessed: std::sync::atomic::AtomicBool,
    /// For a handle that does not write, opened while nothing else on the mount touched the
    /// file: the file's change count in the `StoreGate` after the open (see
    /// `Ops::unchanged_since_open`).
    pub changes_at_open: Option<u64>,
    /// With `changes_at_open`: what the open told about the file, so that reads the master
    /// would not let move the access time (`relatime`) are not reported.
    pub atime_at_open: Option<AtimeAtOpen>,
    /// Setuid/setgid bits have been dropped for a write by an unprivileged process.
    pub privileges_dropped: std::sync::atomic::AtomicBool,
    /// The file's read started at its open, until the first read through this handle takes it.
    pub early_read: std::sync::Mutex<Option<crate::early_read::EarlyRead>>,
}

/// The file's attributes as the master sent them with the open of a handle that does not
/// write, with the mount's count of changes to attributes and names (`Ops::changes_here`)
/// they hold for.
pub struct AtimeAtOpen {
    /// The attributes.
    pub attr: elkfs_proto::types::Attr,
    /// `Ops::changes_here` before the open.
    pub changes_here: u64,
}

/// Every open handle of the mount.
#[derive(Default)]
pub struct Handles {
    next: AtomicU64,
    open: Mutex<HashMap<u64, Arc<OpenFile>>>,
}

impl Handles {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<u64, Arc<OpenFile>>> {
        self.open.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Registers an open file and returns its handle number.
    pub fn insert(&self, file: OpenFile) -> u64 {
        let fh = self.next.fetch_add(1, Ordering::Relaxed) + 1;
        self.lock().insert(fh, Arc::new(file));
        fh
    }

    /// The open file behind a handle.
    pub fn get(&self, fh: u64) -> Option<Arc<OpenFile>> {
        self.lock().get(&fh).cloned()
    }

    /// Forgets a handle (at release).
    pub fn remove(&self, fh: u64) -> Option<Arc<OpenFile>> {
        self.lock().remove(&fh)
    }

    /// Every writer still open (to flush before unmounting).
    pub fn writers(&self) -> Vec<Arc<FileWriter>> {
        self.lock()
            .values()
            .filter_map(|f| f.writer.clone())
            .collect()
    }
}
