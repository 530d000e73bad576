//! `getgoal`/`setgoal` and `gettrashtime`/`settrashtime`: MooseFS's output, byte for byte, and
//! the goal really kept.

use std::time::Duration;

use elkfs_testkit::Cluster;

use crate::support::{
    MIB, QUICK_MASTER, cluster_with_master_config, data, elkfs, eventually, fails, json, ok, write,
};

/// `d/` with `a` (6 bytes), `sub/b` (1 MiB) and `empty`: 2 directories, 3 files.
fn make_tree(mnt: &std::path::Path) {
    write(&mnt.join("d/a"), b"hello\n");
    write(&mnt.join("d/sub/b"), &data(MIB, 1));
    write(&mnt.join("d/empty"), b"");
}

#[test]
fn getgoal_and_setgoal_print_what_mfsgetgoal_and_mfssetgoal_print() {
    let (_config, cluster) = cluster_with_master_config(QUICK_MASTER);
    let mnt = cluster.mount_path(0);
    make_tree(mnt);

    assert_eq!(ok(mnt, &["getgoal", "d/a"]), "d/a: 2\n");
    assert_eq!(
        ok(mnt, &["getgoal", "-r", "d"]),
        "d:\n\
         \x20files with goal                2 :          3\n\
         \x20directories with goal          2 :          2\n"
    );
    assert_eq!(ok(mnt, &["setgoal", "3", "d/a"]), "d/a: goal: 3\n");
    assert_eq!(
        ok(mnt, &["setgoal", "-r", "3", "d"]),
        "d:\n\
         \x20inodes with goal changed:                       4\n\
         \x20inodes with goal not changed:                   1\n\
         \x20inodes with permission denied:                  0\n"
    );
    // MooseFS's N- and N+, and the -N / +N spelling.
    assert_eq!(
        ok(mnt, &["setgoal", "-r", "2-", "d"]),
        "d:\n\
         \x20inodes with goal changed:                       5\n\
         \x20inodes with goal not changed:                   0\n\
         \x20inodes with permission denied:                  0\n"
    );
    assert_eq!(ok(mnt, &["setgoal", "+3", "d/a"]), "d/a: goal: 3\n");
    assert_eq!(ok(mnt, &["setgoal", "1+", "d/a"]), "d/a: goal: 3\n");
    assert_eq!(ok(mnt, &["setgoal", "-1", "d/empty"]), "d/empty: goal: 1\n");
    assert_eq!(
        ok(mnt, &["getgoal", "-r", "d"]),
        "d:\n\
         \x20files with goal                1 :          1\n\
         \x20files with goal                2 :          1\n\
         \x20files with goal                3 :          1\n\
         \x20directories with goal          2 :          2\n"
    );
    assert_eq!(
        ok(mnt, &["getgoal", "d/a", "d/sub/b"]),
        "d/a: 3\nd/sub/b: 2\n"
    );

    // The goal is kept: d/a gets a third copy.
    eventually(Duration::from_secs(60), "d/a has 3 copies", || {
        ok(mnt, &["checkfile", "d/a"]) == "d/a:\n chunks with 3 copies:            1\n"
    });
}

#[test]
fn bad_paths_and_goals_fail_with_the_path_and_the_reason() {
    let cluster = Cluster::builder().chunkservers(1).start();
    let mnt = cluster.mount_path(0);
    write(&mnt.join("f"), b"x");
    let (stdout, stderr) = fails(mnt, &["getgoal", "f", "missing", "/proc"]);
    assert_eq!(stdout, "f: 2\n");
    assert_eq!(
        stderr,
        "elkfs: missing: no such file or directory\nelkfs: /proc: not on an ElkFS mount\n"
    );
    for bad in ["0", "10", "x", "3x"] {
        let out = elkfs(mnt, &["setgoal", bad, "f"]);
        assert_eq!(out.status.code(), Some(2), "setgoal {bad} is a usage error");
        assert!(String::from_utf8_lossy(&out.stderr).contains("goal"));
    }
    let doc = json(mnt, &["getgoal", "f", "missing"]);
    assert_eq!(doc[0]["path"], "f");
    assert_eq!(doc[0]["goal"], 2);
    assert_eq!(doc[1]["path"], "missing");
    assert_eq!(doc[1]["error"], "no such file or directory");
    assert_eq!(doc[1]["errno"], libc::ENOENT);
}

#[test]
fn trash_time_commands_print_what_mfsgettrashtime_and_mfssettrashtime_print() {
    let cluster = Cluster::builder().chunkservers(1).start();
    let mnt = cluster.mount_path(0);
    make_tree(mnt);

    assert_eq!(
        ok(mnt, &["gettrashtime", "d", "d/a"]),
        "d: 86400\nd/a: 86400\n"
    );
    assert_eq!(
        ok(mnt, &["gettrashtime", "-r", "d"]),
        "d:\n\
         \x20files with trashtime             86400 :          3\n\
         \x20directories with trashtime       86400 :          2\n"
    );
    assert_eq!(ok(mnt, &["settrashtime", "100", "d/a"]), "d/a: 100\n");
    assert_eq!(ok(mnt, &["settrashtime", "1h+", "d/a"]), "d/a: 3600\n");
    assert_eq!(
        ok(mnt, &["settrashtime", "-r", "0", "d/sub"]),
        "d/sub:\n\
         \x20inodes with trashtime changed:              2\n\
         \x20inodes with trashtime not changed:          0\n\
         \x20inodes with permission denied:              0\n"
    );
    assert_eq!(
        ok(mnt, &["gettrashtime", "-r", "d"]),
        "d:\n\
         \x20files with trashtime                 0 :          1\n\
         \x20files with trashtime              3600 :          1\n\
         \x20files with trashtime             86400 :          1\n\
         \x20directories with trashtime           0 :          1\n\
         \x20directories with trashtime       86400 :          1\n"
    );

    let doc = json(mnt, &["gettrashtime", "-r", "d"]);
    assert_eq!(doc[0]["path"], "d");
    assert_eq!(doc[0]["files"][0]["trashtime"], 0);
    assert_eq!(doc[0]["files"][0]["count"], 1);
    assert_eq!(doc[0]["directories"].as_array().map(Vec::len), Some(2));
    let doc = json(mnt, &["settrashtime", "-r", "7d", "d"]);
    assert_eq!(doc[0]["changed"], 5);
    assert_eq!(doc[0]["not_changed"], 0);
    assert_eq!(doc[0]["permission_denied"], 0);
    assert_eq!(ok(mnt, &["gettrashtime", "d/sub/b"]), "d/sub/b: 604800\n");
}

#[test]
fn json_output_is_one_array_with_an_object_per_path() {
    let cluster = Cluster::builder().chunkservers(2).start();
    let mnt = cluster.mount_path(0);
    make_tree(mnt);

    let doc = json(mnt, &["getgoal", "-r", "d", "nowhere"]);
    let items = doc.as_array().expect("an array");
    assert_eq!(items.len(), 2);
    assert_eq!(items[0]["files"][0]["goal"], 2);
    assert_eq!(items[0]["files"][0]["count"], 3);
    assert_eq!(items[0]["directories"][0]["count"], 2);
    assert_eq!(items[1]["errno"], libc::ENOENT);

    let doc = json(mnt, &["setgoal", "1", "d/a"]);
    assert_eq!(doc[0]["goal"], 1);
    assert_eq!(doc[0]["changed"], 1);

    let doc = json(mnt, &["dirinfo", "d"]);
    assert_eq!(doc[0]["inodes"], 5);
    assert_eq!(doc[0]["directories"], 2);
    assert_eq!(doc[0]["files"], 3);
    assert_eq!(doc[0]["length"], (MIB + 6) as u64);

    let doc = json(mnt, &["fileinfo", "d/sub/b", "d/empty"]);
    let copies = doc[0]["chunks"][0]["copies"].as_array().expect("copies");
    assert_eq!(copies.len(), 2);
    assert_eq!(copies[0]["status"], "VALID");
    assert_eq!(doc[1]["chunks"].as_array().map(Vec::len), Some(0));

    let doc = json(mnt, &["checkfile", "d/sub/b"]);
    assert_eq!(doc[0]["chunks"][0]["copies"], 2);
    assert_eq!(doc[0]["chunks"][0]["chunks"], 1);
    assert_eq!(doc[0]["empty_chunks"], 0);
}

/// Copies of `path`'s first chunk, as `checkfile` counts them (0 while it lists none).
fn copies_of_first_chunk(mnt: &std::path::Path, path: &str) -> u64 {
    let doc = json(mnt, &["checkfile", path]);
    doc[0]["chunks"][0]["copies"].as_u64().unwrap_or(0)
}

#[test]
fn a_chunk_shared_by_a_snapshot_keeps_the_larger_goal_and_takes_the_file_s_own_once_unshared() {
    let (_config, cluster) = cluster_with_master_config(QUICK_MASTER);
    let mnt = cluster.mount_path(0);
    write(&mnt.join("f"), &data(MIB, 9));
    assert_eq!(ok(mnt, &["settrashtime", "0", "f"]), "f: 0\n");
    assert_eq!(ok(mnt, &["snapshot", "f", "g"]), "");
    assert_eq!(ok(mnt, &["setgoal", "3", "g"]), "g: goal: 3\n");
    assert_eq!(ok(mnt, &["setgoal", "1", "f"]), "f: goal: 1\n");
    // The copy's goal of 3 holds for the chunk both share.
    let wait = Duration::from_secs(30);
    eventually(wait, "the shared chunk has 3 copies", || {
        copies_of_first_chunk(mnt, "f") == 3
    });
    std::fs::remove_file(mnt.join("g")).expect("rm g");
    eventually(
        wait,
        "the removed copy's purge leaves the chunk to f alone",
        || json(mnt, &["fileinfo", "f"])[0]["chunks"][0]["refs"] == 1,
    );
    // The file's goal is 1 already: setting it again lowers the chunk, its own now.
    assert_eq!(ok(mnt, &["setgoal", "1", "f"]), "f: goal: 1\n");
    eventually(wait, "the chunk, no longer shared, has 1 copy", || {
        copies_of_first_chunk(mnt, "f") == 1
    });
}
