//! What a chunkserver tells the kernel about a chunk file's pages ahead of reading or writing
//! them: fetch these from the disk now (a cold small read needs three places of the file at once),
//! allocate these blocks (a write is about to fill them), start writing these back (a sequential
//! writer completed them). Hints only: where the kernel or the file system refuses one, the reads
//! and writes that follow meet any real error themselves.

use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;

use elkfs_proto::ChunkId;
use elkfs_proto::geometry::{BLOCK_SIZE, BLOCKS_PER_CHUNK};

use crate::header::{FIELDS_LEN, HEADER_SIZE, hash_offset};

const BLOCK: u64 = BLOCK_SIZE as u64;

/// Bytes of a chunk's data after which a sequential writer's pages are sent to disk at once.
const WRITEBACK_UNIT: u64 = 1 << 20;

/// Asks the kernel to start reading, without waiting, the parts of `file` a read of `len` bytes
/// from `offset` needs ([`prefetch_ranges`]), so the disk serves them together. Only a hint:
/// pages already cached are left alone, and a failure is ignored (the reads that follow meet any
/// real error).
pub(crate) fn prefetch(file: &File, offset: u32, len: u32) {
    for (from, to) in prefetch_ranges(offset, len) {
        // SAFETY: posix_fadvise only reads its integer arguments; the descriptor is open.
        unsafe {
            libc::posix_fadvise(
                file.as_raw_fd(),
                from as libc::off_t,
                (to - from) as libc::off_t,
                libc::POSIX_FADV_WILLNEED,
            );
        }
    }
}

/// The file ranges (start, end) a read of `len` bytes from `offset` needs: the header's fields,
/// the hashes of the blocks it touches and those blocks, within the chunk's 64 MiB. Never empty:
/// a zero length would tell the kernel "to the end of the file". Kept apart because one range
/// from the header to the data would fill the unused space between them, a hole, with zero pages.
fn prefetch_ranges(offset: u32, len: u32) -> [(u64, u64); 3] {
    let blocks = u64::from(BLOCKS_PER_CHUNK);
    let first = (u64::from(offset) / BLOCK).min(blocks - 1);
    let end = (u64::from(offset) + u64::from(len))
        .div_ceil(BLOCK)
        .clamp(first + 1, blocks);
    [
        (0, FIELDS_LEN as u64),
        (hash_offset(first as u32), hash_offset(end as u32)),
        (HEADER_SIZE + first * BLOCK, HEADER_SIZE + end * BLOCK),
    ]
}

/// Allocates the disk blocks of data `start..end` before a write that extends the chunk by at
/// least a block fills them. Writing into allocated blocks spares the file system its
/// per-page work of reserving and later allocating each one (ext4's delayed allocation was
/// most of a chunkserver's time in `pwrite` during sequential writes) and keeps the chunk's
/// data contiguous. Exactly the range about to be written: nothing is allocated past the
/// data for a file that then stays short. Only a hint: where the file system cannot
/// allocate ahead, or the disk is full, the write that follows says so itself.
pub(crate) fn allocate(file: &File, chunk: ChunkId, start: u64, end: u64) {
    // SAFETY: fallocate only reads its integer arguments; the descriptor is open.
    let rc = unsafe {
        libc::fallocate(
            file.as_raw_fd(),
            libc::FALLOC_FL_KEEP_SIZE,
            (HEADER_SIZE + start) as libc::off_t,
            (end - start) as libc::off_t,
        )
    };
    if rc != 0 {
        tracing::trace!(
            chunk = %chunk,
            error = %io::Error::last_os_error(),
            "could not allocate a chunk's data ahead of a write"
        );
    }
}

/// Asks the kernel to start writing to disk, without waiting, each [`WRITEBACK_UNIT`] of
/// data that a write of `start..end` completed, and the hashes of its blocks. A file written
/// sequentially then reaches the disk while it is being written, instead of all at once at the
/// `fsync` that follows (or whenever the kernel's dirty page limits are hit). Called only for
/// writes that extend the data: rewrites, and small files, which never fill a unit, are left
/// to the kernel. Only a hint: an error is not the write's.
pub(crate) fn start_writeback(file: &File, chunk: ChunkId, start: u64, end: u64) {
    let from = start / WRITEBACK_UNIT * WRITEBACK_UNIT;
    let to = end / WRITEBACK_UNIT * WRITEBACK_UNIT;
    if to <= from {
        return;
    }
    let hashes_from = hash_offset((from / BLOCK) as u32);
    let hashes_to = hash_offset((to / BLOCK) as u32);
    for (offset, len) in [
        (HEADER_SIZE + from, to - from),
        (hashes_from, hashes_to - hashes_from),
    ] {
        // SAFETY: sync_file_range only reads its arguments; the descriptor is open.
        let rc = unsafe {
            libc::sync_file_range(
                file.as_raw_fd(),
                offset as libc::off64_t,
                len as libc::off64_t,
                libc::SYNC_FILE_RANGE_WRITE,
            )
        };
        if rc != 0 {
            tracing::debug!(
                chunk = %chunk,
                error = %io::Error::last_os_error(),
                "could not start writing back a chunk's data"
            );
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use elkfs_proto::geometry::CHUNK_SIZE;

    #[test]
    fn a_small_read_prefetches_the_header_its_hashes_and_its_blocks() {
        assert_eq!(
            prefetch_ranges(0, 4096),
            [
                (0, 64),
                (4096, 4096 + 32),
                (HEADER_SIZE, HEADER_SIZE + BLOCK)
            ]
        );
        let across = prefetch_ranges(5 * BLOCK as u32 + 60_000, 10_000);
        assert_eq!(across[1], (hash_offset(5), hash_offset(7)));
        assert_eq!(
            across[2],
            (HEADER_SIZE + 5 * BLOCK, HEADER_SIZE + 7 * BLOCK)
        );
    }

    #[test]
    fn prefetched_ranges_are_never_empty_and_stay_inside_the_chunk() {
        let last = (CHUNK_SIZE - 1) as u32;
        for (offset, len) in [(0, 0), (last, 0), (last, u32::MAX - last), (u32::MAX, 0)] {
            for (from, to) in prefetch_ranges(offset, len) {
                assert!(from < to, "{offset} {len}: {from}..{to}");
                assert!(to <= HEADER_SIZE + CHUNK_SIZE, "{offset} {len}: {to}");
            }
        }
    }
}
