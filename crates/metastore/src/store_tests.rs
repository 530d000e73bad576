//! Namespace operations through the whole store: semantics, errors, and replay after reopen.

use elkfs_proto::types::{DirEntryPlus, FileKind, SetAttr, Timestamp};
use elkfs_proto::{ChunkId, ChunkVersion, InodeId, Status};

use crate::namespace::{RENAME_EXCHANGE, RENAME_NOREPLACE};
use crate::{ExecError, MetaOp, MetaStore, StoreConfig};

const ROOT: InodeId = InodeId::ROOT;

fn t(secs: i64) -> Timestamp {
    Timestamp { secs, nanos: 0 }
}

fn open(dir: &std::path::Path) -> MetaStore {
    let (store, _) = MetaStore::open(
        dir,
        &StoreConfig {
            cache_bytes: 8 << 20,
            ..Default::default()
        },
    )
    .unwrap();
    if !store.is_formatted().unwrap() {
        store
            .commit(&MetaOp::Format {
                time: t(1),
                goal: 2,
                trash_time: 0,
            })
            .unwrap();
    }
    store
}

fn mknod_op(parent: InodeId, name: &str) -> MetaOp {
    MetaOp::Mknod {
        parent,
        name: name.as_bytes().to_vec(),
        kind: FileKind::File,
        mode: 0o644,
        umask: 0,
        uid: 1,
        gid: 1,
        rdev: 0,
        time: t(2),
    }
}

fn mknod(store: &MetaStore, parent: InodeId, name: &str) -> Result<InodeId, Status> {
    refused(store.commit(&mknod_op(parent, name))).map(|(_, o)| o.attr.unwrap().inode)
}

fn mkdir(store: &MetaStore, parent: InodeId, name: &str) -> Result<InodeId, Status> {
    refused(store.commit(&MetaOp::Mkdir {
        parent,
        name: name.as_bytes().to_vec(),
        mode: 0o755,
        umask: 0,
        uid: 1,
        gid: 1,
        time: t(2),
    }))
    .map(|(_, o)| o.attr.unwrap().inode)
}

fn rename(
    store: &MetaStore,
    p: InodeId,
    n: &str,
    np: InodeId,
    nn: &str,
    flags: u32,
) -> Result<(), Status> {
    refused(store.commit(&MetaOp::Rename {
        parent: p,
        name: n.as_bytes().to_vec(),
        new_parent: np,
        new_name: nn.as_bytes().to_vec(),
        flags,
        time: t(3),
    }))
    .map(|_| ())
}

fn refused<T>(r: Result<T, ExecError>) -> Result<T, Status> {
    r.map_err(|e| match e {
        ExecError::Refused(s) => s,
        ExecError::Store(e) => panic!("store error: {e}"),
    })
}

fn names(store: &MetaStore, dir: InodeId) -> Vec<String> {
    store
        .read_dir(dir, 0, 1000)
        .unwrap()
        .into_iter()
        .map(|e| String::from_utf8(e.name).unwrap())
        .collect()
}

#[test]
fn created_entries_are_found_listed_and_inherit_goal() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    let d = mkdir(&store, ROOT, "d").unwrap();
    let f = mknod(&store, d, "f").unwrap();
    assert_eq!(store.lookup(d, b"f").unwrap().inode, f);
    assert_eq!(store.attr(f).unwrap().goal, 2);
    assert_eq!(store.attr(ROOT).unwrap().nlink, 3);
    assert_eq!(mknod(&store, d, "f"), Err(Status::Exists));
    assert_eq!(mknod(&store, f, "x"), Err(Status::NotDir));
    assert_eq!(mknod(&store, InodeId(999), "x"), Err(Status::NotFound));
    assert_eq!(mknod(&store, d, "a/b"), Err(Status::Invalid));
    assert_eq!(mknod(&store, d, &"x".repeat(256)), Err(Status::NameTooLong));
    assert_eq!(names(&store, d), vec!["f"]);
    assert_eq!(store.inode_count().unwrap(), 3);
}

#[test]
fn unlink_and_rmdir_give_posix_errors() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    let d = mkdir(&store, ROOT, "d").unwrap();
    mknod(&store, d, "f").unwrap();
    let rmdir = |p, n: &str| {
        refused(store.commit(&MetaOp::Rmdir {
            parent: p,
            name: n.as_bytes().to_vec(),
            time: t(4),
        }))
        .map(|_| ())
    };
    let unlink = |p, n: &str| {
        refused(store.commit(&MetaOp::Unlink {
            parent: p,
            name: n.as_bytes().to_vec(),
            time: t(4),
        }))
        .map(|_| ())
    };
    assert_eq!(rmdir(ROOT, "d"), Err(Status::NotEmpty));
    assert_eq!(unlink(ROOT, "d"), Err(Status::IsDir));
    assert_eq!(rmdir(d, "f"), Err(Status::NotDir));
    assert_eq!(unlink(d, "nope"), Err(Status::NotFound));
    let f = store.lookup(d, b"f").unwrap().inode;
    unlink(d, "f").unwrap();
    rmdir(ROOT, "d").unwrap();
    assert!(names(&store, ROOT).is_empty());
    assert_eq!(store.attr(ROOT).unwrap().nlink, 2);
    assert_eq!(
        store.attr(d).unwrap().nlink,
        0,
        "a removed directory stays until purged"
    );
    assert_eq!(mknod(&store, d, "late"), Err(Status::NotFound));
    assert_eq!(
        store.inode_count().unwrap(),
        3,
        "unlinked inodes wait for their purge"
    );
    store.commit(&MetaOp::Purge { inode: f }).unwrap();
    store.commit(&MetaOp::Purge { inode: d }).unwrap();
    assert_eq!(store.inode_count().unwrap(), 1);
    assert!(
        store.commit(&MetaOp::Purge { inode: f }).is_err(),
        "purged twice"
    );
}

#[test]
fn rename_replaces_refuses_and_exchanges_like_linux() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    let a = mkdir(&store, ROOT, "a").unwrap();
    let b = mkdir(&store, ROOT, "b").unwrap();
    let f = mknod(&store, a, "f").unwrap();
    let g = mknod(&store, b, "g").unwrap();
    assert_eq!(rename(&store, ROOT, "a", a, "x", 0), Err(Status::Loop));
    assert_eq!(rename(&store, a, "f", ROOT, "b", 0), Err(Status::IsDir));
    assert_eq!(rename(&store, ROOT, "a", b, "g", 0), Err(Status::NotDir));
    assert_eq!(
        rename(&store, a, "f", b, "g", RENAME_NOREPLACE),
        Err(Status::Exists)
    );
    rename(&store, a, "f", b, "g", 0).unwrap();
    assert_eq!(store.lookup(b, b"g").unwrap().inode, f);
    assert_eq!(
        store.attr(g).unwrap().nlink,
        0,
        "replaced file awaits its purge"
    );
    assert_eq!(store.unlinked_inodes().unwrap(), vec![g]);
    store.commit(&MetaOp::Purge { inode: g }).unwrap();
    assert!(matches!(
        store.attr(g),
        Err(ExecError::Refused(Status::NotFound))
    ));
    mknod(&store, a, "h").unwrap();
    rename(&store, a, "h", b, "g", RENAME_EXCHANGE).unwrap();
    assert_eq!(store.lookup(a, b"h").unwrap().inode, f);
    rename(&store, ROOT, "a", b, "a2", 0).unwrap();
    assert_eq!(store.attr(ROOT).unwrap().nlink, 3);
    assert_eq!(store.attr(b).unwrap().nlink, 3);
    assert_eq!(names(&store, ROOT), vec!["b"]);
    assert_eq!(rename(&store, ROOT, "b", ROOT, "b", 0), Ok(()));
}

#[test]
fn hard_links_keep_the_inode_until_the_last_name_goes() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    let f = mknod(&store, ROOT, "f").unwrap();
    store
        .commit(&MetaOp::Link {
            inode: f,
            parent: ROOT,
            name: b"g".to_vec(),
            time: t(5),
        })
        .unwrap();
    assert_eq!(store.attr(f).unwrap().nlink, 2);
    store
        .commit(&MetaOp::Unlink {
            parent: ROOT,
            name: b"f".to_vec(),
            time: t(6),
        })
        .unwrap();
    assert_eq!(store.attr(f).unwrap().nlink, 1);
    assert_eq!(store.lookup(ROOT, b"g").unwrap().inode, f);
}

#[test]
fn truncate_and_unlink_free_the_chunks_past_the_end() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    let f = mknod(&store, ROOT, "f").unwrap();
    for i in 0..3u32 {
        store
            .commit(&MetaOp::CreateChunk {
                inode: f,
                index: i,
                chunk: ChunkId(100 + i as u64),
                version: ChunkVersion(1),
            })
            .unwrap();
    }
    let (_, outcome) = store
        .commit(&MetaOp::SetAttr {
            inode: f,
            changes: SetAttr {
                size: Some(1),
                ..Default::default()
            },
            time: t(7),
        })
        .unwrap();
    let mut freed: Vec<u64> = outcome.freed_chunks.iter().map(|c| c.0.0).collect();
    freed.sort();
    assert_eq!(freed, vec![101, 102]);
    assert_eq!(store.file_chunks(f).unwrap().len(), 1);
    let (_, outcome) = store
        .commit(&MetaOp::Unlink {
            parent: ROOT,
            name: b"f".to_vec(),
            time: t(8),
        })
        .unwrap();
    assert!(
        outcome.freed_chunks.is_empty(),
        "an unlinked file keeps its data until purged"
    );
    assert_eq!(outcome.unlinked, vec![f]);
    let (_, outcome) = store.commit(&MetaOp::Purge { inode: f }).unwrap();
    assert_eq!(outcome.freed_chunks, vec![(ChunkId(100), ChunkVersion(1))]);
    assert!(store.chunk(ChunkId(100)).unwrap().is_none());
    assert!(store.chunk_ids_reserved().unwrap() >= 103);
}

#[test]
fn a_write_end_extends_the_file_only_while_its_slot_holds_the_chunk_written() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    let f = mknod(&store, ROOT, "f").unwrap();
    let create = |chunk: u64| MetaOp::CreateChunk {
        inode: f,
        index: 0,
        chunk: ChunkId(chunk),
        version: ChunkVersion(1),
    };
    let end = |chunk: u64, length: u64, at: i64| MetaOp::ExtendLengthIn {
        inode: f,
        index: 0,
        chunk: ChunkId(chunk),
        length,
        time: t(at),
    };
    store.commit(&create(100)).unwrap();
    store.commit(&end(100, 5000, 2)).unwrap();
    assert_eq!(store.attr(f).unwrap().size, 5000);
    // Another client cuts the file to nothing, which drops the slot and its chunk.
    let cut = MetaOp::SetAttr {
        inode: f,
        changes: SetAttr {
            size: Some(0),
            ..Default::default()
        },
        time: t(3),
    };
    store.commit(&cut).unwrap();
    let (_, outcome) = store.commit(&end(100, 9000, 4)).unwrap();
    assert_eq!(outcome.attr.map(|a| a.size), Some(0));
    let attr = store.attr(f).unwrap();
    assert_eq!((attr.size, attr.mtime), (0, t(3)));
    // A new chunk in the slot: only its own writer's end counts.
    store.commit(&create(101)).unwrap();
    store.commit(&end(100, 9000, 5)).unwrap();
    assert_eq!(store.attr(f).unwrap().size, 0);
    store.commit(&end(101, 700, 6)).unwrap();
    assert_eq!(store.attr(f).unwrap().size, 700);
}

#[test]
fn everything_committed_is_back_after_reopen_even_if_sled_lost_it() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    for i in 0..50 {
        mknod(&store, ROOT, &format!("f{i}")).unwrap();
    }
    let version = store.version();
    drop(store);
    // Simulate sled having lost everything after the format by replaying into a fresh database.
    std::fs::remove_dir_all(dir.path().join("metadata.sled")).unwrap();
    let store = open(dir.path());
    assert_eq!(store.version(), version);
    assert_eq!(names(&store, ROOT).len(), 50);
    assert_eq!(store.inode_count().unwrap(), 51);
    let next = mknod(&store, ROOT, "after").unwrap();
    assert_eq!(next, InodeId(52));
}

#[test]
fn listings_resume_after_a_cookie_while_entries_come_and_go() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    for i in 0..10 {
        mknod(&store, ROOT, &format!("f{i}")).unwrap();
    }
    let first = store.read_dir(ROOT, 0, 4).unwrap();
    assert_eq!(first.len(), 4);
    store
        .commit(&MetaOp::Unlink {
            parent: ROOT,
            name: b"f1".to_vec(),
            time: t(9),
        })
        .unwrap();
    mknod(&store, ROOT, "late").unwrap();
    let rest = store.read_dir(ROOT, first[3].cookie, 100).unwrap();
    let rest: Vec<_> = rest
        .into_iter()
        .map(|e| String::from_utf8(e.name).unwrap())
        .collect();
    assert_eq!(rest, vec!["f4", "f5", "f6", "f7", "f8", "f9", "late"]);
}

#[test]
fn a_listing_plus_carries_attributes_and_whether_there_are_extended_attributes() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    let plain = mknod(&store, ROOT, "plain").unwrap();
    let labelled = mknod(&store, ROOT, "labelled").unwrap();
    // The neighbour's attribute must not count for `plain` (keys share a prefix scheme).
    store
        .commit(&MetaOp::SetXattr {
            inode: labelled,
            name: b"security.selinux".to_vec(),
            value: b"x".to_vec(),
            flags: 0,
            time: t(3),
        })
        .unwrap();
    let listed = store.read_dir_plus(ROOT, 0, 10).unwrap();
    let shown: Vec<_> = listed
        .iter()
        .map(|e| (e.entry.inode, e.attr.inode, e.has_xattrs))
        .collect();
    assert_eq!(
        shown,
        vec![(plain, plain, false), (labelled, labelled, true)]
    );
    assert_eq!(listed[1].attr, store.attr(labelled).unwrap());
    let rest = store
        .read_dir_plus(ROOT, listed[0].entry.cookie, 10)
        .unwrap();
    assert_eq!(rest.len(), 1);
    assert_eq!(rest[0].entry.name, b"labelled");
    assert_eq!(
        refused(store.read_dir_plus(plain, 0, 10)).map(|_| ()),
        Err(Status::NotDir)
    );
}

#[test]
fn a_lookup_ahead_finds_the_name_then_the_ones_after_it_in_byte_order() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    for name in ["b", "a", "c", "ab"] {
        mknod(&store, ROOT, name).unwrap();
    }
    let sub = mkdir(&store, ROOT, "d").unwrap();
    // Entries of another directory share the key scheme and must not show.
    mknod(&store, sub, "aa").unwrap();
    let named = |entries: Vec<DirEntryPlus>| -> Vec<String> {
        entries
            .into_iter()
            .map(|e| String::from_utf8(e.entry.name).unwrap())
            .collect()
    };
    let found = store.lookup_ahead(ROOT, b"a", 10).unwrap();
    assert_eq!(named(found.clone()), vec!["a", "ab", "b", "c", "d"]);
    let a = store.lookup(ROOT, b"a").unwrap();
    assert_eq!(found[0].attr, a);
    assert_eq!(found[0].entry.inode, a.inode);
    let listed = store.read_dir(ROOT, 0, 10).unwrap();
    let cookie_of_a = listed.iter().find(|e| e.name == b"a").unwrap().cookie;
    assert_eq!(found[0].entry.cookie, cookie_of_a);
    assert_eq!(
        named(store.lookup_ahead(ROOT, b"aa", 2).unwrap()),
        vec!["ab", "b"]
    );
    assert_eq!(named(store.lookup_ahead(ROOT, b"a", 1).unwrap()), vec!["a"]);
    assert!(store.lookup_ahead(ROOT, b"e", 10).unwrap().is_empty());
    assert_eq!(named(store.lookup_ahead(sub, b"", 10).unwrap()), vec!["aa"]);
    // A name after the one looked up whose inode went meanwhile (removed and purged between
    // the scan and the inode reads) is left out; the name looked up still answers.
    let b = store.lookup(ROOT, b"b").unwrap().inode;
    store.kv.apply(vec![(crate::keys::inode(b), None)]).unwrap();
    assert_eq!(
        named(store.lookup_ahead(ROOT, b"a", 10).unwrap()),
        vec!["a", "ab", "c", "d"]
    );
    let file = a.inode;
    assert_eq!(
        refused(store.lookup_ahead(file, b"a", 10)).map(|_| ()),
        Err(Status::NotDir)
    );
    assert_eq!(
        refused(store.lookup_ahead(ROOT, &[b'x'; 256], 10)).map(|_| ()),
        Err(Status::NameTooLong)
    );
}

#[test]
fn extended_attributes_are_set_listed_replaced_and_removed() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    let f = mknod(&store, ROOT, "f").unwrap();
    let set = |name: &str, value: &[u8], flags: u32| {
        refused(store.commit(&MetaOp::SetXattr {
            inode: f,
            name: name.as_bytes().to_vec(),
            value: value.to_vec(),
            flags,
            time: t(3),
        }))
        .map(|_| ())
    };
    set("user.a", b"1", 0).unwrap();
    assert_eq!(
        set("user.a", b"2", crate::namespace::XATTR_CREATE),
        Err(Status::Exists)
    );
    assert_eq!(
        set("user.b", b"2", crate::namespace::XATTR_REPLACE),
        Err(Status::NoAttribute)
    );
    set("user.a", b"3", crate::namespace::XATTR_REPLACE).unwrap();
    set("security.x", b"", 0).unwrap();
    assert_eq!(store.xattr(f, b"user.a").unwrap(), b"3");
    assert_eq!(
        store.xattr_names(f).unwrap(),
        vec![b"security.x".to_vec(), b"user.a".to_vec()]
    );
    assert_eq!(set("user.big", &vec![0; 65537], 0), Err(Status::TooLarge));
    store
        .commit(&MetaOp::RemoveXattr {
            inode: f,
            name: b"user.a".to_vec(),
            time: t(4),
        })
        .unwrap();
    assert!(matches!(
        store.xattr(f, b"user.a"),
        Err(ExecError::Refused(Status::NoAttribute))
    ));
}

#[test]
fn deleted_files_wait_in_the_trash_and_come_back_to_their_path() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    let d = mkdir(&store, ROOT, "d").unwrap();
    let e = mkdir(&store, d, "e").unwrap();
    let f = mknod(&store, e, "f").unwrap();
    store
        .commit(&MetaOp::SetTrashTime {
            inode: f,
            seconds: 60,
            time: t(2),
        })
        .unwrap();
    let (_, outcome) = store
        .commit(&MetaOp::Unlink {
            parent: e,
            name: b"f".to_vec(),
            time: t(3),
        })
        .unwrap();
    assert!(
        outcome.unlinked.is_empty(),
        "a trashed file is not waiting for a purge"
    );
    let due = Timestamp {
        secs: t(3).secs + 60,
        nanos: t(3).nanos,
    };
    assert_eq!(
        outcome.trashed,
        vec![(f, due)],
        "the change says when it is due"
    );
    assert_eq!(store.trash_expiry(f).unwrap(), Some(due));
    for (parent, name) in [(d, "e"), (ROOT, "d")] {
        store
            .commit(&MetaOp::Rmdir {
                parent,
                name: name.as_bytes().to_vec(),
                time: t(4),
            })
            .unwrap();
    }
    let trash = store.trash().unwrap();
    assert_eq!(trash.len(), 1);
    assert_eq!(trash[0].0.path, b"/d/e/f");
    store
        .commit(&MetaOp::TrashRestore {
            inode: f,
            time: t(5),
        })
        .unwrap();
    let d2 = store.lookup(ROOT, b"d").unwrap().inode;
    let e2 = store.lookup(d2, b"e").unwrap().inode;
    assert_eq!(store.lookup(e2, b"f").unwrap().inode, f);
    assert_eq!(store.attr(f).unwrap().nlink, 1);
    assert!(store.trash().unwrap().is_empty());
    assert_eq!(store.trash_expiry(f).unwrap(), None);
}

/// A store in `dir` with `/f` holding chunk 500 at index 0 and `/copy`, its snapshot, sharing it.
fn file_and_snapshot(dir: &std::path::Path) -> (MetaStore, InodeId, InodeId) {
    let store = open(dir);
    let f = mknod(&store, ROOT, "f").unwrap();
    store
        .commit(&MetaOp::CreateChunk {
            inode: f,
            index: 0,
            chunk: ChunkId(500),
            version: ChunkVersion(1),
        })
        .unwrap();
    let (_, outcome) = store
        .commit(&MetaOp::Snapshot {
            source: f,
            parent: ROOT,
            name: b"copy".to_vec(),
            owner: None,
            time: t(2),
        })
        .unwrap();
    let copy = outcome.attr.unwrap().inode;
    (store, f, copy)
}

#[test]
fn a_shared_chunk_keeps_the_larger_goal_of_its_files_until_it_is_shared_no_more() {
    let dir = tempfile::tempdir().unwrap();
    let (store, f, copy) = file_and_snapshot(dir.path());
    let set_goal = |inode, goal| {
        store
            .commit(&MetaOp::SetGoal {
                inode,
                goal,
                time: t(3),
            })
            .unwrap();
        store.chunk(ChunkId(500)).unwrap().unwrap().goal
    };
    assert_eq!(set_goal(copy, 4), 4, "raised for the copy");
    assert_eq!(set_goal(f, 1), 4, "not lowered while the copy shares it");
    assert_eq!(set_goal(f, 5), 5, "raised for the original");
    store
        .commit(&MetaOp::ReplaceChunk {
            inode: copy,
            index: 0,
            chunk: ChunkId(501),
            version: ChunkVersion(1),
        })
        .unwrap();
    assert_eq!(set_goal(f, 1), 1, "its own again");
}

#[test]
fn a_snapshot_shares_chunks_until_one_side_replaces_its_own() {
    let dir = tempfile::tempdir().unwrap();
    let (store, _, copy) = file_and_snapshot(dir.path());
    assert_eq!(
        store.file_chunk(copy, 0).unwrap().unwrap().chunk,
        ChunkId(500)
    );
    assert_eq!(store.chunk(ChunkId(500)).unwrap().unwrap().refs, 2);
    store
        .commit(&MetaOp::ReplaceChunk {
            inode: copy,
            index: 0,
            chunk: ChunkId(501),
            version: ChunkVersion(1),
        })
        .unwrap();
    assert_eq!(store.chunk(ChunkId(500)).unwrap().unwrap().refs, 1);
    let (_, outcome) = store
        .commit(&MetaOp::Unlink {
            parent: ROOT,
            name: b"f".to_vec(),
            time: t(3),
        })
        .unwrap();
    let (_, purged) = store
        .commit(&MetaOp::Purge {
            inode: outcome.unlinked[0],
        })
        .unwrap();
    assert_eq!(purged.freed_chunks, vec![(ChunkId(500), ChunkVersion(1))]);
    assert!(
        store.chunk(ChunkId(501)).unwrap().is_some(),
        "the copy's own chunk stays"
    );
}

/// A newer copy adopted late (its registration read the record before a bump) must not take
/// the chunk's version back down.
#[test]
fn chunk_versions_only_grow() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    let f = mknod(&store, ROOT, "f").unwrap();
    let chunk = ChunkId(700);
    store
        .commit(&MetaOp::CreateChunk {
            inode: f,
            index: 0,
            chunk,
            version: ChunkVersion(1),
        })
        .unwrap();
    for (set, expected) in [(4, 4), (3, 4), (4, 4), (5, 5)] {
        store
            .commit(&MetaOp::SetChunkVersion {
                chunk,
                version: ChunkVersion(set),
            })
            .unwrap();
        let rec = store.chunk(chunk).unwrap().expect("chunk record");
        assert_eq!(rec.version, ChunkVersion(expected), "after setting {set}");
    }
}

fn tagged_mknod(store: &MetaStore, client: u64, seq: u64, time: Timestamp) {
    store
        .commit(&MetaOp::Tagged {
            client,
            seq,
            time,
            op: Box::new(mknod_op(ROOT, &format!("c{client}-{seq}"))),
        })
        .unwrap();
}

fn mknod_in_slot(store: &MetaStore, client: u64, slot: u16, seq: u64, time: Timestamp) -> InodeId {
    let (_, outcome) = store
        .commit(&MetaOp::TaggedInSlot {
            client,
            slot,
            seq,
            time,
            op: Box::new(mknod_op(ROOT, &format!("s{client}-{seq}"))),
        })
        .unwrap();
    outcome.attr.expect("a new file").inode
}

/// A slot keeps the record of the last request made in it: a retry of that one is answered
/// from it, an earlier one is not, and one the client gave up on, carried out late, does not
/// replace it.
#[test]
fn a_request_slot_remembers_its_latest_request() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    let first = mknod_in_slot(&store, 5, 3, 10, t(1));
    assert_eq!(store.request(5, 3, 10).unwrap().unwrap().inode, Some(first));
    assert_eq!(store.request(5, 4, 10).unwrap(), None, "another slot");
    assert_eq!(store.request(6, 3, 10).unwrap(), None, "another client");
    let second = mknod_in_slot(&store, 5, 3, 12, t(2));
    assert_eq!(store.request(5, 3, 10).unwrap(), None, "replaced");
    assert_eq!(
        store.request(5, 3, 12).unwrap().unwrap().inode,
        Some(second)
    );
    mknod_in_slot(&store, 5, 3, 11, t(3));
    assert_eq!(store.request(5, 3, 11).unwrap(), None, "a late request");
    assert_eq!(
        store.request(5, 3, 12).unwrap().unwrap().inode,
        Some(second)
    );
    let nested = MetaOp::TaggedInSlot {
        client: 5,
        slot: 0,
        seq: 20,
        time: t(4),
        op: Box::new(MetaOp::TaggedInSlot {
            client: 5,
            slot: 1,
            seq: 21,
            time: t(4),
            op: Box::new(mknod_op(ROOT, "nested")),
        }),
    };
    assert!(
        store.commit(&nested).is_err(),
        "a numbered change inside another"
    );
}

#[test]
fn old_request_records_are_forgotten_in_steps_and_replay_ends_the_same() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    let old = crate::requests::FORGET_STEP as u64 + 100;
    for seq in 0..old {
        tagged_mknod(&store, 7, seq, t(10));
    }
    for seq in old..old + 3 {
        tagged_mknod(&store, 7, seq, t(100));
    }
    tagged_mknod(&store, 9, 0, t(20));
    for slot in 0..10 {
        let time = if slot % 3 == 0 { t(100) } else { t(30) };
        mknod_in_slot(&store, 7, slot, 1_000 + u64::from(slot), time);
    }
    store
        .commit(&MetaOp::ForgetRequests { before: t(50) })
        .unwrap();
    for slot in 0..10 {
        let kept = store.request(7, slot, 1_000 + u64::from(slot)).unwrap();
        assert_eq!(kept.is_some(), slot % 3 == 0, "slot {slot}");
    }
    assert!(store.numbered_request(7, 0).unwrap().is_none());
    assert!(store.numbered_request(7, old - 1).unwrap().is_none());
    assert!(store.numbered_request(9, 0).unwrap().is_none());
    assert!(store.numbered_request(7, old).unwrap().is_some());
    assert_eq!(store.inode_count().unwrap(), old + 15, "the files stay");
    let version = store.version();
    let state = store.all_pairs();
    drop(store);
    // Replayed into a fresh database, the forgetting removes the same records.
    std::fs::remove_dir_all(dir.path().join("metadata.sled")).unwrap();
    let store = open(dir.path());
    assert_eq!(store.version(), version);
    assert!(store.all_pairs() == state, "the replayed state differs");
}

/// The highest version issued for a chunk only grows, survives a replay of the changelog, and
/// goes with the chunk when no file refers to it any more.
#[test]
fn issued_chunk_versions_only_grow_and_go_with_the_chunk() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    let f = mknod(&store, ROOT, "f").unwrap();
    let chunk = ChunkId(710);
    let issue = |store: &MetaStore, v| {
        store.commit(&MetaOp::IssueChunkVersion {
            chunk,
            version: ChunkVersion(v),
        })
    };
    assert!(issue(&store, 2).is_err(), "no such chunk yet");
    store
        .commit(&MetaOp::CreateChunk {
            inode: f,
            index: 0,
            chunk,
            version: ChunkVersion(1),
        })
        .unwrap();
    assert_eq!(store.chunk_issued(chunk).unwrap(), None);
    for (set, expected) in [(2, 2), (5, 5), (3, 5)] {
        issue(&store, set).unwrap();
        assert_eq!(
            store.chunk_issued(chunk).unwrap(),
            Some(ChunkVersion(expected))
        );
    }
    let rec = store.chunk(chunk).unwrap().expect("chunk record");
    assert_eq!(
        rec.version,
        ChunkVersion(1),
        "issuing does not change the version"
    );
    drop(store);
    std::fs::remove_dir_all(dir.path().join("metadata.sled")).unwrap();
    let store = open(dir.path());
    assert_eq!(
        store.chunk_issued(chunk).unwrap(),
        Some(ChunkVersion(5)),
        "replayed"
    );
    store
        .commit(&MetaOp::ClearChunks {
            inode: f,
            first: 0,
            end: u32::MAX,
            time: t(10),
        })
        .unwrap();
    assert_eq!(
        store.chunk_issued(chunk).unwrap(),
        None,
        "freed with the chunk"
    );
}

#[test]
fn a_commit_in_memory_needs_everything_cached_and_is_logged_like_any_other() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    // Enough entries for several sled leaves, so that a reopen leaves most of them on disk.
    let far = mkdir(&store, ROOT, "far").unwrap();
    for i in 0..400 {
        mknod(&store, far, &format!("f{i:03}")).unwrap();
    }
    mknod(&store, ROOT, "warm").unwrap();
    // As the kernel does before a create: the name's absence is cached from then on.
    assert!(store.lookup(ROOT, b"quick").is_err());
    let (version, outcome) = store
        .try_commit_in_memory(&mknod_op(ROOT, "quick"))
        .expect("everything it reads was just written or looked up, so it is cached")
        .unwrap();
    assert_eq!(version, store.version());
    let quick = outcome.attr.unwrap().inode;
    // Refused like a normal commit, and nothing logged.
    let refused = store
        .try_commit_in_memory(&mknod_op(ROOT, "quick"))
        .unwrap();
    assert!(matches!(refused, Err(ExecError::Refused(Status::Exists))));
    assert_eq!(store.version(), version);
    drop(store);

    // After a reopen nothing is in memory: it does nothing and the blocking commit is needed.
    let store = open(dir.path());
    assert_eq!(store.version(), version);
    let cold = store.try_commit_in_memory(&mknod_op(far, "f200x"));
    assert!(
        cold.is_none(),
        "a commit reading from the disk must not run in place"
    );
    assert_eq!(store.version(), version);
    mknod(&store, far, "f200x").unwrap();
    // What that commit read from the disk is in memory now, in sled if not in the cache.
    let (_, warm) = store
        .try_commit_in_memory(&mknod_op(far, "f200y"))
        .expect("the pages a commit like it needs were just read")
        .unwrap();
    assert!(warm.attr.is_some());
    assert_eq!(store.lookup(ROOT, b"quick").unwrap().inode, quick);
    mknod(&store, ROOT, "cold").unwrap();
    // Not while another commit holds the changelog.
    let _writer = store.writer.lock().unwrap();
    assert!(
        store
            .try_commit_in_memory(&mknod_op(ROOT, "busy"))
            .is_none()
    );
}

#[test]
fn a_chunk_read_beside_a_truncate_that_frees_it_is_found_or_absent_never_damaged() {
    let dir = tempfile::tempdir().unwrap();
    let store = std::sync::Arc::new(open(dir.path()));
    let f = mknod(&store, ROOT, "f").unwrap();
    let done = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let reader = {
        let (store, done) = (store.clone(), done.clone());
        std::thread::spawn(move || {
            let mut reads = 0u64;
            while !done.load(std::sync::atomic::Ordering::Relaxed) {
                match store.file_chunk(f, 1) {
                    Ok(_) => reads += 1,
                    Err(e) => return Err(format!("after {reads} reads: {e}")),
                }
            }
            Ok(reads)
        })
    };
    // A file growing into its second chunk and cut back, over and over (an appender and
    // logrotate's copytruncate).
    for i in 0..3_000u64 {
        store
            .commit(&MetaOp::CreateChunk {
                inode: f,
                index: 1,
                chunk: ChunkId(1_000 + i),
                version: ChunkVersion(1),
            })
            .unwrap();
        store
            .commit(&MetaOp::SetAttr {
                inode: f,
                changes: SetAttr {
                    size: Some(0),
                    ..Default::default()
                },
                time: t(10),
            })
            .unwrap();
    }
    done.store(true, std::sync::atomic::Ordering::Relaxed);
    let reads = reader.join().unwrap().unwrap_or_else(|e| panic!("{e}"));
    assert!(reads > 0);
}

#[test]
fn whether_an_entry_has_extended_attributes_is_right_among_neighbours_that_have_them() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    let a = mkdir(&store, ROOT, "a").unwrap();
    let b = mkdir(&store, ROOT, "b").unwrap();
    let set = |inode: InodeId, name: &str| {
        store
            .commit(&MetaOp::SetXattr {
                inode,
                name: format!("user.{name}").into_bytes(),
                value: b"v".to_vec(),
                flags: 0,
                time: t(3),
            })
            .unwrap();
    };
    // Files of `a` and `b` made in turn, so the inodes of a page of `a` lie between `b`'s, each
    // of which has three attributes: none of those may count for an entry of `a`, in a page
    // of any size or a look-ahead.
    for i in 0..60 {
        let in_a = mknod(&store, a, &format!("f{i:02}")).unwrap();
        if i % 3 == 0 {
            set(in_a, "tag");
        }
        let in_b = mknod(&store, b, &format!("g{i:02}")).unwrap();
        for name in ["x", "y", "z"] {
            set(in_b, name);
        }
    }
    let truth = |inode: InodeId| !store.xattr_names(inode).unwrap().is_empty();
    for page in [1, 3, 5, 17, 100] {
        let mut after = 0;
        let mut seen = 0;
        loop {
            let listed = store.read_dir_plus(a, after, page).unwrap();
            let Some(last) = listed.last() else { break };
            after = last.entry.cookie;
            for e in &listed {
                assert_eq!(
                    e.has_xattrs,
                    truth(e.entry.inode),
                    "page {page}, {:?}",
                    e.entry.name
                );
            }
            seen += listed.len();
        }
        assert_eq!(seen, 60);
        let ahead = store.lookup_ahead(a, b"f10", page).unwrap();
        assert_eq!(ahead.len(), page.min(50));
        for e in &ahead {
            assert_eq!(e.has_xattrs, truth(e.entry.inode), "lookup ahead {page}");
        }
    }
}
