//! Behaviour of the chunk store through its public API: scanning, the file format on disk, data
//! round trips, damage detection, version checks and concurrent use.

use std::fs::{self, OpenOptions};
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use elkfs_chunkstore::{
    ChunkError, ChunkInfo, ChunkStore, DataDirSpec, HEADER_SIZE, StoreError, chunk_path_for,
};
use elkfs_proto::geometry::{BLOCK_SIZE, CHUNK_SIZE};
use elkfs_proto::{ChunkId, ChunkVersion};
use proptest::prelude::*;
use tempfile::TempDir;

const BLOCK: usize = BLOCK_SIZE as usize;
const V1: ChunkVersion = ChunkVersion(1);
const V2: ChunkVersion = ChunkVersion(2);

fn spec(path: &Path) -> DataDirSpec {
    DataDirSpec {
        path: path.to_path_buf(),
        marked_for_removal: false,
    }
}

fn open_one(dir: &Path) -> ChunkStore {
    ChunkStore::open(&[spec(dir)]).unwrap().0
}

/// A store on one fresh directory.
fn fresh() -> (TempDir, ChunkStore) {
    let dir = tempfile::tempdir().unwrap();
    let store = open_one(dir.path());
    (dir, store)
}

/// Deterministic, position-dependent bytes, so misplaced data shows.
fn pattern(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| {
            (i as u32)
                .wrapping_mul(31)
                .wrapping_add(u32::from(seed) * 7 + (i >> 16) as u32) as u8
        })
        .collect()
}

fn flip_byte(path: &Path, offset: u64) {
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .unwrap();
    let mut byte = [0u8];
    file.read_exact_at(&mut byte, offset).unwrap();
    byte[0] ^= 0x5A;
    file.write_all_at(&byte, offset).unwrap();
}

fn read_all(store: &ChunkStore, id: ChunkId, version: ChunkVersion) -> Vec<u8> {
    store
        .read(id, version, 0, CHUNK_SIZE as u32)
        .unwrap()
        .to_vec()
}

// ----- opening and scanning -----

#[test]
fn open_creates_the_dir_and_its_256_subdirs() {
    let root = tempfile::tempdir().unwrap();
    let dir = root.path().join("new/data");
    let (store, report) = ChunkStore::open(&[spec(&dir)]).unwrap();
    assert_eq!(report.chunks, 0);
    // The 256 hashed subdirectories and `spare/`, where deleted chunks' files wait for reuse.
    assert_eq!(fs::read_dir(&dir).unwrap().count(), 257);
    assert!(dir.join("spare").is_dir());
    assert!(store.list().is_empty());
}

#[test]
fn a_deleted_chunks_file_becomes_the_next_new_chunk_holding_nothing_of_the_old_one() {
    use std::os::unix::fs::MetadataExt;
    let (dir, store) = fresh();
    let (a, b, c) = (ChunkId(0x1A), ChunkId(0x2B), ChunkId(0x3C));
    store.create(a, V1).unwrap();
    store.write(a, V1, 0, &vec![7u8; 3 * BLOCK]).unwrap();
    let a_path = chunk_path_for(dir.path(), a, V1);
    let inode = fs::metadata(&a_path).unwrap().ino();
    store.delete(a, V1).unwrap();
    assert!(!a_path.exists());

    store.create(b, V1).unwrap();
    let b_path = chunk_path_for(dir.path(), b, V1);
    assert_eq!(
        fs::metadata(&b_path).unwrap().ino(),
        inode,
        "the file was reused"
    );
    assert_eq!(fs::metadata(&b_path).unwrap().len(), HEADER_SIZE);
    assert!(read_all(&store, b, V1).is_empty());
    store.write(b, V1, 0, b"new chunk").unwrap();
    assert_eq!(read_all(&store, b, V1), b"new chunk");
    assert!(matches!(
        store.create(b, V2),
        Err(ChunkError::AlreadyExists { .. })
    ));

    // After a restart a spare is no chunk, and it is still reused.
    store.delete(b, V1).unwrap();
    drop(store);
    let (store, report) = ChunkStore::open(&[spec(dir.path())]).unwrap();
    assert_eq!(report.chunks, 0);
    assert!(report.ignored.is_empty(), "{:?}", report.ignored);
    store.create(c, V1).unwrap();
    let c_path = chunk_path_for(dir.path(), c, V1);
    assert_eq!(fs::metadata(&c_path).unwrap().ino(), inode);
    assert!(read_all(&store, c, V1).is_empty());
}

#[test]
fn open_fails_naming_a_dir_that_cannot_be_used() {
    let root = tempfile::tempdir().unwrap();
    let file = root.path().join("plainfile");
    fs::write(&file, b"x").unwrap();
    let err = ChunkStore::open(&[spec(&file)]).err().unwrap();
    assert!(matches!(err, StoreError::Dir { .. }));
    assert!(err.to_string().contains("plainfile"), "{err}");
    assert!(matches!(ChunkStore::open(&[]), Err(StoreError::NoDirs)));
}

#[test]
fn open_refuses_the_same_dir_twice() {
    let root = tempfile::tempdir().unwrap();
    let again = root.path().join(".");
    let err = ChunkStore::open(&[spec(root.path()), spec(&again)])
        .err()
        .unwrap();
    assert!(matches!(err, StoreError::DuplicateDir { .. }), "{err}");
}

#[test]
fn reopening_finds_chunks_with_their_versions_and_lengths() {
    let dir = tempfile::tempdir().unwrap();
    {
        let store = open_one(dir.path());
        store.create(ChunkId(1), V1).unwrap();
        store
            .write(ChunkId(1), V1, 0, &pattern(100_000, 1))
            .unwrap();
        store.create(ChunkId(0x2FF), ChunkVersion(9)).unwrap();
    }
    let (store, report) = ChunkStore::open(&[spec(dir.path())]).unwrap();
    assert_eq!(report.chunks, 2);
    assert_eq!(report.bytes, 100_000);
    assert!(report.ignored.is_empty());
    let mut list = store.list();
    list.sort_by_key(|info| info.id);
    assert_eq!(
        list,
        vec![
            ChunkInfo {
                id: ChunkId(1),
                version: V1,
                length: 100_000
            },
            ChunkInfo {
                id: ChunkId(0x2FF),
                version: ChunkVersion(9),
                length: 0
            },
        ]
    );
    assert_eq!(read_all(&store, ChunkId(1), V1), pattern(100_000, 1));
}

#[test]
fn scan_finds_chunks_moved_by_hand_between_dirs() {
    let root = tempfile::tempdir().unwrap();
    let (a, b) = (root.path().join("a"), root.path().join("b"));
    {
        let store = open_one(&a);
        store.create(ChunkId(0x42), V1).unwrap();
        store.write(ChunkId(0x42), V1, 0, b"moved").unwrap();
    }
    open_one(&b);
    fs::rename(
        chunk_path_for(&a, ChunkId(0x42), V1),
        chunk_path_for(&b, ChunkId(0x42), V1),
    )
    .unwrap();

    let (store, report) = ChunkStore::open(&[spec(&a), spec(&b)]).unwrap();
    assert_eq!(report.chunks, 1);
    assert_eq!(
        store.read(ChunkId(0x42), V1, 0, 100).unwrap(),
        &b"moved"[..]
    );
}

#[test]
fn scan_reports_junk_and_duplicates_without_deleting_them() {
    let root = tempfile::tempdir().unwrap();
    let (a, b) = (root.path().join("a"), root.path().join("b"));
    {
        let store = open_one(&a);
        store.create(ChunkId(5), V1).unwrap();
    }
    {
        let store = open_one(&b);
        store.create(ChunkId(5), V2).unwrap();
        store.write(ChunkId(5), V2, 0, b"newer").unwrap();
    }
    let junk = a.join("00").join("chunk_5.elk");
    fs::write(&junk, b"junk").unwrap();

    let (store, report) = ChunkStore::open(&[spec(&a), spec(&b)]).unwrap();
    assert_eq!(store.info(ChunkId(5)).unwrap().version, V2);
    assert_eq!(store.read(ChunkId(5), V2, 0, 10).unwrap(), &b"newer"[..]);
    let mut ignored = report.ignored.clone();
    ignored.sort();
    assert_eq!(ignored.len(), 2, "{ignored:?}");
    assert_eq!(ignored[0].0, chunk_path_for(&a, ChunkId(5), V1));
    assert!(ignored[0].1.contains("duplicate"), "{}", ignored[0].1);
    assert_eq!(ignored[1].0, junk);
    assert!(chunk_path_for(&a, ChunkId(5), V1).exists() && junk.exists());
}

#[test]
fn store_is_send_and_sync() {
    fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<ChunkStore>();
}

// ----- creating, placing, deleting -----

#[test]
fn create_writes_an_empty_chunk_and_refuses_an_existing_id() {
    let (dir, store) = fresh();
    store.create(ChunkId(3), V1).unwrap();
    assert_eq!(
        store.info(ChunkId(3)),
        Some(ChunkInfo {
            id: ChunkId(3),
            version: V1,
            length: 0
        })
    );
    let path = chunk_path_for(dir.path(), ChunkId(3), V1);
    assert_eq!(fs::metadata(&path).unwrap().len(), HEADER_SIZE);
    assert!(matches!(
        store.create(ChunkId(3), V2),
        Err(ChunkError::AlreadyExists { .. })
    ));
    assert!(store.read(ChunkId(3), V1, 0, 10).unwrap().is_empty());
    assert_eq!(store.verify(ChunkId(3)).unwrap(), 0);
}

#[test]
fn writes_allocate_the_disk_blocks_of_their_data_only() {
    let (dir, store) = fresh();
    let id = ChunkId(9);
    store.create(id, V1).unwrap();
    let first = pattern(200_000, 1);
    let after_gap = pattern(100_000, 2);
    let gap_at = 1 << 20;
    store.write(id, V1, 0, &first).unwrap();
    store.write(id, V1, gap_at, &after_gap).unwrap();
    let data = read_all(&store, id, V1);
    assert_eq!(data[..first.len()], first[..]);
    assert!(data[first.len()..gap_at as usize].iter().all(|&b| b == 0));
    assert_eq!(data[gap_at as usize..], after_gap[..]);

    let path = chunk_path_for(dir.path(), id, V1);
    let allocated = fs::metadata(&path).unwrap().blocks() * 512;
    let page = |n: u64| n.div_ceil(4096) * 4096;
    // The header's page, one page of hashes, the data; not the gap.
    let at_most = 2 * 4096 + page(first.len() as u64) + page(after_gap.len() as u64);
    assert!(
        allocated <= at_most,
        "{allocated} bytes allocated for {} bytes of data and a hole",
        first.len() + after_gap.len()
    );
}

#[test]
fn creating_writes_and_ensure_make_a_missing_chunk_but_not_one_deleted_lately() {
    let (_dir, store) = fresh();
    let id = ChunkId(5);
    assert!(store.write_creating(id, V1, 10, b"first").unwrap());
    assert_eq!(
        store.info(id).map(|i| (i.version, i.length)),
        Some((V1, 15))
    );
    assert!(!store.write_creating(id, V1, 0, b"again").unwrap());
    let mut want = vec![0u8; 15];
    want[..5].copy_from_slice(b"again");
    want[10..].copy_from_slice(b"first");
    assert_eq!(read_all(&store, id, V1), want);
    assert_eq!(store.verify(id).unwrap(), 15);

    assert!(!store.ensure(id, V1).unwrap());
    assert_eq!(read_all(&store, id, V1), want, "ensure kept the data");
    assert!(matches!(
        store.ensure(id, V2),
        Err(ChunkError::AlreadyExists { .. })
    ));

    store.delete(id, V1).unwrap();
    assert!(
        matches!(
            store.write_creating(id, V1, 0, b"late"),
            Err(ChunkError::NotFound { .. })
        ),
        "a chunk deleted lately is made again"
    );
    assert!(
        matches!(store.ensure(id, V1), Err(ChunkError::NotFound { .. })),
        "the master's create, overtaken by the chunk's deletion, made it again"
    );
    assert_eq!(store.info(id), None);

    let other = ChunkId(6);
    store.create(other, V2).unwrap();
    assert!(matches!(
        store.write_creating(other, V1, 0, b"x"),
        Err(ChunkError::WrongVersion { .. })
    ));
    assert_eq!(
        store.info(other).map(|i| (i.version, i.length)),
        Some((V2, 0))
    );
}

#[test]
fn create_skips_dirs_marked_for_removal() {
    let root = tempfile::tempdir().unwrap();
    let (a, b) = (root.path().join("a"), root.path().join("b"));
    let dirs = [DataDirSpec::parse(&format!("*{}", a.display())), spec(&b)];
    let (store, _) = ChunkStore::open(&dirs).unwrap();
    for id in 0..20 {
        store.create(ChunkId(id), V1).unwrap();
        assert!(chunk_path_for(&b, ChunkId(id), V1).exists());
        assert!(!store.is_marked_for_removal(ChunkId(id)));
    }
    let only_marked = [DataDirSpec::parse(&format!("*{}", a.display()))];
    drop(store);
    let (store, _) = ChunkStore::open(&only_marked).unwrap();
    assert!(matches!(
        store.create(ChunkId(99), V1),
        Err(ChunkError::NoSpace { .. })
    ));
}

#[test]
fn chunks_in_a_marked_dir_are_reported_as_such() {
    let root = tempfile::tempdir().unwrap();
    let (a, b) = (root.path().join("a"), root.path().join("b"));
    open_one(&a).create(ChunkId(1), V1).unwrap();
    let dirs = [DataDirSpec::parse(&format!("*{}", a.display())), spec(&b)];
    let (store, _) = ChunkStore::open(&dirs).unwrap();
    assert!(store.is_marked_for_removal(ChunkId(1)));
    assert!(!store.is_marked_for_removal(ChunkId(2)));
}

#[test]
fn delete_removes_the_file_and_a_stale_delete_keeps_it() {
    let (dir, store) = fresh();
    store.create(ChunkId(8), V2).unwrap();
    let path = chunk_path_for(dir.path(), ChunkId(8), V2);
    assert!(matches!(
        store.delete(ChunkId(8), V1),
        Err(ChunkError::WrongVersion {
            have: V2,
            want: V1,
            ..
        })
    ));
    assert!(path.exists());
    store.delete(ChunkId(8), V2).unwrap();
    assert!(!path.exists());
    assert_eq!(store.info(ChunkId(8)), None);
    assert!(matches!(
        store.delete(ChunkId(8), V2),
        Err(ChunkError::NotFound { .. })
    ));
    store.create(ChunkId(8), V1).unwrap();
}

#[test]
fn a_chunk_whose_file_vanished_is_not_found_and_leaves_the_list() {
    let (dir, store) = fresh();
    store.create(ChunkId(4), V1).unwrap();
    fs::remove_file(chunk_path_for(dir.path(), ChunkId(4), V1)).unwrap();
    assert!(matches!(
        store.read(ChunkId(4), V1, 0, 1),
        Err(ChunkError::NotFound { .. })
    ));
    assert!(store.list().is_empty());
}

#[test]
fn sync_and_space_work() {
    let (_dir, store) = fresh();
    store.create(ChunkId(1), V1).unwrap();
    store.write(ChunkId(1), V1, 0, &pattern(3000, 0)).unwrap();
    store.sync(ChunkId(1)).unwrap();
    store.sync(ChunkId(1)).unwrap();
    let space = store.space().unwrap();
    assert!(space.total > 0 && space.available <= space.total);
    assert_eq!(space.used_by_chunks, HEADER_SIZE + 3000);
    assert!(matches!(
        store.sync(ChunkId(2)),
        Err(ChunkError::NotFound { .. })
    ));
}

// ----- versions -----

#[test]
fn every_operation_checks_the_version() {
    let (_dir, store) = fresh();
    let id = ChunkId(1);
    store.create(id, V2).unwrap();
    let stale = |result: Result<(), ChunkError>| {
        assert!(
            matches!(
                result,
                Err(ChunkError::WrongVersion {
                    have: V2,
                    want: V1,
                    ..
                })
            ),
            "{result:?}"
        );
    };
    stale(store.write(id, V1, 0, b"x"));
    stale(store.read(id, V1, 0, 1).map(drop));
    stale(store.truncate(id, V1, ChunkVersion(3), 10));
    stale(store.set_version(id, V1, ChunkVersion(3)));
    stale(store.delete(id, V1));
    let missing = ChunkId(2);
    assert!(matches!(
        store.write(missing, V1, 0, b"x"),
        Err(ChunkError::NotFound { .. })
    ));
    assert!(matches!(
        store.read(missing, V1, 0, 1),
        Err(ChunkError::NotFound { .. })
    ));
    assert!(matches!(
        store.truncate(missing, V1, V2, 0),
        Err(ChunkError::NotFound { .. })
    ));
    assert!(matches!(
        store.set_version(missing, V1, V2),
        Err(ChunkError::NotFound { .. })
    ));
    assert!(matches!(
        store.verify(missing),
        Err(ChunkError::NotFound { .. })
    ));
    assert_eq!(store.info(id).unwrap().version, V2);
}

#[test]
fn set_version_renames_the_file_and_rewrites_the_header() {
    let (dir, store) = fresh();
    let id = ChunkId(0x1234);
    store.create(id, V1).unwrap();
    store.write(id, V1, 0, b"data").unwrap();
    store.set_version(id, V1, V2).unwrap();
    assert!(!chunk_path_for(dir.path(), id, V1).exists());
    let path = chunk_path_for(dir.path(), id, V2);
    let header = fs::read(&path).unwrap();
    assert_eq!(header[24..28], 2u32.to_le_bytes());
    assert_eq!(store.info(id).unwrap().version, V2);
    assert_eq!(store.read(id, V2, 0, 4).unwrap(), &b"data"[..]);
    store.set_version(id, V2, V2).unwrap();
    assert!(path.exists());
}

#[test]
fn a_header_version_that_disagrees_with_the_name_is_fixed_to_the_name() {
    let dir = tempfile::tempdir().unwrap();
    let id = ChunkId(77);
    {
        let store = open_one(dir.path());
        store.create(id, V2).unwrap();
        store.write(id, V2, 0, b"kept").unwrap();
        store.set_version(id, V2, ChunkVersion(3)).unwrap();
    }
    // Undo the rename only: as if the process died between the header write and the rename.
    let new_path = chunk_path_for(dir.path(), id, ChunkVersion(3));
    let old_name = chunk_path_for(dir.path(), id, V2);
    fs::rename(&new_path, &old_name).unwrap();
    assert_eq!(fs::read(&old_name).unwrap()[24..28], 3u32.to_le_bytes());

    let store = open_one(dir.path());
    assert_eq!(store.info(id).unwrap().version, V2);
    assert_eq!(store.read(id, V2, 0, 4).unwrap(), &b"kept"[..]);
    assert_eq!(fs::read(&old_name).unwrap()[24..28], 2u32.to_le_bytes());
    assert_eq!(store.verify(id).unwrap(), 4);
}

// ----- data round trips -----

#[test]
fn unaligned_writes_gaps_appends_and_rewrites_read_back() {
    let (_dir, store) = fresh();
    let id = ChunkId(10);
    store.create(id, V1).unwrap();
    let mut model = Vec::new();
    for (offset, data) in [
        (0, pattern(10, 1)),
        (10, pattern(5, 2)),
        (3 * BLOCK + 17, pattern(100, 3)),
        (BLOCK - 3, pattern(6, 4)),
        (BLOCK, pattern(BLOCK, 5)),
        (2 * BLOCK - 1, pattern(2 * BLOCK + 2, 6)),
        (1, pattern(BLOCK * 5, 7)),
        (9 * BLOCK, pattern(BLOCK, 8)),
        (0, pattern(1, 9)),
    ] {
        store.write(id, V1, offset as u32, &data).unwrap();
        if model.len() < offset + data.len() {
            model.resize(offset + data.len(), 0);
        }
        model[offset..offset + data.len()].copy_from_slice(&data);
        assert_eq!(
            read_all(&store, id, V1),
            model,
            "after writing {} bytes at {offset}",
            data.len()
        );
        assert_eq!(store.info(id).unwrap().length as usize, model.len());
    }
    assert_eq!(
        store.read(id, V1, (BLOCK - 3) as u32, 6).unwrap(),
        model[BLOCK - 3..BLOCK + 3]
    );
    assert_eq!(
        store.read(id, V1, model.len() as u32 - 2, 100).unwrap(),
        model[model.len() - 2..]
    );
    assert!(
        store
            .read(id, V1, model.len() as u32, 100)
            .unwrap()
            .is_empty()
    );
    assert!(store.read(id, V1, 5, 0).unwrap().is_empty());
    assert_eq!(store.verify(id).unwrap(), model.len() as u64);
}

#[test]
fn a_gap_reads_as_zeros_even_over_leftover_bytes_past_the_end() {
    let (dir, store) = fresh();
    let id = ChunkId(11);
    store.create(id, V1).unwrap();
    store.write(id, V1, 0, &[7u8; 100]).unwrap();
    // A crash could leave bytes past the recorded length.
    let path = chunk_path_for(dir.path(), id, V1);
    let file = OpenOptions::new().write(true).open(&path).unwrap();
    file.write_all_at(&[0xEE; 500], HEADER_SIZE + 100).unwrap();
    store.write(id, V1, 1000, &[9u8; 10]).unwrap();
    let data = read_all(&store, id, V1);
    assert_eq!(data.len(), 1010);
    assert!(data[..100].iter().all(|&b| b == 7));
    assert!(data[100..1000].iter().all(|&b| b == 0));
    assert!(data[1000..].iter().all(|&b| b == 9));
}

#[test]
fn a_full_chunk_of_exactly_64_mib_round_trips_and_nothing_fits_past_it() {
    let (_dir, store) = fresh();
    let id = ChunkId(12);
    store.create(id, V1).unwrap();
    let piece = 1 << 20;
    for i in 0..(CHUNK_SIZE as usize / piece) {
        store
            .write(id, V1, (i * piece) as u32, &pattern(piece, i as u8))
            .unwrap();
    }
    assert_eq!(store.info(id).unwrap().length as u64, CHUNK_SIZE);
    assert_eq!(store.verify(id).unwrap(), CHUNK_SIZE);
    let tail = store.read(id, V1, CHUNK_SIZE as u32 - 10, 100).unwrap();
    assert_eq!(tail, pattern(piece, 63)[piece - 10..]);
    assert!(matches!(
        store.write(id, V1, CHUNK_SIZE as u32 - 1, b"ab"),
        Err(ChunkError::OutOfRange { .. })
    ));
    assert!(matches!(
        store.write(id, V1, u32::MAX, b"a"),
        Err(ChunkError::OutOfRange { .. })
    ));
    store.write(id, V1, CHUNK_SIZE as u32 - 1, b"z").unwrap();
    store.write(id, V1, CHUNK_SIZE as u32, b"").unwrap();
    assert_eq!(
        store.read(id, V1, CHUNK_SIZE as u32 - 1, 5).unwrap(),
        &b"z"[..]
    );
    assert!(matches!(
        store.truncate(id, V1, V2, CHUNK_SIZE as u32 + 1),
        Err(ChunkError::OutOfRange { .. })
    ));
}

#[test]
fn truncate_shrinks_grows_and_moves_the_version() {
    let (dir, store) = fresh();
    let id = ChunkId(13);
    store.create(id, V1).unwrap();
    let data = pattern(3 * BLOCK + 500, 1);
    store.write(id, V1, 0, &data).unwrap();

    store.truncate(id, V1, V2, BLOCK as u32 + 10).unwrap();
    assert!(
        chunk_path_for(dir.path(), id, V2).exists() && !chunk_path_for(dir.path(), id, V1).exists()
    );
    assert_eq!(
        store.info(id),
        Some(ChunkInfo {
            id,
            version: V2,
            length: BLOCK as u32 + 10
        })
    );
    assert_eq!(read_all(&store, id, V2), data[..BLOCK + 10]);

    let v3 = ChunkVersion(3);
    store.truncate(id, V2, v3, 4 * BLOCK as u32 + 3).unwrap();
    let grown = read_all(&store, id, v3);
    assert_eq!(grown.len(), 4 * BLOCK + 3);
    assert_eq!(grown[..BLOCK + 10], data[..BLOCK + 10]);
    assert!(grown[BLOCK + 10..].iter().all(|&b| b == 0));
    assert_eq!(store.verify(id).unwrap(), 4 * BLOCK as u64 + 3);

    store.truncate(id, v3, v3, 0).unwrap();
    assert!(read_all(&store, id, v3).is_empty());
    assert_eq!(
        fs::metadata(chunk_path_for(dir.path(), id, v3))
            .unwrap()
            .len(),
        HEADER_SIZE
    );
}

// ----- writing back -----

/// What the page cache holds of `path` in `offset..offset + len` (`cachestat`, Linux 6.5).
#[derive(Default)]
#[repr(C)]
struct CacheStat {
    /// Pages cached.
    cache: u64,
    /// Pages changed in the page cache and not yet being written to disk.
    dirty: u64,
    writeback: u64,
    evicted: u64,
    recently_evicted: u64,
}

fn cache_stat(path: &Path, offset: u64, len: u64) -> CacheStat {
    use std::os::fd::AsRawFd;
    #[repr(C)]
    struct Range {
        off: u64,
        len: u64,
    }
    const SYS_CACHESTAT: libc::c_long = 451;
    let file = fs::File::open(path).unwrap();
    let range = Range { off: offset, len };
    let mut stat = CacheStat::default();
    // SAFETY: `range` and `stat` are live C structs of the layout the kernel expects.
    let rc = unsafe {
        libc::syscall(
            SYS_CACHESTAT,
            file.as_raw_fd(),
            &range as *const Range,
            &mut stat as *mut CacheStat,
            0,
        )
    };
    assert_eq!(rc, 0, "cachestat: {}", std::io::Error::last_os_error());
    stat
}

fn dirty_pages(path: &Path, offset: u64, len: u64) -> u64 {
    cache_stat(path, offset, len).dirty
}

/// Whether `path` is on a tmpfs, whose files live in the page cache whatever the writes ask.
fn on_tmpfs(path: &Path) -> bool {
    use std::os::unix::ffi::OsStrExt;
    let c = std::ffi::CString::new(path.as_os_str().as_bytes()).unwrap();
    let mut st: libc::statfs = unsafe { std::mem::zeroed() };
    // SAFETY: `c` is a valid C string and `st` a live statfs struct.
    assert_eq!(unsafe { libc::statfs(c.as_ptr(), &mut st) }, 0);
    st.f_type == libc::TMPFS_MAGIC
}

#[test]
fn each_mib_a_sequential_writer_fills_is_on_its_way_to_disk_at_once_and_rewrites_are_left_alone() {
    let (dir, store) = fresh();
    let id = ChunkId(0xD0);
    store.create(id, V1).unwrap();
    let path = chunk_path_for(dir.path(), id, V1);
    let mib = 1 << 20;
    let piece = 64 << 10;
    let data = pattern(2 * mib, 2);
    for (i, bytes) in data.chunks(piece).enumerate() {
        if (i + 1) * piece == 2 * mib {
            assert!(
                dirty_pages(&path, HEADER_SIZE + mib as u64, mib as u64) > 0,
                "a MiB not filled yet is left to the kernel"
            );
        }
        store.write(id, V1, (i * piece) as u32, bytes).unwrap();
    }
    assert_eq!(dirty_pages(&path, HEADER_SIZE, 2 * mib as u64), 0);

    for (i, bytes) in data[..mib].chunks(piece).enumerate() {
        store.write(id, V1, (i * piece) as u32, bytes).unwrap();
    }
    assert!(dirty_pages(&path, HEADER_SIZE, mib as u64) > 0);
    assert_eq!(store.read(id, V1, 0, 2 * mib as u32).unwrap(), data);
}

#[test]
fn the_aligned_middle_of_a_large_write_past_the_end_goes_past_the_page_cache_and_reads_back_whole()
{
    let (dir, store) = fresh();
    let id = ChunkId(0xD1);
    store.create(id, V1).unwrap();
    let path = chunk_path_for(dir.path(), id, V1);
    let mib = 1 << 20;
    let small = pattern(BLOCK, 3);
    store.write(id, V1, 0, &small).unwrap();
    // Past the end, after a gap: the middle goes to the disk directly.
    let large = pattern(3 * mib + 100, 4);
    let at = BLOCK as u32 + 5000;
    store.write(id, V1, at, &large).unwrap();
    let middle = (HEADER_SIZE + 2 * BLOCK as u64, 2 * mib as u64);
    let tmpfs = on_tmpfs(dir.path());
    if !tmpfs {
        let cached = cache_stat(&path, middle.0, middle.1).cache;
        assert_eq!(
            cached, 0,
            "the middle of a large write past the end is not cached"
        );
    }
    let mut expected = small.clone();
    expected.resize(at as usize, 0);
    expected.extend_from_slice(&large);
    assert_eq!(
        store.read(id, V1, 0, expected.len() as u32).unwrap(),
        expected
    );
    // Over older data: through the page cache, with its hashes (a crash cannot leave new
    // bytes on disk under old hashes).
    drop_cached_pages(&path);
    let rewrite = pattern(2 * mib, 5);
    store.write(id, V1, 2 * BLOCK as u32, &rewrite).unwrap();
    if !tmpfs {
        let dirty = cache_stat(&path, middle.0, middle.1).dirty;
        assert!(dirty > 0, "a large rewrite goes through the page cache");
    }
    expected[2 * BLOCK..2 * BLOCK + 2 * mib].copy_from_slice(&rewrite);
    assert_eq!(
        store.read(id, V1, 0, expected.len() as u32).unwrap(),
        expected
    );
    assert_eq!(store.verify(id).unwrap(), expected.len() as u64);
}

#[test]
fn a_large_read_of_data_the_page_cache_lacks_goes_past_it_unless_read_again_and_damage_is_found() {
    let (dir, store) = fresh();
    if on_tmpfs(dir.path()) {
        return;
    }
    let id = ChunkId(0xD2);
    store.create(id, V1).unwrap();
    let path = chunk_path_for(dir.path(), id, V1);
    let mib = 1 << 20;
    let data = pattern(3 * mib, 7);
    store.write(id, V1, 0, &data).unwrap();
    drop_cached_pages(&path);
    // Past the first block: reading the header and hashes may bring a few pages after them
    // into the cache (the kernel's read-ahead), which a direct read leaves there.
    let first_mib = (HEADER_SIZE + BLOCK as u64, (mib - BLOCK) as u64);
    let second_mib = (HEADER_SIZE + mib as u64, mib as u64);
    let third_mib = (HEADER_SIZE + 2 * mib as u64, mib as u64);
    assert_eq!(store.read(id, V1, 0, mib as u32).unwrap(), data[..mib]);
    assert_eq!(
        cache_stat(&path, first_mib.0, first_mib.1).cache,
        0,
        "a large read of uncached data leaves the page cache alone"
    );
    assert_eq!(store.read(id, V1, 0, mib as u32).unwrap(), data[..mib]);
    assert!(
        cache_stat(&path, first_mib.0, first_mib.1).cache > 0,
        "data read again soon goes through the page cache"
    );
    // The chunk test reads directly too, and what it read is not data read again.
    drop_cached_pages(&path);
    assert_eq!(store.verify(id).unwrap(), data.len() as u64);
    assert_eq!(cache_stat(&path, second_mib.0, second_mib.1).cache, 0);
    assert_eq!(
        store.read(id, V1, mib as u32, mib as u32).unwrap(),
        data[mib..2 * mib]
    );
    assert_eq!(cache_stat(&path, second_mib.0, second_mib.1).cache, 0);
    // A byte damaged on the disk, in data not read yet: found by the direct read's hash check,
    // and by the chunk test's.
    flip_byte(&path, HEADER_SIZE + 40 * BLOCK as u64 + 7);
    drop_cached_pages(&path);
    assert!(matches!(
        store.read(id, V1, 2 * mib as u32, mib as u32),
        Err(ChunkError::Corrupt { block: 40, .. })
    ));
    assert_eq!(cache_stat(&path, third_mib.0, third_mib.1).cache, 0);
    assert!(matches!(
        store.verify(id),
        Err(ChunkError::Corrupt { block: 40, .. })
    ));
    assert_eq!(cache_stat(&path, third_mib.0, third_mib.1).cache, 0);
    // Off: the chunk test reads through the cache.
    store.set_direct_reads(false);
    assert!(store.verify(id).is_err());
    assert!(cache_stat(&path, third_mib.0, third_mib.1).cache > 0);
}

// ----- reads from the kernel's caches -----

/// Writes the chunk file's dirty pages to disk and drops them from the page cache.
fn drop_cached_pages(path: &Path) {
    use std::os::fd::AsRawFd;
    let file = fs::File::open(path).unwrap();
    file.sync_all().unwrap();
    // SAFETY: posix_fadvise only reads its arguments; the descriptor is open.
    let rc = unsafe { libc::posix_fadvise(file.as_raw_fd(), 0, 0, libc::POSIX_FADV_DONTNEED) };
    assert_eq!(rc, 0);
}

#[test]
fn a_small_read_of_warm_data_from_the_caches_gives_what_read_gives() {
    let (_dir, store) = fresh();
    let id = ChunkId(0xCA);
    store.create(id, V1).unwrap();
    let data = pattern(4 * BLOCK + 100, 9);
    // In pieces: the middle of a large write would go past the page cache.
    store.write(id, V1, 0, &data[..2 * BLOCK]).unwrap();
    store
        .write(id, V1, 2 * BLOCK as u32, &data[2 * BLOCK..])
        .unwrap();
    for (offset, len) in [
        (0, 4096),
        (BLOCK - 10, 20),
        (2 * BLOCK, BLOCK),
        (3 * BLOCK + 7, 2 * BLOCK),
        (4 * BLOCK + 100, 4096),
        (CHUNK_SIZE as usize - 1, 1),
    ] {
        let (offset, len) = (offset as u32, len as u32);
        assert_eq!(
            store.read_cached(id, V1, offset, len),
            Some(store.read(id, V1, offset, len).unwrap()),
            "{len} bytes at {offset}"
        );
    }
}

#[test]
fn a_read_of_many_blocks_or_of_a_stale_version_or_missing_chunk_is_not_taken_from_the_caches() {
    let (_dir, store) = fresh();
    let id = ChunkId(0xCC);
    store.create(id, V2).unwrap();
    // In pieces: the middle of a large write would go past the page cache.
    let data = pattern(4 * BLOCK, 1);
    store.write(id, V2, 0, &data[..2 * BLOCK]).unwrap();
    store
        .write(id, V2, 2 * BLOCK as u32, &data[2 * BLOCK..])
        .unwrap();
    assert_eq!(store.read_cached(id, V2, 10, 2 * BLOCK as u32), None);
    assert_eq!(store.read_cached(id, V1, 0, 10), None);
    assert_eq!(store.read_cached(ChunkId(0xCD), V2, 0, 10), None);
    assert!(store.read_cached(id, V2, 0, 10).is_some());
}

#[test]
fn a_damaged_block_in_the_page_cache_is_not_served_and_read_reports_it() {
    let (dir, store) = fresh();
    let id = ChunkId(0xCE);
    store.create(id, V1).unwrap();
    store.write(id, V1, 0, &pattern(3 * BLOCK, 4)).unwrap();
    flip_byte(
        &chunk_path_for(dir.path(), id, V1),
        HEADER_SIZE + BLOCK as u64 + 5,
    );
    assert_eq!(store.read_cached(id, V1, BLOCK as u32, 4096), None);
    assert!(matches!(
        store.read(id, V1, BLOCK as u32, 4096),
        Err(ChunkError::Corrupt { block: 1, .. })
    ));
    assert!(store.read_cached(id, V1, 0, 4096).is_some());
}

#[test]
fn data_the_page_cache_no_longer_holds_is_left_to_read_which_brings_it_back() {
    let (dir, store) = fresh();
    let id = ChunkId(0xCF);
    store.create(id, V1).unwrap();
    let data = pattern(2 * BLOCK, 6);
    store.write(id, V1, 0, &data).unwrap();
    drop_cached_pages(&chunk_path_for(dir.path(), id, V1));
    assert_eq!(store.read_cached(id, V1, 0, 4096), None);
    assert_eq!(store.read(id, V1, 0, 4096).unwrap(), data[..4096]);
    assert_eq!(
        store.read_cached(id, V1, 0, 4096).as_deref(),
        Some(&data[..4096])
    );
}

// ----- damage -----

#[test]
fn a_flipped_data_byte_is_corrupt_in_its_block_and_other_blocks_still_read() {
    let (dir, store) = fresh();
    let id = ChunkId(0xCB);
    store.create(id, V1).unwrap();
    let data = pattern(5 * BLOCK, 3);
    store.write(id, V1, 0, &data).unwrap();
    flip_byte(
        &chunk_path_for(dir.path(), id, V1),
        HEADER_SIZE + 3 * BLOCK as u64 + 1234,
    );

    let err = store.read(id, V1, 3 * BLOCK as u32 + 5, 1).unwrap_err();
    assert!(
        matches!(
            err,
            ChunkError::Corrupt {
                chunk: ChunkId(0xCB),
                block: 3
            }
        ),
        "{err}"
    );
    assert_eq!(
        err.to_string(),
        "chunk 00000000000000CB: block 3 does not match its hash"
    );
    assert!(err.is_damage());
    assert!(matches!(
        store.read(id, V1, 0, CHUNK_SIZE as u32),
        Err(ChunkError::Corrupt { block: 3, .. })
    ));
    assert!(matches!(
        store.verify(id),
        Err(ChunkError::Corrupt { block: 3, .. })
    ));
    assert_eq!(
        store.read(id, V1, 0, 3 * BLOCK as u32).unwrap(),
        data[..3 * BLOCK]
    );
    assert_eq!(
        store.read(id, V1, 4 * BLOCK as u32, BLOCK as u32).unwrap(),
        data[4 * BLOCK..]
    );
    // A partial write into the damaged block must not bless the damage with a fresh hash.
    assert!(matches!(
        store.write(id, V1, 3 * BLOCK as u32 + 1, b"x"),
        Err(ChunkError::Corrupt { block: 3, .. })
    ));
    // Overwriting the whole block replaces it without reading it.
    store
        .write(id, V1, 3 * BLOCK as u32, &data[3 * BLOCK..4 * BLOCK])
        .unwrap();
    assert_eq!(read_all(&store, id, V1), data);
}

#[test]
fn aligned_appends_and_full_block_rewrites_read_nothing_back() {
    let (dir, store) = fresh();
    let id = ChunkId(20);
    store.create(id, V1).unwrap();
    store.write(id, V1, 0, &pattern(4 * BLOCK, 1)).unwrap();
    let path = chunk_path_for(dir.path(), id, V1);
    for block in 0..4 {
        flip_byte(&path, HEADER_SIZE + (block * BLOCK) as u64);
    }
    // Had any of these read an old block, it would have failed on the damage.
    store
        .write(id, V1, 4 * BLOCK as u32, &pattern(16 * BLOCK, 2))
        .unwrap();
    store
        .write(id, V1, 20 * BLOCK as u32, &pattern(100, 3))
        .unwrap();
    store
        .write(id, V1, BLOCK as u32, &pattern(2 * BLOCK, 4))
        .unwrap();
    assert!(matches!(
        store.verify(id),
        Err(ChunkError::Corrupt { block: 0, .. })
    ));
    assert_eq!(
        store.read(id, V1, BLOCK as u32, 2 * BLOCK as u32).unwrap(),
        pattern(2 * BLOCK, 4)
    );
    assert!(matches!(
        store.read(id, V1, 3 * BLOCK as u32, 1),
        Err(ChunkError::Corrupt { block: 3, .. })
    ));
}

#[test]
fn a_damaged_header_is_an_error_never_a_panic() {
    let (dir, store) = fresh();
    let id = ChunkId(30);
    store.create(id, V1).unwrap();
    store.write(id, V1, 0, &pattern(1000, 0)).unwrap();
    let path = chunk_path_for(dir.path(), id, V1);
    let good = fs::read(&path).unwrap();
    for offset in [0u64, 8, 13, 17, 25, 29, 40, 63] {
        flip_byte(&path, offset);
        for result in [
            store.read(id, V1, 0, 10).map(drop),
            store.write(id, V1, 0, b"x"),
            store.truncate(id, V1, V1, 5),
            store.verify(id).map(drop),
            store.set_version(id, V1, V2),
        ] {
            let err = result.unwrap_err();
            assert!(
                matches!(err, ChunkError::BadHeader { .. }),
                "offset {offset}: {err}"
            );
            assert!(err.is_damage());
        }
        fs::write(&path, &good).unwrap();
    }
    assert_eq!(read_all(&store, id, V1), pattern(1000, 0));
    flip_byte(&path, 4096 + 5);
    assert!(matches!(
        store.read(id, V1, 0, 10),
        Err(ChunkError::Corrupt { block: 0, .. })
    ));
}

#[test]
fn a_header_claiming_more_than_a_chunk_or_naming_another_chunk_is_bad() {
    let (dir, store) = fresh();
    let id = ChunkId(31);
    store.create(id, V1).unwrap();
    let path = chunk_path_for(dir.path(), id, V1);
    let mut header = fs::read(&path).unwrap()[..64].to_vec();
    header[28..32].copy_from_slice(&(CHUNK_SIZE as u32 + 1).to_le_bytes());
    let checksum = *blake3::hash(&header[..32]).as_bytes();
    header[32..64].copy_from_slice(&checksum);
    OpenOptions::new()
        .write(true)
        .open(&path)
        .unwrap()
        .write_all_at(&header, 0)
        .unwrap();
    let err = store.read(id, V1, 0, 10).unwrap_err();
    assert!(err.to_string().contains("larger than a chunk"), "{err}");

    header[16..24].copy_from_slice(&32u64.to_le_bytes());
    header[28..32].copy_from_slice(&0u32.to_le_bytes());
    let checksum = *blake3::hash(&header[..32]).as_bytes();
    header[32..64].copy_from_slice(&checksum);
    OpenOptions::new()
        .write(true)
        .open(&path)
        .unwrap()
        .write_all_at(&header, 0)
        .unwrap();
    let err = store.read(id, V1, 0, 10).unwrap_err();
    assert!(
        err.to_string().contains("names chunk 0000000000000020"),
        "{err}"
    );
}

#[test]
fn a_truncated_file_is_an_error_never_a_panic() {
    let (dir, store) = fresh();
    let id = ChunkId(32);
    store.create(id, V1).unwrap();
    store.write(id, V1, 0, &pattern(3 * BLOCK, 0)).unwrap();
    let path = chunk_path_for(dir.path(), id, V1);
    let file = OpenOptions::new().write(true).open(&path).unwrap();

    file.set_len(HEADER_SIZE + BLOCK as u64 + 100).unwrap();
    assert_eq!(store.read(id, V1, 0, 10).unwrap(), pattern(10, 0));
    assert!(matches!(
        store.read(id, V1, 0, 3 * BLOCK as u32),
        Err(ChunkError::Corrupt { block: 1, .. })
    ));
    assert!(matches!(
        store.verify(id),
        Err(ChunkError::Corrupt { block: 1, .. })
    ));
    assert!(matches!(
        store.write(id, V1, 2 * BLOCK as u32 + 1, b"x"),
        Err(ChunkError::Corrupt { block: 2, .. })
    ));

    file.set_len(4096 + 10).unwrap();
    assert!(matches!(
        store.read(id, V1, 0, 10),
        Err(ChunkError::BadHeader { .. })
    ));
    file.set_len(20).unwrap();
    assert!(matches!(
        store.read(id, V1, 0, 10),
        Err(ChunkError::BadHeader { .. })
    ));
    assert!(matches!(
        store.verify(id),
        Err(ChunkError::BadHeader { .. })
    ));
    file.set_len(0).unwrap();
    assert!(matches!(
        store.write(id, V1, 0, b"x"),
        Err(ChunkError::BadHeader { .. })
    ));
}

#[test]
fn garbage_files_with_chunk_names_are_listed_but_fail_cleanly() {
    let dir = tempfile::tempdir().unwrap();
    open_one(dir.path());
    let path = chunk_path_for(dir.path(), ChunkId(50), V1);
    fs::write(&path, pattern(HEADER_SIZE as usize + 5000, 9)).unwrap();
    let empty = chunk_path_for(dir.path(), ChunkId(51), V1);
    fs::write(&empty, b"").unwrap();
    let (store, report) = ChunkStore::open(&[spec(dir.path())]).unwrap();
    assert_eq!(report.chunks, 2);
    assert_eq!(store.info(ChunkId(50)).unwrap().length, 5000);
    for id in [ChunkId(50), ChunkId(51)] {
        assert!(matches!(
            store.read(id, V1, 0, 10),
            Err(ChunkError::BadHeader { .. })
        ));
        assert!(matches!(
            store.verify(id),
            Err(ChunkError::BadHeader { .. })
        ));
    }
    store.delete(ChunkId(50), V1).unwrap();
    assert!(!path.exists());
}

/// The marker a chunkserver leaves beside a copy whose writes were lost.
fn lost_marker(dir: &Path, id: ChunkId, version: ChunkVersion) -> std::path::PathBuf {
    let mut path = chunk_path_for(dir, id, version).into_os_string();
    path.push(".lost");
    path.into()
}

#[test]
fn a_copy_marked_lost_before_a_start_is_refused_reported_and_fences_its_directory_until_deleted() {
    let dir = tempfile::tempdir().unwrap();
    let (lost, good) = (ChunkId(5), ChunkId(6));
    {
        let store = open_one(dir.path());
        for id in [lost, good] {
            store.create(id, V1).unwrap();
            store.write(id, V1, 0, &pattern(BLOCK, 3)).unwrap();
        }
    }
    fs::write(lost_marker(dir.path(), lost, V1), b"").unwrap();
    // A marker whose copy was deleted before the marker could be.
    let stale = lost_marker(dir.path(), ChunkId(9), V1);
    fs::write(&stale, b"").unwrap();

    let (store, report) = ChunkStore::open(&[spec(dir.path())]).unwrap();
    assert_eq!((report.chunks, report.lost), (2, 1));
    assert!(report.ignored.is_empty(), "{:?}", report.ignored);
    assert!(
        !stale.exists(),
        "a marker without its chunk file is removed"
    );
    let listed: Vec<ChunkId> = store.lost_copies().iter().map(|c| c.id).collect();
    assert_eq!(listed, vec![lost]);
    for result in [
        store.read(lost, V1, 0, 10).map(drop),
        store.write(lost, V1, 0, b"x"),
        store.set_version(lost, V1, V2),
        store.sync(lost),
    ] {
        assert!(
            matches!(result, Err(ChunkError::WriteLost { .. })),
            "{result:?}"
        );
    }
    assert_eq!(read_all(&store, good, V1), pattern(BLOCK, 3));
    assert_eq!(
        store.space().unwrap().available,
        0,
        "the directory counts as full"
    );
    assert!(matches!(
        store.create(ChunkId(7), V1),
        Err(ChunkError::NoSpace { .. })
    ));

    store.delete(lost, V1).unwrap();
    assert!(!lost_marker(dir.path(), lost, V1).exists());
    assert!(!chunk_path_for(dir.path(), lost, V1).exists());
    assert!(store.lost_copies().is_empty());
    drop(store);

    let (store, report) = ChunkStore::open(&[spec(dir.path())]).unwrap();
    assert_eq!((report.chunks, report.lost), (1, 0));
    assert!(store.space().unwrap().available > 0);
    store.create(ChunkId(7), V1).unwrap();
}

// ----- concurrency -----

#[test]
fn concurrent_readers_never_see_a_half_written_block() {
    let (_dir, store) = fresh();
    let store = Arc::new(store);
    let id = ChunkId(40);
    store.create(id, V1).unwrap();
    store.write(id, V1, 0, &vec![0u8; 8 * BLOCK]).unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let writer = {
        let (store, stop) = (Arc::clone(&store), Arc::clone(&stop));
        std::thread::spawn(move || {
            let mut round = 0u8;
            while !stop.load(Ordering::Relaxed) {
                round = round.wrapping_add(1);
                store.write(id, V1, 0, &vec![round; 8 * BLOCK]).unwrap();
                store.write(id, V1, 100, &[round; 3]).unwrap();
            }
        })
    };
    let others: Vec<_> = (0..2u64)
        .map(|n| {
            let store = Arc::clone(&store);
            std::thread::spawn(move || {
                let other = ChunkId(1000 + n);
                store.create(other, V1).unwrap();
                for i in 0..50u32 {
                    store.write(other, V1, i * 1000, &[n as u8; 1000]).unwrap();
                }
                assert_eq!(
                    store.read(other, V1, 0, 50_000).unwrap(),
                    vec![n as u8; 50_000]
                );
            })
        })
        .collect();
    for _ in 0..300 {
        let data = store.read(id, V1, 0, 8 * BLOCK as u32).unwrap();
        assert!(
            data.iter().all(|&b| b == data[0]),
            "a read mixed two writes"
        );
    }
    stop.store(true, Ordering::Relaxed);
    writer.join().unwrap();
    for handle in others {
        handle.join().unwrap();
    }
}

#[test]
fn concurrent_creates_of_one_id_let_exactly_one_win() {
    let (_dir, store) = fresh();
    let store = Arc::new(store);
    let handles: Vec<_> = (0..8)
        .map(|_| {
            let store = Arc::clone(&store);
            std::thread::spawn(move || store.create(ChunkId(60), V1).is_ok())
        })
        .collect();
    let wins = handles
        .into_iter()
        .map(|h| h.join().unwrap())
        .filter(|&won| won)
        .count();
    assert_eq!(wins, 1);
    assert_eq!(store.list().len(), 1);
}

// ----- against a model -----

#[derive(Clone, Debug)]
enum Op {
    Write {
        offset: u32,
        len: usize,
        seed: u8,
    },
    Truncate {
        length: u32,
        bump: bool,
    },
    Read {
        offset: u32,
        len: u32,
    },
    /// Close the store and open it again: the scan must see the same chunk.
    Reopen,
}

/// Offsets that cluster around block boundaries, where the interesting cases are.
fn offset() -> impl Strategy<Value = u32> {
    prop_oneof![
        0..(6 * BLOCK_SIZE),
        (0..6u32, -3i64..=3)
            .prop_map(|(block, delta)| (i64::from(block * BLOCK_SIZE) + delta).max(0) as u32),
    ]
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (offset(), 0..(2 * BLOCK + 10), any::<u8>())
            .prop_map(|(offset, len, seed)| Op::Write { offset, len, seed }),
        1 => (offset(), any::<bool>()).prop_map(|(length, bump)| Op::Truncate { length, bump }),
        3 => (offset(), 0..(3 * BLOCK_SIZE)).prop_map(|(offset, len)| Op::Read { offset, len }),
        1 => Just(Op::Reopen),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn the_store_behaves_like_a_byte_vector(ops in proptest::collection::vec(op(), 1..25)) {
        let (dir, mut store) = fresh();
        let id = ChunkId(0xAB);
        let mut version = V1;
        store.create(id, version).unwrap();
        let mut model: Vec<u8> = Vec::new();
        for op in ops {
            match op {
                Op::Write { offset, len, seed } => {
                    let data = pattern(len, seed);
                    store.write(id, version, offset, &data).unwrap();
                    let end = offset as usize + len;
                    if len > 0 && model.len() < end {
                        model.resize(end, 0);
                    }
                    model[offset as usize..offset as usize + len].copy_from_slice(&data);
                }
                Op::Truncate { length, bump } => {
                    let to = if bump { version.next() } else { version };
                    store.truncate(id, version, to, length).unwrap();
                    version = to;
                    model.resize(length as usize, 0);
                }
                Op::Read { offset, len } => {
                    let got = store.read(id, version, offset, len).unwrap();
                    let start = (offset as usize).min(model.len());
                    let end = (offset as usize + len as usize).min(model.len());
                    prop_assert_eq!(&got[..], &model[start..end]);
                }
                Op::Reopen => {
                    drop(store);
                    store = open_one(dir.path());
                }
            }
            let expected = ChunkInfo { id, version, length: model.len() as u32 };
            prop_assert_eq!(store.info(id).unwrap(), expected);
        }
        prop_assert_eq!(read_all(&store, id, version), model.clone());
        prop_assert_eq!(store.verify(id).unwrap(), model.len() as u64);
    }
}

#[test]
fn a_duplicate_is_an_independent_chunk_with_the_same_data() {
    let (_dir, store) = fresh();
    let (a, b) = (ChunkId(10), ChunkId(11));
    store.create(a, ChunkVersion(3)).unwrap();
    let data = pattern(200_000, 4);
    store.write(a, ChunkVersion(3), 0, &data).unwrap();
    store
        .duplicate(a, ChunkVersion(3), b, ChunkVersion(1))
        .unwrap();
    assert_eq!(store.read(b, ChunkVersion(1), 0, 300_000).unwrap(), data);
    store.write(b, ChunkVersion(1), 0, b"changed").unwrap();
    assert_eq!(store.read(a, ChunkVersion(3), 0, 7).unwrap(), &data[..7]);
    assert_eq!(store.info(b).unwrap().length, 200_000);
    assert!(matches!(
        store.duplicate(a, ChunkVersion(3), b, ChunkVersion(1)),
        Err(ChunkError::AlreadyExists { .. })
    ));
    assert!(matches!(
        store.duplicate(a, ChunkVersion(2), ChunkId(12), ChunkVersion(1)),
        Err(ChunkError::WrongVersion { .. })
    ));
}

#[test]
fn a_sync_pass_syncs_each_chunk_changed_since_its_last_sync_once() {
    let (_dir, store) = fresh();
    let (a, b, c) = (ChunkId(1), ChunkId(2), ChunkId(3));
    assert_eq!(store.sync_changed().synced, 0);
    store.create(a, V1).unwrap();
    store.create(b, V1).unwrap();
    store.write(a, V1, 0, &pattern(5000, 1)).unwrap();
    let pass = store.sync_changed();
    assert_eq!((pass.synced, pass.whole_file_systems), (2, 0));
    assert!(pass.failed.is_empty());
    assert_eq!(store.sync_changed().synced, 0, "nothing changed since");

    store.write(a, V1, 100, b"again").unwrap();
    store.create(c, V1).unwrap();
    store.sync(c).unwrap();
    assert_eq!(
        store.sync_changed().synced,
        1,
        "a client's sync counts as one"
    );

    store.set_version(b, V1, V2).unwrap();
    store.truncate(c, V1, V2, 10).unwrap();
    store.delete(a, V1).unwrap();
    assert_eq!(
        store.sync_changed().synced,
        2,
        "the deleted chunk is left out"
    );
    assert!(matches!(
        store.write(b, V1, 0, b"stale"),
        Err(ChunkError::WrongVersion { .. })
    ));
    assert_eq!(
        store.sync_changed().synced,
        0,
        "a change refused at once changed nothing"
    );
    assert!(matches!(
        store.write(b, V2, CHUNK_SIZE as u32, b"past the end"),
        Err(ChunkError::OutOfRange { .. })
    ));
    assert_eq!(
        store.sync_changed().synced,
        1,
        "a change that failed on its way is synced: it may have done part of its work"
    );
}

#[test]
fn a_sync_pass_over_many_changed_chunks_syncs_their_file_system_whole() {
    let (_dir, store) = fresh();
    for id in 0..40 {
        store.create(ChunkId(id), V1).unwrap();
        store
            .write(ChunkId(id), V1, 0, &pattern(4096, id as u8))
            .unwrap();
    }
    let pass = store.sync_changed();
    assert_eq!((pass.synced, pass.whole_file_systems), (40, 1));
    assert!(pass.failed.is_empty());
    assert_eq!(store.sync_changed().synced, 0);
    store.write(ChunkId(7), V1, 0, b"x").unwrap();
    let pass = store.sync_changed();
    assert_eq!((pass.synced, pass.whole_file_systems), (1, 0));
}

#[test]
fn no_write_made_while_sync_passes_run_is_left_unsynced() {
    let (_dir, store) = fresh();
    let store = Arc::new(store);
    let ids: Vec<ChunkId> = (100..104).map(ChunkId).collect();
    for &id in &ids {
        store.create(id, V1).unwrap();
    }
    let writing = Arc::new(AtomicBool::new(true));
    let writers: Vec<_> = ids
        .iter()
        .map(|&id| {
            let store = store.clone();
            std::thread::spawn(move || {
                for round in 0..200u32 {
                    let offset = (round % 16) * 4096;
                    store
                        .write(id, V1, offset, &pattern(4096, round as u8))
                        .unwrap();
                }
            })
        })
        .collect();
    let syncer = {
        let (store, writing) = (store.clone(), writing.clone());
        std::thread::spawn(move || {
            let mut passes = 0;
            while writing.load(Ordering::Relaxed) {
                assert!(store.sync_changed().failed.is_empty());
                passes += 1;
            }
            passes
        })
    };
    for writer in writers {
        writer.join().unwrap();
    }
    writing.store(false, Ordering::Relaxed);
    assert!(syncer.join().unwrap() > 0);
    // Whatever the last pass running beside the writers saw, the writes after its start are
    // still marked: one more pass syncs exactly the chunks written since, and then none.
    let last = store.sync_changed().synced;
    assert!(last <= ids.len());
    assert_eq!(store.sync_changed().synced, 0);
    for &id in &ids {
        store.write(id, V1, 0, b"after").unwrap();
    }
    assert_eq!(store.sync_changed().synced, ids.len());
}
