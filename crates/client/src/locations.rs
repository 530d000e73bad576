//! A short-lived cache of where chunks can be read, so streaming a file does not ask the master
//! before every read. Entries expire with the attribute cache and are dropped on any doubt.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use elkfs_proto::InodeId;
use elkfs_proto::master::ReadLocation;

/// Files with cached locations above which expired ones are dropped. Every file opened puts one,
/// so the cache is pruned, and pruned only, when it grows past this (never once per insert).
const MAX_FILES: usize = 16_384;

/// Chunks of one file with cached locations above which its expired ones are dropped.
const MAX_CHUNKS_PER_FILE: usize = 1024;

type FileLocations = HashMap<u32, (ReadLocation, Instant)>;

/// Cached read locations by file, then chunk index: forgetting a file is one removal, however
/// many other files the cache holds.
pub struct LocationCache {
    files: Mutex<HashMap<InodeId, FileLocations>>,
    ttl: Duration,
}

impl LocationCache {
    /// An empty cache whose entries live `ttl`.
    pub fn new(ttl: Duration) -> LocationCache {
        LocationCache {
            files: Mutex::new(HashMap::new()),
            ttl,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<InodeId, FileLocations>> {
        self.files.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The cached location, if still fresh.
    pub fn get(&self, inode: InodeId, index: u32) -> Option<ReadLocation> {
        let files = self.lock();
        let (loc, at) = files.get(&inode)?.get(&index)?;
        (at.elapsed() < self.ttl).then(|| loc.clone())
    }

    /// Remembers a location just fetched.
    pub fn put(&self, inode: InodeId, index: u32, location: ReadLocation) {
        let mut files = self.lock();
        if files.len() >= MAX_FILES && !files.contains_key(&inode) {
            prune(&mut files, self.ttl);
        }
        let chunks = files.entry(inode).or_default();
        if chunks.len() >= MAX_CHUNKS_PER_FILE && !chunks.contains_key(&index) {
            // A file streamed end to end, kept open: the same rule within it.
            let ttl = self.ttl;
            chunks.retain(|_, (_, at)| at.elapsed() < ttl);
            if chunks.len() >= MAX_CHUNKS_PER_FILE / 2 {
                chunks.clear();
            }
        }
        chunks.insert(index, (location, Instant::now()));
    }

    /// Forgets one chunk's location (after an error or a version change).
    pub fn forget(&self, inode: InodeId, index: u32) {
        let mut files = self.lock();
        if let Some(chunks) = files.get_mut(&inode) {
            chunks.remove(&index);
            if chunks.is_empty() {
                files.remove(&inode);
            }
        }
    }

    /// Forgets every location of a file (it was written, truncated or reopened).
    pub fn forget_file(&self, inode: InodeId) {
        self.lock().remove(&inode);
    }

    /// How many files have locations cached (for tests).
    #[cfg(test)]
    fn files(&self) -> usize {
        self.lock().len()
    }
}

/// Drops expired locations; if most files are still fresh, drops them all, so the next prune is
/// at least `MAX_FILES / 2` new files away.
fn prune(files: &mut HashMap<InodeId, FileLocations>, ttl: Duration) {
    files.retain(|_, chunks| {
        chunks.retain(|_, (_, at)| at.elapsed() < ttl);
        !chunks.is_empty()
    });
    if files.len() >= MAX_FILES / 2 {
        files.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn location(length: u64) -> ReadLocation {
        ReadLocation {
            file_length: length,
            chunk: None,
            servers: Vec::new(),
            capability: None,
        }
    }

    #[test]
    fn a_file_forgotten_loses_all_its_chunks_and_only_those() {
        let cache = LocationCache::new(Duration::from_secs(60));
        cache.put(InodeId(5), 0, location(1));
        cache.put(InodeId(5), 3, location(2));
        cache.put(InodeId(6), 0, location(3));
        cache.forget_file(InodeId(5));
        assert!(cache.get(InodeId(5), 0).is_none());
        assert!(cache.get(InodeId(5), 3).is_none());
        assert_eq!(cache.get(InodeId(6), 0).map(|l| l.file_length), Some(3));
        cache.forget(InodeId(6), 0);
        assert_eq!(cache.files(), 0);
    }

    #[test]
    fn expired_locations_are_not_given_out() {
        let cache = LocationCache::new(Duration::ZERO);
        cache.put(InodeId(5), 0, location(1));
        assert!(cache.get(InodeId(5), 0).is_none());
    }

    #[test]
    fn a_full_cache_of_fresh_files_is_emptied_instead_of_scanned_at_every_insert() {
        let cache = LocationCache::new(Duration::from_secs(60));
        for i in 0..MAX_FILES as u64 {
            cache.put(InodeId(i), 0, location(i));
        }
        assert_eq!(cache.files(), MAX_FILES);
        cache.put(InodeId(u64::MAX), 0, location(7));
        assert_eq!(cache.files(), 1);
        assert!(cache.get(InodeId(u64::MAX), 0).is_some());
    }

    #[test]
    fn a_long_file_keeps_a_bounded_number_of_locations() {
        let cache = LocationCache::new(Duration::from_secs(60));
        for index in 0..3 * MAX_CHUNKS_PER_FILE as u32 {
            cache.put(InodeId(9), index, location(u64::from(index)));
        }
        let kept = cache.lock().get(&InodeId(9)).map_or(0, |c| c.len());
        assert!(kept <= MAX_CHUNKS_PER_FILE, "{kept} locations kept");
        let last = 3 * MAX_CHUNKS_PER_FILE as u32 - 1;
        assert!(cache.get(InodeId(9), last).is_some());
    }

    #[test]
    fn a_full_cache_drops_expired_files_first() {
        let cache = LocationCache::new(Duration::from_millis(50));
        for i in 0..MAX_FILES as u64 {
            cache.put(InodeId(i), 0, location(i));
        }
        std::thread::sleep(Duration::from_millis(60));
        cache.put(InodeId(u64::MAX), 0, location(7));
        assert_eq!(cache.files(), 1);
    }
}
