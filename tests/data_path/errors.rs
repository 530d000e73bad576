//! Failures reach programs as the errno a local filesystem gives.

use std::fs;

use elkfs_e2e::errno_of;
use elkfs_testkit::Cluster;

#[test]
fn errors_come_back_as_the_right_errno() {
    let cluster = Cluster::builder().chunkservers(1).start();
    let m = cluster.mount_path(0);
    fs::create_dir(m.join("d")).unwrap();
    fs::write(m.join("d/f"), b"x").unwrap();

    assert_eq!(
        errno_of(fs::read(m.join("missing")), "read missing"),
        libc::ENOENT
    );
    assert_eq!(
        errno_of(fs::remove_file(m.join("missing")), "unlink missing"),
        libc::ENOENT
    );
    assert_eq!(
        errno_of(fs::create_dir(m.join("d")), "mkdir existing"),
        libc::EEXIST
    );
    assert_eq!(
        errno_of(
            fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(m.join("d/f")),
            "O_EXCL on existing"
        ),
        libc::EEXIST
    );
    assert_eq!(
        errno_of(fs::remove_dir(m.join("d")), "rmdir non-empty"),
        libc::ENOTEMPTY
    );
    assert_eq!(
        errno_of(fs::read(m.join("d/f/x")), "path through a file"),
        libc::ENOTDIR
    );
    assert_eq!(
        errno_of(fs::create_dir(m.join("d/f/x")), "mkdir under a file"),
        libc::ENOTDIR
    );
    assert_eq!(
        errno_of(fs::remove_dir(m.join("d/f")), "rmdir on a file"),
        libc::ENOTDIR
    );
    assert_eq!(
        errno_of(
            fs::OpenOptions::new().write(true).open(m.join("d")),
            "open a dir for writing"
        ),
        libc::EISDIR
    );
    assert_eq!(
        errno_of(fs::remove_file(m.join("d")), "unlink a dir"),
        libc::EISDIR
    );
    fs::create_dir(m.join("e")).unwrap();
    assert_eq!(
        errno_of(
            fs::rename(m.join("d"), m.join("d/sub")),
            "move a dir into itself"
        ),
        libc::EINVAL
    );
    assert_eq!(
        errno_of(
            fs::rename(m.join("d/f"), m.join("e")),
            "rename a file over a dir"
        ),
        libc::EISDIR
    );
    fs::write(m.join("e/g"), b"y").unwrap();
    assert_eq!(
        errno_of(
            fs::rename(m.join("e"), m.join("d")),
            "rename a dir over a non-empty dir"
        ),
        libc::ENOTEMPTY
    );
    assert_eq!(
        errno_of(fs::write(m.join("x".repeat(256)), b""), "name too long"),
        libc::ENAMETOOLONG
    );
}
