//! `ls -l`: listings that carry each name's attributes (READDIRPLUS) show what `stat` and
//! `getxattr` show, across pages of the master's listing, for files changed through this mount
//! or another one, and a listing started again shows what changed since.

use std::collections::HashSet;
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use elkfs_testkit::{Cluster, wait_until};

use crate::sys::{self, Errno};

/// More names than one page of the master's listing (1 024), so several pages are read.
const FILES: u64 = 2_500;

fn name(i: u64) -> String {
    format!("f{i:05}")
}

/// Every name in `dir` with its size, as `ls -l` reads them (names first, then `lstat`).
fn listed_sizes(dir: &Path) -> Vec<(String, u64)> {
    let mut out: Vec<(String, u64)> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| {
            let e = e.unwrap();
            let size = std::fs::symlink_metadata(e.path()).unwrap().size();
            (e.file_name().into_string().unwrap(), size)
        })
        .collect();
    out.sort();
    out
}

#[test]
fn a_listing_with_attributes_agrees_with_stat_and_getxattr_across_mounts() {
    let mut cluster = Cluster::builder().chunkservers(1).start();
    let writer = cluster.mount_path(0).join("d");
    std::fs::create_dir(&writer).unwrap();
    for i in 0..FILES {
        let f = std::fs::File::create(writer.join(name(i))).unwrap();
        f.set_len(i).unwrap();
    }
    sys::setxattr(&writer.join(name(7)), "user.before", b"set", 0, true).unwrap();
    let i = cluster.add_mount(None, "");
    let reader = cluster.mount_path(i).join("d");

    let expected: Vec<(String, u64)> = (0..FILES).map(|i| (name(i), i)).collect();
    assert_eq!(listed_sizes(&reader), expected);
    // Right after the listing: the attribute set before is there, others are absent.
    assert_eq!(
        sys::getxattr(&reader.join(name(7)), "user.before").unwrap(),
        b"set"
    );
    assert_eq!(
        sys::listxattr(&reader.join(name(7))).unwrap(),
        vec!["user.before"]
    );
    assert_eq!(
        sys::getxattr(&reader.join(name(8)), "user.before"),
        Err(Errno(libc::ENODATA))
    );
    assert_eq!(
        sys::listxattr(&reader.join(name(8))).unwrap(),
        Vec::<String>::new()
    );

    // A change through the listing mount itself shows at once.
    sys::setxattr(&reader.join(name(8)), "user.here", b"at once", 0, true).unwrap();
    assert_eq!(
        sys::getxattr(&reader.join(name(8)), "user.here").unwrap(),
        b"at once"
    );
    assert_eq!(
        sys::listxattr(&reader.join(name(8))).unwrap(),
        vec!["user.here"]
    );

    // Changes through the other mount show once the attribute cache time has passed.
    sys::setxattr(&writer.join(name(9)), "user.there", b"later", 0, true).unwrap();
    std::fs::File::options()
        .write(true)
        .open(writer.join(name(10)))
        .unwrap()
        .set_len(12_345)
        .unwrap();
    wait_until(
        Duration::from_secs(5),
        "the other mount's changes show",
        || {
            let sizes = listed_sizes(&reader);
            sys::getxattr(&reader.join(name(9)), "user.there").as_deref() == Ok(b"later")
                && sizes[10] == (name(10), 12_345)
        },
    );
}

#[test]
fn ls_shows_which_files_have_acls_in_a_listing_from_another_mount() {
    let mut cluster = Cluster::builder().chunkservers(1).start();
    let writer = cluster.mount_path(0).join("d");
    std::fs::create_dir(&writer).unwrap();
    for f in ["plain", "with-acl"] {
        std::fs::write(writer.join(f), b"x").unwrap();
    }
    let status = Command::new("setfacl")
        .args(["-m", "u:1234:r"])
        .arg(writer.join("with-acl"))
        .status()
        .expect("running setfacl (Debian package acl)");
    assert!(status.success());
    let i = cluster.add_mount(None, "");
    let reader = cluster.mount_path(i).join("d");
    let out = Command::new("ls").arg("-l").arg(&reader).output().unwrap();
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).unwrap();
    let mode_of = |file: &str| {
        text.lines()
            .find(|l| l.ends_with(&format!(" {file}")))
            .and_then(|l| l.split(' ').next())
            .unwrap_or_else(|| panic!("{file} missing from ls -l:\n{text}"))
            .to_string()
    };
    assert_eq!(mode_of("plain"), "-rw-r--r--", "{text}");
    assert_eq!(mode_of("with-acl"), "-rw-r--r--+", "{text}");
}

#[test]
fn a_listing_started_again_shows_what_changed_since() {
    let cluster = Cluster::builder().chunkservers(1).start();
    let dir = cluster.mount_path(0).join("d");
    std::fs::create_dir(&dir).unwrap();
    for i in 0..3 {
        std::fs::write(dir.join(name(i)), b"").unwrap();
    }
    let c = sys::cpath(&dir);
    // SAFETY: `c` is a valid C string; the stream is closed below.
    let stream = unsafe { libc::opendir(c.as_ptr()) };
    assert!(!stream.is_null());
    let read_all = || {
        let mut names = HashSet::new();
        loop {
            // SAFETY: `stream` is open; the name is copied before the next call.
            let ent = unsafe { libc::readdir64(stream) };
            if ent.is_null() {
                return names;
            }
            // SAFETY: d_name is NUL-terminated inside the entry.
            let n = unsafe { std::ffi::CStr::from_ptr((*ent).d_name.as_ptr()) };
            names.insert(n.to_string_lossy().into_owned());
        }
    };
    let first = read_all();
    assert!(first.contains(&name(2)) && !first.contains(&name(3)));
    std::fs::write(dir.join(name(3)), b"").unwrap();
    std::fs::remove_file(dir.join(name(0))).unwrap();
    // SAFETY: `stream` is open.
    unsafe { libc::rewinddir(stream) };
    let again = read_all();
    // SAFETY: closes the stream opened above, once.
    unsafe { libc::closedir(stream) };
    let expected: HashSet<String> = [".", "..", &name(1), &name(2), &name(3)]
        .into_iter()
        .map(String::from)
        .collect();
    assert_eq!(again, expected);
}

#[test]
fn a_listing_continued_after_a_change_through_the_same_mount_shows_the_change() {
    let cluster = Cluster::builder().chunkservers(1).start();
    let dir = cluster.mount_path(0).join("d");
    std::fs::create_dir(&dir).unwrap();
    for i in 0..FILES {
        std::fs::write(dir.join(name(i)), b"").unwrap();
    }
    let c = sys::cpath(&dir);
    // SAFETY: `c` is a valid C string; the stream is closed below.
    let stream = unsafe { libc::opendir(c.as_ptr()) };
    assert!(!stream.is_null());
    // Like `ls -l`: each name is looked at as it is read, so the kernel keeps asking for
    // names with attributes.
    let mut seen = Vec::new();
    let mut next = || {
        // SAFETY: `stream` is open; the name is copied before the next call.
        let ent = unsafe { libc::readdir64(stream) };
        if ent.is_null() {
            return false;
        }
        // SAFETY: d_name is NUL-terminated inside the entry.
        let n = unsafe { std::ffi::CStr::from_ptr((*ent).d_name.as_ptr()) };
        let n = n.to_string_lossy().into_owned();
        let meta = std::fs::symlink_metadata(dir.join(&n)).unwrap();
        seen.push((n, meta.mode() & 0o7777, meta.size()));
        true
    };
    // The first names come with a page of attributes fetched now.
    for _ in 0..10 {
        assert!(next());
    }
    sys::chmod(&dir.join(name(500)), 0o600).unwrap();
    std::fs::File::options()
        .write(true)
        .open(dir.join(name(600)))
        .unwrap()
        .set_len(777)
        .unwrap();
    while next() {}
    // SAFETY: closes the stream opened above, once.
    unsafe { libc::closedir(stream) };
    assert_eq!(seen.len() as u64, FILES + 2, "every name and . and ..");
    let as_listed = |i: u64| seen.iter().find(|(n, ..)| *n == name(i)).unwrap().clone();
    assert_eq!(as_listed(500), (name(500), 0o600, 0));
    assert_eq!(as_listed(600), (name(600), 0o644, 777));
    let changed = std::fs::symlink_metadata(dir.join(name(500))).unwrap();
    assert_eq!(changed.mode() & 0o7777, 0o600);
    let grown = std::fs::symlink_metadata(dir.join(name(600))).unwrap();
    assert_eq!(grown.size(), 777);
}
