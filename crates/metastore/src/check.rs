//! An offline consistency check of a namespace: walks every key of a stopped master's (or a
//! metalogger's) metadata and lists what does not add up, so crash tests and operators can tell a
//! state that merely opens from one that is whole.
//!
//! What must hold: every directory entry names an existing inode of the entry's kind, in an
//! existing directory, and is listed under its cookie as well; every inode is reachable from the
//! root, except files in the trash and inodes whose last name is gone ("unlinked", waiting for
//! their last close), which have no names and a link count of 0; a file's link count is the
//! number of entries naming it, a directory's is 2 + its subdirectories, and a directory has
//! exactly one name (the root none) and records its parent; every chunk of a file has a chunk
//! record whose reference count is the number of file slots holding it (snapshots share chunks);
//! and the counters (inodes in use, next inode, reserved chunk ids) agree with the records.

use std::collections::{HashMap, HashSet, VecDeque};
use std::path::Path;

use elkfs_proto::types::FileKind;
use elkfs_proto::{ChunkId, InodeId};
use serde::de::DeserializeOwned;

use crate::error::StoreError;
use crate::keys;
use crate::kv::KvStore;
use crate::records::{ChunkRecord, DirentRecord, InodeRecord, OrderRecord};
use crate::store::{MetaStore, StoreConfig};
use crate::txn::{decode_value, printable};

/// Keys read per step of the walk, so a large namespace is never read into memory at once.
const PAGE_KEYS: usize = 4096;

/// One way in which the namespace is inconsistent.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Problem {
    /// A stored value does not decode.
    #[error("key {key} holds a value that does not decode: {reason}")]
    Undecodable {
        /// The key, printed.
        key: String,
        /// What the decoder said.
        reason: String,
    },
    /// There is no root directory.
    #[error("the root directory (inode 1) is missing or not a directory")]
    MissingRoot,
    /// A directory entry names an inode that does not exist.
    #[error("entry {name:?} in directory {parent} names inode {inode}, which does not exist")]
    DanglingEntry {
        /// The directory.
        parent: InodeId,
        /// The entry's name (lossily decoded).
        name: String,
        /// The missing inode.
        inode: InodeId,
    },
    /// A directory entry lives under an inode that is missing or not a directory.
    #[error("entry {name:?} lives under inode {parent}, which is missing or not a directory")]
    EntryOutsideDirectory {
        /// The inode the entry is stored under.
        parent: InodeId,
        /// The entry's name.
        name: String,
    },
    /// A directory entry says one kind and the inode another.
    #[error(
        "entry {name:?} in directory {parent} says {entry:?} but inode {inode} is a {actual:?}"
    )]
    EntryKindMismatch {
        /// The directory.
        parent: InodeId,
        /// The entry's name.
        name: String,
        /// The inode named.
        inode: InodeId,
        /// The kind the entry records.
        entry: FileKind,
        /// The inode's kind.
        actual: FileKind,
    },
    /// The listing by position and the entries by name disagree.
    #[error("directory {parent}, position {cookie}: {what}")]
    ListingMismatch {
        /// The directory.
        parent: InodeId,
        /// The position (cookie).
        cookie: u64,
        /// How they disagree.
        what: String,
    },
    /// An inode that is neither in the trash nor unlinked cannot be reached from the root.
    #[error("inode {inode} cannot be reached from the root and is neither trashed nor unlinked")]
    Unreachable {
        /// The inode.
        inode: InodeId,
    },
    /// An inode's link count is not what its entries say.
    #[error("inode {inode} records {recorded} links but its entries make {expected}")]
    LinkCount {
        /// The inode.
        inode: InodeId,
        /// Its recorded link count.
        recorded: u32,
        /// What the entries make it.
        expected: u32,
    },
    /// A directory (other than the root) has no name or more than one.
    #[error("directory {inode} has {names} names instead of 1")]
    DirectoryNames {
        /// The directory.
        inode: InodeId,
        /// How many entries name it.
        names: u32,
    },
    /// A directory's recorded parent is not the directory holding its entry.
    #[error("directory {inode} records parent {recorded} but its entry is in {actual}")]
    WrongParent {
        /// The directory.
        inode: InodeId,
        /// The parent it records.
        recorded: InodeId,
        /// The directory its entry is in.
        actual: InodeId,
    },
    /// A trashed or unlinked inode still has names.
    #[error("inode {inode} is marked {mark} but {names} entries still name it")]
    DetachedButNamed {
        /// The inode.
        inode: InodeId,
        /// `trashed` or `unlinked`.
        mark: &'static str,
        /// How many entries name it.
        names: u32,
    },
    /// A record that belongs to an inode (chunk slot, xattr, link target, trash or unlinked
    /// mark) exists without that inode, or with an inode of a kind that cannot have it.
    #[error("{what} of inode {inode}, which is missing or cannot have one")]
    OrphanRecord {
        /// What kind of record.
        what: &'static str,
        /// The inode it belongs to.
        inode: InodeId,
    },
    /// A symbolic link has no target.
    #[error("symbolic link {inode} has no target")]
    SymlinkWithoutTarget {
        /// The link.
        inode: InodeId,
    },
    /// A file slot refers to a chunk that has no record.
    #[error("chunk {index} of inode {inode} is chunk {chunk}, which has no record")]
    MissingChunk {
        /// The file.
        inode: InodeId,
        /// The slot.
        index: u32,
        /// The chunk it names.
        chunk: ChunkId,
    },
    /// A chunk's reference count is not the number of file slots holding it.
    #[error("chunk {chunk} records {recorded} references but {counted} file slots hold it")]
    ChunkRefs {
        /// The chunk.
        chunk: ChunkId,
        /// Its recorded count.
        recorded: u32,
        /// Slots found.
        counted: u32,
    },
    /// The count of inodes in use is wrong.
    #[error("the inode counter says {recorded} but {found} inodes exist")]
    InodeCount {
        /// The counter.
        recorded: u64,
        /// Inodes found.
        found: u64,
    },
    /// The next inode to hand out is one that exists already.
    #[error("the next inode to hand out is {next} but inode {highest} exists")]
    NextInodeTooLow {
        /// The counter.
        next: u64,
        /// The highest inode found.
        highest: u64,
    },
    /// Chunk ids in use lie at or past the reserved bound, so one could be handed out twice.
    #[error("chunk ids are reserved below {reserved} but chunk {highest} exists")]
    ChunkIdsTooLow {
        /// The bound.
        reserved: u64,
        /// The highest chunk id found.
        highest: ChunkId,
    },
}

/// Opens the metadata in a master (or metalogger) data directory and checks it. Opening is the
/// master's: the changelog records sled has not applied are replayed first, and a sled that
/// does not open is rebuilt, so run it only while no master uses the directory (sled's lock
/// refuses a second user).
pub fn check_data_dir(dir: &Path) -> Result<Vec<Problem>, StoreError> {
    let (store, _report) = MetaStore::open(dir, &StoreConfig::default())?;
    check_store(&store)
}

/// Checks an open store; empty when the namespace is consistent. Fails only when the store
/// cannot be read.
pub fn check_store(store: &MetaStore) -> Result<Vec<Problem>, StoreError> {
    check_kv(store.kv.as_ref())
}

/// What the walk learned about one inode.
struct InodeFacts {
    kind: FileKind,
    nlink: u32,
    parent: InodeId,
    /// Entries naming it, and the directories holding them.
    entry_parents: Vec<InodeId>,
    /// Entries in it that are directories.
    subdirs: u32,
}

/// The walk's findings, filled in one key kind at a time.
#[derive(Default)]
struct Walk {
    inodes: HashMap<InodeId, InodeFacts>,
    /// Entries by (directory, cookie): name, inode and kind, until the listing matches them.
    entries: HashMap<(InodeId, u64), (Vec<u8>, InodeId, FileKind)>,
    /// File slots counted per chunk.
    chunk_slots: HashMap<ChunkId, u32>,
    /// File slots, to look up their chunk records once those are read.
    slots: Vec<(InodeId, u32, ChunkId)>,
    /// The highest chunk id in a slot or a record.
    highest_chunk: Option<ChunkId>,
    symlink_targets: HashSet<InodeId>,
    trashed: HashSet<InodeId>,
    unlinked: HashSet<InodeId>,
    problems: Vec<Problem>,
}

fn check_kv(kv: &dyn KvStore) -> Result<Vec<Problem>, StoreError> {
    let mut walk = Walk::default();
    walk.read_inodes(kv)?;
    walk.read_entries(kv)?;
    walk.read_listing(kv)?;
    walk.read_inode_records(kv)?;
    walk.read_chunks(kv)?;
    walk.check_links();
    walk.check_reachable();
    walk.check_counters(kv)?;
    Ok(walk.problems)
}

/// Calls `visit` with every key and value under `prefix`, a page at a time.
fn for_each(
    kv: &dyn KvStore,
    prefix: &[u8],
    mut visit: impl FnMut(&[u8], &[u8]),
) -> Result<(), StoreError> {
    let mut after: Option<Vec<u8>> = None;
    loop {
        let rows = kv.scan(prefix, after.as_deref(), PAGE_KEYS)?;
        let Some((last, _)) = rows.last() else {
            return Ok(());
        };
        after = Some(last.clone());
        let full = rows.len() == PAGE_KEYS;
        for (key, value) in &rows {
            visit(key, value);
        }
        if !full {
            return Ok(());
        }
    }
}

impl Walk {
    /// Decodes a value, noting a problem (and returning `None`) when it does not decode.
    fn decode<T: DeserializeOwned>(&mut self, key: &[u8], value: &[u8]) -> Option<T> {
        match decode_value(key, value) {
            Ok(v) => Some(v),
            Err(e) => {
                self.problems.push(Problem::Undecodable {
                    key: printable(key),
                    reason: e.to_string(),
                });
                None
            }
        }
    }

    fn read_inodes(&mut self, kv: &dyn KvStore) -> Result<(), StoreError> {
        for_each(kv, &[keys::INODE], |key, value| {
            let Some(inode) = keys::inode_of_key(key) else {
                return;
            };
            if let Some(rec) = self.decode::<InodeRecord>(key, value) {
                let facts = InodeFacts {
                    kind: rec.kind,
                    nlink: rec.nlink,
                    parent: rec.parent,
                    entry_parents: Vec::new(),
                    subdirs: 0,
                };
                self.inodes.insert(inode, facts);
            }
        })?;
        if self
            .inodes
            .get(&InodeId::ROOT)
            .is_none_or(|root| root.kind != FileKind::Dir)
        {
            self.problems.push(Problem::MissingRoot);
        }
        Ok(())
    }

    fn read_entries(&mut self, kv: &dyn KvStore) -> Result<(), StoreError> {
        for_each(kv, &[keys::DIRENT], |key, value| {
            let (Some(parent), Some(name)) = (keys::inode_of_key(key), key.get(9..)) else {
                return;
            };
            let Some(entry) = self.decode::<DirentRecord>(key, value) else {
                return;
            };
            let shown = String::from_utf8_lossy(name).into_owned();
            self.entries.insert(
                (parent, entry.cookie),
                (name.to_vec(), entry.inode, entry.kind),
            );
            match self.inodes.get_mut(&parent) {
                Some(dir) if dir.kind == FileKind::Dir => {
                    if entry.kind == FileKind::Dir {
                        dir.subdirs += 1;
                    }
                }
                _ => self.problems.push(Problem::EntryOutsideDirectory {
                    parent,
                    name: shown.clone(),
                }),
            }
            match self.inodes.get_mut(&entry.inode) {
                None => self.problems.push(Problem::DanglingEntry {
                    parent,
                    name: shown,
                    inode: entry.inode,
                }),
                Some(target) => {
                    target.entry_parents.push(parent);
                    if target.kind != entry.kind {
                        let actual = target.kind;
                        self.problems.push(Problem::EntryKindMismatch {
                            parent,
                            name: shown,
                            inode: entry.inode,
                            entry: entry.kind,
                            actual,
                        });
                    }
                }
            }
        })
    }

    /// Matches the listing by position against the entries by name.
    fn read_listing(&mut self, kv: &dyn KvStore) -> Result<(), StoreError> {
        for_each(kv, &[keys::ORDER], |key, value| {
            let parent = keys::inode_of_key(key);
            let cookie = key.get(9..17).and_then(|b| b.try_into().ok());
            let (Some(parent), Some(cookie)) = (parent, cookie.map(u64::from_be_bytes)) else {
                return;
            };
            let Some(listed) = self.decode::<OrderRecord>(key, value) else {
                return;
            };
            let what = match self.entries.remove(&(parent, cookie)) {
                None => format!(
                    "listed as {:?} but no entry has this position",
                    String::from_utf8_lossy(&listed.name)
                ),
                Some((name, inode, kind))
                    if (name.as_slice(), inode, kind)
                        != (listed.name.as_slice(), listed.inode, listed.kind) =>
                {
                    format!(
                        "listed as {:?} (inode {}) but the entry is {:?} (inode {inode})",
                        String::from_utf8_lossy(&listed.name),
                        listed.inode,
                        String::from_utf8_lossy(&name)
                    )
                }
                Some(_) => return,
            };
            self.problems.push(Problem::ListingMismatch {
                parent,
                cookie,
                what,
            });
        })?;
        let mut unlisted: Vec<_> = self.entries.drain().collect();
        unlisted.sort_by_key(|(position, _)| *position);
        for ((parent, cookie), (name, _, _)) in unlisted {
            self.problems.push(Problem::ListingMismatch {
                parent,
                cookie,
                what: format!(
                    "entry {:?} is not in the listing",
                    String::from_utf8_lossy(&name)
                ),
            });
        }
        Ok(())
    }

    /// The records kept per inode besides its entries: link targets, extended attributes,
    /// trash and unlinked marks.
    fn read_inode_records(&mut self, kv: &dyn KvStore) -> Result<(), StoreError> {
        let kinds: [(u8, &'static str, Option<FileKind>); 4] = [
            (keys::LINK_TARGET, "a link target", Some(FileKind::Symlink)),
            (keys::XATTR, "an extended attribute", None),
            (keys::TRASH, "a trash record", None),
            (keys::UNLINKED, "an unlinked mark", None),
        ];
        for (prefix, what, kind) in kinds {
            let mut found = Vec::new();
            for_each(kv, &[prefix], |key, _| {
                found.extend(keys::inode_of_key(key))
            })?;
            for inode in found {
                let fits = self
                    .inodes
                    .get(&inode)
                    .is_some_and(|facts| kind.is_none_or(|k| k == facts.kind));
                if !fits {
                    self.problems.push(Problem::OrphanRecord { what, inode });
                }
                match prefix {
                    keys::LINK_TARGET => self.symlink_targets.insert(inode),
                    keys::TRASH => self.trashed.insert(inode),
                    keys::UNLINKED => self.unlinked.insert(inode),
                    _ => false,
                };
            }
        }
        let mut untargeted: Vec<InodeId> = self
            .inodes
            .iter()
            .filter(|(inode, facts)| {
                facts.kind == FileKind::Symlink && !self.symlink_targets.contains(inode)
            })
            .map(|(inode, _)| *inode)
            .collect();
        untargeted.sort();
        self.problems.extend(
            untargeted
                .into_iter()
                .map(|inode| Problem::SymlinkWithoutTarget { inode }),
        );
        Ok(())
    }

    /// File slots against chunk records, and reference counts against slots.
    fn read_chunks(&mut self, kv: &dyn KvStore) -> Result<(), StoreError> {
        for_each(kv, &[keys::FILE_CHUNK], |key, value| {
            let (Some(inode), Some(index)) = (keys::inode_of_key(key), keys::file_chunk_index(key))
            else {
                return;
            };
            let Some(chunk) = self.decode::<ChunkId>(key, value) else {
                return;
            };
            if self
                .inodes
                .get(&inode)
                .is_none_or(|facts| facts.kind != FileKind::File)
            {
                self.problems.push(Problem::OrphanRecord {
                    what: "a chunk slot",
                    inode,
                });
            }
            *self.chunk_slots.entry(chunk).or_default() += 1;
            self.slots.push((inode, index, chunk));
            self.highest_chunk = self.highest_chunk.max(Some(chunk));
        })?;
        let mut records = HashMap::new();
        for_each(kv, &[keys::CHUNK], |key, value| {
            let Some(chunk) = keys::chunk_id_of(key) else {
                return;
            };
            if let Some(rec) = self.decode::<ChunkRecord>(key, value) {
                records.insert(chunk, rec.refs);
            }
            self.highest_chunk = self.highest_chunk.max(Some(chunk));
        })?;
        for &(inode, index, chunk) in &self.slots {
            if !records.contains_key(&chunk) {
                self.problems.push(Problem::MissingChunk {
                    inode,
                    index,
                    chunk,
                });
            }
        }
        let mut records: Vec<(ChunkId, u32)> = records.into_iter().collect();
        records.sort();
        for (chunk, recorded) in records {
            let counted = self.chunk_slots.get(&chunk).copied().unwrap_or(0);
            if recorded != counted {
                self.problems.push(Problem::ChunkRefs {
                    chunk,
                    recorded,
                    counted,
                });
            }
        }
        Ok(())
    }

    /// Link counts, names of directories and the marks of detached inodes.
    fn check_links(&mut self) {
        let mut inodes: Vec<(&InodeId, &InodeFacts)> = self.inodes.iter().collect();
        inodes.sort_by_key(|(inode, _)| **inode);
        for (&inode, facts) in inodes {
            let names = facts.entry_parents.len() as u32;
            let mark = if self.trashed.contains(&inode) {
                Some("trashed")
            } else if self.unlinked.contains(&inode) {
                Some("unlinked")
            } else {
                None
            };
            let expected = match (mark, facts.kind) {
                (Some(mark), _) => {
                    if names > 0 {
                        self.problems
                            .push(Problem::DetachedButNamed { inode, mark, names });
                    }
                    0
                }
                (None, FileKind::Dir) => {
                    let wanted_names = u32::from(inode != InodeId::ROOT);
                    if names != wanted_names {
                        self.problems.push(Problem::DirectoryNames { inode, names });
                    }
                    if let [actual] = facts.entry_parents[..]
                        && actual != facts.parent
                    {
                        self.problems.push(Problem::WrongParent {
                            inode,
                            recorded: facts.parent,
                            actual,
                        });
                    }
                    2 + facts.subdirs
                }
                (None, _) => names,
            };
            if facts.nlink != expected {
                self.problems.push(Problem::LinkCount {
                    inode,
                    recorded: facts.nlink,
                    expected,
                });
            }
        }
    }

    /// Every inode that is not trashed or unlinked must be reachable from the root.
    fn check_reachable(&mut self) {
        let mut children: HashMap<InodeId, Vec<InodeId>> = HashMap::new();
        for (&inode, facts) in &self.inodes {
            for &parent in &facts.entry_parents {
                children.entry(parent).or_default().push(inode);
            }
        }
        let mut reached = HashSet::from([InodeId::ROOT]);
        let mut queue = VecDeque::from([InodeId::ROOT]);
        while let Some(dir) = queue.pop_front() {
            for &child in children.get(&dir).into_iter().flatten() {
                if reached.insert(child) {
                    queue.push_back(child);
                }
            }
        }
        let mut lost: Vec<InodeId> = self
            .inodes
            .keys()
            .filter(|inode| {
                !reached.contains(inode)
                    && !self.trashed.contains(inode)
                    && !self.unlinked.contains(inode)
            })
            .copied()
            .collect();
        lost.sort();
        self.problems
            .extend(lost.into_iter().map(|inode| Problem::Unreachable { inode }));
    }

    fn check_counters(&mut self, kv: &dyn KvStore) -> Result<(), StoreError> {
        let mut counter = |key: &[u8]| -> Result<Option<u64>, StoreError> {
            Ok(match kv.get(key)? {
                Some(bytes) => self.decode::<u64>(key, &bytes),
                None => Some(0),
            })
        };
        let (count, next, reserved) = (
            counter(keys::INODE_COUNT)?,
            counter(keys::NEXT_INODE)?,
            counter(keys::CHUNK_IDS_RESERVED)?,
        );
        let found = self.inodes.len() as u64;
        if let Some(recorded) = count
            && recorded != found
        {
            self.problems.push(Problem::InodeCount { recorded, found });
        }
        if let (Some(next), Some(highest)) = (next, self.inodes.keys().map(|i| i.0).max())
            && next <= highest
        {
            self.problems
                .push(Problem::NextInodeTooLow { next, highest });
        }
        if let (Some(reserved), Some(highest)) = (reserved, self.highest_chunk)
            && reserved <= highest.0
        {
            self.problems
                .push(Problem::ChunkIdsTooLow { reserved, highest });
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use elkfs_proto::types::Timestamp;
    use elkfs_proto::{ChunkVersion, codec};

    use super::*;
    use crate::MetaOp;

    const ROOT: InodeId = InodeId::ROOT;

    fn t(secs: i64) -> Timestamp {
        Timestamp { secs, nanos: 0 }
    }

    fn created(store: &MetaStore, op: MetaOp) -> InodeId {
        let (_, outcome) = store.commit(&op).expect("commit");
        outcome.attr.expect("an attribute").inode
    }

    fn mkdir(store: &MetaStore, parent: InodeId, name: &str) -> InodeId {
        created(
            store,
            MetaOp::Mkdir {
                parent,
                name: name.into(),
                mode: 0o755,
                umask: 0,
                uid: 0,
                gid: 0,
                time: t(2),
            },
        )
    }

    fn mknod(store: &MetaStore, parent: InodeId, name: &str) -> InodeId {
        created(
            store,
            MetaOp::Mknod {
                parent,
                name: name.into(),
                kind: FileKind::File,
                mode: 0o644,
                umask: 0,
                uid: 0,
                gid: 0,
                rdev: 0,
                time: t(2),
            },
        )
    }

    /// The inodes of the namespace [`busy_store`] builds that the corruptions aim at.
    struct Built {
        /// A file with two names (`/a/f` and `/g`) and one chunk shared with a snapshot.
        linked: InodeId,
        /// The shared chunk.
        chunk: ChunkId,
        /// The directory `/a/b`.
        subdir: InodeId,
    }

    /// A store with a bit of everything: nested directories, hard links, a symlink, a chunk
    /// shared by a snapshot, a file in the trash, a removed directory, a rename across
    /// directories and an extended attribute.
    fn busy_store(dir: &Path) -> (MetaStore, Built) {
        let (store, _) = MetaStore::open(dir, &StoreConfig::default()).expect("open");
        let commit = |op: MetaOp| {
            store.commit(&op).expect("commit");
        };
        commit(MetaOp::Format {
            time: t(1),
            goal: 2,
            trash_time: 3600,
        });
        let a = mkdir(&store, ROOT, "a");
        let subdir = mkdir(&store, a, "b");
        let gone = mkdir(&store, a, "gone");
        let linked = mknod(&store, a, "f");
        commit(MetaOp::Link {
            inode: linked,
            parent: ROOT,
            name: "g".into(),
            time: t(3),
        });
        let chunk = ChunkId(7);
        commit(MetaOp::CreateChunk {
            inode: linked,
            index: 0,
            chunk,
            version: ChunkVersion(1),
        });
        commit(MetaOp::Snapshot {
            source: linked,
            parent: subdir,
            name: "f-copy".into(),
            owner: None,
            time: t(4),
        });
        commit(MetaOp::Symlink {
            parent: subdir,
            name: "link".into(),
            target: "../f".into(),
            uid: 0,
            gid: 0,
            time: t(4),
        });
        let trashed = mknod(&store, subdir, "trashed");
        commit(MetaOp::CreateChunk {
            inode: trashed,
            index: 0,
            chunk: ChunkId(8),
            version: ChunkVersion(1),
        });
        commit(MetaOp::Unlink {
            parent: subdir,
            name: "trashed".into(),
            time: t(5),
        });
        commit(MetaOp::Rmdir {
            parent: a,
            name: "gone".into(),
            time: t(5),
        });
        commit(MetaOp::Rename {
            parent: a,
            name: "b".into(),
            new_parent: ROOT,
            new_name: "b2".into(),
            flags: 0,
            time: t(6),
        });
        commit(MetaOp::SetXattr {
            inode: linked,
            name: "user.note".into(),
            value: b"kept".to_vec(),
            flags: 0,
            time: t(6),
        });
        assert_eq!(store.unlinked_inodes().expect("unlinked"), vec![gone]);
        assert_eq!(store.trash().expect("trash").len(), 1);
        (
            store,
            Built {
                linked,
                chunk,
                subdir,
            },
        )
    }

    fn put<T: serde::Serialize>(store: &MetaStore, key: Vec<u8>, value: &T) {
        let bytes = codec::encode(value).expect("encode");
        store.kv.apply(vec![(key, Some(bytes))]).expect("apply");
    }

    fn remove(store: &MetaStore, key: Vec<u8>) {
        store.kv.apply(vec![(key, None)]).expect("apply");
    }

    #[test]
    fn a_store_built_by_commits_is_consistent_also_after_reopening() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (store, _) = busy_store(dir.path());
        assert_eq!(check_store(&store).expect("check"), Vec::<Problem>::new());
        drop(store);
        assert_eq!(
            check_data_dir(dir.path()).expect("check"),
            Vec::<Problem>::new()
        );
    }

    #[test]
    fn a_missing_inode_is_found_through_its_names_and_chunks() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (store, built) = busy_store(dir.path());
        remove(&store, keys::inode(built.linked));
        let problems = check_store(&store).expect("check");
        let dangling: Vec<&Problem> = problems
            .iter()
            .filter(|p| matches!(p, Problem::DanglingEntry { inode, .. } if *inode == built.linked))
            .collect();
        assert_eq!(dangling.len(), 2, "both names of the file: {problems:#?}");
        assert!(problems.contains(&Problem::OrphanRecord {
            what: "a chunk slot",
            inode: built.linked,
        }));
        assert!(problems.contains(&Problem::OrphanRecord {
            what: "an extended attribute",
            inode: built.linked,
        }));
        assert!(
            problems
                .iter()
                .any(|p| matches!(p, Problem::InodeCount { .. }))
        );
    }

    #[test]
    fn a_bumped_link_count_is_found() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (store, built) = busy_store(dir.path());
        let mut rec = store.inode(built.linked).expect("inode");
        assert_eq!(rec.nlink, 2);
        rec.nlink = 3;
        put(&store, keys::inode(built.linked), &rec);
        let mut dir_rec = store.inode(built.subdir).expect("inode");
        dir_rec.nlink += 1;
        put(&store, keys::inode(built.subdir), &dir_rec);
        assert_eq!(
            check_store(&store).expect("check"),
            vec![
                Problem::LinkCount {
                    inode: built.subdir,
                    recorded: 3,
                    expected: 2,
                },
                Problem::LinkCount {
                    inode: built.linked,
                    recorded: 3,
                    expected: 2,
                },
            ]
        );
    }

    #[test]
    fn a_dropped_chunk_record_and_a_wrong_reference_count_are_found() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (store, built) = busy_store(dir.path());
        remove(&store, keys::chunk(built.chunk));
        let problems = check_store(&store).expect("check");
        assert_eq!(problems.len(), 2, "{problems:#?}");
        assert!(problems.iter().all(
            |p| matches!(p, Problem::MissingChunk { chunk, index: 0, .. } if *chunk == built.chunk)
        ));
        put(
            &store,
            keys::chunk(built.chunk),
            &ChunkRecord {
                version: ChunkVersion(1),
                refs: 1,
                goal: 2,
            },
        );
        assert_eq!(
            check_store(&store).expect("check"),
            vec![Problem::ChunkRefs {
                chunk: built.chunk,
                recorded: 1,
                counted: 2,
            }]
        );
    }

    #[test]
    fn a_directory_cut_from_its_parent_and_a_damaged_value_are_found() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (store, built) = busy_store(dir.path());
        let key = keys::dirent(ROOT, b"b2");
        let bytes = store.kv.get(&key).expect("read").expect("the entry");
        let entry: DirentRecord = decode_value(&key, &bytes).expect("decode");
        remove(&store, keys::dirent(ROOT, b"b2"));
        remove(&store, keys::order(ROOT, entry.cookie));
        store
            .kv
            .apply(vec![(keys::NEXT_INODE.to_vec(), Some(vec![0xff; 3]))])
            .expect("apply");
        let problems = check_store(&store).expect("check");
        assert!(problems.contains(&Problem::DirectoryNames {
            inode: built.subdir,
            names: 0,
        }));
        assert!(problems.contains(&Problem::Unreachable {
            inode: built.subdir,
        }));
        assert!(
            problems.contains(&Problem::LinkCount {
                inode: ROOT,
                recorded: 4,
                expected: 3,
            }),
            "{problems:#?}"
        );
        assert!(
            problems
                .iter()
                .any(|p| matches!(p, Problem::Undecodable { key, .. } if key.starts_with("m:"))),
            "{problems:#?}"
        );
        // The entries under the cut directory are lost with it.
        let lost = problems
            .iter()
            .filter(|p| matches!(p, Problem::Unreachable { .. }))
            .count();
        assert_eq!(
            lost, 3,
            "the directory, the snapshot and the symlink: {problems:#?}"
        );
    }

    /// Linux refuses to link an inode whose last name is gone (ENOENT); the master must too,
    /// or a name would point at an inode that its purge (last close, or trash expiry) deletes.
    #[test]
    fn a_file_without_names_cannot_get_one_back_by_a_link() {
        for trash_time in [0, 3600] {
            let dir = tempfile::tempdir().expect("tempdir");
            let (store, _) = MetaStore::open(dir.path(), &StoreConfig::default()).expect("open");
            store
                .commit(&MetaOp::Format {
                    time: t(1),
                    goal: 2,
                    trash_time,
                })
                .expect("format");
            let file = mknod(&store, ROOT, "f");
            store
                .commit(&MetaOp::Unlink {
                    parent: ROOT,
                    name: "f".into(),
                    time: t(3),
                })
                .expect("unlink");
            let relinked = store.commit(&MetaOp::Link {
                inode: file,
                parent: ROOT,
                name: "g".into(),
                time: t(4),
            });
            let problems = check_store(&store).expect("check");
            assert!(
                relinked.is_err() && problems.is_empty(),
                "trash time {trash_time}: linking the unlinked inode {file} gave {relinked:?}, \
                 leaving {problems:#?}"
            );
        }
    }

    /// Inodes created so far, for picking the targets of random changes.
    struct Known {
        dirs: Vec<InodeId>,
        all: Vec<InodeId>,
        next_chunk: u64,
    }

    impl Known {
        fn dir(&self, n: u8) -> InodeId {
            self.dirs[usize::from(n) % self.dirs.len()]
        }

        fn any(&self, n: u8) -> InodeId {
            self.all[usize::from(n) % self.all.len()]
        }

        fn chunk(&mut self) -> ChunkId {
            self.next_chunk += 1;
            ChunkId(self.next_chunk)
        }

        /// A change picked by four small numbers: its kind, two targets and a name or flag.
        fn random_op(&mut self, kind: u8, a: u8, b: u8, c: u8) -> MetaOp {
            const NAMES: [&str; 4] = ["a", "b", "c", "d"];
            let name = |n: u8| NAMES[usize::from(n % 4)].as_bytes().to_vec();
            let time = t(10);
            match kind % 12 {
                0 | 1 => MetaOp::Mknod {
                    parent: self.dir(a),
                    name: name(b),
                    kind: FileKind::File,
                    mode: 0o644,
                    umask: 0,
                    uid: 0,
                    gid: 0,
                    rdev: 0,
                    time,
                },
                2 => MetaOp::Mkdir {
                    parent: self.dir(a),
                    name: name(b),
                    mode: 0o755,
                    umask: 0,
                    uid: 0,
                    gid: 0,
                    time,
                },
                3 => MetaOp::Link {
                    inode: self.any(a),
                    parent: self.dir(b),
                    name: name(c),
                    time,
                },
                4 => MetaOp::Unlink {
                    parent: self.dir(a),
                    name: name(b),
                    time,
                },
                5 => MetaOp::Rmdir {
                    parent: self.dir(a),
                    name: name(b),
                    time,
                },
                6 => MetaOp::Rename {
                    parent: self.dir(a),
                    name: name(c),
                    new_parent: self.dir(b),
                    new_name: name(c / 4),
                    flags: u32::from(c / 16 % 3),
                    time,
                },
                7 => MetaOp::CreateChunk {
                    inode: self.any(a),
                    index: u32::from(b % 3),
                    chunk: self.chunk(),
                    version: ChunkVersion(1),
                },
                8 => MetaOp::Snapshot {
                    source: self.any(a),
                    parent: self.dir(b),
                    name: name(c),
                    owner: None,
                    time,
                },
                9 => MetaOp::SetAttr {
                    inode: self.any(a),
                    changes: elkfs_proto::types::SetAttr {
                        size: Some(u64::from(b % 3) * elkfs_proto::geometry::CHUNK_SIZE),
                        ..Default::default()
                    },
                    time,
                },
                10 => MetaOp::ReplaceChunk {
                    inode: self.any(a),
                    index: u32::from(b % 3),
                    chunk: self.chunk(),
                    version: ChunkVersion(2),
                },
                _ if c.is_multiple_of(2) => MetaOp::Purge { inode: self.any(a) },
                _ => MetaOp::TrashRestore {
                    inode: self.any(a),
                    time,
                },
            }
        }
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(24))]

        /// Whatever mix of changes the namespace accepts (and however many it refuses), the
        /// state it leaves is consistent.
        #[test]
        fn any_sequence_of_committed_changes_leaves_a_consistent_namespace(
            trash in proptest::bool::ANY,
            ops in proptest::collection::vec((0u8..12, 0u8..255, 0u8..255, 0u8..255), 1..120),
        ) {
            let dir = tempfile::tempdir().expect("tempdir");
            let (store, _) = MetaStore::open(dir.path(), &StoreConfig::default()).expect("open");
            store
                .commit(&MetaOp::Format {
                    time: t(1),
                    goal: 2,
                    trash_time: if trash { 3600 } else { 0 },
                })
                .expect("format");
            let mut known = Known {
                dirs: vec![ROOT],
                all: vec![ROOT],
                next_chunk: 0,
            };
            let mut applied = Vec::new();
            for (kind, a, b, c) in ops {
                let op = known.random_op(kind, a, b, c);
                // Linking an inode without names is a known bug with a test of its own
                // (`a_file_without_names_cannot_get_one_back_by_a_link`); left out here so
                // the property keeps looking for others.
                if let MetaOp::Link { inode, .. } = &op
                    && store.inode(*inode).is_ok_and(|rec| rec.nlink == 0)
                {
                    continue;
                }
                let Ok((_, outcome)) = store.commit(&op) else {
                    continue;
                };
                if let Some(attr) = outcome.attr {
                    if attr.kind == FileKind::Dir {
                        known.dirs.push(attr.inode);
                    }
                    known.all.push(attr.inode);
                }
                applied.push(op);
            }
            let problems = check_store(&store).expect("check");
            proptest::prop_assert!(problems.is_empty(), "{problems:#?}\nafter {applied:#?}");
        }
    }
}
