//! The meaning of each changelog record: checks it against the current state and computes the
//! writes it makes. The same code runs when the master makes a change and when it (or a
//! metalogger) replays one, so both always agree.

use elkfs_proto::geometry::{CHUNK_SIZE, MAX_FILE_SIZE};
use elkfs_proto::types::{Attr, FileKind, SetAttr, TimeSet, Timestamp};
use elkfs_proto::{ChunkId, ChunkVersion, InodeId, Status};

use crate::acl;
use crate::keys;
use crate::op::MetaOp;
use crate::records::{
    ChunkRecord, DirentRecord, InodeRecord, OrderRecord, RequestRecord, SlotRecord, TrashRecord,
};
use crate::txn::{ExecError, Txn};

/// Longest file name, in bytes.
pub const NAME_MAX: usize = 255;

/// Longest symbolic link target, in bytes.
pub const TARGET_MAX: usize = 4096;

/// Linux's `RENAME_NOREPLACE`.
pub const RENAME_NOREPLACE: u32 = 1;
/// Linux's `RENAME_EXCHANGE`.
pub const RENAME_EXCHANGE: u32 = 2;

const S_ISGID: u32 = 0o2000;

/// The largest goal (copies of each chunk).
pub const MAX_GOAL: u8 = elkfs_proto::geometry::MAX_COPIES as u8;

/// Longest extended attribute name, in bytes.
pub const XATTR_NAME_MAX: usize = 255;
/// Largest extended attribute value, in bytes (Linux's `XATTR_SIZE_MAX`).
pub const XATTR_SIZE_MAX: usize = 65536;
/// `setxattr` flag: fail if the attribute exists.
pub const XATTR_CREATE: u32 = 1;
/// `setxattr` flag: fail if the attribute does not exist.
pub const XATTR_REPLACE: u32 = 2;

/// Cookies 1 and 2 are `.` and `..` in listings; real entries start after them.
pub const FIRST_COOKIE: u64 = 3;

/// What an applied operation produced.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Outcome {
    /// Attributes of the inode created or changed, when there is one.
    pub attr: Option<Attr>,
    /// Chunks no file refers to any more: their copies can be deleted.
    pub freed_chunks: Vec<(ChunkId, ChunkVersion)>,
    /// Files that lost their last name: they are purged once nobody has them open.
    pub unlinked: Vec<InodeId>,
    /// Files moved to the trash, with when their trash time is up.
    pub trashed: Vec<(InodeId, Timestamp)>,
}

impl Outcome {
    fn attr(inode: InodeId, record: &InodeRecord) -> Outcome {
        Outcome {
            attr: Some(record.attr(inode)),
            ..Default::default()
        }
    }
}

/// Applies `op` to the state seen through `txn`.
pub fn execute(txn: &mut Txn<'_>, op: &MetaOp) -> Result<Outcome, ExecError> {
    match op {
        MetaOp::Format {
            time,
            goal,
            trash_time,
        } => format(txn, *time, *goal, *trash_time),
        MetaOp::Mknod {
            parent,
            name,
            kind,
            mode,
            umask,
            uid,
            gid,
            rdev,
            time,
        } => {
            if matches!(kind, FileKind::Dir | FileKind::Symlink) {
                return Err(Status::Invalid.into());
            }
            let new = NewInode {
                kind: *kind,
                mode: *mode,
                umask: *umask,
                uid: *uid,
                gid: *gid,
                rdev: *rdev,
                time: *time,
            };
            create(txn, *parent, name, new, None)
        }
        MetaOp::Mkdir {
            parent,
            name,
            mode,
            umask,
            uid,
            gid,
            time,
        } => {
            let new = NewInode {
                kind: FileKind::Dir,
                mode: *mode,
                umask: *umask,
                uid: *uid,
                gid: *gid,
                rdev: 0,
                time: *time,
            };
            create(txn, *parent, name, new, None)
        }
        MetaOp::Symlink {
            parent,
            name,
            target,
            uid,
            gid,
            time,
        } => {
            if target.is_empty() || target.len() > TARGET_MAX {
                return Err(Status::Invalid.into());
            }
            let new = NewInode {
                kind: FileKind::Symlink,
                mode: 0o777,
                umask: 0,
                uid: *uid,
                gid: *gid,
                rdev: 0,
                time: *time,
            };
            create(txn, *parent, name, new, Some(target))
        }
        MetaOp::Link {
            inode,
            parent,
            name,
            time,
        } => link(txn, *inode, *parent, name, *time),
        MetaOp::Unlink { parent, name, time } => remove(txn, *parent, name, *time, false),
        MetaOp::Rmdir { parent, name, time } => remove(txn, *parent, name, *time, true),
        MetaOp::Rename {
            parent,
            name,
            new_parent,
            new_name,
            flags,
            time,
        } => rename(txn, *parent, name, *new_parent, new_name, *flags, *time),
        MetaOp::SetAttr {
            inode,
            changes,
            time,
        } => set_attr(txn, *inode, changes, *time),
        MetaOp::ExtendLength {
            inode,
            length,
            time,
        } => extend_length(txn, *inode, *length, *time),
        MetaOp::ExtendLengthIn {
            inode,
            index,
            chunk,
            length,
            time,
        } => {
            let slot: Option<ChunkId> = txn.get(&keys::file_chunk(*inode, *index))?;
            if slot == Some(*chunk) {
                extend_length(txn, *inode, *length, *time)
            } else {
                let rec = inode_of(txn, *inode)?;
                Ok(Outcome::attr(*inode, &rec))
            }
        }
        MetaOp::CreateChunk {
            inode,
            index,
            chunk,
            version,
        } => {
            let rec = inode_of(txn, *inode)?;
            if rec.kind != FileKind::File {
                return Err(Status::Invalid.into());
            }
            let slot = keys::file_chunk(*inode, *index);
            if txn.get_raw(&slot)?.is_some() || txn.get_raw(&keys::chunk(*chunk))?.is_some() {
                return Err(Status::Exists.into());
            }
            txn.put(slot, chunk)?;
            txn.put(
                keys::chunk(*chunk),
                &ChunkRecord {
                    version: *version,
                    refs: 1,
                    goal: rec.goal,
                },
            )?;
            let reserved = txn.counter(keys::CHUNK_IDS_RESERVED)?;
            if chunk.0 >= reserved {
                txn.set_counter(keys::CHUNK_IDS_RESERVED, chunk.0 + 1)?;
            }
            Ok(Outcome::default())
        }
        MetaOp::SetChunkVersion { chunk, version } => {
            let key = keys::chunk(*chunk);
            let mut rec: ChunkRecord = txn.get(&key)?.ok_or(Status::NotFound)?;
            // Versions only grow: a newer copy adopted at registration must not take a chunk
            // back below a version bumped meanwhile (two copies would then share a version
            // with different data).
            if *version > rec.version {
                rec.version = *version;
                txn.put(key, &rec)?;
            }
            Ok(Outcome::default())
        }
        MetaOp::IssueChunkVersion { chunk, version } => {
            if txn.get_raw(&keys::chunk(*chunk))?.is_none() {
                return Err(Status::NotFound.into());
            }
            let key = keys::chunk_issued(*chunk);
            let issued: Option<ChunkVersion> = txn.get(&key)?;
            if issued.is_none_or(|v| *version > v) {
                txn.put(key, version)?;
            }
            Ok(Outcome::default())
        }
        MetaOp::ReserveChunkIds { up_to } => {
            let reserved = txn.counter(keys::CHUNK_IDS_RESERVED)?;
            txn.set_counter(keys::CHUNK_IDS_RESERVED, reserved.max(*up_to))?;
            Ok(Outcome::default())
        }
        MetaOp::SetXattr {
            inode,
            name,
            value,
            flags,
            time,
        } => set_xattr(txn, *inode, name, value, *flags, *time),
        MetaOp::RemoveXattr { inode, name, time } => {
            let mut rec = inode_of(txn, *inode)?;
            let key = keys::xattr(*inode, name);
            if txn.get_raw(&key)?.is_none() {
                return Err(Status::NoAttribute.into());
            }
            txn.delete(key);
            rec.ctime = *time;
            txn.put(keys::inode(*inode), &rec)?;
            Ok(Outcome::attr(*inode, &rec))
        }
        MetaOp::SetGoal { inode, goal, time } => {
            if !(1..=MAX_GOAL).contains(goal) {
                return Err(Status::Invalid.into());
            }
            let mut rec = inode_of(txn, *inode)?;
            rec.goal = *goal;
            rec.ctime = *time;
            txn.put(keys::inode(*inode), &rec)?;
            if rec.kind == FileKind::File {
                for (key, value) in txn.scan_all(&keys::file_chunk_prefix(*inode))? {
                    let chunk: ChunkId = crate::txn::decode_value(&key, &value)?;
                    let ckey = keys::chunk(chunk);
                    if let Some(mut crec) = txn.get::<ChunkRecord>(&ckey)? {
                        // A chunk another file shares (a snapshot) keeps the larger goal: the
                        // record does not say which files those are, nor their goals, and
                        // one copy too many is better than one too few.
                        crec.goal = match crec.refs > 1 {
                            true => crec.goal.max(*goal),
                            false => *goal,
                        };
                        txn.put(ckey, &crec)?;
                    }
                }
            }
            Ok(Outcome::attr(*inode, &rec))
        }
        MetaOp::SetTrashTime {
            inode,
            seconds,
            time,
        } => change_inode(txn, *inode, *time, |rec| rec.trash_time = *seconds),
        MetaOp::SetEattr {
            inode,
            eattrs,
            time,
        } => change_inode(txn, *inode, *time, |rec| rec.eattrs = *eattrs),
        MetaOp::ClearChunks {
            inode,
            first,
            end,
            time,
        } => {
            let mut rec = inode_of(txn, *inode)?;
            if rec.kind != FileKind::File {
                return Err(Status::Invalid.into());
            }
            let mut outcome = Outcome::default();
            drop_chunks_in(txn, *inode, *first, *end, &mut outcome)?;
            rec.mtime = *time;
            rec.ctime = *time;
            txn.put(keys::inode(*inode), &rec)?;
            outcome.attr = Some(rec.attr(*inode));
            Ok(outcome)
        }
        MetaOp::TrashRestore { inode, time } => restore(txn, *inode, *time),
        MetaOp::Snapshot {
            source,
            parent,
            name,
            owner,
            time,
        } => snapshot(txn, *source, *parent, name, *owner, *time),
        MetaOp::ReplaceChunk {
            inode,
            index,
            chunk,
            version,
        } => {
            let rec = inode_of(txn, *inode)?;
            let slot = keys::file_chunk(*inode, *index);
            let old: ChunkId = txn.get(&slot)?.ok_or(Status::NotFound)?;
            if txn.get_raw(&keys::chunk(*chunk))?.is_some() {
                return Err(Status::Exists.into());
            }
            let mut outcome = Outcome::default();
            let okey = keys::chunk(old);
            if let Some(mut orec) = txn.get::<ChunkRecord>(&okey)? {
                if orec.refs <= 1 {
                    txn.delete(okey);
                    txn.delete(keys::chunk_issued(old));
                    outcome.freed_chunks.push((old, orec.version));
                } else {
                    orec.refs -= 1;
                    txn.put(okey, &orec)?;
                }
            }
            txn.put(slot, chunk)?;
            txn.put(
                keys::chunk(*chunk),
                &ChunkRecord {
                    version: *version,
                    refs: 1,
                    goal: rec.goal,
                },
            )?;
            let reserved = txn.counter(keys::CHUNK_IDS_RESERVED)?;
            if chunk.0 >= reserved {
                txn.set_counter(keys::CHUNK_IDS_RESERVED, chunk.0 + 1)?;
            }
            Ok(outcome)
        }
        MetaOp::Tagged {
            client,
            seq,
            time,
            op,
        } => {
            let outcome = execute_numbered(txn, op)?;
            txn.put(
                keys::request(*client, *seq),
                &RequestRecord {
                    inode: outcome.attr.as_ref().map(|a| a.inode),
                    time: *time,
                },
            )?;
            Ok(outcome)
        }
        MetaOp::TaggedInSlot {
            client,
            slot,
            seq,
            time,
            op,
        } => {
            let outcome = execute_numbered(txn, op)?;
            let key = keys::request_slot(*client, *slot);
            // A request the client gave up on may be carried out after a later one took its
            // slot: the later one's record stays.
            let later = txn
                .get::<SlotRecord>(&key)?
                .is_some_and(|record| record.seq > *seq);
            if !later {
                let record = SlotRecord {
                    seq: *seq,
                    inode: outcome.attr.as_ref().map(|a| a.inode),
                    time: *time,
                };
                txn.put(key, &record)?;
            }
            Ok(outcome)
        }
        MetaOp::ForgetRequests { before } => {
            // Always alone in its transaction, so the store shows all there is. The master's
            // commit and replay remove these in steps instead (`requests::forget_in_steps`).
            for key in crate::requests::expired(txn.store(), *before, None, usize::MAX)?.keys {
                txn.delete(key);
            }
            Ok(Outcome::default())
        }
        MetaOp::SetAtime { inode, time } => {
            let mut rec = inode_of(txn, *inode)?;
            rec.atime = *time;
            txn.put(keys::inode(*inode), &rec)?;
            Ok(Outcome::attr(*inode, &rec))
        }
        MetaOp::Purge { inode } => {
            let unlinked = keys::unlinked(*inode);
            let trashed = keys::trash(*inode);
            if txn.get_raw(&unlinked)?.is_some() {
                txn.delete(unlinked);
            } else if txn.get_raw(&trashed)?.is_some() {
                txn.delete(trashed);
            } else {
                return Err(Status::NotFound.into());
            }
            let rec = inode_of(txn, *inode)?;
            let mut outcome = Outcome::default();
            delete_inode(txn, *inode, &rec, &mut outcome)?;
            Ok(outcome)
        }
    }
}

/// The end of a write: the file's size becomes the larger of it and `length`.
fn extend_length(
    txn: &mut Txn<'_>,
    inode: InodeId,
    length: u64,
    time: Timestamp,
) -> Result<Outcome, ExecError> {
    let mut rec = inode_of(txn, inode)?;
    if rec.kind != FileKind::File {
        return Err(Status::Invalid.into());
    }
    if length > MAX_FILE_SIZE {
        return Err(Status::TooBig.into());
    }
    rec.size = rec.size.max(length);
    rec.mtime = time;
    rec.ctime = time;
    txn.put(keys::inode(inode), &rec)?;
    Ok(Outcome::attr(inode, &rec))
}

fn set_xattr(
    txn: &mut Txn<'_>,
    inode: InodeId,
    name: &[u8],
    value: &[u8],
    flags: u32,
    time: Timestamp,
) -> Result<Outcome, ExecError> {
    if name.is_empty() || name.contains(&0) {
        return Err(Status::Invalid.into());
    }
    if name.len() > XATTR_NAME_MAX {
        return Err(Status::NameTooLong.into());
    }
    if value.len() > XATTR_SIZE_MAX {
        return Err(Status::TooLarge.into());
    }
    if !xattr_namespace_supported(name) {
        return Err(Status::NotSupported.into());
    }
    let mut rec = inode_of(txn, inode)?;
    let key = keys::xattr(inode, name);
    let exists = txn.get_raw(&key)?.is_some();
    if flags & XATTR_CREATE != 0 && exists {
        return Err(Status::Exists.into());
    }
    if flags & XATTR_REPLACE != 0 && !exists {
        return Err(Status::NoAttribute.into());
    }
    rec.ctime = time;
    // An access ACL sets the mode's permission bits; one that says no more than them is not
    // kept at all, as on a local filesystem.
    let keep = if name == acl::ACCESS {
        match acl::mode_of(value) {
            Some((perm, equivalent)) => {
                rec.mode = (rec.mode & !0o777) | perm;
                !equivalent
            }
            None => return Err(Status::Invalid.into()),
        }
    } else {
        true
    };
    if keep {
        txn.put(key, &value.to_vec())?;
    } else {
        txn.delete(key);
    }
    txn.put(keys::inode(inode), &rec)?;
    Ok(Outcome::attr(inode, &rec))
}

/// The extended attribute namespaces Linux filesystems accept.
fn xattr_namespace_supported(name: &[u8]) -> bool {
    name.starts_with(b"user.")
        || name.starts_with(b"security.")
        || name.starts_with(b"trusted.")
        || name == acl::ACCESS
        || name == acl::DEFAULT
}

/// Carries out the change a numbered request's record holds, which cannot itself be one.
fn execute_numbered(txn: &mut Txn<'_>, op: &MetaOp) -> Result<Outcome, ExecError> {
    if matches!(op, MetaOp::Tagged { .. } | MetaOp::TaggedInSlot { .. }) {
        return Err(Status::Invalid.into());
    }
    execute(txn, op)
}

/// Reads an inode or fails with ENOENT.
pub fn inode_of(txn: &Txn<'_>, inode: InodeId) -> Result<InodeRecord, ExecError> {
    Ok(txn
        .get::<InodeRecord>(&keys::inode(inode))?
        .ok_or(Status::NotFound)?)
}

/// Changes an attribute kept in an inode's record (its ctime moves with it).
fn change_inode(
    txn: &mut Txn<'_>,
    inode: InodeId,
    time: Timestamp,
    change: impl FnOnce(&mut InodeRecord),
) -> Result<Outcome, ExecError> {
    let mut rec = inode_of(txn, inode)?;
    change(&mut rec);
    rec.ctime = time;
    txn.put(keys::inode(inode), &rec)?;
    Ok(Outcome::attr(inode, &rec))
}

fn dir_of(txn: &Txn<'_>, inode: InodeId) -> Result<InodeRecord, ExecError> {
    let rec = inode_of(txn, inode)?;
    if rec.kind != FileKind::Dir {
        return Err(Status::NotDir.into());
    }
    if rec.nlink == 0 {
        // Removed but still open somewhere: nothing new may appear in it.
        return Err(Status::NotFound.into());
    }
    Ok(rec)
}

/// Checks a name for a new directory entry.
pub fn check_name(name: &[u8]) -> Result<(), Status> {
    if name.len() > NAME_MAX {
        return Err(Status::NameTooLong);
    }
    if name.is_empty() || name == b"." || name == b".." || name.contains(&b'/') || name.contains(&0)
    {
        return Err(Status::Invalid);
    }
    Ok(())
}

fn format(
    txn: &mut Txn<'_>,
    time: Timestamp,
    goal: u8,
    trash_time: u32,
) -> Result<Outcome, ExecError> {
    if txn.get_raw(&keys::inode(InodeId::ROOT))?.is_some() {
        return Err(Status::Exists.into());
    }
    let root = InodeRecord {
        kind: FileKind::Dir,
        mode: 0o755,
        uid: 0,
        gid: 0,
        nlink: 2,
        size: 0,
        atime: time,
        mtime: time,
        ctime: time,
        rdev: 0,
        goal,
        trash_time,
        parent: InodeId::ROOT,
        next_cookie: FIRST_COOKIE,
        eattrs: 0,
        name: Vec::new(),
    };
    txn.put(keys::inode(InodeId::ROOT), &root)?;
    txn.set_counter(keys::NEXT_INODE, InodeId::ROOT.0 + 1)?;
    txn.set_counter(keys::INODE_COUNT, 1)?;
    Ok(Outcome::attr(InodeId::ROOT, &root))
}

struct NewInode {
    kind: FileKind,
    mode: u32,
    umask: u32,
    uid: u32,
    gid: u32,
    rdev: u32,
    time: Timestamp,
}

fn create(
    txn: &mut Txn<'_>,
    parent: InodeId,
    name: &[u8],
    new: NewInode,
    target: Option<&Vec<u8>>,
) -> Result<Outcome, ExecError> {
    check_name(name)?;
    let mut dir = dir_of(txn, parent)?;
    if txn.get_raw(&keys::dirent(parent, name))?.is_some() {
        return Err(Status::Exists.into());
    }
    let inode = InodeId(txn.counter(keys::NEXT_INODE)?.max(InodeId::ROOT.0 + 1));
    let setgid_dir = dir.mode & S_ISGID != 0;
    let is_dir = new.kind == FileKind::Dir;
    let acls = if new.kind == FileKind::Symlink {
        acl::Inherited {
            mode: 0o777,
            access: None,
            default: None,
        }
    } else {
        let parent_default: Option<Vec<u8>> = txn.get(&keys::xattr(parent, acl::DEFAULT))?;
        acl::inherit(new.mode, new.umask, parent_default.as_deref(), is_dir)
    };
    let mut mode = acls.mode;
    if setgid_dir && is_dir {
        mode |= S_ISGID;
    }
    if let Some(access) = &acls.access {
        txn.put(keys::xattr(inode, acl::ACCESS), access)?;
    }
    if let Some(default) = &acls.default {
        txn.put(keys::xattr(inode, acl::DEFAULT), default)?;
    }
    let rec = InodeRecord {
        kind: new.kind,
        mode,
        uid: new.uid,
        gid: if setgid_dir { dir.gid } else { new.gid },
        nlink: if is_dir { 2 } else { 1 },
        size: target.map_or(0, |t| t.len() as u64),
        atime: new.time,
        mtime: new.time,
        ctime: new.time,
        rdev: new.rdev,
        goal: dir.goal,
        trash_time: dir.trash_time,
        parent,
        next_cookie: FIRST_COOKIE,
        eattrs: dir.eattrs,
        name: name.to_vec(),
    };
    txn.put(keys::inode(inode), &rec)?;
    if let Some(target) = target {
        txn.put(keys::link_target(inode), target)?;
    }
    add_entry(txn, parent, &mut dir, name, inode, rec.kind)?;
    if is_dir {
        dir.nlink += 1;
    }
    dir.mtime = new.time;
    dir.ctime = new.time;
    txn.put(keys::inode(parent), &dir)?;
    txn.set_counter(keys::NEXT_INODE, inode.0 + 1)?;
    let count = txn.counter(keys::INODE_COUNT)?;
    txn.set_counter(keys::INODE_COUNT, count + 1)?;
    Ok(Outcome::attr(inode, &rec))
}

/// Adds `name` to `dir` (whose record the caller stores afterwards).
fn add_entry(
    txn: &mut Txn<'_>,
    parent: InodeId,
    dir: &mut InodeRecord,
    name: &[u8],
    inode: InodeId,
    kind: FileKind,
) -> Result<(), ExecError> {
    let cookie = dir.next_cookie.max(FIRST_COOKIE);
    dir.next_cookie = cookie + 1;
    txn.put(
        keys::dirent(parent, name),
        &DirentRecord {
            inode,
            kind,
            cookie,
        },
    )?;
    txn.put(
        keys::order(parent, cookie),
        &OrderRecord {
            name: name.to_vec(),
            inode,
            kind,
        },
    )?;
    Ok(())
}

fn drop_entry(txn: &mut Txn<'_>, parent: InodeId, name: &[u8], entry: &DirentRecord) {
    txn.delete(keys::dirent(parent, name));
    txn.delete(keys::order(parent, entry.cookie));
}

fn entry_of(txn: &Txn<'_>, parent: InodeId, name: &[u8]) -> Result<DirentRecord, ExecError> {
    Ok(txn
        .get::<DirentRecord>(&keys::dirent(parent, name))?
        .ok_or(Status::NotFound)?)
}

fn link(
    txn: &mut Txn<'_>,
    inode: InodeId,
    parent: InodeId,
    name: &[u8],
    time: Timestamp,
) -> Result<Outcome, ExecError> {
    check_name(name)?;
    let mut rec = inode_of(txn, inode)?;
    if rec.kind == FileKind::Dir {
        return Err(Status::NotPermitted.into());
    }
    if rec.nlink == 0 {
        // Its last name is gone (open, in the trash or unlinked): like Linux, no new name, or
        // the purge at last close or trash expiry would leave that name dangling.
        return Err(Status::NotFound.into());
    }
    let mut dir = dir_of(txn, parent)?;
    if txn.get_raw(&keys::dirent(parent, name))?.is_some() {
        return Err(Status::Exists.into());
    }
    if rec.nlink == u32::MAX {
        return Err(Status::Invalid.into());
    }
    add_entry(txn, parent, &mut dir, name, inode, rec.kind)?;
    dir.mtime = time;
    dir.ctime = time;
    txn.put(keys::inode(parent), &dir)?;
    rec.nlink += 1;
    rec.ctime = time;
    txn.put(keys::inode(inode), &rec)?;
    Ok(Outcome::attr(inode, &rec))
}

fn remove(
    txn: &mut Txn<'_>,
    parent: InodeId,
    name: &[u8],
    time: Timestamp,
    want_dir: bool,
) -> Result<Outcome, ExecError> {
    if name == b"." || name == b".." {
        return Err(Status::Invalid.into());
    }
    let mut dir = dir_of(txn, parent)?;
    let entry = entry_of(txn, parent, name)?;
    let is_dir = entry.kind == FileKind::Dir;
    if want_dir && !is_dir {
        return Err(Status::NotDir.into());
    }
    if !want_dir && is_dir {
        return Err(Status::IsDir.into());
    }
    if is_dir && txn.any_with_prefix(&keys::dirent_prefix(entry.inode))? {
        return Err(Status::NotEmpty.into());
    }
    drop_entry(txn, parent, name, &entry);
    if is_dir {
        dir.nlink = dir.nlink.saturating_sub(1);
    }
    dir.mtime = time;
    dir.ctime = time;
    txn.put(keys::inode(parent), &dir)?;
    let mut outcome = Outcome::default();
    release_link(txn, entry.inode, (parent, name), time, &mut outcome)?;
    Ok(outcome)
}

/// Drops the name `from` of `inode`. With its last name a file goes to the trash (when its
/// trash time is not 0), or awaits its purge at the last close.
fn release_link(
    txn: &mut Txn<'_>,
    inode: InodeId,
    from: (InodeId, &[u8]),
    time: Timestamp,
    outcome: &mut Outcome,
) -> Result<(), ExecError> {
    let mut rec = inode_of(txn, inode)?;
    if rec.kind == FileKind::Dir {
        // Kept (empty, without links) until nobody has it open, like an unlinked file.
        rec.nlink = 0;
        rec.ctime = time;
        txn.put(keys::inode(inode), &rec)?;
        txn.put(keys::unlinked(inode), &time)?;
        outcome.unlinked.push(inode);
        return Ok(());
    }
    rec.nlink = rec.nlink.saturating_sub(1);
    rec.ctime = time;
    txn.put(keys::inode(inode), &rec)?;
    if rec.nlink == 0 {
        if rec.trash_time > 0 && matches!(rec.kind, FileKind::File | FileKind::Symlink) {
            let mut path = path_of(txn, from.0)?;
            if path.last() != Some(&b'/') {
                path.push(b'/');
            }
            path.extend_from_slice(from.1);
            txn.put(
                keys::trash(inode),
                &TrashRecord {
                    path,
                    deleted: time,
                },
            )?;
            outcome
                .trashed
                .push((inode, trash_expiry(time, rec.trash_time)));
        } else {
            // Kept until the master purges it: an open file stays readable and writable.
            txn.put(keys::unlinked(inode), &time)?;
            outcome.unlinked.push(inode);
        }
    }
    Ok(())
}

/// When the trash time of a file deleted at `deleted` is up.
pub fn trash_expiry(deleted: Timestamp, trash_time: u32) -> Timestamp {
    Timestamp {
        secs: deleted.secs.saturating_add(i64::from(trash_time)),
        nanos: deleted.nanos,
    }
}

/// The path of a directory from the root (`/` for the root).
pub fn path_of(txn: &Txn<'_>, dir: InodeId) -> Result<Vec<u8>, ExecError> {
    let mut parts = Vec::new();
    let mut cur = dir;
    for _ in 0..4096 {
        if cur == InodeId::ROOT {
            break;
        }
        let rec = inode_of(txn, cur)?;
        parts.push(rec.name);
        cur = rec.parent;
    }
    let mut path = Vec::new();
    for part in parts.iter().rev() {
        path.push(b'/');
        path.extend_from_slice(part);
    }
    if path.is_empty() {
        path.push(b'/');
    }
    Ok(path)
}

fn delete_inode(
    txn: &mut Txn<'_>,
    inode: InodeId,
    rec: &InodeRecord,
    outcome: &mut Outcome,
) -> Result<(), ExecError> {
    txn.delete(keys::inode(inode));
    if rec.kind == FileKind::Symlink {
        txn.delete(keys::link_target(inode));
    }
    if rec.kind == FileKind::File {
        drop_chunks_from(txn, inode, 0, outcome)?;
    }
    for (key, _) in txn.scan_all(&keys::xattr_prefix(inode))? {
        txn.delete(key);
    }
    let count = txn.counter(keys::INODE_COUNT)?;
    txn.set_counter(keys::INODE_COUNT, count.saturating_sub(1))?;
    Ok(())
}

/// Removes chunk slots `first..` of a file, freeing chunks no other slot refers to.
fn drop_chunks_from(
    txn: &mut Txn<'_>,
    inode: InodeId,
    first: u32,
    outcome: &mut Outcome,
) -> Result<(), ExecError> {
    drop_chunks_in(txn, inode, first, u32::MAX, outcome)
}

/// Removes chunk slots `first..end` of a file, freeing chunks no other slot refers to.
fn drop_chunks_in(
    txn: &mut Txn<'_>,
    inode: InodeId,
    first: u32,
    end: u32,
    outcome: &mut Outcome,
) -> Result<(), ExecError> {
    for (key, value) in txn.scan_all(&keys::file_chunk_prefix(inode))? {
        let Some(index) = keys::file_chunk_index(&key) else {
            continue;
        };
        if index < first || (index >= end && end != u32::MAX) {
            continue;
        }
        let chunk: ChunkId = crate::txn::decode_value(&key, &value)?;
        txn.delete(key);
        let ckey = keys::chunk(chunk);
        if let Some(mut crec) = txn.get::<ChunkRecord>(&ckey)? {
            if crec.refs <= 1 {
                txn.delete(ckey);
                txn.delete(keys::chunk_issued(chunk));
                outcome.freed_chunks.push((chunk, crec.version));
            } else {
                crec.refs -= 1;
                txn.put(ckey, &crec)?;
            }
        }
    }
    Ok(())
}

/// Whether `ancestor` is `inode` or one of its ancestors.
fn is_ancestor(txn: &Txn<'_>, ancestor: InodeId, inode: InodeId) -> Result<bool, ExecError> {
    let mut cur = inode;
    for _ in 0..100_000 {
        if cur == ancestor {
            return Ok(true);
        }
        if cur == InodeId::ROOT {
            return Ok(false);
        }
        cur = inode_of(txn, cur)?.parent;
    }
    Ok(false)
}

fn rename(
    txn: &mut Txn<'_>,
    parent: InodeId,
    name: &[u8],
    new_parent: InodeId,
    new_name: &[u8],
    flags: u32,
    time: Timestamp,
) -> Result<Outcome, ExecError> {
    if flags & !(RENAME_NOREPLACE | RENAME_EXCHANGE) != 0
        || flags == RENAME_NOREPLACE | RENAME_EXCHANGE
    {
        return Err(Status::Invalid.into());
    }
    if name == b"." || name == b".." {
        return Err(Status::Invalid.into());
    }
    check_name(new_name)?;
    dir_of(txn, parent)?;
    dir_of(txn, new_parent)?;
    let src = entry_of(txn, parent, name)?;
    let dst = txn.get::<DirentRecord>(&keys::dirent(new_parent, new_name))?;
    if parent == new_parent && name == new_name {
        return if flags & RENAME_EXCHANGE != 0 || dst.is_some() && flags & RENAME_NOREPLACE == 0 {
            Ok(Outcome::default())
        } else {
            Err(Status::Exists.into())
        };
    }
    if src.kind == FileKind::Dir && is_ancestor(txn, src.inode, new_parent)? {
        return Err(Status::Loop.into());
    }
    if flags & RENAME_EXCHANGE != 0 {
        let dst = dst.ok_or(Status::NotFound)?;
        if dst.kind == FileKind::Dir && is_ancestor(txn, dst.inode, parent)? {
            return Err(Status::Loop.into());
        }
        return exchange(txn, (parent, name, src), (new_parent, new_name, dst), time);
    }
    let mut outcome = Outcome::default();
    if let Some(dst) = dst {
        if flags & RENAME_NOREPLACE != 0 {
            return Err(Status::Exists.into());
        }
        if dst.inode == src.inode {
            return Ok(outcome);
        }
        match (src.kind == FileKind::Dir, dst.kind == FileKind::Dir) {
            (true, false) => return Err(Status::NotDir.into()),
            (false, true) => return Err(Status::IsDir.into()),
            (true, true) if txn.any_with_prefix(&keys::dirent_prefix(dst.inode))? => {
                return Err(Status::NotEmpty.into());
            }
            _ => {}
        }
        drop_entry(txn, new_parent, new_name, &dst);
        if dst.kind == FileKind::Dir {
            let mut np = inode_of(txn, new_parent)?;
            np.nlink = np.nlink.saturating_sub(1);
            txn.put(keys::inode(new_parent), &np)?;
        }
        release_link(txn, dst.inode, (new_parent, new_name), time, &mut outcome)?;
    }
    drop_entry(txn, parent, name, &src);
    let mut old_dir = inode_of(txn, parent)?;
    old_dir.mtime = time;
    old_dir.ctime = time;
    if src.kind == FileKind::Dir && parent != new_parent {
        old_dir.nlink = old_dir.nlink.saturating_sub(1);
    }
    txn.put(keys::inode(parent), &old_dir)?;
    let mut new_dir = inode_of(txn, new_parent)?;
    add_entry(txn, new_parent, &mut new_dir, new_name, src.inode, src.kind)?;
    new_dir.mtime = time;
    new_dir.ctime = time;
    if src.kind == FileKind::Dir && parent != new_parent {
        new_dir.nlink += 1;
    }
    txn.put(keys::inode(new_parent), &new_dir)?;
    let mut moved = inode_of(txn, src.inode)?;
    moved.ctime = time;
    moved.parent = new_parent;
    moved.name = new_name.to_vec();
    txn.put(keys::inode(src.inode), &moved)?;
    outcome.attr = Some(moved.attr(src.inode));
    Ok(outcome)
}

fn exchange(
    txn: &mut Txn<'_>,
    a: (InodeId, &[u8], DirentRecord),
    b: (InodeId, &[u8], DirentRecord),
    time: Timestamp,
) -> Result<Outcome, ExecError> {
    let (a_parent, a_name, a_entry) = a;
    let (b_parent, b_name, b_entry) = b;
    // Each name keeps its position in its directory and now names the other inode.
    let put_entry = |txn: &mut Txn<'_>,
                     parent: InodeId,
                     name: &[u8],
                     cookie: u64,
                     other: &DirentRecord|
     -> Result<(), ExecError> {
        txn.put(
            keys::dirent(parent, name),
            &DirentRecord {
                inode: other.inode,
                kind: other.kind,
                cookie,
            },
        )?;
        txn.put(
            keys::order(parent, cookie),
            &OrderRecord {
                name: name.to_vec(),
                inode: other.inode,
                kind: other.kind,
            },
        )?;
        Ok(())
    };
    put_entry(txn, a_parent, a_name, a_entry.cookie, &b_entry)?;
    put_entry(txn, b_parent, b_name, b_entry.cookie, &a_entry)?;
    if a_parent != b_parent {
        let a_dir = a_entry.kind == FileKind::Dir;
        let b_dir = b_entry.kind == FileKind::Dir;
        for (dir, gains, loses) in [(a_parent, b_dir, a_dir), (b_parent, a_dir, b_dir)] {
            let mut rec = inode_of(txn, dir)?;
            rec.nlink = (rec.nlink + gains as u32).saturating_sub(loses as u32);
            txn.put(keys::inode(dir), &rec)?;
        }
    }
    for dir in [a_parent, b_parent] {
        let mut rec = inode_of(txn, dir)?;
        rec.mtime = time;
        rec.ctime = time;
        txn.put(keys::inode(dir), &rec)?;
    }
    for (inode, new_parent, new_name) in [
        (a_entry.inode, b_parent, b_name),
        (b_entry.inode, a_parent, a_name),
    ] {
        let mut rec = inode_of(txn, inode)?;
        rec.ctime = time;
        rec.parent = new_parent;
        rec.name = new_name.to_vec();
        txn.put(keys::inode(inode), &rec)?;
    }
    Ok(Outcome::default())
}

fn set_attr(
    txn: &mut Txn<'_>,
    inode: InodeId,
    changes: &SetAttr,
    time: Timestamp,
) -> Result<Outcome, ExecError> {
    let mut rec = inode_of(txn, inode)?;
    let mut outcome = Outcome::default();
    if let Some(mode) = changes.mode {
        rec.mode = mode & 0o7777;
        // The filesystem keeps an access ACL in step with the mode bits (the kernel does not).
        let key = keys::xattr(inode, acl::ACCESS);
        if let Some(access) = txn.get::<Vec<u8>>(&key)?
            && let Some(updated) = acl::chmod(&access, rec.mode)
        {
            txn.put(key, &updated)?;
        }
    }
    if let Some(uid) = changes.uid {
        rec.uid = uid;
    }
    if let Some(gid) = changes.gid {
        rec.gid = gid;
    }
    if let Some(size) = changes.size {
        match rec.kind {
            FileKind::File => {}
            FileKind::Dir => return Err(Status::IsDir.into()),
            _ => return Err(Status::Invalid.into()),
        }
        if size > MAX_FILE_SIZE {
            return Err(Status::TooBig.into());
        }
        // Nothing may lie past the new end, whichever way the length moved.
        let keep = u32::try_from(size.div_ceil(CHUNK_SIZE)).map_err(|_| Status::TooBig)?;
        drop_chunks_from(txn, inode, keep, &mut outcome)?;
        rec.size = size;
        rec.mtime = time;
    }
    let resolve = |t: TimeSet| match t {
        TimeSet::Now => time,
        TimeSet::At(t) => t,
    };
    if let Some(t) = changes.atime {
        rec.atime = resolve(t);
    }
    if let Some(t) = changes.mtime {
        rec.mtime = resolve(t);
    }
    rec.ctime = time;
    txn.put(keys::inode(inode), &rec)?;
    outcome.attr = Some(rec.attr(inode));
    Ok(outcome)
}

/// Puts a trashed file back at its old path, creating missing directories on the way.
fn restore(txn: &mut Txn<'_>, inode: InodeId, time: Timestamp) -> Result<Outcome, ExecError> {
    let trashed: TrashRecord = txn.get(&keys::trash(inode))?.ok_or(Status::NotFound)?;
    let mut rec = inode_of(txn, inode)?;
    let parts: Vec<&[u8]> = trashed
        .path
        .split(|b| *b == b'/')
        .filter(|p| !p.is_empty())
        .collect();
    let Some((name, dirs)) = parts.split_last() else {
        return Err(Status::Invalid.into());
    };
    let mut parent = InodeId::ROOT;
    for dir in dirs {
        parent = match txn.get::<DirentRecord>(&keys::dirent(parent, dir))? {
            Some(e) if e.kind == FileKind::Dir => e.inode,
            Some(_) => return Err(Status::NotDir.into()),
            None => {
                let new = NewInode {
                    kind: FileKind::Dir,
                    mode: 0o755,
                    umask: 0,
                    uid: rec.uid,
                    gid: rec.gid,
                    rdev: 0,
                    time,
                };
                let made = create(txn, parent, dir, new, None)?;
                made.attr.map(|a| a.inode).ok_or(Status::Io)?
            }
        };
    }
    let mut dir = dir_of(txn, parent)?;
    if txn.get_raw(&keys::dirent(parent, name))?.is_some() {
        return Err(Status::Exists.into());
    }
    add_entry(txn, parent, &mut dir, name, inode, rec.kind)?;
    dir.mtime = time;
    dir.ctime = time;
    txn.put(keys::inode(parent), &dir)?;
    rec.nlink = 1;
    rec.parent = parent;
    rec.name = name.to_vec();
    rec.ctime = time;
    txn.put(keys::inode(inode), &rec)?;
    txn.delete(keys::trash(inode));
    Ok(Outcome::attr(inode, &rec))
}

/// Creates `name` in `parent` as a copy of `source` sharing its chunks (a directory is created
/// empty; the master snapshots its entries one by one).
fn snapshot(
    txn: &mut Txn<'_>,
    source: InodeId,
    parent: InodeId,
    name: &[u8],
    owner: Option<(u32, u32)>,
    time: Timestamp,
) -> Result<Outcome, ExecError> {
    check_name(name)?;
    let src = inode_of(txn, source)?;
    let mut dir = dir_of(txn, parent)?;
    if txn.get_raw(&keys::dirent(parent, name))?.is_some() {
        return Err(Status::Exists.into());
    }
    let inode = InodeId(txn.counter(keys::NEXT_INODE)?.max(InodeId::ROOT.0 + 1));
    let is_dir = src.kind == FileKind::Dir;
    let (uid, gid) = owner.unwrap_or((src.uid, src.gid));
    let rec = InodeRecord {
        nlink: if is_dir { 2 } else { 1 },
        ctime: time,
        parent,
        next_cookie: FIRST_COOKIE,
        name: name.to_vec(),
        uid,
        gid,
        ..src.clone()
    };
    txn.put(keys::inode(inode), &rec)?;
    if src.kind == FileKind::Symlink
        && let Some(target) = txn.get::<Vec<u8>>(&keys::link_target(source))?
    {
        txn.put(keys::link_target(inode), &target)?;
    }
    let xattr_prefix = keys::xattr_prefix(source);
    for (key, value) in txn.scan_all(&xattr_prefix)? {
        let xname = key[xattr_prefix.len()..].to_vec();
        txn.put(
            keys::xattr(inode, &xname),
            &crate::txn::decode_value::<Vec<u8>>(&key, &value)?,
        )?;
    }
    if src.kind == FileKind::File {
        for (key, value) in txn.scan_all(&keys::file_chunk_prefix(source))? {
            let Some(index) = keys::file_chunk_index(&key) else {
                continue;
            };
            let chunk: ChunkId = crate::txn::decode_value(&key, &value)?;
            let ckey = keys::chunk(chunk);
            if let Some(mut crec) = txn.get::<ChunkRecord>(&ckey)? {
                crec.refs += 1;
                txn.put(ckey, &crec)?;
                txn.put(keys::file_chunk(inode, index), &chunk)?;
            }
        }
    }
    add_entry(txn, parent, &mut dir, name, inode, rec.kind)?;
    if is_dir {
        dir.nlink += 1;
    }
    dir.mtime = time;
    dir.ctime = time;
    txn.put(keys::inode(parent), &dir)?;
    txn.set_counter(keys::NEXT_INODE, inode.0 + 1)?;
    let count = txn.counter(keys::INODE_COUNT)?;
    txn.set_counter(keys::INODE_COUNT, count + 1)?;
    Ok(Outcome::attr(inode, &rec))
}
