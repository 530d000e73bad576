//! The first exchange on every connection: who is calling, and do we speak the same protocol.

use serde::{Deserialize, Serialize};

/// Bumped whenever a message changes incompatibly; peers with another version are refused.
pub const PROTOCOL_VERSION: u32 = 15;

/// What kind of peer opened a connection (and so which messages follow).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Role {
    /// A mount or the CLI talking to the master.
    Client,
    /// A chunkserver registering with the master.
    Chunkserver,
    /// A metalogger following the master's changelog.
    Metalogger,
    /// A client reading or writing chunk data on a chunkserver.
    DataClient,
    /// A chunkserver forwarding a chained write (or copying a chunk) to another.
    DataPeer,
}

/// Sent by the connecting side as its first frame.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Hello {
    /// The caller's [`PROTOCOL_VERSION`].
    pub protocol_version: u32,
    /// What the caller is.
    pub role: Role,
    /// Program and version, for logs (`elkfs-mount 0.1.0`).
    pub software: String,
}

impl Hello {
    /// A hello from this build of ElkFS.
    pub fn new(role: Role, program: &str) -> Hello {
        Hello {
            protocol_version: PROTOCOL_VERSION,
            role,
            software: format!("{program} {}", env!("CARGO_PKG_VERSION")),
        }
    }
}

/// The accepting side's answer to a [`Hello`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum HelloReply {
    /// Go ahead.
    Accepted {
        /// The server's protocol version.
        protocol_version: u32,
    },
    /// Not accepted; the reason is one sentence for the caller's log or terminal.
    Refused {
        /// Why.
        reason: String,
    },
}
