//! Errors of the chunk store: [`ChunkError`] for operations on one chunk, [`StoreError`] for
//! opening and scanning the data directories. Messages are one lowercase sentence naming the
//! chunk or path.

use std::io;
use std::path::{Path, PathBuf};

use elkfs_proto::{ChunkId, ChunkVersion};

/// Why an operation on one chunk failed.
#[derive(Debug, thiserror::Error)]
pub enum ChunkError {
    /// The store holds no chunk with this id (or its file vanished from the disk).
    #[error("chunk {chunk}: not found")]
    NotFound {
        /// The chunk asked for.
        chunk: ChunkId,
    },
    /// `create` was asked for an id the store already holds (at any version).
    #[error("chunk {chunk}: already exists")]
    AlreadyExists {
        /// The chunk asked for.
        chunk: ChunkId,
    },
    /// The request names another version than the one stored: one side is stale.
    #[error("chunk {chunk}: stored version is {have}, the request is for version {want}")]
    WrongVersion {
        /// The chunk asked for.
        chunk: ChunkId,
        /// The version on disk.
        have: ChunkVersion,
        /// The version the request named.
        want: ChunkVersion,
    },
    /// A data block does not match its stored BLAKE3 hash (or is cut off by a truncated file).
    #[error("chunk {chunk}: block {block} does not match its hash")]
    Corrupt {
        /// The damaged chunk.
        chunk: ChunkId,
        /// Index of the first damaged block the operation met.
        block: u32,
    },
    /// The chunk file's header is unreadable or inconsistent, so none of its data can be trusted.
    #[error("chunk {chunk}: bad header in {path}: {reason}")]
    BadHeader {
        /// The damaged chunk.
        chunk: ChunkId,
        /// Its file.
        path: PathBuf,
        /// What is wrong with the header.
        reason: String,
    },
    /// A write or truncate reaches past the end of a chunk (`CHUNK_SIZE`).
    #[error("chunk {chunk}: {len} bytes at offset {offset} reach past the end of a chunk")]
    OutOfRange {
        /// The chunk asked for.
        chunk: ChunkId,
        /// Where the range starts.
        offset: u64,
        /// How long it is.
        len: u64,
    },
    /// The file system is full (ENOSPC or EDQUOT), or no data directory accepts new chunks.
    #[error("chunk {chunk}: no space left in the data directories")]
    NoSpace {
        /// The chunk being created or written.
        chunk: ChunkId,
    },
    /// An fsync of the chunk file failed with EIO, ENOSPC or EDQUOT: data written to it earlier
    /// did not reach the disk and never will (Linux drops the pages it could not write and
    /// reports that once), so the copy can no longer be trusted. Every later sync or write of
    /// the copy fails this way.
    #[error("chunk {chunk}: data written to {path} could not be written to disk: {source}")]
    WriteLost {
        /// The chunk whose data was lost.
        chunk: ChunkId,
        /// Its file.
        path: PathBuf,
        /// The error the fsync returned (the first time).
        #[source]
        source: io::Error,
    },
    /// Any other I/O error from the operating system.
    #[error("chunk {chunk}: i/o error on {path}: {source}")]
    Io {
        /// The chunk being accessed.
        chunk: ChunkId,
        /// The file or directory the error came from.
        path: PathBuf,
        /// The error the OS returned.
        #[source]
        source: io::Error,
    },
}

impl ChunkError {
    /// Wraps an OS error, turning "disk full" into [`ChunkError::NoSpace`] (ENOSPC for callers).
    pub(crate) fn io(chunk: ChunkId, path: &Path, source: io::Error) -> ChunkError {
        match source.raw_os_error() {
            Some(libc::ENOSPC) | Some(libc::EDQUOT) => ChunkError::NoSpace { chunk },
            _ => ChunkError::Io {
                chunk,
                path: path.to_path_buf(),
                source,
            },
        }
    }

    /// Like [`ChunkError::io`], for opening an existing chunk: a missing file is `NotFound`.
    pub(crate) fn io_opening(chunk: ChunkId, path: &Path, source: io::Error) -> ChunkError {
        if source.kind() == io::ErrorKind::NotFound {
            ChunkError::NotFound { chunk }
        } else {
            ChunkError::io(chunk, path, source)
        }
    }

    pub(crate) fn bad_header(chunk: ChunkId, path: &Path, reason: impl Into<String>) -> ChunkError {
        ChunkError::BadHeader {
            chunk,
            path: path.to_path_buf(),
            reason: reason.into(),
        }
    }

    /// True when the chunk's stored copy is damaged (bad block or header, or a disk that failed
    /// to read it, EIO): the chunkserver reports it to the master, which re-replicates from a
    /// good copy.
    pub fn is_damage(&self) -> bool {
        match self {
            ChunkError::Corrupt { .. } | ChunkError::BadHeader { .. } => true,
            ChunkError::Io { source, .. } => source.raw_os_error() == Some(libc::EIO),
            _ => false,
        }
    }
}

/// Why the store could not open its data directories.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// `open` was called without any directory.
    #[error("no data directory given")]
    NoDirs,
    /// A data directory (or one of its subdirectories) could not be created, opened or read.
    #[error("data directory {path}: {source}")]
    Dir {
        /// The directory that failed.
        path: PathBuf,
        /// The error the OS returned.
        #[source]
        source: io::Error,
    },
    /// The same directory was given twice (possibly under two names): every chunk would show twice.
    #[error("data directory {path} is given more than once")]
    DuplicateDir {
        /// The directory as given the second time.
        path: PathBuf,
    },
}

impl StoreError {
    pub(crate) fn dir(path: &Path, source: io::Error) -> StoreError {
        StoreError::Dir {
            path: path.to_path_buf(),
            source,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn disk_full_becomes_no_space() {
        let err = ChunkError::io(
            ChunkId(1),
            Path::new("/x"),
            io::Error::from_raw_os_error(libc::ENOSPC),
        );
        assert!(matches!(err, ChunkError::NoSpace { .. }));
        let err = ChunkError::io(
            ChunkId(1),
            Path::new("/x"),
            io::Error::from_raw_os_error(libc::EIO),
        );
        assert!(matches!(err, ChunkError::Io { .. }));
    }

    #[test]
    fn a_disk_that_cannot_read_a_copy_damaged_it_and_one_out_of_descriptors_did_not() {
        let io = |errno| {
            ChunkError::io(
                ChunkId(1),
                Path::new("/x"),
                io::Error::from_raw_os_error(errno),
            )
        };
        assert!(io(libc::EIO).is_damage());
        assert!(!io(libc::EMFILE).is_damage());
        assert!(!ChunkError::NotFound { chunk: ChunkId(1) }.is_damage());
    }

    #[test]
    fn missing_file_when_opening_is_not_found() {
        let err = ChunkError::io_opening(
            ChunkId(1),
            Path::new("/x"),
            io::Error::from_raw_os_error(libc::ENOENT),
        );
        assert!(matches!(err, ChunkError::NotFound { .. }));
    }

    #[test]
    fn messages_name_the_chunk() {
        let err = ChunkError::Corrupt {
            chunk: ChunkId(0xCB),
            block: 3,
        };
        assert_eq!(
            err.to_string(),
            "chunk 00000000000000CB: block 3 does not match its hash"
        );
        assert!(err.is_damage());
    }
}
