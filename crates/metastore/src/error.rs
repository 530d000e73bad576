//! Errors of the metadata store itself (as opposed to a refused operation, which is a `Status`).

use std::path::PathBuf;

/// The metadata store could not do its job: a damaged or unreadable file, a failed disk.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// A read in cache-only mode needs the disk (not a failure: run it again where blocking is
    /// allowed).
    #[error("the value is not in the metadata cache")]
    NotCached,
    /// sled failed to open or to read or write.
    #[error("metadata database {path}: {reason}")]
    Sled {
        /// The database directory (empty when not known at the failing call).
        path: PathBuf,
        /// What sled said.
        reason: String,
    },
    /// sled could not write for want of room on its disk.
    #[error("metadata database: no space left on its disk ({reason})")]
    SledNoSpace {
        /// What sled said.
        reason: String,
    },
    /// The changelog could not be read or written.
    #[error("changelog {path}: {source}")]
    Changelog {
        /// The changelog file.
        path: PathBuf,
        /// What the OS said.
        #[source]
        source: std::io::Error,
    },
    /// A record in a changelog file other than the last is cut short or fails its checksum: the
    /// records from there on in that file are lost (only the last file can have a torn tail).
    #[error("changelog {path}: damaged record at offset {offset} in a file that is not the last")]
    ChangelogDamaged {
        /// The changelog file.
        path: PathBuf,
        /// Where the damaged record starts.
        offset: u64,
    },
    /// A stored value does not decode: the database is damaged.
    #[error("metadata key {key} is damaged: {reason}")]
    Damaged {
        /// The key, printed.
        key: String,
        /// What was wrong.
        reason: String,
    },
    /// A changelog record could not be re-applied during replay.
    #[error("changelog record {version} cannot be replayed: {reason}")]
    Replay {
        /// The record's version.
        version: u64,
        /// Why.
        reason: String,
    },
    /// A metadata image could not be written or read back whole.
    #[error("metadata image {path}: {reason}")]
    Image {
        /// The image file (or the data directory).
        path: PathBuf,
        /// What was wrong.
        reason: String,
    },
    /// sled needs rebuilding and neither an image nor the changelog can give back the state.
    #[error(
        "cannot rebuild the metadata in {dir}: {missing}. The database was left as it was. To \
         recover, start the master on a metalogger's data directory (docs/OPERATIONS.md, \"Promoting a \
         metalogger\")"
    )]
    Unrecoverable {
        /// The data directory.
        dir: PathBuf,
        /// Why sled is being rebuilt, and what is missing or damaged that a rebuild needs.
        missing: String,
    },
}

impl StoreError {
    /// Whether the store failed for want of room on its disk (ENOSPC, or EDQUOT for a quota):
    /// the change was not made, and may be made once there is room again.
    pub fn is_out_of_space(&self) -> bool {
        match self {
            StoreError::SledNoSpace { .. } => true,
            StoreError::Changelog { source, .. } => is_out_of_space(source),
            _ => false,
        }
    }
}

/// Whether an I/O error says the disk (or the user's quota on it) is full.
pub fn is_out_of_space(error: &std::io::Error) -> bool {
    matches!(
        error.kind(),
        std::io::ErrorKind::StorageFull | std::io::ErrorKind::QuotaExceeded
    )
}
