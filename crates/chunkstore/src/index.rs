//! The in-memory chunk index: chunk id -> [`Slot`] (directory, version, cached length), with one
//! read-write lock per chunk so different chunks proceed in parallel.
//!
//! Lock order: a chunk's lock may be held while taking the index lock (to insert or remove that
//! chunk), never the other way round: the index lock is released before any chunk lock is awaited.

use std::collections::HashMap;
use std::collections::hash_map::Entry;
use std::sync::atomic::{AtomicBool, AtomicU32};
use std::sync::{Arc, PoisonError, RwLock, RwLockReadGuard, RwLockWriteGuard, TryLockError};

use elkfs_proto::{ChunkId, ChunkVersion};

use crate::error::ChunkError;

/// One chunk's entry.
pub(crate) struct Slot {
    state: RwLock<SlotState>,
    /// Data length for `list`/`info`/`space`: from the file size at start, then from the header
    /// whenever an operation opens the file.
    pub length: AtomicU32,
    /// The file was created or renamed since the last `sync`: `sync` must fsync its directory too.
    pub name_unsynced: AtomicBool,
    /// The file was created or changed since the last `sync`: the background sync pass
    /// (`sync_pass.rs`) fsyncs it.
    pub changed: AtomicBool,
    /// An fsync of the file failed with an I/O error: Linux reports that once and drops the
    /// pages it could not write, so every later `sync` of this copy fails too.
    pub write_lost: AtomicBool,
}

/// What a chunk's lock protects: where its file is.
pub(crate) struct SlotState {
    /// Index of its data directory.
    pub dir: usize,
    /// Its version (part of the file name).
    pub version: ChunkVersion,
    /// Deleted (or found gone) while another thread was waiting for the lock.
    pub removed: bool,
}

impl Slot {
    pub fn new(dir: usize, version: ChunkVersion, length: u32) -> Slot {
        Slot {
            state: RwLock::new(SlotState {
                dir,
                version,
                removed: false,
            }),
            length: AtomicU32::new(length),
            name_unsynced: AtomicBool::new(false),
            changed: AtomicBool::new(false),
            write_lost: AtomicBool::new(false),
        }
    }

    /// Takes the chunk's lock shared (reads, verifies, syncs).
    pub fn shared(&self) -> RwLockReadGuard<'_, SlotState> {
        self.state.read().unwrap_or_else(PoisonError::into_inner)
    }

    /// Takes the chunk's lock shared if nobody holds it exclusively; `None` rather than wait.
    pub fn try_shared(&self) -> Option<RwLockReadGuard<'_, SlotState>> {
        try_read(&self.state)
    }

    /// Takes the chunk's lock exclusively (writes, truncates, version changes, deletes).
    pub fn exclusive(&self) -> RwLockWriteGuard<'_, SlotState> {
        self.state.write().unwrap_or_else(PoisonError::into_inner)
    }
}

impl SlotState {
    /// `NotFound` if the chunk is gone, `WrongVersion` if `want` is given and differs.
    pub fn check(&self, id: ChunkId, want: Option<ChunkVersion>) -> Result<(), ChunkError> {
        if self.removed {
            return Err(ChunkError::NotFound { chunk: id });
        }
        match want {
            Some(want) if want != self.version => Err(ChunkError::WrongVersion {
                chunk: id,
                have: self.version,
                want,
            }),
            _ => Ok(()),
        }
    }
}

/// The map from chunk id to slot.
pub(crate) struct Index {
    map: RwLock<HashMap<ChunkId, Arc<Slot>>>,
}

impl Index {
    pub fn new(slots: impl IntoIterator<Item = (ChunkId, Slot)>) -> Index {
        let map = slots
            .into_iter()
            .map(|(id, slot)| (id, Arc::new(slot)))
            .collect();
        Index {
            map: RwLock::new(map),
        }
    }

    pub fn get(&self, id: ChunkId) -> Result<Arc<Slot>, ChunkError> {
        self.map
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .get(&id)
            .cloned()
            .ok_or(ChunkError::NotFound { chunk: id })
    }

    /// Like `get`, but `None` rather than wait while the map is being changed.
    pub fn try_get(&self, id: ChunkId) -> Option<Arc<Slot>> {
        try_read(&self.map)?.get(&id).cloned()
    }

    pub fn contains(&self, id: ChunkId) -> bool {
        self.get(id).is_ok()
    }

    /// Every entry at this moment, so callers can lock chunks without holding the index lock.
    pub fn snapshot(&self) -> Vec<(ChunkId, Arc<Slot>)> {
        self.map
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .iter()
            .map(|(id, slot)| (*id, Arc::clone(slot)))
            .collect()
    }

    /// Adds a chunk; `AlreadyExists` if the id is present.
    pub fn insert(&self, id: ChunkId, slot: &Arc<Slot>) -> Result<(), ChunkError> {
        match self.write().entry(id) {
            Entry::Occupied(_) => Err(ChunkError::AlreadyExists { chunk: id }),
            Entry::Vacant(entry) => {
                entry.insert(Arc::clone(slot));
                Ok(())
            }
        }
    }

    /// Removes `slot` if it is still the entry for `id` (a newer chunk may have taken the id).
    pub fn remove(&self, id: ChunkId, slot: &Slot) {
        let mut map = self.write();
        if map
            .get(&id)
            .is_some_and(|current| std::ptr::eq(Arc::as_ptr(current), slot))
        {
            map.remove(&id);
        }
    }

    fn write(&self) -> RwLockWriteGuard<'_, HashMap<ChunkId, Arc<Slot>>> {
        self.map.write().unwrap_or_else(PoisonError::into_inner)
    }
}

/// `lock` read-locked if no writer holds it, `None` rather than wait (a poisoned lock is used
/// as is, like everywhere in the store).
fn try_read<T>(lock: &RwLock<T>) -> Option<RwLockReadGuard<'_, T>> {
    match lock.try_read() {
        Ok(guard) => Some(guard),
        Err(TryLockError::Poisoned(poisoned)) => Some(poisoned.into_inner()),
        Err(TryLockError::WouldBlock) => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn removing_a_replaced_slot_keeps_the_new_one() {
        let index = Index::new([(ChunkId(1), Slot::new(0, ChunkVersion(1), 0))]);
        let old = index.get(ChunkId(1)).unwrap();
        index.remove(ChunkId(1), &old);
        let new = Arc::new(Slot::new(0, ChunkVersion(2), 0));
        index.insert(ChunkId(1), &new).unwrap();
        index.remove(ChunkId(1), &old);
        assert!(index.contains(ChunkId(1)));
        assert!(matches!(
            index.insert(ChunkId(1), &old),
            Err(ChunkError::AlreadyExists { .. })
        ));
    }

    #[test]
    fn check_reports_removed_and_stale_versions() {
        let slot = Slot::new(0, ChunkVersion(3), 0);
        let id = ChunkId(9);
        assert!(slot.shared().check(id, None).is_ok());
        assert!(slot.shared().check(id, Some(ChunkVersion(3))).is_ok());
        assert!(matches!(
            slot.shared().check(id, Some(ChunkVersion(2))),
            Err(ChunkError::WrongVersion { .. })
        ));
        slot.exclusive().removed = true;
        assert!(matches!(
            slot.shared().check(id, None),
            Err(ChunkError::NotFound { .. })
        ));
    }
}
