//! Caching between mounts: close() on one mount then open() on another always sees the data at
//! once (close-to-open), and every other change shows within the attribute timeout (1 s).

use std::path::Path;
use std::time::{Duration, Instant};

use elkfs_e2e::pseudo_random;
use elkfs_testkit::Cluster;

use crate::host;
use crate::sys::{self, Errno};

/// The attribute timeout, and the slack allowed on top of it for scheduling.
const ATTR_TIMEOUT: Duration = Duration::from_secs(1);
const SLACK: Duration = Duration::from_millis(500);

/// Polls `cond` until the attribute timeout (plus slack) has passed; returns how long it took.
fn within_attr_timeout(what: &str, mut cond: impl FnMut() -> bool) -> Duration {
    let started = Instant::now();
    loop {
        if cond() {
            return started.elapsed();
        }
        if started.elapsed() > ATTR_TIMEOUT + SLACK {
            panic!(
                "{what}: not seen on the other mount within {:?}",
                ATTR_TIMEOUT + SLACK
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn close_then_open_on_another_mount_sees_the_new_data_at_once() {
    let cluster = Cluster::builder().chunkservers(2).mounts(2).start();
    let (a, b) = (
        cluster.mount_path(0).join("f"),
        cluster.mount_path(1).join("f"),
    );
    std::fs::write(&a, b"initial").unwrap();
    assert_eq!(
        std::fs::read(&b).unwrap(),
        b"initial",
        "B has it cached now"
    );
    // Rewrite with lengths that grow, shrink and stay, reading on B right after A's close.
    for (round, len) in [10, 100_000, 3, 3, 200_000, 65_536, 0, 1_500_000, 7]
        .into_iter()
        .enumerate()
    {
        let data = pseudo_random(len, round as u64);
        std::fs::write(&a, &data).unwrap();
        let got = std::fs::read(&b).unwrap();
        assert!(
            got == data,
            "round {round}: B read {} bytes right after A closed a {}-byte file (contents {})",
            got.len(),
            data.len(),
            if got.len() == data.len() {
                "differ"
            } else {
                "-"
            }
        );
        // And the other way round, in place (same length, new bytes).
        let data2 = pseudo_random(len, 1000 + round as u64);
        let f = sys::open(&b, libc::O_WRONLY, 0).unwrap();
        sys::pwrite(&f, &data2, 0).unwrap();
        sys::close(f).unwrap();
        assert_eq!(
            std::fs::read(&a).unwrap(),
            data2,
            "round {round}: A after B's in-place rewrite"
        );
    }
}

#[test]
fn an_open_file_on_another_mount_sees_appended_data_after_reopen() {
    let cluster = Cluster::builder().chunkservers(1).mounts(2).start();
    let (a, b) = (
        cluster.mount_path(0).join("log"),
        cluster.mount_path(1).join("log"),
    );
    std::fs::write(&a, b"line 1\n").unwrap();
    let reader = sys::open(&b, libc::O_RDONLY, 0).unwrap();
    assert_eq!(sys::pread(&reader, 100, 0).unwrap(), b"line 1\n");
    let mut expected = b"line 1\n".to_vec();
    for i in 2..20 {
        let line = format!("line {i}\n");
        let f = sys::open(&a, libc::O_WRONLY | libc::O_APPEND, 0).unwrap();
        sys::write(&f, line.as_bytes()).unwrap();
        sys::close(f).unwrap();
        expected.extend_from_slice(line.as_bytes());
        // A fresh open on B sees everything at once, whatever B's old descriptor has cached.
        assert_eq!(std::fs::read(&b).unwrap(), expected, "after line {i}");
    }
    // The descriptor opened before sees it within the attribute timeout (as `tail -f` needs).
    within_attr_timeout("appends through an old descriptor", || {
        sys::pread(&reader, 10_000, 0).is_ok_and(|d| d == expected)
    });
}

fn mode(p: &Path) -> Option<u32> {
    sys::lstat(p).ok().map(|s| s.st_mode & 0o7777)
}

#[test]
fn metadata_changes_show_on_another_mount_within_the_attribute_timeout() {
    let cluster = Cluster::builder().chunkservers(1).mounts(2).start();
    let (a, b) = (cluster.mount_path(0), cluster.mount_path(1));
    std::fs::write(a.join("f"), b"12345").unwrap();
    std::fs::create_dir(a.join("d")).unwrap();
    // B looks at everything first, so it has it all cached.
    assert_eq!(mode(&b.join("f")), Some(0o644 & !host::umask()));
    assert_eq!(sys::list(&b.join("d")).unwrap(), Vec::<String>::new());
    assert_eq!(sys::lstat(&b.join("f")).unwrap().st_size, 5);

    sys::chmod(&a.join("f"), 0o600).unwrap();
    within_attr_timeout("chmod", || mode(&b.join("f")) == Some(0o600));

    {
        use std::io::Write;
        let mut f = std::fs::OpenOptions::new()
            .append(true)
            .open(a.join("f"))
            .unwrap();
        f.write_all(b"678").unwrap();
    }
    within_attr_timeout("size after an append", || {
        sys::lstat(&b.join("f")).is_ok_and(|s| s.st_size == 8)
    });

    std::fs::write(a.join("d/new"), b"").unwrap();
    within_attr_timeout("a new entry in a listed directory", || {
        sys::list(&b.join("d")).is_ok_and(|l| l == ["new"])
    });
    within_attr_timeout("lookup of the new entry", || b.join("d/new").exists());

    sys::rename(&a.join("d/new"), &a.join("d/renamed")).unwrap();
    within_attr_timeout("rename", || {
        !b.join("d/new").exists() && b.join("d/renamed").exists()
    });

    sys::unlink(&a.join("d/renamed")).unwrap();
    within_attr_timeout("unlink", || {
        sys::lstat(&b.join("d/renamed")).map(drop) == Err(Errno(libc::ENOENT))
    });

    sys::utimensat(&a.join("f"), Some([sys::ts(1000, 1), sys::ts(2000, 2)]), 0).unwrap();
    within_attr_timeout("utimes", || {
        sys::lstat(&b.join("f")).is_ok_and(|s| (s.st_mtime, s.st_mtime_nsec) == (2000, 2))
    });

    sys::setxattr(&a.join("f"), "user.k", b"v1", 0, true).unwrap();
    within_attr_timeout("setxattr", || {
        sys::getxattr(&b.join("f"), "user.k").is_ok_and(|v| v == b"v1")
    });

    sys::rmdir(&a.join("d")).unwrap();
    within_attr_timeout("rmdir", || !b.join("d").exists());
}
