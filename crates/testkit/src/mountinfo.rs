//! Is a path still a mount point, and lazily detaching it if so: a dead FUSE mount left behind
//! breaks removing the temp dir and confuses later tests.

use std::ffi::CString;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

/// Whether `path` is a mount point in this process's mount namespace.
pub(crate) fn is_mounted(path: &Path) -> io::Result<bool> {
    elkfs_common::mount_table::is_mount_point(path)
}

/// Detaches the mount at `path` (`umount2(MNT_DETACH)`) if there is one; returns whether there was.
pub(crate) fn detach_if_mounted(path: &Path) -> io::Result<bool> {
    if !is_mounted(path)? {
        return Ok(false);
    }
    let c_path = CString::new(path.as_os_str().as_bytes())
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
    // SAFETY: `c_path` is a valid NUL-terminated string that outlives the call.
    let rc = unsafe { libc::umount2(c_path.as_ptr(), libc::MNT_DETACH) };
    if rc == 0 {
        return Ok(true);
    }
    let err = io::Error::last_os_error();
    // EINVAL: no longer a mount point (it went away between the check and the call).
    if err.raw_os_error() == Some(libc::EINVAL) {
        Ok(false)
    } else {
        Err(err)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn root_is_mounted_and_a_fresh_dir_is_not() {
        assert!(is_mounted(Path::new("/")).expect("reading mountinfo"));
        let dir = tempfile::tempdir().expect("temp dir");
        assert!(!is_mounted(dir.path()).expect("reading mountinfo"));
        assert!(!detach_if_mounted(dir.path()).expect("nothing to detach"));
    }
}
