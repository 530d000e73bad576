//! Sparse files: holes read as zeros and take no space in chunk files; files larger than 4 GiB
//! keep their length and data; truncate extends with zeros and shrinks for good.

use std::path::Path;

use elkfs_e2e::{chunk_files, pseudo_random};
use elkfs_testkit::Cluster;

use crate::sys::{self, Errno};

const GIB: u64 = 1024 * 1024 * 1024;
const MIB: u64 = 1024 * 1024;

/// Bytes the chunkservers really use on disk for chunk files (allocated blocks, not lengths).
fn chunk_bytes_on_disk(cluster: &Cluster) -> u64 {
    let mut total = 0;
    for i in 0..cluster.chunkserver_count() {
        for dir in cluster.chunkserver_data_dirs(i) {
            for chunk in chunk_files(i, dir) {
                let st = sys::lstat(&chunk.path).expect("stat a chunk file");
                total += st.st_blocks as u64 * 512;
            }
        }
    }
    total
}

fn zeros_at(path: &Path, offset: u64, len: usize) {
    let f = sys::open(path, libc::O_RDONLY, 0).unwrap();
    let data = sys::pread(&f, len, offset).unwrap();
    assert_eq!(data.len(), len, "short read at {offset}");
    assert!(
        data.iter().all(|&b| b == 0),
        "the hole at {offset}..{} of {} is not all zeros",
        offset + len as u64,
        path.display()
    );
}

#[test]
fn holes_read_as_zeros_and_store_nothing() {
    let cluster = Cluster::builder().chunkservers(1).start();
    let path = cluster.mount_path(0).join("sparse");
    let f = sys::open(&path, libc::O_CREAT | libc::O_WRONLY, 0o644).unwrap();
    sys::pwrite(&f, b"Z", GIB).unwrap();
    sys::close(f).unwrap();

    assert_eq!(sys::lstat(&path).unwrap().st_size, (GIB + 1) as i64);
    zeros_at(&path, 0, 1 << 20);
    zeros_at(&path, GIB / 2 - 4096, 1 << 20);
    zeros_at(&path, GIB - (1 << 20), 1 << 20);
    let f = sys::open(&path, libc::O_RDONLY, 0).unwrap();
    assert_eq!(sys::pread(&f, 10, GIB - 2).unwrap(), b"\0\0Z");

    let used = chunk_bytes_on_disk(&cluster);
    assert!(
        used < 8 * MIB,
        "a file of 1 GiB + 1 byte with one byte written uses {} MiB in chunk files; a hole must \
         store nothing",
        used / MIB
    );
}

#[test]
fn files_larger_than_4_gib_keep_their_length_and_data() {
    let cluster = Cluster::builder().chunkservers(1).mounts(2).start();
    let path = cluster.mount_path(0).join("big");
    let f = sys::open(&path, libc::O_CREAT | libc::O_RDWR, 0o644).unwrap();
    let around_4g = pseudo_random(1 << 20, 7);
    let at_5g = pseudo_random(300_000, 8);
    // Across the 4 GiB boundary, and further out.
    sys::pwrite(&f, &around_4g, 4 * GIB - 500_000).unwrap();
    sys::pwrite(&f, &at_5g, 5 * GIB + 12345).unwrap();
    sys::close(f).unwrap();

    let size = 5 * GIB + 12345 + at_5g.len() as u64;
    assert_eq!(sys::lstat(&path).unwrap().st_size as u64, size);
    let f = sys::open(&path, libc::O_RDONLY, 0).unwrap();
    assert_eq!(
        sys::pread(&f, around_4g.len(), 4 * GIB - 500_000).unwrap(),
        around_4g
    );
    assert_eq!(
        sys::pread(&f, at_5g.len() + 100, 5 * GIB + 12345).unwrap(),
        at_5g
    );
    zeros_at(&path, 4 * GIB + GIB / 2, 65536);

    // Another mount sees the same.
    let other = cluster.mount_path(1).join("big");
    assert_eq!(sys::lstat(&other).unwrap().st_size as u64, size);
    let g = sys::open(&other, libc::O_RDONLY, 0).unwrap();
    assert_eq!(
        sys::pread(&g, 1000, 4 * GIB).unwrap(),
        around_4g[500_000..501_000]
    );

    // Shrink to just past 4 GiB: the rest is gone, what stays is intact.
    sys::truncate(&path, 4 * GIB + 10).unwrap();
    assert_eq!(sys::lstat(&path).unwrap().st_size as u64, 4 * GIB + 10);
    let f = sys::open(&path, libc::O_RDONLY, 0).unwrap();
    assert_eq!(
        sys::pread(&f, 100, 4 * GIB - 10).unwrap(),
        around_4g[500_000 - 10..500_000 + 10]
    );
    // Growing again exposes zeros, not the old data.
    sys::truncate(&path, 5 * GIB + 400_000).unwrap();
    zeros_at(&path, 5 * GIB + 12345, at_5g.len());
    assert!(
        chunk_bytes_on_disk(&cluster) < 64 * MIB,
        "a 5 GiB sparse file with ~1.3 MiB written must not fill chunk files with zeros"
    );
}

#[test]
fn truncate_grows_with_zeros_and_shrinking_discards_data_for_good() {
    let cluster = Cluster::builder().chunkservers(1).start();
    let path = cluster.mount_path(0).join("t");
    let data = pseudo_random(200_000, 9);
    std::fs::write(&path, &data).unwrap();

    sys::truncate(&path, 100).unwrap();
    assert_eq!(std::fs::read(&path).unwrap(), data[..100]);
    sys::truncate(&path, 200_000).unwrap();
    let grown = std::fs::read(&path).unwrap();
    assert_eq!(grown.len(), 200_000);
    assert_eq!(grown[..100], data[..100]);
    assert!(
        grown[100..].iter().all(|&b| b == 0),
        "after shrinking to 100 and growing back, bytes 100.. must be zeros, not the old data"
    );

    // The same through an open descriptor with writes in flight (ftruncate).
    let f = sys::open(&path, libc::O_RDWR, 0).unwrap();
    sys::pwrite(&f, &data, 0).unwrap();
    // SAFETY: ftruncate on an owned descriptor.
    sys::check(unsafe { libc::ftruncate(std::os::fd::AsRawFd::as_raw_fd(&f), 1000) }).unwrap();
    sys::pwrite(&f, b"end", 2000).unwrap();
    sys::close(f).unwrap();
    let got = std::fs::read(&path).unwrap();
    assert_eq!(got.len(), 2003);
    assert_eq!(got[..1000], data[..1000]);
    assert!(got[1000..2000].iter().all(|&b| b == 0));
    assert_eq!(&got[2000..], b"end");

    assert_eq!(sys::truncate(&path, u64::MAX / 2), Err(Errno(libc::EFBIG)));
    assert_eq!(
        sys::truncate(&cluster.mount_path(0).join("missing"), 1),
        Err(Errno(libc::ENOENT))
    );
    std::fs::create_dir(cluster.mount_path(0).join("d")).unwrap();
    assert_eq!(
        sys::truncate(&cluster.mount_path(0).join("d"), 1),
        Err(Errno(libc::EISDIR))
    );
}
