//! Holding writes back from sled and applying them many batches at a time.
//!
//! sled 0.34 seals and writes out its log buffer twice for every batch (`pin_log`), on its own
//! I/O threads: with one batch per change that was about half of the master's CPU time. The
//! changelog is the record of every change, and sled is only its applied state (the `APPLIED`
//! key says up to which version), so writes may wait in memory: merged batches are applied as
//! one sled batch, which is atomic, when enough have gathered or when [`KvStore::settle`] or
//! [`KvStore::flush`] is called. After a crash sled holds the state of some earlier version and
//! replay of the changelog brings it forward, as it does after sled's own unflushed writes are
//! lost. Reads see the held writes first.

use std::collections::BTreeMap;
use std::ops::Bound;
use std::sync::Mutex;

use crate::error::StoreError;
use crate::kv::{KvStore, Rows, Write};

/// Keys held back before they are applied without waiting for [`KvStore::settle`].
pub const MAX_HELD_KEYS: usize = 4096;

/// Keys that may still be held before [`KvStore::applies_in_memory`] says no.
const IN_MEMORY_MARGIN: usize = 64;

/// The newest value of every key written and not applied yet (`None`: removed).
type Held = BTreeMap<Vec<u8>, Option<Vec<u8>>>;

/// A store whose writes wait in memory until they are applied to `inner` together.
pub struct WriteBehind {
    inner: Box<dyn KvStore>,
    /// The newest value of every key written and not applied yet (`None`: removed).
    held: Mutex<Held>,
    max_held: usize,
}

impl WriteBehind {
    /// Holds writes to `inner` back, applying them once `max_held` keys are waiting.
    pub fn new(inner: Box<dyn KvStore>, max_held: usize) -> WriteBehind {
        WriteBehind {
            inner,
            held: Mutex::new(BTreeMap::new()),
            max_held: max_held.max(1),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Held> {
        self.held.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The held writes unless a batch is being applied (it holds the lock meanwhile), for
    /// callers that must not wait.
    fn lock_now(&self) -> Option<std::sync::MutexGuard<'_, Held>> {
        match self.held.try_lock() {
            Ok(held) => Some(held),
            Err(std::sync::TryLockError::Poisoned(p)) => Some(p.into_inner()),
            Err(std::sync::TryLockError::WouldBlock) => None,
        }
    }

    /// Applies everything held as one batch. The lock is kept meanwhile, so no read finds a
    /// key neither held nor applied yet; if the batch fails, the writes stay held (and readable).
    fn apply_held(&self, held: &mut Held) -> Result<(), StoreError> {
        if held.is_empty() {
            return Ok(());
        }
        let writes: Vec<Write> = held.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
        self.inner.apply(writes)?;
        held.clear();
        Ok(())
    }
}

impl KvStore for WriteBehind {
    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        {
            let held = self.lock();
            if let Some(value) = held.get(key) {
                return Ok(value.clone());
            }
        }
        self.inner.get(key)
    }

    fn get_in_memory(&self, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        let Some(held) = self.lock_now() else {
            return Err(StoreError::NotCached);
        };
        if let Some(value) = held.get(key) {
            return Ok(value.clone());
        }
        // Still under the lock, so a batch cannot take the key from here to there meanwhile.
        self.inner.get_in_memory(key)
    }

    fn scan(&self, prefix: &[u8], after: Option<&[u8]>, limit: usize) -> Result<Rows, StoreError> {
        if limit == 0 {
            return Ok(Rows::new());
        }
        let held = self.lock();
        let mut out = Rows::new();
        let mut cursor = after.map(<[u8]>::to_vec);
        loop {
            let page = self.inner.scan(prefix, cursor.as_deref(), limit)?;
            let exhausted = page.len() < limit;
            // Held keys up to the page's last key belong to this round; past it, to a later one.
            let upper = match (exhausted, page.last()) {
                (false, Some((key, _))) => Bound::Included(key.clone()),
                _ => Bound::Unbounded,
            };
            let lower = match &cursor {
                Some(c) => Bound::Excluded(c.clone()),
                None => Bound::Included(prefix.to_vec()),
            };
            let mut mine = held
                .range((lower, upper))
                .take_while(|(k, _)| k.starts_with(prefix))
                .peekable();
            let mut theirs = page.into_iter().peekable();
            loop {
                let take_mine = match (mine.peek(), theirs.peek()) {
                    (None, None) => break,
                    (Some(_), None) => true,
                    (None, Some(_)) => false,
                    (Some((a, _)), Some((b, _))) => a.as_slice() <= b.as_slice(),
                };
                let (key, value) = if take_mine {
                    let (key, value) = mine.next().expect("peeked");
                    if theirs.peek().is_some_and(|(b, _)| b == key) {
                        theirs.next();
                    }
                    (key.clone(), value.clone())
                } else {
                    let (key, value) = theirs.next().expect("peeked");
                    (key, Some(value))
                };
                cursor = Some(key.clone());
                if let Some(value) = value {
                    out.push((key, value));
                    if out.len() == limit {
                        return Ok(out);
                    }
                }
            }
            if exhausted {
                return Ok(out);
            }
        }
    }

    fn apply(&self, writes: Vec<Write>) -> Result<(), StoreError> {
        let mut held = self.lock();
        held.extend(writes);
        if held.len() >= self.max_held {
            self.apply_held(&mut held)?;
        }
        Ok(())
    }

    fn settle(&self) -> Result<(), StoreError> {
        let mut held = self.lock();
        self.apply_held(&mut held)
    }

    fn applies_in_memory(&self) -> bool {
        // Room for a large change (a rename touches a dozen keys) before the batch is due; not
        // while a batch is being applied.
        self.lock_now()
            .is_some_and(|held| held.len() + IN_MEMORY_MARGIN < self.max_held)
    }

    fn flush(&self) -> Result<(), StoreError> {
        self.settle()?;
        self.inner.flush()
    }
}

impl Drop for WriteBehind {
    /// A store closed on purpose leaves nothing held back (after a crash, replay does it).
    /// Nothing is applied while a panic unwinds: it may have come from the inner store (a
    /// damaged sled), and a second panic there would abort the process instead of letting
    /// recovery rebuild the database.
    fn drop(&mut self) {
        if std::thread::panicking() {
            return;
        }
        if let Err(e) = self.settle() {
            tracing::error!(error = %e, "cannot apply held changes to the metadata database at close");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mem_kv::MemKv;
    use proptest::prelude::*;

    fn put(k: &[u8], v: &[u8]) -> Write {
        (k.to_vec(), Some(v.to_vec()))
    }

    #[test]
    fn held_writes_and_removals_are_read_in_memory_and_the_rest_is_asked_below() {
        let store = WriteBehind::new(Box::new(MemKv::default()), 100);
        store.apply(vec![put(b"a", b"1"), put(b"b", b"2")]).unwrap();
        store.apply(vec![(b"a".to_vec(), None)]).unwrap();
        assert_eq!(store.get_in_memory(b"a").unwrap(), None);
        assert_eq!(store.get_in_memory(b"b").unwrap(), Some(b"2".to_vec()));
        // MemKv does not say what it can read without waiting.
        assert!(matches!(
            store.get_in_memory(b"c"),
            Err(StoreError::NotCached)
        ));
        // While a batch is being applied, nothing is read in memory.
        let held = store.held.lock().unwrap();
        assert!(matches!(
            store.get_in_memory(b"b"),
            Err(StoreError::NotCached)
        ));
        assert!(!store.applies_in_memory());
        drop(held);
        assert!(store.applies_in_memory());
    }

    #[test]
    fn held_writes_are_read_before_they_reach_the_store_and_settle_applies_them() {
        let store = WriteBehind::new(Box::new(MemKv::default()), 100);
        store.apply(vec![put(b"a", b"1"), put(b"b", b"2")]).unwrap();
        store
            .apply(vec![(b"a".to_vec(), None), put(b"c", b"3")])
            .unwrap();
        assert_eq!(store.get(b"a").unwrap(), None);
        assert_eq!(store.get(b"b").unwrap(), Some(b"2".to_vec()));
        assert_eq!(store.inner.get(b"b").unwrap(), None, "applied too early");
        store.settle().unwrap();
        assert_eq!(store.inner.get(b"b").unwrap(), Some(b"2".to_vec()));
        assert_eq!(store.inner.get(b"c").unwrap(), Some(b"3".to_vec()));
        assert_eq!(store.lock().len(), 0);
    }

    #[test]
    fn enough_held_keys_are_applied_without_waiting() {
        let store = WriteBehind::new(Box::new(MemKv::default()), 3);
        store.apply(vec![put(b"a", b"1"), put(b"b", b"1")]).unwrap();
        assert_eq!(store.inner.get(b"a").unwrap(), None);
        store.apply(vec![put(b"c", b"1")]).unwrap();
        assert_eq!(store.inner.get(b"a").unwrap(), Some(b"1".to_vec()));
    }

    /// A store whose writes panic, as a damaged sled's may.
    struct Panicking;

    impl KvStore for Panicking {
        fn get(&self, _: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
            Ok(None)
        }
        fn scan(&self, _: &[u8], _: Option<&[u8]>, _: usize) -> Result<Rows, StoreError> {
            Ok(Rows::new())
        }
        fn apply(&self, _: Vec<Write>) -> Result<(), StoreError> {
            panic!("the store is damaged")
        }
        fn flush(&self) -> Result<(), StoreError> {
            Ok(())
        }
    }

    #[test]
    fn a_panic_from_the_store_unwinds_past_held_writes_without_aborting() {
        let caught = std::panic::catch_unwind(|| {
            let store = WriteBehind::new(Box::new(Panicking), 100);
            store.apply(vec![put(b"a", b"1")]).unwrap();
            // Settling panics; unwinding drops the store, which must not apply again.
            store.settle().unwrap();
        });
        assert!(caught.is_err());
    }

    proptest! {
        /// Whatever was applied or held, and however a scan is paged, a scan sees what a
        /// store without held writes would show.
        #[test]
        fn scans_merge_held_and_applied_writes_in_key_order(
            batches in prop::collection::vec(
                prop::collection::vec((0u8..24, prop::option::of(0u8..4)), 1..6), 1..12),
            settle_after in 0usize..12,
            prefix in prop::option::of(0u8..3),
            limit in 0usize..6,
        ) {
            let behind = WriteBehind::new(Box::new(MemKv::default()), 1000);
            let plain = MemKv::default();
            for (i, batch) in batches.iter().enumerate() {
                let writes: Vec<Write> = batch
                    .iter()
                    .map(|(k, v)| (vec![k / 8, *k], v.map(|v| vec![v])))
                    .collect();
                behind.apply(writes.clone()).unwrap();
                plain.apply(writes).unwrap();
                if i == settle_after {
                    behind.settle().unwrap();
                }
            }
            let prefix: Vec<u8> = prefix.into_iter().collect();
            let mut after: Option<Vec<u8>> = None;
            loop {
                let got = behind.scan(&prefix, after.as_deref(), limit).unwrap();
                let want = plain.scan(&prefix, after.as_deref(), limit).unwrap();
                prop_assert_eq!(&got, &want);
                if got.len() < limit || limit == 0 {
                    break;
                }
                after = got.last().map(|(k, _)| k.clone());
            }
        }
    }
}
