//! Which blocks of which chunks were read lately by large reads, so that data read again soon
//! goes through the page cache. A large read of data the cache does not hold goes to the disk
//! directly (`direct_read.rs`) and leaves nothing in memory; that suits data read once (a file
//! streamed, a copy made) but not data several readers want in turn (one file read by many
//! mounts, each with its own cache). So a second large read of a block within [`WINDOW`] of the
//! first is read through the page cache, and a third finds it there.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use elkfs_proto::ChunkId;
use elkfs_proto::geometry::{BLOCK_SIZE, CHUNK_SIZE};

/// How long a block counts as read lately: long enough for a data set read over and over (a
/// training set's passes, a file each of several clients reads in turn) to be cached from its
/// second reading on.
pub(crate) const WINDOW: Duration = Duration::from_secs(600);

/// Chunks remembered at most; past it at least the quarter read longest ago is forgotten (at worst a
/// re-read of theirs goes to the disk once more). About 300 bytes each.
const CHUNKS: usize = 4096;

/// Blocks in a chunk, one bit each.
const BLOCKS: usize = (CHUNK_SIZE / BLOCK_SIZE as u64) as usize;

/// The blocks of each chunk read lately.
#[derive(Default)]
pub(crate) struct RecentReads {
    chunks: Mutex<HashMap<ChunkId, ChunkReads>>,
}

/// The blocks of one chunk read since `since` (`current`), and in the window before
/// (`previous`): a block read is remembered for at least a window and at most two.
struct ChunkReads {
    since: Instant,
    /// The last read noted.
    last: Instant,
    current: [u64; BLOCKS / 64],
    previous: [u64; BLOCKS / 64],
}

impl ChunkReads {
    fn new(now: Instant) -> ChunkReads {
        ChunkReads {
            since: now,
            last: now,
            current: [0; BLOCKS / 64],
            previous: [0; BLOCKS / 64],
        }
    }

    /// Forgets what is older than it must remember at `now`.
    fn age(&mut self, now: Instant) {
        let age = now.saturating_duration_since(self.since);
        if age >= 2 * WINDOW {
            *self = ChunkReads::new(now);
        } else if age >= WINDOW {
            self.previous = self.current;
            self.current = [0; BLOCKS / 64];
            self.since = now;
        }
    }
}

impl RecentReads {
    /// Notes a large read of `len` bytes at `offset` of chunk `id` at `now`, and says whether a
    /// block it covers whole was read within the window before: then it is read again, and
    /// should go through the page cache.
    pub(crate) fn read_again(&self, id: ChunkId, offset: u32, len: u32, now: Instant) -> bool {
        let block = u64::from(BLOCK_SIZE);
        let first = u64::from(offset).div_ceil(block) as usize;
        let end = ((u64::from(offset) + u64::from(len)) / block).min(BLOCKS as u64) as usize;
        if first >= end {
            return false;
        }
        let mut chunks = self.chunks.lock().unwrap_or_else(|p| p.into_inner());
        if chunks.len() >= CHUNKS && !chunks.contains_key(&id) {
            forget_oldest_quarter(&mut chunks);
        }
        let reads = chunks.entry(id).or_insert_with(|| ChunkReads::new(now));
        reads.age(now);
        reads.last = reads.last.max(now);
        let mut again = false;
        for b in first..end {
            let (word, bit) = (b / 64, 1u64 << (b % 64));
            again |= (reads.current[word] | reads.previous[word]) & bit != 0;
            reads.current[word] |= bit;
        }
        again
    }
}

/// Forgets the quarter of the chunks whose last read is oldest.
fn forget_oldest_quarter(chunks: &mut HashMap<ChunkId, ChunkReads>) {
    let mut last: Vec<Instant> = chunks.values().map(|reads| reads.last).collect();
    let Some(quarter) = (last.len() / 4).checked_sub(1) else {
        chunks.clear();
        return;
    };
    let (_, &mut cut, _) = last.select_nth_unstable(quarter);
    chunks.retain(|_, reads| reads.last > cut);
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIB: u32 = 1 << 20;

    #[test]
    fn a_stream_of_reads_is_never_read_again_but_a_second_pass_is() {
        let reads = RecentReads::default();
        let t = Instant::now();
        let id = ChunkId(7);
        for i in 0..64 {
            assert!(!reads.read_again(id, i * MIB, MIB, t), "piece {i}");
        }
        assert!(reads.read_again(id, 5 * MIB, MIB, t + Duration::from_secs(1)));
        assert!(
            !reads.read_again(ChunkId(8), 5 * MIB, MIB, t),
            "another chunk"
        );
    }

    #[test]
    fn neighbouring_unaligned_reads_share_no_whole_block() {
        let reads = RecentReads::default();
        let t = Instant::now();
        let id = ChunkId(1);
        let block = BLOCK_SIZE;
        assert!(!reads.read_again(id, 100, 4 * block, t));
        assert!(!reads.read_again(id, 4 * block + 100, 4 * block, t));
        assert!(
            reads.read_again(id, 2 * block, block, t),
            "block 2 was read whole"
        );
        assert!(!reads.read_again(id, 100, 100, t), "covers no block whole");
    }

    #[test]
    fn a_block_is_remembered_for_at_least_a_window_and_at_most_two() {
        let reads = RecentReads::default();
        let t = Instant::now();
        let s = Duration::from_secs(1);
        assert!(!reads.read_again(ChunkId(1), 0, MIB, t));
        assert!(!reads.read_again(ChunkId(1), MIB, MIB, t + WINDOW - s));
        assert!(
            reads.read_again(ChunkId(1), MIB, MIB, t + 2 * WINDOW - 2 * s),
            "remembered across the turn of a window"
        );
        assert!(
            !reads.read_again(ChunkId(1), 0, MIB, t + 4 * WINDOW),
            "forgotten"
        );
        assert!(
            !reads.read_again(ChunkId(1), MIB, MIB, t + 4 * WINDOW),
            "forgotten"
        );
    }

    #[test]
    fn past_its_size_the_memory_forgets_the_chunks_read_longest_ago() {
        let reads = RecentReads::default();
        let t = Instant::now();
        let ms = Duration::from_millis(1);
        assert!(!reads.read_again(ChunkId(1), 0, MIB, t));
        assert!(!reads.read_again(ChunkId(2), 0, MIB, t + ms));
        for i in 0..CHUNKS as u64 - 2 {
            reads.read_again(ChunkId(100 + i), 0, MIB, t + 2 * ms);
        }
        assert!(
            reads.read_again(ChunkId(1), 0, MIB, t + 3 * ms),
            "still known"
        );
        assert!(!reads.read_again(ChunkId(3), 0, MIB, t + 4 * ms));
        assert!(
            !reads.read_again(ChunkId(2), 0, MIB, t + 5 * ms),
            "read longest ago: forgotten"
        );
        assert!(
            reads.read_again(ChunkId(1), 0, MIB, t + 6 * ms),
            "read lately: kept"
        );
        assert!(reads.chunks.lock().unwrap().len() <= CHUNKS);
    }
}
