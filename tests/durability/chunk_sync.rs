//! Data no client fsynced reaches the chunkservers' disks within `sync_interval_secs` (default
//! 5 s), as SPEC.md promises, not only when the kernel gets round to it (30 s by default).
//! Whether a chunk file's pages are still waiting to be written is read with `cachestat(2)`.

use std::os::fd::AsRawFd;
use std::path::Path;
use std::time::Duration;

use elkfs_testkit::{Cluster, wait_until};

/// `cachestat(2)`'s number (the same on every architecture: it came after the tables merged).
const SYS_CACHESTAT: libc::c_long = 451;

#[repr(C)]
struct CachestatRange {
    off: u64,
    len: u64,
}

#[repr(C)]
#[derive(Default)]
struct Cachestat {
    nr_cache: u64,
    nr_dirty: u64,
    nr_writeback: u64,
    nr_evicted: u64,
    nr_recently_evicted: u64,
}

/// Pages of the file at `path` changed in memory and not yet on its disk (dirty or being
/// written back).
fn unwritten_pages(path: &Path) -> std::io::Result<u64> {
    let file = std::fs::File::open(path)?;
    let range = CachestatRange { off: 0, len: 0 };
    let mut stat = Cachestat::default();
    // SAFETY: cachestat reads `range` and writes `stat`, both live for the call; the descriptor
    // is open.
    let rc = unsafe {
        libc::syscall(
            SYS_CACHESTAT,
            file.as_raw_fd(),
            &range as *const CachestatRange,
            &mut stat as *mut Cachestat,
            0,
        )
    };
    if rc != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(stat.nr_dirty + stat.nr_writeback)
}

#[test]
fn data_written_without_fsync_reaches_the_chunkservers_disks_within_the_sync_interval() {
    let _one = super::master_crash::one_cluster_at_a_time();
    let cluster = Cluster::builder().chunkservers(2).mounts(1).start();
    // Less than a MiB (the chunkservers start writing back only full MiBs of a sequential writer
    // by themselves) and less than the 256 KiB they write past the page cache: this stays in
    // their page cache until something syncs it.
    let data: Vec<u8> = (0..200_000u32).map(|i| (i * 7 % 251) as u8).collect();
    std::fs::write(cluster.mount_path(0).join("unsynced"), &data).expect("write");
    let copies: Vec<_> = (0..2)
        .flat_map(|server| {
            cluster
                .chunkserver_data_dirs(server)
                .iter()
                .flat_map(move |dir| elkfs_e2e::chunk_files(server, dir))
        })
        .collect();
    assert_eq!(copies.len(), 2, "one chunk, two copies: {copies:?}");
    let before: Vec<u64> = match copies.iter().map(|c| unwritten_pages(&c.path)).collect() {
        Ok(pages) => pages,
        Err(e) => {
            eprintln!("skipped: this kernel cannot say which pages are unwritten (cachestat: {e})");
            return;
        }
    };
    if before.contains(&0) {
        // Something wrote them back already (a `sync` elsewhere), or the file system keeps
        // no dirty pages (tmpfs): nothing to tell the sync pass by.
        eprintln!("skipped: a copy had no unwritten pages right after the write: {before:?}");
        return;
    }
    wait_until(
        Duration::from_secs(12),
        "every copy's pages are on disk",
        || {
            copies
                .iter()
                .all(|c| unwritten_pages(&c.path).is_ok_and(|n| n == 0))
        },
    );
    assert_eq!(
        std::fs::read(cluster.mount_path(0).join("unsynced")).expect("read"),
        data
    );
}
