//! Open flags and space management: O_APPEND, O_TRUNC, O_EXCL, O_CREAT through symlinks, and
//! fallocate (reserve, keep size, punch holes, zero ranges).

use std::os::unix::fs::FileExt;
use std::time::Duration;

use elkfs_e2e::pseudo_random;
use elkfs_testkit::Cluster;

use crate::host;
use crate::sys::{self, Errno};
use crate::users::{Report, assert_same};

#[test]
fn o_append_writes_always_land_at_the_end_even_from_two_descriptors() {
    let cluster = Cluster::builder().chunkservers(1).start();
    let path = cluster.mount_path(0).join("log");
    std::fs::write(&path, b"start;").unwrap();
    let a = sys::open(&path, libc::O_WRONLY | libc::O_APPEND, 0).unwrap();
    let b = sys::open(&path, libc::O_WRONLY | libc::O_APPEND, 0).unwrap();
    let mut expected = b"start;".to_vec();
    for i in 0..50 {
        let (fd, tag) = if i % 2 == 0 { (&a, "A") } else { (&b, "B") };
        let line = format!("{tag}{i};");
        sys::write(fd, line.as_bytes()).unwrap();
        expected.extend_from_slice(line.as_bytes());
    }
    // pwrite on an O_APPEND descriptor appends too on Linux.
    sys::pwrite(&a, b"P", 0).unwrap();
    expected.push(b'P');
    sys::close(a).unwrap();
    sys::close(b).unwrap();
    assert_eq!(std::fs::read(&path).unwrap(), expected);
}

#[test]
fn o_append_from_two_mounts_never_overwrites_the_other_mounts_data() {
    let cluster = Cluster::builder().chunkservers(1).mounts(2).start();
    let (pa, pb) = (
        cluster.mount_path(0).join("shared.log"),
        cluster.mount_path(1).join("shared.log"),
    );
    std::fs::write(&pa, b"").unwrap();
    let a = sys::open(&pa, libc::O_WRONLY | libc::O_APPEND, 0).unwrap();
    let b = sys::open(&pb, libc::O_WRONLY | libc::O_APPEND, 0).unwrap();
    for i in 0..20 {
        sys::write(&a, format!("a{i:02}\n").as_bytes()).unwrap();
        sys::io_errno(a.sync_all()).unwrap();
        sys::write(&b, format!("b{i:02}\n").as_bytes()).unwrap();
        sys::io_errno(b.sync_all()).unwrap();
    }
    sys::close(a).unwrap();
    sys::close(b).unwrap();
    let text = String::from_utf8(std::fs::read(&pa).unwrap()).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 40, "every appended line is kept:\n{text}");
    for i in 0..20 {
        assert!(
            lines.contains(&format!("a{i:02}").as_str()),
            "a{i:02} lost:\n{text}"
        );
        assert!(
            lines.contains(&format!("b{i:02}").as_str()),
            "b{i:02} lost:\n{text}"
        );
    }
}

#[test]
fn o_trunc_empties_an_existing_file_and_updates_its_times() {
    let cluster = Cluster::builder().chunkservers(1).start();
    let path = cluster.mount_path(0).join("f");
    std::fs::write(&path, pseudo_random(500_000, 1)).unwrap();
    let before = sys::lstat(&path).unwrap();
    std::thread::sleep(Duration::from_millis(20));
    let f = sys::open(&path, libc::O_WRONLY | libc::O_TRUNC, 0).unwrap();
    assert_eq!(sys::fstat(&f).unwrap().st_size, 0);
    sys::write(&f, b"short").unwrap();
    sys::close(f).unwrap();
    let after = sys::lstat(&path).unwrap();
    assert_eq!(std::fs::read(&path).unwrap(), b"short");
    assert!((after.st_mtime, after.st_mtime_nsec) > (before.st_mtime, before.st_mtime_nsec));
    assert_eq!(after.st_ino, before.st_ino, "O_TRUNC keeps the inode");
    // O_TRUNC with O_RDONLY also truncates on Linux.
    drop(sys::open(&path, libc::O_RDONLY | libc::O_TRUNC, 0).unwrap());
    assert_eq!(sys::lstat(&path).unwrap().st_size, 0);
}

fn exclusive_create_cases(root: &std::path::Path) -> Report {
    let p = |s: &str| root.join(s);
    let mut r = Report::default();
    let excl = libc::O_CREAT | libc::O_EXCL | libc::O_WRONLY;
    r.op("new name", sys::open(&p("f"), excl, 0o640));
    r.note("mode", sys::lstat(&p("f")).map(|s| s.st_mode & 0o7777));
    r.op("existing file", sys::open(&p("f"), excl, 0o644));
    sys::mkdir(&p("d"), 0o755).unwrap();
    r.op("existing dir", sys::open(&p("d"), excl, 0o644));
    sys::symlink("target", &p("dangling")).unwrap();
    r.op("dangling symlink", sys::open(&p("dangling"), excl, 0o644));
    r.note("target not created", p("target").exists());
    r.op(
        "O_CREAT through the dangling symlink",
        sys::open(&p("dangling"), libc::O_CREAT | libc::O_WRONLY, 0o600),
    );
    r.note(
        "target created",
        sys::lstat(&p("target")).map(|s| s.st_mode & 0o7777),
    );
    r.op(
        "O_CREAT on a dir",
        sys::open(&p("d"), libc::O_CREAT | libc::O_WRONLY, 0o644),
    );
    r.op(
        "O_DIRECTORY on a file",
        sys::open(&p("f"), libc::O_RDONLY | libc::O_DIRECTORY, 0),
    );
    r.op(
        "O_CREAT in a missing dir",
        sys::open(&p("nope/f"), libc::O_CREAT | libc::O_WRONLY, 0o644),
    );
    r.op("O_WRONLY on a dir", sys::open(&p("d"), libc::O_WRONLY, 0));
    r.op(
        "trailing slash on a file",
        sys::open(&p("f/"), libc::O_RDONLY, 0),
    );
    r
}

#[test]
fn o_excl_and_o_creat_behave_as_on_a_local_filesystem() {
    let cluster = Cluster::builder().chunkservers(1).start();
    let local = host::local_dir("excl");
    let want = exclusive_create_cases(local.path());
    let got = exclusive_create_cases(cluster.mount_path(0));
    assert_eq!(want.outcome("existing file"), "EEXIST");
    assert_eq!(want.outcome("dangling symlink"), "EEXIST");
    assert_same("O_EXCL / O_CREAT", &want, &got);
}

#[test]
fn concurrent_exclusive_creates_let_exactly_one_win() {
    let cluster = Cluster::builder().chunkservers(1).mounts(2).start();
    let (a, b) = (
        cluster.mount_path(0).to_path_buf(),
        cluster.mount_path(1).to_path_buf(),
    );
    for round in 0..30 {
        let name = format!("lock{round}");
        let (pa, pb) = (a.join(&name), b.join(&name));
        let excl = libc::O_CREAT | libc::O_EXCL | libc::O_WRONLY;
        let t = std::thread::spawn(move || sys::open(&pb, excl, 0o644).is_ok());
        let mine = sys::open(&pa, excl, 0o644).is_ok();
        let theirs = t.join().unwrap();
        assert!(
            mine ^ theirs,
            "round {round}: exactly one O_EXCL create must win ({mine}, {theirs})"
        );
    }
}

#[test]
fn fallocate_reserves_space_keeps_size_and_punches_holes() {
    let cluster = Cluster::builder().chunkservers(1).start();
    let path = cluster.mount_path(0).join("fa");
    let data = pseudo_random(300_000, 4);
    std::fs::write(&path, &data).unwrap();
    let f = sys::open(&path, libc::O_RDWR, 0).unwrap();

    // Mode 0: the file grows to cover the range, with zeros.
    sys::fallocate(&f, 0, 0, 1_000_000).expect("fallocate mode 0");
    assert_eq!(sys::fstat(&f).unwrap().st_size, 1_000_000);
    let all = sys::pread(&f, 1_000_000, 0).unwrap();
    assert_eq!(all[..300_000], data[..]);
    assert!(all[300_000..].iter().all(|&b| b == 0));

    // KEEP_SIZE: space past the end, length unchanged.
    sys::fallocate(&f, libc::FALLOC_FL_KEEP_SIZE, 1_000_000, 500_000).expect("KEEP_SIZE");
    assert_eq!(sys::fstat(&f).unwrap().st_size, 1_000_000);

    // PUNCH_HOLE: the range reads as zeros, the rest is intact, the length stays.
    sys::fallocate(
        &f,
        libc::FALLOC_FL_PUNCH_HOLE | libc::FALLOC_FL_KEEP_SIZE,
        100_000,
        65536,
    )
    .expect("PUNCH_HOLE");
    let after = sys::pread(&f, 1_000_000, 0).unwrap();
    assert_eq!(after.len(), 1_000_000);
    assert_eq!(after[..100_000], data[..100_000]);
    assert!(after[100_000..165_536].iter().all(|&b| b == 0));
    assert_eq!(after[165_536..300_000], data[165_536..]);

    // ZERO_RANGE past the end grows the file like mode 0.
    match sys::fallocate(&f, libc::FALLOC_FL_ZERO_RANGE, 1_000_000, 24) {
        Ok(()) => assert_eq!(sys::fstat(&f).unwrap().st_size, 1_000_024),
        Err(e) => assert_eq!(e, Errno(libc::EOPNOTSUPP), "ZERO_RANGE may be unsupported"),
    }
    // Bad arguments give EINVAL as on Linux.
    assert_eq!(sys::fallocate(&f, 0, 0, 0), Err(Errno(libc::EINVAL)));
    assert_eq!(
        sys::fallocate(&f, libc::FALLOC_FL_PUNCH_HOLE, 0, 10),
        Err(Errno(libc::EOPNOTSUPP)),
        "PUNCH_HOLE without KEEP_SIZE"
    );
    sys::close(f).unwrap();
}

#[test]
fn posix_fallocate_and_write_at_the_reserved_end_work() {
    let cluster = Cluster::builder().chunkservers(1).start();
    let path = cluster.mount_path(0).join("pf");
    let f = sys::open(&path, libc::O_CREAT | libc::O_RDWR, 0o644).unwrap();
    // SAFETY: plain library call on an owned descriptor.
    let rc = unsafe { libc::posix_fallocate(std::os::fd::AsRawFd::as_raw_fd(&f), 0, 4 << 20) };
    assert_eq!(rc, 0, "posix_fallocate: {}", Errno(rc));
    assert_eq!(sys::fstat(&f).unwrap().st_size, 4 << 20);
    f.write_all_at(b"tail", (4 << 20) - 4).unwrap();
    sys::close(f).unwrap();
    let got = std::fs::read(&path).unwrap();
    assert_eq!(got.len(), 4 << 20);
    assert_eq!(&got[got.len() - 4..], b"tail");
    assert!(got[..got.len() - 4].iter().all(|&b| b == 0));
}
