//! Timestamps: nanoseconds are kept, utimensat's UTIME_NOW / UTIME_OMIT and times far from now
//! work, and atime/mtime/ctime change on exactly the operations where Linux changes them
//! (checked against a local ext4 directory and tmpfs doing the same).

use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use elkfs_testkit::Cluster;

use crate::host;
use crate::sys::{self, Errno, ts};

fn times(path: &Path) -> [(i64, i64); 3] {
    let st = sys::lstat(path).unwrap();
    [
        (st.st_atime, st.st_atime_nsec),
        (st.st_mtime, st.st_mtime_nsec),
        (st.st_ctime, st.st_ctime_nsec),
    ]
}

fn now() -> (i64, i64) {
    let d = SystemTime::now().duration_since(UNIX_EPOCH).unwrap();
    (d.as_secs() as i64, i64::from(d.subsec_nanos()))
}

#[test]
fn timestamps_keep_nanoseconds() {
    let cluster = Cluster::builder().chunkservers(1).mounts(2).start();
    let path = cluster.mount_path(0).join("f");
    std::fs::write(&path, b"x").unwrap();
    let set = [
        ts(1_600_000_000, 123_456_789),
        ts(1_700_000_000, 987_654_321),
    ];
    sys::utimensat(&path, Some(set), 0).unwrap();
    let [a, m, _] = times(&path);
    assert_eq!(a, (1_600_000_000, 123_456_789));
    assert_eq!(m, (1_700_000_000, 987_654_321));
    // Through a fresh mount, so it comes from the master and not the kernel's cache.
    let [a, m, _] = times(&cluster.mount_path(1).join("f"));
    assert_eq!(a, (1_600_000_000, 123_456_789));
    assert_eq!(m, (1_700_000_000, 987_654_321));
    // Times set by the filesystem itself have sub-second precision too.
    let mut nanos = Vec::new();
    for i in 0..5 {
        std::fs::write(cluster.mount_path(0).join(format!("n{i}")), b"x").unwrap();
        nanos.push(times(&cluster.mount_path(0).join(format!("n{i}")))[1].1);
        std::thread::sleep(Duration::from_millis(3));
    }
    assert!(
        nanos.iter().any(|&n| n % 1_000_000 != 0),
        "mtimes set by ElkFS look rounded to milliseconds or worse: {nanos:?}"
    );
}

#[test]
fn utime_now_and_utime_omit_behave_as_on_linux() {
    let cluster = Cluster::builder().chunkservers(1).start();
    let path = cluster.mount_path(0).join("f");
    std::fs::write(&path, b"x").unwrap();
    let old = [ts(1_000_000_000, 1), ts(1_000_000_000, 2)];
    sys::utimensat(&path, Some(old), 0).unwrap();
    let [_, _, c0] = times(&path);
    std::thread::sleep(Duration::from_millis(20));

    // atime to now, mtime untouched.
    let before = now();
    sys::utimensat(
        &path,
        Some([ts(0, libc::UTIME_NOW), ts(0, libc::UTIME_OMIT)]),
        0,
    )
    .unwrap();
    let after = now();
    let [a, m, c] = times(&path);
    assert!(
        a >= before && a <= after,
        "UTIME_NOW atime {a:?} not within {before:?}..{after:?}"
    );
    assert_eq!(m, (1_000_000_000, 2), "UTIME_OMIT left mtime alone");
    assert!(c > c0, "changing a time changes ctime");

    // mtime to a given time, atime untouched.
    sys::utimensat(&path, Some([ts(0, libc::UTIME_OMIT), ts(5, 5)]), 0).unwrap();
    let [a2, m2, _] = times(&path);
    assert_eq!((a2, m2), (a, (5, 5)));

    // Both omitted: nothing changes, not even ctime.
    let before_omit = times(&path);
    std::thread::sleep(Duration::from_millis(20));
    sys::utimensat(
        &path,
        Some([ts(0, libc::UTIME_OMIT), ts(0, libc::UTIME_OMIT)]),
        0,
    )
    .unwrap();
    assert_eq!(times(&path), before_omit);

    // NULL times: both to now.
    sys::utimensat(&path, None, 0).unwrap();
    let [a3, m3, _] = times(&path);
    assert!(a3 >= after && m3 >= after);

    // Bad nanoseconds are EINVAL.
    assert_eq!(
        sys::utimensat(&path, Some([ts(0, 1_000_000_000), ts(0, 0)]), 0),
        Err(Errno(libc::EINVAL))
    );
    // A symlink's own times (AT_SYMLINK_NOFOLLOW) are set, not its target's.
    sys::symlink("f", &cluster.mount_path(0).join("l")).unwrap();
    let link = cluster.mount_path(0).join("l");
    sys::utimensat(&link, Some([ts(7, 7), ts(8, 8)]), libc::AT_SYMLINK_NOFOLLOW).unwrap();
    assert_eq!(times(&link)[1], (8, 8));
    assert_eq!(times(&path)[1], m3, "the target is untouched");
}

#[test]
fn times_set_on_an_open_file_survive_the_flush_of_its_buffered_writes() {
    // What tar -x does for every file: write, set mtime through the descriptor (atime omitted),
    // fchown, fchmod, close. The mtime set must be the one that stays.
    use std::os::fd::AsRawFd;
    let cluster = Cluster::builder().chunkservers(1).start();
    let mut wrong = Vec::new();
    for i in 0..30 {
        let path = cluster.mount_path(0).join(format!("f{i}"));
        let f = sys::open(&path, libc::O_CREAT | libc::O_EXCL | libc::O_WRONLY, 0o600).unwrap();
        let len = if i % 3 == 0 { 200_000 } else { 5 };
        sys::write(&f, &elkfs_e2e::pseudo_random(len, i)).unwrap();
        let set = [ts(0, libc::UTIME_OMIT), ts(946_684_800, i as i64)];
        // SAFETY: futimens, fchown and fchmod on an owned descriptor; `set` holds two timespecs.
        unsafe {
            sys::check(libc::futimens(f.as_raw_fd(), set.as_ptr())).unwrap();
            sys::check(libc::fchown(f.as_raw_fd(), 0, 0)).unwrap();
            sys::check(libc::fchmod(f.as_raw_fd(), 0o644)).unwrap();
        }
        sys::close(f).unwrap();
        let m = self::times(&path)[1];
        if m != (946_684_800, i as i64) {
            wrong.push(format!("f{i} ({len} bytes): mtime {m:?}"));
        }
    }
    assert!(
        wrong.is_empty(),
        "mtime set with futimens before close was replaced by the time of the write:\n{}",
        wrong.join("\n")
    );

    // The same with the path (utimensat) while the file is still open for writing.
    let path = cluster.mount_path(0).join("g");
    let f = sys::open(
        &path,
        libc::O_CREAT | libc::O_WRONLY | libc::O_APPEND,
        0o644,
    )
    .unwrap();
    sys::write(&f, b"more").unwrap();
    sys::utimensat(&path, Some([ts(5, 0), ts(6, 0)]), 0).unwrap();
    sys::close(f).unwrap();
    assert_eq!(
        self::times(&path)[1],
        (6, 0),
        "mtime set before close, after a write"
    );
}

#[test]
fn times_beyond_2038_and_before_1970_are_kept() {
    let cluster = Cluster::builder().chunkservers(1).mounts(2).start();
    let path = cluster.mount_path(0).join("f");
    std::fs::write(&path, b"x").unwrap();
    for (sec, nsec) in [
        (2_147_483_647i64, 999_999_999i64), // the last second of 32-bit time
        (2_147_483_648, 0),                 // the first after it (2038-01-19)
        (4_102_444_800, 500),               // 2100-01-01
        (16_725_225_600, 1),                // 2500-01-01
        (-1, 0),                            // 1969-12-31 23:59:59
        (-2_208_988_800, 0),                // 1900-01-01
    ] {
        sys::utimensat(&path, Some([ts(sec, nsec), ts(sec, nsec)]), 0).unwrap();
        assert_eq!(times(&path)[1], (sec, nsec), "mtime {sec}.{nsec:09}");
        let other = times(&cluster.mount_path(1).join("f"));
        // The other mount may have it cached for up to the attribute timeout.
        if other[1] != (sec, nsec) {
            std::thread::sleep(Duration::from_millis(1100));
            assert_eq!(
                times(&cluster.mount_path(1).join("f"))[1],
                (sec, nsec),
                "mtime {sec}.{nsec:09} seen from another mount"
            );
        }
    }
}

/// Which of (atime, mtime, ctime) an operation changed, for a file and its directory.
type Changes = [bool; 6];

fn changed(
    before: &[(i64, i64); 3],
    after: &[(i64, i64); 3],
    dir_before: &[(i64, i64); 3],
    dir_after: &[(i64, i64); 3],
) -> Changes {
    [
        after[0] != before[0],
        after[1] != before[1],
        after[2] != before[2],
        dir_after[0] != dir_before[0],
        dir_after[1] != dir_before[1],
        dir_after[2] != dir_before[2],
    ]
}

fn describe(c: &Changes) -> String {
    let names = [
        "file.atime",
        "file.mtime",
        "file.ctime",
        "dir.atime",
        "dir.mtime",
        "dir.ctime",
    ];
    let set: Vec<&str> = names
        .iter()
        .zip(c)
        .filter(|(_, b)| **b)
        .map(|(n, _)| *n)
        .collect();
    if set.is_empty() {
        "nothing".into()
    } else {
        set.join(" ")
    }
}

type Step = (&'static str, fn(&Path));

fn steps() -> Vec<Step> {
    fn f(d: &Path) -> std::path::PathBuf {
        d.join("f")
    }
    vec![
        ("create f", |d| drop(std::fs::File::create(f(d)).unwrap())),
        ("write f", |d| std::fs::write(f(d), b"some data").unwrap()),
        ("first read after the write", |d| {
            drop(std::fs::read(f(d)).unwrap())
        }),
        ("second read", |d| drop(std::fs::read(f(d)).unwrap())),
        ("chmod f", |d| sys::chmod(&f(d), 0o600).unwrap()),
        ("chown f to its owner", |d| {
            sys::lchown(&f(d), 0, 0).unwrap()
        }),
        ("read after the chmod", |d| {
            drop(std::fs::read(f(d)).unwrap())
        }),
        ("read again", |d| drop(std::fs::read(f(d)).unwrap())),
        ("open, chmod, read through the open file", |d| {
            use std::io::Read;
            let mut file = std::fs::File::open(f(d)).unwrap();
            sys::chmod(&f(d), 0o644).unwrap();
            file.read_to_end(&mut Vec::new()).unwrap();
        }),
        ("truncate f larger", |d| sys::truncate(&f(d), 100).unwrap()),
        ("append to f", |d| {
            use std::io::Write;
            std::fs::OpenOptions::new()
                .append(true)
                .open(f(d))
                .unwrap()
                .write_all(b"+")
                .unwrap()
        }),
        ("open f for writing, no write", |d| {
            drop(std::fs::OpenOptions::new().write(true).open(f(d)).unwrap())
        }),
        ("link f g", |d| sys::link(&f(d), &d.join("g")).unwrap()),
        ("unlink g", |d| sys::unlink(&d.join("g")).unwrap()),
        ("rename f to h and back", |d| {
            sys::rename(&f(d), &d.join("h")).unwrap();
            sys::rename(&d.join("h"), &f(d)).unwrap();
        }),
        ("setxattr on f", |d| {
            sys::setxattr(&f(d), "user.t", b"v", 0, true).unwrap()
        }),
        ("mkdir sub", |d| sys::mkdir(&d.join("sub"), 0o755).unwrap()),
        ("list the dir", |d| drop(sys::list(d).unwrap())),
        ("list the dir again", |d| drop(sys::list(d).unwrap())),
        ("rmdir sub", |d| sys::rmdir(&d.join("sub")).unwrap()),
        ("symlink in the dir", |d| {
            sys::symlink("f", &d.join("s")).unwrap()
        }),
        ("utimes f to now", |d| {
            sys::utimensat(&f(d), None, 0).unwrap()
        }),
        ("stat f", |d| {
            let _ = sys::lstat(&f(d)).unwrap();
        }),
        ("O_TRUNC f", |d| drop(std::fs::File::create(f(d)).unwrap())),
    ]
}

/// Runs the steps in `root/t`, returning what each changed.
fn run_steps(root: &Path) -> Vec<(String, String)> {
    let dir = root.join("t");
    sys::mkdir(&dir, 0o755).unwrap();
    let file = dir.join("f");
    let mut out = Vec::new();
    for (name, step) in steps() {
        // Step the clock past the coarse timestamps of local filesystems.
        std::thread::sleep(Duration::from_millis(25));
        let (fb, db) = (sys::lstat(&file).ok().map(|_| times(&file)), times(&dir));
        step(&dir);
        let (fa, da) = (times(&file), times(&dir));
        let c = changed(&fb.unwrap_or([(-1, -1); 3]), &fa, &db, &da);
        out.push((name.to_owned(), describe(&c)));
    }
    out
}

#[test]
fn atime_mtime_and_ctime_change_exactly_as_on_a_local_filesystem() {
    let cluster = Cluster::builder().chunkservers(1).start();
    let ext = host::local_dir("times");
    let tmpfs = host::tmpfs_dir("times");
    let on_ext = run_steps(ext.path());
    let on_tmpfs = run_steps(tmpfs.path());
    let on_elk = run_steps(cluster.mount_path(0));
    let mut report = String::new();
    let mut bad = false;
    for ((e, t), k) in on_ext.iter().zip(&on_tmpfs).zip(&on_elk) {
        // Where ext4 and tmpfs differ the step shows a filesystem's choice, not Linux's rule;
        // ElkFS may then match either.
        let ok = k.1 == e.1 || k.1 == t.1;
        bad |= !ok;
        let mark = if ok { "  " } else { "!!" };
        report.push_str(&format!(
            "{mark} {:<32} ext4: {:<40} tmpfs: {:<40} elkfs: {}\n",
            e.0, e.1, t.1, k.1
        ));
    }
    assert!(!bad, "timestamps change differently on ElkFS:\n{report}");
    assert_eq!(
        on_ext[1].1, "file.mtime file.ctime",
        "sanity: a write on ext4\n{report}"
    );
}
