//! Large directories: 100 000 entries list completely, and a listing that runs while others add
//! and remove entries neither loses nor repeats the entries that stayed (readdir offsets stay
//! valid while the directory changes, as ext4's hash cookies and tmpfs's cursors do).

use std::collections::{HashMap, HashSet};
use std::ffi::CStr;
use std::path::{Path, PathBuf};
use std::time::Instant;

use elkfs_testkit::Cluster;

use crate::sys;

const BIG: usize = 100_000;
const THREADS: usize = 8;

/// Creates `names` as empty files with mknod (one request each), from several threads.
fn create_all(dir: &Path, names: Vec<String>) {
    let chunks: Vec<Vec<String>> = names
        .chunks(names.len().div_ceil(THREADS))
        .map(<[String]>::to_vec)
        .collect();
    std::thread::scope(|s| {
        for chunk in chunks {
            s.spawn(move || {
                for name in chunk {
                    sys::mknod(&dir.join(&name), libc::S_IFREG | 0o644, 0)
                        .unwrap_or_else(|e| panic!("creating {name}: {e}"));
                }
            });
        }
    });
}

/// A directory stream read with libc, so telldir/seekdir can be used.
struct DirStream(*mut libc::DIR);

impl DirStream {
    fn open(path: &Path) -> DirStream {
        let c = sys::cpath(path);
        // SAFETY: `c` is a valid C string.
        let d = unsafe { libc::opendir(c.as_ptr()) };
        assert!(
            !d.is_null(),
            "opendir {}: {}",
            path.display(),
            sys::Errno::last()
        );
        DirStream(d)
    }

    /// The next name other than `.` and `..`, or None at the end.
    fn next(&mut self) -> Option<String> {
        loop {
            // SAFETY: `self.0` is an open stream; the entry is copied before the next call.
            let ent = unsafe { libc::readdir64(self.0) };
            if ent.is_null() {
                return None;
            }
            // SAFETY: d_name is NUL-terminated inside the entry.
            let name = unsafe { CStr::from_ptr((*ent).d_name.as_ptr()) }
                .to_string_lossy()
                .into_owned();
            if name != "." && name != ".." {
                return Some(name);
            }
        }
    }

    fn tell(&self) -> libc::c_long {
        // SAFETY: open stream.
        unsafe { libc::telldir(self.0) }
    }

    fn seek(&mut self, pos: libc::c_long) {
        // SAFETY: open stream, position from telldir on it.
        unsafe { libc::seekdir(self.0, pos) }
    }
}

impl Drop for DirStream {
    fn drop(&mut self) {
        // SAFETY: closes the stream opened in `open`, once.
        unsafe { libc::closedir(self.0) };
    }
}

#[test]
fn a_directory_of_100_000_entries_lists_every_entry_once() {
    let cluster = Cluster::builder().chunkservers(1).start();
    let dir = cluster.mount_path(0).join("big");
    std::fs::create_dir(&dir).unwrap();
    let names: Vec<String> = (0..BIG)
        .map(|i| format!("entry-{i:06}-{}", "x".repeat(i % 40)))
        .collect();
    let started = Instant::now();
    create_all(&dir, names.clone());
    let created = started.elapsed();

    let started = Instant::now();
    let mut seen: HashMap<String, usize> = HashMap::with_capacity(BIG);
    let mut stream = DirStream::open(&dir);
    while let Some(name) = stream.next() {
        *seen.entry(name).or_default() += 1;
    }
    drop(stream);
    let listed = started.elapsed();
    eprintln!("created {BIG} entries in {created:?}, listed them in {listed:?}");

    let repeated: Vec<_> = seen.iter().filter(|(_, n)| **n > 1).take(5).collect();
    assert!(
        repeated.is_empty(),
        "entries listed more than once: {repeated:?}"
    );
    let missing: Vec<_> = names
        .iter()
        .filter(|n| !seen.contains_key(*n))
        .take(5)
        .collect();
    assert!(
        missing.is_empty(),
        "entries missing from the listing: {missing:?}"
    );
    assert_eq!(seen.len(), BIG);
    assert_eq!(sys::lstat(&dir).unwrap().st_nlink, 2);

    // Lookups in the big directory work, by name, including the last ones created.
    for i in [0, BIG / 2, BIG - 1] {
        assert!(
            sys::lstat(&dir.join(&names[i])).is_ok(),
            "{} not found",
            names[i]
        );
    }
    // Another listing through std agrees.
    assert_eq!(sys::list(&dir).unwrap().len(), BIG);
}

#[test]
fn listing_while_entries_are_added_and_removed_neither_loses_nor_repeats_stable_entries() {
    let cluster = Cluster::builder().chunkservers(1).mounts(2).start();
    let dir = cluster.mount_path(0).join("busy");
    let other: PathBuf = cluster.mount_path(1).join("busy");
    std::fs::create_dir(&dir).unwrap();
    const N: usize = 6000;
    let names: Vec<String> = (0..N).map(|i| format!("f{i:05}")).collect();
    create_all(&dir, names.clone());
    // Entries removed during the listing: every third one.
    let doomed: HashSet<&String> = names.iter().step_by(3).collect();

    let mut seen: HashMap<String, usize> = HashMap::new();
    let mut stream = DirStream::open(&dir);
    let mut read = 0;
    let mut saved: Option<(libc::c_long, Vec<String>)> = None;
    let mut round = 0;
    let (mut added, mut removed) = (0, 0);
    let mut gone: HashSet<String> = HashSet::new();
    while let Some(name) = stream.next() {
        *seen.entry(name).or_default() += 1;
        read += 1;
        if read % 500 == 0 && round < 10 {
            // Between two reads: add 200 names and remove 200 of the doomed ones, half of them
            // through the same mount and half through another.
            let adder = if round % 2 == 0 { &dir } else { &other };
            let new: Vec<String> = (0..200).map(|i| format!("new-{round}-{i}")).collect();
            added += new.len();
            create_all(adder, new);
            for victim in doomed.iter().skip(round * 200).take(200) {
                sys::unlink(&adder.join(victim)).unwrap();
                gone.insert(victim.to_string());
                removed += 1;
            }
            round += 1;
        }
        if read == 1000 && saved.is_none() {
            // Remember a position and what follows it, to come back to later.
            let pos = stream.tell();
            let mut following = Vec::new();
            for _ in 0..50 {
                if let Some(n) = stream.next() {
                    *seen.entry(n.clone()).or_default() += 1;
                    following.push(n);
                }
            }
            saved = Some((pos, following));
        }
    }
    let repeated: Vec<_> = seen.iter().filter(|(_, n)| **n > 1).take(5).collect();
    assert!(
        repeated.is_empty(),
        "entries listed twice while the directory changed: {repeated:?}"
    );
    let lost: Vec<_> = names
        .iter()
        .filter(|n| !doomed.contains(n) && !seen.contains_key(*n))
        .take(5)
        .collect();
    assert!(
        lost.is_empty(),
        "entries present during the whole listing were not listed: {lost:?}"
    );

    // seekdir to a saved position continues with the same entries (minus removed ones).
    let (pos, following) = saved.expect("a saved position");
    stream.seek(pos);
    // (Not asked of the mount: names it listed stay cached for a second, so a removal through
    // the other mount may not show there yet.)
    let still_there: Vec<&String> = following.iter().filter(|n| !gone.contains(*n)).collect();
    let mut again = Vec::new();
    while again.len() < still_there.len() {
        match stream.next() {
            Some(n) if following.contains(&n) => again.push(n),
            Some(n) if n.starts_with("new-") => {}
            Some(n) => {
                panic!("after seekdir the stream went on with {n}, not one of {following:?}")
            }
            None => break,
        }
    }
    let again: Vec<&String> = again.iter().collect();
    assert_eq!(
        again, still_there,
        "seekdir to a telldir position resumes where it was"
    );

    // The final state lists exactly once per entry.
    let final_names = sys::list(&dir).unwrap();
    let unique: HashSet<&String> = final_names.iter().collect();
    assert_eq!(unique.len(), final_names.len());
    assert_eq!(final_names.len(), N - removed + added);
}
