//! Open-then-unlink: a file removed while open stays readable and writable through its open
//! descriptors until the last one is closed, on the mount that removed it and on others.

use std::os::fd::AsRawFd;
use std::time::Duration;

use elkfs_e2e::pseudo_random;
use elkfs_testkit::{Cluster, wait_until};

use crate::sys::{self, Errno};

const MIB: usize = 1024 * 1024;

#[test]
fn open_then_unlinked_file_stays_readable_and_writable_until_last_close() {
    let cluster = Cluster::builder().chunkservers(2).start();
    let m = cluster.mount_path(0);
    let path = m.join("tmpfile");
    let data = pseudo_random(3 * MIB, 1);
    std::fs::write(&path, &data).unwrap();

    let file = sys::open(&path, libc::O_RDWR, 0).unwrap();
    let reader = sys::open(&path, libc::O_RDONLY, 0).unwrap();
    sys::unlink(&path).unwrap();
    assert_eq!(sys::lstat(&path).map(drop), Err(Errno(libc::ENOENT)));
    assert_eq!(sys::list(m).unwrap(), Vec::<String>::new());

    let st = sys::fstat(&file).unwrap();
    assert_eq!(st.st_nlink, 0, "an unlinked open file has no links");
    assert_eq!(st.st_size, data.len() as i64);
    assert_eq!(
        sys::pread(&reader, data.len(), 0).unwrap(),
        data,
        "all of it still reads"
    );

    // Writing goes on: past the end and in the middle.
    let tail = pseudo_random(MIB, 2);
    assert_eq!(
        sys::pwrite(&file, &tail, data.len() as u64).unwrap(),
        tail.len()
    );
    assert_eq!(sys::pwrite(&file, b"MIDDLE", 1000).unwrap(), 6);
    sys::io_errno(file.sync_all()).expect("fsync of an unlinked file");
    let mut expected = data.clone();
    expected.extend_from_slice(&tail);
    expected[1000..1006].copy_from_slice(b"MIDDLE");
    assert_eq!(sys::fstat(&reader).unwrap().st_size, expected.len() as i64);
    assert_eq!(sys::pread(&reader, expected.len(), 0).unwrap(), expected);

    // The open file can even be opened again through /proc.
    let again = std::fs::read(format!("/proc/self/fd/{}", reader.as_raw_fd()))
        .expect("reopen the unlinked file through /proc/self/fd");
    assert_eq!(again, expected);

    // The name is free for a new, unrelated file.
    std::fs::write(&path, b"a new file").unwrap();
    assert_eq!(std::fs::read(&path).unwrap(), b"a new file");
    assert_eq!(sys::pread(&reader, 10, 0).unwrap(), expected[..10]);

    sys::close(file).unwrap();
    // One descriptor is still open: the data is still there.
    assert_eq!(sys::pread(&reader, expected.len(), 0).unwrap(), expected);
    sys::close(reader).unwrap();
    assert_eq!(std::fs::read(&path).unwrap(), b"a new file");
}

#[test]
fn a_file_unlinked_on_another_mount_stays_readable_where_it_is_open() {
    let cluster = Cluster::builder().chunkservers(2).mounts(2).start();
    let (a, b) = (cluster.mount_path(0), cluster.mount_path(1));
    let data = pseudo_random(8 * MIB, 3);
    std::fs::write(a.join("shared"), &data).unwrap();
    let open_on_a = sys::open(&a.join("shared"), libc::O_RDWR, 0).unwrap();
    // Read a little so the open is real, but leave most of it unread (and uncached).
    assert_eq!(sys::pread(&open_on_a, 4096, 0).unwrap(), data[..4096]);

    sys::unlink(&b.join("shared")).unwrap();
    wait_until(Duration::from_secs(2), "mount A sees the unlink", || {
        !a.join("shared").exists()
    });
    assert_eq!(
        sys::pread(&open_on_a, data.len(), 0).unwrap(),
        data,
        "the open descriptor on mount A reads every byte after the unlink on mount B"
    );
    assert_eq!(sys::pwrite(&open_on_a, b"still writable", 0).unwrap(), 14);
    sys::close(open_on_a).expect("close after writing an unlinked file");
}

#[test]
fn a_removed_directory_held_open_refuses_new_entries_and_still_stats_with_no_links() {
    let cluster = Cluster::builder().chunkservers(1).start();
    let m = cluster.mount_path(0);
    std::fs::create_dir(m.join("gone")).unwrap();
    let dir = sys::open(&m.join("gone"), libc::O_RDONLY | libc::O_DIRECTORY, 0).unwrap();
    sys::rmdir(&m.join("gone")).unwrap();
    let name = std::ffi::CString::new("newfile").unwrap();
    // SAFETY: `dir` is an open directory descriptor and `name` a valid C string.
    let rc = unsafe {
        libc::openat(
            dir.as_raw_fd(),
            name.as_ptr(),
            libc::O_CREAT | libc::O_WRONLY | libc::O_CLOEXEC,
            0o644,
        )
    };
    assert_eq!(
        sys::check(rc).map(drop),
        Err(Errno(libc::ENOENT)),
        "creating in a removed directory"
    );
    assert_eq!(
        sys::fstat(&dir).unwrap().st_nlink,
        0,
        "a removed directory has no links"
    );
}

#[test]
fn a_file_unlinked_right_after_open_stays_readable_in_every_round() {
    // The open and the unlink follow each other closely: however the timing falls, the open
    // descriptor keeps the file.
    let cluster = Cluster::builder().chunkservers(1).start();
    let path = cluster.mount_path(0).join("quick");
    for round in 0..100 {
        let data = format!("round {round} data");
        std::fs::write(&path, &data).unwrap();
        let f = sys::open(&path, libc::O_RDONLY, 0).unwrap();
        sys::unlink(&path).unwrap();
        assert_eq!(
            sys::fstat(&f).map(|s| (s.st_nlink, s.st_size)),
            Ok((0, data.len() as i64)),
            "round {round}: fstat after unlink"
        );
        assert_eq!(
            sys::pread(&f, 100, 0),
            Ok(data.into_bytes()),
            "round {round}: read after unlink"
        );
    }
}
