//! How far ahead of a sequential reader the kernel reads this mount's files. Linux gives every
//! FUSE mount 128 KiB of read-ahead, so a sequential reader waits for a round trip to a
//! chunkserver every 128 KiB; a few MiB keep several 1 MiB reads in flight. The setting lives
//! with the mount's device in `/sys/class/bdi`, which only root may change.

use std::io;
use std::path::{Path, PathBuf};

use elkfs_common::mount_table;

/// Sets the read-ahead of the FUSE mount at `mount_point` (canonical) to `kib` KiB.
pub fn set(mount_point: &Path, kib: u32) -> io::Result<()> {
    let entry = mount_table::mount_at(mount_point)?
        .filter(|e| e.fs_type.starts_with("fuse"))
        .ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::NotFound,
                "the mount is not in /proc/self/mountinfo",
            )
        })?;
    std::fs::write(setting_file(&entry.device), format!("{kib}\n"))
}

/// The file that holds the read-ahead of the device `MAJOR:MINOR`.
fn setting_file(device: &str) -> PathBuf {
    Path::new("/sys/class/bdi")
        .join(device)
        .join("read_ahead_kb")
}
