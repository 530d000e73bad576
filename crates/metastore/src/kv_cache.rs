//! A read cache in front of the key-value store, so that the hot part of the namespace
//! (inodes and directory entries just used, names just looked up and not found) is answered
//! from memory. Async callers run reads in cache-only mode first: those never touch the disk
//! and so may run on the async threads; a read that needs the disk says so
//! ([`StoreError::NotCached`]) and is run again on a blocking thread.

use std::cell::Cell;
use std::num::NonZeroUsize;
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

fn in_cache_only_mode() -> bool {
    CACHE_ONLY.with(Cell::get)
}

/// What the cache holds: values (or their absence) by key, least recently used first out, and
/// the number of batches applied, so a value read from the store while a batch was being
/// applied is not cached (it may be the old one).
struct Cached {
    values: LruCache<Vec<u8>, Option<Vec<u8>>>,
    batches: u64,
}

/// A [`KvStore`] with a bounded cache of single-key reads in front of another.
pub struct CachedKv {
    inner: Box<dyn KvStore>,
    cached: Mutex<Cached>,
}

impl CachedKv {
    /// Caches up to `entries` keys read from or written to `inner`.
    pub fn new(inner: Box<dyn KvStore>, entries: usize) -> CachedKv {
        CachedKv {
            inner,
            cached: Mutex::new(Cached {
                values: LruCache::new(
                    NonZeroUsize::new(entries.max(1)).unwrap_or(NonZeroUsize::MIN),
                ),
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
        if in_cache_only_mode() {
            return Err(StoreError::NotCached);
        }
        let value = self.inner.get(key)?;
        let mut cached = self.lock();
        if cached.batches == batches {
            cached.values.put(key.to_vec(), value.clone());
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
        let kept = writes.clone();
        let result = self.inner.apply(writes);
        let mut cached = self.lock();
        cached.batches += 1;
        match result {
            Ok(()) => {
                for (key, value) in kept {
                    cached.values.put(key, value);
                }
            }
            // What the store holds now is not known: forget everything.
            Err(_) => cached.values.clear(),
        }
        result
    }

    fn flush(&self) -> Result<(), StoreError> {
        self.inner.flush()
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;

    /// An in-memory store that counts the reads reaching it.
    #[derive(Default)]
    struct Counting {
        map: Mutex<BTreeMap<Vec<u8>, Vec<u8>>>,
        gets: AtomicUsize,
    }

    impl KvStore for std::sync::Arc<Counting> {
        fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
            self.gets.fetch_add(1, Ordering::SeqCst);
            Ok(self.map.lock().unwrap().get(key).cloned())
        }
        fn scan(&self, prefix: &[u8], _: Option<&[u8]>, limit: usize) -> Result<Rows, StoreError> {
            let map = self.map.lock().unwrap();
            Ok(map
                .range(prefix.to_vec()..)
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

    fn store(entries: usize) -> (std::sync::Arc<Counting>, CachedKv) {
        let inner = std::sync::Arc::new(Counting::default());
        let kv = CachedKv::new(Box::new(inner.clone()), entries);
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
        assert_eq!(
            inner.gets.load(Ordering::SeqCst),
            1,
            "only the first miss of x"
        );
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
}
