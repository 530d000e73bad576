//! Raw system calls with their errno as the error, for tests that compare errors exactly, and
//! small helpers around running programs and reading mount tables.

use std::ffi::CString;
use std::fmt;
use std::fs::File;
use std::os::fd::AsRawFd;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

/// An errno value that prints as its name (`EACCES`), so failed comparisons read well.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Errno(pub i32);

impl Errno {
    /// The calling thread's errno.
    pub fn last() -> Errno {
        Errno(std::io::Error::last_os_error().raw_os_error().unwrap_or(0))
    }

    /// The symbolic name, or `errno N`.
    pub fn name(self) -> String {
        let known: &[(i32, &str)] = &[
            (libc::EPERM, "EPERM"),
            (libc::ENOENT, "ENOENT"),
            (libc::EIO, "EIO"),
            (libc::EBADF, "EBADF"),
            (libc::EAGAIN, "EAGAIN"),
            (libc::EACCES, "EACCES"),
            (libc::EBUSY, "EBUSY"),
            (libc::EEXIST, "EEXIST"),
            (libc::EXDEV, "EXDEV"),
            (libc::ENOTDIR, "ENOTDIR"),
            (libc::EISDIR, "EISDIR"),
            (libc::EINVAL, "EINVAL"),
            (libc::EFBIG, "EFBIG"),
            (libc::ENOSPC, "ENOSPC"),
            (libc::EROFS, "EROFS"),
            (libc::EMLINK, "EMLINK"),
            (libc::ERANGE, "ERANGE"),
            (libc::EDEADLK, "EDEADLK"),
            (libc::ENAMETOOLONG, "ENAMETOOLONG"),
            (libc::ENOSYS, "ENOSYS"),
            (libc::ENOTEMPTY, "ENOTEMPTY"),
            (libc::ELOOP, "ELOOP"),
            (libc::ENODATA, "ENODATA"),
            (libc::EOPNOTSUPP, "EOPNOTSUPP"),
            (libc::ENOTCONN, "ENOTCONN"),
            (libc::ECONNABORTED, "ECONNABORTED"),
            (libc::ETXTBSY, "ETXTBSY"),
            (libc::ENXIO, "ENXIO"),
            (libc::E2BIG, "E2BIG"),
            (libc::ESPIPE, "ESPIPE"),
            (libc::EWOULDBLOCK, "EWOULDBLOCK"),
            (libc::EADDRINUSE, "EADDRINUSE"),
        ];
        known
            .iter()
            .find(|(n, _)| *n == self.0)
            .map_or_else(|| format!("errno {}", self.0), |(_, s)| (*s).to_owned())
    }
}

impl fmt::Debug for Errno {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.name())
    }
}

impl fmt::Display for Errno {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.name())
    }
}

/// A system call's result.
pub type Sys<T> = Result<T, Errno>;

/// `Ok(rc)` for a non-negative return value, the errno otherwise.
pub fn check(rc: libc::c_int) -> Sys<libc::c_int> {
    if rc < 0 { Err(Errno::last()) } else { Ok(rc) }
}

/// The errno of a `std::io` error (panics if it is not an OS error).
pub fn io_errno<T>(result: std::io::Result<T>) -> Sys<T> {
    result.map_err(|e| {
        Errno(
            e.raw_os_error()
                .unwrap_or_else(|| panic!("not an OS error: {e}")),
        )
    })
}

/// A path as a C string.
pub fn cpath(path: &Path) -> CString {
    CString::new(path.as_os_str().as_bytes()).expect("path without NUL")
}

fn cstr(s: &str) -> CString {
    CString::new(s).expect("string without NUL")
}

/// `open(2)`, returning the file.
pub fn open(path: &Path, flags: libc::c_int, mode: libc::mode_t) -> Sys<File> {
    let p = cpath(path);
    // SAFETY: `p` is a valid C string; the returned descriptor is owned by the File.
    let fd = check(unsafe { libc::open(p.as_ptr(), flags | libc::O_CLOEXEC, mode) })?;
    use std::os::fd::FromRawFd;
    // SAFETY: `fd` was just opened and is owned by nobody else.
    Ok(unsafe { File::from_raw_fd(fd) })
}

/// `close(2)`, reporting its error (ElkFS reports write-behind failures there, as NFS does).
pub fn close(file: File) -> Sys<()> {
    use std::os::fd::IntoRawFd;
    let fd = file.into_raw_fd();
    // SAFETY: `fd` was owned by `file` and is closed exactly once here.
    check(unsafe { libc::close(fd) }).map(drop)
}

/// `pwrite(2)` of the whole buffer (one call; returns the count written).
pub fn pwrite(file: &File, data: &[u8], offset: u64) -> Sys<usize> {
    // SAFETY: the buffer is valid for `data.len()` bytes.
    let n = unsafe {
        libc::pwrite(
            file.as_raw_fd(),
            data.as_ptr().cast(),
            data.len(),
            offset as libc::off_t,
        )
    };
    if n < 0 {
        Err(Errno::last())
    } else {
        Ok(n as usize)
    }
}

/// `write(2)` (one call).
pub fn write(file: &File, data: &[u8]) -> Sys<usize> {
    // SAFETY: the buffer is valid for `data.len()` bytes.
    let n = unsafe { libc::write(file.as_raw_fd(), data.as_ptr().cast(), data.len()) };
    if n < 0 {
        Err(Errno::last())
    } else {
        Ok(n as usize)
    }
}

/// Reads up to `len` bytes at `offset`, looping over short reads until EOF.
pub fn pread(file: &File, len: usize, offset: u64) -> Sys<Vec<u8>> {
    let mut buf = vec![0u8; len];
    let mut done = 0;
    while done < len {
        // SAFETY: the buffer is valid for `len - done` bytes past `done`.
        let n = unsafe {
            libc::pread(
                file.as_raw_fd(),
                buf[done..].as_mut_ptr().cast(),
                len - done,
                (offset + done as u64) as libc::off_t,
            )
        };
        if n < 0 {
            return Err(Errno::last());
        }
        if n == 0 {
            break;
        }
        done += n as usize;
    }
    buf.truncate(done);
    Ok(buf)
}

/// `lstat(2)`.
pub fn lstat(path: &Path) -> Sys<libc::stat> {
    let p = cpath(path);
    // SAFETY: zeroed `stat` is a valid out-buffer; `p` is a valid C string.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    check(unsafe { libc::lstat(p.as_ptr(), &mut st) })?;
    Ok(st)
}

/// `stat(2)`.
pub fn stat(path: &Path) -> Sys<libc::stat> {
    let p = cpath(path);
    // SAFETY: as in `lstat`.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    check(unsafe { libc::stat(p.as_ptr(), &mut st) })?;
    Ok(st)
}

/// `fstat(2)`.
pub fn fstat(file: &File) -> Sys<libc::stat> {
    // SAFETY: zeroed `stat` is a valid out-buffer.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    check(unsafe { libc::fstat(file.as_raw_fd(), &mut st) })?;
    Ok(st)
}

/// `mknod(2)`.
pub fn mknod(path: &Path, mode: libc::mode_t, dev: libc::dev_t) -> Sys<()> {
    let p = cpath(path);
    // SAFETY: `p` is a valid C string.
    check(unsafe { libc::mknod(p.as_ptr(), mode, dev) }).map(drop)
}

/// `mkdir(2)`.
pub fn mkdir(path: &Path, mode: libc::mode_t) -> Sys<()> {
    let p = cpath(path);
    // SAFETY: `p` is a valid C string.
    check(unsafe { libc::mkdir(p.as_ptr(), mode) }).map(drop)
}

/// `rmdir(2)`.
pub fn rmdir(path: &Path) -> Sys<()> {
    let p = cpath(path);
    // SAFETY: `p` is a valid C string.
    check(unsafe { libc::rmdir(p.as_ptr()) }).map(drop)
}

/// `unlink(2)`.
pub fn unlink(path: &Path) -> Sys<()> {
    let p = cpath(path);
    // SAFETY: `p` is a valid C string.
    check(unsafe { libc::unlink(p.as_ptr()) }).map(drop)
}

/// `link(2)`.
pub fn link(from: &Path, to: &Path) -> Sys<()> {
    let (a, b) = (cpath(from), cpath(to));
    // SAFETY: both are valid C strings.
    check(unsafe { libc::link(a.as_ptr(), b.as_ptr()) }).map(drop)
}

/// `symlink(2)`: a link at `path` pointing to `target`.
pub fn symlink(target: &str, path: &Path) -> Sys<()> {
    let (t, p) = (cstr(target), cpath(path));
    // SAFETY: both are valid C strings.
    check(unsafe { libc::symlink(t.as_ptr(), p.as_ptr()) }).map(drop)
}

/// `readlink(2)`.
pub fn readlink(path: &Path) -> Sys<Vec<u8>> {
    let p = cpath(path);
    let mut buf = vec![0u8; 8192];
    // SAFETY: the buffer is valid for its length.
    let n = unsafe { libc::readlink(p.as_ptr(), buf.as_mut_ptr().cast(), buf.len()) };
    if n < 0 {
        return Err(Errno::last());
    }
    buf.truncate(n as usize);
    Ok(buf)
}

/// `rename(2)`.
pub fn rename(from: &Path, to: &Path) -> Sys<()> {
    renameat2(from, to, 0)
}

/// `renameat2(2)` with `flags` (`RENAME_NOREPLACE`, `RENAME_EXCHANGE`).
pub fn renameat2(from: &Path, to: &Path, flags: libc::c_uint) -> Sys<()> {
    let (a, b) = (cpath(from), cpath(to));
    // SAFETY: both are valid C strings; AT_FDCWD makes them relative to the cwd.
    check(unsafe {
        libc::renameat2(
            libc::AT_FDCWD,
            a.as_ptr(),
            libc::AT_FDCWD,
            b.as_ptr(),
            flags,
        )
    })
    .map(drop)
}

/// `chmod(2)`.
pub fn chmod(path: &Path, mode: libc::mode_t) -> Sys<()> {
    let p = cpath(path);
    // SAFETY: `p` is a valid C string.
    check(unsafe { libc::chmod(p.as_ptr(), mode) }).map(drop)
}

/// `lchown(2)` (`u32::MAX` leaves an id unchanged).
pub fn lchown(path: &Path, uid: u32, gid: u32) -> Sys<()> {
    let p = cpath(path);
    // SAFETY: `p` is a valid C string.
    check(unsafe { libc::lchown(p.as_ptr(), uid, gid) }).map(drop)
}

/// `truncate(2)`.
pub fn truncate(path: &Path, len: u64) -> Sys<()> {
    let p = cpath(path);
    // SAFETY: `p` is a valid C string.
    check(unsafe { libc::truncate(p.as_ptr(), len as libc::off_t) }).map(drop)
}

/// `access(2)`.
pub fn access(path: &Path, mode: libc::c_int) -> Sys<()> {
    let p = cpath(path);
    // SAFETY: `p` is a valid C string.
    check(unsafe { libc::access(p.as_ptr(), mode) }).map(drop)
}

/// A `timespec`.
pub fn ts(sec: i64, nsec: i64) -> libc::timespec {
    libc::timespec {
        tv_sec: sec,
        tv_nsec: nsec,
    }
}

/// `utimensat(2)` on a path; `times` `None` sets both to now.
pub fn utimensat(path: &Path, times: Option<[libc::timespec; 2]>, flags: libc::c_int) -> Sys<()> {
    let p = cpath(path);
    let ptr = times.as_ref().map_or(std::ptr::null(), |t| t.as_ptr());
    // SAFETY: `p` is a valid C string and `ptr` is null or points at two timespecs.
    check(unsafe { libc::utimensat(libc::AT_FDCWD, p.as_ptr(), ptr, flags) }).map(drop)
}

/// `lsetxattr(2)` (does not follow a final symlink) or `setxattr(2)`.
pub fn setxattr(
    path: &Path,
    name: &str,
    value: &[u8],
    flags: libc::c_int,
    follow: bool,
) -> Sys<()> {
    let (p, n) = (cpath(path), cstr(name));
    // SAFETY: valid C strings and a buffer valid for its length.
    let rc = unsafe {
        if follow {
            libc::setxattr(
                p.as_ptr(),
                n.as_ptr(),
                value.as_ptr().cast(),
                value.len(),
                flags,
            )
        } else {
            libc::lsetxattr(
                p.as_ptr(),
                n.as_ptr(),
                value.as_ptr().cast(),
                value.len(),
                flags,
            )
        }
    };
    check(rc).map(drop)
}

/// `getxattr(2)` of the whole value (asks for the size first).
pub fn getxattr(path: &Path, name: &str) -> Sys<Vec<u8>> {
    let (p, n) = (cpath(path), cstr(name));
    loop {
        // SAFETY: a null buffer with size 0 asks for the value's size.
        let size = unsafe { libc::getxattr(p.as_ptr(), n.as_ptr(), std::ptr::null_mut(), 0) };
        if size < 0 {
            return Err(Errno::last());
        }
        let mut buf = vec![0u8; size as usize];
        // SAFETY: the buffer is valid for its length.
        let got =
            unsafe { libc::getxattr(p.as_ptr(), n.as_ptr(), buf.as_mut_ptr().cast(), buf.len()) };
        match got {
            n if n >= 0 => {
                buf.truncate(n as usize);
                return Ok(buf);
            }
            _ if Errno::last() == Errno(libc::ERANGE) => continue,
            _ => return Err(Errno::last()),
        }
    }
}

/// `getxattr(2)` into a buffer of exactly `size` bytes (to see ERANGE).
pub fn getxattr_sized(path: &Path, name: &str, size: usize) -> Sys<usize> {
    let (p, n) = (cpath(path), cstr(name));
    let mut buf = vec![0u8; size];
    let ptr = if size == 0 {
        std::ptr::null_mut()
    } else {
        buf.as_mut_ptr()
    };
    // SAFETY: `ptr` is null with size 0 or valid for `size` bytes.
    let got = unsafe { libc::getxattr(p.as_ptr(), n.as_ptr(), ptr.cast(), size) };
    if got < 0 {
        Err(Errno::last())
    } else {
        Ok(got as usize)
    }
}

/// `listxattr(2)`, names sorted.
pub fn listxattr(path: &Path) -> Sys<Vec<String>> {
    let p = cpath(path);
    // SAFETY: a null buffer with size 0 asks for the list's size.
    let size = unsafe { libc::listxattr(p.as_ptr(), std::ptr::null_mut(), 0) };
    if size < 0 {
        return Err(Errno::last());
    }
    let mut buf = vec![0u8; size as usize + 1024];
    // SAFETY: the buffer is valid for its length.
    let got = unsafe { libc::listxattr(p.as_ptr(), buf.as_mut_ptr().cast(), buf.len()) };
    if got < 0 {
        return Err(Errno::last());
    }
    buf.truncate(got as usize);
    let mut names: Vec<String> = buf
        .split(|&b| b == 0)
        .filter(|s| !s.is_empty())
        .map(|s| String::from_utf8_lossy(s).into_owned())
        .collect();
    names.sort();
    Ok(names)
}

/// `removexattr(2)`.
pub fn removexattr(path: &Path, name: &str) -> Sys<()> {
    let (p, n) = (cpath(path), cstr(name));
    // SAFETY: valid C strings.
    check(unsafe { libc::removexattr(p.as_ptr(), n.as_ptr()) }).map(drop)
}

/// `fallocate(2)`.
pub fn fallocate(file: &File, mode: libc::c_int, offset: u64, len: u64) -> Sys<()> {
    // SAFETY: plain system call on an owned descriptor.
    check(unsafe {
        libc::fallocate(
            file.as_raw_fd(),
            mode,
            offset as libc::off_t,
            len as libc::off_t,
        )
    })
    .map(drop)
}

/// `statvfs(3)`.
pub fn statvfs(path: &Path) -> Sys<libc::statvfs> {
    let p = cpath(path);
    // SAFETY: zeroed `statvfs` is a valid out-buffer; `p` is a valid C string.
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    check(unsafe { libc::statvfs(p.as_ptr(), &mut st) })?;
    Ok(st)
}

/// The names in a directory (without `.` and `..`), sorted.
pub fn list(dir: &Path) -> Sys<Vec<String>> {
    let mut names = Vec::new();
    for entry in io_errno(std::fs::read_dir(dir))? {
        let entry = io_errno(entry)?;
        names.push(entry.file_name().to_string_lossy().into_owned());
    }
    names.sort();
    Ok(names)
}

/// A file's type bits as a word (`file`, `dir`, `symlink`, `fifo`, `socket`, `chr`, `blk`).
pub fn kind(mode: libc::mode_t) -> &'static str {
    match mode & libc::S_IFMT {
        libc::S_IFREG => "file",
        libc::S_IFDIR => "dir",
        libc::S_IFLNK => "symlink",
        libc::S_IFIFO => "fifo",
        libc::S_IFSOCK => "socket",
        libc::S_IFCHR => "chr",
        libc::S_IFBLK => "blk",
        _ => "unknown",
    }
}
