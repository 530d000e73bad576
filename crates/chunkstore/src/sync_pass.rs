//! The sync pass: every chunk file changed since its last fsync is fsynced, so that data no
//! client fsynced still reaches the disk within a bounded time (SPEC.md, "Durability"). The
//! chunkserver runs a pass every `sync_interval_secs`. Many changed files in one data directory
//! (a burst of small files) are made durable with one `syncfs` of its file system instead: an
//! fsync each would commit the file system's journal once per file.

use std::fs;
use std::io;
use std::os::fd::AsRawFd;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use elkfs_proto::ChunkId;

use crate::error::ChunkError;
use crate::index::Slot;
use crate::store::{ChunkStore, DataDir};

/// Changed chunks in one data directory above which a pass syncs its whole file system.
const WHOLE_FILE_SYSTEM_ABOVE: usize = 32;

/// What one sync pass did.
#[derive(Debug, Default)]
pub struct SyncPass {
    /// Chunk files made durable.
    pub synced: usize,
    /// Data directories whose whole file system was synced (each counted in `synced` by its
    /// changed chunks).
    pub whole_file_systems: usize,
    /// Chunks whose fsync failed: their data may be lost, so the copy cannot be trusted.
    pub failed: Vec<(ChunkId, ChunkError)>,
}

impl ChunkStore {
    /// Makes every change made to the store's chunk files before the call durable: each chunk
    /// changed since its last sync is fsynced (with its directory when it got a new name), and
    /// marked again by any change that follows. A chunk deleted meanwhile is skipped.
    pub fn sync_changed(&self) -> SyncPass {
        let mut by_dir: Vec<Vec<(ChunkId, Arc<Slot>)>> =
            self.dirs.iter().map(|_| Vec::new()).collect();
        for (id, slot) in self.index.snapshot() {
            if !slot.changed.load(Ordering::Acquire) {
                continue;
            }
            let dir = {
                let state = slot.shared();
                if state.removed {
                    continue;
                }
                state.dir
            };
            by_dir[dir].push((id, slot));
        }
        let mut pass = SyncPass::default();
        for (dir, changed) in self.dirs.iter().zip(by_dir) {
            if changed.len() > WHOLE_FILE_SYSTEM_ABOVE && sync_whole(dir, &changed) {
                pass.synced += changed.len();
                pass.whole_file_systems += 1;
                continue;
            }
            for (id, _) in changed {
                match self.sync(id) {
                    Ok(()) => pass.synced += 1,
                    Err(ChunkError::NotFound { .. }) => {}
                    Err(e) => pass.failed.push((id, e)),
                }
            }
        }
        pass
    }
}

/// Syncs the file system of `dir`, which holds every chunk of `changed`, after taking their
/// marks off (a change after that marks its chunk again). On failure the marks are put back and
/// false returned: the chunks are then fsynced one by one, which tells which of them failed.
fn sync_whole(dir: &DataDir, changed: &[(ChunkId, Arc<Slot>)]) -> bool {
    let renamed: Vec<bool> = changed
        .iter()
        .map(|(_, slot)| {
            slot.changed.store(false, Ordering::Release);
            slot.name_unsynced.swap(false, Ordering::AcqRel)
        })
        .collect();
    match syncfs(&dir.path) {
        Ok(()) => true,
        Err(e) => {
            tracing::warn!(dir = %dir.path.display(), error = %e, "cannot sync the file system of a data directory; syncing its changed chunks one by one");
            for ((_, slot), renamed) in changed.iter().zip(renamed) {
                slot.changed.store(true, Ordering::Release);
                if renamed {
                    slot.name_unsynced.store(true, Ordering::Release);
                }
            }
            false
        }
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
