//! ElkFS chunkserver storage: chunk files under 256 hashed subdirectories of each data directory,
//! each with a header holding one BLAKE3 hash per 64 KiB block, checked on every read.
//!
//! The chunkserver opens a [`ChunkStore`] on its `--data` directories ([`DataDirSpec`]) and calls
//! its blocking methods from `spawn_blocking`, and `ChunkStore::read_cached`, which never waits,
//! from its network threads. The file layout is in docs/FORMAT.md, section
//! "Chunk files".

#![warn(missing_docs)]

mod chunk_file;
mod datadir;
mod deleted;
mod direct_read;
mod direct_write;
mod error;
mod fetch_ahead;
mod header;
mod index;
mod lost_marks;
mod nowait;
mod o_direct;
mod page_hints;
mod path;
mod read_again;
mod scan;
mod spares;
mod store;
mod sync_pass;

pub use datadir::DataDirSpec;
pub use error::{ChunkError, StoreError};
pub use header::HEADER_SIZE;
pub use path::{
    SUBDIR_COUNT, chunk_file_name, chunk_path_for, parse_chunk_file_name, subdir_for, subdir_name,
};
pub use store::{ChunkInfo, ChunkStore, ScanReport, SpaceReport};
pub use sync_pass::SyncPass;
