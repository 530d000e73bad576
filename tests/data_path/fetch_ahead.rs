//! Small files read back in the order they were written: each chunkserver fetches the chunks
//! after the one read from its disk before they are asked for.

use std::fs::File;
use std::os::fd::AsRawFd;
use std::time::Duration;

use elkfs_e2e::{all_chunk_files, resident_pages};
use elkfs_testkit::{Cluster, wait_until};

/// Drops the cached pages of `path` (clean after a `sync`).
fn evict(path: &std::path::Path) {
    let file = File::open(path).unwrap();
    // SAFETY: posix_fadvise only reads its arguments; the descriptor is open.
    let rc = unsafe { libc::posix_fadvise(file.as_raw_fd(), 0, 0, libc::POSIX_FADV_DONTNEED) };
    assert_eq!(
        rc,
        0,
        "posix_fadvise: {}",
        std::io::Error::from_raw_os_error(rc)
    );
}

/// Whether the first page of the chunk file at `path` (its header's fields) is cached.
fn header_cached(path: &std::path::Path) -> bool {
    resident_pages(&File::open(path).unwrap(), 4096)[0]
}

#[test]
fn files_read_in_the_order_they_were_written_have_the_next_chunks_fetched_ahead() {
    // The chunk test, which reads every chunk in the background, stopped after its first chunk
    // (0 counts as a byte a second).
    let config = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(config.path(), "chunk_test_mib_per_sec = 0\n").unwrap();
    let cluster = Cluster::builder()
        .chunkservers(1)
        .chunkserver_args(["--config".as_ref(), config.path().as_os_str()])
        .start();
    let dir = cluster.mount_path(0);
    for i in 0..30 {
        std::fs::write(dir.join(format!("f{i:02}")), vec![i as u8; 4096]).unwrap();
    }
    // One chunk per file, numbered in the order the files were written.
    let mut chunks = all_chunk_files(&cluster);
    chunks.sort_by_key(|c| c.id);
    assert_eq!(chunks.len(), 30, "one chunk file per file: {chunks:?}");
    // SAFETY: sync has no preconditions.
    unsafe { libc::sync() };
    for chunk in &chunks {
        evict(&chunk.path);
    }
    if chunks.iter().any(|c| header_cached(&c.path)) {
        let data_dir = &cluster.chunkserver_data_dirs(0)[0];
        assert!(
            on_tmpfs(data_dir),
            "the chunk files stayed in the page cache"
        );
        eprintln!(
            "skipped: {} is on tmpfs, whose pages cannot be dropped",
            data_dir.display()
        );
        return;
    }

    // A read far from the last (none yet) fetches nothing.
    assert_eq!(std::fs::read(dir.join("f20")).unwrap(), vec![20u8; 4096]);
    std::thread::sleep(Duration::from_millis(300));
    assert!(
        chunks[21..].iter().all(|c| !header_cached(&c.path)),
        "a read following none fetched chunks ahead"
    );

    for i in 0..4 {
        let read = std::fs::read(dir.join(format!("f{i:02}"))).unwrap();
        assert_eq!(read, vec![i as u8; 4096]);
    }
    wait_until(
        Duration::from_secs(5),
        "the chunks of the next files to be fetched from the disk",
        || chunks[5..14].iter().all(|c| header_cached(&c.path)),
    );
    std::thread::sleep(Duration::from_millis(300));
    assert!(
        !header_cached(&chunks[29].path),
        "a chunk far ahead of the reads was fetched too"
    );
}

fn on_tmpfs(path: &std::path::Path) -> bool {
    let c = std::ffi::CString::new(path.as_os_str().as_encoded_bytes()).unwrap();
    // SAFETY: a valid NUL-terminated path and a statfs buffer it fills.
    unsafe {
        let mut fs: libc::statfs = std::mem::zeroed();
        libc::statfs(c.as_ptr(), &mut fs) == 0 && fs.f_type == libc::TMPFS_MAGIC
    }
}
