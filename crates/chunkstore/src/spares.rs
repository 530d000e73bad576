//! Emptied files of deleted chunks, kept to become new chunks. Creating a file costs the file
//! system an inode allocation, and on ext4 that allocation skips, one by one, every inode freed
//! in the last minutes: a chunkserver that has just deleted thousands of chunks (a directory
//! removed) then spends most of its CPU making new files. A deleted chunk's file is instead
//! renamed into the data directory's `spare/` subdirectory and emptied, and a new chunk takes
//! one from there by renaming it into place, so a steady stream of deletes and creates never
//! allocates or frees an inode.
//!
//! A spare holds no data (it is emptied right after its rename), takes no space but its inode,
//! and is never a chunk: the start-up scan only looks in the 256 hashed subdirectories. Files
//! found in `spare/` at start are emptied again and reused.

use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

/// The subdirectory of a data directory that holds its spares.
pub const SPARE_DIR: &str = "spare";

/// Spares kept at most per data directory; files deleted beyond this are removed.
const MAX_SPARES: usize = 16_384;

const PREFIX: &str = "spare_";

/// The spare files of one data directory.
pub(crate) struct Spares {
    dir: PathBuf,
    free: Mutex<Vec<PathBuf>>,
    next_name: AtomicU64,
    /// Whether spares may be used: the directory works and renaming without replacing is
    /// supported here.
    usable: AtomicBool,
}

/// What taking a spare for a new chunk came to.
pub(crate) enum Taken {
    /// The spare is now the (empty) file at the chunk's path, opened for reading and writing.
    Placed(File),
    /// A file is already at the chunk's path; nothing changed.
    Exists,
    /// No spare could be used: create the file the usual way.
    None,
}

impl Spares {
    /// The spares of the data directory `data_dir`: its `spare/` subdirectory is made if missing,
    /// and the files in it are emptied and taken into the pool. Spares are off when `enabled` is
    /// false (a directory marked for removal takes no new chunks) or the subdirectory cannot be
    /// used; the chunkserver then creates and unlinks files as usual.
    pub(crate) fn open(data_dir: &Path, enabled: bool) -> Spares {
        let dir = data_dir.join(SPARE_DIR);
        let (free, highest) = if enabled {
            match adopt(&dir) {
                Ok(found) => found,
                Err(e) => {
                    tracing::warn!(dir = %dir.display(), error = %e, "cannot use the directory of spare chunk files; deleted chunk files are not reused");
                    return Spares::off(dir);
                }
            }
        } else {
            return Spares::off(dir);
        };
        Spares {
            dir,
            free: Mutex::new(free),
            next_name: AtomicU64::new(highest + 1),
            usable: AtomicBool::new(true),
        }
    }

    fn off(dir: PathBuf) -> Spares {
        Spares {
            dir,
            free: Mutex::new(Vec::new()),
            next_name: AtomicU64::new(0),
            usable: AtomicBool::new(false),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<PathBuf>> {
        self.free.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// How many spares are waiting.
    pub(crate) fn len(&self) -> usize {
        self.lock().len()
    }

    /// Removes the file at `path` (a deleted chunk's), keeping it as an empty spare while the
    /// pool has room; otherwise, or if keeping it fails, unlinks it. `NotFound` when there is no
    /// file there.
    pub(crate) fn retire(&self, path: &Path) -> io::Result<()> {
        if !self.usable.load(Ordering::Relaxed) || self.len() >= MAX_SPARES {
            return fs::remove_file(path);
        }
        let file = match OpenOptions::new().write(true).open(path) {
            Ok(file) => file,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Err(e),
            Err(_) => return fs::remove_file(path),
        };
        // Emptying a file with another name (an operator's hard-linked backup) would empty that
        // too.
        if file.metadata().map_or(true, |m| m.nlink() != 1) {
            return fs::remove_file(path);
        }
        let spare = self.dir.join(format!(
            "{PREFIX}{}",
            self.next_name.fetch_add(1, Ordering::Relaxed)
        ));
        if let Err(e) = fs::rename(path, &spare) {
            if e.raw_os_error() == Some(libc::EXDEV) {
                tracing::info!(dir = %self.dir.display(), "the spare chunk files' directory is on another file system; deleted chunk files are not reused");
                self.usable.store(false, Ordering::Relaxed);
            }
            return fs::remove_file(path);
        }
        if let Err(e) = file.set_len(0) {
            // Never keep one that may hold data; the chunk is gone from its path either way.
            tracing::warn!(path = %spare.display(), error = %e, "cannot empty a spare chunk file; removing it");
            let _ = fs::remove_file(&spare);
            return Ok(());
        }
        self.lock().push(spare);
        Ok(())
    }

    /// Puts a spare at `path` (the new chunk's file, which must not exist yet), empty.
    pub(crate) fn take(&self, path: &Path) -> Taken {
        if !self.usable.load(Ordering::Relaxed) {
            return Taken::None;
        }
        let Some(spare) = self.lock().pop() else {
            return Taken::None;
        };
        match rename_noreplace(&spare, path) {
            Ok(()) => match OpenOptions::new().read(true).write(true).open(path) {
                Ok(file) => Taken::Placed(file),
                Err(e) => {
                    // Out of descriptors, say: no empty file is left at the chunk's path.
                    tracing::warn!(path = %path.display(), error = %e, "cannot open a spare chunk file put in place; removing it");
                    let _ = fs::remove_file(path);
                    Taken::None
                }
            },
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                self.lock().push(spare);
                Taken::Exists
            }
            Err(e) => {
                if matches!(e.raw_os_error(), Some(libc::EINVAL | libc::ENOSYS)) {
                    tracing::info!(dir = %self.dir.display(), "this file system cannot rename without replacing; deleted chunk files are not reused");
                    self.usable.store(false, Ordering::Relaxed);
                    self.lock().push(spare);
                } else {
                    tracing::warn!(spare = %spare.display(), error = %e, "cannot reuse a spare chunk file");
                    let _ = fs::remove_file(&spare);
                }
                Taken::None
            }
        }
    }
}

/// Makes `dir` if missing and empties the spares found in it (a crash between a spare's rename
/// and its emptying leaves its old data in it); returns them, up to the most kept, with the
/// highest number in use. A spare that cannot be emptied is removed, or left alone (it is never
/// taken, and never a chunk).
fn adopt(dir: &Path) -> io::Result<(Vec<PathBuf>, u64)> {
    match fs::create_dir(dir) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists && dir.is_dir() => {}
        Err(e) => return Err(e),
    }
    let mut free = Vec::new();
    let mut highest = 0;
    for entry in fs::read_dir(dir)? {
        let entry = entry?;
        let path = entry.path();
        let number = entry
            .file_name()
            .as_bytes()
            .strip_prefix(PREFIX.as_bytes())
            .and_then(|n| std::str::from_utf8(n).ok())
            .and_then(|n| n.parse::<u64>().ok());
        let is_file = entry.file_type().is_ok_and(|t| t.is_file());
        let Some(number) = number.filter(|_| is_file) else {
            continue;
        };
        highest = highest.max(number);
        let emptied = free.len() < MAX_SPARES
            && OpenOptions::new()
                .write(true)
                .open(&path)
                .and_then(|f| f.set_len(0))
                .is_ok();
        if emptied {
            free.push(path);
        } else {
            let _ = fs::remove_file(&path);
        }
    }
    Ok((free, highest))
}

/// Renames `from` to `to`, failing with `AlreadyExists` instead of replacing a file at `to`.
fn rename_noreplace(from: &Path, to: &Path) -> io::Result<()> {
    let from = std::ffi::CString::new(from.as_os_str().as_bytes())?;
    let to = std::ffi::CString::new(to.as_os_str().as_bytes())?;
    // SAFETY: both are valid NUL-terminated paths that outlive the call.
    let result = unsafe {
        libc::renameat2(
            libc::AT_FDCWD,
            from.as_ptr(),
            libc::AT_FDCWD,
            to.as_ptr(),
            libc::RENAME_NOREPLACE,
        )
    };
    if result == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_retired_file_comes_back_empty_at_a_new_path_and_never_replaces_a_file() {
        let dir = tempfile::tempdir().unwrap();
        let spares = Spares::open(dir.path(), true);
        let old = dir.path().join("old");
        fs::write(&old, b"chunk data").unwrap();
        spares.retire(&old).unwrap();
        assert!(!old.exists());
        assert_eq!(spares.len(), 1);

        let taken = dir.path().join("taken");
        fs::write(&taken, b"x").unwrap();
        assert!(matches!(spares.take(&taken), Taken::Exists));
        assert_eq!(fs::read(&taken).unwrap(), b"x");
        assert_eq!(spares.len(), 1);

        let new = dir.path().join("new");
        assert!(matches!(spares.take(&new), Taken::Placed(_)));
        assert_eq!(fs::metadata(&new).unwrap().len(), 0);
        assert_eq!(spares.len(), 0);
        assert!(matches!(spares.take(&dir.path().join("more")), Taken::None));
    }

    #[test]
    fn spares_left_at_a_restart_are_emptied_and_reused_under_new_names() {
        let dir = tempfile::tempdir().unwrap();
        fs::create_dir(dir.path().join(SPARE_DIR)).unwrap();
        let left = dir.path().join(SPARE_DIR).join("spare_7");
        fs::write(&left, b"data a crash left").unwrap();
        fs::write(dir.path().join(SPARE_DIR).join("other"), b"not ours").unwrap();
        let spares = Spares::open(dir.path(), true);
        assert_eq!(spares.len(), 1);
        assert_eq!(fs::metadata(&left).unwrap().len(), 0);
        let gone = dir.path().join("gone");
        fs::write(&gone, b"y").unwrap();
        spares.retire(&gone).unwrap();
        assert!(dir.path().join(SPARE_DIR).join("spare_8").exists());
    }

    #[test]
    fn a_file_with_another_name_is_unlinked_not_emptied() {
        let dir = tempfile::tempdir().unwrap();
        let spares = Spares::open(dir.path(), true);
        let chunk = dir.path().join("chunk");
        let backup = dir.path().join("backup");
        fs::write(&chunk, b"chunk data").unwrap();
        fs::hard_link(&chunk, &backup).unwrap();
        spares.retire(&chunk).unwrap();
        assert!(!chunk.exists());
        assert_eq!(fs::read(&backup).unwrap(), b"chunk data");
        assert_eq!(spares.len(), 0);
    }

    #[test]
    fn an_unusable_spare_directory_turns_spares_off_and_files_are_unlinked() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(
            dir.path().join(SPARE_DIR),
            b"a file where the directory goes",
        )
        .unwrap();
        let spares = Spares::open(dir.path(), true);
        let gone = dir.path().join("gone");
        fs::write(&gone, b"z").unwrap();
        spares.retire(&gone).unwrap();
        assert!(!gone.exists());
        assert_eq!(spares.len(), 0);
        assert!(matches!(spares.take(&dir.path().join("new")), Taken::None));

        let marked = tempfile::tempdir().unwrap();
        let spares = Spares::open(marked.path(), false);
        assert!(!marked.path().join(SPARE_DIR).exists());
        assert!(matches!(
            spares.take(&marked.path().join("new")),
            Taken::None
        ));
    }

    #[test]
    fn retiring_a_missing_file_says_not_found() {
        let dir = tempfile::tempdir().unwrap();
        let spares = Spares::open(dir.path(), true);
        let err = spares.retire(&dir.path().join("none")).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::NotFound);
        assert_eq!(spares.len(), 0);
    }
}
