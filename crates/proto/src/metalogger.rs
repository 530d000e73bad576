//! Messages between a metalogger and the master: metadata images and the changelog stream.

use serde::{Deserialize, Serialize};

use crate::status::Status;

/// A request from a metalogger to the master.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum MlRequest {
    /// Changelog records after version `after`, as stored (the reply's data); the master waits
    /// briefly for new ones when there are none.
    Fetch {
        /// The last version the metalogger holds.
        after: u64,
        /// Most bytes of records wanted.
        max_bytes: u32,
    },
    /// The version of the master's newest metadata image.
    LatestImage,
    /// A piece of the image of `version` (the reply's data).
    FetchImage {
        /// Which image.
        version: u64,
        /// Where in the file.
        offset: u64,
        /// Most bytes wanted.
        length: u32,
    },
    /// Asks the master to prove it holds the cluster key; the first request after the hello.
    Challenge {
        /// A random nonce for the master's proof.
        nonce: [u8; 32],
    },
    /// Proves the cluster key for the master's nonce; nothing else is served before it.
    Join {
        /// [`crate::auth::cluster_proof`] of the cluster key for the master's nonce.
        proof: [u8; 32],
    },
}

/// The master's answer to an [`MlRequest`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum MlReply {
    /// Records follow as the frame's data (possibly none), the last being `last`.
    Records {
        /// Version of the last record sent (the `after` asked for when none).
        last: u64,
    },
    /// The changelog no longer reaches back to what was asked: fetch the newest image.
    Gone,
    /// The newest image.
    Image {
        /// The version it is the state of (0: there is no image yet).
        version: u64,
        /// Its size in bytes.
        size: u64,
    },
    /// A piece of an image follows as the frame's data (empty at its end).
    ImagePart,
    /// The master's proof of the cluster key, and its nonce for the metalogger's proof.
    Challenge {
        /// [`crate::auth::cluster_proof`] of the cluster key for the metalogger's nonce.
        proof: [u8; 32],
        /// The nonce the metalogger must prove the key for.
        nonce: [u8; 32],
    },
    /// The proof was right: the metalogger may follow the changelog.
    Joined,
}

/// The body of every master response to a metalogger.
pub type MlResponse = Result<MlReply, Status>;
