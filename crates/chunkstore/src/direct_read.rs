//! Large reads of chunk data that the page cache does not hold, read from the disk directly
//! (`O_DIRECT`) into the reader's buffer.
//!
//! A read through the page cache fills a page cache page from the disk, then copies it out.
//! Where free memory is cold (a virtual machine that hands freed memory back to its host), taking
//! those pages costs a chunkserver more CPU than the disk read itself, for data a streaming
//! reader does not ask for again. So a large read of which the cache holds next to nothing goes
//! to the disk directly. A range with a page waiting to be written (data just written), or more
//! than an eighth of it cached (fetched ahead, read lately), is read through the cache as
//! before: such a read never waits for a writeback and seldom rereads from the disk what is in
//! memory. (A few cached pages do not count: reading a chunk's header and hashes makes the
//! kernel read ahead into its first block.) Small reads, unaligned ones, and file systems or
//! kernels without direct I/O or `cachestat` (Linux 6.5) read through the cache too.

use std::fs::{File, OpenOptions};
use std::io;
use std::mem::MaybeUninit;
use std::os::fd::AsRawFd;
use std::os::unix::fs::OpenOptionsExt;

use crate::nowait;

/// Alignment of a direct read's file offset, length and memory: the page size, which covers
/// every logical block size a disk reports.
const ALIGN: usize = 4096;

/// The smallest read worth reading directly: below it the read is small, and its data more
/// likely read again soon from the cache.
const MIN_DIRECT: usize = 256 * 1024;

/// Appends up to `len` bytes of `file` from `pos` to `buf`, read from the disk directly, and
/// returns how many (fewer at the end of the file). `None`, with `buf` unchanged, when the read
/// is not one to read directly (see the module's comment): the caller reads it through the page
/// cache.
pub(crate) fn read_uncached(
    file: &File,
    buf: &mut Vec<u8>,
    len: usize,
    pos: u64,
) -> io::Result<Option<usize>> {
    if len < MIN_DIRECT || pos % ALIGN as u64 != 0 {
        return Ok(None);
    }
    if !mostly_uncached(file, pos, len as u64) {
        return Ok(None);
    }
    // A descriptor of its own: `O_DIRECT` on the caller's would change how every other user of
    // that open file reads and writes.
    let Ok(direct) = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_DIRECT | libc::O_CLOEXEC)
        .open(format!("/proc/self/fd/{}", file.as_raw_fd()))
    else {
        return Ok(None);
    };
    let rounded = len.next_multiple_of(ALIGN);
    let start = buf.len();
    buf.reserve(rounded + ALIGN);
    let spare = buf.spare_capacity_mut();
    let skip = padding(spare.as_ptr().cast());
    spare[..skip].fill(MaybeUninit::new(0));
    let Some(got) = fill_direct(&direct, &mut spare[skip..skip + rounded], pos)? else {
        return Ok(None);
    };
    let got = got.min(len);
    // SAFETY: the first `skip` bytes of the spare capacity were zeroed above and the `got`
    // after them filled by `fill_direct`.
    unsafe { buf.set_len(start + skip + got) };
    buf.drain(start..start + skip);
    Ok(Some(got))
}

/// Direct `pread`s into `buf` (aligned in address and length) until it is full or the file
/// ends; the bytes read. `None` if the file system refuses direct I/O.
fn fill_direct(file: &File, buf: &mut [MaybeUninit<u8>], pos: u64) -> io::Result<Option<usize>> {
    let mut total = 0;
    while total < buf.len() {
        match nowait::pread(file, &mut buf[total..], pos + total as u64, false) {
            Ok(0) => break,
            Ok(n) => {
                total += n;
                // A direct read comes back short only at the end of the file.
                if n % ALIGN != 0 {
                    break;
                }
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) if matches!(e.raw_os_error(), Some(libc::EINVAL | libc::EOPNOTSUPP)) => {
                return Ok(None);
            }
            Err(e) => return Err(e),
        }
    }
    Ok(Some(total))
}

/// Whether the page cache holds at most an eighth of the pages of `file` in `pos..pos + len`
/// and none of them waits to be written. False where that cannot be found out.
fn mostly_uncached(file: &File, pos: u64, len: u64) -> bool {
    let pages = len.div_ceil(ALIGN as u64);
    cache_stat(file, pos, len)
        .is_ok_and(|s| s.dirty == 0 && s.writeback == 0 && s.cache <= pages / 8)
}

/// `struct cachestat` of the kernel's ABI: pages of a range in the page cache, and of those the
/// ones dirty and under writeback.
#[repr(C)]
#[derive(Default)]
struct CacheStat {
    cache: u64,
    dirty: u64,
    writeback: u64,
    evicted: u64,
    recently_evicted: u64,
}

/// What the page cache holds of `file` in `pos..pos + len` (`cachestat`).
fn cache_stat(file: &File, pos: u64, len: u64) -> io::Result<CacheStat> {
    /// `struct cachestat_range` of the kernel's ABI.
    #[repr(C)]
    struct Range {
        off: u64,
        len: u64,
    }
    /// The system call's number on every architecture Linux has added it to since 6.5.
    const SYS_CACHESTAT: libc::c_long = 451;
    let range = Range { off: pos, len };
    let mut stat = CacheStat::default();
    // SAFETY: `range` and `stat` are live structs of the layout the kernel expects; it only
    // reads the first and writes the second.
    let rc = unsafe {
        libc::syscall(
            SYS_CACHESTAT,
            file.as_raw_fd(),
            &range as *const Range,
            &mut stat as *mut CacheStat,
            0,
        )
    };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(stat)
}

/// Bytes from `ptr` to the next [`ALIGN`]ed address (0 when it is aligned).
fn padding(ptr: *const u8) -> usize {
    (ALIGN - ptr as usize % ALIGN) % ALIGN
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;
    use std::os::unix::fs::FileExt;

    /// A file of `len` position-dependent bytes, written to the disk and dropped from the page
    /// cache; `None` where the directory's file system keeps files in memory or has no
    /// `cachestat` (nothing here can be read directly then).
    fn uncached_file(len: usize) -> Option<(tempfile::TempDir, File, Vec<u8>)> {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("data");
        let bytes: Vec<u8> = (0..len).map(|i| (i * 7 + i / 4096) as u8).collect();
        let mut file = File::create(&path).unwrap();
        file.write_all(&bytes).unwrap();
        file.sync_all().unwrap();
        // SAFETY: posix_fadvise only reads its arguments; the descriptor is open.
        let rc = unsafe { libc::posix_fadvise(file.as_raw_fd(), 0, 0, libc::POSIX_FADV_DONTNEED) };
        assert_eq!(rc, 0);
        let file = File::open(&path).unwrap();
        match cache_stat(&file, 0, len as u64) {
            Ok(s) if s.cache == 0 => Some((dir, file, bytes)),
            _ => None,
        }
    }

    #[test]
    fn an_uncached_range_is_read_past_the_cache_and_appended_whole() {
        let Some((_dir, file, bytes)) = uncached_file(3 << 20) else {
            return;
        };
        let mut buf = b"before".to_vec();
        let len = MIN_DIRECT + 1000;
        let got = read_uncached(&file, &mut buf, len, 4096).unwrap();
        assert_eq!(got, Some(len));
        assert_eq!(&buf[..6], b"before");
        assert!(buf[6..] == bytes[4096..4096 + len], "the bytes read");
        assert_eq!(
            cache_stat(&file, 0, bytes.len() as u64).unwrap().cache,
            0,
            "a direct read leaves nothing in the page cache"
        );
        let mut tail = Vec::new();
        let at = bytes.len() - MIN_DIRECT - 100;
        let got = read_uncached(&file, &mut tail, 2 * MIN_DIRECT, at as u64 / 4096 * 4096);
        let from = at / 4096 * 4096;
        assert_eq!(got.unwrap(), Some(bytes.len() - from), "short at the end");
        assert!(tail == bytes[from..]);
    }

    #[test]
    fn small_unaligned_partly_cached_or_dirty_reads_are_left_to_the_page_cache() {
        let Some((dir, file, _bytes)) = uncached_file(2 << 20) else {
            return;
        };
        let mut buf = Vec::new();
        assert_eq!(
            read_uncached(&file, &mut buf, MIN_DIRECT - 1, 0).unwrap(),
            None
        );
        assert_eq!(
            read_uncached(&file, &mut buf, MIN_DIRECT, 512).unwrap(),
            None
        );
        let mut quarter = vec![0u8; MIN_DIRECT / 4];
        file.read_exact_at(&mut quarter, 0).unwrap();
        assert_eq!(
            read_uncached(&file, &mut buf, MIN_DIRECT, 0).unwrap(),
            None,
            "a quarter cached"
        );
        let writer = OpenOptions::new()
            .write(true)
            .open(dir.path().join("data"))
            .unwrap();
        writer.write_all_at(b"x", (1 << 20) + 5).unwrap();
        assert_eq!(
            read_uncached(&file, &mut buf, MIN_DIRECT, 1 << 20).unwrap(),
            None,
            "one page dirty"
        );
        assert!(buf.is_empty());
        assert_eq!(
            read_uncached(&file, &mut buf, MIN_DIRECT, 1 << 21).unwrap(),
            Some(0),
            "nothing past the end"
        );
    }
}
