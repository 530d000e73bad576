//! FUSE mounts: whether a path is mounted (from `/proc/self/mountinfo`), detaching a leftover
//! mount, and a mount process that unmounts when stopped or dropped.

use std::ffi::CString;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use anyhow::{Context, bail};
use elkfs_common::mount_table;

use crate::interrupt::{self, Role};
use crate::process::{Daemon, Ending, STOP_TIMEOUT};

/// How long a mount may take to appear.
pub const MOUNT_TIMEOUT: Duration = Duration::from_secs(30);

/// Whether `path` (absolute, canonical) is a mountpoint now.
pub fn is_mounted(path: &Path) -> anyhow::Result<bool> {
    mount_table::is_mount_point(path).context("reading /proc/self/mountinfo")
}

/// Detaches `path` (`umount2(MNT_DETACH)`) if it is still mounted.
pub fn detach_if_mounted(path: &Path) -> anyhow::Result<()> {
    if !is_mounted(path)? {
        return Ok(());
    }
    let c_path = CString::new(path.as_os_str().as_bytes())
        .with_context(|| format!("{} contains a NUL byte", path.display()))?;
    // SAFETY: `c_path` is a valid NUL-terminated string that outlives the call.
    let result = unsafe { libc::umount2(c_path.as_ptr(), libc::MNT_DETACH) };
    if result != 0 {
        return Err(std::io::Error::last_os_error())
            .with_context(|| format!("umount2({}, MNT_DETACH)", path.display()));
    }
    Ok(())
}

/// A FUSE mount served by a process of ours: stopping it unmounts (the process unmounts on
/// SIGTERM; a leftover mount is detached).
pub struct MountProcess {
    daemon: Daemon,
    path: PathBuf,
    /// Whether an exit status other than 0 after SIGTERM is a problem.
    strict_exit: bool,
}

impl MountProcess {
    /// Starts `command`, which mounts at `path` (an existing, canonical directory); with
    /// `strict_exit`, exiting with a status other than 0 on SIGTERM is reported as a problem.
    pub fn spawn(
        name: &str,
        command: Command,
        path: &Path,
        log: &Path,
        strict_exit: bool,
    ) -> anyhow::Result<Self> {
        interrupt::add_mount(path);
        let daemon = match Daemon::spawn(name, command, Role::Mount, log) {
            Ok(daemon) => daemon,
            Err(e) => {
                interrupt::remove_mount(path);
                return Err(e);
            }
        };
        Ok(MountProcess {
            daemon,
            path: path.to_path_buf(),
            strict_exit,
        })
    }

    /// Waits until the mountpoint shows up in mountinfo.
    pub fn wait_mounted(&mut self) -> anyhow::Result<()> {
        let path = self.path.clone();
        self.daemon
            .wait_for("mounting", MOUNT_TIMEOUT, || is_mounted(&path))
    }

    /// The mountpoint.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The process serving the mount.
    pub fn daemon_mut(&mut self) -> &mut Daemon {
        &mut self.daemon
    }

    /// Stops the process (which unmounts) and detaches the mountpoint if it is still there;
    /// returns what went wrong, if anything.
    pub fn unmount(&mut self) -> Option<String> {
        let ending = self.daemon.stop(STOP_TIMEOUT);
        let mut problem = match ending {
            Ending::Exited(_) if !self.strict_exit => None,
            ending => ending.problem(self.daemon.name()),
        };
        match is_mounted(&self.path) {
            Ok(false) => interrupt::remove_mount(&self.path),
            Ok(true) | Err(_) => match detach_if_mounted(&self.path) {
                Ok(()) => {
                    interrupt::remove_mount(&self.path);
                    problem.get_or_insert_with(|| {
                        format!(
                            "{} was still mounted after its process ended",
                            self.path.display()
                        )
                    });
                }
                Err(e) => problem = Some(format!("{e:#}")),
            },
        }
        problem
    }
}

impl Drop for MountProcess {
    fn drop(&mut self) {
        if let Some(problem) = self.unmount() {
            eprintln!("elkfs-bench: {problem}");
        }
    }
}

/// Makes `path` and returns its canonical form (what mountinfo shows).
pub fn make_mountpoint(path: &Path) -> anyhow::Result<PathBuf> {
    std::fs::create_dir_all(path).with_context(|| format!("creating {}", path.display()))?;
    let canonical = path
        .canonicalize()
        .with_context(|| format!("resolving {}", path.display()))?;
    if is_mounted(&canonical)? {
        bail!("{} is already a mountpoint", canonical.display());
    }
    Ok(canonical)
}
