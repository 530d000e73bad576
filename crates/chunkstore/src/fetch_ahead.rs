//! Chunks read one after another in the order of their ids get the next ones fetched from the
//! disk ahead of their reads. The master numbers chunks as files get them, so the chunks of
//! files written together have neighbouring ids, and programs often read files back in the order
//! they were written (`cp -r`, `tar`, a backup's check, a build reading its sources): for small
//! files each read is otherwise one disk round trip after the other. Only the first block of
//! each following chunk (its header fields, that block's hashes and the block) is asked for,
//! as a hint the kernel serves in the background.
//!
//! Reads by one program reach a server interleaved with the other servers' share of the chunks,
//! so a read counts as following the one before if its id is at most [`MAX_GAP`] higher.

use std::ops::Range;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

/// The largest step in ids between two reads still taken for one reader going forward.
const MAX_GAP: u64 = 8;

/// How many ids past a following read are kept fetched.
const AHEAD: u64 = 16;

/// Where the last read was, how far ahead chunks have been fetched, and whether a fetch is
/// going on.
#[derive(Default)]
pub(crate) struct FetchAhead {
    last_read: AtomicU64,
    fetched_until: AtomicU64,
    fetching: AtomicBool,
}

/// The fetch claimed with [`FetchAhead::try_claim`], going on; the next may be claimed once
/// this is dropped.
pub(crate) struct Fetching<'a>(&'a AtomicBool);

impl Drop for Fetching<'_> {
    fn drop(&mut self) {
        self.0.store(false, Ordering::Release);
    }
}

impl FetchAhead {
    /// Notes a read of the start of chunk `id`; returns the ids to fetch ahead when it follows
    /// the read before and the chunks fetched ahead of it run out within half of [`AHEAD`].
    /// Concurrent readers only make this fetch a chunk twice or not at all: it is a hint.
    pub(crate) fn after_read(&self, id: u64) -> Option<Range<u64>> {
        let last = self.last_read.swap(id, Ordering::Relaxed);
        if id <= last || id - last > MAX_GAP {
            return None;
        }
        let to = id.saturating_add(1 + AHEAD);
        let until = self.fetched_until.load(Ordering::Relaxed);
        // A window that does not reach past this read, or lies beyond the one it would open,
        // was fetched for another pass through the ids.
        let from = if until <= id || until > to {
            id + 1
        } else if until > id + AHEAD / 2 {
            return None;
        } else {
            until
        };
        self.fetched_until.store(to, Ordering::Relaxed);
        Some(from..to)
    }

    /// Claims the next fetch, unless one is claimed and not done: at most one runs at a time,
    /// so however many reads a peer sends, the disk work they cause beyond their own stays
    /// bounded. A hint that finds one going is dropped. The claim ends when the [`Fetching`]
    /// from [`FetchAhead::claimed`] is dropped.
    pub(crate) fn try_claim(&self) -> bool {
        !self.fetching.swap(true, Ordering::Acquire)
    }

    /// The claimed fetch, to drop when it is done.
    pub(crate) fn claimed(&self) -> Fetching<'_> {
        Fetching(&self.fetching)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_going_forward_keep_the_next_chunks_fetched_and_others_fetch_nothing() {
        let ahead = FetchAhead::default();
        assert_eq!(
            ahead.after_read(100),
            None,
            "the first read follows nothing"
        );
        assert_eq!(ahead.after_read(102), Some(103..119));
        for id in [103, 105, 108, 110] {
            assert_eq!(ahead.after_read(id), None, "{id}: enough fetched ahead");
        }
        assert_eq!(ahead.after_read(111), Some(119..128), "half way: fetch on");
        assert_eq!(ahead.after_read(50), None, "backwards");
        assert_eq!(ahead.after_read(5000), None, "a jump");
        assert_eq!(ahead.after_read(5000), None, "the same chunk again");
        assert_eq!(ahead.after_read(u64::MAX - 2), None, "a jump");
        assert_eq!(
            ahead.after_read(u64::MAX - 1),
            Some(u64::MAX..u64::MAX),
            "nothing past the last id"
        );
        assert_eq!(ahead.after_read(4998), None, "back");
        assert_eq!(
            ahead.after_read(5003),
            Some(5004..5020),
            "forward from the jump"
        );
        assert_eq!(ahead.after_read(3), None, "back to the start");
        assert_eq!(
            ahead.after_read(4),
            Some(5..21),
            "a second pass starts again, although the first fetched further"
        );
    }

    #[test]
    fn one_fetch_runs_at_a_time() {
        let ahead = FetchAhead::default();
        assert!(ahead.try_claim(), "none going");
        assert!(!ahead.try_claim(), "one going");
        drop(ahead.claimed());
        assert!(ahead.try_claim(), "done");
    }
}
