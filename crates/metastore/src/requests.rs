//! Forgetting old request records (`r` keys) a bounded step at a time.
//!
//! Records sort by client, then by sequence number, which is close to the order in which they
//! were carried out (a client has a few requests in flight at once). So the old records of a
//! client are the first ones under its prefix: they are read from there until the first record
//! that is not old, and the walk jumps to the next client. At most a few young records per
//! client are read, and neither the reads nor the removals of one step grow with the number of
//! records.

use elkfs_proto::types::Timestamp;

use crate::error::StoreError;
use crate::keys;
use crate::kv::{KvStore, Write};
use crate::records::RequestRecord;
use crate::store::encode_u64;
use crate::txn::decode_value;

/// Records removed per step (one batch each).
pub const FORGET_STEP: usize = 4096;

/// Records read at once from the start of a client's records: most clients have no old record
/// at all, so the first read is small and later ones grow.
const FIRST_READ: usize = 16;

/// Old records found by [`expired`], and where the next look should start.
pub struct Expired {
    /// Keys of the records found, in key order.
    pub keys: Vec<Vec<u8>>,
    /// Every record up to this key has been looked at (`None`: all of them).
    pub resume_after: Option<Vec<u8>>,
}

/// Up to `limit` request records carried out before `before`, looking at the keys after
/// `after` (all of them when `None`). Within a client, the walk stops at the first record that
/// is not old: one that went out of order behind it is found by a later pass, once that one is
/// old too.
pub fn expired(
    kv: &dyn KvStore,
    before: Timestamp,
    after: Option<Vec<u8>>,
    limit: usize,
) -> Result<Expired, StoreError> {
    let mut keys = Vec::new();
    let mut after = after;
    let mut read = FIRST_READ;
    while keys.len() < limit {
        let rows = kv.scan(&[keys::REQUEST], after.as_deref(), read)?;
        let Some((last, _)) = rows.last() else {
            return Ok(Expired {
                keys,
                resume_after: None,
            });
        };
        let mut young = None;
        for (key, value) in &rows {
            let record: RequestRecord = decode_value(key, value)?;
            if record.time >= before {
                young = Some(key);
                break;
            }
            keys.push(key.clone());
            if keys.len() >= limit {
                return Ok(Expired {
                    resume_after: Some(key.clone()),
                    keys,
                });
            }
        }
        match young {
            // The rest of this client's records are younger: on with the next client.
            Some(key) => {
                after = Some(keys::request_client_end(key));
                read = FIRST_READ;
            }
            None if rows.len() < read => {
                return Ok(Expired {
                    keys,
                    resume_after: None,
                });
            }
            None => {
                after = Some(last.clone());
                read = (read * 4).min(FORGET_STEP);
            }
        }
    }
    Ok(Expired {
        keys,
        resume_after: after,
    })
}

/// Carries out `ForgetRequests { before }` logged as `version`: removes the old records a step
/// (one batch, handed to `apply`) at a time, and marks `version` applied with the last step. A
/// crash between steps leaves some records removed and the version not applied; replay runs
/// the record again and removes the rest, which ends in the same state, as it only removes.
pub fn forget_in_steps(
    kv: &dyn KvStore,
    before: Timestamp,
    version: u64,
    mut apply: impl FnMut(Vec<Write>) -> Result<(), StoreError>,
) -> Result<(), StoreError> {
    let mut after = None;
    loop {
        let found = expired(kv, before, after, FORGET_STEP)?;
        let last = found.keys.len() < FORGET_STEP || found.resume_after.is_none();
        let mut writes: Vec<Write> = found.keys.into_iter().map(|key| (key, None)).collect();
        if last {
            writes.push((keys::APPLIED.to_vec(), Some(encode_u64(version))));
        }
        apply(writes)?;
        if last {
            return Ok(());
        }
        after = found.resume_after;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mem_kv::MemKv;

    fn at(secs: i64) -> Timestamp {
        Timestamp { secs, nanos: 0 }
    }

    fn record(kv: &MemKv, client: u64, seq: u64, secs: i64) {
        let value = elkfs_proto::codec::encode(&RequestRecord {
            inode: None,
            time: at(secs),
        })
        .unwrap();
        kv.apply(vec![(keys::request(client, seq), Some(value))])
            .unwrap();
    }

    #[test]
    fn only_the_old_records_of_each_client_are_found_up_to_the_limit() {
        let kv = MemKv::default();
        // Client 1: 100 old records, then young ones; client 2: only young; client 3: old.
        for seq in 0..150 {
            record(&kv, 1, seq, if seq < 100 { 10 } else { 50 });
        }
        record(&kv, 2, 0, 60);
        record(&kv, 2, 1, 10);
        for seq in 0..5 {
            record(&kv, 3, seq, 20);
        }
        let all = expired(&kv, at(30), None, usize::MAX).unwrap();
        assert_eq!(all.resume_after, None);
        let all = all.keys;
        let mut expected: Vec<Vec<u8>> = (0..100).map(|s| keys::request(1, s)).collect();
        expected.extend((0..5).map(|s| keys::request(3, s)));
        assert_eq!(
            all, expected,
            "client 2's old record behind a young one waits"
        );
        let first = expired(&kv, at(30), None, 7).unwrap();
        assert_eq!(first.keys, expected[..7].to_vec());
        let rest = expired(&kv, at(30), first.resume_after, usize::MAX).unwrap();
        assert_eq!(rest.keys, expected[7..].to_vec());
        assert!(
            expired(&kv, at(5), None, usize::MAX)
                .unwrap()
                .keys
                .is_empty()
        );
    }
}
