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
    /// a reader's read before, the chunks fetched ahead of that reader run out within half of
    /// [`AHEAD`], and the fetch could be claimed ([`FetchAhead::try_claim`]; whoever gets a
    /// range must drop [`FetchAhead::claimed`] when done).
    pub(crate) fn after_read(&self, id: u64) -> Option<Range<u64>> {
        let mut all = self.streams.lock().unwrap_or_else(|p| p.into_inner());
        all.clock += 1;
        let now = all.clock;
        // The same chunk again, or one a little behind a reader (its reads arriving out of
        // order): that reader, with nothing new to fetch.
        if let Some(near) = all
            .streams
            .iter_mut()
            .find(|s| s.last_read >= id && s.last_read - id <= MAX_GAP)
        {
            near.used = now;
            return None;
        }
        // The reader closest behind this read, if one is near enough to be it.
        let following = all
            .streams
            .iter()
            .enumerate()
            .filter(|(_, s)| s.last_read < id && id - s.last_read <= MAX_GAP)
            .max_by_key(|(_, s)| s.last_read)
            .map(|(index, _)| index);
        let Some(index) = following else {
            if let Some(oldest) = all.streams.iter_mut().min_by_key(|s| s.used) {
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
        let next = id.saturating_add(1);
        let to = next.saturating_add(AHEAD);
        let until = stream.fetched_until;
        // A window that does not reach past this read, or lies beyond the one it would open,
        // was fetched for another pass through the ids.
        let from = if until <= id || until > to {
            next
        } else if until > id.saturating_add(AHEAD / 2) {
            return None;
        } else {
            until
        };
        // A window not fetched now (one is going) is asked for again at the next read.
        if !self.try_claim() {
            return None;
        }
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

    /// `after_read`, with the fetch it claims (if any) done at once.
    fn read(ahead: &FetchAhead, id: u64) -> Option<Range<u64>> {
        let ids = ahead.after_read(id);
        if ids.is_some() {
            drop(ahead.claimed());
        }
        ids
    }

    #[test]
    fn reads_going_forward_keep_the_next_chunks_fetched_and_others_fetch_nothing() {
        let ahead = FetchAhead::default();
        assert_eq!(read(&ahead, 100), None, "the first read follows nothing");
        assert_eq!(read(&ahead, 102), Some(103..119));
        for id in [103, 105, 108, 110] {
            assert_eq!(read(&ahead, id), None, "{id}: enough fetched ahead");
        }
        assert_eq!(read(&ahead, 111), Some(119..128), "half way: fetch on");
        assert_eq!(read(&ahead, 50), None, "backwards");
        assert_eq!(read(&ahead, 5000), None, "a jump");
        assert_eq!(read(&ahead, 5000), None, "the same chunk again");
        assert_eq!(read(&ahead, u64::MAX - 2), None, "a jump");
        assert_eq!(
            read(&ahead, u64::MAX - 1),
            Some(u64::MAX..u64::MAX),
            "nothing past the last id"
        );
        assert_eq!(read(&ahead, 4998), None, "back");
        assert_eq!(
            read(&ahead, 5003),
            Some(5004..5020),
            "forward from the jump"
        );
        assert_eq!(read(&ahead, 3), None, "back to the start");
        assert_eq!(
            read(&ahead, 4),
            Some(5..21),
            "a second pass starts again, although the first fetched further"
        );
    }

    const READERS: [u64; 3] = [1_000, 50_000, 900_000];

    /// Three readers going forward together through `steps`; asserts that each had the id
    /// `fetched_at` past its start fetched.
    fn three_readers(ahead: &FetchAhead, steps: Range<u64>, fetched_at: u64) {
        let mut fetched = Vec::new();
        for step in steps {
            for start in READERS {
                fetched.extend(read(ahead, start + step));
            }
        }
        for start in READERS {
            assert!(
                fetched.iter().any(|r| r.contains(&(start + fetched_at))),
                "the reader from {start} was not followed: {fetched:?}"
            );
        }
    }

    #[test]
    fn readers_going_forward_in_different_places_at_once_are_each_followed() {
        let ahead = FetchAhead::default();
        three_readers(&ahead, 0..40, 30);
        // A fourth reader takes the stream left; the first three are still followed.
        assert_eq!(read(&ahead, 7_000_000), None);
        assert_eq!(read(&ahead, 7_000_001), Some(7_000_002..7_000_018));
        three_readers(&ahead, 40..60, 70);
        // A fifth pushes out the one followed least recently: the fourth.
        assert_eq!(read(&ahead, 3_000_000), None);
        assert_eq!(read(&ahead, 7_000_002), None, "no longer followed");
    }

    #[test]
    fn one_fetch_runs_at_a_time_and_a_window_not_fetched_is_asked_for_again() {
        let ahead = FetchAhead::default();
        assert_eq!(ahead.after_read(100), None);
        assert_eq!(ahead.after_read(101), Some(102..118), "claimed");
        assert!(!ahead.try_claim(), "one going");
        assert_eq!(ahead.after_read(2000), None);
        assert_eq!(ahead.after_read(2001), None, "one going: not fetched");
        drop(ahead.claimed());
        assert_eq!(
            ahead.after_read(2002),
            Some(2003..2019),
            "the window not fetched is asked for at the next read"
        );
        drop(ahead.claimed());
        assert!(ahead.try_claim(), "done");
    }

    #[test]
    fn reads_a_little_out_of_order_or_repeated_stay_with_their_reader() {
        let ahead = FetchAhead::default();
        assert_eq!(read(&ahead, 100), None);
        assert_eq!(read(&ahead, 102), Some(103..119));
        assert_eq!(read(&ahead, 101), None, "behind, out of order");
        assert_eq!(read(&ahead, 102), None, "again");
        assert_eq!(read(&ahead, 103), None, "fetched ahead already");
        let streams = ahead.streams.lock().unwrap();
        let near = streams
            .streams
            .iter()
            .filter(|s| (100..=110).contains(&s.last_read))
            .count();
        assert_eq!(near, 1, "one reader, one stream");
    }
}
