//! A transaction over the key-value store: reads see the transaction's own writes, and the writes
//! are handed to the store as one atomic batch at the end.

use std::collections::BTreeMap;

use elkfs_proto::Status;
use elkfs_proto::codec;
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::error::StoreError;
use crate::kv::{KvStore, Rows, Write};

/// Why an operation did not apply.
#[derive(Debug, thiserror::Error)]
pub enum ExecError {
    /// The operation is not allowed on the current state (ENOENT, EEXIST, ...).
    #[error("{0}")]
    Refused(Status),
    /// The store failed or holds damaged data.
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl From<Status> for ExecError {
    fn from(s: Status) -> Self {
        ExecError::Refused(s)
    }
}

/// Pending writes over a store.
pub struct Txn<'a> {
    kv: &'a dyn KvStore,
    writes: BTreeMap<Vec<u8>, Option<Vec<u8>>>,
}

impl<'a> Txn<'a> {
    /// Starts an empty transaction.
    pub fn new(kv: &'a dyn KvStore) -> Txn<'a> {
        Txn {
            kv,
            writes: BTreeMap::new(),
        }
    }

    /// The store under this transaction, without the transaction's own writes.
    pub fn store(&self) -> &'a dyn KvStore {
        self.kv
    }

    /// The raw value at `key`, as this transaction sees it.
    pub fn get_raw(&self, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        match self.writes.get(key) {
            Some(v) => Ok(v.clone()),
            None => self.kv.get(key),
        }
    }

    /// The decoded value at `key`.
    pub fn get<T: DeserializeOwned>(&self, key: &[u8]) -> Result<Option<T>, StoreError> {
        match self.get_raw(key)? {
            Some(bytes) => decode_value(key, &bytes).map(Some),
            None => Ok(None),
        }
    }

    /// Stores `value` at `key`.
    pub fn put<T: Serialize>(&mut self, key: Vec<u8>, value: &T) -> Result<(), StoreError> {
        let bytes = codec::encode(value).map_err(|e| StoreError::Damaged {
            key: printable(&key),
            reason: e.to_string(),
        })?;
        self.writes.insert(key, Some(bytes));
        Ok(())
    }

    /// Removes `key`.
    pub fn delete(&mut self, key: Vec<u8>) {
        self.writes.insert(key, None);
    }

    /// A counter (0 when unset).
    pub fn counter(&self, key: &[u8]) -> Result<u64, StoreError> {
        Ok(self.get::<u64>(key)?.unwrap_or(0))
    }

    /// Sets a counter.
    pub fn set_counter(&mut self, key: &[u8], value: u64) -> Result<(), StoreError> {
        self.put(key.to_vec(), &value)
    }

    /// Every entry under `prefix`, including this transaction's writes.
    pub fn scan_all(&self, prefix: &[u8]) -> Result<Rows, StoreError> {
        let mut merged: BTreeMap<Vec<u8>, Vec<u8>> = self
            .kv
            .scan(prefix, None, usize::MAX)?
            .into_iter()
            .collect();
        for (k, v) in self.writes.range(prefix.to_vec()..) {
            if !k.starts_with(prefix) {
                break;
            }
            match v {
                Some(v) => merged.insert(k.clone(), v.clone()),
                None => merged.remove(k),
            };
        }
        Ok(merged.into_iter().collect())
    }

    /// Whether any key starts with `prefix`.
    pub fn any_with_prefix(&self, prefix: &[u8]) -> Result<bool, StoreError> {
        for (k, v) in self.writes.range(prefix.to_vec()..) {
            if !k.starts_with(prefix) {
                break;
            }
            if v.is_some() {
                return Ok(true);
            }
        }
        // Keys deleted in this transaction must not count, so look a little past them.
        let deleted = self
            .writes
            .range(prefix.to_vec()..)
            .take_while(|(k, _)| k.starts_with(prefix))
            .filter(|(_, v)| v.is_none())
            .count();
        let found = self.kv.scan(prefix, None, deleted + 1)?;
        Ok(found
            .iter()
            .any(|(k, _)| !matches!(self.writes.get(k), Some(None))))
    }

    /// The batch to apply.
    pub fn into_writes(self) -> Vec<Write> {
        self.writes.into_iter().collect()
    }
}

/// Decodes a stored value, naming the key if it is damaged.
pub fn decode_value<T: DeserializeOwned>(key: &[u8], bytes: &[u8]) -> Result<T, StoreError> {
    codec::decode(bytes).map_err(|e| StoreError::Damaged {
        key: printable(key),
        reason: e.to_string(),
    })
}

/// A key as text for error messages: the prefix letter and the rest in hex.
pub fn printable(key: &[u8]) -> String {
    match key.split_first() {
        Some((p, rest)) => {
            let hex: String = rest.iter().map(|b| format!("{b:02x}")).collect();
            format!("{}:{hex}", *p as char)
        }
        None => String::new(),
    }
}
