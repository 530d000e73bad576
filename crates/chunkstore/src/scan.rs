//! The start-up scan: makes sure every data directory has its 256 subdirectories, then learns the
//! chunks from the directory listings (names give id and version, one stat gives the length).
//! There is no index to get out of sync: whatever files are there at start are the chunks.

use std::collections::hash_map::Entry;
use std::collections::{HashMap, HashSet};
use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use elkfs_proto::geometry::CHUNK_SIZE;
use elkfs_proto::{ChunkId, ChunkVersion};

use crate::error::StoreError;
use crate::header::HEADER_SIZE;
use crate::lost_marks::{marker_for, parse_marker_name};
use crate::path::{SUBDIR_COUNT, chunk_path_for, parse_chunk_file_name, subdir_for, subdir_name};

/// A chunk file found by the scan.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct FoundChunk {
    pub id: ChunkId,
    pub version: ChunkVersion,
    /// Index of its data directory in the list given to the scan.
    pub dir: usize,
    /// Data length as the file size gives it; the header is checked when the chunk is first used.
    pub length: u32,
    /// A marker says the copy lost writes before (`lost_marks.rs`).
    pub lost: bool,
}

/// Everything the scan found: one entry per chunk id, and the files it skipped with the reason.
#[derive(Debug, Default)]
pub(crate) struct Scan {
    pub chunks: Vec<FoundChunk>,
    pub ignored: Vec<(PathBuf, String)>,
}

/// Creates `path` and its subdirectories `00`..`FF` where missing.
pub(crate) fn prepare_dir(path: &Path) -> Result<(), StoreError> {
    if path.as_os_str().is_empty() {
        let empty = io::Error::new(io::ErrorKind::InvalidInput, "the path is empty");
        return Err(StoreError::dir(path, empty));
    }
    fs::create_dir_all(path).map_err(|e| StoreError::dir(path, e))?;
    for index in 0..SUBDIR_COUNT {
        let sub = path.join(subdir_name(index as u8));
        match fs::create_dir(&sub) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists && sub.is_dir() => {}
            Err(e) => return Err(StoreError::dir(&sub, e)),
        }
    }
    Ok(())
}

/// Scans every directory (in parallel, since they are usually separate disks) and keeps the highest
/// version of each chunk id; other copies are reported in `ignored` and left on disk.
pub(crate) fn scan_dirs(dirs: &[PathBuf]) -> Result<Scan, StoreError> {
    let per_dir: Vec<Result<Scan, StoreError>> = std::thread::scope(|scope| {
        let handles: Vec<_> = dirs
            .iter()
            .enumerate()
            .map(|(index, path)| scope.spawn(move || scan_dir(index, path)))
            .collect();
        handles
            .into_iter()
            .map(|handle| {
                handle
                    .join()
                    .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
            })
            .collect()
    });

    let mut ignored = Vec::new();
    let mut kept: HashMap<ChunkId, FoundChunk> = HashMap::new();
    for scan in per_dir {
        let scan = scan?;
        ignored.extend(scan.ignored);
        for found in scan.chunks {
            match kept.entry(found.id) {
                Entry::Vacant(slot) => {
                    slot.insert(found);
                }
                Entry::Occupied(mut slot) => {
                    let kept = slot.get();
                    // Of two copies at one version, one not marked lost is kept.
                    let better = found.version > kept.version
                        || (found.version == kept.version && kept.lost && !found.lost);
                    let (keep, drop) = if better {
                        (found, slot.insert(found))
                    } else {
                        (*slot.get(), found)
                    };
                    ignored.push((
                        chunk_path_for(&dirs[drop.dir], drop.id, drop.version),
                        format!(
                            "duplicate of chunk {}: version {} is kept in {}",
                            keep.id,
                            keep.version,
                            chunk_path_for(&dirs[keep.dir], keep.id, keep.version).display()
                        ),
                    ));
                }
            }
        }
    }
    Ok(Scan {
        chunks: kept.into_values().collect(),
        ignored,
    })
}

fn scan_dir(dir: usize, path: &Path) -> Result<Scan, StoreError> {
    let mut scan = Scan::default();
    let mut misplaced = Vec::new();
    let mut markers = Vec::new();
    for index in 0..SUBDIR_COUNT {
        let sub_name = subdir_name(index as u8);
        let sub = path.join(&sub_name);
        for entry in fs::read_dir(&sub).map_err(|e| StoreError::dir(&sub, e))? {
            let entry = entry.map_err(|e| StoreError::dir(&sub, e))?;
            let file_path = entry.path();
            let name = entry.file_name();
            let Some((id, version)) = name.to_str().and_then(parse_chunk_file_name) else {
                if let Some((id, version)) = name.to_str().and_then(parse_marker_name) {
                    markers.push((file_path, id, version));
                    continue;
                }
                scan.ignored
                    .push((file_path, "not a chunk file name".into()));
                continue;
            };
            let metadata = match entry.metadata() {
                Ok(metadata) if metadata.is_file() => metadata,
                Ok(_) => {
                    scan.ignored.push((file_path, "not a regular file".into()));
                    continue;
                }
                Err(e) => {
                    scan.ignored.push((file_path, format!("cannot stat: {e}")));
                    continue;
                }
            };
            let found = FoundChunk {
                id,
                version,
                dir,
                length: metadata.len().saturating_sub(HEADER_SIZE).min(CHUNK_SIZE) as u32,
                lost: false,
            };
            if subdir_for(id) == sub_name {
                scan.chunks.push(found);
            } else {
                misplaced.push((file_path, found));
            }
        }
    }
    // Moved after listing, so a file moved into a subdirectory not yet listed is not seen twice.
    let mut moved = HashSet::new();
    for (file_path, found) in misplaced {
        match move_into_place(&file_path, path, found.id, found.version) {
            Ok(()) => {
                moved.insert(file_path);
                scan.chunks.push(found);
            }
            Err(reason) => scan.ignored.push((file_path, reason)),
        }
    }
    if !moved.is_empty() {
        tracing::info!(
            dir = %path.display(),
            moved = moved.len(),
            "moved chunk files into the subdirectories their ids give"
        );
    }
    mark_lost_copies(path, &mut scan, markers, &moved);
    Ok(scan)
}

/// Marks the chunks whose lost-writes markers were found beside their files (moving a marker
/// with its file if that was moved into place); removes a marker whose chunk file is gone
/// (deleted, then a crash before the marker went). A marker beside a file the store does not use
/// (a duplicate, or one that could not be moved) is left alone.
fn mark_lost_copies(
    dir: &Path,
    scan: &mut Scan,
    markers: Vec<(PathBuf, ChunkId, ChunkVersion)>,
    moved: &HashSet<PathBuf>,
) {
    for (marker, id, version) in markers {
        let home = chunk_path_for(dir, id, version);
        let beside = marker.with_extension("");
        let used = beside == home || moved.contains(&beside);
        let found = match used {
            true => scan
                .chunks
                .iter_mut()
                .find(|c| c.id == id && c.version == version),
            false => None,
        };
        if let Some(found) = found {
            found.lost = true;
            let home_marker = marker_for(&home);
            if marker != home_marker
                && let Err(e) = fs::rename(&marker, &home_marker)
            {
                tracing::warn!(marker = %marker.display(), error = %e, "cannot move a lost-writes marker next to its chunk file; the copy is still taken as lost");
            }
            continue;
        }
        // Kept when in doubt: a marker removed by mistake would let a lost copy pass as good.
        if beside.try_exists().unwrap_or(true) {
            continue;
        }
        match fs::remove_file(&marker) {
            Ok(()) => {
                tracing::info!(marker = %marker.display(), "removed a lost-writes marker whose chunk file is gone")
            }
            Err(e) => scan.ignored.push((
                marker,
                format!(
                    "a lost-writes marker without its chunk file, which cannot be removed: {e}"
                ),
            )),
        }
    }
}

/// A chunk file in the wrong subdirectory (moved by hand, or laid out the way before 2026-12-06)
/// is moved to where its path is computed.
fn move_into_place(
    from: &Path,
    dir: &Path,
    id: ChunkId,
    version: ChunkVersion,
) -> Result<(), String> {
    let to = chunk_path_for(dir, id, version);
    if to.exists() {
        return Err(format!(
            "belongs in subdirectory {}, which already holds this file",
            subdir_for(id)
        ));
    }
    fs::rename(from, &to).map_err(|e| {
        format!(
            "belongs in subdirectory {} but cannot be moved there: {e}",
            subdir_for(id)
        )
    })?;
    tracing::debug!(
        from = %from.display(),
        to = %to.display(),
        "moved chunk file into its subdirectory"
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn touch(path: &Path, data_len: u64) {
        let file = fs::File::create(path).unwrap();
        file.set_len(HEADER_SIZE + data_len).unwrap();
    }

    #[test]
    fn prepare_creates_all_subdirs_and_is_idempotent() {
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join("a/b");
        prepare_dir(&dir).unwrap();
        prepare_dir(&dir).unwrap();
        assert_eq!(fs::read_dir(&dir).unwrap().count(), 256);
        assert!(dir.join("00").is_dir() && dir.join("FF").is_dir() && dir.join("A7").is_dir());
    }

    #[test]
    fn prepare_refuses_an_empty_path() {
        let err = prepare_dir(Path::new("")).unwrap_err();
        assert!(err.to_string().contains("empty"), "{err}");
    }

    #[test]
    fn prepare_fails_naming_a_subdir_that_is_a_file() {
        let root = tempfile::tempdir().unwrap();
        fs::write(root.path().join("3C"), b"x").unwrap();
        let err = prepare_dir(root.path()).unwrap_err();
        assert!(err.to_string().contains("3C"), "{err}");
    }

    #[test]
    fn scan_finds_names_and_lengths_and_ignores_junk() {
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().to_path_buf();
        prepare_dir(&dir).unwrap();
        touch(&chunk_path_for(&dir, ChunkId(0x1FF), ChunkVersion(3)), 1000);
        fs::write(dir.join("FF/notes.txt"), b"x").unwrap();
        fs::create_dir(dir.join("02/chunk_00000000000002FF_00000001.elk")).unwrap();

        let scan = scan_dirs(std::slice::from_ref(&dir)).unwrap();
        assert_eq!(
            scan.chunks,
            vec![FoundChunk {
                id: ChunkId(0x1FF),
                version: ChunkVersion(3),
                dir: 0,
                length: 1000,
                lost: false,
            }]
        );
        let mut reasons: Vec<_> = scan
            .ignored
            .iter()
            .map(|(_, reason)| reason.as_str())
            .collect();
        reasons.sort();
        assert_eq!(reasons, ["not a chunk file name", "not a regular file"]);
    }

    #[test]
    fn scan_moves_a_chunk_from_the_wrong_subdir_into_place() {
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().to_path_buf();
        prepare_dir(&dir).unwrap();
        // Where the low byte of the id put it until 2026-12-06.
        let misplaced = dir.join("CD").join("chunk_000000000000ABCD_00000001.elk");
        touch(&misplaced, 0);
        let scan = scan_dirs(std::slice::from_ref(&dir)).unwrap();
        assert_eq!(scan.chunks.len(), 1);
        assert!(scan.ignored.is_empty());
        assert!(!misplaced.exists());
        assert!(
            dir.join("AB")
                .join("chunk_000000000000ABCD_00000001.elk")
                .exists()
        );
        assert!(chunk_path_for(&dir, ChunkId(0xABCD), ChunkVersion(1)).exists());
    }

    #[test]
    fn a_lost_writes_marker_moves_with_its_misplaced_chunk_and_one_without_a_chunk_goes() {
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().to_path_buf();
        prepare_dir(&dir).unwrap();
        let misplaced = dir.join("CD").join("chunk_000000000000ABCD_00000001.elk");
        touch(&misplaced, 0);
        fs::write(marker_for(&misplaced), b"").unwrap();
        let orphan = marker_for(&chunk_path_for(&dir, ChunkId(0x42), ChunkVersion(1)));
        fs::write(&orphan, b"").unwrap();
        // A marker for another version than the file there says nothing about that file.
        touch(&chunk_path_for(&dir, ChunkId(0x43), ChunkVersion(2)), 0);
        fs::write(
            marker_for(&chunk_path_for(&dir, ChunkId(0x43), ChunkVersion(1))),
            b"",
        )
        .unwrap();

        let scan = scan_dirs(std::slice::from_ref(&dir)).unwrap();
        let mut lost: Vec<_> = scan.chunks.iter().map(|c| (c.id, c.lost)).collect();
        lost.sort();
        assert_eq!(lost, [(ChunkId(0x43), false), (ChunkId(0xABCD), true)]);
        assert!(scan.ignored.is_empty(), "{:?}", scan.ignored);
        let home = chunk_path_for(&dir, ChunkId(0xABCD), ChunkVersion(1));
        assert!(home.exists() && marker_for(&home).exists());
        assert!(!marker_for(&misplaced).exists());
        assert!(!orphan.exists());
    }

    #[test]
    fn of_two_copies_at_one_version_the_one_not_marked_lost_is_kept() {
        let root = tempfile::tempdir().unwrap();
        let dirs = vec![root.path().join("d0"), root.path().join("d1")];
        for dir in &dirs {
            prepare_dir(dir).unwrap();
        }
        let marked = chunk_path_for(&dirs[0], ChunkId(7), ChunkVersion(3));
        touch(&marked, 0);
        fs::write(marker_for(&marked), b"").unwrap();
        touch(&chunk_path_for(&dirs[1], ChunkId(7), ChunkVersion(3)), 0);
        let scan = scan_dirs(&dirs).unwrap();
        assert_eq!(
            scan.chunks
                .iter()
                .map(|c| (c.dir, c.lost))
                .collect::<Vec<_>>(),
            [(1, false)]
        );
        assert_eq!(scan.ignored.len(), 1);
        assert_eq!(scan.ignored[0].0, marked);
        assert!(
            marker_for(&marked).exists(),
            "the marker stays with its file"
        );
    }

    #[test]
    fn scan_keeps_the_highest_version_of_duplicates_and_leaves_others_on_disk() {
        let root = tempfile::tempdir().unwrap();
        let dirs = vec![root.path().join("d0"), root.path().join("d1")];
        for dir in &dirs {
            prepare_dir(dir).unwrap();
        }
        let old = chunk_path_for(&dirs[0], ChunkId(7), ChunkVersion(1));
        let new = chunk_path_for(&dirs[1], ChunkId(7), ChunkVersion(2));
        let older = chunk_path_for(&dirs[1], ChunkId(7), ChunkVersion(0));
        touch(&old, 0);
        touch(&new, 0);
        touch(&older, 0);
        let same_a = chunk_path_for(&dirs[0], ChunkId(8), ChunkVersion(5));
        let same_b = chunk_path_for(&dirs[1], ChunkId(8), ChunkVersion(5));
        touch(&same_a, 0);
        touch(&same_b, 0);

        let scan = scan_dirs(&dirs).unwrap();
        let mut chunks = scan.chunks.clone();
        chunks.sort_by_key(|c| c.id);
        assert_eq!(
            (chunks[0].id, chunks[0].version, chunks[0].dir),
            (ChunkId(7), ChunkVersion(2), 1)
        );
        assert_eq!(
            (chunks[1].id, chunks[1].version, chunks[1].dir),
            (ChunkId(8), ChunkVersion(5), 0)
        );
        let mut ignored: Vec<_> = scan.ignored.iter().map(|(path, _)| path.clone()).collect();
        ignored.sort();
        let mut expected = vec![old.clone(), older.clone(), same_b.clone()];
        expected.sort();
        assert_eq!(ignored, expected);
        assert!(
            scan.ignored
                .iter()
                .all(|(_, reason)| reason.starts_with("duplicate of chunk"))
        );
        assert!(old.exists() && older.exists() && same_b.exists());
    }

    #[test]
    fn unreadable_dir_is_an_error_naming_it() {
        let root = tempfile::tempdir().unwrap();
        let err = scan_dirs(&[root.path().join("missing")]).unwrap_err();
        assert!(err.to_string().contains("missing"), "{err}");
    }
}
