//! Can this machine run FUSE end-to-end tests? Checked up front so a test can skip or fail with
//! an explanation rather than a mount error.

use std::fs::OpenOptions;
use std::os::unix::fs::FileTypeExt;
use std::path::Path;

const FUSE_DEVICE: &str = "/dev/fuse";

/// `Ok` when mounts can be made the way the harness makes them (as root, straight through
/// `/dev/fuse`); otherwise what is missing.
pub fn fuse_available() -> Result<(), String> {
    let device = Path::new(FUSE_DEVICE);
    let meta = device.metadata().map_err(|e| {
        format!("{FUSE_DEVICE} is missing ({e}): load the fuse module or pass the device to the container")
    })?;
    if !meta.file_type().is_char_device() {
        return Err(format!("{FUSE_DEVICE} is not a character device"));
    }
    // SAFETY: geteuid(2) has no preconditions and cannot fail.
    let euid = unsafe { libc::geteuid() };
    if euid != 0 {
        return Err(format!(
            "the tests run as uid {euid}, not root: mounting through {FUSE_DEVICE} without \
             fusermount3 needs root"
        ));
    }
    OpenOptions::new()
        .read(true)
        .write(true)
        .open(device)
        .map(drop)
        .map_err(|e| {
            format!("{FUSE_DEVICE} cannot be opened ({e}); is it allowed in this container?")
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_with_a_reason_either_way() {
        match fuse_available() {
            Ok(()) => assert!(Path::new(FUSE_DEVICE).exists()),
            Err(reason) => assert!(reason.contains(FUSE_DEVICE), "{reason}"),
        }
    }
}
