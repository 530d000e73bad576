//! A short-lived cache of where chunks can be read, so streaming a file does not ask the master
//! before every read. Entries expire with the attribute cache and are dropped on any doubt.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use elkfs_proto::InodeId;
use elkfs_proto::master::ReadLocation;

/// Cached read locations by file and chunk index.
pub struct LocationCache {
    entries: Mutex<HashMap<(InodeId, u32), (ReadLocation, Instant)>>,
    ttl: Duration,
}

impl LocationCache {
    /// An empty cache whose entries live `ttl`.
    pub fn new(ttl: Duration) -> LocationCache {
        LocationCache {
            entries: Mutex::new(HashMap::new()),
            ttl,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<(InodeId, u32), (ReadLocation, Instant)>> {
        self.entries.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The cached location, if still fresh.
    pub fn get(&self, inode: InodeId, index: u32) -> Option<ReadLocation> {
        let entries = self.lock();
        let (loc, at) = entries.get(&(inode, index))?;
        (at.elapsed() < self.ttl).then(|| loc.clone())
    }

    /// Remembers a location just fetched.
    pub fn put(&self, inode: InodeId, index: u32, location: ReadLocation) {
        let mut entries = self.lock();
        if entries.len() > 65_536 {
            let ttl = self.ttl;
            entries.retain(|_, (_, at)| at.elapsed() < ttl);
        }
        entries.insert((inode, index), (location, Instant::now()));
    }

    /// Forgets one chunk's location (after an error or a version change).
    pub fn forget(&self, inode: InodeId, index: u32) {
        self.lock().remove(&(inode, index));
    }

    /// Forgets every location of a file (it was written, truncated or reopened).
    pub fn forget_file(&self, inode: InodeId) {
        self.lock().retain(|(i, _), _| *i != inode);
    }
}
