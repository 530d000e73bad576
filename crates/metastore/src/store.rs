//! The metadata store: the changelog and the sled state it builds, with one writer at a time.
//!
//! A change is checked against the state, appended to the changelog, then applied to sled in one
//! batch that also records the version of its record. At open, records newer than that version
//! are replayed, so a crash anywhere never loses or doubles an appended change.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use elkfs_proto::types::{Attr, DirEntry, FileKind};
use elkfs_proto::{ChunkId, InodeId, MetaVersion, Status};

use crate::changelog::{Changelog, Record};
use crate::error::StoreError;
use crate::keys;
use crate::kv::{KvStore, SledStore};
use crate::namespace::{self, Outcome};
use crate::op::MetaOp;
use crate::records::{ChunkRecord, DirentRecord, FileChunk, InodeRecord, OrderRecord};
use crate::txn::{ExecError, Txn, decode_value};

/// Settings of the metadata store.
#[derive(Clone, Debug)]
pub struct StoreConfig {
    /// Bytes of sled page cache (bounds the master's memory for metadata).
    pub cache_bytes: u64,
}

struct Writer {
    changelog: Changelog,
    version: u64,
    failed: Option<String>,
}

/// The namespace, durable through the changelog.
pub struct MetaStore {
    kv: Box<dyn KvStore>,
    writer: Mutex<Writer>,
    sync_file: Mutex<File>,
    dir: PathBuf,
}

/// What happened while opening the store, for the operator's log.
#[derive(Clone, Debug, Default)]
pub struct OpenReport {
    /// The version sled had applied.
    pub applied_before: u64,
    /// Records replayed from the changelog.
    pub replayed: u64,
    /// Records that did not apply on replay (should be 0).
    pub replay_failures: u64,
}

impl MetaStore {
    /// Opens the store in `dir` (`dir/metadata.sled`, `dir/changelog/`), replaying the changelog.
    pub fn open(dir: &Path, config: &StoreConfig) -> Result<(MetaStore, OpenReport), StoreError> {
        std::fs::create_dir_all(dir).map_err(|source| StoreError::Changelog {
            path: dir.to_path_buf(),
            source,
        })?;
        let sled_dir = dir.join("metadata.sled");
        let kv = SledStore::open(&sled_dir, config.cache_bytes)?;
        let kv: Box<dyn KvStore> = Box::new(kv);
        let applied = read_counter(kv.as_ref(), keys::APPLIED)?;
        let mut report = OpenReport {
            applied_before: applied,
            ..Default::default()
        };
        let mut last_seen = applied;
        let changelog = Changelog::open(&dir.join("changelog"), applied + 1, &mut |record| {
            replay_one(kv.as_ref(), record, &mut last_seen, &mut report)
        })?;
        let version = changelog.last_version().max(last_seen);
        let sync_file = changelog.sync_handle()?;
        let store = MetaStore {
            kv,
            writer: Mutex::new(Writer {
                changelog,
                version,
                failed: None,
            }),
            sync_file: Mutex::new(sync_file),
            dir: dir.to_path_buf(),
        };
        Ok((store, report))
    }

    /// Checks `op` against the current state, logs it and applies it; returns the outcome and
    /// the version of its record. A refused op changes nothing and is not logged.
    pub fn commit(&self, op: &MetaOp) -> Result<(MetaVersion, Outcome), ExecError> {
        let mut writer = self
            .writer
            .lock()
            .map_err(|_| ExecError::Refused(Status::Io))?;
        if let Some(reason) = &writer.failed {
            tracing::debug!(%reason, "metadata store failed earlier");
            return Err(ExecError::Refused(Status::Io));
        }
        let mut txn = Txn::new(self.kv.as_ref());
        let outcome = namespace::execute(&mut txn, op)?;
        let version = writer.version + 1;
        writer.changelog.append(version, op)?;
        writer.version = version;
        let mut writes = txn.into_writes();
        writes.push((keys::APPLIED.to_vec(), Some(encode_u64(version))));
        if let Err(e) = self.kv.apply(writes) {
            // The record is logged but not applied: only a restart (replay) can repair that.
            tracing::error!(error = %e, version, "cannot apply a logged change; the master must restart");
            writer.failed = Some(e.to_string());
            return Err(e.into());
        }
        Ok((MetaVersion(version), outcome))
    }

    /// fsyncs the changelog: every change committed before the call survives a power cut.
    pub fn sync(&self) -> Result<(), StoreError> {
        let file = self.sync_file.lock().map_err(|_| StoreError::Changelog {
            path: self.dir.clone(),
            source: std::io::Error::other("sync handle poisoned"),
        })?;
        file.sync_data().map_err(|source| StoreError::Changelog {
            path: self.dir.join("changelog"),
            source,
        })
    }

    /// Makes sled write out what it holds (it also does so on its own every half second).
    pub fn flush(&self) -> Result<(), StoreError> {
        self.kv.flush()
    }

    /// The version of the last change committed.
    pub fn version(&self) -> MetaVersion {
        MetaVersion(self.writer.lock().map(|w| w.version).unwrap_or(0))
    }

    /// Whether the filesystem has been created (its root exists).
    pub fn is_formatted(&self) -> Result<bool, StoreError> {
        Ok(self.kv.get(&keys::inode(InodeId::ROOT))?.is_some())
    }

    fn txn(&self) -> Txn<'_> {
        Txn::new(self.kv.as_ref())
    }

    /// Attributes of an inode.
    pub fn attr(&self, inode: InodeId) -> Result<Attr, ExecError> {
        Ok(namespace::inode_of(&self.txn(), inode)?.attr(inode))
    }

    /// The full record of an inode.
    pub fn inode(&self, inode: InodeId) -> Result<InodeRecord, ExecError> {
        namespace::inode_of(&self.txn(), inode)
    }

    /// Finds `name` in directory `parent`.
    pub fn lookup(&self, parent: InodeId, name: &[u8]) -> Result<Attr, ExecError> {
        let txn = self.txn();
        let dir = namespace::inode_of(&txn, parent)?;
        if dir.kind != FileKind::Dir {
            return Err(Status::NotDir.into());
        }
        if name.len() > namespace::NAME_MAX {
            return Err(Status::NameTooLong.into());
        }
        let entry: DirentRecord = txn
            .get(&keys::dirent(parent, name))?
            .ok_or(Status::NotFound)?;
        Ok(namespace::inode_of(&txn, entry.inode)?.attr(entry.inode))
    }

    /// Up to `limit` entries of a directory after position `after` (0 = from the start).
    pub fn read_dir(
        &self,
        inode: InodeId,
        after: u64,
        limit: usize,
    ) -> Result<Vec<DirEntry>, ExecError> {
        let txn = self.txn();
        if namespace::inode_of(&txn, inode)?.kind != FileKind::Dir {
            return Err(Status::NotDir.into());
        }
        let prefix = keys::order_prefix(inode);
        let after_key = (after >= namespace::FIRST_COOKIE).then(|| keys::order(inode, after));
        let rows = self.kv.scan(&prefix, after_key.as_deref(), limit)?;
        rows.into_iter()
            .map(|(k, v)| {
                let rec: OrderRecord = decode_value(&k, &v)?;
                let cookie = k
                    .get(9..17)
                    .and_then(|b| b.try_into().ok())
                    .map(u64::from_be_bytes)
                    .unwrap_or(0);
                Ok(DirEntry {
                    name: rec.name,
                    inode: rec.inode,
                    kind: rec.kind,
                    cookie,
                })
            })
            .collect()
    }

    /// A symbolic link's target.
    pub fn read_link(&self, inode: InodeId) -> Result<Vec<u8>, ExecError> {
        let txn = self.txn();
        let rec = namespace::inode_of(&txn, inode)?;
        if rec.kind != FileKind::Symlink {
            return Err(Status::Invalid.into());
        }
        Ok(txn
            .get::<Vec<u8>>(&keys::link_target(inode))?
            .ok_or(Status::NotFound)?)
    }

    /// The chunk at `index` of a file, if it has one there.
    pub fn file_chunk(&self, inode: InodeId, index: u32) -> Result<Option<FileChunk>, ExecError> {
        let txn = self.txn();
        let Some(chunk) = txn.get::<ChunkId>(&keys::file_chunk(inode, index))? else {
            return Ok(None);
        };
        let rec: ChunkRecord = txn.get(&keys::chunk(chunk))?.ok_or_else(|| {
            ExecError::Store(StoreError::Damaged {
                key: format!("chunk {chunk}"),
                reason: "a file refers to a chunk that has no record".to_string(),
            })
        })?;
        Ok(Some(FileChunk {
            index,
            chunk,
            version: rec.version,
        }))
    }

    /// Every chunk of a file, in index order.
    pub fn file_chunks(&self, inode: InodeId) -> Result<Vec<FileChunk>, ExecError> {
        let txn = self.txn();
        let mut out = Vec::new();
        for (k, v) in txn.scan_all(&keys::file_chunk_prefix(inode))? {
            let chunk: ChunkId = decode_value(&k, &v)?;
            let Some(index) = keys::file_chunk_index(&k) else {
                continue;
            };
            if let Some(rec) = txn.get::<ChunkRecord>(&keys::chunk(chunk))? {
                out.push(FileChunk {
                    index,
                    chunk,
                    version: rec.version,
                });
            }
        }
        Ok(out)
    }

    /// The master's record of a chunk.
    pub fn chunk(&self, chunk: ChunkId) -> Result<Option<ChunkRecord>, StoreError> {
        self.txn().get(&keys::chunk(chunk))
    }

    /// Up to `limit` chunk records with ids after `after` (all from the start when `None`), in id
    /// order: the replication worker walks the chunk table with this, a page at a time.
    pub fn chunks_after(
        &self,
        after: Option<ChunkId>,
        limit: usize,
    ) -> Result<Vec<(ChunkId, ChunkRecord)>, StoreError> {
        let after_key = after.map(keys::chunk);
        let rows = self.kv.scan(&[keys::CHUNK], after_key.as_deref(), limit)?;
        rows.iter()
            .filter_map(|(k, v)| keys::chunk_id_of(k).map(|id| (id, k, v)))
            .map(|(id, k, v)| Ok((id, decode_value(k, v)?)))
            .collect()
    }

    /// One extended attribute's value.
    pub fn xattr(&self, inode: InodeId, name: &[u8]) -> Result<Vec<u8>, ExecError> {
        let txn = self.txn();
        namespace::inode_of(&txn, inode)?;
        Ok(txn
            .get::<Vec<u8>>(&keys::xattr(inode, name))?
            .ok_or(Status::NoAttribute)?)
    }

    /// The names of an inode's extended attributes.
    pub fn xattr_names(&self, inode: InodeId) -> Result<Vec<Vec<u8>>, ExecError> {
        let txn = self.txn();
        namespace::inode_of(&txn, inode)?;
        let prefix = keys::xattr_prefix(inode);
        Ok(txn
            .scan_all(&prefix)?
            .into_iter()
            .map(|(k, _)| k[prefix.len()..].to_vec())
            .collect())
    }

    /// Files whose last name is gone and that have not been purged yet.
    pub fn unlinked_inodes(&self) -> Result<Vec<InodeId>, StoreError> {
        Ok(self
            .kv
            .scan(&[keys::UNLINKED], None, usize::MAX)?
            .into_iter()
            .filter_map(|(k, _)| keys::inode_of_key(&k))
            .collect())
    }

    /// Number of inodes in use.
    pub fn inode_count(&self) -> Result<u64, StoreError> {
        read_counter(self.kv.as_ref(), keys::INODE_COUNT)
    }

    /// Chunk ids below this may have been handed out.
    pub fn chunk_ids_reserved(&self) -> Result<u64, StoreError> {
        read_counter(self.kv.as_ref(), keys::CHUNK_IDS_RESERVED)
    }
}

fn encode_u64(n: u64) -> Vec<u8> {
    elkfs_proto::codec::encode(&n).unwrap_or_default()
}

fn read_counter(kv: &dyn KvStore, key: &[u8]) -> Result<u64, StoreError> {
    match kv.get(key)? {
        Some(bytes) => decode_value(key, &bytes),
        None => Ok(0),
    }
}

fn replay_one(
    kv: &dyn KvStore,
    record: Record,
    last_seen: &mut u64,
    report: &mut OpenReport,
) -> Result<(), StoreError> {
    if record.version <= *last_seen {
        return Ok(());
    }
    if record.version != *last_seen + 1 {
        tracing::error!(
            expected = *last_seen + 1,
            found = record.version,
            "changelog has a gap: records are missing"
        );
    }
    let mut txn = Txn::new(kv);
    match namespace::execute(&mut txn, &record.op) {
        Ok(_) => {}
        Err(ExecError::Refused(status)) => {
            report.replay_failures += 1;
            tracing::error!(version = record.version, %status, op = ?record.op, "changelog record does not apply on replay; skipped");
            txn = Txn::new(kv);
        }
        Err(ExecError::Store(e)) => return Err(e),
    }
    let mut writes = txn.into_writes();
    writes.push((keys::APPLIED.to_vec(), Some(encode_u64(record.version))));
    kv.apply(writes)?;
    *last_seen = record.version;
    report.replayed += 1;
    Ok(())
}
