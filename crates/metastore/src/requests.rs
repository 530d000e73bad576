//! Forgetting old request records a bounded step at a time.
//!
//! Records in request slots (`s` keys) are as many as the requests their clients had in flight
//! at once, so all of them are read. Records by number (`r` keys, from changelogs written before
//! request slots) sort by client, then by sequence number, which is close to the order in which
//! they were carried out. So the old records of a client are the first ones under its prefix:
//! they are read from there until the first record that is not old, and the walk jumps to the
//! next client. At most a few young records per client are read. Neither the reads nor the
//! removals of one step grow with the number of records.

use elkfs_proto::types::Timestamp;

use crate::error::StoreError;
use crate::keys;
use crate::kv::{KvStore, Write};
use crate::records::{RequestRecord, SlotRecord};
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
/// `after` (all of them when `None`): records by number first, then records in slots.
pub fn expired(
    kv: &dyn KvStore,
    before: Timestamp,
    after: Option<Vec<u8>>,
    limit: usize,
) -> Result<Expired, StoreError> {
    let in_slots = after
        .as_ref()
        .is_some_and(|key| key.first() == Some(&keys::REQUEST_SLOT));
    let (mut keys, after) = match in_slots {
        true => (Vec::new(), after),
        false => {
            let numbered = expired_numbered(kv, before, after, limit)?;
            if numbered.resume_after.is_some() {
                return Ok(numbered);
            }
            (numbered.keys, None)
        }
    };
    let resume_after = expired_in_slots(kv, before, after, limit, &mut keys)?;
    Ok(Expired { keys, resume_after })
}

/// Adds to `keys` the records in slots carried out before `before`, after the key `after`,
/// until `keys` holds `limit`; returns where to go on from then (`None`: all were seen).
fn expired_in_slots(
    kv: &dyn KvStore,
    before: Timestamp,
    mut after: Option<Vec<u8>>,
    limit: usize,
    keys: &mut Vec<Vec<u8>>,
) -> Result<Option<Vec<u8>>, StoreError> {
    if keys.len() >= limit {
        // The prefix alone sorts before every record in a slot.
        return Ok(Some(after.unwrap_or_else(|| vec![keys::REQUEST_SLOT])));
    }
    loop {
        let rows = kv.scan(&[keys::REQUEST_SLOT], after.as_deref(), FORGET_STEP)?;
        for (key, value) in &rows {
            let record: SlotRecord = decode_value(key, value)?;
            if record.time < before {
                keys.push(key.clone());
                if keys.len() >= limit {
                    return Ok(Some(key.clone()));
                }
            }
        }
        match rows.last() {
            Some((last, _)) if rows.len() == FORGET_STEP => after = Some(last.clone()),
            _ => return Ok(None),
        }
    }
}

/// Up to `limit` records by number carried out before `before`, looking at the keys after
/// `after` (all of them when `None`). Within a client, the walk stops at the first record that
/// is not old: one that went out of order behind it is found by a later pass, once that one is
/// old too.
fn expired_numbered(
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

    fn slot_record(kv: &MemKv, client: u64, slot: u16, seq: u64, secs: i64) {
        let value = elkfs_proto::codec::encode(&SlotRecord {
            seq,
            inode: None,
            time: at(secs),
        })
        .unwrap();
        kv.apply(vec![(keys::request_slot(client, slot), Some(value))])
            .unwrap();
    }

    #[test]
    fn old_records_in_slots_are_found_after_the_numbered_ones_in_any_steps() {
        let kv = MemKv::default();
        for seq in 0..3 {
            record(&kv, 1, seq, 10);
        }
        // Slots are reused in any order: old and young records mix within a client.
        for slot in 0..10u16 {
            slot_record(
                &kv,
                1,
                slot,
                100 + u64::from(slot),
                if slot % 2 == 0 { 10 } else { 50 },
            );
        }
        slot_record(&kv, 2, 0, 7, 20);
        slot_record(&kv, 2, 1, 8, 40);
        let mut expected: Vec<Vec<u8>> = (0..3).map(|s| keys::request(1, s)).collect();
        expected.extend((0..10).step_by(2).map(|slot| keys::request_slot(1, slot)));
        expected.push(keys::request_slot(2, 0));
        let all = expired(&kv, at(30), None, usize::MAX).unwrap();
        assert_eq!(all.keys, expected);
        assert_eq!(all.resume_after, None);
        for step in [1, 2, 3, 4, 9] {
            let mut found = Vec::new();
            let mut after = None;
            loop {
                let part = expired(&kv, at(30), after, step).unwrap();
                assert!(part.keys.len() <= step);
                found.extend(part.keys);
                match part.resume_after {
                    Some(key) => after = Some(key),
                    None => break,
                }
            }
            assert_eq!(found, expected, "in steps of {step}");
        }
    }
}
