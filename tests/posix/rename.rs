//! rename(2) and renameat2(2) in all their cases: over files and empty directories, across
//! directories, RENAME_NOREPLACE and RENAME_EXCHANGE, and the errors Linux gives.

use std::time::Duration;

use elkfs_testkit::{Cluster, wait_until};

use crate::host;
use crate::sys::{self, Errno};
use crate::users::{Report, assert_same};

#[test]
fn rename_over_an_existing_file_replaces_it_and_keeps_the_old_one_open() {
    let cluster = Cluster::builder().chunkservers(1).start();
    let m = cluster.mount_path(0);
    // Several rounds: the replaced file must stay readable however the timing falls.
    for round in 0..100 {
        let (old_data, new_data) = (
            format!("old contents {round}"),
            format!("new contents {round}"),
        );
        std::fs::write(m.join("new"), &new_data).unwrap();
        std::fs::write(m.join("old"), &old_data).unwrap();
        let new_ino = sys::lstat(&m.join("new")).unwrap().st_ino;
        let old_open = std::fs::File::open(m.join("old")).unwrap();

        sys::rename(&m.join("new"), &m.join("old")).unwrap();
        assert!(!m.join("new").exists());
        assert_eq!(std::fs::read(m.join("old")).unwrap(), new_data.as_bytes());
        assert_eq!(sys::lstat(&m.join("old")).unwrap().st_ino, new_ino);
        assert_eq!(sys::list(m).unwrap(), vec!["old"]);
        // The replaced file is still there for whoever has it open.
        assert_eq!(
            sys::pread(&old_open, 100, 0),
            Ok(old_data.into_bytes()),
            "round {round}: reading the replaced file through its open descriptor"
        );
        assert_eq!(
            sys::fstat(&old_open).map(|s| s.st_nlink),
            Ok(0),
            "round {round}: fstat of the replaced file"
        );
    }
}

#[test]
fn rename_over_an_empty_directory_replaces_it_but_not_over_a_full_one() {
    let cluster = Cluster::builder().chunkservers(1).start();
    let m = cluster.mount_path(0);
    for d in ["src", "empty", "full", "src/inner"] {
        std::fs::create_dir(m.join(d)).unwrap();
    }
    std::fs::write(m.join("full/f"), b"x").unwrap();
    assert_eq!(
        sys::lstat(m).unwrap().st_nlink,
        5,
        "root: . .. and 3 subdirs"
    );

    assert_eq!(
        sys::rename(&m.join("src"), &m.join("full")),
        Err(Errno(libc::ENOTEMPTY))
    );
    sys::rename(&m.join("src"), &m.join("empty")).unwrap();
    assert_eq!(sys::list(m).unwrap(), vec!["empty", "full"]);
    assert!(m.join("empty/inner").is_dir());
    assert_eq!(sys::lstat(m).unwrap().st_nlink, 4, "one directory fewer");
}

#[test]
fn rename_across_directories_moves_the_entry_and_fixes_link_counts_and_dotdot() {
    let cluster = Cluster::builder().chunkservers(1).start();
    let m = cluster.mount_path(0);
    for d in ["a", "b", "a/sub"] {
        std::fs::create_dir(m.join(d)).unwrap();
    }
    std::fs::write(m.join("a/sub/f"), b"moved").unwrap();
    std::fs::write(m.join("a/file"), b"file").unwrap();
    let sub_ino = sys::lstat(&m.join("a/sub")).unwrap().st_ino;
    assert_eq!(sys::lstat(&m.join("a")).unwrap().st_nlink, 3);
    assert_eq!(sys::lstat(&m.join("b")).unwrap().st_nlink, 2);

    sys::rename(&m.join("a/sub"), &m.join("b/sub2")).unwrap();
    sys::rename(&m.join("a/file"), &m.join("b/file2")).unwrap();
    assert_eq!(sys::lstat(&m.join("a")).unwrap().st_nlink, 2);
    assert_eq!(sys::lstat(&m.join("b")).unwrap().st_nlink, 3);
    assert_eq!(sys::lstat(&m.join("b/sub2")).unwrap().st_ino, sub_ino);
    assert_eq!(std::fs::read(m.join("b/sub2/f")).unwrap(), b"moved");
    assert_eq!(std::fs::read(m.join("b/file2")).unwrap(), b"file");
    assert_eq!(
        sys::lstat(&m.join("b/sub2/..")).unwrap().st_ino,
        sys::lstat(&m.join("b")).unwrap().st_ino,
        "'..' of the moved directory is its new parent"
    );
    assert_eq!(sys::list(&m.join("a")).unwrap(), Vec::<String>::new());
    assert_eq!(sys::list(&m.join("b")).unwrap(), vec!["file2", "sub2"]);
}

#[test]
fn rename_noreplace_refuses_an_existing_target_and_moves_otherwise() {
    let cluster = Cluster::builder().chunkservers(1).start();
    let m = cluster.mount_path(0);
    std::fs::write(m.join("a"), b"a").unwrap();
    std::fs::write(m.join("b"), b"b").unwrap();
    assert_eq!(
        sys::renameat2(&m.join("a"), &m.join("b"), libc::RENAME_NOREPLACE),
        Err(Errno(libc::EEXIST))
    );
    assert_eq!(std::fs::read(m.join("a")).unwrap(), b"a");
    assert_eq!(std::fs::read(m.join("b")).unwrap(), b"b");
    sys::renameat2(&m.join("a"), &m.join("c"), libc::RENAME_NOREPLACE).unwrap();
    assert_eq!(sys::list(m).unwrap(), vec!["b", "c"]);
    assert_eq!(std::fs::read(m.join("c")).unwrap(), b"a");
}

#[test]
fn rename_exchange_swaps_two_entries_even_a_file_and_a_directory() {
    let cluster = Cluster::builder().chunkservers(1).start();
    let m = cluster.mount_path(0);
    std::fs::create_dir_all(m.join("p/dir")).unwrap();
    std::fs::create_dir(m.join("q")).unwrap();
    std::fs::write(m.join("p/dir/inside"), b"inside").unwrap();
    std::fs::write(m.join("q/file"), b"file").unwrap();
    let (dir_ino, file_ino) = (
        sys::lstat(&m.join("p/dir")).unwrap().st_ino,
        sys::lstat(&m.join("q/file")).unwrap().st_ino,
    );

    sys::renameat2(&m.join("p/dir"), &m.join("q/file"), libc::RENAME_EXCHANGE).unwrap();
    assert_eq!(sys::lstat(&m.join("q/file")).unwrap().st_ino, dir_ino);
    assert_eq!(sys::lstat(&m.join("p/dir")).unwrap().st_ino, file_ino);
    assert_eq!(std::fs::read(m.join("q/file/inside")).unwrap(), b"inside");
    assert_eq!(std::fs::read(m.join("p/dir")).unwrap(), b"file");
    // The directory moved from p to q: link counts follow.
    assert_eq!(sys::lstat(&m.join("p")).unwrap().st_nlink, 2);
    assert_eq!(sys::lstat(&m.join("q")).unwrap().st_nlink, 3);
    assert_eq!(
        sys::lstat(&m.join("q/file/..")).unwrap().st_ino,
        sys::lstat(&m.join("q")).unwrap().st_ino
    );

    assert_eq!(
        sys::renameat2(&m.join("p/dir"), &m.join("missing"), libc::RENAME_EXCHANGE),
        Err(Errno(libc::ENOENT)),
        "exchange needs both names to exist"
    );
    assert_eq!(
        sys::renameat2(
            &m.join("p/dir"),
            &m.join("q/file"),
            libc::RENAME_EXCHANGE | libc::RENAME_NOREPLACE
        ),
        Err(Errno(libc::EINVAL))
    );
}

/// Every error case of rename, run on the local filesystem and on ElkFS.
fn rename_error_cases(root: &std::path::Path) -> Report {
    let p = |s: &str| root.join(s);
    let mut r = Report::default();
    for d in ["d", "d/sub", "e", "full"] {
        sys::mkdir(&p(d), 0o755).unwrap();
    }
    for f in ["f", "full/x", "d/g"] {
        std::fs::write(p(f), b"x").unwrap();
    }
    sys::link(&p("f"), &p("hard")).unwrap();
    sys::symlink("d", &p("lnk")).unwrap();

    r.op("missing source", sys::rename(&p("nope"), &p("z")));
    r.op("target in missing dir", sys::rename(&p("f"), &p("nope/z")));
    r.op("source through a file", sys::rename(&p("f/x"), &p("z")));
    r.op("file over dir", sys::rename(&p("f"), &p("e")));
    r.op("dir over file", sys::rename(&p("e"), &p("f")));
    r.op("dir over non-empty dir", sys::rename(&p("e"), &p("full")));
    r.op("dir into itself", sys::rename(&p("d"), &p("d/sub/deeper")));
    r.op("dir onto its child", sys::rename(&p("d"), &p("d/sub")));
    r.op("to itself", sys::rename(&p("f"), &p("f")));
    r.op("hard link onto its twin", sys::rename(&p("f"), &p("hard")));
    r.note("twin still there", (p("f").exists(), p("hard").exists()));
    r.op("dot", sys::rename(&p("d/."), &p("y")));
    r.op(
        "symlink to dir, renamed",
        sys::rename(&p("lnk"), &p("lnk2")),
    );
    r.note("symlink kept", sys::readlink(&p("lnk2")).map(|t| t.len()));
    r.op("dir over symlink", sys::rename(&p("e"), &p("lnk2")));
    r.op(
        "noreplace over dir",
        sys::renameat2(&p("f"), &p("d"), libc::RENAME_NOREPLACE),
    );
    r.op(
        "exchange with itself",
        sys::renameat2(&p("f"), &p("f"), libc::RENAME_EXCHANGE),
    );
    r.op("bad flags", sys::renameat2(&p("f"), &p("q"), 0x80));
    let long = "n".repeat(256);
    r.op("target name too long", sys::rename(&p("d/g"), &p(&long)));
    r.note("listing", sys::list(root));
    r
}

#[test]
fn rename_errors_are_those_of_a_local_filesystem() {
    let cluster = Cluster::builder().chunkservers(1).start();
    let local = host::local_dir("rename");
    let want = rename_error_cases(local.path());
    let got = rename_error_cases(cluster.mount_path(0));
    assert_eq!(want.outcome("dir into itself"), "EINVAL");
    assert_eq!(want.outcome("dir over non-empty dir"), "ENOTEMPTY");
    assert_same("rename errors", &want, &got);
}

#[test]
fn a_rename_is_seen_by_another_mount() {
    let cluster = Cluster::builder().chunkservers(1).mounts(2).start();
    let (a, b) = (cluster.mount_path(0), cluster.mount_path(1));
    std::fs::create_dir(a.join("x")).unwrap();
    std::fs::write(a.join("x/f"), b"data").unwrap();
    assert_eq!(std::fs::read(b.join("x/f")).unwrap(), b"data");
    sys::rename(&a.join("x"), &a.join("y")).unwrap();
    wait_until(
        Duration::from_secs(2),
        "the rename shows on the other mount",
        || !b.join("x").exists() && b.join("y/f").exists(),
    );
    assert_eq!(std::fs::read(b.join("y/f")).unwrap(), b"data");
}
