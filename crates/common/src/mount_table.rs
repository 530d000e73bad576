//! The kernel's table of this process's mounts (`/proc/self/mountinfo`): whether a path is a
//! mount point, and which device a mount is (for its settings under `/sys/class/bdi`). The mount,
//! the test harness and the benchmark all read it.

use std::ffi::OsString;
use std::io;
use std::os::unix::ffi::OsStringExt;
use std::path::{Path, PathBuf};

/// Where the kernel lists the mounts this process sees.
const MOUNTINFO: &str = "/proc/self/mountinfo";

/// One line of the mount table.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MountEntry {
    /// The mount's device as `MAJOR:MINOR`; a FUSE mount's names its directory in
    /// `/sys/class/bdi`.
    pub device: String,
    /// Where it is mounted (escapes decoded).
    pub mount_point: PathBuf,
    /// The filesystem type, such as `ext4` or `fuse.elkfs`.
    pub fs_type: String,
}

/// The entries of a mountinfo text, in its order (a later mount on the same point hides an
/// earlier one); lines that do not parse are left out.
pub fn parse(mountinfo: &str) -> Vec<MountEntry> {
    mountinfo.lines().filter_map(parse_line).collect()
}

/// This process's mount table, read now.
pub fn read() -> io::Result<Vec<MountEntry>> {
    Ok(parse(&std::fs::read_to_string(MOUNTINFO)?))
}

/// Whether `path` (absolute and canonical, as the table has it) is a mount point now.
pub fn is_mount_point(path: &Path) -> io::Result<bool> {
    Ok(read()?.iter().any(|e| e.mount_point == path))
}

/// The visible mount at `path` (absolute and canonical): the last one mounted there.
pub fn mount_at(path: &Path) -> io::Result<Option<MountEntry>> {
    Ok(read()?.into_iter().rev().find(|e| e.mount_point == path))
}

/// `ID PARENT MAJOR:MINOR ROOT MOUNT_POINT OPTIONS [OPTIONAL...] - TYPE SOURCE SUPER_OPTIONS`.
fn parse_line(line: &str) -> Option<MountEntry> {
    let mut fields = line.split(' ');
    let device = fields.nth(2)?.to_string();
    let mount_point = PathBuf::from(unescape(fields.nth(1)?));
    let fs_type = fields.skip_while(|f| *f != "-").nth(1)?.to_string();
    Some(MountEntry {
        device,
        mount_point,
        fs_type,
    })
}

/// Decodes the `\ooo` octal escapes the kernel writes for space, tab, newline and backslash.
pub fn unescape(field: &str) -> OsString {
    let bytes = field.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let octal = bytes
            .get(i + 1..i + 4)
            .filter(|d| bytes[i] == b'\\' && d.iter().all(|c| (b'0'..=b'7').contains(c)));
        match octal {
            Some(digits) => {
                let value = digits.iter().fold(0u32, |v, c| v * 8 + u32::from(c - b'0'));
                out.push(u8::try_from(value).unwrap_or(b'?'));
                i += 4;
            }
            None => {
                out.push(bytes[i]);
                i += 1;
            }
        }
    }
    OsString::from_vec(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    const TABLE: &str = "\
22 1 8:1 / / rw,relatime shared:1 - ext4 /dev/sda1 rw
35 22 0:31 / /tmp/elkfs-test-ab12/mnt0 rw,nosuid,nodev,relatime shared:80 - fuse.elkfs elkfs rw,user_id=0,group_id=0
36 22 0:32 / /tmp/with\\040space/mnt\\134x rw,relatime - fuse.elkfs elkfs rw
37 22 0:33 / /short
";

    #[test]
    fn entries_carry_device_mount_point_and_type() {
        let entries = parse(TABLE);
        let points: Vec<_> = entries.iter().map(|e| e.mount_point.clone()).collect();
        assert_eq!(
            points,
            vec![
                PathBuf::from("/"),
                PathBuf::from("/tmp/elkfs-test-ab12/mnt0"),
                PathBuf::from("/tmp/with space/mnt\\x"),
            ]
        );
        assert_eq!(entries[1].device, "0:31");
        assert_eq!(entries[1].fs_type, "fuse.elkfs");
        assert_eq!(entries[0].fs_type, "ext4");
    }

    #[test]
    fn escapes_are_undone_and_a_lone_backslash_is_kept() {
        assert_eq!(unescape("/mnt/a\\040b"), OsString::from("/mnt/a b"));
        assert_eq!(unescape("a\\134b"), OsString::from("a\\b"));
        assert_eq!(unescape("/a\\b\\04"), OsString::from("/a\\b\\04"));
        assert_eq!(unescape("/x\\"), OsString::from("/x\\"));
    }

    #[test]
    fn the_root_is_a_mount_point_and_a_fresh_dir_is_not() {
        assert!(is_mount_point(Path::new("/")).unwrap());
        assert!(mount_at(Path::new("/")).unwrap().is_some());
        let dir = tempfile::tempdir().unwrap();
        assert!(!is_mount_point(dir.path()).unwrap());
        assert!(mount_at(dir.path()).unwrap().is_none());
    }
}
