//! Copies whose writes were lost, remembered on disk: an empty marker file named after the chunk
//! file with `.lost` added sits beside it until the copy is deleted. Without it a chunkserver
//! restarted before the master replaced the copy, or a master restarted meanwhile, would take
//! the copy for a good one, and it may hold old data under old hashes that no check can tell.
//! The marker also keeps its data directory from taking new chunks after a restart.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use elkfs_proto::{ChunkId, ChunkVersion};

use crate::path::parse_chunk_file_name;

const SUFFIX: &str = ".lost";

/// The marker of the chunk file at `chunk_path`.
pub(crate) fn marker_for(chunk_path: &Path) -> PathBuf {
    let mut name = chunk_path.as_os_str().to_owned();
    name.push(SUFFIX);
    PathBuf::from(name)
}

/// The chunk id and version a marker's file name is for; `None` for any other name.
pub(crate) fn parse_marker_name(name: &str) -> Option<(ChunkId, ChunkVersion)> {
    parse_chunk_file_name(name.strip_suffix(SUFFIX)?)
}

/// Marks the copy at `chunk_path` as lost, on disk: the marker is created and its directory
/// fsynced. The disk that lost the writes may refuse this too; the caller logs it and keeps the
/// mark in memory.
pub(crate) fn write_marker(chunk_path: &Path) -> io::Result<()> {
    let marker = marker_for(chunk_path);
    fs::File::create(&marker)?.sync_all()?;
    let dir = marker.parent().unwrap_or(Path::new("."));
    fs::File::open(dir)?.sync_all()
}

/// Removes the marker of the chunk file at `chunk_path`, once the chunk file is gone (the other
/// order could leave an unmarked lost copy after a crash); a missing marker is no error.
pub(crate) fn remove_marker(chunk_path: &Path) -> io::Result<()> {
    match fs::remove_file(marker_for(chunk_path)) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::path::chunk_path_for;

    #[test]
    fn a_marker_is_named_after_its_chunk_file() {
        let chunk = chunk_path_for(Path::new("/d"), ChunkId(0xABCD), ChunkVersion(7));
        let marker = marker_for(&chunk);
        assert_eq!(
            marker,
            Path::new("/d/AB/chunk_000000000000ABCD_00000007.elk.lost")
        );
        let name = marker.file_name().unwrap().to_str().unwrap();
        assert_eq!(
            parse_marker_name(name),
            Some((ChunkId(0xABCD), ChunkVersion(7)))
        );
        for other in [
            "chunk_000000000000ABCD_00000007.elk",
            "chunk_000000000000ABCD_00000007.lost",
            "chunk_000000000000ABCD_00000007.elk.lost.tmp",
            ".lost",
        ] {
            assert_eq!(parse_marker_name(other), None, "{other}");
        }
    }

    #[test]
    fn markers_are_written_and_removed() {
        let dir = tempfile::tempdir().unwrap();
        let chunk = dir.path().join("chunk_0000000000000001_00000001.elk");
        write_marker(&chunk).unwrap();
        assert!(marker_for(&chunk).is_file());
        remove_marker(&chunk).unwrap();
        assert!(!marker_for(&chunk).exists());
        remove_marker(&chunk).expect("a missing marker is no error");
    }
}
