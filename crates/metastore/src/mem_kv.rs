//! An in-memory [`KvStore`] for unit tests of what runs on top of a store (caches, overlays,
//! request records), so those tests need no sled directory.

use std::collections::BTreeMap;
use std::ops::Bound;
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};

use crate::error::StoreError;
use crate::kv::{KvStore, Rows, Write};

/// Keys and values in a sorted map, with a count of the single-key reads that reached it.
#[derive(Default)]
pub struct MemKv {
    map: Mutex<BTreeMap<Vec<u8>, Vec<u8>>>,
    gets: AtomicUsize,
}

impl MemKv {
    /// How many `get` calls reached this store.
    pub fn gets(&self) -> usize {
        self.gets.load(Ordering::SeqCst)
    }
}

impl KvStore for MemKv {
    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        self.gets.fetch_add(1, Ordering::SeqCst);
        Ok(self.map.lock().unwrap().get(key).cloned())
    }

    fn scan(&self, prefix: &[u8], after: Option<&[u8]>, limit: usize) -> Result<Rows, StoreError> {
        let map = self.map.lock().unwrap();
        let lower = match after {
            Some(a) => Bound::Excluded(a.to_vec()),
            None => Bound::Included(prefix.to_vec()),
        };
        Ok(map
            .range((lower, Bound::Unbounded))
            .take_while(|(k, _)| k.starts_with(prefix))
            .take(limit)
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect())
    }

    fn apply(&self, writes: Vec<Write>) -> Result<(), StoreError> {
        let mut map = self.map.lock().unwrap();
        for (k, v) in writes {
            match v {
                Some(v) => map.insert(k, v),
                None => map.remove(&k),
            };
        }
        Ok(())
    }

    fn flush(&self) -> Result<(), StoreError> {
        Ok(())
    }
}

/// A shared store works wherever a store does (a test keeps a handle on what it hands over).
impl KvStore for std::sync::Arc<MemKv> {
    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        self.as_ref().get(key)
    }

    fn scan(&self, prefix: &[u8], after: Option<&[u8]>, limit: usize) -> Result<Rows, StoreError> {
        self.as_ref().scan(prefix, after, limit)
    }

    fn apply(&self, writes: Vec<Write>) -> Result<(), StoreError> {
        self.as_ref().apply(writes)
    }

    fn flush(&self) -> Result<(), StoreError> {
        self.as_ref().flush()
    }
}
