//! `geteattr`, `seteattr` and `deleattr`: MooseFS's output and attribute names.

use elkfs_testkit::Cluster;

use crate::support::{elkfs, json, ok, write};

#[test]
fn eattr_commands_print_what_mfsgeteattr_and_mfsseteattr_print() {
    let cluster = Cluster::builder().chunkservers(1).start();
    let mnt = cluster.mount_path(0);
    write(&mnt.join("d/a"), b"hello\n");
    write(&mnt.join("d/sub/b"), b"b");
    write(&mnt.join("d/empty"), b"");

    assert_eq!(ok(mnt, &["geteattr", "d", "d/a"]), "d: -\nd/a: -\n");
    assert_eq!(
        ok(
            mnt,
            &["seteattr", "-f", "noowner", "-f", "nodatacache", "d/a"]
        ),
        "d/a: attribute(s) changed\n"
    );
    assert_eq!(
        ok(mnt, &["seteattr", "-f", "noowner", "d/a"]),
        "d/a: attribute(s) not changed\n"
    );
    assert_eq!(ok(mnt, &["geteattr", "d/a"]), "d/a: noowner,nodatacache\n");
    assert_eq!(
        ok(mnt, &["seteattr", "-r", "-f", "noattrcache", "d"]),
        "d:\n\
         \x20inodes with attributes changed:              5\n\
         \x20inodes with attributes not changed:          0\n\
         \x20inodes with permission denied:               0\n"
    );
    assert_eq!(
        ok(mnt, &["geteattr", "-r", "d"]),
        "d:\n\
         \x20not directory nodes with attribute          noowner :          1\n\
         \x20directories with attribute                  noowner :          0\n\
         \x20not directory nodes with attribute      noattrcache :          3\n\
         \x20directories with attribute              noattrcache :          2\n\
         \x20not directory nodes with attribute     noentrycache :          0\n\
         \x20directories with attribute             noentrycache :          0\n\
         \x20not directory nodes with attribute      nodatacache :          1\n\
         \x20directories with attribute              nodatacache :          0\n"
    );
    assert_eq!(
        ok(mnt, &["deleattr", "-f", "noowner", "d/a"]),
        "d/a: attribute(s) changed\n"
    );
    assert_eq!(
        ok(
            mnt,
            &["deleattr", "-r", "-f", "noattrcache,nodatacache", "d"]
        ),
        "d:\n\
         \x20inodes with attributes changed:              5\n\
         \x20inodes with attributes not changed:          0\n\
         \x20inodes with permission denied:               0\n"
    );
    assert_eq!(ok(mnt, &["geteattr", "d/a", "d/sub"]), "d/a: -\nd/sub: -\n");

    let out = elkfs(mnt, &["seteattr", "-f", "undeletable", "d/a"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("unknown attribute"));

    ok(mnt, &["seteattr", "-f", "noentrycache", "d"]);
    let doc = json(mnt, &["geteattr", "d", "d/a"]);
    assert_eq!(doc[0]["eattrs"], serde_json::json!(["noentrycache"]));
    assert_eq!(doc[1]["eattrs"], serde_json::json!([]));
    let doc = json(mnt, &["geteattr", "-r", "d"]);
    assert_eq!(doc[0]["directories"]["noentrycache"], 1);
    assert_eq!(doc[0]["files"]["noentrycache"], 0);
}
