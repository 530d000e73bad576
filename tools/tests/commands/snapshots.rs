//! `snapshot`: a 200 MiB tree copied at once; both sides share chunks until one is written, each
//! side then sees only its own writes, and deleting one side frees only what it did not share.

use std::io::{Seek, SeekFrom, Write};
use std::path::Path;
use std::time::{Duration, Instant};

use elkfs_testkit::Cluster;

use crate::support::{MIB, chunk_ids, data, eventually, fails, json, ok, on_disk, write};

fn write_at(path: &Path, offset: u64, bytes: &[u8]) {
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .open(path)
        .unwrap_or_else(|e| panic!("open {}: {e}", path.display()));
    f.seek(SeekFrom::Start(offset)).expect("seek");
    f.write_all(bytes).expect("write");
    f.sync_all().expect("fsync");
}

fn assert_same(path: &Path, expected: &[u8]) {
    let got = std::fs::read(path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
    assert!(
        got == expected,
        "{} differs from what it should hold ({} bytes read, {} expected)",
        path.display(),
        got.len(),
        expected.len()
    );
}

#[test]
fn a_200_mib_snapshot_shares_chunks_until_either_side_is_written() {
    let cluster = Cluster::builder().chunkservers(3).start();
    let mnt = cluster.mount_path(0);
    let mut big = data(100 * MIB, 40);
    let mut other = data(80 * MIB, 41);
    let small = data(20 * MIB, 42);
    write(&mnt.join("src/big"), &big);
    write(&mnt.join("src/sub/other"), &other);
    write(&mnt.join("src/sub/small"), &small);
    write(&mnt.join("src/sub/deeper/tiny"), b"tiny");

    let started = Instant::now();
    assert_eq!(ok(mnt, &["snapshot", "src", "snap"]), "");
    let took = started.elapsed();
    assert!(
        took < Duration::from_secs(5),
        "a 200 MiB snapshot took {took:?}"
    );

    for (name, bytes) in [
        ("big", &big[..]),
        ("sub/other", &other[..]),
        ("sub/small", &small[..]),
        ("sub/deeper/tiny", b"tiny"),
    ] {
        assert_same(&mnt.join("src").join(name), bytes);
        assert_same(&mnt.join("snap").join(name), bytes);
        assert_eq!(
            chunk_ids(mnt, &format!("src/{name}")),
            chunk_ids(mnt, &format!("snap/{name}")),
            "{name}: both sides share every chunk"
        );
    }
    let doc = json(mnt, &["fileinfo", "snap/big"]);
    assert_eq!(doc[0]["chunks"][0]["refs"], 2);
    let shared_big = chunk_ids(mnt, "src/big");
    let shared_other = chunk_ids(mnt, "src/sub/other");

    // A write to each side: chunk 0 of src/big, chunk 1 of snap/sub/other.
    let mine = b"written to the source";
    let theirs = b"written to the snapshot";
    write_at(&mnt.join("src/big"), 10 * MIB as u64, mine);
    write_at(&mnt.join("snap/sub/other"), 64 * MIB as u64, theirs);
    let snap_big = big.clone();
    big[10 * MIB..10 * MIB + mine.len()].copy_from_slice(mine);
    let src_other = other.clone();
    other[64 * MIB..64 * MIB + theirs.len()].copy_from_slice(theirs);
    assert_same(&mnt.join("src/big"), &big);
    assert_same(&mnt.join("snap/big"), &snap_big);
    assert_same(&mnt.join("src/sub/other"), &src_other);
    assert_same(&mnt.join("snap/sub/other"), &other);

    let (src_big, snap_big_ids) = (chunk_ids(mnt, "src/big"), chunk_ids(mnt, "snap/big"));
    assert_ne!(src_big[0], snap_big_ids[0], "the written chunk was copied");
    assert_eq!(
        src_big[1], snap_big_ids[1],
        "the other chunk is still shared"
    );
    assert_eq!(
        snap_big_ids, shared_big,
        "the unwritten side keeps the old chunks"
    );
    let (src_other_ids, snap_other) = (
        chunk_ids(mnt, "src/sub/other"),
        chunk_ids(mnt, "snap/sub/other"),
    );
    assert_eq!(src_other_ids, shared_other);
    assert_eq!(snap_other[0], shared_other[0]);
    assert_ne!(snap_other[1], shared_other[1]);

    // Deleting the snapshot frees its own chunk only.
    ok(mnt, &["settrashtime", "-r", "0", "snap"]);
    std::fs::remove_dir_all(mnt.join("snap")).expect("rm -r snap");
    eventually(
        Duration::from_secs(10),
        "the snapshot's own chunks are deleted",
        || !on_disk(&cluster, snap_other[1]) && !on_disk(&cluster, snap_big_ids[0]),
    );
    for id in src_big.iter().chain(&src_other_ids) {
        assert!(
            on_disk(&cluster, *id),
            "chunk {id} of the source was deleted"
        );
    }
    assert_same(&mnt.join("src/big"), &big);
    assert_same(&mnt.join("src/sub/other"), &src_other);
    assert_same(&mnt.join("src/sub/small"), &small);
}

#[test]
fn snapshots_into_themselves_or_onto_taken_names_are_refused() {
    let cluster = Cluster::builder().chunkservers(1).start();
    let mnt = cluster.mount_path(0);
    write(&mnt.join("d/f"), b"f");
    write(&mnt.join("g"), b"g");
    let (_, stderr) = fails(mnt, &["snapshot", "d", "d/inside"]);
    assert_eq!(
        stderr,
        "elkfs: d: cannot snapshot a directory into itself\n"
    );
    // An existing directory receives the snapshot under the source's name, as cp does.
    std::fs::create_dir(mnt.join("into")).expect("mkdir into");
    assert_eq!(ok(mnt, &["snapshot", "d/f", "g", "into"]), "");
    assert_eq!(std::fs::read(mnt.join("into/f")).expect("into/f"), b"f");
    assert_eq!(std::fs::read(mnt.join("into/g")).expect("into/g"), b"g");
    let (_, stderr) = fails(mnt, &["snapshot", "g", "into/f"]);
    assert_eq!(stderr, "elkfs: g: file exists\n");
    let (_, stderr) = fails(mnt, &["snapshot", "d/f", "g", "nothere"]);
    assert_eq!(
        stderr,
        "elkfs: nothere: several sources can only be snapshot into an existing directory\n"
    );
    let doc = json(mnt, &["snapshot", "d", "copy"]);
    assert_eq!(doc[0]["path"], "d");
    assert_eq!(doc[0]["destination"], "copy");
    assert_eq!(doc[0]["inodes"], 2);
}

/// Snapshots `source` as `name` in `parent` through the client library, as `elkfs snapshot`
/// does but without starting a process: a process started while the test holds a file open
/// closes its copy of the descriptor when it execs, which the mount sees as a `close`.
fn snapshot_in_process(cluster: &Cluster, source: &Path, parent: &Path, name: &str) {
    use std::os::unix::fs::MetadataExt;

    use elkfs_client::{Client, ClientConfig};
    use elkfs_proto::InodeId;
    use elkfs_proto::master::{MasterReply, MasterRequest};
    use elkfs_proto::types::Caller;

    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a tokio runtime");
    let addr = cluster.master_addr().to_string();
    let client = runtime
        .block_on(Client::connect(
            &addr,
            "/",
            "snapshot-test",
            ClientConfig::default(),
        ))
        .unwrap_or_else(|e| panic!("connecting the client library to {addr}: {e}"));
    let request = MasterRequest::Snapshot {
        source: InodeId(std::fs::metadata(source).unwrap().ino()),
        parent: InodeId(std::fs::metadata(parent).unwrap().ino()),
        name: name.as_bytes().to_vec(),
        caller: Caller { uid: 0, gid: 0 },
    };
    match runtime.block_on(client.master.request(&request)) {
        Ok(MasterReply::TreeChanged { changed: 1, .. }) => {}
        other => panic!("Snapshot answered {other:?}"),
    }
}

#[test]
fn a_snapshot_of_a_file_being_rewritten_keeps_what_the_file_held_when_it_was_taken() {
    // A program rewrites the start of a file every 10 ms, so its mount keeps the write lease
    // between the writes. A snapshot taken meanwhile must not see the writes made after it
    // returned: they go to a copy of the chunk, not to the chunk the snapshot shares.
    use std::os::unix::fs::FileExt;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};

    let cluster = Cluster::builder().chunkservers(2).start();
    let mnt = cluster.mount_path(0);
    write(&mnt.join("live"), &[0u8; 65536]);
    let started = Arc::new(AtomicU32::new(0));
    let written = Arc::new(AtomicU32::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let writer = {
        let (started, written, stop) = (started.clone(), written.clone(), stop.clone());
        let path = mnt.join("live");
        std::thread::spawn(move || {
            let file = std::fs::OpenOptions::new().write(true).open(path).unwrap();
            let mut k = 0u32;
            while !stop.load(Ordering::SeqCst) {
                k += 1;
                started.store(k, Ordering::SeqCst);
                let block: Vec<u8> = k.to_le_bytes().repeat(16384);
                file.write_all_at(&block, 0).unwrap();
                written.store(k, Ordering::SeqCst);
                std::thread::sleep(Duration::from_millis(10));
            }
        })
    };
    std::thread::sleep(Duration::from_millis(300));
    let written_before = written.load(Ordering::SeqCst);
    snapshot_in_process(&cluster, &mnt.join("live"), mnt, "snap");
    let started_before_return = started.load(Ordering::SeqCst);
    std::thread::sleep(Duration::from_millis(600));
    stop.store(true, Ordering::SeqCst);
    writer.join().unwrap();

    let snap = std::fs::read(mnt.join("snap")).unwrap();
    assert_eq!(snap.len(), 65536);
    let seen = u32::from_le_bytes(snap[..4].try_into().unwrap());
    assert!(
        snap.chunks(4).all(|w| w == seen.to_le_bytes()),
        "the snapshot holds a mix of writes"
    );
    // Writes that returned before the snapshot may still have been waiting in the mount's
    // buffer for a new lease, which the snapshot's turn comes before: a few writes of slack.
    assert!(
        (written_before.saturating_sub(3)..=started_before_return).contains(&seen),
        "the snapshot holds write {seen}; writes {written_before} to {started_before_return} \
         were under way while it was taken"
    );
    let live = std::fs::read(mnt.join("live")).unwrap();
    assert_eq!(
        u32::from_le_bytes(live[..4].try_into().unwrap()),
        written.load(Ordering::SeqCst)
    );
}
