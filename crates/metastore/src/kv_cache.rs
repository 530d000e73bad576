//! A read cache in front of the key-value store, so that the hot part of the namespace
//! (inodes and directory entries just used, names just looked up and not found) is answered
//! from memory. Async callers run reads in cache-only mode first: those never touch the disk
//! and so may run on the async threads; a read that needs the disk says so
//! ([`StoreError::NotCached`]) and is run again on a blocking thread.

use std::cell::Cell;
use std::sync::Mutex;

use lru::LruCache;

use crate::error::StoreError;
use crate::kv::{KvStore, Rows, Write};

thread_local! {
    /// Set while a read runs in cache-only mode on this thread.
    static CACHE_ONLY: Cell<bool> = const { Cell::new(false) };
}

/// Runs `f` with every store read on this thread limited to the cache: a read that would go to
/// the disk fails with [`StoreError::NotCached`] instead.
pub fn cache_only<T>(f: impl FnOnce() -> T) -> T {
    struct Reset(bool);
    impl Drop for Reset {
        fn drop(&mut self) {
            CACHE_ONLY.with(|c| c.set(self.0));
        }
    }
    let _reset = Reset(CACHE_ONLY.with(|c| c.replace(true)));
    f()
}

/// Whether this thread runs a read in cache-only mode (see [`cache_only`]).
pub(crate) fn in_cache_only_mode() -> bool {
    CACHE_ONLY.with(Cell::get)
}

/// Bytes an entry costs beyond its key and value: the list node, the hash slot and the
/// allocator's rounding of the two buffers (measured with heaptrack on the master).
const ENTRY_OVERHEAD: usize = 128;

/// What one cached entry costs in memory, about.
fn entry_bytes(key: &[u8], value: &Option<Vec<u8>>) -> usize {
    key.len() + value.as_ref().map_or(0, Vec::len) + ENTRY_OVERHEAD
}

/// What the cache holds: values (or their absence) by key, least recently used first out, what
/// they cost, and the number of batches applied, so a value read from the store while a batch
/// was being applied is not cached (it may be the old one).
struct Cached {
    values: LruCache<Vec<u8>, Option<Vec<u8>>>,
    bytes: usize,
    batches: u64,
}

impl Cached {
    /// Caches `value` at `key`, then drops the least recently used entries beyond the bounds.
    fn put(&mut self, key: Vec<u8>, value: Option<Vec<u8>>, limits: Limits) {
        self.bytes += entry_bytes(&key, &value);
        if let Some((old_key, old_value)) = self.values.push(key, value) {
            self.bytes -= entry_bytes(&old_key, &old_value);
        }
        while self.values.len() > limits.entries || self.bytes > limits.bytes {
            match self.values.pop_lru() {
                Some((k, v)) => self.bytes -= entry_bytes(&k, &v),
                None => break,
            }
        }
    }

    /// Forgets `key`.
    fn remove(&mut self, key: &[u8]) {
        if let Some(value) = self.values.pop(key) {
            self.bytes -= entry_bytes(key, &value);
        }
    }

    fn clear(&mut self) {
        self.values.clear();
        self.bytes = 0;
    }
}

/// How much the cache may hold.
#[derive(Clone, Copy, Debug)]
struct Limits {
    entries: usize,
    bytes: usize,
}

/// A [`KvStore`] with a bounded cache of single-key reads in front of another.
pub struct CachedKv {
    inner: Box<dyn KvStore>,
    limits: Limits,
    cached: Mutex<Cached>,
}

impl CachedKv {
    /// Caches up to `entries` keys read from or written to `inner`, costing together at most
    /// about `bytes` of memory.
    pub fn new(inner: Box<dyn KvStore>, entries: usize, bytes: usize) -> CachedKv {
        CachedKv {
            inner,
            limits: Limits {
                entries: entries.max(1),
                bytes,
            },
            cached: Mutex::new(Cached {
                values: LruCache::unbounded(),
                bytes: 0,
                batches: 0,
            }),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Cached> {
        self.cached.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl KvStore for CachedKv {
    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        let batches = {
            let mut cached = self.lock();
            if let Some(value) = cached.values.get(key) {
                return Ok(value.clone());
            }
            cached.batches
        };
        // Cache-only reads may still find the value in memory below (the write-behind layer,
        // sled's own page cache); only one that would wait is sent to a blocking thread.
        let value = if in_cache_only_mode() {
            self.inner.get_in_memory(key)?
        } else {
            self.inner.get(key)?
        };
        let mut cached = self.lock();
        if cached.batches == batches {
            cached.put(key.to_vec(), value.clone(), self.limits);
        }
        Ok(value)
    }

    fn scan(&self, prefix: &[u8], after: Option<&[u8]>, limit: usize) -> Result<Rows, StoreError> {
        if in_cache_only_mode() {
            return Err(StoreError::NotCached);
        }
        self.inner.scan(prefix, after, limit)
    }

    fn apply(&self, writes: Vec<Write>) -> Result<(), StoreError> {
        // Values written are kept (they are often read again at once); removed keys are only
        // dropped from the cache, so a batch of removals does not push out what is in use.
        let kept = writes.clone();
        let result = self.inner.apply(writes);
        let mut cached = self.lock();
        cached.batches += 1;
        match result {
            Ok(()) => {
                for (key, value) in kept {
                    match value {
                        Some(value) => cached.put(key, Some(value), self.limits),
                        None => cached.remove(&key),
                    }
                }
            }
            // What the store holds now is not known: forget everything.
            Err(_) => cached.clear(),
        }
        result
    }

    fn flush(&self) -> Result<(), StoreError> {
        self.inner.flush()
    }

    fn settle(&self) -> Result<(), StoreError> {
        self.inner.settle()
    }

    fn applies_in_memory(&self) -> bool {
        self.inner.applies_in_memory()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mem_kv::MemKv;

    fn store(entries: usize) -> (std::sync::Arc<MemKv>, CachedKv) {
        let inner = std::sync::Arc::new(MemKv::default());
        let kv = CachedKv::new(Box::new(inner.clone()), entries, usize::MAX);
        (inner, kv)
    }

    #[test]
    fn reads_after_the_first_and_absent_keys_come_from_the_cache() {
        let (inner, kv) = store(16);
        kv.apply(vec![(b"a".to_vec(), Some(b"1".to_vec()))])
            .unwrap();
        assert_eq!(kv.get(b"a").unwrap(), Some(b"1".to_vec()));
        assert_eq!(kv.get(b"x").unwrap(), None);
        assert_eq!(kv.get(b"x").unwrap(), None);
        assert_eq!(inner.gets(), 1, "only the first miss of x");
        let cached = cache_only(|| (kv.get(b"a"), kv.get(b"x")));
        assert_eq!(cached.0.unwrap(), Some(b"1".to_vec()));
        assert_eq!(cached.1.unwrap(), None);
    }

    #[test]
    fn writes_replace_what_is_cached_including_removals() {
        let (_, kv) = store(16);
        kv.apply(vec![(b"a".to_vec(), Some(b"1".to_vec()))])
            .unwrap();
        assert_eq!(kv.get(b"a").unwrap(), Some(b"1".to_vec()));
        kv.apply(vec![(b"a".to_vec(), Some(b"2".to_vec()))])
            .unwrap();
        assert_eq!(kv.get(b"a").unwrap(), Some(b"2".to_vec()));
        kv.apply(vec![(b"a".to_vec(), None)]).unwrap();
        assert_eq!(kv.get(b"a").unwrap(), None);
    }

    #[test]
    fn in_cache_only_mode_a_miss_or_a_scan_says_it_needs_the_disk() {
        let (inner, kv) = store(1);
        inner
            .apply(vec![
                (b"a".to_vec(), Some(b"1".to_vec())),
                (b"b".to_vec(), Some(b"2".to_vec())),
            ])
            .unwrap();
        assert!(matches!(
            cache_only(|| kv.get(b"a")),
            Err(StoreError::NotCached)
        ));
        assert!(matches!(
            cache_only(|| kv.scan(b"", None, 10)),
            Err(StoreError::NotCached)
        ));
        assert_eq!(kv.get(b"a").unwrap(), Some(b"1".to_vec()));
        assert_eq!(kv.get(b"b").unwrap(), Some(b"2".to_vec()));
        // One entry: b pushed a out.
        assert!(matches!(
            cache_only(|| kv.get(b"a")),
            Err(StoreError::NotCached)
        ));
        assert_eq!(
            kv.get(b"a").unwrap(),
            Some(b"1".to_vec()),
            "outside, reads go on"
        );
    }

    #[test]
    fn the_cache_keeps_within_its_bytes_dropping_the_least_recently_used() {
        let inner = std::sync::Arc::new(MemKv::default());
        let kv = CachedKv::new(Box::new(inner.clone()), 1000, 3 * (ENTRY_OVERHEAD + 11));
        for key in [b"a", b"b", b"c", b"d"] {
            kv.apply(vec![(key.to_vec(), Some(vec![0; 10]))]).unwrap();
        }
        assert!(kv.lock().bytes <= 3 * (ENTRY_OVERHEAD + 11));
        assert_eq!(kv.lock().values.len(), 3);
        assert!(matches!(
            cache_only(|| kv.get(b"a")),
            Err(StoreError::NotCached)
        ));
        assert!(cache_only(|| kv.get(b"d")).is_ok());
    }

    #[test]
    fn removed_keys_leave_the_cache_instead_of_filling_it() {
        let (_, kv) = store(16);
        kv.apply(vec![(b"a".to_vec(), Some(b"1".to_vec()))])
            .unwrap();
        kv.apply(vec![(b"a".to_vec(), None), (b"b".to_vec(), None)])
            .unwrap();
        assert_eq!(kv.lock().values.len(), 0);
        assert_eq!(kv.lock().bytes, 0);
        assert_eq!(kv.get(b"a").unwrap(), None);
    }
}
