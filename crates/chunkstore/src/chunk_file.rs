//! One open chunk file: checks its header, reads blocks verified against their hashes, and writes
//! data together with the hashes of every block it touches. Knows nothing of locks or the index
//! (that is `store.rs`); every method assumes the caller holds the chunk's lock.

use std::cmp::{max, min};
use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use bytes::Bytes;

use elkfs_proto::geometry::BLOCK_SIZE;
use elkfs_proto::{ChunkId, ChunkVersion};

use crate::direct_read;
use crate::direct_write;
use crate::error::ChunkError;
use crate::header::{
    BlockHash, FIELDS_LEN, HASH_LEN, HEADER_SIZE, Header, block_hash, hash_offset, zero_block_hash,
    zeros,
};
use crate::nowait;
use crate::page_hints;

const BLOCK: u64 = BLOCK_SIZE as u64;

/// Blocks verified per read while checking a whole chunk (1 MiB at a time).
const VERIFY_BATCH: u32 = 16;

/// An open chunk file whose header has been checked.
pub(crate) struct ChunkFile {
    file: File,
    path: PathBuf,
    header: Header,
    /// Opened by [`ChunkFile::open_cached`]: read-only, and every read fails with `WouldBlock`
    /// rather than wait for the disk.
    cached_only: bool,
}

impl ChunkFile {
    /// Creates a new empty chunk file (header only); `AlreadyExists` if the file is there.
    pub fn create(
        path: PathBuf,
        id: ChunkId,
        version: ChunkVersion,
    ) -> Result<ChunkFile, ChunkError> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .open(&path)
            .map_err(|e| match e.kind() {
                io::ErrorKind::AlreadyExists => ChunkError::AlreadyExists { chunk: id },
                _ => ChunkError::io(id, &path, e),
            })?;
        ChunkFile::init(file, path, id, version)
    }

    /// Makes the empty file `file`, just created or put in place at `path`, a new empty chunk
    /// (header only); removes it if that fails.
    pub fn init(
        file: File,
        path: PathBuf,
        id: ChunkId,
        version: ChunkVersion,
    ) -> Result<ChunkFile, ChunkError> {
        let mut chunk = ChunkFile {
            file,
            path,
            header: Header {
                id,
                version,
                length: 0,
            },
            cached_only: false,
        };
        let written = chunk.store_header(chunk.header).and_then(|()| {
            chunk
                .file
                .set_len(HEADER_SIZE)
                .map_err(|e| chunk.io_error(e))
        });
        if let Err(e) = written {
            // A half-made file would be found as a damaged chunk at the next start.
            let _ = std::fs::remove_file(&chunk.path);
            return Err(e);
        }
        Ok(chunk)
    }

    /// Opens the file of chunk `id` named with `version` and checks its header. A header version
    /// that disagrees with the name (a crash amid a version change) is set to the name's.
    pub fn open(
        path: PathBuf,
        id: ChunkId,
        version: ChunkVersion,
    ) -> Result<ChunkFile, ChunkError> {
        let file = open_existing(&path, id)?;
        ChunkFile::opened(file, path, id, version)
    }

    /// Checks the header of `file`, just opened at `path`, and sets its version to `version`
    /// (the name's) if it disagrees.
    fn opened(
        file: File,
        path: PathBuf,
        id: ChunkId,
        version: ChunkVersion,
    ) -> Result<ChunkFile, ChunkError> {
        let mut chunk = ChunkFile::checked(file, path, id, false)?;
        if chunk.header.version != version {
            tracing::warn!(
                chunk = %id,
                path = %chunk.path.display(),
                header_version = %chunk.header.version,
                "chunk header version disagrees with the file name; setting it to the name's"
            );
            chunk.store_header(Header {
                version,
                ..chunk.header
            })?;
        }
        Ok(chunk)
    }

    /// [`ChunkFile::open`] for a read of `len` bytes from `offset`, after asking the kernel to
    /// fetch from the disk, all at once, every part of the file that read needs: the header, the
    /// blocks' hashes and the blocks. Read one after another, a small read of a cold chunk cost
    /// two or three disk round trips (the data lies 64 KiB past the header, beyond what the
    /// kernel reads ahead of it).
    pub fn open_prefetching(
        path: PathBuf,
        id: ChunkId,
        version: ChunkVersion,
        offset: u32,
        len: u32,
    ) -> Result<ChunkFile, ChunkError> {
        let file = open_existing(&path, id)?;
        page_hints::prefetch(&file, offset, len);
        ChunkFile::opened(file, path, id, version)
    }

    /// Like [`ChunkFile::open`], for reading only and without waiting for the disk: the path,
    /// the header and later every block and hash read must be in the kernel's caches, or the
    /// operation fails with an `Io` error of kind `WouldBlock`. A header that needs its version
    /// set (a write) fails the same way.
    pub fn open_cached(
        path: PathBuf,
        id: ChunkId,
        version: ChunkVersion,
    ) -> Result<ChunkFile, ChunkError> {
        let file =
            nowait::open_if_cached(&path).map_err(|e| ChunkError::io_opening(id, &path, e))?;
        let chunk = ChunkFile::checked(file, path, id, true)?;
        if chunk.header.version != version {
            return Err(chunk.io_error(io::ErrorKind::WouldBlock.into()));
        }
        Ok(chunk)
    }

    /// Reads and checks the header of `file`, the file of chunk `id`.
    fn checked(
        file: File,
        path: PathBuf,
        id: ChunkId,
        cached_only: bool,
    ) -> Result<ChunkFile, ChunkError> {
        let mut bytes = Vec::new();
        read_appending(&file, &mut bytes, FIELDS_LEN, 0, cached_only)
            .map_err(|e| ChunkError::io(id, &path, e))?;
        let Ok(fields) = <&[u8; FIELDS_LEN]>::try_from(bytes.as_slice()) else {
            return Err(ChunkError::bad_header(
                id,
                &path,
                "the file is shorter than its header",
            ));
        };
        let header =
            Header::decode(fields).map_err(|reason| ChunkError::bad_header(id, &path, reason))?;
        if header.id != id {
            return Err(ChunkError::bad_header(
                id,
                &path,
                format!("it names chunk {}", header.id),
            ));
        }
        Ok(ChunkFile {
            file,
            path,
            header,
            cached_only,
        })
    }

    /// Bytes of data in the chunk.
    pub fn length(&self) -> u32 {
        self.header.length
    }

    /// Up to `len` bytes from `offset`, fewer at the end of the data; checks every block touched.
    /// With `direct`, a large range the page cache holds next to nothing of is read from the
    /// disk directly (`direct_read.rs`). The bytes are a slice of the buffer the blocks were
    /// read into, not a copy.
    pub fn read(&self, offset: u32, len: u32, direct: bool) -> Result<Bytes, ChunkError> {
        let start = u64::from(offset);
        let end = min(start + u64::from(len), u64::from(self.header.length));
        if start >= end {
            return Ok(Bytes::new());
        }
        let first = offset / BLOCK_SIZE;
        let last = ((end - 1) / BLOCK) as u32;
        let mut buf = Vec::new();
        let data_at = self.read_blocks(first, last, &mut buf, direct)?;
        let skip = data_at + (start - u64::from(first) * BLOCK) as usize;
        let wanted = (end - start) as usize;
        Ok(Bytes::from(buf).slice(skip..skip + wanted))
    }

    /// Reads and checks every block; returns the bytes checked. `direct` as in [`ChunkFile::read`].
    pub fn verify(&self, direct: bool) -> Result<u64, ChunkError> {
        let blocks = blocks_holding(u64::from(self.header.length));
        let mut buf = Vec::new();
        for first in (0..blocks).step_by(VERIFY_BATCH as usize) {
            let last = min(first + VERIFY_BATCH, blocks) - 1;
            self.read_blocks(first, last, &mut buf, direct)?;
        }
        Ok(u64::from(self.header.length))
    }

    /// Writes `data` at `offset` (the caller has checked it fits in a chunk), extending the length
    /// if it ends past it; a gap before `offset` reads as zeros. Blocks the write covers whole are
    /// hashed from `data` alone; only a partly covered block holding older data is read (and
    /// checked) first. With `direct`, the aligned middle of a large write past the old end goes
    /// to the disk directly (`direct_write.rs`).
    pub fn write(&mut self, offset: u32, data: &[u8], direct: bool) -> Result<(), ChunkError> {
        if data.is_empty() {
            return Ok(());
        }
        let old_len = u64::from(self.header.length);
        let start = u64::from(offset);
        let end = start + data.len() as u64;
        let new_len = max(old_len, end);
        let first = (min(old_len, start) / BLOCK) as u32;
        let last = ((end - 1) / BLOCK) as u32;

        let mut hashes = Vec::with_capacity((last - first + 1) as usize * HASH_LEN);
        let mut scratch = Vec::new();
        for block in first..=last {
            let block_start = u64::from(block) * BLOCK;
            let block_end = min(block_start + BLOCK, new_len);
            let hash = if block_start >= start && block_end <= end {
                block_hash(&data[(block_start - start) as usize..(block_end - start) as usize])
            } else if block_start >= old_len && block_end <= start {
                zero_block_hash()
            } else {
                self.compose_block(block, block_end, start, data, &mut scratch)?;
                block_hash(&scratch)
            };
            hashes.extend_from_slice(&hash);
        }

        if start > old_len {
            // Whatever a crash left past the old end must not show through the gap.
            self.file
                .set_len(HEADER_SIZE + old_len)
                .map_err(|e| self.io_error(e))?;
        }
        let new_data = max(start, old_len);
        if end >= new_data + BLOCK {
            page_hints::allocate(&self.file, self.header.id, new_data, end);
        }
        // Only data wholly past the old end goes directly: until the header's new length is on
        // disk, a crash leaves it outside the chunk. Data over older data stays in the page
        // cache with its hashes, so a crash cannot put new bytes on disk under old hashes.
        let stored = if direct && start >= old_len {
            direct_write::write_all_at(&self.file, data, HEADER_SIZE + start)
        } else {
            self.file.write_all_at(data, HEADER_SIZE + start)
        };
        stored.map_err(|e| self.io_error(e))?;
        self.file
            .write_all_at(&hashes, hash_offset(first))
            .map_err(|e| self.io_error(e))?;
        if new_len != old_len {
            self.store_header(Header {
                length: new_len as u32,
                ..self.header
            })?;
        }
        if end > old_len {
            page_hints::start_writeback(&self.file, self.header.id, start, end);
        }
        Ok(())
    }

    /// Sets the data length (dropping data past it, or adding zeros) and the header's version.
    pub fn resize(&mut self, length: u32, version: ChunkVersion) -> Result<(), ChunkError> {
        let old_len = u64::from(self.header.length);
        let new_len = u64::from(length);
        if new_len < old_len {
            self.shrink(old_len, new_len)?;
        } else if new_len > old_len {
            self.grow(old_len, new_len)?;
        }
        self.store_header(Header {
            id: self.header.id,
            version,
            length,
        })
    }

    /// Sets the header's version (the caller renames the file after).
    pub fn set_version(&mut self, version: ChunkVersion) -> Result<(), ChunkError> {
        self.store_header(Header {
            version,
            ..self.header
        })
    }

    /// Makes this file (a byte copy of another chunk's) the chunk `id` at `version`.
    pub fn retag(&mut self, id: ChunkId, version: ChunkVersion) -> Result<(), ChunkError> {
        self.store_header(Header {
            id,
            version,
            ..self.header
        })
    }

    /// New content of a block partly covered by a write: its surviving older bytes (read and
    /// checked), zeros where a gap opens, then the written bytes.
    fn compose_block(
        &self,
        block: u32,
        block_end: u64,
        start: u64,
        data: &[u8],
        scratch: &mut Vec<u8>,
    ) -> Result<(), ChunkError> {
        let old_len = u64::from(self.header.length);
        let block_start = u64::from(block) * BLOCK;
        let end = start + data.len() as u64;
        let old_end = min(block_start + BLOCK, old_len);
        let old_survives = old_end > block_start && (block_start < start || old_end > end);
        scratch.clear();
        if old_survives {
            self.read_blocks(block, block, scratch, false)?;
        }
        scratch.resize((block_end - block_start) as usize, 0);
        let from = max(start, block_start);
        let to = min(end, block_end);
        if from < to {
            scratch[(from - block_start) as usize..(to - block_start) as usize]
                .copy_from_slice(&data[(from - start) as usize..(to - start) as usize]);
        }
        Ok(())
    }

    fn shrink(&mut self, old_len: u64, new_len: u64) -> Result<(), ChunkError> {
        let kept_blocks = blocks_holding(new_len);
        let mut hashes = Vec::new();
        if new_len % BLOCK != 0 {
            let last = kept_blocks - 1;
            let mut scratch = Vec::new();
            self.read_blocks(last, last, &mut scratch, false)?;
            scratch.truncate((new_len - u64::from(last) * BLOCK) as usize);
            hashes.extend_from_slice(&block_hash(&scratch));
        }
        let first = kept_blocks - (hashes.len() / HASH_LEN) as u32;
        // Hashes of blocks past the end are documented as zeros.
        hashes.resize((blocks_holding(old_len) - first) as usize * HASH_LEN, 0);
        self.file
            .set_len(HEADER_SIZE + new_len)
            .map_err(|e| self.io_error(e))?;
        self.file
            .write_all_at(&hashes, hash_offset(first))
            .map_err(|e| self.io_error(e))
    }

    fn grow(&mut self, old_len: u64, new_len: u64) -> Result<(), ChunkError> {
        let first = (old_len / BLOCK) as u32;
        let last = ((new_len - 1) / BLOCK) as u32;
        let mut hashes = Vec::with_capacity((last - first + 1) as usize * HASH_LEN);
        let mut scratch = Vec::new();
        for block in first..=last {
            let block_start = u64::from(block) * BLOCK;
            let block_end = min(block_start + BLOCK, new_len);
            let hash: BlockHash = if block_start < old_len {
                self.read_blocks(block, block, &mut scratch, false)?;
                scratch.resize((block_end - block_start) as usize, 0);
                block_hash(&scratch)
            } else if block_end - block_start == BLOCK {
                zero_block_hash()
            } else {
                block_hash(zeros((block_end - block_start) as usize))
            };
            hashes.extend_from_slice(&hash);
        }
        // Cut whatever a crash left past the old end first, so the new part really reads as zeros.
        self.file
            .set_len(HEADER_SIZE + old_len)
            .map_err(|e| self.io_error(e))?;
        self.file
            .set_len(HEADER_SIZE + new_len)
            .map_err(|e| self.io_error(e))?;
        self.file
            .write_all_at(&hashes, hash_offset(first))
            .map_err(|e| self.io_error(e))
    }

    /// Reads blocks `first..=last` (bounded by the data length) into `buf`, checking their hashes,
    /// and returns where in `buf` they start: 0 unless `direct` read them past the page cache.
    fn read_blocks(
        &self,
        first: u32,
        last: u32,
        buf: &mut Vec<u8>,
        direct: bool,
    ) -> Result<usize, ChunkError> {
        let id = self.header.id;
        let start = u64::from(first) * BLOCK;
        let end = min((u64::from(last) + 1) * BLOCK, u64::from(self.header.length));
        let want = end.saturating_sub(start) as usize;
        buf.clear();
        let pos = HEADER_SIZE + start;
        let read_directly = if direct && !self.cached_only {
            direct_read::read_uncached(&self.file, buf, want, pos)
        } else {
            None
        };
        let (data_at, got) = match read_directly {
            Some(range) => (range.start, range.len()),
            None => (
                0,
                read_appending(&self.file, buf, want, pos, self.cached_only)
                    .map_err(|e| self.io_error(e))?,
            ),
        };
        // A file cut short: its missing blocks read as zeros and fail their hashes below.
        buf.resize(data_at + want, 0);

        let hashes_len = (last - first + 1) as usize * HASH_LEN;
        let mut hashes = Vec::new();
        let got_hashes = read_appending(
            &self.file,
            &mut hashes,
            hashes_len,
            hash_offset(first),
            self.cached_only,
        )
        .map_err(|e| self.io_error(e))?;
        if got_hashes < hashes_len {
            return Err(ChunkError::bad_header(
                id,
                &self.path,
                "the file ends inside its block hash table",
            ));
        }
        for (index, (block, stored)) in buf[data_at..]
            .chunks(BLOCK_SIZE as usize)
            .zip(hashes.chunks(HASH_LEN))
            .enumerate()
        {
            let block_end = index * BLOCK_SIZE as usize + block.len();
            if block_end > got || block_hash(block) != stored {
                return Err(ChunkError::Corrupt {
                    chunk: id,
                    block: first + index as u32,
                });
            }
        }
        Ok(data_at)
    }

    fn store_header(&mut self, header: Header) -> Result<(), ChunkError> {
        self.file
            .write_all_at(&header.encode(), 0)
            .map_err(|e| self.io_error(e))?;
        self.header = header;
        Ok(())
    }

    fn io_error(&self, e: io::Error) -> ChunkError {
        ChunkError::io(self.header.id, &self.path, e)
    }
}

/// Opens the existing file of chunk `id` for reading and writing (a header may need its version
/// set).
fn open_existing(path: &Path, id: ChunkId) -> Result<File, ChunkError> {
    OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .map_err(|e| ChunkError::io_opening(id, path, e))
}

/// Number of blocks that hold data in a chunk of `length` bytes.
fn blocks_holding(length: u64) -> u32 {
    length.div_ceil(BLOCK) as u32
}

/// Appends to `buf` up to `len` bytes read from `offset`, fewer only at the end of the file;
/// returns how many. With `cached_only`, a page not in the page cache fails the read with
/// `WouldBlock` instead of being read from disk. The bytes go straight into the vector's spare
/// capacity, never zeroed first (for a 1 MiB read that zeroing cost as much as a twentieth of a
/// chunkserver's CPU).
fn read_appending(
    file: &File,
    buf: &mut Vec<u8>,
    len: usize,
    offset: u64,
    cached_only: bool,
) -> io::Result<usize> {
    buf.reserve(len);
    let start = buf.len();
    let got = nowait::fill(
        file,
        &mut buf.spare_capacity_mut()[..len],
        offset,
        cached_only,
    )?;
    // SAFETY: `nowait::fill` initialized the first `got` bytes of the spare capacity.
    unsafe { buf.set_len(start + got) };
    Ok(got)
}
