//! Directory leases seen from outside: a mount answers lookups of names absent from a
//! directory it made (or, after a few such lookups, any directory) without asking the master,
//! yet never hides a name another mount made there, even when it cannot be reached to give its
//! lease back.

use std::ffi::CString;
use std::fs::File;
use std::os::fd::AsRawFd;
use std::path::Path;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use elkfs_testkit::Cluster;

use crate::support::Frozen;

/// Longer than any lease lasts (10 s) plus the time to notice it ran out.
const LEASE_WAIT: Duration = Duration::from_secs(30);

/// Well under a lease: a change that takes longer waited for the lease to run out instead of
/// having it given back.
const RECALLED: Duration = Duration::from_secs(5);

/// `fstatat(dir, name)` without following links; the errno on failure.
fn lstat_at(dir: &File, name: &str) -> Result<(), i32> {
    let name = CString::new(name).expect("no NUL");
    // SAFETY: an all-zero stat is valid; the pointers live across the call.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    let rc = unsafe {
        libc::fstatat(
            dir.as_raw_fd(),
            name.as_ptr(),
            &mut st,
            libc::AT_SYMLINK_NOFOLLOW,
        )
    };
    match rc {
        0 => Ok(()),
        _ => Err(std::io::Error::last_os_error().raw_os_error().unwrap_or(0)),
    }
}

fn exists(path: &Path) -> Result<(), i32> {
    std::fs::symlink_metadata(path)
        .map(|_| ())
        .map_err(|e| e.raw_os_error().unwrap_or(0))
}

/// Looks `names` up in the directory at `path` while the master is stopped; panics when a
/// lookup waits for it.
fn looked_up_with_the_master_frozen(
    cluster: &Cluster,
    path: &Path,
    names: &[&str],
) -> Vec<Result<(), i32>> {
    // Fresh attributes, so the kernel's permission checks need no master for a second.
    std::fs::metadata(path).unwrap();
    let dir = File::open(path).unwrap();
    let names: Vec<String> = names.iter().map(|n| n.to_string()).collect();
    let master = Frozen::freeze(cluster.master().pid().expect("master running"));
    let (answers, answered) = mpsc::channel();
    std::thread::spawn(move || {
        let found: Vec<_> = names.iter().map(|n| lstat_at(&dir, n)).collect();
        let _ = answers.send(found);
    });
    let found = answered
        .recv_timeout(Duration::from_secs(5))
        .expect("a lookup of a name absent from a leased directory waited for the master");
    master.thaw();
    found
}

#[test]
fn a_mount_answers_for_names_absent_from_a_directory_it_made_while_the_master_is_frozen() {
    let cluster = Cluster::builder().chunkservers(1).start();
    let path = cluster.mount_path(0).join("made here");
    std::fs::create_dir(&path).unwrap();
    let names: Vec<String> = (0..20).map(|i| format!("absent {i}")).collect();
    let names: Vec<&str> = names.iter().map(String::as_str).collect();
    let found = looked_up_with_the_master_frozen(&cluster, &path, &names);
    assert!(
        found.iter().all(|r| *r == Err(libc::ENOENT)),
        "lookups of absent names answered {found:?}"
    );
}

#[test]
fn a_mount_leases_a_directory_made_elsewhere_once_names_looked_up_there_were_absent() {
    let cluster = Cluster::builder().chunkservers(1).mounts(2).start();
    let (a, b) = (
        cluster.mount_path(0).join("d"),
        cluster.mount_path(1).join("d"),
    );
    std::fs::create_dir(&b).unwrap();
    std::fs::write(b.join("old"), b"made on B").unwrap();
    // A change on A recalls the lease B got with its mkdir.
    std::fs::write(a.join("mine"), b"A").unwrap();
    for i in 0..3 {
        assert_eq!(exists(&a.join(format!("absent {i}"))), Err(libc::ENOENT));
    }
    // A asks for the lease in the background.
    std::thread::sleep(Duration::from_secs(3));
    let found = looked_up_with_the_master_frozen(&cluster, &a, &["absent 3", "absent 4"]);
    assert_eq!(found, vec![Err(libc::ENOENT); 2]);
    assert_eq!(
        std::fs::read(a.join("old")).unwrap(),
        b"made on B",
        "a name that was there when A got the lease"
    );
    let start = Instant::now();
    std::fs::write(b.join("new"), b"B again").unwrap();
    assert!(start.elapsed() < RECALLED, "the lease was not given back");
    assert_eq!(std::fs::read(a.join("new")).unwrap(), b"B again");
}

#[test]
fn names_another_mount_makes_in_a_leased_directory_show_at_once() {
    let cluster = Cluster::builder().chunkservers(1).mounts(2).start();
    let (a, b) = (cluster.mount_path(0), cluster.mount_path(1));
    std::fs::write(b.join("outside"), b"moved in").unwrap();
    type Make = fn(&Path, &Path);
    let makes: [(&str, Make); 6] = [
        ("file", |dir, _| {
            std::fs::write(dir.join("n"), b"x").unwrap()
        }),
        ("dir", |dir, _| std::fs::create_dir(dir.join("n")).unwrap()),
        ("symlink", |dir, _| {
            std::os::unix::fs::symlink("target", dir.join("n")).unwrap()
        }),
        ("hard link", |dir, root| {
            std::fs::hard_link(root.join("outside"), dir.join("n")).unwrap()
        }),
        ("rename", |dir, root| {
            std::fs::rename(root.join("outside"), dir.join("n")).unwrap()
        }),
        ("rename within", |dir, _| {
            std::fs::write(dir.join("m"), b"x").unwrap();
            std::fs::rename(dir.join("m"), dir.join("n")).unwrap()
        }),
    ];
    for (what, make) in makes {
        let dir = format!("by {what}");
        std::fs::create_dir(a.join(&dir)).unwrap();
        assert_eq!(exists(&a.join(&dir).join("n")), Err(libc::ENOENT), "{what}");
        let start = Instant::now();
        make(&b.join(&dir), b);
        assert!(
            start.elapsed() < RECALLED,
            "a {what} on B waited {:?}: the lease was not given back",
            start.elapsed()
        );
        assert_eq!(
            exists(&a.join(&dir).join("n")),
            Ok(()),
            "a {what} made on B in a directory A made, looked up on A"
        );
    }
}

#[test]
fn a_change_waits_out_the_lease_of_a_frozen_mount_which_then_sees_it() {
    let cluster = Cluster::builder().chunkservers(1).mounts(2).start();
    let (a, b) = (
        cluster.mount_path(0).join("d"),
        cluster.mount_path(1).join("d"),
    );
    std::fs::create_dir(&a).unwrap();
    assert_eq!(exists(&a.join("n")), Err(libc::ENOENT));
    let holder = Frozen::freeze(cluster.mount(0).pid().expect("mount running"));
    let start = Instant::now();
    let (done, made) = mpsc::channel();
    let made_on_b = b.join("n");
    std::thread::spawn(move || {
        let _ = done.send(std::fs::write(&made_on_b, b"from B").map_err(|e| e.to_string()));
    });
    let result = made
        .recv_timeout(LEASE_WAIT)
        .expect("a create waited past the lease of a mount that does not answer");
    let waited = start.elapsed();
    holder.thaw();
    result.unwrap();
    assert!(
        waited >= RECALLED,
        "the create went ahead after {waited:?}, while the frozen mount held its lease"
    );
    assert_eq!(std::fs::read(a.join("n")).unwrap(), b"from B");
    // The mount whose lease ran out still works in the directory.
    std::fs::write(a.join("after"), b"A").unwrap();
    assert_eq!(std::fs::read(b.join("after")).unwrap(), b"A");
}

#[test]
fn a_mount_uses_no_lease_from_before_the_master_restarted() {
    let mut cluster = Cluster::builder().chunkservers(1).mounts(2).start();
    let (a, b) = (
        cluster.mount_path(0).join("d"),
        cluster.mount_path(1).join("d"),
    );
    std::fs::create_dir(&a).unwrap();
    assert_eq!(exists(&a.join("n")), Err(libc::ENOENT));
    cluster.stop_master();
    cluster.start_master();
    // B reconnects with its write; the new master knows of no lease to recall.
    std::fs::write(b.join("n"), b"after the restart").unwrap();
    assert_eq!(
        std::fs::read(a.join("n")).unwrap(),
        b"after the restart",
        "a name made after a master restart, looked up where the old master had granted a lease"
    );
}

#[test]
fn a_mount_that_stops_gives_its_leases_back() {
    let mut cluster = Cluster::builder().chunkservers(1).mounts(2).start();
    let (a, b) = (
        cluster.mount_path(0).join("d"),
        cluster.mount_path(1).join("d"),
    );
    std::fs::create_dir(&a).unwrap();
    let found = looked_up_with_the_master_frozen(&cluster, &a, &["n"]);
    assert_eq!(found, vec![Err(libc::ENOENT)], "A holds the lease");
    cluster.unmount(0);
    let start = Instant::now();
    std::fs::write(b.join("n"), b"from B").unwrap();
    assert!(
        start.elapsed() < RECALLED,
        "a create waited {:?} for the lease of a mount that had stopped",
        start.elapsed()
    );
}

/// Random creates, unlinks and renames of a few names in a few directories, in bursts on one
/// mount and then the other, with absent names looked up on the other between them: a name one
/// mount made must exist at once for the other. (A name the other mount removed may still be
/// seen for the kernel's entry cache time, 1 s, so only that direction is checked.) The leases
/// in play are mostly those of the first mount's `mkdir`s, recalled by the second: after a
/// recall, a directory is not leased to the same mount again for 30 s, longer than this test
/// runs, so the names sent with a lease asked for are checked by the test above.
#[test]
fn two_mounts_never_hide_each_others_names_through_random_changes() {
    use rand::{Rng, SeedableRng};
    use std::collections::{HashMap, HashSet};
    const DIRS: usize = 3;
    const NAMES: usize = 8;
    type Name = (usize, usize);
    let cluster = Cluster::builder().chunkservers(1).mounts(2).start();
    let roots = [cluster.mount_path(0), cluster.mount_path(1)];
    let path = |m: usize, (d, n): Name| roots[m].join(format!("d{d}")).join(format!("n{n}"));
    for d in 0..DIRS {
        std::fs::create_dir(roots[0].join(format!("d{d}"))).unwrap();
    }
    let mut rng = rand::rngs::StdRng::seed_from_u64(0x5eed_1ea5e);
    let mut present: HashSet<Name> = HashSet::new();
    // When each name was last removed, and by which mount: the other may still have it cached.
    let mut removed: HashMap<Name, (Instant, usize)> = HashMap::new();
    let cached_on = |removed: &HashMap<Name, (Instant, usize)>, m: usize, name: Name| {
        removed
            .get(&name)
            .is_some_and(|(at, by)| *by != m && at.elapsed() < Duration::from_secs(2))
    };
    let mut step = 0;
    for _burst in 0..16 {
        let m = rng.random_range(0..2);
        let other = 1 - m;
        for _ in 0..25 {
            step += 1;
            let name = (rng.random_range(0..DIRS), rng.random_range(0..NAMES));
            let here = path(m, name);
            let made = match rng.random_range(0..4) {
                0 => {
                    let result = std::fs::OpenOptions::new()
                        .write(true)
                        .create_new(true)
                        .open(&here);
                    let exists_here = present.contains(&name) || cached_on(&removed, m, name);
                    match result {
                        Ok(_) => assert!(present.insert(name), "step {step}: made {here:?} twice"),
                        Err(e) => assert!(
                            exists_here && e.raw_os_error() == Some(libc::EEXIST),
                            "step {step}: creating {here:?}: {e}"
                        ),
                    }
                    present.contains(&name).then_some(name)
                }
                1 => {
                    let result = std::fs::remove_file(&here);
                    let was = present.remove(&name);
                    assert_eq!(
                        result.is_ok(),
                        was,
                        "step {step}: unlinking {here:?}: {result:?}"
                    );
                    if was {
                        removed.insert(name, (Instant::now(), m));
                    }
                    None
                }
                2 => {
                    let to = (rng.random_range(0..DIRS), rng.random_range(0..NAMES));
                    let result = std::fs::rename(&here, path(m, to));
                    let was = present.contains(&name);
                    assert_eq!(
                        result.is_ok(),
                        was,
                        "step {step}: renaming {here:?}: {result:?}"
                    );
                    if was && name != to {
                        present.remove(&name);
                        present.insert(to);
                        removed.insert(name, (Instant::now(), m));
                    }
                    was.then_some(to)
                }
                _ => {
                    let absent = path(other, (name.0, rng.random_range(NAMES..2 * NAMES)));
                    assert_eq!(exists(&absent), Err(libc::ENOENT), "step {step}");
                    None
                }
            };
            if let Some(made) = made {
                assert_eq!(
                    exists(&path(other, made)),
                    Ok(()),
                    "step {step}: a name mount {m} made, looked up on mount {other}"
                );
            }
            for n in 0..NAMES {
                let name = (name.0, n);
                if present.contains(&name) {
                    assert_eq!(
                        exists(&path(m, name)),
                        Ok(()),
                        "step {step}: {name:?} on mount {m}"
                    );
                }
            }
        }
    }
}
