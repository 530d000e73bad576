//! Opening and reading files only as far as the kernel's caches allow: a name not in the dentry
//! cache or a page not in the page cache fails with `WouldBlock` instead of waiting for the disk.
//! This is what lets a chunkserver answer a read of warm data on its network thread. Needs Linux
//! 5.12 (`openat2` with `RESOLVE_CACHED`) and a file system with `RWF_NOWAIT` buffered reads
//! (ext4, XFS, btrfs); elsewhere the calls fail with `Unsupported`.

use std::ffi::CString;
use std::fs::File;
use std::io;
use std::mem::MaybeUninit;
use std::os::fd::{AsRawFd, FromRawFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

/// Opens `path` read-only if every step of its path is in the kernel's caches (`openat2` with
/// `RESOLVE_CACHED`); `WouldBlock` if one is not, `Unsupported` where the kernel cannot (or may
/// not: a seccomp filter, or `O_NOATIME` on a file of another user). `O_NOATIME`, because an
/// access time update is a journal transaction, which may wait for the disk.
pub(crate) fn open_if_cached(path: &Path) -> io::Result<File> {
    let path = CString::new(path.as_os_str().as_bytes())?;
    // SAFETY: `open_how` is a plain C struct of integers, for which all zeros is valid.
    let mut how: libc::open_how = unsafe { std::mem::zeroed() };
    how.flags = (libc::O_RDONLY | libc::O_CLOEXEC | libc::O_NOATIME) as u64;
    how.resolve = libc::RESOLVE_CACHED;
    // SAFETY: `path` is NUL-terminated and `how` a valid `open_how`; both outlive the call, and
    // the kernel only reads them.
    let fd = unsafe {
        libc::syscall(
            libc::SYS_openat2,
            libc::AT_FDCWD,
            path.as_ptr(),
            &how as *const libc::open_how,
            std::mem::size_of::<libc::open_how>(),
        )
    };
    if fd < 0 {
        let e = io::Error::last_os_error();
        return Err(match e.raw_os_error() {
            Some(libc::ENOSYS | libc::EINVAL | libc::E2BIG | libc::EPERM) => unsupported(e),
            _ => e,
        });
    }
    // SAFETY: the descriptor was just opened and nothing else owns it.
    Ok(unsafe { File::from_raw_fd(fd as i32) })
}

/// One `pread` into `buf`, which need not be initialized. With `cached_only` it takes only what
/// the page cache holds (`preadv2` with `RWF_NOWAIT`): fewer bytes than asked where an uncached
/// page starts, `WouldBlock` if the first one is uncached, `Unsupported` if the file system cannot.
/// 0 at the end of the file.
pub(crate) fn pread(
    file: &File,
    buf: &mut [MaybeUninit<u8>],
    offset: u64,
    cached_only: bool,
) -> io::Result<usize> {
    let iov = libc::iovec {
        iov_base: buf.as_mut_ptr().cast(),
        iov_len: buf.len(),
    };
    let offset = libc::off_t::try_from(offset)
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "offset out of range"))?;
    let flags = if cached_only { libc::RWF_NOWAIT } else { 0 };
    // SAFETY: `iov` describes `buf`, which is valid for writes of its length and outlives the
    // call; the kernel only writes bytes into it.
    let n = unsafe { libc::preadv2(file.as_raw_fd(), &iov, 1, offset, flags) };
    if n < 0 {
        let e = io::Error::last_os_error();
        return Err(match e.raw_os_error() {
            Some(libc::EOPNOTSUPP) if cached_only => unsupported(e),
            _ => e,
        });
    }
    Ok(n as usize)
}

/// `pread`s until `buf` is full or the file ends; returns the bytes read, which are the first
/// ones of `buf` and initialized. `cached_only` as in [`pread`].
pub(crate) fn fill(
    file: &File,
    buf: &mut [MaybeUninit<u8>],
    offset: u64,
    cached_only: bool,
) -> io::Result<usize> {
    let mut total = 0;
    while total < buf.len() {
        match pread(file, &mut buf[total..], offset + total as u64, cached_only) {
            Ok(0) => break,
            Ok(n) => total += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(total)
}

/// `e` as an `Unsupported` error: the call cannot work here at all, not worth trying again.
fn unsupported(e: io::Error) -> io::Error {
    io::Error::new(io::ErrorKind::Unsupported, e)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    #[test]
    fn a_file_just_written_opens_and_reads_from_the_caches() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        File::create(&path).unwrap().write_all(b"hello").unwrap();
        let file = match open_if_cached(&path) {
            Err(e) if e.kind() == io::ErrorKind::Unsupported => return,
            other => other.unwrap(),
        };
        let mut buf = Vec::with_capacity(16);
        let n = pread(&file, buf.spare_capacity_mut(), 1, true).unwrap();
        assert_eq!(n, 4);
        // SAFETY: pread filled the first `n` bytes.
        unsafe { buf.set_len(n) };
        assert_eq!(buf, b"ello");
        assert_eq!(pread(&file, buf.spare_capacity_mut(), 5, true).unwrap(), 0);
    }
}
