//! The sync pass: every chunk file changed since its last fsync is fsynced, so that data no
//! client fsynced still reaches the disk within a bounded time (SPEC.md, "Durability"). The
//! chunkserver runs a pass every `sync_interval_secs`. Before the fsyncs of many changed files in
//! one data directory (a burst of small files), its whole file system is synced with one
//! `syncfs`: each fsync then finds its file on disk and its journal committed, where it would
//! otherwise commit the journal once per file. The fsyncs still follow, because only they tell
//! which file could not be written.

use std::fs;
use std::io;
use std::os::fd::AsRawFd;
use std::path::Path;
use std::sync::atomic::Ordering;

use elkfs_proto::ChunkId;

use crate::error::ChunkError;
use crate::store::ChunkStore;

/// Changed chunks in one data directory above which a pass syncs its whole file system first.
const WHOLE_FILE_SYSTEM_ABOVE: usize = 32;

/// What one sync pass did.
#[derive(Debug, Default)]
pub struct SyncPass {
    /// Chunk files made durable.
    pub synced: usize,
    /// Data directories whose whole file system was synced first.
    pub whole_file_systems: usize,
    /// Chunks whose sync failed, with why (they stay marked for the next pass).
    pub failed: Vec<(ChunkId, ChunkError)>,
}

impl ChunkStore {
    /// Makes every change made to the store's chunk files before the call durable: each chunk
    /// changed since its last sync is fsynced (with its directory when it got a new name), and
    /// marked again by any change that follows. A chunk deleted meanwhile is skipped.
    pub fn sync_changed(&self) -> SyncPass {
        let mut by_dir: Vec<Vec<ChunkId>> = self.dirs.iter().map(|_| Vec::new()).collect();
        // Files with something to write, by directory: copies that lost writes stay marked, to
        // be reported at every pass, with nothing to write.
        let mut to_write = vec![0usize; self.dirs.len()];
        for (id, slot) in self.index.snapshot() {
            if !slot.changed.load(Ordering::Acquire) {
                continue;
            }
            let state = slot.shared();
            if !state.removed {
                by_dir[state.dir].push(id);
                if !slot.write_lost.load(Ordering::Acquire) {
                    to_write[state.dir] += 1;
                }
            }
        }
        let mut pass = SyncPass::default();
        for ((dir, changed), to_write) in self.dirs.iter().zip(by_dir).zip(to_write) {
            if to_write > WHOLE_FILE_SYSTEM_ABOVE {
                match syncfs(&dir.path) {
                    Ok(()) => pass.whole_file_systems += 1,
                    Err(e) => {
                        tracing::warn!(dir = %dir.path.display(), error = %e, "cannot sync the file system of a data directory; its changed chunks are synced one by one")
                    }
                }
            }
            for id in changed {
                match self.sync(id) {
                    Ok(()) => pass.synced += 1,
                    Err(ChunkError::NotFound { .. }) => {}
                    Err(e) => pass.failed.push((id, e)),
                }
            }
        }
        pass
    }

    /// Writes everything changed on the file systems of the data directories to their disks,
    /// whoever changed it: at the start of a chunkserver, what an earlier run of it left in the
    /// page cache, which no chunk is marked for. Returns the directories that could not be synced.
    pub fn sync_file_systems(&self) -> Vec<(std::path::PathBuf, io::Error)> {
        self.dirs
            .iter()
            .filter_map(|dir| syncfs(&dir.path).err().map(|e| (dir.path.clone(), e)))
            .collect()
    }
}

/// Writes every change to the file system holding `path` to its disk and waits for it.
fn syncfs(path: &Path) -> io::Result<()> {
    let dir = fs::File::open(path)?;
    // SAFETY: syncfs only reads the descriptor, which `dir` keeps open for the call.
    if unsafe { libc::syncfs(dir.as_raw_fd()) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}
