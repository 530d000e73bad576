//! Mount variants: a subdirectory of the namespace (`ADDR:/projects`), read-only (`-o ro`), the
//! read-ahead (`-o readahead_kb`) and access times (`-o noatime`).

use std::time::Duration;

use elkfs_testkit::{Cluster, wait_until};

use crate::sys::{self, Errno};

#[test]
fn a_subdirectory_mount_shows_only_that_subtree() {
    let mut cluster = Cluster::builder().chunkservers(1).start();
    let root = cluster.mount_path(0).to_path_buf();
    std::fs::create_dir_all(root.join("projects/alpha")).unwrap();
    std::fs::write(root.join("projects/alpha/a.txt"), b"alpha").unwrap();
    std::fs::write(root.join("outside.txt"), b"not visible").unwrap();

    let i = cluster.add_mount(Some("projects"), "");
    let sub = cluster.mount_path(i).to_path_buf();
    assert_eq!(sys::list(&sub).unwrap(), vec!["alpha"]);
    assert_eq!(std::fs::read(sub.join("alpha/a.txt")).unwrap(), b"alpha");
    assert!(!sub.join("outside.txt").exists());
    // '..' of the mount's root is the directory above the mount point, not /projects' parent.
    assert_eq!(
        sys::lstat(&sub.join("..")).unwrap().st_ino,
        sys::lstat(cluster.dir()).unwrap().st_ino
    );
    std::fs::write(sub.join("new.txt"), b"from the subdir mount").unwrap();
    assert_eq!(
        std::fs::read(root.join("projects/new.txt")).unwrap(),
        b"from the subdir mount"
    );
    std::fs::create_dir(sub.join("beta")).unwrap();
    sys::rename(&sub.join("new.txt"), &sub.join("beta/moved.txt")).unwrap();
    wait_until(
        Duration::from_secs(2),
        "the root mount sees the rename",
        || root.join("projects/beta/moved.txt").exists(),
    );
    // The subdirectory's root reports the right attributes and statfs works.
    assert_eq!(sys::kind(sys::lstat(&sub).unwrap().st_mode), "dir");
    assert_eq!(sys::lstat(&sub).unwrap().st_nlink, 4);
    sys::statvfs(&sub).expect("statfs on a subdirectory mount");
}

#[test]
fn a_read_only_mount_refuses_every_change_with_erofs_and_reads_everything() {
    let mut cluster = Cluster::builder().chunkservers(1).start();
    let rw = cluster.mount_path(0).to_path_buf();
    std::fs::create_dir(rw.join("d")).unwrap();
    std::fs::write(rw.join("f"), b"readable").unwrap();
    let i = cluster.add_mount(None, "ro");
    let ro = cluster.mount_path(i).to_path_buf();
    let p = |s: &str| ro.join(s);
    let erofs = Err(Errno(libc::EROFS));

    assert_eq!(std::fs::read(p("f")).unwrap(), b"readable");
    assert_eq!(sys::open(&p("f"), libc::O_WRONLY, 0).map(drop), erofs);
    assert_eq!(
        sys::open(&p("new"), libc::O_CREAT | libc::O_WRONLY, 0o644).map(drop),
        erofs
    );
    assert_eq!(sys::mkdir(&p("d2"), 0o755), erofs);
    assert_eq!(sys::unlink(&p("f")), erofs);
    assert_eq!(sys::rmdir(&p("d")), erofs);
    assert_eq!(sys::rename(&p("f"), &p("g")), erofs);
    assert_eq!(sys::link(&p("f"), &p("g")), erofs);
    assert_eq!(sys::symlink("f", &p("s")), erofs);
    assert_eq!(sys::chmod(&p("f"), 0o600), erofs);
    assert_eq!(sys::lchown(&p("f"), 1, 1), erofs);
    assert_eq!(sys::truncate(&p("f"), 0), erofs);
    assert_eq!(sys::utimensat(&p("f"), None, 0), erofs);
    assert_eq!(sys::setxattr(&p("f"), "user.x", b"v", 0, true), erofs);
    assert_eq!(sys::mknod(&p("n"), libc::S_IFIFO | 0o644, 0), erofs);
    assert_eq!(
        std::fs::read(rw.join("f")).unwrap(),
        b"readable",
        "nothing changed"
    );
    let st = sys::statvfs(&ro).unwrap();
    assert_ne!(
        st.f_flag & libc::ST_RDONLY,
        0,
        "statvfs reports the mount read-only"
    );
    // Changes through a writable mount show on the read-only one.
    std::fs::write(rw.join("later"), b"later").unwrap();
    assert_eq!(std::fs::read(p("later")).unwrap(), b"later");
}

/// The kernel's read-ahead for the mount's device (`/sys/class/bdi/MAJOR:MINOR/read_ahead_kb`).
fn readahead_kb(mount_point: &std::path::Path) -> u32 {
    let canonical = mount_point.canonicalize().unwrap();
    let entry = elkfs_common::mount_table::mount_at(&canonical)
        .unwrap()
        .expect("the mount is in the mount table");
    let path = format!("/sys/class/bdi/{}/read_ahead_kb", entry.device);
    std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("reading {path}: {e}"))
        .trim()
        .parse()
        .unwrap()
}

#[test]
fn the_kernel_reads_ahead_as_far_as_the_mount_says() {
    let mut cluster = Cluster::builder().chunkservers(1).start();
    assert_eq!(
        readahead_kb(cluster.mount_path(0)),
        elkfs_common::defaults::READAHEAD_KB
    );
    let data: Vec<u8> = (0..3 << 20).map(|i: u32| (i % 251) as u8).collect();
    std::fs::write(cluster.mount_path(0).join("f"), &data).unwrap();
    let i = cluster.add_mount(None, "readahead_kb=2048");
    assert_eq!(readahead_kb(cluster.mount_path(i)), 2048);
    assert_eq!(
        std::fs::read(cluster.mount_path(i).join("f")).unwrap(),
        data
    );
}

fn atime(path: &std::path::Path) -> (i64, i64) {
    let st = sys::lstat(path).unwrap();
    (st.st_atime, st.st_atime_nsec)
}

#[test]
fn a_noatime_mount_leaves_access_times_alone_and_a_default_mount_moves_them() {
    let mut cluster = Cluster::builder().chunkservers(1).start();
    let rw = cluster.mount_path(0).to_path_buf();
    std::fs::create_dir(rw.join("d")).unwrap();
    std::fs::write(rw.join("d/f"), b"read me").unwrap();
    let i = cluster.add_mount(None, "noatime");
    let quiet = cluster.mount_path(i).to_path_buf();
    // Past the timestamps just set, so a change of the access time shows.
    std::thread::sleep(Duration::from_millis(50));
    let (file_before, dir_before) = (atime(&rw.join("d/f")), atime(&rw.join("d")));

    assert_eq!(std::fs::read(quiet.join("d/f")).unwrap(), b"read me");
    assert_eq!(sys::list(&quiet.join("d")).unwrap(), vec!["f"]);
    assert_eq!(
        atime(&quiet.join("d/f")),
        file_before,
        "file read through noatime"
    );
    assert_eq!(
        atime(&quiet.join("d")),
        dir_before,
        "dir listed through noatime"
    );

    // The same reads through the default mount move both (relatime: they were written since).
    assert_eq!(std::fs::read(rw.join("d/f")).unwrap(), b"read me");
    assert_eq!(sys::list(&rw.join("d")).unwrap(), vec!["f"]);
    assert_ne!(atime(&rw.join("d/f")), file_before);
    assert_ne!(atime(&rw.join("d")), dir_before);
}
