//! Mounting through `/dev/fuse` directly (as root), so the mount table shows the filesystem as
//! `fuse.elkfs` with its source, as `mount(8)` and `df` users expect. Non-root mounts go through
//! fuser and `fusermount3` instead.

use std::ffi::CString;
use std::fs::OpenOptions;
use std::io;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

/// The filesystem type in the mount table.
pub const FS_TYPE: &str = "fuse.elkfs";

/// What to mount.
pub struct KernelMount<'a> {
    /// The source shown in the mount table (`host:port:/subdir`).
    pub source: &'a str,
    /// Where.
    pub mount_point: &'a Path,
    /// Read-only.
    pub read_only: bool,
    /// Let other users in.
    pub allow_other: bool,
}

fn cstring(bytes: &[u8]) -> io::Result<CString> {
    CString::new(bytes)
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "NUL byte in a mount argument"))
}

/// Opens `/dev/fuse` and mounts it; returns the device to serve.
pub fn mount(spec: &KernelMount<'_>) -> io::Result<OwnedFd> {
    let dev = OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(libc::O_CLOEXEC)
        .open("/dev/fuse")?;
    // SAFETY: geteuid/getegid have no preconditions.
    let (uid, gid) = unsafe { (libc::geteuid(), libc::getegid()) };
    let mut data = format!(
        "fd={},rootmode=40000,user_id={uid},group_id={gid},default_permissions",
        dev.as_raw_fd()
    );
    if spec.allow_other {
        data.push_str(",allow_other");
    }
    let mut flags = libc::MS_NOSUID | libc::MS_NODEV;
    if spec.read_only {
        flags |= libc::MS_RDONLY;
    }
    let source = cstring(spec.source.as_bytes())?;
    let target = cstring(spec.mount_point.as_os_str().as_bytes())?;
    let fstype = cstring(FS_TYPE.as_bytes())?;
    let data = cstring(data.as_bytes())?;
    // SAFETY: every pointer is a valid NUL-terminated string that outlives the call.
    let rc = unsafe {
        libc::mount(
            source.as_ptr(),
            target.as_ptr(),
            fstype.as_ptr(),
            flags,
            data.as_ptr().cast(),
        )
    };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(OwnedFd::from(dev))
}

/// Unmounts, lazily if the mount is still busy.
pub fn unmount(mount_point: &Path) -> io::Result<()> {
    let target = cstring(mount_point.as_os_str().as_bytes())?;
    // SAFETY: a valid NUL-terminated path.
    if unsafe { libc::umount2(target.as_ptr(), 0) } == 0 {
        return Ok(());
    }
    let first = io::Error::last_os_error();
    if first.raw_os_error() == Some(libc::EINVAL) || first.raw_os_error() == Some(libc::ENOENT) {
        return Err(first);
    }
    // SAFETY: as above.
    if unsafe { libc::umount2(target.as_ptr(), libc::MNT_DETACH) } == 0 {
        return Ok(());
    }
    Err(io::Error::last_os_error())
}
