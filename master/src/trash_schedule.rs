//! When files in the trash are due: their trash times, ordered, in memory. Filled once from the
//! trash at start and then from every change that moves a file there, so that the trash worker
//! looks only at the files that are due instead of reading the whole trash every second (which
//! cost the master CPU in proportion to the trash, all the time).
//!
//! An entry is a hint, not the truth: a file restored or purged in the meantime, or deleted
//! again later, is checked against the metadata when its entry comes due.

use std::collections::BTreeSet;
use std::sync::Mutex;

use elkfs_proto::InodeId;
use elkfs_proto::types::Timestamp;

/// Trashed files by when they are due.
#[derive(Default)]
pub struct TrashSchedule {
    due: Mutex<BTreeSet<(Timestamp, InodeId)>>,
}

impl TrashSchedule {
    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeSet<(Timestamp, InodeId)>> {
        self.due.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Files moved to the trash, with when each is due.
    pub fn add(&self, entries: &[(InodeId, Timestamp)]) {
        if entries.is_empty() {
            return;
        }
        let mut due = self.lock();
        for &(inode, at) in entries {
            due.insert((at, inode));
        }
    }

    /// Takes out every file due at or before `now`.
    pub fn take_due(&self, now: Timestamp) -> Vec<InodeId> {
        let mut due = self.lock();
        let later = due.split_off(&(now, InodeId(u64::MAX)));
        let taken = std::mem::replace(&mut *due, later);
        taken.into_iter().map(|(_, inode)| inode).collect()
    }

    /// How many files are scheduled (some may have left the trash since).
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    /// Whether nothing is scheduled.
    pub fn is_empty(&self) -> bool {
        self.lock().is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(secs: i64) -> Timestamp {
        Timestamp { secs, nanos: 0 }
    }

    #[test]
    fn files_come_out_once_when_due_in_order() {
        let schedule = TrashSchedule::default();
        schedule.add(&[(InodeId(3), at(30)), (InodeId(1), at(10))]);
        schedule.add(&[(InodeId(2), at(20)), (InodeId(4), at(20))]);
        assert_eq!(schedule.len(), 4);
        assert!(schedule.take_due(at(9)).is_empty());
        assert_eq!(
            schedule.take_due(at(20)),
            vec![InodeId(1), InodeId(2), InodeId(4)]
        );
        assert_eq!(schedule.take_due(at(20)), vec![]);
        assert_eq!(schedule.len(), 1);
        assert_eq!(schedule.take_due(at(100)), vec![InodeId(3)]);
        assert!(schedule.is_empty());
    }
}
