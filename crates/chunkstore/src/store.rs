//! The chunk store: the operations the chunkserver calls, on top of the index (`index.rs`) and the
//! chunk files (`chunk_file.rs`). Blocking I/O, except `read_cached`; every method takes `&self`
//! and may be called from many threads at once (the chunkserver calls them from `spawn_blocking`,
//! and `read_cached` from its network threads).
//!
//! Locking: writes, truncates, version changes and deletes hold their chunk's lock exclusively;
//! reads, verifies and syncs share it, so a read never sees a half-written block.

use std::collections::HashSet;
use std::fs;
use std::io;
use std::ops::Range;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use bytes::Bytes;

use elkfs_proto::geometry::{BLOCK_SIZE, CHUNK_SIZE};
use elkfs_proto::{ChunkId, ChunkVersion};

use crate::chunk_file::ChunkFile;
use crate::datadir::{DataDirSpec, fs_space, pick_dir_for_new_chunk};
use crate::deleted::RecentlyDeleted;
use crate::error::{ChunkError, StoreError};
use crate::fetch_ahead::FetchAhead;
use crate::header::HEADER_SIZE;
use crate::index::{Index, Slot, SlotState};
use crate::lost_marks;
use crate::o_direct::MIN_DIRECT;
use crate::page_hints;
use crate::path::chunk_path_for;
use crate::read_again::RecentReads;
use crate::scan::{prepare_dir, scan_dirs};
use crate::spares::{Spares, Taken};

/// What [`ChunkStore::open`] found in the data directories.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ScanReport {
    /// Chunks in the index (one per id).
    pub chunks: usize,
    /// Of these, copies marked as having lost writes before the start.
    pub lost: usize,
    /// Their data bytes, summed (headers not counted).
    pub bytes: u64,
    /// Files in the subdirectories that are not chunks the store uses, with the reason: names
    /// that are not chunk names, non-files, and lower versions (or second copies) of a chunk.
    /// None is deleted.
    pub ignored: Vec<(PathBuf, String)>,
}

/// Disk space for the master's placement and balancing decisions.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SpaceReport {
    /// Size of the file systems holding the directories that take new chunks (each counted once).
    pub total: u64,
    /// Bytes available on them to an unprivileged user.
    pub available: u64,
    /// Bytes of all chunk files (header plus data), in every directory, marked or not.
    pub used_by_chunks: u64,
}

/// A chunk as the index knows it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ChunkInfo {
    /// The chunk's id.
    pub id: ChunkId,
    /// Its stored version.
    pub version: ChunkVersion,
    /// Bytes of data it holds.
    pub length: u32,
}

/// The chunks stored in a chunkserver's data directories.
pub struct ChunkStore {
    pub(crate) dirs: Vec<DataDir>,
    pub(crate) index: Index,
    deleted: RecentlyDeleted,
    fetch_ahead: FetchAhead,
    /// Large writes go to the disk directly, past the page cache (`direct_write.rs`); on by
    /// default, off by [`ChunkStore::set_direct_writes`].
    direct_writes: AtomicBool,
    /// Large reads of data the page cache does not hold go to the disk directly
    /// (`direct_read.rs`); on by default, off by [`ChunkStore::set_direct_reads`].
    direct_reads: AtomicBool,
    /// What large reads read lately: data read again goes through the page cache.
    recent_reads: RecentReads,
}

/// The most blocks `read_cached` hashes: enough for a small read across a block boundary, little
/// enough that its caller's thread is held only briefly.
const CACHED_READ_BLOCKS: u64 = 2;

/// The largest read whose header, hashes and blocks are asked of the disk together when they
/// are not cached (`ChunkFile::open_prefetching`): small reads, such as a small file's or a
/// random one. Larger reads are sequential more often than not (a mount's read-ahead asks for
/// 128 KiB or 1 MiB at a time), and the kernel's read-ahead serves them better than a hint for
/// exactly their range, which would bring pages in without the marks that keep it going.
const PREFETCHED_READ: u32 = BLOCK_SIZE;

/// Whether an fsync of `file` that failed with `error` lost writes. A failed writeback says
/// EIO, ENOSPC or EDQUOT (a thin or overcommitted disk had no room for what it had accepted), or
/// EROFS once the file system gave up. An interrupted call, no memory for the moment or a file
/// system without fsync leave the pages to write. Of any other error, Linux reports a lost
/// writeback once: an fsync again at once that fails the same way is a file system refusing
/// fsync (some refuse it on a file opened for reading), not a loss.
fn loses_writes(error: &io::Error, file: &fs::File) -> bool {
    match error.raw_os_error() {
        Some(libc::EIO | libc::ENOSPC | libc::EDQUOT | libc::EROFS) => true,
        Some(
            libc::EINTR
            | libc::EAGAIN
            | libc::ENOMEM
            | libc::EINVAL
            | libc::ENOSYS
            | libc::EOPNOTSUPP,
        ) => false,
        _ => file.sync_all().is_ok(),
    }
}

/// Refuses every use of a copy whose writes were lost but its deletion (and syncs, which report
/// it): it may hold old data under old hashes, which a read would pass as good, so readers,
/// writers, version changes and copies go to other copies.
fn refuse_if_lost(chunk: ChunkId, slot: &Slot, path: &Path) -> Result<(), ChunkError> {
    match slot.write_lost.load(Ordering::Acquire) {
        true => Err(lost_earlier(chunk, path.to_path_buf())),
        false => Ok(()),
    }
}

/// Marks a copy whose writes were just lost on disk too, so that no restart takes it for good.
fn mark_lost_on_disk(id: ChunkId, path: &Path) {
    match lost_marks::write_marker(path) {
        Ok(()) => {
            tracing::info!(chunk = %id, marker = %lost_marks::marker_for(path).display(), "marked a copy that lost writes")
        }
        Err(e) => {
            tracing::error!(chunk = %id, path = %path.display(), error = %e, "cannot mark a copy that lost writes on disk; after a restart only the master's memory tells it is damaged")
        }
    }
}

/// The error for a copy whose writes were lost at an earlier sync.
fn lost_earlier(chunk: ChunkId, path: PathBuf) -> ChunkError {
    ChunkError::WriteLost {
        chunk,
        path,
        source: io::Error::other("an earlier fsync of this copy failed"),
    }
}

/// `file`, just opened, after refreshing the slot's cached length from its header.
fn noting_length(slot: &Slot, file: ChunkFile) -> ChunkFile {
    slot.length.store(file.length(), Ordering::Relaxed);
    file
}

/// Blocks a read of `len` bytes from `offset` touches in a chunk holding `length` bytes.
fn blocks_touched(offset: u32, len: u32, length: u32) -> u64 {
    let block = u64::from(BLOCK_SIZE);
    let end = (u64::from(offset) + u64::from(len)).min(u64::from(length));
    end.div_ceil(block)
        .saturating_sub(u64::from(offset) / block)
}

pub(crate) struct DataDir {
    pub(crate) path: PathBuf,
    marked_for_removal: bool,
    spares: Spares,
    /// `read_cached` is worth trying here: cleared for good when the kernel or the file system
    /// turns out unable to open or read without waiting.
    cached_reads: AtomicBool,
    /// A chunk file here lost writes (an fsync failed, see `loses_writes`): the disk cannot be
    /// trusted with new data, so it takes no new chunk and counts as full until the chunkserver
    /// restarts (once the disk is fixed) and finds no copy here marked lost (`lost_marks.rs`).
    lost_writes: AtomicBool,
}

/// Free space a file system must still show, beyond twice a write's length, for that write's
/// ENOSPC to count as the device's refusal rather than a full file system.
const ROOM_MARGIN: u64 = 64 << 20;

impl DataDir {
    /// After a write of `len` bytes failed for want of space: when the file system still shows
    /// ample room, the device under it refused the data (a thin or overcommitted volume out of
    /// backing space; a direct write meets that at once, a buffered one only at writeback), so
    /// the directory is taken out of use for new chunks as after lost writes. A file system
    /// really full is left to the space reports.
    fn note_refused_despite_room(&self, len: usize) {
        let needed = (len as u64).saturating_mul(2).saturating_add(ROOM_MARGIN);
        if fs_space(&self.path).is_ok_and(|space| space.available >= needed) {
            self.note_lost_writes();
        }
    }

    /// Whether new chunks may go here.
    fn takes_new_chunks(&self) -> bool {
        !self.marked_for_removal && !self.lost_writes.load(Ordering::Relaxed)
    }

    /// Takes the directory out of use for new chunks after one of its files lost writes.
    fn note_lost_writes(&self) {
        if !self.lost_writes.swap(true, Ordering::Relaxed) {
            tracing::error!(dir = %self.path.display(), "a data directory lost writes; it takes no new chunks and counts as full until the chunkserver restarts with no copy there marked lost");
        }
    }
}

impl ChunkStore {
    /// Opens the data directories (creating each one and its 256 subdirectories if missing) and
    /// scans them. The scan reads directory listings and stats each file (for its length); chunk
    /// headers are read when a chunk is first used. Of several files with one chunk id, the highest
    /// version is kept and the others are reported in `ignored`, left on disk.
    pub fn open(dirs: &[DataDirSpec]) -> Result<(ChunkStore, ScanReport), StoreError> {
        if dirs.is_empty() {
            return Err(StoreError::NoDirs);
        }
        let mut seen = HashSet::new();
        for spec in dirs {
            prepare_dir(&spec.path)?;
            let canonical =
                fs::canonicalize(&spec.path).map_err(|e| StoreError::dir(&spec.path, e))?;
            if !seen.insert(canonical) {
                return Err(StoreError::DuplicateDir {
                    path: spec.path.clone(),
                });
            }
        }
        let paths: Vec<PathBuf> = dirs.iter().map(|spec| spec.path.clone()).collect();
        let scan = scan_dirs(&paths)?;
        let mut data_dirs = Vec::with_capacity(dirs.len());
        for spec in dirs {
            data_dirs.push(DataDir {
                path: spec.path.clone(),
                marked_for_removal: spec.marked_for_removal,
                spares: Spares::open(&spec.path, !spec.marked_for_removal),
                cached_reads: AtomicBool::new(true),
                lost_writes: AtomicBool::new(false),
            });
        }

        for found in scan.chunks.iter().filter(|found| found.lost) {
            data_dirs[found.dir]
                .lost_writes
                .store(true, Ordering::Relaxed);
        }
        for dir in data_dirs
            .iter()
            .filter(|dir| dir.lost_writes.load(Ordering::Relaxed))
        {
            tracing::error!(dir = %dir.path.display(), "copies in this data directory lost writes before this start (each marked by a *.lost file beside it): they are reported as damaged, and the directory takes no new chunks and counts as full until a start finds none");
        }
        let report = ScanReport {
            chunks: scan.chunks.len(),
            lost: scan.chunks.iter().filter(|found| found.lost).count(),
            bytes: scan
                .chunks
                .iter()
                .map(|found| u64::from(found.length))
                .sum(),
            ignored: scan.ignored,
        };
        let index = Index::new(scan.chunks.into_iter().map(|found| {
            let slot = Slot::new(found.dir, found.version, found.length);
            // Refused for all but its deletion, and reported by every sync pass until then.
            slot.write_lost.store(found.lost, Ordering::Relaxed);
            slot.changed.store(found.lost, Ordering::Relaxed);
            (found.id, slot)
        }));
        let store = ChunkStore {
            dirs: data_dirs,
            index,
            deleted: RecentlyDeleted::default(),
            fetch_ahead: FetchAhead::default(),
            direct_writes: AtomicBool::new(true),
            direct_reads: AtomicBool::new(true),
            recent_reads: RecentReads::default(),
        };
        Ok((store, report))
    }

    /// Every chunk in the store, in no particular order. Reads no file.
    pub fn list(&self) -> Vec<ChunkInfo> {
        self.index
            .snapshot()
            .into_iter()
            .filter_map(|(id, slot)| Self::info_of(id, &slot))
            .collect()
    }

    /// The copies whose writes were lost (found at a sync, or marked so before the start): the
    /// chunkserver reports them as damaged as soon as it registers, before the master could
    /// take them for good ones. Reads no file.
    pub fn lost_copies(&self) -> Vec<ChunkInfo> {
        self.index
            .snapshot()
            .into_iter()
            .filter(|(_, slot)| slot.write_lost.load(Ordering::Acquire))
            .filter_map(|(id, slot)| Self::info_of(id, &slot))
            .collect()
    }

    /// One chunk's version and length, `None` if the store does not hold it. Reads no file.
    pub fn info(&self, id: ChunkId) -> Option<ChunkInfo> {
        let slot = self.index.get(id).ok()?;
        Self::info_of(id, &slot)
    }

    /// True if the chunk lives in a directory marked for removal, so the chunkserver reports it as
    /// a copy to be replaced elsewhere.
    pub fn is_marked_for_removal(&self, id: ChunkId) -> bool {
        self.index.get(id).is_ok_and(|slot| {
            let state = slot.shared();
            !state.removed && self.dirs[state.dir].marked_for_removal
        })
    }

    /// Creates an empty chunk (length 0) at `version` in the directory, not marked for removal,
    /// with the most available space. `AlreadyExists` if the id is present at any version;
    /// `NoSpace` if the disk is full or no directory takes new chunks.
    pub fn create(&self, id: ChunkId, version: ChunkVersion) -> Result<(), ChunkError> {
        if self.index.contains(id) {
            return Err(ChunkError::AlreadyExists { chunk: id });
        }
        let dir = self.pick_dir().ok_or(ChunkError::NoSpace { chunk: id })?;
        let slot = Arc::new(Slot::new(dir, version, 0));
        let mut state = slot.exclusive();
        self.index.insert(id, &slot)?;
        let path = self.path_of(id, &state);
        let made = match self.dirs[dir].spares.take(&path) {
            Taken::Placed(file) => ChunkFile::init(file, path, id, version),
            Taken::Exists => Err(ChunkError::AlreadyExists { chunk: id }),
            Taken::None => ChunkFile::create(path, id, version),
        };
        match made {
            Ok(_) => {
                slot.name_unsynced.store(true, Ordering::Relaxed);
                slot.changed.store(true, Ordering::Release);
                Ok(())
            }
            Err(e) => {
                state.removed = true;
                drop(state);
                self.index.remove(id, &slot);
                Err(e)
            }
        }
    }

    /// Makes a copy of chunk `src` (at `version`) as a new chunk `dst` at `dst_version`, in the
    /// same directory (copy-on-write after a snapshot: the copy is taken before either is
    /// written). `AlreadyExists` if `dst` is present.
    pub fn duplicate(
        &self,
        src: ChunkId,
        version: ChunkVersion,
        dst: ChunkId,
        dst_version: ChunkVersion,
    ) -> Result<(), ChunkError> {
        if self.index.contains(dst) {
            return Err(ChunkError::AlreadyExists { chunk: dst });
        }
        self.shared(src, Some(version), |slot, state, src_path| {
            refuse_if_lost(src, slot, &src_path)?;
            let length = slot.length.load(Ordering::Relaxed);
            let copy = Arc::new(Slot::new(state.dir, dst_version, length));
            let mut copy_state = copy.exclusive();
            self.index.insert(dst, &copy)?;
            let dst_path = chunk_path_for(&self.dirs[state.dir].path, dst, dst_version);
            let made = fs::copy(&src_path, &dst_path)
                .map_err(|e| ChunkError::io(dst, &dst_path, e))
                .and_then(|_| ChunkFile::open(dst_path.clone(), src, version))
                .and_then(|mut file| file.retag(dst, dst_version));
            match made {
                Ok(()) => {
                    copy.name_unsynced.store(true, Ordering::Relaxed);
                    copy.changed.store(true, Ordering::Release);
                    Ok(())
                }
                Err(e) => {
                    let _ = fs::remove_file(&dst_path);
                    copy_state.removed = true;
                    drop(copy_state);
                    self.index.remove(dst, &copy);
                    Err(e)
                }
            }
        })
    }

    /// Moves the chunk from version `from` to `to`: the header first, then the file is renamed.
    /// `WrongVersion` if the stored version is not `from`.
    pub fn set_version(
        &self,
        id: ChunkId,
        from: ChunkVersion,
        to: ChunkVersion,
    ) -> Result<(), ChunkError> {
        self.exclusive(id, Some(from), |slot, state, path| {
            refuse_if_lost(id, slot, &path)?;
            if from == to {
                return Ok(());
            }
            let mut file = self.open_file(id, slot, path.clone(), from)?;
            file.set_version(to)?;
            self.rename(id, slot, state, &path, to)
        })
    }

    /// Writes `data` at `offset`, extending the length if it ends past it (a gap reads as zeros)
    /// and updating the hash of every block it touches. The data is handed to the OS before this
    /// returns (no fsync). `OutOfRange` past `CHUNK_SIZE`, `WrongVersion` if `version` is stale,
    /// `Corrupt` if a partly overwritten block was already damaged.
    pub fn write(
        &self,
        id: ChunkId,
        version: ChunkVersion,
        offset: u32,
        data: &[u8],
    ) -> Result<(), ChunkError> {
        self.exclusive(id, Some(version), |slot, state, path| {
            if u64::from(offset) + data.len() as u64 > CHUNK_SIZE {
                return Err(ChunkError::OutOfRange {
                    chunk: id,
                    offset: u64::from(offset),
                    len: data.len() as u64,
                });
            }
            if data.is_empty() {
                return Ok(());
            }
            refuse_if_lost(id, slot, &path)?;
            let mut file = self.open_file(id, slot, path, version)?;
            let direct = self.direct_writes.load(Ordering::Relaxed);
            let written = file.write(offset, data, direct);
            if direct && matches!(written, Err(ChunkError::NoSpace { .. })) {
                self.dirs[state.dir].note_refused_despite_room(data.len());
            }
            written?;
            slot.length.store(file.length(), Ordering::Relaxed);
            Ok(())
        })
    }

    /// Whether the page-aligned middle of a large write past a chunk's end goes to the disk
    /// directly (the default) or, like every other write, through the page cache: off for a
    /// disk whose direct I/O is slow, or where the page cache is to see every write (tests of
    /// the sync pass on a thin volume).
    pub fn set_direct_writes(&self, on: bool) {
        self.direct_writes.store(on, Ordering::Relaxed);
    }

    /// Whether a large read (and the chunk test's reading) of data the page cache holds next to
    /// nothing of goes to the disk directly (the default), leaving the cache alone, or through
    /// the page cache like every other read: off for a disk whose direct I/O is slow. Either
    /// way, data read again within ten minutes of a large read goes through the cache.
    pub fn set_direct_reads(&self, on: bool) {
        self.direct_reads.store(on, Ordering::Relaxed);
    }

    /// Whether a read of `len` bytes at `offset` of chunk `id` may go to the disk directly: if
    /// direct reads are on and it reads no block a large read read lately (which notes it).
    fn may_read_directly(&self, id: ChunkId, offset: u32, len: u32) -> bool {
        self.direct_reads.load(Ordering::Relaxed)
            && len as usize >= MIN_DIRECT
            && !self
                .recent_reads
                .read_again(id, offset, len, std::time::Instant::now())
    }

    /// [`ChunkStore::write`], first creating the chunk at `version` if this server does not hold
    /// it: a new chunk's first writes may arrive before the master's command to create it.
    /// Returns whether it created the chunk. A chunk deleted here lately is not made again
    /// (`NotFound`): a write still under way when its file was cut or removed must fail, not
    /// land in a copy no file refers to.
    pub fn write_creating(
        &self,
        id: ChunkId,
        version: ChunkVersion,
        offset: u32,
        data: &[u8],
    ) -> Result<bool, ChunkError> {
        match self.write(id, version, offset, data) {
            Err(ChunkError::NotFound { .. }) => {
                let created = self.ensure(id, version)?;
                self.write(id, version, offset, data).map(|()| created)
            }
            other => other.map(|()| false),
        }
    }

    /// [`ChunkStore::create`], except that a chunk already held at `version` is left as it is
    /// (its first write may have created it): the master's create command can come second.
    /// A chunk deleted here lately is not made again (`NotFound`): the command was overtaken
    /// by the chunk's deletion. Returns whether it made the chunk.
    pub fn ensure(&self, id: ChunkId, version: ChunkVersion) -> Result<bool, ChunkError> {
        if self.deleted.lately(id) {
            return Err(ChunkError::NotFound { chunk: id });
        }
        match self.create(id, version) {
            Ok(()) => Ok(true),
            Err(ChunkError::AlreadyExists { .. })
                if self.info(id).is_some_and(|i| i.version == version) =>
            {
                Ok(false)
            }
            Err(e) => Err(e),
        }
    }

    /// Up to `len` bytes from `offset`: fewer (possibly none) at the end of the chunk's data. Every
    /// block the range touches is read whole and checked; a mismatch is `Corrupt { chunk, block }`.
    pub fn read(
        &self,
        id: ChunkId,
        version: ChunkVersion,
        offset: u32,
        len: u32,
    ) -> Result<Bytes, ChunkError> {
        self.shared(id, Some(version), |slot, _, path| {
            refuse_if_lost(id, slot, &path)?;
            let file = if len <= PREFETCHED_READ {
                noting_length(
                    slot,
                    ChunkFile::open_prefetching(path, id, version, offset, len)?,
                )
            } else {
                self.open_file(id, slot, path, version)?
            };
            file.read(offset, len, self.may_read_directly(id, offset, len))
        })
    }

    /// What [`ChunkStore::read`] would return, if that needs no wait for the disk or for a lock:
    /// for a range of at most two blocks whose file name, header, hashes and data are all in the
    /// kernel's caches. `None` otherwise, and on any error, which `read` then meets and reports.
    /// The blocks are checked as in `read`. This lets the chunkserver answer a read of warm data
    /// without handing it to a blocking thread and back. A data directory where the kernel or
    /// file system cannot read this way is not tried again.
    pub fn read_cached(
        &self,
        id: ChunkId,
        version: ChunkVersion,
        offset: u32,
        len: u32,
    ) -> Option<Bytes> {
        let slot = self.index.try_get(id)?;
        if blocks_touched(offset, len, slot.length.load(Ordering::Relaxed)) > CACHED_READ_BLOCKS {
            return None;
        }
        let state = slot.try_shared()?;
        state.check(id, Some(version)).ok()?;
        if slot.write_lost.load(Ordering::Acquire) {
            return None;
        }
        let dir = &self.dirs[state.dir];
        if !dir.cached_reads.load(Ordering::Relaxed) {
            return None;
        }
        let result =
            ChunkFile::open_cached(self.path_of(id, &state), id, version).and_then(|file| {
                slot.length.store(file.length(), Ordering::Relaxed);
                if blocks_touched(offset, len, file.length()) > CACHED_READ_BLOCKS {
                    return Ok(None);
                }
                file.read(offset, len, false).map(Some)
            });
        match result {
            Ok(bytes) => bytes,
            Err(ChunkError::Io { source, .. }) if source.kind() == io::ErrorKind::Unsupported => {
                tracing::info!(
                    dir = %dir.path.display(),
                    error = %source,
                    "this data directory cannot be read from the page cache without waiting; \
                     every read goes to the blocking pool"
                );
                dir.cached_reads.store(false, Ordering::Relaxed);
                None
            }
            Err(_) => None,
        }
    }

    /// Notes a read of `len` bytes at `offset` in chunk `id` and says which chunks to give to
    /// [`ChunkStore::fetch_ahead`] now, if any: when small reads of the starts of chunks go
    /// forward through neighbouring ids (see `fetch_ahead.rs`) and no fetch is going on. Each
    /// range returned must go to `fetch_ahead`, which lets the next one start.
    pub fn chunks_to_fetch_ahead(&self, id: ChunkId, offset: u32, len: u32) -> Option<Range<u64>> {
        if offset >= BLOCK_SIZE || len > BLOCK_SIZE {
            return None;
        }
        self.fetch_ahead.after_read(id.0)
    }

    /// Asks the kernel to read from the disk, in the background, the first block of each chunk
    /// with an id in `ids` held here (with its header fields and hashes). It opens their files,
    /// so it may wait for the disk: call it on a blocking thread. A chunk busy or gone is
    /// skipped.
    pub fn fetch_ahead(&self, ids: Range<u64>) {
        let _fetching = self.fetch_ahead.claimed();
        for id in ids.map(ChunkId) {
            let Some(slot) = self.index.try_get(id) else {
                continue;
            };
            let path = {
                let Some(state) = slot.try_shared() else {
                    continue;
                };
                if state.removed {
                    continue;
                }
                self.path_of(id, &state)
            };
            let opened = fs::OpenOptions::new()
                .read(true)
                .custom_flags(libc::O_NOATIME)
                .open(&path)
                .or_else(|e| match e.raw_os_error() {
                    // O_NOATIME needs the file's owner (or CAP_FOWNER).
                    Some(libc::EPERM) => fs::File::open(&path),
                    _ => Err(e),
                });
            if let Ok(file) = opened {
                page_hints::prefetch(&file, 0, BLOCK_SIZE);
            }
        }
    }

    /// Sets the data length (shrinking drops the data past it; growing adds zeros) and moves the
    /// chunk from version `from` to `to`, in one operation.
    pub fn truncate(
        &self,
        id: ChunkId,
        from: ChunkVersion,
        to: ChunkVersion,
        length: u32,
    ) -> Result<(), ChunkError> {
        self.exclusive(id, Some(from), |slot, state, path| {
            refuse_if_lost(id, slot, &path)?;
            if u64::from(length) > CHUNK_SIZE {
                return Err(ChunkError::OutOfRange {
                    chunk: id,
                    offset: u64::from(length),
                    len: 0,
                });
            }
            let mut file = self.open_file(id, slot, path.clone(), from)?;
            file.resize(length, to)?;
            slot.length.store(length, Ordering::Relaxed);
            if from == to {
                return Ok(());
            }
            self.rename(id, slot, state, &path, to)
        })
    }

    /// Removes the chunk file. `WrongVersion` if the stored version differs, so a stale delete
    /// never removes a newer copy.
    pub fn delete(&self, id: ChunkId, version: ChunkVersion) -> Result<(), ChunkError> {
        self.exclusive(id, Some(version), |slot, state, path| {
            let dir = &self.dirs[state.dir];
            let removed = if dir.marked_for_removal {
                fs::remove_file(&path)
            } else {
                dir.spares.retire(&path)
            };
            match removed {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::NotFound => {
                    tracing::warn!(
                        chunk = %id,
                        path = %path.display(),
                        "chunk file was already gone when deleting it"
                    );
                }
                Err(e) => return Err(ChunkError::io(id, &path, e)),
            }
            if slot.write_lost.load(Ordering::Acquire)
                && let Err(e) = lost_marks::remove_marker(&path)
            {
                tracing::warn!(chunk = %id, path = %path.display(), error = %e, "deleted a copy that lost writes but not its marker; the next start removes it");
            }
            state.removed = true;
            self.index.remove(id, slot);
            self.deleted.note(id);
            Ok(())
        })
    }

    /// [`ChunkStore::delete`] of a copy of a chunk no file refers to any more, which may come
    /// before the `Create` or first write that would make it here (a batch of such deletes
    /// does not wait for the chunk's turn): a copy not here is remembered as deleted all the
    /// same, so that neither makes it again, and is not an error.
    pub fn delete_freed(&self, id: ChunkId, version: ChunkVersion) -> Result<(), ChunkError> {
        match self.delete(id, version) {
            Err(ChunkError::NotFound { .. }) => {
                self.deleted.note(id);
                Ok(())
            }
            result => result,
        }
    }

    /// fsyncs the chunk file (data, hashes and header), and its directory if the file was created
    /// or renamed since the last sync, so the chunk survives a power cut under its current name.
    /// Once an fsync of the copy lost writes (see `loses_writes`), every later use of it but its
    /// deletion fails with `WriteLost`, and it stays marked changed for the sync pass to report:
    /// the kernel reports a lost write only once.
    pub fn sync(&self, id: ChunkId) -> Result<(), ChunkError> {
        self.shared(id, None, |slot, state, path| {
            // No change is under way while the lock is shared: every change made so far is in
            // what the fsync below covers, and one made after it marks the chunk again.
            if slot.write_lost.load(Ordering::Acquire) {
                // Still marked, so every sync pass reports the copy until it is gone.
                slot.changed.store(true, Ordering::Release);
                return Err(lost_earlier(id, path));
            }
            slot.changed.store(false, Ordering::Release);
            let synced = fs::File::open(&path)
                .map_err(|e| ChunkError::io_opening(id, &path, e))
                .and_then(|file| {
                    file.sync_all().map_err(|source| {
                        if !loses_writes(&source, &file) {
                            return ChunkError::io(id, &path, source);
                        }
                        // For good: the pages the kernel could not write are clean now, so
                        // syncing again would succeed.
                        slot.write_lost.store(true, Ordering::Release);
                        mark_lost_on_disk(id, &path);
                        self.dirs[state.dir].note_lost_writes();
                        ChunkError::WriteLost {
                            chunk: id,
                            path: path.clone(),
                            source,
                        }
                    })
                });
            if let Err(e) = synced {
                slot.changed.store(true, Ordering::Release);
                return Err(e);
            }
            if slot.name_unsynced.swap(false, Ordering::AcqRel) {
                let dir = path.parent().unwrap_or(&path);
                let synced = fs::File::open(dir).and_then(|dir| dir.sync_all());
                if let Err(e) = synced {
                    slot.name_unsynced.store(true, Ordering::Release);
                    slot.changed.store(true, Ordering::Release);
                    return Err(ChunkError::io(id, dir, e));
                }
            }
            Ok(())
        })
    }

    /// Reads and checks every block of the chunk (the background chunk test); returns the bytes
    /// checked. A damaged chunk is `Corrupt` (first bad block) or `BadHeader`.
    pub fn verify(&self, id: ChunkId) -> Result<u64, ChunkError> {
        self.shared(id, None, |slot, state, path| {
            self.open_file(id, slot, path, state.version)?
                .verify(self.direct_reads.load(Ordering::Relaxed))
        })
    }

    /// Space of the directories not marked for removal (each file system counted once; one whose
    /// files lost writes counts as full) and the bytes used by all chunk files.
    pub fn space(&self) -> Result<SpaceReport, StoreError> {
        let mut report = SpaceReport::default();
        let mut devices = HashSet::new();
        for dir in self.dirs.iter().filter(|dir| !dir.marked_for_removal) {
            let device = fs::metadata(&dir.path)
                .map_err(|e| StoreError::dir(&dir.path, e))?
                .dev();
            if devices.insert(device) {
                let space = fs_space(&dir.path).map_err(|e| StoreError::dir(&dir.path, e))?;
                report.total += space.total;
                if dir.takes_new_chunks() {
                    report.available += space.available;
                }
            }
        }
        report.used_by_chunks = self
            .index
            .snapshot()
            .iter()
            .map(|(_, slot)| HEADER_SIZE + u64::from(slot.length.load(Ordering::Relaxed)))
            .sum();
        Ok(report)
    }

    fn info_of(id: ChunkId, slot: &Slot) -> Option<ChunkInfo> {
        let state = slot.shared();
        (!state.removed).then(|| ChunkInfo {
            id,
            version: state.version,
            length: slot.length.load(Ordering::Relaxed),
        })
    }

    /// Runs `op` holding the chunk's lock shared, after checking it exists at `want` (if given).
    fn shared<T>(
        &self,
        id: ChunkId,
        want: Option<ChunkVersion>,
        op: impl FnOnce(&Slot, &SlotState, PathBuf) -> Result<T, ChunkError>,
    ) -> Result<T, ChunkError> {
        let slot = self.index.get(id)?;
        let result = {
            let state = slot.shared();
            state
                .check(id, want)
                .and_then(|()| op(&slot, &state, self.path_of(id, &state)))
        };
        self.forget_if_vanished(id, &slot, &result);
        result
    }

    /// Runs `op` holding the chunk's lock exclusively, after checking it exists at `want` if given.
    fn exclusive<T>(
        &self,
        id: ChunkId,
        want: Option<ChunkVersion>,
        op: impl FnOnce(&Slot, &mut SlotState, PathBuf) -> Result<T, ChunkError>,
    ) -> Result<T, ChunkError> {
        let slot = self.index.get(id)?;
        let result = {
            let mut state = slot.exclusive();
            state.check(id, want).and_then(|()| {
                let path = self.path_of(id, &state);
                let result = op(&slot, &mut state, path);
                // Marked after the change, a failed one too (it may have done part of its
                // work), so a sync pass that took the mark off before never misses it.
                slot.changed.store(true, Ordering::Release);
                result
            })
        };
        self.forget_if_vanished(id, &slot, &result);
        result
    }

    /// Opens the chunk's file, checking its header, and refreshes the cached length from it.
    fn open_file(
        &self,
        id: ChunkId,
        slot: &Slot,
        path: PathBuf,
        version: ChunkVersion,
    ) -> Result<ChunkFile, ChunkError> {
        Ok(noting_length(slot, ChunkFile::open(path, id, version)?))
    }

    /// Renames the chunk file to version `to` (its header already says `to`).
    fn rename(
        &self,
        id: ChunkId,
        slot: &Slot,
        state: &mut SlotState,
        from: &Path,
        to: ChunkVersion,
    ) -> Result<(), ChunkError> {
        let new_path = chunk_path_for(&self.dirs[state.dir].path, id, to);
        fs::rename(from, &new_path).map_err(|e| ChunkError::io(id, from, e))?;
        state.version = to;
        slot.name_unsynced.store(true, Ordering::Relaxed);
        Ok(())
    }

    /// A chunk whose file disappeared behind the store's back (deleted by hand) leaves the index,
    /// so `list` stops reporting it.
    fn forget_if_vanished<T>(&self, id: ChunkId, slot: &Arc<Slot>, result: &Result<T, ChunkError>) {
        if !matches!(result, Err(ChunkError::NotFound { .. })) {
            return;
        }
        let mut state = slot.exclusive();
        if state.removed {
            return;
        }
        let path = self.path_of(id, &state);
        if fs::symlink_metadata(&path).is_err_and(|e| e.kind() == io::ErrorKind::NotFound) {
            tracing::warn!(
                chunk = %id,
                path = %path.display(),
                "chunk file vanished; forgetting the chunk"
            );
            state.removed = true;
            drop(state);
            self.index.remove(id, slot);
        }
    }

    fn pick_dir(&self) -> Option<usize> {
        let candidates: Vec<(bool, Option<u64>)> = self
            .dirs
            .iter()
            .map(|dir| {
                let available = if dir.takes_new_chunks() {
                    fs_space(&dir.path).ok().map(|space| space.available)
                } else {
                    None
                };
                (!dir.takes_new_chunks(), available)
            })
            .collect();
        pick_dir_for_new_chunk(&candidates)
    }

    fn path_of(&self, id: ChunkId, state: &SlotState) -> PathBuf {
        chunk_path_for(&self.dirs[state.dir].path, id, state.version)
    }
}
