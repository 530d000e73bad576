//! A small file opened for reading is read from its chunkserver as soon as the master has
//! answered the open, while the kernel is still busy with the open's reply and the attributes
//! it asks for next. The first read through that handle then waits for that read instead of
//! starting its own: a program that opens a small file and reads it (`cp`, `cat`, a compiler, a
//! web server) waits for one chunkserver round trip less than the sum of both.
//!
//! The data is the file as of its open, which close-to-open consistency owes the reader. It is
//! started and used only while nothing on this mount changed the file since the open
//! (`Ops::unchanged_since_open`: no other open, which may bring newer data into the page cache
//! the handles share, no truncate or close of a writable handle, no handle open for writing).
//! Otherwise the read is made as usual.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use bytes::Bytes;
use elkfs_client::Client;
use elkfs_proto::geometry::BLOCK_SIZE;
use elkfs_proto::{InodeId, Status};
use tokio::task::JoinHandle;

/// Files up to this length are read at their open: one block, which is what a chunkserver
/// reads and checks for any read inside it.
pub const LARGEST_FILE: u64 = BLOCK_SIZE as u64;

/// Reads at open waiting for their handle's first read, at most: a program that opens many
/// small files without reading them holds no more than this many blocks in memory.
const MOST_WAITING: usize = 256;

/// The reads at open of a mount.
#[derive(Default)]
pub struct EarlyReads {
    waiting: Arc<AtomicUsize>,
}

/// A small file's read started at its open, for the handle's first read.
pub struct EarlyRead {
    inode: InodeId,
    task: JoinHandle<Result<Bytes, Status>>,
    waiting: Arc<AtomicUsize>,
}

impl Drop for EarlyRead {
    fn drop(&mut self) {
        self.task.abort();
        self.waiting.fetch_sub(1, Ordering::Relaxed);
    }
}

impl EarlyReads {
    /// Starts reading `inode`, just opened for reading with `length` bytes and unchanged on
    /// this mount since, unless it is empty or larger than [`LARGEST_FILE`], or too many reads
    /// at open are waiting already.
    pub fn start(&self, client: &Arc<Client>, inode: InodeId, length: u64) -> Option<EarlyRead> {
        if length == 0 || length > LARGEST_FILE {
            return None;
        }
        if self.waiting.fetch_add(1, Ordering::Relaxed) >= MOST_WAITING {
            self.waiting.fetch_sub(1, Ordering::Relaxed);
            return None;
        }
        let reader = client.clone();
        let task = tokio::spawn(async move { reader.read(inode, 0, BLOCK_SIZE).await });
        Some(EarlyRead {
            inode,
            task,
            waiting: self.waiting.clone(),
        })
    }
}

impl EarlyRead {
    /// The `size` bytes at `offset` (fewer at the end of the file), if the read at open
    /// succeeded and `unchanged()` says the file has not changed on this mount since the open,
    /// once the data is here; `None` means the read is to be made as usual.
    pub async fn answer(
        mut self,
        unchanged: impl FnOnce() -> bool,
        offset: u64,
        size: u32,
    ) -> Option<Bytes> {
        let data = match (&mut self.task).await {
            Ok(Ok(data)) => data,
            Ok(Err(status)) => {
                tracing::debug!(inode = %self.inode, %status, "a read at open failed; reading again");
                return None;
            }
            Err(_) => return None,
        };
        unchanged().then(|| slice(&data, offset, size))
    }
}

/// The part of `data` (a file's first bytes up to its end) that a read of `size` bytes at
/// `offset` returns.
fn slice(data: &Bytes, offset: u64, size: u32) -> Bytes {
    let len = data.len() as u64;
    let from = offset.min(len);
    let to = offset.saturating_add(u64::from(size)).min(len);
    data.slice(from as usize..to as usize)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_read_gets_the_part_of_the_file_it_covers_and_nothing_past_its_end() {
        let data = Bytes::from((0..10_000u32).map(|i| i as u8).collect::<Vec<_>>());
        assert_eq!(slice(&data, 0, 4096), data.slice(..4096));
        assert_eq!(slice(&data, 8192, 4096), data.slice(8192..));
        assert_eq!(slice(&data, 0, 131_072), data);
        assert!(slice(&data, 10_000, 4096).is_empty());
        assert!(slice(&data, 12_288, 4096).is_empty());
        assert!(slice(&data, u64::MAX - 1, 4096).is_empty());
    }
}
