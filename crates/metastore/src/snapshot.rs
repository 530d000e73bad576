//! An exact snapshot of the key-value state, read while commits go on (copy-on-write at our
//! layer, so sled needs no snapshot support).
//!
//! A dump of version `V` walks the keys in order, a page at a time, behind a cursor. While it
//! runs, the committer calls [`Overlay::preserve`] before applying a batch: for every key the
//! batch writes that lies beyond the cursor and has not been saved yet, it saves the value the
//! key has now (or "absent"). A key changed since `V` is saved the first time it changes, so the
//! saved value is the one it had at `V`. [`Overlay::next_page`] then merges, under the same lock:
//! a key with a saved value is emitted with that value (skipped if it was absent at `V`, emitted
//! if it has been deleted since), every other key with its live value, which has not changed
//! since `V`. Keys at or before the cursor are never looked at again, so their later changes
//! need no saving.
//!
//! Why the batch may be applied after the lock is released: the saved value wins over whatever
//! the live read shows, so a page read before, during or after that apply gives the same result.
//! Memory: the saved values are those of keys changed ahead of the cursor during one dump.

use std::collections::BTreeMap;
use std::ops::Bound;
use std::sync::Mutex;

use crate::error::StoreError;
use crate::kv::{KvStore, Rows, Write};

/// A dump in progress.
struct Dump {
    /// Every key up to and including this one has been emitted (`None`: nothing yet).
    cursor: Option<Vec<u8>>,
    /// Values at the dump's version of keys beyond the cursor that have changed since.
    saved: BTreeMap<Vec<u8>, Option<Vec<u8>>>,
    /// The last page has been handed out.
    done: bool,
    /// Values saved so far.
    saved_count: u64,
}

impl Dump {
    fn is_ahead(&self, key: &[u8]) -> bool {
        !self.done && self.cursor.as_deref().is_none_or(|c| key > c)
    }
}

/// The shared state between the committer and a dumper.
#[derive(Default)]
pub struct Overlay {
    dump: Mutex<Option<Dump>>,
}

fn poisoned() -> StoreError {
    StoreError::Sled {
        path: Default::default(),
        reason: "the snapshot overlay lock is poisoned".to_string(),
    }
}

impl Overlay {
    /// Starts a dump of the current state. The caller must hold the commit lock, so that every
    /// commit so far is applied and every later one sees the dump. Fails if one is running.
    pub fn start(&self) -> Result<(), StoreError> {
        let mut dump = self.dump.lock().map_err(|_| poisoned())?;
        if dump.is_some() {
            return Err(StoreError::Sled {
                path: Default::default(),
                reason: "a snapshot is already being read".to_string(),
            });
        }
        *dump = Some(Dump {
            cursor: None,
            saved: BTreeMap::new(),
            done: false,
            saved_count: 0,
        });
        Ok(())
    }

    /// Ends the dump (finished or abandoned); commits stop saving values. Returns how many
    /// values commits saved for it.
    pub fn end(&self) -> u64 {
        let ended = match self.dump.lock() {
            Ok(mut dump) => dump.take(),
            Err(poisoned) => poisoned.into_inner().take(),
        };
        ended.map_or(0, |d| d.saved_count)
    }

    /// Whether a dump is running.
    pub fn is_active(&self) -> bool {
        self.dump.lock().map(|d| d.is_some()).unwrap_or(false)
    }

    /// Saves, for a running dump, the current values of the keys `writes` is about to change.
    /// Call with the commit lock held, after the previous batch was applied and before this one.
    pub fn preserve(&self, kv: &dyn KvStore, writes: &[Write]) -> Result<(), StoreError> {
        let mut guard = self.dump.lock().map_err(|_| poisoned())?;
        let Some(dump) = guard.as_mut() else {
            return Ok(());
        };
        for (key, _) in writes {
            if dump.is_ahead(key) && !dump.saved.contains_key(key) {
                let before = kv.get(key)?;
                dump.saved.insert(key.clone(), before);
                dump.saved_count += 1;
            }
        }
        Ok(())
    }

    /// The next keys of the dump in order, at most about `limit` of them (keys deleted since
    /// the dump began may add a few); an empty page means the dump is complete.
    pub fn next_page(&self, kv: &dyn KvStore, limit: usize) -> Result<Rows, StoreError> {
        loop {
            let page = self.read_page(kv, limit.max(1))?;
            // `None`: every key of a full page was created after the dump began; read on
            // (the lock was released in between, so commits are not held up).
            if let Some(page) = page {
                return Ok(page);
            }
        }
    }

    fn read_page(&self, kv: &dyn KvStore, limit: usize) -> Result<Option<Rows>, StoreError> {
        let mut guard = self.dump.lock().map_err(|_| poisoned())?;
        let Some(dump) = guard.as_mut() else {
            return Err(StoreError::Sled {
                path: Default::default(),
                reason: "no snapshot is being read".to_string(),
            });
        };
        if dump.done {
            return Ok(Some(Vec::new()));
        }
        let live = kv.scan(&[], dump.cursor.as_deref(), limit)?;
        // A full page ends at its last key; a short one reached the end of the tree.
        let end = if live.len() == limit {
            live.last().map(|(k, _)| k.clone())
        } else {
            None
        };
        let lower = match dump.cursor.as_deref() {
            Some(c) => Bound::Excluded(c),
            None => Bound::Unbounded,
        };
        let upper = match end.as_deref() {
            Some(e) => Bound::Included(e),
            None => Bound::Unbounded,
        };
        let saved: Vec<(Vec<u8>, Option<Vec<u8>>)> = dump
            .saved
            .range::<[u8], _>((lower, upper))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        for (k, _) in &saved {
            dump.saved.remove(k);
        }
        let mut out = Vec::with_capacity(live.len() + saved.len());
        let mut saved = saved.into_iter().peekable();
        for (key, value) in live {
            while let Some((sk, _)) = saved.peek() {
                if *sk >= key {
                    break;
                }
                // Deleted since the dump began: emit the value it had.
                if let Some((sk, Some(sv))) = saved.next() {
                    out.push((sk, sv));
                }
            }
            match saved.peek() {
                Some((sk, _)) if *sk == key => {
                    if let Some((sk, Some(sv))) = saved.next() {
                        out.push((sk, sv));
                    }
                }
                _ => out.push((key, value)),
            }
        }
        for (sk, sv) in saved {
            if let Some(sv) = sv {
                out.push((sk, sv));
            }
        }
        match end {
            Some(end) => dump.cursor = Some(end),
            None => dump.done = true,
        }
        if out.is_empty() && !dump.done {
            return Ok(None);
        }
        Ok(Some(out))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mem_kv::MemKv;

    fn commit(overlay: &Overlay, kv: &MemKv, writes: Vec<Write>) {
        overlay.preserve(kv, &writes).unwrap();
        kv.apply(writes).unwrap();
    }

    proptest::proptest! {
        /// Any interleaving of pages and batches (puts and deletes anywhere) yields exactly the
        /// state at the start of the dump.
        #[test]
        fn a_dump_yields_the_state_at_its_start_whatever_commits_in_between(
            initial in proptest::collection::btree_map(0u8..60, 0u8..255, 0..40),
            steps in proptest::collection::vec(
                proptest::collection::vec((0u8..60, proptest::option::of(0u8..255)), 0..6),
                0..40,
            ),
            page in 1usize..6,
        ) {
            let kv = MemKv::default();
            kv.apply(initial.iter().map(|(k, v)| (vec![*k], Some(vec![*v]))).collect()).unwrap();
            let expected: Rows = initial.iter().map(|(k, v)| (vec![*k], vec![*v])).collect();
            let overlay = Overlay::default();
            overlay.start().unwrap();
            let mut got = Vec::new();
            let mut steps = steps.into_iter();
            loop {
                if let Some(batch) = steps.next() {
                    let writes = batch.into_iter().map(|(k, v)| (vec![k], v.map(|v| vec![v]))).collect();
                    commit(&overlay, &kv, writes);
                }
                let rows = overlay.next_page(&kv, page).unwrap();
                if rows.is_empty() {
                    break;
                }
                got.extend(rows);
            }
            overlay.end();
            proptest::prop_assert_eq!(got, expected);
        }
    }
}
