//! Chunks read one after another in the order of their ids get the next ones fetched from the
//! disk ahead of their reads. The master numbers chunks as files get them, so the chunks of
//! files written together have neighbouring ids, and programs often read files back in the order
//! they were written (`cp -r`, `tar`, a backup's check, a build reading its sources): for small
//! files each read is otherwise one disk round trip after the other. Only the first block of
//! each following chunk (its header fields, that block's hashes and the block) is asked for,
//! as a hint the kernel serves in the background.
//!
//! Reads by one program reach a server interleaved with the other servers' share of the chunks,
//! so a read counts as following the one before if its id is at most [`MAX_GAP`] higher. A few
//! readers going forward at once, in different parts of the ids (two copies, a build's jobs),
//! are followed each on its own ([`STREAMS`]).

use std::ops::Range;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};

/// The largest step in ids between two reads still taken for one reader going forward.
const MAX_GAP: u64 = 8;

/// How many ids past a following read are kept fetched.
const AHEAD: u64 = 16;

/// Readers followed at once; a read that follows none of them replaces the one followed least
/// recently.
const STREAMS: usize = 4;

/// The readers followed, and whether a fetch is going on.
#[derive(Default)]
pub(crate) struct FetchAhead {
    streams: Mutex<Streams>,
    fetching: AtomicBool,
}

#[derive(Default)]
struct Streams {
    streams: [Stream; STREAMS],
    /// Counts reads, to tell which stream was followed least recently.
    clock: u64,
}

/// One reader going forward: where it read last and how far ahead of it chunks are fetched.
#[derive(Clone, Copy, Default)]
struct Stream {
    last_read: u64,
    fetched_until: u64,
    used: u64,
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
    /// a reader's read before and the chunks fetched ahead of that reader run out within half
    /// of [`AHEAD`].
    pub(crate) fn after_read(&self, id: u64) -> Option<Range<u64>> {
        let mut all = self.streams.lock().unwrap_or_else(|p| p.into_inner());
        all.clock += 1;
        let now = all.clock;
        let following = all
            .streams
            .iter()
            .position(|s| s.last_read < id && id - s.last_read <= MAX_GAP);
        let Some(index) = following else {
            if let Some(same) = all.streams.iter_mut().find(|s| s.last_read == id) {
                same.used = now;
            } else if let Some(oldest) = all.streams.iter_mut().min_by_key(|s| s.used) {
                *oldest = Stream {
                    last_read: id,
                    fetched_until: 0,
                    used: now,
                };
            }
            return None;
        };
        let stream = &mut all.streams[index];
        stream.last_read = id;
        stream.used = now;
        let to = id.saturating_add(1 + AHEAD);
        let until = stream.fetched_until;
        // A window that does not reach past this read, or lies beyond the one it would open,
        // was fetched for another pass through the ids.
        let from = if until <= id || until > to {
            id + 1
        } else if until > id + AHEAD / 2 {
            return None;
        } else {
            until
        };
        stream.fetched_until = to;
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
    fn readers_going_forward_in_different_places_at_once_are_each_followed() {
        let ahead = FetchAhead::default();
        let mut fetched = Vec::new();
        for step in 0..40u64 {
            for start in [1_000, 50_000, 900_000] {
                fetched.extend(ahead.after_read(start + step));
            }
        }
        for start in [1_000, 50_000, 900_000] {
            assert!(
                fetched.iter().any(|r| r.contains(&(start + 30))),
                "the reader from {start} was not followed: {fetched:?}"
            );
        }
        // A fourth reader takes the stream left; the first three are still followed.
        assert_eq!(ahead.after_read(7_000_000), None);
        assert_eq!(ahead.after_read(7_000_001), Some(7_000_002..7_000_018));
        fetched.clear();
        for step in 40..60u64 {
            for start in [1_000, 50_000, 900_000] {
                fetched.extend(ahead.after_read(start + step));
            }
        }
        for start in [1_000, 50_000, 900_000] {
            assert!(
                fetched.iter().any(|r| r.contains(&(start + 70))),
                "the reader from {start} was dropped: {fetched:?}"
            );
        }
        // A fifth pushes out the one followed least recently: the fourth.
        assert_eq!(ahead.after_read(3_000_000), None);
        assert_eq!(ahead.after_read(7_000_002), None, "no longer followed");
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
