//! Errors of the metadata store itself (as opposed to a refused operation, which is a `Status`).

use std::path::PathBuf;

/// The metadata store could not do its job: a damaged or unreadable file, a failed disk.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// sled failed to open or to read or write.
    #[error("metadata database {path}: {reason}")]
    Sled {
        /// The database directory (empty when not known at the failing call).
        path: PathBuf,
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
}
