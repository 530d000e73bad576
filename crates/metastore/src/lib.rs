//! The ElkFS namespace as the master (and a metalogger) keeps it: a changelog that is the
//! write-ahead log, and the state it builds in sled (behind the [`kv::KvStore`] trait).

pub mod acl;
pub mod changelog;
pub mod error;
pub mod keys;
pub mod kv;
pub mod namespace;
pub mod op;
pub mod records;
pub mod store;
pub mod txn;

#[cfg(test)]
mod store_tests;

pub use error::StoreError;
pub use namespace::Outcome;
pub use op::MetaOp;
pub use records::{ChunkRecord, FileChunk, InodeRecord};
pub use store::{MetaStore, OpenReport, StoreConfig};
pub use txn::ExecError;
