//! The ElkFS namespace as the master (and a metalogger) keeps it: a changelog that is the
//! write-ahead log, the state it builds in sled (behind the [`kv::KvStore`] trait), and metadata
//! images (exact checkpoints written in the background) from which a damaged sled is rebuilt.

pub mod acl;
pub mod changelog;
pub mod changelog_sync;
pub mod check;
pub mod checkpoint;
pub mod error;
pub mod follow;
pub mod image;
pub mod keys;
pub mod kv;
pub mod kv_cache;
pub mod namespace;
pub mod op;
pub mod records;
pub mod recovery;
pub mod requests;
pub mod snapshot;
pub mod store;
pub mod txn;
pub mod write_behind;

#[cfg(test)]
mod crash_tests;
#[cfg(test)]
mod mem_kv;
#[cfg(test)]
mod store_tests;

pub use checkpoint::ImageReport;
pub use error::StoreError;
pub use namespace::Outcome;
pub use op::MetaOp;
pub use records::{ChunkRecord, FileChunk, InodeRecord, TrashRecord};
pub use recovery::OpenReport;
pub use store::{MetaStore, StoreConfig};
pub use txn::ExecError;
