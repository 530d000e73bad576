//! The metadata store: the changelog and the sled state it builds, with one writer at a time.
//!
//! A change is checked against the state, appended to the changelog, then applied to sled in one
//! batch that also records the version of its record. At open, records newer than that version
//! are replayed, so a crash anywhere never loses or doubles an appended change (opening and
//! rebuilding are in `recovery.rs`, metadata images in `checkpoint.rs`).

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use elkfs_proto::types::{Attr, DirEntry, DirEntryPlus, FileKind, Timestamp};
use elkfs_proto::{ChunkId, ChunkVersion, InodeId, MetaVersion, Status};

use crate::changelog::{self, Changelog};
use crate::changelog_sync::ChangelogSync;
use crate::checkpoint::ImageSchedule;
use crate::error::StoreError;
use crate::keys;
use crate::kv::KvStore;
use crate::kv_cache::{cache_only, in_cache_only_mode};
use crate::namespace::{self, Outcome};
use crate::op::MetaOp;
use crate::records::{ChunkRecord, DirentRecord, FileChunk, InodeRecord, OrderRecord};
use crate::recovery::OpenReport;
use crate::requests;
use crate::snapshot::Overlay;
use crate::txn::{ExecError, Txn, decode_value};

/// Records after which a new metadata image is written, unless configured otherwise.
pub const DEFAULT_IMAGE_EVERY_RECORDS: u64 = 1_000_000;
/// Time after which a new metadata image is written if anything changed.
pub const DEFAULT_IMAGE_EVERY: Duration = Duration::from_secs(3600);
/// Records after which a filesystem without any image gets its first one.
pub const DEFAULT_FIRST_IMAGE_AFTER_RECORDS: u64 = 1000;
/// Keys read per step while writing an image.
pub const DEFAULT_IMAGE_PAGE_KEYS: usize = 1024;

/// Settings of the metadata store.
#[derive(Clone, Debug)]
pub struct StoreConfig {
    /// Bytes of RAM for cached metadata: sled's page cache and the read cache in front of it
    /// together (see [`StoreConfig::sled_cache_capacity`] and [`StoreConfig::hot_bytes`]).
    pub cache_bytes: u64,
    /// Size past which the next changelog record starts a new file (rotation), so that files an
    /// image covers can be deleted.
    pub changelog_file_bytes: u64,
    /// A new image is due after this many records since the last one.
    pub image_every_records: u64,
    /// A new image is due after this long since the last one (or since open) if anything
    /// changed.
    pub image_every: Duration,
    /// While there is no image at all, the first is due after this many records.
    pub first_image_after_records: u64,
    /// Keys read per step while writing an image: each step briefly holds up commits that
    /// touch keys ahead of the image writer.
    pub image_page_keys: usize,
    /// Most keys (inodes, directory entries, names known to be absent) kept in the read cache
    /// in front of sled, answered without going to the disk; its share of `cache_bytes` bounds
    /// it too.
    pub hot_entries: usize,
}

/// Most keys in the read cache by default.
pub const DEFAULT_HOT_ENTRIES: usize = 100_000;

/// The read cache gets this fraction of `cache_bytes` (1/8), sled's page cache the rest.
const HOT_SHARE_DIVISOR: u64 = 8;

/// Bytes of RAM sled holds per byte its `cache_capacity` counts. sled counts a cached page at
/// its serialized size but keeps it decoded (a vector of keys and one of values, each value in
/// its own allocation, and copies of nodes still being read); measured with heaptrack and the
/// RSS of the master and of plain sled 0.34 at 300 000 to 1 000 000 files: about 3.
const SLED_RAM_PER_CACHE_BYTE: u64 = 3;

impl StoreConfig {
    /// The `cache_capacity` given to sled: its share of `cache_bytes` in sled's own counting.
    pub fn sled_cache_capacity(&self) -> u64 {
        let share = self.cache_bytes - self.cache_bytes / HOT_SHARE_DIVISOR;
        (share / SLED_RAM_PER_CACHE_BYTE).max(MIN_SLED_CACHE_BYTES)
    }

    /// Bytes the read cache in front of sled may take.
    pub fn hot_bytes(&self) -> usize {
        usize::try_from(self.cache_bytes / HOT_SHARE_DIVISOR).unwrap_or(usize::MAX)
    }
}

/// The smallest page cache sled is given, whatever `cache_bytes` says.
const MIN_SLED_CACHE_BYTES: u64 = 1 << 20;

impl Default for StoreConfig {
    fn default() -> Self {
        StoreConfig {
            cache_bytes: 64 * 1024 * 1024,
            changelog_file_bytes: changelog::DEFAULT_FILE_BYTES,
            image_every_records: DEFAULT_IMAGE_EVERY_RECORDS,
            image_every: DEFAULT_IMAGE_EVERY,
            first_image_after_records: DEFAULT_FIRST_IMAGE_AFTER_RECORDS,
            image_page_keys: DEFAULT_IMAGE_PAGE_KEYS,
            hot_entries: DEFAULT_HOT_ENTRIES,
        }
    }
}

pub(crate) struct Writer {
    pub(crate) changelog: Changelog,
    pub(crate) version: u64,
}

/// What one look at a file's chunk slot found.
enum Slot {
    /// No chunk there.
    Hole,
    /// A chunk and its record.
    Chunk(FileChunk),
    /// A chunk whose record was not there.
    Unrecorded(ChunkId),
}

/// The namespace, durable through the changelog.
pub struct MetaStore {
    pub(crate) kv: Box<dyn KvStore>,
    pub(crate) writer: Mutex<Writer>,
    pub(crate) sync_file: Arc<ChangelogSync>,
    /// Why changes are refused since a record was logged and could not be applied (only a
    /// restart, which replays it, repairs that), and what callers are told; read without the
    /// writer's lock.
    pub(crate) refused: OnceLock<(String, Status)>,
    pub(crate) dir: PathBuf,
    pub(crate) config: StoreConfig,
    /// Values saved for an image being written (copy-on-write).
    pub(crate) overlay: Overlay,
    pub(crate) images: ImageSchedule,
}

impl MetaStore {
    /// Opens the store in `dir` (`dir/metadata.sled`, `dir/changelog/`, `dir/image.*.elk`),
    /// replaying the changelog. If sled does not open, holds damaged values, is ahead of the
    /// changelog or misses records the changelog no longer has, it is rebuilt from the newest
    /// good image and the changelog (the old one is moved aside); the report says what happened.
    /// Fails only when no image and changelog together hold the state.
    pub fn open(dir: &Path, config: &StoreConfig) -> Result<(MetaStore, OpenReport), StoreError> {
        crate::recovery::open(dir, config)
    }

    /// Checks `op` against the current state, logs it and applies it; returns the outcome and
    /// the version of its record. A refused op changes nothing and is not logged.
    pub fn commit(&self, op: &MetaOp) -> Result<(MetaVersion, Outcome), ExecError> {
        let mut writer = self
            .writer
            .lock()
            .map_err(|_| ExecError::Refused(Status::Io))?;
        self.commit_locked(&mut writer, op)
    }

    /// [`MetaStore::commit`] when it needs nothing but memory and one `write(2)` to the
    /// changelog: no other commit running, everything it reads cached, no batch to sled and no
    /// new changelog file due. Async code calls it in place and saves the hand-off to a
    /// blocking thread; `None` means nothing was done (run [`MetaStore::commit`] instead).
    pub fn try_commit_in_memory(
        &self,
        op: &MetaOp,
    ) -> Option<Result<(MetaVersion, Outcome), ExecError>> {
        if matches!(op, MetaOp::ForgetRequests { .. }) || !self.kv.applies_in_memory() {
            return None;
        }
        let mut writer = self.writer.try_lock().ok()?;
        if writer.changelog.rotation_due() {
            return None;
        }
        // A read that would go to the disk fails before anything is logged.
        match cache_only(|| self.commit_locked(&mut writer, op)) {
            Err(ExecError::Store(StoreError::NotCached)) => None,
            result => Some(result),
        }
    }

    fn commit_locked(
        &self,
        writer: &mut Writer,
        op: &MetaOp,
    ) -> Result<(MetaVersion, Outcome), ExecError> {
        if let Some((reason, status)) = self.refused.get() {
            tracing::debug!(%reason, "metadata store failed earlier");
            return Err(ExecError::Refused(*status));
        }
        if self.sync_file.failed() {
            tracing::debug!("an fsync of the changelog failed earlier");
            return Err(ExecError::Refused(Status::Io));
        }
        if let MetaOp::ForgetRequests { before } = op {
            return self.forget_requests(writer, op, *before);
        }
        let mut txn = Txn::new(self.kv.as_ref());
        let outcome = namespace::execute(&mut txn, op)?;
        let version = writer.version + 1;
        let mut writes = txn.into_writes();
        writes.push((keys::APPLIED.to_vec(), Some(encode_u64(version))));
        // Before anything is logged: an image being written keeps the values these writes replace.
        self.overlay.preserve(self.kv.as_ref(), &writes)?;
        writer.changelog.append(version, op)?;
        writer.version = version;
        if let Err(e) = self.kv.apply(writes) {
            // The write-behind layer keeps the writes of a batch it failed to apply: this change
            // is logged and in effect. The store below failed (sled writes nothing more after
            // an I/O error), so no further change is taken until a restart replays the log.
            tracing::error!(error = %e, version, "cannot apply a logged change: changes are refused until the master restarts (sled writes nothing more after an I/O error)");
            let _ = self.refused.set(failure(&e));
        }
        Ok((MetaVersion(version), outcome))
    }

    /// Commits `op`, a `ForgetRequests { before }`: logged once, then applied in steps of at
    /// most [`requests::FORGET_STEP`] removals, so that neither the reads nor the batch grow
    /// with the number of records (see [`requests::forget_in_steps`] for why a crash between
    /// steps is safe).
    fn forget_requests(
        &self,
        writer: &mut Writer,
        op: &MetaOp,
        before: Timestamp,
    ) -> Result<(MetaVersion, Outcome), ExecError> {
        let version = writer.version + 1;
        writer.changelog.append(version, op)?;
        writer.version = version;
        let kv = self.kv.as_ref();
        let applied = requests::forget_in_steps(kv, before, version, |writes| {
            self.overlay.preserve(kv, &writes)?;
            kv.apply(writes)
        });
        if let Err(e) = applied {
            tracing::error!(error = %e, version, "cannot apply a logged change; the master must restart");
            let _ = self.refused.set(failure(&e));
            return Err(e.into());
        }
        Ok((MetaVersion(version), Outcome::default()))
    }

    /// The data directory (changelog files in `changelog/`, images at the top).
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Why every change is refused until the master restarts, if it is: an fsync of the
    /// changelog failed, or a logged change could not be applied (for `elkfs status`).
    pub fn refusing_changes(&self) -> Option<String> {
        if self.sync_file.failed() {
            return Some("an fsync of the changelog failed".to_string());
        }
        self.refused.get().map(|(reason, _)| reason.clone())
    }

    /// Whether an fsync of the changelog failed (every later one fails too).
    pub fn sync_failed(&self) -> bool {
        self.sync_file.failed()
    }

    /// fsyncs the changelog: every change committed before the call survives a power cut.
    /// (Earlier changelog files were fsynced when the next one was started.) Once an fsync
    /// failed, this one and every later one fail, and no change is made any more: records may
    /// be missing on disk, and changes logged from then on could not be made durable either
    /// (see `changelog_sync.rs`).
    pub fn sync(&self) -> Result<(), StoreError> {
        self.sync_file.sync()
    }

    /// Applies the changes held back from sled (`write_behind`) as one batch. The master calls
    /// it every `commit_interval`; a crash before loses nothing, replay brings sled forward.
    pub fn settle(&self) -> Result<(), StoreError> {
        self.kv.settle()
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

    /// Like [`MetaStore::read_dir`], with each entry's attributes and whether it has any
    /// extended attribute.
    pub fn read_dir_plus(
        &self,
        inode: InodeId,
        after: u64,
        limit: usize,
    ) -> Result<Vec<DirEntryPlus>, ExecError> {
        let entries = self.read_dir(inode, after, limit)?;
        self.with_attrs(entries)
    }

    /// `name` in directory `parent` (as [`MetaStore::lookup`] finds it) followed by the names
    /// after it in byte order, at most `limit` in all, each with its attributes; empty when
    /// `name` and everything after it are absent.
    pub fn lookup_ahead(
        &self,
        parent: InodeId,
        name: &[u8],
        limit: usize,
    ) -> Result<Vec<DirEntryPlus>, ExecError> {
        let txn = self.txn();
        if namespace::inode_of(&txn, parent)?.kind != FileKind::Dir {
            return Err(Status::NotDir.into());
        }
        if name.len() > namespace::NAME_MAX {
            return Err(Status::NameTooLong.into());
        }
        let mut entries = Vec::with_capacity(limit.min(256));
        let start = keys::dirent(parent, name);
        if let Some(found) = txn.get::<DirentRecord>(&start)? {
            entries.push(DirEntry {
                name: name.to_vec(),
                inode: found.inode,
                kind: found.kind,
                cookie: found.cookie,
            });
        }
        let prefix = keys::dirent_prefix(parent);
        let rest = limit.saturating_sub(entries.len());
        let after = match rest {
            0 => Vec::new(),
            _ => self.kv.scan(&prefix, Some(&start), rest)?,
        };
        let looked_up = entries.len();
        for (key, value) in after {
            let found: DirentRecord = decode_value(&key, &value)?;
            entries.push(DirEntry {
                name: key[prefix.len()..].to_vec(),
                inode: found.inode,
                kind: found.kind,
                cookie: found.cookie,
            });
        }
        let mut with_attrs = Vec::with_capacity(entries.len());
        for (i, entry) in entries.into_iter().enumerate() {
            match self.with_attr(entry) {
                Ok(e) => with_attrs.push(e),
                // Reads here are no snapshot: a name after the one looked up may have been
                // removed, and its inode purged, since the scan. Leaving it out is what a
                // scan a moment later would have shown; the name looked up must not fail for it.
                Err(ExecError::Refused(Status::NotFound)) if i >= looked_up => {}
                Err(e) => return Err(e),
            }
        }
        Ok(with_attrs)
    }

    /// Each entry with its inode's attributes and whether it has any extended attribute.
    fn with_attrs(&self, entries: Vec<DirEntry>) -> Result<Vec<DirEntryPlus>, ExecError> {
        entries
            .into_iter()
            .map(|entry| self.with_attr(entry))
            .collect()
    }

    /// An entry with its inode's attributes and whether it has any extended attribute.
    fn with_attr(&self, entry: DirEntry) -> Result<DirEntryPlus, ExecError> {
        let attr = namespace::inode_of(&self.txn(), entry.inode)?.attr(entry.inode);
        let has_xattrs = !self
            .kv
            .scan(&keys::xattr_prefix(entry.inode), None, 1)?
            .is_empty();
        Ok(DirEntryPlus {
            entry,
            attr,
            has_xattrs,
        })
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

    /// The chunk in slot `index` of a file, with its version; `None` for a hole.
    ///
    /// The slot and the chunk's record are two reads, and a commit beside them (a truncate or
    /// a purge freeing the chunk) may fall between. So a record found missing is looked for
    /// again while no commit is under way (holding the writer's lock): gone with its slot, or
    /// under a slot that changed, it was such a commit; still missing under the same slot, it
    /// is damage. In cache-only mode a commit under way makes this `NotCached` rather than wait.
    pub fn file_chunk(&self, inode: InodeId, index: u32) -> Result<Option<FileChunk>, ExecError> {
        match self.look_up_file_chunk(inode, index)? {
            Slot::Hole => return Ok(None),
            Slot::Chunk(found) => return Ok(Some(found)),
            Slot::Unrecorded(_) => {}
        }
        let _no_commit_under_way = if in_cache_only_mode() {
            self.writer
                .try_lock()
                .map_err(|_| ExecError::Store(StoreError::NotCached))?
        } else {
            self.writer
                .lock()
                .map_err(|_| ExecError::Refused(Status::Io))?
        };
        match self.look_up_file_chunk(inode, index)? {
            Slot::Hole => Ok(None),
            Slot::Chunk(found) => Ok(Some(found)),
            Slot::Unrecorded(chunk) => Err(ExecError::Store(StoreError::Damaged {
                key: format!("chunk {chunk}"),
                reason: "a file refers to a chunk that has no record".to_string(),
            })),
        }
    }

    /// One look at slot `index` of a file and at the record of the chunk it names.
    fn look_up_file_chunk(&self, inode: InodeId, index: u32) -> Result<Slot, ExecError> {
        let txn = self.txn();
        let Some(chunk) = txn.get::<ChunkId>(&keys::file_chunk(inode, index))? else {
            return Ok(Slot::Hole);
        };
        Ok(match txn.get::<ChunkRecord>(&keys::chunk(chunk))? {
            Some(rec) => Slot::Chunk(FileChunk {
                index,
                chunk,
                version: rec.version,
            }),
            None => Slot::Unrecorded(chunk),
        })
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

    /// The highest version the master may have handed out for `chunk` (`IssueChunkVersion`), if
    /// one was recorded.
    pub fn chunk_issued(&self, chunk: ChunkId) -> Result<Option<ChunkVersion>, StoreError> {
        self.txn().get(&keys::chunk_issued(chunk))
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

    /// The files in the trash with their records and attributes.
    pub fn trash(&self) -> Result<Vec<(crate::records::TrashRecord, Attr)>, ExecError> {
        let txn = self.txn();
        let mut out = Vec::new();
        for (key, value) in txn.scan_all(&[keys::TRASH])? {
            let Some(inode) = keys::inode_of_key(&key) else {
                continue;
            };
            let record: crate::records::TrashRecord = decode_value(&key, &value)?;
            if let Ok(rec) = namespace::inode_of(&txn, inode) {
                out.push((record, rec.attr(inode)));
            }
        }
        Ok(out)
    }

    /// When the trash time of `inode` is up, if it is in the trash.
    pub fn trash_expiry(&self, inode: InodeId) -> Result<Option<Timestamp>, ExecError> {
        let txn = self.txn();
        let Some(record) = txn.get::<crate::records::TrashRecord>(&keys::trash(inode))? else {
            return Ok(None);
        };
        let rec = namespace::inode_of(&txn, inode)?;
        Ok(Some(namespace::trash_expiry(
            record.deleted,
            rec.trash_time,
        )))
    }

    /// Whether `inode` is due to be purged once no session has it open: it has no name left
    /// and is not in the trash, or its trash time was up at `now`.
    pub fn purge_due(&self, inode: InodeId, now: Timestamp) -> Result<bool, ExecError> {
        // Unlinked and trashed files have no links left; a file that has one needs no look at
        // the keys below, which it does not have and the cache therefore does not hold.
        if namespace::inode_of(&self.txn(), inode)?.nlink > 0 {
            return Ok(false);
        }
        if self.txn().get_raw(&keys::unlinked(inode))?.is_some() {
            return Ok(true);
        }
        Ok(self
            .trash_expiry(inode)?
            .is_some_and(|expires| expires <= now))
    }

    /// What a client's numbered request `seq`, sent in request slot `slot`, produced, if it was
    /// carried out.
    pub fn request(
        &self,
        client: u64,
        slot: u16,
        seq: u64,
    ) -> Result<Option<crate::records::RequestRecord>, StoreError> {
        let record: Option<crate::records::SlotRecord> =
            self.txn().get(&keys::request_slot(client, slot))?;
        Ok(record.and_then(|r| r.of(seq)))
    }

    /// The record of a numbered request made before request slots, if it is still kept.
    #[cfg(test)]
    pub(crate) fn numbered_request(
        &self,
        client: u64,
        seq: u64,
    ) -> Result<Option<crate::records::RequestRecord>, StoreError> {
        self.txn().get(&keys::request(client, seq))
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

    /// Every key and value, in key order (tests compare whole states with it).
    #[cfg(test)]
    pub(crate) fn all_pairs(&self) -> crate::kv::Rows {
        self.kv.scan(&[], None, usize::MAX).unwrap()
    }

    /// Chunk ids below this may have been handed out.
    pub fn chunk_ids_reserved(&self) -> Result<u64, StoreError> {
        read_counter(self.kv.as_ref(), keys::CHUNK_IDS_RESERVED)
    }
}

pub(crate) fn encode_u64(n: u64) -> Vec<u8> {
    elkfs_proto::codec::encode(&n).unwrap_or_default()
}

pub(crate) fn read_counter(kv: &dyn KvStore, key: &[u8]) -> Result<u64, StoreError> {
    match kv.get(key)? {
        Some(bytes) => decode_value(key, &bytes),
        None => Ok(0),
    }
}

/// What a writer that failed keeps: the reason, and ENOSPC for a full disk (the change may be
/// made once there is room and the master has restarted), EIO for anything else.
fn failure(error: &StoreError) -> (String, Status) {
    let status = if error.is_out_of_space() {
        Status::NoSpace
    } else {
        Status::Io
    };
    (error.to_string(), status)
}
