//! Data directories as given on the command line (`--data DIR`, `--data '*DIR'`), their free space,
//! and the choice of directory for a new chunk.

use std::ffi::CString;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

/// One `--data` argument: a directory, and whether it is being emptied.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DataDirSpec {
    /// The directory holding the `00`..`FF` subdirectories.
    pub path: PathBuf,
    /// Set by a leading `*`: the directory gets no new chunks, and its chunks are to be copied
    /// elsewhere.
    pub marked_for_removal: bool,
}

impl DataDirSpec {
    /// Reads a `--data` argument: `DIR`, or `*DIR` for a directory marked for removal.
    pub fn parse(arg: &str) -> DataDirSpec {
        match arg.strip_prefix('*') {
            Some(rest) => DataDirSpec {
                path: PathBuf::from(rest),
                marked_for_removal: true,
            },
            None => DataDirSpec {
                path: PathBuf::from(arg),
                marked_for_removal: false,
            },
        }
    }
}

/// Size and free space of the file system holding a directory.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct FsSpace {
    pub total: u64,
    pub available: u64,
}

/// statvfs(3) on `path`: total bytes and bytes available to an unprivileged user.
pub(crate) fn fs_space(path: &Path) -> io::Result<FsSpace> {
    let c_path = CString::new(path.as_os_str().as_bytes())
        .map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
    // SAFETY: statvfs only writes into `stat`, which is a plain C struct that may start zeroed,
    // and reads the NUL-terminated string that `c_path` owns for the whole call.
    let stat = unsafe {
        let mut stat: libc::statvfs = std::mem::zeroed();
        if libc::statvfs(c_path.as_ptr(), &mut stat) != 0 {
            return Err(io::Error::last_os_error());
        }
        stat
    };
    let fragment = stat.f_frsize as u64;
    Ok(FsSpace {
        total: (stat.f_blocks as u64).saturating_mul(fragment),
        available: (stat.f_bavail as u64).saturating_mul(fragment),
    })
}

/// Picks the directory for a new chunk: among those not marked for removal whose space is known,
/// the one with the most available bytes (the first of equals). `None` if no directory qualifies.
pub(crate) fn pick_dir_for_new_chunk(candidates: &[(bool, Option<u64>)]) -> Option<usize> {
    candidates
        .iter()
        .enumerate()
        .filter(|(_, (marked, _))| !marked)
        .filter_map(|(index, (_, available))| available.map(|available| (index, available)))
        .fold(
            None,
            |best: Option<(usize, u64)>, (index, available)| match best {
                Some((_, best_available)) if best_available >= available => best,
                _ => Some((index, available)),
            },
        )
        .map(|(index, _)| index)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn leading_star_marks_for_removal() {
        assert_eq!(
            DataDirSpec::parse("/mnt/disk1"),
            DataDirSpec {
                path: "/mnt/disk1".into(),
                marked_for_removal: false
            }
        );
        assert_eq!(
            DataDirSpec::parse("*/mnt/disk2"),
            DataDirSpec {
                path: "/mnt/disk2".into(),
                marked_for_removal: true
            }
        );
    }

    #[test]
    fn new_chunks_go_to_the_dir_with_most_space() {
        assert_eq!(
            pick_dir_for_new_chunk(&[(false, Some(10)), (false, Some(30)), (false, Some(20))]),
            Some(1)
        );
        assert_eq!(
            pick_dir_for_new_chunk(&[(false, Some(30)), (false, Some(30))]),
            Some(0)
        );
    }

    #[test]
    fn new_chunks_skip_dirs_marked_for_removal_or_unreadable() {
        assert_eq!(
            pick_dir_for_new_chunk(&[(false, Some(10)), (true, Some(99)), (false, None)]),
            Some(0)
        );
        assert_eq!(pick_dir_for_new_chunk(&[(true, Some(99))]), None);
        assert_eq!(pick_dir_for_new_chunk(&[]), None);
    }

    #[test]
    fn space_of_an_existing_dir_is_known() {
        let dir = tempfile::tempdir().unwrap();
        let space = fs_space(dir.path()).unwrap();
        assert!(space.total > 0 && space.available <= space.total);
        assert!(fs_space(&dir.path().join("missing")).is_err());
    }
}
