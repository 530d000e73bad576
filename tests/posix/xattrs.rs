//! Extended attributes: user.* and security.* names are stored, listed, replaced and removed
//! with the errors Linux gives, follow the inode (hard links, renames) and show on other mounts.

use std::path::Path;
use std::time::Duration;

use elkfs_e2e::pseudo_random;
use elkfs_testkit::{Cluster, wait_until};

use crate::host;
use crate::sys::{self, Errno};
use crate::users::{Report, assert_same};

fn xattr_cases(root: &Path) -> Report {
    let p = |s: &str| root.join(s);
    let mut r = Report::default();
    std::fs::write(p("f"), b"x").unwrap();
    sys::mkdir(&p("d"), 0o755).unwrap();
    sys::symlink("f", &p("l")).unwrap();
    let f = p("f");

    r.op("get missing", sys::getxattr(&f, "user.a"));
    r.op("set", sys::setxattr(&f, "user.a", b"one", 0, true));
    r.note("get", sys::getxattr(&f, "user.a"));
    r.op(
        "create existing",
        sys::setxattr(&f, "user.a", b"two", libc::XATTR_CREATE, true),
    );
    r.op(
        "replace missing",
        sys::setxattr(&f, "user.b", b"two", libc::XATTR_REPLACE, true),
    );
    r.op(
        "replace existing",
        sys::setxattr(&f, "user.a", b"longer value", libc::XATTR_REPLACE, true),
    );
    r.note("get replaced", sys::getxattr(&f, "user.a"));
    r.op("empty value", sys::setxattr(&f, "user.empty", b"", 0, true));
    r.note("get empty", sys::getxattr(&f, "user.empty"));
    r.op(
        "binary value",
        sys::setxattr(&f, "user.bin", &[0, 255, 0, 1], 0, true),
    );
    r.note("get binary", sys::getxattr(&f, "user.bin"));
    r.note("size probe", sys::getxattr_sized(&f, "user.a", 0));
    r.note("buffer too small", sys::getxattr_sized(&f, "user.a", 3));
    r.op(
        "security name",
        sys::setxattr(&f, "security.elkfs-test", b"label", 0, true),
    );
    r.note("get security", sys::getxattr(&f, "security.elkfs-test"));
    r.note("list", sys::listxattr(&f));
    r.op("remove", sys::removexattr(&f, "user.a"));
    r.op("remove again", sys::removexattr(&f, "user.a"));
    r.note("list after remove", sys::listxattr(&f));
    r.op(
        "unknown namespace",
        sys::setxattr(&f, "bogus.x", b"v", 0, true),
    );
    r.op("no namespace", sys::setxattr(&f, "plain", b"v", 0, true));
    r.op(
        "name too long",
        sys::setxattr(&f, &format!("user.{}", "n".repeat(300)), b"v", 0, true),
    );
    r.op("bad flags", sys::setxattr(&f, "user.z", b"v", 0x40, true));
    r.op(
        "on a directory",
        sys::setxattr(&p("d"), "user.dir", b"dv", 0, true),
    );
    r.note("dir list", sys::listxattr(&p("d")));
    r.op(
        "user.* on a symlink itself",
        sys::setxattr(&p("l"), "user.s", b"v", 0, false),
    );
    r.op(
        "through the symlink",
        sys::setxattr(&p("l"), "user.via", b"v", 0, true),
    );
    r.note("target got it", sys::getxattr(&f, "user.via"));
    r.op(
        "on a missing file",
        sys::setxattr(&p("nope"), "user.a", b"v", 0, true),
    );
    let big = pseudo_random(3000, 5);
    r.op(
        "3000-byte value",
        sys::setxattr(&f, "user.big", &big, 0, true),
    );
    r.note(
        "3000-byte value back",
        sys::getxattr(&f, "user.big").map(|v| v == big),
    );
    r
}

#[test]
fn user_and_security_xattrs_behave_as_on_a_local_filesystem() {
    let cluster = Cluster::builder().chunkservers(1).start();
    let local = host::local_dir("xattr");
    let want = xattr_cases(local.path());
    let got = xattr_cases(cluster.mount_path(0));
    assert_eq!(want.outcome("create existing"), "EEXIST");
    assert_eq!(want.outcome("replace missing"), "ENODATA");
    assert_same("xattrs", &want, &got);
}

#[test]
fn xattrs_follow_the_inode_across_links_renames_and_mounts() {
    let cluster = Cluster::builder().chunkservers(1).mounts(2).start();
    let (a, b) = (cluster.mount_path(0), cluster.mount_path(1));
    std::fs::write(a.join("f"), b"x").unwrap();
    sys::setxattr(&a.join("f"), "user.color", b"blue", 0, true).unwrap();
    sys::link(&a.join("f"), &a.join("twin")).unwrap();
    assert_eq!(
        sys::getxattr(&a.join("twin"), "user.color").unwrap(),
        b"blue"
    );
    sys::rename(&a.join("f"), &a.join("moved")).unwrap();
    assert_eq!(
        sys::getxattr(&a.join("moved"), "user.color").unwrap(),
        b"blue"
    );

    wait_until(Duration::from_secs(2), "mount B sees the xattr", || {
        sys::getxattr(&b.join("twin"), "user.color").is_ok_and(|v| v == b"blue")
    });
    sys::setxattr(
        &b.join("twin"),
        "user.color",
        b"red",
        libc::XATTR_REPLACE,
        true,
    )
    .unwrap();
    sys::setxattr(&b.join("twin"), "user.size", b"L", libc::XATTR_CREATE, true).unwrap();
    wait_until(Duration::from_secs(2), "mount A sees B's change", || {
        sys::getxattr(&a.join("moved"), "user.color").is_ok_and(|v| v == b"red")
    });
    assert_eq!(
        sys::listxattr(&a.join("moved")).unwrap(),
        vec!["user.color", "user.size"]
    );
    sys::removexattr(&a.join("moved"), "user.size").unwrap();
    wait_until(Duration::from_secs(2), "mount B sees the removal", || {
        sys::getxattr(&b.join("twin"), "user.size") == Err(Errno(libc::ENODATA))
    });
}

#[test]
fn many_xattrs_on_one_file_are_all_kept() {
    let cluster = Cluster::builder().chunkservers(1).start();
    let f = cluster.mount_path(0).join("f");
    std::fs::write(&f, b"x").unwrap();
    let mut names = Vec::new();
    for i in 0..60 {
        let name = format!("user.attr{i:03}");
        sys::setxattr(&f, &name, format!("value {i}").as_bytes(), 0, true).unwrap();
        names.push(name);
    }
    assert_eq!(sys::listxattr(&f).unwrap(), names);
    for (i, name) in names.iter().enumerate() {
        assert_eq!(
            sys::getxattr(&f, name).unwrap(),
            format!("value {i}").as_bytes()
        );
    }
    // Setting an xattr changes ctime but not mtime, as on Linux.
    let before = sys::lstat(&f).unwrap();
    std::thread::sleep(Duration::from_millis(20));
    sys::setxattr(&f, "user.late", b"v", 0, true).unwrap();
    let after = sys::lstat(&f).unwrap();
    assert_eq!(
        (after.st_mtime, after.st_mtime_nsec),
        (before.st_mtime, before.st_mtime_nsec)
    );
    assert!((after.st_ctime, after.st_ctime_nsec) > (before.st_ctime, before.st_ctime_nsec));
}

/// A file capability granting `CAP_NET_BIND_SERVICE` (a `vfs_cap_data`, revision 2).
fn capability_blob() -> Vec<u8> {
    let mut blob = Vec::new();
    blob.extend_from_slice(&0x0200_0000u32.to_le_bytes());
    const CAP_NET_BIND_SERVICE: u32 = 10;
    blob.extend_from_slice(&(1u32 << CAP_NET_BIND_SERVICE).to_le_bytes());
    blob.extend_from_slice(&[0; 12]);
    blob
}

/// Writes to a file just created, gives it a file capability, writes again: the second write
/// must drop the capability, as every write does.
fn capability_cases(root: &Path) -> Report {
    use std::io::Write;
    let mut r = Report::default();
    let f = root.join("tool");
    let mut file = std::fs::File::create(&f).unwrap();
    file.write_all(b"first").unwrap();
    r.op("none at first", sys::getxattr(&f, "security.capability"));
    r.op(
        "set a capability",
        sys::setxattr(&f, "security.capability", &capability_blob(), 0, true),
    );
    r.note(
        "capability kept",
        sys::getxattr(&f, "security.capability").map(|v| v == capability_blob()),
    );
    file.write_all(b"second").unwrap();
    r.op(
        "gone after a write",
        sys::getxattr(&f, "security.capability"),
    );
    r
}

#[test]
fn a_write_drops_a_file_capability_even_right_after_the_file_was_created() {
    let cluster = Cluster::builder().chunkservers(1).start();
    let local = host::local_dir("caps");
    let want = capability_cases(local.path());
    assert_eq!(want.outcome("gone after a write"), "ENODATA");
    let got = capability_cases(cluster.mount_path(0));
    assert_same("file capabilities", &want, &got);
}
