//! `trash list|restore|purge`: a deleted tree waits in the trash, is listed with where it was,
//! and comes back identical; trash time 0 frees space at once; expired files are purged.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use elkfs_testkit::Cluster;

use crate::support::{
    MIB, chunk_ids, data, elkfs, eventually, expect_ok, fails, json, ok, on_disk, write,
};

/// Every file under `dir` with its contents, by path relative to `dir`.
fn contents(dir: &Path) -> BTreeMap<PathBuf, Vec<u8>> {
    let mut out = BTreeMap::new();
    let mut pending = vec![dir.to_path_buf()];
    while let Some(d) = pending.pop() {
        for entry in std::fs::read_dir(&d).expect("read_dir").flatten() {
            let path = entry.path();
            if path.is_dir() {
                pending.push(path);
            } else {
                let rel = path.strip_prefix(dir).expect("below dir").to_path_buf();
                out.insert(rel, std::fs::read(&path).expect("read"));
            }
        }
    }
    out
}

#[test]
fn a_deleted_tree_is_listed_and_restored_identical() {
    let cluster = Cluster::builder().chunkservers(2).start();
    let mnt = cluster.mount_path(0);
    write(&mnt.join("t/x/f1"), &data(3 * MIB + 7, 10));
    write(&mnt.join("t/x/y/f2"), &data(70 * MIB, 11));
    write(&mnt.join("t/f3"), b"three\n");
    write(&mnt.join("keep"), b"not deleted");
    let before = contents(&mnt.join("t"));
    std::fs::remove_dir_all(mnt.join("t")).expect("rm -r t");

    // The list: a header, then one line per file with where it was.
    let listed = ok(mnt, &["trash", "list", "t"]);
    let lines: Vec<&str> = listed.lines().collect();
    assert_eq!(lines.len(), 4, "{listed}");
    let header: Vec<&str> = lines[0].split_whitespace().collect();
    assert_eq!(header, ["inode", "deleted", "expires", "length", "path"]);
    let mut paths: Vec<(String, u64)> = lines[1..]
        .iter()
        .map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            (f[6].to_string(), f[5].parse().expect("a length"))
        })
        .collect();
    paths.sort();
    assert_eq!(
        paths,
        [
            ("t/f3".to_string(), 6),
            ("t/x/f1".to_string(), 3 * MIB as u64 + 7),
            ("t/x/y/f2".to_string(), 70 * MIB as u64),
        ]
    );

    let doc = json(mnt, &["trash", "list", "t"]);
    let entries = doc[0]["entries"].as_array().expect("entries");
    assert_eq!(entries.len(), 3);
    let mut originals: Vec<&str> = entries
        .iter()
        .map(|e| e["original_path"].as_str().expect("original_path"))
        .collect();
    originals.sort();
    assert_eq!(originals, ["/t/f3", "/t/x/f1", "/t/x/y/f2"]);
    for e in entries {
        let (deleted, expires) = (e["deleted"].as_i64(), e["expires"].as_i64());
        assert_eq!(expires.zip(deleted).map(|(x, d)| x - d), Some(86_400));
    }
    // A path outside the deleted tree lists nothing.
    assert_eq!(ok(mnt, &["trash", "list", "keep"]), "");

    assert_eq!(ok(mnt, &["trash", "restore", "t"]), "t: 3 files restored\n");
    assert_eq!(contents(&mnt.join("t")), before, "restored contents differ");
    assert_eq!(ok(mnt, &["trash", "list", "t"]), "");
    let (_, stderr) = fails(mnt, &["trash", "restore", "t"]);
    assert_eq!(stderr, "elkfs: t: nothing in the trash was there\n");

    // By inode number, with the master named.
    std::fs::remove_file(mnt.join("t/f3")).expect("rm t/f3");
    let doc = json(mnt, &["trash", "list", "t"]);
    let inode = doc[0]["entries"][0]["inode"].as_u64().expect("inode");
    let master = cluster.master_addr().to_string();
    let inode_arg = inode.to_string();
    let out = elkfs(
        Path::new("/"),
        &[
            "trash", "restore", "--master", &master, "--inode", &inode_arg,
        ],
    );
    assert_eq!(expect_ok(&[], &out), "/t/f3: restored\n");
    assert_eq!(
        std::fs::read(mnt.join("t/f3")).expect("read t/f3"),
        b"three\n"
    );
}

#[test]
fn with_trash_time_0_space_is_freed_at_once_and_purge_frees_the_rest() {
    let cluster = Cluster::builder().chunkservers(2).start();
    let mnt = cluster.mount_path(0);
    std::fs::create_dir(mnt.join("now")).expect("mkdir now");
    ok(mnt, &["settrashtime", "0", "now"]);
    write(&mnt.join("now/f"), &data(2 * MIB, 20));
    let ids = chunk_ids(mnt, "now/f");
    assert!(on_disk(&cluster, ids[0]));
    std::fs::remove_file(mnt.join("now/f")).expect("rm now/f");
    assert_eq!(ok(mnt, &["trash", "list", "now"]), "");
    eventually(Duration::from_secs(10), "the chunk is deleted", || {
        !on_disk(&cluster, ids[0])
    });

    // With the default trash time the chunk stays until purged.
    write(&mnt.join("later/f"), &data(2 * MIB, 21));
    let ids = chunk_ids(mnt, "later/f");
    std::fs::remove_file(mnt.join("later/f")).expect("rm later/f");
    std::thread::sleep(Duration::from_secs(2));
    assert!(
        on_disk(&cluster, ids[0]),
        "a trashed file's chunk was deleted"
    );
    assert_eq!(ok(mnt, &["trash", "list", "later"]).lines().count(), 2);
    assert_eq!(
        ok(mnt, &["trash", "purge", "later"]),
        "later: 1 file purged\n"
    );
    assert_eq!(ok(mnt, &["trash", "list", "later"]), "");
    eventually(
        Duration::from_secs(10),
        "the purged chunk is deleted",
        || !on_disk(&cluster, ids[0]),
    );

    // Everything at once, from outside the mount.
    write(&mnt.join("later/g"), b"g");
    write(&mnt.join("h"), b"h");
    std::fs::remove_file(mnt.join("later/g")).expect("rm later/g");
    std::fs::remove_file(mnt.join("h")).expect("rm h");
    let master = cluster.master_addr().to_string();
    let out = elkfs(Path::new("/"), &["trash", "list", "--master", &master]);
    assert_eq!(
        expect_ok(&[], &out).lines().count(),
        3,
        "a header and 2 files"
    );
    let out = elkfs(
        Path::new("/"),
        &["trash", "purge", "--all", "--master", &master],
    );
    assert_eq!(expect_ok(&[], &out), "2 files purged\n");
    assert_eq!(ok(mnt, &["trash", "list", "."]), "");
}

#[test]
fn files_are_purged_when_their_trash_time_is_up() {
    let cluster = Cluster::builder().chunkservers(2).start();
    let mnt = cluster.mount_path(0);
    std::fs::create_dir(mnt.join("short")).expect("mkdir short");
    ok(mnt, &["settrashtime", "2", "short"]);
    write(&mnt.join("short/f"), &data(MIB, 30));
    let ids = chunk_ids(mnt, "short/f");
    std::fs::remove_file(mnt.join("short/f")).expect("rm short/f");
    let doc = json(mnt, &["trash", "list", "short"]);
    assert_eq!(doc[0]["entries"].as_array().map(Vec::len), Some(1));
    eventually(Duration::from_secs(20), "the trash is empty again", || {
        ok(mnt, &["trash", "list", "short"]).is_empty()
    });
    eventually(
        Duration::from_secs(10),
        "the expired file's chunk is deleted",
        || !on_disk(&cluster, ids[0]),
    );
}

/// A file deleted while open waits in the trash after its last close, as any deleted file does;
/// one purged by hand while open goes at its last close; one whose trash time runs out while it
/// is open goes at its last close too.
#[test]
fn closing_a_trashed_file_leaves_it_in_the_trash_until_purged_or_due() {
    use std::io::Read;

    let cluster = Cluster::builder().chunkservers(2).start();
    let mnt = cluster.mount_path(0);
    let contents = data(MIB + 3, 40);
    write(&mnt.join("open/f"), &contents);
    let ids = chunk_ids(mnt, "open/f");
    let held = std::fs::File::open(mnt.join("open/f")).expect("open f");
    std::fs::remove_file(mnt.join("open/f")).expect("rm open/f");
    drop(held);
    // The close reaches the master at once; a purge would follow it within a second.
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(
        ok(mnt, &["trash", "list", "open"]).lines().count(),
        2,
        "the closed file left the trash"
    );
    assert!(on_disk(&cluster, ids[0]), "its chunk was deleted");
    assert_eq!(
        ok(mnt, &["trash", "restore", "open"]),
        "open: 1 file restored\n"
    );
    assert_eq!(std::fs::read(mnt.join("open/f")).expect("read f"), contents);

    // Purged by hand while open: readable until the close, gone after it.
    let mut held = std::fs::File::open(mnt.join("open/f")).expect("open f again");
    std::fs::remove_file(mnt.join("open/f")).expect("rm open/f again");
    assert_eq!(
        ok(mnt, &["trash", "purge", "open"]),
        "open: 1 file purged\n"
    );
    let mut read_back = Vec::new();
    held.read_to_end(&mut read_back)
        .expect("read the purged file");
    assert_eq!(read_back, contents);
    drop(held);
    eventually(Duration::from_secs(10), "the purged file goes", || {
        ok(mnt, &["trash", "list", "open"]).is_empty() && !on_disk(&cluster, ids[0])
    });

    // Its trash time runs out while it is open: it goes at the close.
    std::fs::create_dir(mnt.join("short")).expect("mkdir short");
    ok(mnt, &["settrashtime", "1", "short"]);
    write(&mnt.join("short/g"), &contents);
    let ids = chunk_ids(mnt, "short/g");
    let mut held = std::fs::File::open(mnt.join("short/g")).expect("open g");
    std::fs::remove_file(mnt.join("short/g")).expect("rm short/g");
    std::thread::sleep(Duration::from_secs(4));
    let mut read_back = Vec::new();
    held.read_to_end(&mut read_back)
        .expect("read g after its trash time");
    assert_eq!(read_back, contents);
    drop(held);
    eventually(Duration::from_secs(10), "the expired file goes", || {
        ok(mnt, &["trash", "list", "short"]).is_empty() && !on_disk(&cluster, ids[0])
    });
}
