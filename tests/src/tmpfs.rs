//! Small disks of their own for tests: a size-limited tmpfs, filled up on demand.

use std::ffi::CString;
use std::fs::File;
use std::io::{self, Write};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use tempfile::TempDir;

/// A size-limited tmpfs on a fresh temporary directory: a disk of its own for a chunkserver or
/// a master, whose used percentage the test can read. Unmounted (lazily, should anything still use it)
/// and removed when dropped, also when the test fails; declare it before the cluster so the
/// daemon using it has stopped by then.
pub struct Tmpfs {
    dir: Option<TempDir>,
}

impl Tmpfs {
    /// Mounts a tmpfs of `size_mib` MiB.
    pub fn mount(size_mib: u64) -> Tmpfs {
        let dir = tempfile::Builder::new()
            .prefix("elkfs-e2e-disk-")
            .tempdir()
            .expect("creating a mountpoint");
        if let Err(e) = mount_tmpfs(dir.path(), size_mib, 0) {
            panic!(
                "mounting a {size_mib} MiB tmpfs on {} failed (the end-to-end tests run as root): {e}",
                dir.path().display()
            );
        }
        Tmpfs { dir: Some(dir) }
    }

    /// Makes it `size_mib` MiB (remounted in place: its files stay).
    pub fn resize(&self, size_mib: u64) {
        if let Err(e) = mount_tmpfs(self.path(), size_mib, libc::MS_REMOUNT) {
            panic!(
                "resizing the tmpfs on {} to {size_mib} MiB failed: {e}",
                self.path().display()
            );
        }
    }

    /// Where it is mounted.
    pub fn path(&self) -> &Path {
        self.dir.as_ref().expect("mounted").path()
    }

    /// statvfs: (total bytes, available bytes).
    pub fn space(&self) -> (u64, u64) {
        statvfs(self.path())
    }

    /// Used space in percent, as `df` shows it.
    pub fn used_percent(&self) -> f64 {
        let (total, available) = self.space();
        100.0 * (1.0 - available as f64 / total as f64)
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let Some(dir) = self.dir.take() else { return };
        let target = CString::new(dir.path().as_os_str().as_bytes()).expect("path without NUL");
        // SAFETY: `target` is a valid NUL-terminated path.
        let rc = unsafe { libc::umount2(target.as_ptr(), libc::MNT_DETACH) };
        if rc != 0 {
            eprintln!(
                "unmounting the tmpfs on {} failed: {}",
                dir.path().display(),
                io::Error::last_os_error()
            );
            // Leave the directory alone rather than delete the files of a live mount.
            let _ = dir.keep();
        }
    }
}

/// statvfs(3) of `path`: (total bytes, bytes available to unprivileged users).
pub fn statvfs(path: &Path) -> (u64, u64) {
    let c_path = CString::new(path.as_os_str().as_bytes()).expect("path without NUL");
    // SAFETY: statvfs only writes into `stat`, a plain C struct that may start zeroed.
    unsafe {
        let mut stat: libc::statvfs = std::mem::zeroed();
        if libc::statvfs(c_path.as_ptr(), &mut stat) != 0 {
            panic!(
                "statvfs {} failed: {}",
                path.display(),
                io::Error::last_os_error()
            );
        }
        let fragment = stat.f_frsize as u64;
        (
            stat.f_blocks as u64 * fragment,
            stat.f_bavail as u64 * fragment,
        )
    }
}

/// mount(2) of a tmpfs of `size_mib` MiB on `target`, with `flags` (`MS_REMOUNT` to resize).
fn mount_tmpfs(target: &Path, size_mib: u64, flags: libc::c_ulong) -> io::Result<()> {
    let target = CString::new(target.as_os_str().as_bytes()).expect("path without NUL");
    let options = CString::new(format!("size={size_mib}m,mode=0755")).expect("no NUL");
    // SAFETY: every pointer is a valid NUL-terminated string that outlives the call.
    let rc = unsafe {
        libc::mount(
            c"tmpfs".as_ptr(),
            target.as_ptr(),
            c"tmpfs".as_ptr(),
            flags,
            options.as_ptr().cast(),
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Fills the file system holding `path` with a file of that name until it is full.
pub fn fill_up(path: &Path) {
    let mut f = File::create(path).expect("create the filler");
    let block = vec![0xA5u8; 1 << 20];
    loop {
        match f.write(&block) {
            Ok(0) => break,
            Ok(_) => {}
            Err(e) if e.raw_os_error() == Some(libc::ENOSPC) => break,
            Err(e) => panic!("filling {}: {e}", path.display()),
        }
    }
    match f.sync_all() {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::StorageFull => {}
        Err(e) => panic!("fsync {}: {e}", path.display()),
    }
}
