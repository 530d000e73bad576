//! Crash tests below the master: torn changelog tails, damaged or stale sled databases, power
//! cuts (everything written after the last fsync dropped), and images taken under load. Each
//! test compares whole key-value states, so "recovered" means identical, not merely "opens".

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use elkfs_proto::types::{SetAttr, Timestamp};
use elkfs_proto::{ChunkId, ChunkVersion, InodeId};

use crate::changelog::{self, Changelog};
use crate::kv::{KvStore, Rows, SledStore};
use crate::recovery::{CHANGELOG_DIR, SLED_DIR, TEST_PANIC_MARKER};
use crate::txn::Txn;
use crate::{ExecError, MetaOp, MetaStore, OpenReport, StoreConfig, StoreError, image, keys};

fn config() -> StoreConfig {
    StoreConfig {
        cache_bytes: 8 << 20,
        changelog_file_bytes: 4096,
        image_page_keys: 8,
        ..Default::default()
    }
}

fn open(dir: &Path) -> (MetaStore, OpenReport) {
    MetaStore::open(dir, &config()).unwrap()
}

fn t(secs: i64) -> Timestamp {
    Timestamp { secs, nanos: 0 }
}

/// A deterministic mix of changes: creates, unlinks, renames, xattrs, chunks, purges, which put
/// and delete keys of every kind all over the key space.
struct Workload {
    rng: u64,
    next: u64,
    dirs: Vec<InodeId>,
}

impl Workload {
    fn new(seed: u64) -> Workload {
        Workload {
            rng: seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1,
            next: 0,
            dirs: vec![InodeId::ROOT],
        }
    }

    fn rand(&mut self, n: u64) -> u64 {
        self.rng ^= self.rng << 13;
        self.rng ^= self.rng >> 7;
        self.rng ^= self.rng << 17;
        self.rng % n.max(1)
    }

    fn op(&mut self, store: &MetaStore) -> MetaOp {
        let i = self.next;
        self.next += 1;
        let dirs = self.dirs.len() as u64;
        let (a, b) = (self.rand(dirs) as usize, self.rand(dirs) as usize);
        let (dir, other) = (self.dirs[a], self.dirs[b]);
        let old = format!("f{}", self.rand(i + 1)).into_bytes();
        let inode = InodeId(1 + self.rand(i / 2 + 2));
        let time = t(i as i64);
        match self.rand(12) {
            0..=3 => MetaOp::Mknod {
                parent: dir,
                name: format!("f{i}").into_bytes(),
                kind: elkfs_proto::types::FileKind::File,
                mode: 0o644,
                umask: 0o022,
                uid: 1,
                gid: 1,
                rdev: 0,
                time,
            },
            4 => MetaOp::Mkdir {
                parent: dir,
                name: format!("d{i}").into_bytes(),
                mode: 0o755,
                umask: 0o022,
                uid: 1,
                gid: 1,
                time,
            },
            5 => MetaOp::Unlink {
                parent: dir,
                name: old,
                time,
            },
            6 => MetaOp::Rename {
                parent: dir,
                name: old,
                new_parent: other,
                new_name: format!("f{}", self.rand(i + 1)).into_bytes(),
                flags: 0,
                time,
            },
            7 => MetaOp::SetXattr {
                inode,
                name: format!("user.a{}", self.rand(3)).into_bytes(),
                value: vec![i as u8; self.rand(40) as usize],
                flags: 0,
                time,
            },
            8 => MetaOp::RemoveXattr {
                inode,
                name: format!("user.a{}", self.rand(3)).into_bytes(),
                time,
            },
            9 => MetaOp::SetAttr {
                inode,
                changes: SetAttr {
                    mode: Some(0o600 + self.rand(0o100) as u32),
                    ..Default::default()
                },
                time,
            },
            10 => MetaOp::CreateChunk {
                inode,
                index: self.rand(4) as u32,
                chunk: ChunkId(10_000 + i),
                version: ChunkVersion(1),
            },
            _ => match store.unlinked_inodes().unwrap().first() {
                Some(inode) => MetaOp::Purge { inode: *inode },
                None => MetaOp::ReserveChunkIds { up_to: 20_000 + i },
            },
        }
    }

    /// Commits one change (a refused one changes nothing and is not logged).
    fn step(&mut self, store: &MetaStore) {
        let op = self.op(store);
        match store.commit(&op) {
            Ok((_, outcome)) => {
                if let (MetaOp::Mkdir { .. }, Some(attr)) = (&op, outcome.attr) {
                    self.dirs.push(attr.inode);
                }
            }
            Err(ExecError::Refused(_)) => {}
            Err(ExecError::Store(e)) => panic!("store error: {e}"),
        }
    }

    fn run(&mut self, store: &MetaStore, n: usize) {
        for _ in 0..n {
            self.step(store);
        }
    }
}

/// A new filesystem in `dir` with `n` changes made.
fn filesystem(dir: &Path, seed: u64, n: usize) -> (MetaStore, Workload) {
    let (store, _) = open(dir);
    store
        .commit(&MetaOp::Format {
            time: t(1),
            goal: 2,
            trash_time: 86400,
        })
        .unwrap();
    let mut work = Workload::new(seed);
    work.run(&store, n);
    (store, work)
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), target).unwrap();
        }
    }
}

/// A data directory made of the given changelog and sled directories and the images of `images`.
fn assemble(to: &Path, changelog: &Path, sled: Option<&Path>, images: &Path) {
    copy_dir(changelog, &to.join(CHANGELOG_DIR));
    if let Some(sled) = sled {
        copy_dir(sled, &to.join(SLED_DIR));
    }
    for (_, path) in image::list(images).unwrap() {
        std::fs::copy(&path, to.join(path.file_name().unwrap())).unwrap();
    }
}

fn break_sled(dir: &Path) {
    std::fs::write(
        dir.join(SLED_DIR).join("conf"),
        b"not a sled configuration file",
    )
    .unwrap();
}

fn content(store: &MetaStore) -> Rows {
    store.all_pairs()
}

#[test]
fn a_torn_changelog_tail_cut_at_every_byte_loses_only_that_record() {
    let work_dir = tempfile::tempdir().unwrap();
    let dir = work_dir.path().join("live");
    let (store, _work) = filesystem(&dir, 1, 40);
    store.flush().unwrap();
    let before = content(&store);
    let version_before = store.version().0;
    let log = dir.join(CHANGELOG_DIR);
    let sizes_before: Vec<(PathBuf, u64)> = changelog::list_files(&log)
        .unwrap()
        .into_iter()
        .map(|(_, p)| {
            let len = std::fs::metadata(&p).unwrap().len();
            (p, len)
        })
        .collect();
    drop(store);
    let sled_behind = work_dir.path().join("sled-behind");
    copy_dir(&dir.join(SLED_DIR), &sled_behind);

    let (store, _) = open(&dir);
    store
        .commit(&MetaOp::Mkdir {
            parent: InodeId::ROOT,
            name: b"the-last-record".to_vec(),
            mode: 0o755,
            umask: 0,
            uid: 7,
            gid: 7,
            time: t(99),
        })
        .unwrap();
    let after = content(&store);
    store.flush().unwrap();
    drop(store);
    // The record may have started a new file (rotation): then it is torn down to nothing.
    let last_file = changelog::list_files(&log).unwrap().pop().unwrap().1;
    let len_before = sizes_before
        .iter()
        .find(|(p, _)| *p == last_file)
        .map_or(0, |(_, len)| *len);
    let full = std::fs::read(&last_file).unwrap();
    assert!(full.len() as u64 > len_before);
    let images = work_dir.path().join("no-images");
    std::fs::create_dir_all(&images).unwrap();

    for cut in len_before..=full.len() as u64 {
        let whole = cut == full.len() as u64;
        for sled_ahead in [false, true] {
            let case = tempfile::tempdir().unwrap();
            let sled = if sled_ahead {
                dir.join(SLED_DIR)
            } else {
                sled_behind.clone()
            };
            assemble(case.path(), &log, Some(&sled), &images);
            let torn = case
                .path()
                .join(CHANGELOG_DIR)
                .join(last_file.file_name().unwrap());
            std::fs::write(&torn, &full[..cut as usize]).unwrap();
            let (store, report) = open(case.path());
            let what = format!("cut at {cut}, sled ahead: {sled_ahead}: {report}");
            if whole {
                assert_eq!(content(&store), after, "{what}");
                assert!(!report.rebuilt, "{what}");
            } else {
                assert_eq!(store.version().0, version_before, "{what}");
                assert_eq!(content(&store), before, "{what}");
                // sled holding a record the log lost is rebuilt from the log (from version 1:
                // no image, no file deleted).
                assert_eq!(report.rebuilt, sled_ahead, "{what}");
                assert_eq!(
                    std::fs::metadata(&torn).unwrap().len(),
                    len_before,
                    "{what}"
                );
            }
            // The log goes on from where it was cut.
            let (v, _) = store
                .commit(&MetaOp::ReserveChunkIds { up_to: 1 << 40 })
                .unwrap();
            assert_eq!(v.0, version_before + if whole { 2 } else { 1 }, "{what}");
            drop(store);
            let (store, report) = open(case.path());
            assert!(
                !report.rebuilt && report.replay_failures == 0,
                "{what} / reopened: {report}"
            );
            assert_eq!(store.chunk_ids_reserved().unwrap(), 1 << 40);
        }
    }
}

#[test]
fn a_sled_database_cut_or_damaged_anywhere_is_brought_back_to_the_full_state() {
    let work_dir = tempfile::tempdir().unwrap();
    let dir = work_dir.path().join("live");
    let (store, _) = filesystem(&dir, 2, 400);
    let expected = content(&store);
    let version = store.version().0;
    store.flush().unwrap();
    drop(store);
    let db = dir.join(SLED_DIR).join("db");
    let len = std::fs::metadata(&db).unwrap().len();
    let images = work_dir.path().join("no-images");
    std::fs::create_dir_all(&images).unwrap();

    let check = |what: String, damage: &dyn Fn(&Path)| {
        let case = tempfile::tempdir().unwrap();
        assemble(
            case.path(),
            &dir.join(CHANGELOG_DIR),
            Some(&dir.join(SLED_DIR)),
            &images,
        );
        damage(case.path());
        let (store, report) = open(case.path());
        assert_eq!(store.version().0, version, "{what}: {report}");
        assert_eq!(content(&store), expected, "{what}: {report}");
        if let Some(aside) = &report.moved_aside {
            assert!(
                aside.join("conf").exists(),
                "{what}: the old database is kept"
            );
        }
        report
    };
    // An interrupted flush leaves sled's log cut somewhere, or a block half written.
    for i in 0..=16u64 {
        let at = len * i / 16;
        check(format!("db cut at {at}"), &|d| {
            let f = std::fs::OpenOptions::new()
                .write(true)
                .open(d.join(SLED_DIR).join("db"))
                .unwrap();
            f.set_len(at).unwrap();
        });
        check(format!("db damaged at {at}"), &|d| {
            let path = d.join(SLED_DIR).join("db");
            let mut bytes = std::fs::read(&path).unwrap();
            let at = (at as usize).min(bytes.len() - 1);
            for b in &mut bytes[at..(at + 64).min(len as usize)] {
                *b ^= 0x5A;
            }
            std::fs::write(&path, bytes).unwrap();
        });
    }
    let report = check("conf damaged".into(), &|d| break_sled(d));
    assert!(report.rebuilt && report.reason.unwrap().contains("sled does not open"));
    assert!(report.moved_aside.is_some());
    let report = check("sled panics on open".into(), &|d| {
        std::fs::write(d.join(SLED_DIR).join(TEST_PANIC_MARKER), b"").unwrap();
    });
    assert!(report.rebuilt && report.reason.unwrap().contains("panicked"));
    let report = check("sled directory gone".into(), &|d| {
        std::fs::remove_dir_all(d.join(SLED_DIR)).unwrap();
    });
    assert!(!report.rebuilt && report.replayed == version);
}

#[test]
fn a_sled_copied_while_it_flushes_under_load_is_brought_back_to_the_log() {
    let work_dir = tempfile::tempdir().unwrap();
    let dir = work_dir.path().join("live");
    let (store, mut work) = filesystem(&dir, 3, 200);
    let store = Arc::new(store);
    let stop = Arc::new(AtomicBool::new(false));
    let writer = {
        let (store, stop) = (store.clone(), stop.clone());
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                work.step(&store);
                if work.next.is_multiple_of(50) {
                    store.flush().unwrap();
                }
            }
        })
    };
    let images = work_dir.path().join("no-images");
    std::fs::create_dir_all(&images).unwrap();
    for round in 0..8 {
        // sled's files as a crash would leave them mid-flush; then the log, which is ahead.
        let case = tempfile::tempdir().unwrap();
        copy_dir(&dir.join(SLED_DIR), &case.path().join("sled"));
        store.sync().unwrap();
        copy_dir(&dir.join(CHANGELOG_DIR), &case.path().join("log"));
        let crashed = case.path().join("crashed");
        assemble(
            &crashed,
            &case.path().join("log"),
            Some(&case.path().join("sled")),
            &images,
        );
        let (recovered, report) = open(&crashed);
        let from_log = case.path().join("from-log");
        assemble(&from_log, &case.path().join("log"), None, &images);
        let (reference, _) = open(&from_log);
        assert_eq!(
            recovered.version(),
            reference.version(),
            "round {round}: {report}"
        );
        assert_eq!(
            content(&recovered),
            content(&reference),
            "round {round}: {report}"
        );
    }
    stop.store(true, Ordering::Relaxed);
    writer.join().unwrap();
}

/// Changelog, sled and images at three moments, for the "behind", "ahead" and "gap" cases.
struct History {
    _tmp: tempfile::TempDir,
    live: PathBuf,
    images: Vec<u64>,
    sled_old: PathBuf,
    version_old: u64,
    log_mid: PathBuf,
    content_mid: Rows,
    content_end: Rows,
}

fn history() -> History {
    let tmp = tempfile::tempdir().unwrap();
    let live = tmp.path().join("live");
    let (store, mut work) = filesystem(&live, 4, 300);
    let first = store.write_image().unwrap();
    work.run(&store, 300);
    let second = store.write_image().unwrap();
    assert!(
        second.removed_changelogs > 0,
        "the log before the first image went"
    );
    let log_first = changelog::list_files(&live.join(CHANGELOG_DIR)).unwrap()[0].0;
    assert!(log_first > 1 && log_first <= first.version + 1);
    work.run(&store, 100);
    store.flush().unwrap();
    let sled_old = tmp.path().join("sled-old");
    copy_dir(&live.join(SLED_DIR), &sled_old);
    let version_old = store.version().0;
    work.run(&store, 200);
    store.sync().unwrap();
    let log_mid = tmp.path().join("log-mid");
    copy_dir(&live.join(CHANGELOG_DIR), &log_mid);
    let content_mid = content(&store);
    work.run(&store, 200);
    let content_end = content(&store);
    store.flush().unwrap();
    drop(store);
    History {
        _tmp: tmp,
        live,
        images: vec![second.version, first.version],
        sled_old,
        version_old,
        log_mid,
        content_mid,
        content_end,
    }
}

#[test]
fn a_stale_sled_is_caught_up_and_one_ahead_of_the_log_is_rebuilt_from_image_and_log() {
    let h = history();
    let log = h.live.join(CHANGELOG_DIR);

    let behind = tempfile::tempdir().unwrap();
    assemble(behind.path(), &log, Some(&h.sled_old), &h.live);
    let (store, report) = open(behind.path());
    assert!(!report.rebuilt && report.replayed > 0, "{report}");
    assert_eq!(content(&store), h.content_end);

    let ahead = tempfile::tempdir().unwrap();
    assemble(
        ahead.path(),
        &h.log_mid,
        Some(&h.live.join(SLED_DIR)),
        &h.live,
    );
    let (store, report) = open(ahead.path());
    assert!(report.rebuilt, "{report}");
    assert_eq!(report.from_image, Some(h.images[0]), "{report}");
    assert!(
        report.reason.as_ref().unwrap().contains("power cut"),
        "{report}"
    );
    assert_eq!(content(&store), h.content_mid, "the log is the truth");
    drop(store);
    let (_, report) = open(ahead.path());
    assert!(
        !report.rebuilt,
        "rebuilt once, then it opens as usual: {report}"
    );

    let lost = tempfile::tempdir().unwrap();
    assemble(lost.path(), &log, None, &h.live);
    let (store, report) = open(lost.path());
    assert!(report.rebuilt, "sled gone and the log trimmed: {report}");
    assert_eq!(report.from_image, Some(h.images[0]));
    assert!(
        report.moved_aside.is_none(),
        "an empty new database is not kept"
    );
    assert_eq!(content(&store), h.content_end);
}

#[test]
fn a_damaged_image_falls_back_to_the_older_one_and_with_none_left_the_start_is_refused() {
    let h = history();
    let log = h.live.join(CHANGELOG_DIR);
    let newest = h.live.join(image::file_name(h.images[0]));
    let older = h.live.join(image::file_name(h.images[1]));
    let flip = |path: &Path| {
        let mut bytes = std::fs::read(path).unwrap();
        let mid = bytes.len() / 2;
        bytes[mid] ^= 1;
        std::fs::write(path, bytes).unwrap();
    };

    let case = tempfile::tempdir().unwrap();
    assemble(case.path(), &log, Some(&h.live.join(SLED_DIR)), &h.live);
    break_sled(case.path());
    flip(&case.path().join(newest.file_name().unwrap()));
    let (store, report) = open(case.path());
    assert_eq!(report.from_image, Some(h.images[1]), "{report}");
    assert_eq!(content(&store), h.content_end);

    let case = tempfile::tempdir().unwrap();
    assemble(case.path(), &log, Some(&h.live.join(SLED_DIR)), &h.live);
    break_sled(case.path());
    flip(&case.path().join(newest.file_name().unwrap()));
    flip(&case.path().join(older.file_name().unwrap()));
    let err = MetaStore::open(case.path(), &config()).err().unwrap();
    let text = err.to_string();
    assert!(matches!(err, StoreError::Unrecoverable { .. }), "{text}");
    let older_name = older.file_name().unwrap().to_string_lossy().into_owned();
    assert!(text.contains(&older_name), "{text}");
    assert!(text.contains("changelog starts at version"), "{text}");
    assert!(text.contains("metalogger"), "{text}");
    let names: Vec<String> = std::fs::read_dir(case.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert!(
        names
            .iter()
            .all(|n| !n.contains("damaged") && !n.contains("rebuild")),
        "nothing moved or left behind: {names:?}"
    );

    // A changelog file missing after the newest image: a gap nothing can bridge.
    let case = tempfile::tempdir().unwrap();
    assemble(case.path(), &log, Some(&h.sled_old), &h.live);
    let files = changelog::list_files(&case.path().join(CHANGELOG_DIR)).unwrap();
    let (gone_first, gone) = files[..files.len() - 1]
        .iter()
        .find(|(first, _)| *first > h.version_old + 1)
        .cloned()
        .unwrap();
    std::fs::remove_file(&gone).unwrap();
    let text = MetaStore::open(case.path(), &config())
        .err()
        .unwrap()
        .to_string();
    assert!(text.contains(&format!("records {gone_first}..=")), "{text}");
    assert!(text.contains("metalogger"), "{text}");

    // A damaged record in a file that is not the last: the changes after it are lost.
    let case = tempfile::tempdir().unwrap();
    assemble(case.path(), &log, Some(&h.sled_old), &h.live);
    let damaged = case
        .path()
        .join(CHANGELOG_DIR)
        .join(gone.file_name().unwrap());
    let mut bytes = std::fs::read(&damaged).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x10;
    std::fs::write(&damaged, bytes).unwrap();
    let err = MetaStore::open(case.path(), &config()).err().unwrap();
    let text = err.to_string();
    assert!(matches!(err, StoreError::Unrecoverable { .. }), "{text}");
    assert!(
        text.contains("not the last") && text.contains("metalogger"),
        "{text}"
    );
}

#[test]
fn a_power_cut_loses_nothing_fsynced() {
    for seed in 0..4u64 {
        let work_dir = tempfile::tempdir().unwrap();
        let dir = work_dir.path().join("live");
        let (store, mut work) = filesystem(&dir, 10 + seed, 50);
        store.write_image().unwrap();
        // What the disk holds at each moment: the changelog as of the last fsync, the sled
        // files as of some flush (sled fsyncs on its own schedule, so before or after).
        let mut synced: Option<(PathBuf, Rows, u64)> = None;
        let mut sleds: Vec<PathBuf> = Vec::new();
        for step in 0..300 {
            work.step(&store);
            let dice = work.rand(40);
            if dice == 0 {
                store.sync().unwrap();
                let copy = work_dir.path().join(format!("log-{step}"));
                copy_dir(&dir.join(CHANGELOG_DIR), &copy);
                synced = Some((copy, content(&store), store.version().0));
            } else if dice == 1 {
                store.flush().unwrap();
                let copy = work_dir.path().join(format!("sled-{step}"));
                copy_dir(&dir.join(SLED_DIR), &copy);
                sleds.push(copy);
            }
        }
        let (log, expected, version) = synced.expect("at least one fsync");
        for sled in sleds.iter().chain([&dir.join(SLED_DIR)]) {
            let case = tempfile::tempdir().unwrap();
            assemble(case.path(), &log, Some(sled), &dir);
            // Part of an unsynced record may have reached the disk.
            let last = changelog::list_files(&case.path().join(CHANGELOG_DIR))
                .unwrap()
                .pop()
                .unwrap()
                .1;
            let tail = changelog::encode_record(version + 1, &MetaOp::Purge { inode: InodeId(9) })
                .unwrap();
            let mut bytes = std::fs::read(&last).unwrap();
            bytes.extend_from_slice(&tail[..(seed as usize * 3 + 1).min(tail.len() - 1)]);
            std::fs::write(&last, bytes).unwrap();
            let (recovered, report) = open(case.path());
            let what = format!("seed {seed}, sled {}: {report}", sled.display());
            assert_eq!(recovered.version().0, version, "{what}");
            assert_eq!(content(&recovered), expected, "{what}");
        }
    }
}

/// The state `base` (of version `from`) plus records `from + 1..=version` of the changelog in
/// `log`, built in a new database.
fn replayed_state(base: &Rows, log: &Path, from: u64, version: u64) -> Rows {
    let tmp = tempfile::tempdir().unwrap();
    let kv = SledStore::open(&tmp.path().join("db"), 8 << 20).unwrap();
    kv.apply(
        base.iter()
            .map(|(k, v)| (k.clone(), Some(v.clone())))
            .collect(),
    )
    .unwrap();
    let mut next = from + 1;
    Changelog::open(log, from + 1, u64::MAX, &mut |record| {
        if record.version > from && record.version <= version {
            assert_eq!(record.version, next, "the log copy has every record");
            next += 1;
            let mut txn = Txn::new(&kv);
            if crate::namespace::execute(&mut txn, &record.op).is_err() {
                txn = Txn::new(&kv);
            }
            let mut writes = txn.into_writes();
            writes.push((
                keys::APPLIED.to_vec(),
                Some(crate::store::encode_u64(record.version)),
            ));
            kv.apply(writes)?;
        }
        Ok(())
    })
    .unwrap();
    assert_eq!(next, version + 1, "replayed up to {version}");
    kv.scan(&[], None, usize::MAX).unwrap()
}

#[test]
fn an_image_taken_while_commits_go_on_is_exactly_the_state_of_its_version() {
    let work_dir = tempfile::tempdir().unwrap();
    let dir = work_dir.path().join("live");
    let (store, mut work) = filesystem(&dir, 5, 1500);
    drop(store);
    // One key per page: the dump takes long enough for many commits to land in it.
    let config = StoreConfig {
        image_page_keys: 1,
        ..config()
    };
    let (store, _) = MetaStore::open(&dir, &config).unwrap();
    let store = Arc::new(store);
    let stop = Arc::new(AtomicBool::new(false));
    let writer = {
        let (store, stop) = (store.clone(), stop.clone());
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                work.step(&store);
            }
        })
    };
    let mut images = Vec::new();
    let mut saved = 0;
    for round in 0..3 {
        std::thread::sleep(std::time::Duration::from_millis(10));
        let report = store.write_image().unwrap();
        saved += report.saved_values;
        let mut rows = Vec::new();
        image::read(&report.path, &mut |k, v| {
            rows.push((k, v));
            Ok(())
        })
        .unwrap();
        assert_eq!(rows.len() as u64, report.keys);
        // The log from the previous image on (older files may be gone after this one).
        let log = work_dir.path().join(format!("log-{round}"));
        copy_dir(&dir.join(CHANGELOG_DIR), &log);
        images.push((report.version, rows, log));
    }
    stop.store(true, Ordering::Relaxed);
    writer.join().unwrap();
    assert!(saved > 0, "commits changed keys ahead of the image writer");

    // Each image is the one before it (or nothing) plus the records in between.
    let mut base: (u64, Rows) = (0, Vec::new());
    for (version, rows, log) in &images {
        let expected = replayed_state(&base.1, log, base.0, *version);
        assert_eq!(rows.len(), expected.len(), "image {version}");
        assert!(
            *rows == expected,
            "the image is the state of version {version}"
        );
        base = (*version, rows.clone());
    }

    // And a rebuild from the newest plus the changelog gives the live state, key for key.
    store.sync().unwrap();
    store.flush().unwrap();
    let case = tempfile::tempdir().unwrap();
    assemble(
        case.path(),
        &dir.join(CHANGELOG_DIR),
        Some(&dir.join(SLED_DIR)),
        &dir,
    );
    break_sled(case.path());
    let (rebuilt, report) = open(case.path());
    assert_eq!(report.from_image, Some(images[2].0), "{report}");
    assert!(content(&rebuilt) == content(&store), "{report}");
}

#[test]
fn images_come_when_due_keep_the_two_newest_and_stop_at_shutdown() {
    let dir = tempfile::tempdir().unwrap();
    let config = StoreConfig {
        first_image_after_records: 50,
        image_every_records: 100,
        ..config()
    };
    let (store, _) = MetaStore::open(dir.path(), &config).unwrap();
    assert!(!store.image_due(), "nothing committed");
    let mut work = Workload::new(6);
    store
        .commit(&MetaOp::Format {
            time: t(1),
            goal: 1,
            trash_time: 0,
        })
        .unwrap();
    while store.version().0 < 49 {
        work.step(&store);
    }
    assert!(!store.image_due());
    while store.version().0 < 50 {
        work.step(&store);
    }
    assert!(store.image_due(), "the first image comes early");
    let mut versions = Vec::new();
    for _ in 0..3 {
        versions.push(store.write_image().unwrap().version);
        assert!(!store.image_due());
        while !store.image_due() {
            work.step(&store);
        }
        assert_eq!(store.version().0, versions.last().unwrap() + 100);
    }
    let kept: Vec<u64> = image::list(dir.path())
        .unwrap()
        .iter()
        .map(|i| i.0)
        .collect();
    assert_eq!(kept, vec![versions[2], versions[1]]);
    let first_log = changelog::list_files(&dir.path().join(CHANGELOG_DIR)).unwrap()[0].0;
    assert!(first_log > 1 && first_log <= versions[1] + 1, "{first_log}");
    store.stop_images();
    assert!(!store.image_due());
    assert!(store.write_image().is_err());
    drop(store);
    let (store, report) = MetaStore::open(dir.path(), &config).unwrap();
    assert!(!report.rebuilt);
    assert!(store.version().0 > versions[2]);
}
