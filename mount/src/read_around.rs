//! Reads of less than a block bring the whole 64 KiB block into the kernel's page cache. A
//! chunkserver reads and checks a whole block for any read inside it, so the rest of the block
//! costs one more loopback transfer; the kernel then answers later reads nearby (a program
//! reading at random, a database's pages) without a round trip through the mount and a
//! chunkserver. The kernel asks for small reads only where its own read-ahead does not help:
//! at random, or at the start of a file.
//!
//! The rest of the block goes into the page cache by a FUSE store notification after the reply.
//! A store overwrites whatever the kernel holds there, so it must never carry older data than
//! the kernel has or than an opener is owed:
//! - a write on this mount changes the kernel's pages before the mount hears of it, so nothing is
//!   stored while a handle of the file is open for writing, nor when one was opened or closed
//!   since the read began;
//! - an open drops the kernel's pages (close-to-open consistency), a truncate drops those past
//!   the new end, and attributes with a new length (another mount's change) drop them all, each
//!   after the mount's reply: each waits until stores already going have landed, and later ones
//!   see that the file changed and store nothing. Attributes wait only for a file with a read
//!   around in progress.
//!
//! A store may wait for the kernel's lock on a page that a read in flight holds, so it never runs
//! on the thread that reads the kernel's requests, and nothing that thread runs waits for a store.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use elkfs_proto::InodeId;
use elkfs_proto::geometry::BLOCK_SIZE;
use fuser::{INodeNo, Notifier};

/// The page size of the kernel's cache: stores start on a page.
const PAGE: u64 = 4096;

/// Files are told apart by their inode number modulo this; two files sharing a counter only
/// skip each other's stores now and then.
const COUNTERS: usize = 64;

/// The range to read for a read of `size` bytes at `offset`: its whole block when the read is
/// smaller than a block, lies inside one and is made of whole pages (the kernel's reads into its
/// page cache are).
pub fn block_around(offset: u64, size: u32) -> Option<(u64, u32)> {
    let block = u64::from(BLOCK_SIZE);
    let start = offset - offset % block;
    let pages = offset.is_multiple_of(PAGE) && u64::from(size).is_multiple_of(PAGE) && size > 0;
    let inside = offset + u64::from(size) <= start + block;
    (pages && size < BLOCK_SIZE && inside).then_some((start, BLOCK_SIZE))
}

/// A read's block, split into the part the kernel asked for and the parts it may store.
pub struct AroundRead {
    /// What the kernel asked for (shorter at the end of the file).
    pub asked: Bytes,
    /// The rest of the block, with their offsets in the file.
    pub rest: Vec<(u64, Bytes)>,
}

/// Splits `block` (read at `start`, short at the end of the file) around the `size` bytes at
/// `offset` the kernel asked for.
pub fn split(block: Bytes, start: u64, offset: u64, size: u32) -> AroundRead {
    let from = ((offset - start) as usize).min(block.len());
    let to = (from + size as usize).min(block.len());
    let mut rest = Vec::new();
    if from > 0 {
        rest.push((start, block.slice(..from)));
    }
    if to < block.len() {
        rest.push((start + to as u64, block.slice(to..)));
    }
    AroundRead {
        asked: block.slice(from..to),
        rest,
    }
}

/// What a store of part of a block checks before it lands.
pub struct StoreGate {
    /// Held shared by each store while it lands; an open, a truncate or new attributes for a
    /// file being read around take its file's lock alone after moving its counter, to wait for
    /// the stores going.
    landing: [tokio::sync::RwLock<()>; COUNTERS],
    /// Moves whenever a file's cached pages may have become newer than a store's data.
    changes: [AtomicU64; COUNTERS],
    /// Files with a read around in progress (from before its read until its store is done or
    /// given up), with how many.
    reading: Mutex<HashMap<InodeId, u32>>,
    /// Whether `reading` holds anything, so that most attribute replies need not lock it.
    any_reading: AtomicUsize,
}

impl Default for StoreGate {
    fn default() -> StoreGate {
        StoreGate {
            landing: std::array::from_fn(|_| Default::default()),
            changes: std::array::from_fn(|_| AtomicU64::new(0)),
            reading: Default::default(),
            any_reading: AtomicUsize::new(0),
        }
    }
}

/// A read around in progress: taken before the read, it holds the file's change counter as it
/// was then; dropped when its store is done or given up.
pub struct Around {
    gate: Arc<StoreGate>,
    inode: InodeId,
    seen: u64,
}

impl Drop for Around {
    fn drop(&mut self) {
        let mut reading = self.gate.reading();
        if let Some(n) = reading.get_mut(&self.inode) {
            *n -= 1;
            if *n == 0 {
                reading.remove(&self.inode);
            }
        }
        self.gate.any_reading.fetch_sub(1, Ordering::SeqCst);
    }
}

impl StoreGate {
    fn slot(inode: InodeId) -> usize {
        (inode.0 % COUNTERS as u64) as usize
    }

    /// Where `inode`'s change counter stands: it moves at every open, truncate and close of a
    /// writable handle of the file (and now and then for another file sharing the counter).
    pub fn change_count(&self, inode: InodeId) -> u64 {
        self.changes[Self::slot(inode)].load(Ordering::SeqCst)
    }

    fn reading(&self) -> std::sync::MutexGuard<'_, HashMap<InodeId, u32>> {
        self.reading.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// To be taken before a read whose block may be stored.
    pub fn begin(self: &Arc<Self>, inode: InodeId) -> Around {
        self.any_reading.fetch_add(1, Ordering::SeqCst);
        *self.reading().entry(inode).or_default() += 1;
        Around {
            gate: self.clone(),
            inode,
            seen: self.change_count(inode),
        }
    }

    /// A handle open for writing went away: stores of reads begun before must not land.
    pub fn writer_closed(&self, inode: InodeId) {
        self.changes[Self::slot(inode)].fetch_add(1, Ordering::SeqCst);
    }

    /// `inode` is being opened or truncated: stores of reads begun before do not land, and
    /// those landing now have landed when this returns (before the kernel hears of the change).
    pub async fn changed(&self, inode: InodeId) {
        let slot = Self::slot(inode);
        self.changes[slot].fetch_add(1, Ordering::SeqCst);
        drop(self.landing[slot].write().await);
    }

    /// Whether a read around `inode` is in progress: attributes given to the kernel now must
    /// wait for [`StoreGate::settle`] (a new length makes the kernel drop the file's pages, and
    /// a store landing after that would bring back old ones).
    pub fn busy(&self, inode: InodeId) -> bool {
        self.any_reading.load(Ordering::SeqCst) > 0 && self.reading().contains_key(&inode)
    }

    /// To be awaited before attributes of `inode` go to the kernel: a read around in progress
    /// stores nothing afterwards, and a store landing has landed.
    pub async fn settle(&self, inode: InodeId) {
        if self.busy(inode) {
            self.changed(inode).await;
        }
    }

    /// Runs `store` (which may block) unless the file changed since `around` began or
    /// `writing()` says a handle of it is open for writing; returns whether it ran.
    pub async fn land(
        &self,
        around: Around,
        writing: impl FnOnce() -> bool,
        store: impl FnOnce() + Send + 'static,
    ) -> bool {
        let _landing = self.landing[Self::slot(around.inode)].read().await;
        if self.change_count(around.inode) != around.seen || writing() {
            return false;
        }
        let landed = tokio::task::spawn_blocking(store).await.is_ok();
        drop(around);
        landed
    }
}

/// Puts `rest` (parts of a block read around a small read of the kernel's inode `ino`, which is
/// `around`'s file) into the kernel's page cache, in the background, unless the file changed
/// meanwhile or `writing()` says it is open for writing.
pub fn store(
    gate: Arc<StoreGate>,
    around: Around,
    writing: impl FnOnce() -> bool + Send + 'static,
    ino: INodeNo,
    rest: Vec<(u64, Bytes)>,
    notifier: Notifier,
) {
    tokio::spawn(async move {
        let inode = around.inode;
        let store = move || {
            for (at, data) in rest {
                // The kernel ignores a store for a file it has forgotten.
                if let Err(e) = notifier.store(ino, at, &data) {
                    tracing::debug!(%inode, error = %e, "cannot store a block in the page cache");
                    return;
                }
            }
        };
        gate.land(around, writing, store).await;
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    const K: u64 = 1024;

    #[test]
    fn only_page_aligned_reads_smaller_than_a_block_and_inside_one_read_around() {
        assert_eq!(block_around(0, 4096), Some((0, BLOCK_SIZE)));
        assert_eq!(block_around(68 * K, 8192), Some((64 * K, BLOCK_SIZE)));
        assert_eq!(block_around(60 * K, 4096), Some((0, BLOCK_SIZE)));
        assert_eq!(block_around(0, BLOCK_SIZE), None);
        assert_eq!(block_around(0, 128 * 1024), None);
        assert_eq!(block_around(60 * K, 8192), None, "across two blocks");
        assert_eq!(block_around(100, 4096), None, "not on a page");
        assert_eq!(block_around(0, 1000), None, "not whole pages");
        assert_eq!(block_around(4096, 0), None);
    }

    #[test]
    fn a_block_splits_into_the_asked_part_and_the_rest() {
        let block = Bytes::from((0..64 * K).map(|i| i as u8).collect::<Vec<_>>());
        let r = split(block.clone(), 64 * K, 72 * K, 4096);
        assert_eq!(r.asked, block.slice(8192..12288));
        assert_eq!(r.rest.len(), 2);
        assert_eq!(r.rest[0], (64 * K, block.slice(..8192)));
        assert_eq!(r.rest[1], (76 * K, block.slice(12288..)));

        let short = block.slice(..10_000);
        let r = split(short.clone(), 0, 8192, 4096);
        assert_eq!(r.asked, short.slice(8192..));
        assert_eq!(r.rest, vec![(0, short.slice(..8192))]);

        let r = split(short.clone(), 0, 12288, 4096);
        assert!(r.asked.is_empty(), "past the end of the file");
        assert_eq!(r.rest, vec![(0, short)]);
    }

    #[tokio::test]
    async fn a_store_lands_only_if_nothing_changed_since_its_read_began() {
        let gate = Arc::new(StoreGate::default());
        let f = InodeId(7);
        assert!(gate.land(gate.begin(f), || false, || {}).await);
        assert!(
            !gate.land(gate.begin(f), || true, || {}).await,
            "a writer is open"
        );
        let around = gate.begin(f);
        gate.writer_closed(f);
        assert!(!gate.land(around, || false, || {}).await, "a writer closed");
        let around = gate.begin(f);
        gate.changed(f).await;
        assert!(!gate.land(around, || false, || {}).await, "opened again");
        let around = gate.begin(f);
        gate.settle(f).await;
        assert!(!gate.land(around, || false, || {}).await, "attributes sent");
        assert!(gate.land(gate.begin(f), || false, || {}).await);
    }

    #[tokio::test]
    async fn only_a_file_being_read_around_is_busy() {
        let gate = Arc::new(StoreGate::default());
        let (f, g) = (InodeId(7), InodeId(8));
        assert!(!gate.busy(f));
        let first = gate.begin(f);
        let second = gate.begin(f);
        assert!(gate.busy(f) && !gate.busy(g));
        drop(first);
        assert!(gate.busy(f));
        gate.land(second, || false, || {}).await;
        assert!(!gate.busy(f));
        assert_eq!(gate.any_reading.load(Ordering::SeqCst), 0);
    }

    #[tokio::test]
    async fn an_open_waits_for_a_store_landing_but_not_for_another_file_s() {
        let gate = Arc::new(StoreGate::default());
        let f = InodeId(7);
        let (release, held) = std::sync::mpsc::channel::<()>();
        let landing = {
            let around = gate.begin(f);
            let gate = gate.clone();
            tokio::spawn(async move {
                gate.land(around, || false, move || held.recv().unwrap())
                    .await
            })
        };
        while gate.landing[StoreGate::slot(f)].try_write().is_ok() {
            tokio::task::yield_now().await;
        }
        gate.changed(InodeId(8)).await;
        let opening = {
            let gate = gate.clone();
            tokio::spawn(async move { gate.changed(f).await })
        };
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        assert!(!opening.is_finished(), "the open must wait for the store");
        release.send(()).unwrap();
        assert!(landing.await.unwrap());
        opening.await.unwrap();
    }
}
