//! What direct reads and writes of chunk files (`direct_read.rs`, `direct_write.rs`) share:
//! their alignment, the size worth doing directly, and `O_DIRECT` set on a chunk file's own
//! descriptor for the time of one operation.

use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;

/// Alignment of a direct read's or write's file offset, length and memory: 4 KiB, a multiple
/// of every logical block size disks report.
pub(crate) const ALIGN: usize = 4096;

/// The smallest (aligned) range worth reading or writing directly: below it the operation is
/// small, and its data more likely read again soon from the page cache.
pub(crate) const MIN_DIRECT: usize = 256 * 1024;

/// Bytes from `ptr` to the next [`ALIGN`]ed address (0 when it is aligned).
pub(crate) fn padding(ptr: *const u8) -> usize {
    (ALIGN - ptr as usize % ALIGN) % ALIGN
}

/// Runs `op` with `O_DIRECT` set on `file`, then puts its flags back. `None` if the flag
/// cannot be set (the caller goes through the page cache); else what `op` returned, or the
/// error of putting the flags back, which would leave every later unaligned read or write of
/// the file failing. `file` must be the caller's own open file: the flag is the open file's,
/// so any other user of it would see it too.
pub(crate) fn with_o_direct<T>(
    file: &File,
    op: impl FnOnce(&File) -> io::Result<T>,
) -> Option<io::Result<T>> {
    let fd = file.as_raw_fd();
    // SAFETY: fcntl with F_GETFL only reads the descriptor's flags; the descriptor is open.
    let flags = unsafe { libc::fcntl(fd, libc::F_GETFL) };
    if flags < 0 {
        return None;
    }
    // SAFETY: F_SETFL changes only this open file's status flags, restored below.
    if unsafe { libc::fcntl(fd, libc::F_SETFL, flags | libc::O_DIRECT) } != 0 {
        return None;
    }
    let result = op(file);
    // SAFETY: as above, the flags read before the operation put back.
    if unsafe { libc::fcntl(fd, libc::F_SETFL, flags) } != 0 {
        let e = io::Error::last_os_error();
        tracing::error!(error = %e, "could not clear O_DIRECT on a chunk file");
        return Some(Err(e));
    }
    Some(result)
}
