//! Is a path still a mount point, and lazily detaching it if so: a dead FUSE mount left behind
//! breaks removing the temp dir and confuses later tests.

use std::ffi::CString;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

/// The mount points listed in a `/proc/self/mountinfo` text (field 5, octal escapes decoded).
pub(crate) fn mount_points(mountinfo: &str) -> Vec<PathBuf> {
    mountinfo
        .lines()
        .filter_map(|line| line.split(' ').nth(4))
        .map(|field| PathBuf::from(unescape(field)))
        .collect()
}

/// Whether `path` is a mount point in this process's mount namespace.
pub(crate) fn is_mounted(path: &Path) -> io::Result<bool> {
    let text = std::fs::read_to_string("/proc/self/mountinfo")?;
    Ok(mount_points(&text).iter().any(|p| p == path))
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

/// Decodes the `\ooo` octal escapes the kernel uses for space, tab, newline and backslash.
fn unescape(field: &str) -> std::ffi::OsString {
    use std::os::unix::ffi::OsStringExt;
    let bytes = field.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let octal = bytes
            .get(i + 1..i + 4)
            .filter(|d| d.iter().all(|b| (b'0'..=b'7').contains(b)));
        match (bytes[i], octal) {
            (b'\\', Some(digits)) => {
                let value = digits.iter().fold(0u32, |v, d| v * 8 + u32::from(d - b'0'));
                out.push(u8::try_from(value).unwrap_or(b'?'));
                i += 4;
            }
            (b, _) => {
                out.push(b);
                i += 1;
            }
        }
    }
    std::ffi::OsString::from_vec(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    const MOUNTINFO: &str = "\
22 1 8:1 / / rw,relatime shared:1 - ext4 /dev/sda1 rw
35 22 0:31 / /tmp/elkfs-test-ab12/mnt0 rw,nosuid,nodev,relatime shared:80 - fuse.elkfs elkfs rw,user_id=0,group_id=0
36 22 0:32 / /tmp/with\\040space/mnt\\134x rw,relatime - fuse.elkfs elkfs rw
";

    #[test]
    fn lists_mount_points() {
        let points = mount_points(MOUNTINFO);
        assert_eq!(
            points,
            vec![
                PathBuf::from("/"),
                PathBuf::from("/tmp/elkfs-test-ab12/mnt0"),
                PathBuf::from("/tmp/with space/mnt\\x"),
            ]
        );
    }

    #[test]
    fn a_lone_backslash_is_kept() {
        assert_eq!(unescape("/a\\b\\04"), std::ffi::OsString::from("/a\\b\\04"));
    }

    #[test]
    fn root_is_mounted_and_a_fresh_dir_is_not() {
        assert!(is_mounted(Path::new("/")).expect("reading mountinfo"));
        let dir = tempfile::tempdir().expect("temp dir");
        assert!(!is_mounted(dir.path()).expect("reading mountinfo"));
        assert!(!detach_if_mounted(dir.path()).expect("nothing to detach"));
    }
}
