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
//! kernels without direct I/O or `cachestat` (Linux 6.5) read through the cache too. Whether a
//! read may go directly at all (not data read again lately, see `read_again.rs`) is the store's
//! choice.

use std::fs::File;
use std::io;
use std::mem::MaybeUninit;
use std::ops::Range;
use std::os::fd::AsRawFd;

use crate::nowait;
use crate::o_direct::{ALIGN, MIN_DIRECT, padding, with_o_direct};

/// Appends up to `len` bytes of `file` from `pos` to `buf`, read from the disk directly, and
/// returns where in `buf` they are (fewer at the end of the file): after up to 4 KiB of zeros,
/// where the data starts at an aligned address, so that it need not be moved (the caller hands
/// out a slice of `buf`). `None`, with `buf` unchanged, when the read
/// is not one to read directly (see the module's comment) or the direct read fails in any way:
/// the caller then reads it through the page cache, which reports a failing disk as before.
/// `file` must be the caller's own open file: `O_DIRECT` is set on it for the time of the read.
pub(crate) fn read_uncached(
    file: &File,
    buf: &mut Vec<u8>,
    len: usize,
    pos: u64,
) -> Option<Range<usize>> {
    if len < MIN_DIRECT || pos % ALIGN as u64 != 0 || !mostly_uncached(file, pos, len as u64) {
        return None;
    }
    let rounded = len.next_multiple_of(ALIGN);
    let start = buf.len();
    buf.reserve(rounded + ALIGN);
    let spare = buf.spare_capacity_mut();
    let skip = padding(spare.as_ptr().cast());
    spare[..skip].fill(MaybeUninit::new(0));
    let target = &mut spare[skip..skip + rounded];
    let direct = with_o_direct(file, |file| fill_direct(file, target, pos))?.ok()?;
    // Short of `len`: the end of the file, or a direct read that came back short before it
    // (some network file systems); the page cache reads the rest, if any.
    let got = if direct < len {
        direct + nowait::fill(file, &mut target[direct..len], pos + direct as u64, false).ok()?
    } else {
        len
    };
    // SAFETY: the first `skip` bytes of the spare capacity were zeroed above and the `got`
    // after them filled by the reads.
    unsafe { buf.set_len(start + skip + got) };
    Some(start + skip..start + skip + got)
}

/// Direct `pread`s into `buf` (aligned in address and length) until it is full, the file ends
/// or a read comes back short; the bytes read.
fn fill_direct(file: &File, buf: &mut [MaybeUninit<u8>], pos: u64) -> io::Result<usize> {
    let mut total = 0;
    while total < buf.len() {
        match nowait::pread(file, &mut buf[total..], pos + total as u64, false) {
            Ok(0) => break,
            Ok(n) => {
                total += n;
                if n % ALIGN != 0 {
                    break;
                }
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(total)
}

/// Whether the page cache holds at most an eighth of the pages of `file` in `pos..pos + len`
/// and none of them waits to be written. False where that cannot be found out.
fn mostly_uncached(file: &File, pos: u64, len: u64) -> bool {
    // SAFETY: sysconf only reads a system setting.
    let page = u64::try_from(unsafe { libc::sysconf(libc::_SC_PAGESIZE) }).unwrap_or(0);
    if page == 0 {
        return false;
    }
    let pages = len.div_ceil(page);
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

/// What the page cache holds of `file` in `pos..pos + len` (`cachestat`); `Unsupported` on an
/// architecture whose number for the call is not known here.
fn cache_stat(file: &File, pos: u64, len: u64) -> io::Result<CacheStat> {
    let Some(number) = CACHESTAT else {
        return Err(io::ErrorKind::Unsupported.into());
    };
    /// `struct cachestat_range` of the kernel's ABI.
    #[repr(C)]
    struct Range {
        off: u64,
        len: u64,
    }
    let range = Range { off: pos, len };
    let mut stat = CacheStat::default();
    // SAFETY: `range` and `stat` are live structs of the layout the kernel expects; it only
    // reads the first and writes the second.
    let rc = unsafe {
        libc::syscall(
            number,
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

/// The number of `cachestat` (Linux 6.5): 451 on the architectures that share the common
/// system call table.
const CACHESTAT: Option<libc::c_long> = if cfg!(any(
    target_arch = "x86_64",
    target_arch = "x86",
    target_arch = "aarch64",
    target_arch = "arm",
    target_arch = "riscv64",
    target_arch = "loongarch64",
    target_arch = "powerpc64",
    target_arch = "s390x"
)) {
    Some(451)
} else {
    None
};

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs::OpenOptions;
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
        let got = read_uncached(&file, &mut buf, len, 4096).expect("read directly");
        assert_eq!(got.len(), len);
        assert!(got.start >= 6 && got.start < 6 + ALIGN);
        assert_eq!(padding(buf[got.start..].as_ptr()), 0, "the data is aligned");
        // SAFETY: F_GETFL only reads the open descriptor's flags.
        let flags = unsafe { libc::fcntl(file.as_raw_fd(), libc::F_GETFL) };
        assert_eq!(flags & libc::O_DIRECT, 0, "the file's flags are put back");
        assert_eq!(&buf[..6], b"before");
        assert!(buf[got] == bytes[4096..4096 + len], "the bytes read");
        assert_eq!(
            cache_stat(&file, 0, bytes.len() as u64).unwrap().cache,
            0,
            "a direct read leaves nothing in the page cache"
        );
        let mut tail = Vec::new();
        let at = bytes.len() - MIN_DIRECT - 100;
        let from = at / 4096 * 4096;
        let got = read_uncached(&file, &mut tail, 2 * MIN_DIRECT, from as u64).expect("direct");
        assert_eq!(got.len(), bytes.len() - from, "short at the end");
        assert!(tail[got] == bytes[from..]);
    }

    #[test]
    fn small_unaligned_partly_cached_or_dirty_reads_are_left_to_the_page_cache() {
        let Some((dir, file, _bytes)) = uncached_file(2 << 20) else {
            return;
        };
        let mut buf = Vec::new();
        assert_eq!(read_uncached(&file, &mut buf, MIN_DIRECT - 1, 0), None);
        assert_eq!(read_uncached(&file, &mut buf, MIN_DIRECT, 512), None);
        let mut quarter = vec![0u8; MIN_DIRECT / 4];
        file.read_exact_at(&mut quarter, 0).unwrap();
        assert_eq!(
            read_uncached(&file, &mut buf, MIN_DIRECT, 0),
            None,
            "a quarter cached"
        );
        let writer = OpenOptions::new()
            .write(true)
            .open(dir.path().join("data"))
            .unwrap();
        writer.write_all_at(b"x", (1 << 20) + 5).unwrap();
        // Unless something wrote it back meanwhile (a `sync` elsewhere on the machine).
        if cache_stat(&file, 1 << 20, MIN_DIRECT as u64).unwrap().dirty > 0 {
            assert_eq!(
                read_uncached(&file, &mut buf, MIN_DIRECT, 1 << 20),
                None,
                "one page dirty"
            );
        }
        assert!(buf.is_empty());
        assert_eq!(
            read_uncached(&file, &mut buf, MIN_DIRECT, 1 << 21).map(|r| r.len()),
            Some(0),
            "nothing past the end"
        );
    }
}
