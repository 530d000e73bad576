//! Two mounts of one cluster see each other's changes (within the 1 s attribute cache).

use std::io::Write;
use std::path::Path;
use std::time::Duration;

use elkfs_e2e::all_chunk_files;
use elkfs_testkit::{Cluster, wait_until};

const CACHE: Duration = Duration::from_secs(10);

fn read_eventually(path: &Path, expected: &[u8]) {
    wait_until(
        CACHE,
        &format!("{} to read back the new contents", path.display()),
        || std::fs::read(path).is_ok_and(|d| d == expected),
    );
}

#[test]
fn two_mounts_see_each_others_creates_writes_renames_and_deletes() {
    let cluster = Cluster::builder().chunkservers(2).mounts(2).start();
    let a = cluster.mount_path(0).to_path_buf();
    let b = cluster.mount_path(1).to_path_buf();

    std::fs::create_dir(a.join("dir")).unwrap();
    std::fs::write(a.join("dir/one"), b"first version").unwrap();
    read_eventually(&b.join("dir/one"), b"first version");

    std::fs::write(b.join("dir/one"), b"second version, longer").unwrap();
    read_eventually(&a.join("dir/one"), b"second version, longer");

    std::fs::rename(a.join("dir/one"), a.join("dir/two")).unwrap();
    wait_until(CACHE, "the rename to show on the other mount", || {
        !b.join("dir/one").exists() && b.join("dir/two").exists()
    });
    read_eventually(&b.join("dir/two"), b"second version, longer");

    std::fs::remove_file(b.join("dir/two")).unwrap();
    wait_until(CACHE, "the delete to show on the other mount", || {
        !a.join("dir/two").exists()
    });
    let listing: Vec<_> = std::fs::read_dir(a.join("dir")).unwrap().collect();
    assert!(listing.is_empty(), "{listing:?}");
    std::fs::remove_dir(b.join("dir")).unwrap();
    wait_until(CACHE, "the rmdir to show on the other mount", || {
        !a.join("dir").exists()
    });
}

#[test]
fn a_write_after_another_mount_truncated_the_file_does_not_bring_the_old_length_back() {
    use std::os::unix::fs::FileExt;

    let cluster = Cluster::builder().chunkservers(2).mounts(2).start();
    let a = cluster.mount_path(0).join("cut");
    let b = cluster.mount_path(1).join("cut");
    let writer = std::fs::OpenOptions::new()
        .create(true)
        .truncate(true)
        .read(true)
        .write(true)
        .open(&a)
        .unwrap();
    writer.write_all_at(&vec![b'x'; 10 << 20], 0).unwrap();
    writer.sync_all().unwrap();

    // The other mount cuts the file while the first keeps it open, then the first writes a
    // little at the start: as on a local file system, the file is that little, not the
    // 10 MiB it was before the cut.
    std::fs::OpenOptions::new()
        .write(true)
        .open(&b)
        .unwrap()
        .set_len(0)
        .unwrap();
    writer.write_all_at(b"after the cut", 0).unwrap();
    writer.sync_all().unwrap();
    drop(writer);
    wait_until(CACHE, "the other mount to see the new contents", || {
        std::fs::read(&b).is_ok_and(|d| d == b"after the cut")
    });
}

/// One mount appending through `O_APPEND` while another keeps cutting the file to nothing (an
/// application's log under logrotate's `copytruncate`): every append succeeds, as on a local
/// filesystem, however the truncates fall between the append's steps; and the last append reads
/// back at the end of the file.
#[test]
fn appends_go_on_without_errors_while_another_mount_keeps_truncating_the_file() {
    use std::io::Write;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};

    let cluster = Cluster::builder().chunkservers(3).mounts(2).start();
    let a = cluster.mount_path(0).join("app.log");
    let b = cluster.mount_path(1).join("app.log");
    std::fs::write(&a, b"").unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let truncater = {
        let (b, stop) = (b.clone(), stop.clone());
        std::thread::spawn(move || {
            let mut cuts = 0u32;
            while !stop.load(Ordering::Relaxed) {
                std::fs::OpenOptions::new()
                    .write(true)
                    .open(&b)
                    .and_then(|f| f.set_len(0))
                    .expect("truncating from the other mount");
                cuts += 1;
                std::thread::sleep(Duration::from_millis(20));
            }
            cuts
        })
    };
    let mut log = std::fs::OpenOptions::new().append(true).open(&a).unwrap();
    let block = vec![b'x'; 256 * 1024];
    let started = std::time::Instant::now();
    let mut failures = Vec::new();
    let mut appends = 0;
    while started.elapsed() < Duration::from_secs(4) {
        match log.write(&block) {
            Ok(n) if n == block.len() => appends += 1,
            Ok(n) => failures.push(format!("short write of {n} bytes")),
            Err(e) => failures.push(e.to_string()),
        }
    }
    stop.store(true, Ordering::Relaxed);
    let cuts = truncater.join().unwrap();
    let last = vec![b'L'; 4096];
    log.write_all(&last).unwrap();
    log.sync_all().unwrap();
    drop(log);
    assert!(
        failures.is_empty(),
        "{} of {} appends failed while the other mount truncated {cuts} times: {:?}",
        failures.len(),
        appends + failures.len(),
        failures
    );
    assert!(
        cuts > 10,
        "only {cuts} truncates: the race was hardly tried"
    );
    let data = std::fs::read(&a).unwrap();
    assert!(
        data.ends_with(&last),
        "the last append is not at the end of the file"
    );
}

#[test]
fn a_mount_writing_with_pauses_lets_another_mount_write_the_same_chunk_and_shows_its_length() {
    // While mount A writes in bursts it keeps its write lease through the pauses; mount B's
    // writes to the same chunk must still get their turn, and B must see A's length grow
    // before A closes the file.
    let cluster = Cluster::builder().chunkservers(2).mounts(2).start();
    let (a, b) = (cluster.mount_path(0), cluster.mount_path(1));
    let mut writer = std::fs::File::create(a.join("shared")).unwrap();
    let block = vec![b'a'; 4096];
    for _ in 0..4 {
        writer.write_all(&block).unwrap();
        std::thread::sleep(Duration::from_millis(20));
    }
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let keep_writing = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            let mut written = 4;
            // Until B is done; the cap only bounds a test that has failed.
            while !stop.load(std::sync::atomic::Ordering::Relaxed) && written < 6000 {
                writer.write_all(&block).unwrap();
                written += 1;
                std::thread::sleep(Duration::from_millis(10));
            }
            writer
        })
    };
    wait_until(
        Duration::from_secs(10),
        "mount B to see the length of the file mount A is writing",
        || {
            std::fs::metadata(b.join("shared"))
                .map(|m| m.len() >= 4 * 4096)
                .unwrap_or(false)
        },
    );
    let turn = std::time::Instant::now();
    let mut other = std::fs::OpenOptions::new()
        .write(true)
        .open(b.join("shared"))
        .unwrap();
    other.write_all(b"written by B").unwrap();
    other.sync_all().unwrap();
    drop(other);
    // A lease kept until its 20 s renewal would hold B back that long.
    assert!(
        turn.elapsed() < Duration::from_secs(15),
        "mount B waited {:?} for its turn to write",
        turn.elapsed()
    );
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    drop(keep_writing.join().unwrap());
    let mut seen = vec![0u8; 12];
    let mut f = std::fs::File::open(b.join("shared")).unwrap();
    std::io::Read::read_exact(&mut f, &mut seen).unwrap();
    assert_eq!(&seen, b"written by B");
}

#[test]
fn a_write_cut_off_by_another_mounts_truncate_does_not_make_the_file_long_again() {
    // Mount A writes in bursts, so it keeps its write lease between them; mount B empties the
    // file meanwhile (a truncate to a chunk boundary takes no lease). A's lease, ended at its
    // close, reports the length it had stored in the chunk the truncate dropped: that length
    // must not come back. (On a machine slow enough that A's lease ended before B's truncate,
    // the test passes without testing that.)
    let cluster = Cluster::builder().chunkservers(2).mounts(2).start();
    let (a, b) = (cluster.mount_path(0), cluster.mount_path(1));
    let mut writer = std::fs::File::create(a.join("cut")).unwrap();
    let block = vec![b'a'; 256 * 1024];
    for _ in 0..3 {
        writer.write_all(&block).unwrap();
        std::thread::sleep(Duration::from_millis(20));
    }
    writer.write_all(&block).unwrap();
    // Once both copies hold every byte, A has nothing left to send (had a piece reached a
    // server after the truncate, A would rightly write it again into a new chunk).
    wait_until(
        Duration::from_secs(10),
        "both copies of the chunk to hold what mount A wrote",
        || {
            let copies: Vec<u64> = all_chunk_files(&cluster)
                .iter()
                .map(|f| std::fs::metadata(&f.path).map_or(0, |m| m.len()))
                .collect();
            copies.len() == 2 && copies.iter().all(|&len| len >= 64 * 1024 + 1024 * 1024)
        },
    );
    std::fs::File::create(b.join("cut")).unwrap();
    drop(writer);
    // Past the attribute cache of both mounts.
    std::thread::sleep(Duration::from_millis(1500));
    for mount in [a, b] {
        assert_eq!(std::fs::metadata(mount.join("cut")).unwrap().len(), 0);
        assert!(std::fs::read(mount.join("cut")).unwrap().is_empty());
    }
}
