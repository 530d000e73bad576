//! Opening and reading files only as far as the kernel's caches allow: a name not in the dentry
//! cache or a page not in the page cache fails with `WouldBlock` instead of waiting for the disk.
//! This is what lets a chunkserver answer a read of warm data on its network thread.

use std::ffi::CString;
use std::fs::File;
use std::io;
use std::mem::MaybeUninit;
use std::os::fd::{AsRawFd, FromRawFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

/// Opens `path` read-only if every step of its path is in the kernel's caches (`openat2` with
/// `RESOLVE_CACHED`, Linux 5.12); `WouldBlock` if one is not.
pub(crate) fn open_if_cached(path: &Path) -> io::Result<File> {
    let path = CString::new(path.as_os_str().as_bytes())?;
    // SAFETY: `open_how` is a plain C struct of integers, for which all zeros is valid.
    let mut how: libc::open_how = unsafe { std::mem::zeroed() };
    how.flags = (libc::O_RDONLY | libc::O_CLOEXEC) as u64;
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
        return Err(io::Error::last_os_error());
    }
    // SAFETY: the descriptor was just opened and nothing else owns it.
    Ok(unsafe { File::from_raw_fd(fd as i32) })
}

/// One `pread` into `buf`, which need not be initialized. With `cached_only` it takes only what
/// the page cache holds (`preadv2` with `RWF_NOWAIT`): fewer bytes than asked where an uncached
/// page starts, `WouldBlock` if the first one is uncached. 0 at the end of the file.
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
        return Err(io::Error::last_os_error());
    }
    Ok(n as usize)
}

/// True for the errors of a kernel or file system that cannot do this at all (too old for
/// `openat2` or `RESOLVE_CACHED`, or no `RWF_NOWAIT` on buffered reads): not worth trying again.
pub(crate) fn unsupported(e: &io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(libc::ENOSYS) | Some(libc::EINVAL) | Some(libc::E2BIG) | Some(libc::EOPNOTSUPP)
    )
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
            Err(e) if unsupported(&e) => return,
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
