//! The one error vocabulary on the wire. The client maps it to errno in exactly one place.

use serde::{Deserialize, Serialize};

/// Why a request failed, as one peer tells another.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, thiserror::Error)]
pub enum Status {
    /// No such file, directory or chunk.
    #[error("no such file or directory")]
    NotFound,
    /// The name is already taken.
    #[error("file exists")]
    Exists,
    /// A directory that must be empty is not.
    #[error("directory not empty")]
    NotEmpty,
    /// A path component or target is not a directory.
    #[error("not a directory")]
    NotDir,
    /// A directory was given where a file was needed.
    #[error("is a directory")]
    IsDir,
    /// Permission bits or exports forbid it.
    #[error("permission denied")]
    AccessDenied,
    /// Only the owner or root may do it.
    #[error("operation not permitted")]
    NotPermitted,
    /// The session or the export is read-only.
    #[error("read-only filesystem")]
    ReadOnly,
    /// No chunkserver has room, or a disk is full.
    #[error("no space left on device")]
    NoSpace,
    /// A malformed argument (bad name, bad offset, unknown flag).
    #[error("invalid argument")]
    Invalid,
    /// A name longer than 255 bytes.
    #[error("file name too long")]
    NameTooLong,
    /// A rename would move a directory into itself.
    #[error("a directory cannot be moved into itself")]
    Loop,
    /// The copy asked for has another version: it is stale, or the caller's view is.
    #[error("chunk version mismatch")]
    WrongVersion,
    /// A block did not match its hash.
    #[error("chunk data is corrupt")]
    Corrupt,
    /// No copy of a chunk is reachable right now.
    #[error("no chunkserver holds a valid copy")]
    NoValidCopy,
    /// Try again: a lease is held, or the cluster is starting.
    #[error("resource temporarily unavailable")]
    Again,
    /// The peer spoke the protocol wrongly (unexpected message for this connection).
    #[error("protocol error")]
    Protocol,
    /// An I/O error on the serving side's disk or network.
    #[error("input/output error")]
    Io,
    /// The file is too large (past the largest supported offset).
    #[error("file too large")]
    TooBig,
    /// Not supported by this filesystem.
    #[error("operation not supported")]
    NotSupported,
    /// No such extended attribute.
    #[error("no such attribute")]
    NoAttribute,
    /// An attribute value or list is larger than allowed.
    #[error("argument list too long")]
    TooLarge,
    /// A chunkserver was asked for chunk data without a valid capability from the master
    /// (missing, forged, for another chunk, or expired): ask the master again.
    #[error("no valid capability for the chunk")]
    BadCapability,
    /// A lock is held by someone else (and the caller asked not to wait).
    #[error("resource temporarily unavailable (lock held)")]
    Locked,
}
