//! What a byte-range lock request does to the locks its owner holds on a file (POSIX `fcntl`
//! rules, which `flock`'s whole-file locks follow too). The master keeps every owner's locks by
//! these rules, and a client keeps a copy of its own by the same ones, to take them again after
//! it reconnects.

use crate::master::{Lock, LockKind};

/// Whether two locks' ranges share a byte.
pub fn overlaps(a: &Lock, b: &Lock) -> bool {
    a.start <= b.end && b.start <= a.end
}

/// The locks one owner holds on a file after it asks for `want`: its locks on `want`'s range
/// go (those sticking out of it are split), then `want` is added unless it is an unlock, merged
/// with the owner's adjacent locks of the same kind.
pub fn after_request(owned: Vec<Lock>, want: Lock) -> Vec<Lock> {
    let mut kept = Vec::with_capacity(owned.len() + 1);
    for l in owned {
        if !overlaps(&l, &want) {
            kept.push(l);
            continue;
        }
        if l.start < want.start {
            kept.push(Lock {
                end: want.start - 1,
                ..l
            });
        }
        if l.end > want.end {
            kept.push(Lock {
                start: want.end + 1,
                ..l
            });
        }
    }
    if want.kind != LockKind::Unlock {
        let mut new = want;
        kept.retain(|l| {
            let adjacent = l.kind == want.kind
                && (l.end.checked_add(1) == Some(new.start)
                    || new.end.checked_add(1) == Some(l.start));
            if adjacent {
                new.start = new.start.min(l.start);
                new.end = new.end.max(l.end);
            }
            !adjacent
        });
        kept.push(new);
    }
    kept
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lock(kind: LockKind, start: u64, end: u64) -> Lock {
        Lock {
            kind,
            start,
            end,
            owner: 1,
            pid: 1,
        }
    }

    fn sorted(mut locks: Vec<Lock>) -> Vec<(LockKind, u64, u64)> {
        locks.sort_by_key(|l| l.start);
        locks.iter().map(|l| (l.kind, l.start, l.end)).collect()
    }

    #[test]
    fn an_unlock_in_the_middle_splits_and_a_lock_next_to_one_merges() {
        use LockKind::*;
        let held = after_request(vec![], lock(Write, 0, 99));
        let held = after_request(held, lock(Unlock, 40, 59));
        assert_eq!(sorted(held.clone()), vec![(Write, 0, 39), (Write, 60, 99)]);
        let held = after_request(held, lock(Write, 40, 59));
        assert_eq!(sorted(held.clone()), vec![(Write, 0, 99)]);
        let held = after_request(held, lock(Read, 50, u64::MAX));
        assert_eq!(
            sorted(held.clone()),
            vec![(Write, 0, 49), (Read, 50, u64::MAX)]
        );
        assert!(after_request(held, lock(Unlock, 0, u64::MAX)).is_empty());
    }
}
