//! Names looked up ahead: after a few lookups in sorted order the mount fetches the names that
//! follow and answers the kernel's next lookups itself. Those answers must never hide what this
//! mount changed meanwhile, and never hide a name another mount made.

use std::fs::File;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::time::Duration;

use elkfs_testkit::Cluster;

use crate::sys::{self, Errno};

/// Longer than the kernel keeps names (1 s), so that each path is looked up again.
const ENTRIES_EXPIRE: Duration = Duration::from_millis(1300);

fn name(i: usize) -> String {
    format!("f{i:04}")
}

#[test]
fn names_looked_up_ahead_never_hide_this_mounts_own_changes() {
    let cluster = Cluster::builder().chunkservers(1).start();
    let dir = cluster.mount_path(0).join("sorted");
    let elsewhere = cluster.mount_path(0).join("elsewhere");
    std::fs::create_dir(&dir).unwrap();
    std::fs::create_dir(&elsewhere).unwrap();
    const FILES: usize = 64;
    // Open handles change a file without looking its name up, so the kernel asks for the
    // name afresh later while the mount's window may still hold what the file was.
    let handles: Vec<File> = (0..FILES)
        .map(|i| {
            std::fs::OpenOptions::new()
                .read(true)
                .write(true)
                .create_new(true)
                .open(dir.join(name(i)))
                .unwrap()
        })
        .collect();
    let mut expected: Vec<Option<(u32, u64)>> = vec![Some((0o644, 0)); FILES];
    let check = |expected: &[Option<(u32, u64)>], range: std::ops::Range<usize>| {
        for i in range {
            let path = dir.join(name(i));
            match expected[i] {
                Some((mode, size)) => {
                    let meta = std::fs::symlink_metadata(&path)
                        .unwrap_or_else(|e| panic!("{}: {e}", name(i)));
                    assert_eq!(
                        (meta.permissions().mode() & 0o7777, meta.size()),
                        (mode, size),
                        "{}",
                        name(i)
                    );
                }
                None => assert_eq!(
                    sys::lstat(&path).map(|_| ()),
                    Err(Errno(libc::ENOENT)),
                    "{} after this mount removed it",
                    name(i)
                ),
            }
        }
    };
    std::thread::sleep(ENTRIES_EXPIRE);
    // Lookups in order: by the twentieth the mount holds a window well past it.
    check(&expected, 0..20);
    // Change names past the ones looked up, with handles (no lookup) and by name.
    for i in 30..50 {
        match i {
            30..35 => {
                let mode = 0o600 + (i as u32 % 8);
                handles[i]
                    .set_permissions(std::fs::Permissions::from_mode(mode))
                    .unwrap();
                expected[i] = Some((mode, 0));
            }
            35..40 => {
                let size = 1000 + i as u64;
                handles[i].set_len(size).unwrap();
                expected[i] = Some((0o644, size));
            }
            40..45 => {
                // Into another directory: the new name's lookup is no lookup in order here.
                std::fs::rename(dir.join(name(i)), elsewhere.join(name(i))).unwrap();
                expected[i] = None;
            }
            _ => {
                std::fs::remove_file(dir.join(name(i))).unwrap();
                expected[i] = None;
            }
        }
    }
    check(&expected, 20..FILES);
}

#[test]
fn a_name_another_mount_makes_shows_at_once_beside_names_looked_up_ahead() {
    let cluster = Cluster::builder().chunkservers(1).mounts(2).start();
    let (a, b) = (
        cluster.mount_path(0).join("d"),
        cluster.mount_path(1).join("d"),
    );
    std::fs::create_dir(&a).unwrap();
    for i in (0..40).step_by(2) {
        std::fs::write(a.join(name(i)), b"x").unwrap();
    }
    std::thread::sleep(ENTRIES_EXPIRE);
    for i in (0..40).step_by(2) {
        // B looks names up in order, so its window holds the even names; between them,
        // A makes the odd ones, which B must find at once.
        assert!(b.join(name(i)).exists(), "{}", name(i));
        if i + 5 < 40 {
            std::fs::write(a.join(name(i + 5)), b"made on A").unwrap();
            assert_eq!(
                std::fs::read(b.join(name(i + 5))).unwrap(),
                b"made on A",
                "{} made on A, read on B",
                name(i + 5)
            );
        }
    }
    // Removed on A: B may keep it for the attribute cache time, no longer.
    std::fs::remove_file(a.join(name(30))).unwrap();
    std::thread::sleep(ENTRIES_EXPIRE);
    assert_eq!(
        sys::lstat(&b.join(name(30))).map(|_| ()),
        Err(Errno(libc::ENOENT)),
        "{} on B after A removed it",
        name(30)
    );
}
