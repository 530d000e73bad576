//! The ElkFS wire protocol: identifiers, the messages of each connection kind, framing, the codec
//! and the multiplexed connection that carries them. Nothing outside this crate calls bincode.

mod accept;
pub mod auth;
pub mod capability;
pub mod chunkserver;
pub mod cluster_key;
pub mod codec;
pub mod connection;
pub mod data;
pub mod frame;
#[cfg(test)]
mod fuzz_tests;
pub mod geometry;
#[cfg(test)]
mod golden;
pub mod hello;
pub mod ids;
pub mod info;
pub mod lock_ranges;
pub mod master;
pub mod metalogger;
mod outgoing;
pub mod peer_limit;
pub mod pool;
mod read_side;
pub mod status;
pub mod tls;
pub mod types;

pub use connection::{
    ConnError, Connection, Handler, NoMessage, NoRequests, PendingReply, Responder,
};
pub use frame::FrameLimits;
pub use hello::{Hello, Role};
pub use ids::{ChunkId, ChunkVersion, InodeId, MetaVersion, ServerId, SessionId};
pub use pool::Pool;
pub use status::Status;

/// Frame limits of a client's connection to the master (directory pages, no chunk data).
pub const MASTER_CLIENT_LIMITS: FrameLimits = FrameLimits {
    max_header: 8 * 1024 * 1024,
    max_data: 0,
};

/// Frame limits of a chunkserver's connection to the master (chunk reports come in batches).
pub const MASTER_CHUNKSERVER_LIMITS: FrameLimits = FrameLimits {
    max_header: 8 * 1024 * 1024,
    max_data: 0,
};

/// Frame limits on a chunkserver's data port: small headers, data up to one payload.
pub const DATA_LIMITS: FrameLimits = FrameLimits {
    max_header: 64 * 1024,
    max_data: geometry::MAX_DATA_PAYLOAD,
};

/// Frame limits of a metaloggers's connection to the master (records and image pieces as data).
pub const MASTER_METALOGGER_LIMITS: FrameLimits = FrameLimits {
    max_header: 64 * 1024,
    max_data: 16 * 1024 * 1024,
};

/// Chunk reports per [`chunkserver::CsRequest::Chunks`] batch, well inside the frame limit.
pub const CHUNK_REPORT_BATCH: usize = 65_536;

/// A client's connection to the master.
pub type MasterConnection = Connection<master::MasterRequest, master::MasterResponse>;

/// A connection to a chunkserver's data port.
pub type DataConnection = Connection<data::DataRequest, data::DataResponse>;

/// Connections to chunkservers' data ports.
pub type DataPool = Pool<data::DataRequest, data::DataResponse>;
