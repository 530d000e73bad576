//! A disk that accepts writes into the page cache and then cannot store them (a thin or
//! overcommitted volume that ran out of backing space): the chunkserver's sync pass finds the
//! lost write, reports the copy damaged, and the master replaces it, so every file keeps its
//! goal of good copies. Without the pass, the kernel reports such a loss to one fsync only and
//! the copy silently holds old or no data on disk.

use std::sync::Arc;
use std::time::Duration;

use elkfs_e2e::ThinDisk;
use elkfs_testkit::{Cluster, Process};

use crate::support::{
    Admin, Configs, Disks, MIB, QUICK_MASTER, check_copies, check_placement, data, eventually,
    write_file,
};

/// What a chunkserver logs when a copy's data could not be written to its disk.
const LOST: &str = "a chunk file could not be written to disk";
/// What it logs when it takes the data directory out of use for new chunks.
const DIR_LOST: &str = "a data directory lost writes";
/// What it logs when it marks a copy lost on its disk.
const MARKED: &str = "marked a copy that lost writes";
/// What it logs when it starts with copies marked lost.
const BEFORE_THIS_START: &str = "lost writes before this start";

type Files = Vec<(std::path::PathBuf, Arc<[u8]>)>;

/// Three servers, the first on a thin disk that can store about 40 MiB and claims 512, their
/// sync passes `sync_interval_secs` apart, and three files of 40 MiB to write through the mount.
/// With `direct_writes` off every write lands in the page cache first, so the disk's shortage
/// shows only when the pages are written back; with it on (the default) a large write's data
/// goes to the disk at once, and the shortage shows in the write itself.
fn thin_cluster(sync_interval_secs: u64, direct_writes: bool) -> (ThinDisk, Cluster, usize, Files) {
    let thin = ThinDisk::new(64, 512);
    let configs = Configs::new(
        QUICK_MASTER,
        &format!("sync_interval_secs = {sync_interval_secs}\ndirect_writes = {direct_writes}\n"),
    );
    let mut cluster = configs.builder().chunkservers(0).start();
    cluster.allow_log_errors(LOST);
    cluster.allow_log_errors(DIR_LOST);
    // Nearly empty, so the first choice for a copy of every new chunk.
    let thin_server = cluster.add_chunkserver_on([thin.path()]);
    cluster.add_chunkserver();
    cluster.add_chunkserver();
    let mnt = cluster.mount_path(0).to_path_buf();
    let files = (0..3)
        .map(|i| (mnt.join(format!("f{i}")), data(40 * MIB, 60 + i)))
        .collect();
    (thin, cluster, thin_server, files)
}

/// The lost-writes markers (`*.lost`) in a chunkserver's data directories.
fn lost_markers(cluster: &Cluster, server: usize) -> Vec<std::path::PathBuf> {
    let mut found = Vec::new();
    for dir in cluster.chunkserver_data_dirs(server) {
        for sub in std::fs::read_dir(dir).expect("listing a data directory") {
            let sub = sub.expect("a directory entry").path();
            for entry in std::fs::read_dir(&sub).into_iter().flatten().flatten() {
                if entry.path().extension().is_some_and(|e| e == "lost") {
                    found.push(entry.path());
                }
            }
        }
    }
    found
}

/// Writes the files through the mount without fsync, as `cp` does.
fn write_without_fsync(files: &Files) {
    for (path, bytes) in files {
        std::fs::write(path, bytes).unwrap_or_else(|e| panic!("writing {}: {e}", path.display()));
    }
}

/// Checks that every file reads back through the mount as written.
fn read_back(files: &Files) {
    for (path, bytes) in files {
        assert!(
            std::fs::read(path).expect("read back") == **bytes,
            "{} reads back wrong",
            path.display()
        );
    }
}

/// Waits until the master lists the thin disk's server with no space available: its data
/// directory takes no new chunks.
fn reports_no_space(cluster: &Cluster, thin_server: usize) {
    let thin_addr = cluster.chunkserver(thin_server).addr();
    let admin = Admin::connect(cluster);
    eventually(
        Duration::from_secs(10),
        "the thin disk's server reports no space",
        || match admin.servers().iter().find(|s| s.addr == thin_addr) {
            Some(s) if s.available == 0 => Ok(()),
            Some(s) => Err(format!("it reports {} bytes available", s.available)),
            None => Err("the master does not list it".into()),
        },
    );
}

/// Waits for the thin disk's server's sync pass to find a lost write.
fn found_by_the_sync_pass(cluster: &Cluster, thin_server: usize) {
    eventually(
        Duration::from_secs(30),
        "the thin disk's server finds a lost write",
        || match cluster
            .log_of(Process::Chunkserver(thin_server))
            .contains(LOST)
        {
            true => Ok(()),
            false => Err("nothing logged yet".into()),
        },
    );
}

/// Waits for every chunk to be back at 2 good copies, then checks the copies as their disks
/// hold them.
fn replaced(cluster: &Cluster, files: &Files) {
    let admin = Admin::connect(cluster);
    eventually(
        Duration::from_secs(90),
        "every chunk has 2 good copies again",
        || check_copies(cluster, &admin, &[0, 1, 2], files, 2),
    );
    // The copies are compared with what their disks hold, not with pages the kernel kept: a
    // lost page stays cached, clean and right, until something needs the memory.
    std::fs::write("/proc/sys/vm/drop_caches", "1\n").expect("dropping the page cache");
    check_copies(cluster, &admin, &[0, 1, 2], files, 2)
        .unwrap_or_else(|e| panic!("read from the disks: {e}"));
    read_back(files);
}

#[test]
fn copies_a_disk_could_not_store_are_reported_and_replaced() {
    // Declared first, so its chunkserver has stopped when the disk goes.
    let (_thin, cluster, thin_server, files) = thin_cluster(1, false);
    // No fsync, as `cp` writes: only the chunkserver's own sync pass can find the loss.
    write_without_fsync(&files);
    found_by_the_sync_pass(&cluster, thin_server);
    replaced(&cluster, &files);
    // Each lost copy was marked on the disk, and the marker went with the copy.
    let log = cluster.log_of(Process::Chunkserver(thin_server));
    assert!(log.contains(MARKED), "no copy was marked lost on the disk");
    let markers = lost_markers(&cluster, thin_server);
    assert!(
        markers.is_empty(),
        "markers left after the copies went: {markers:?}"
    );
    // The disk lost writes: it takes no new chunks, and says it is full.
    reports_no_space(&cluster, thin_server);
}

#[test]
fn a_lost_write_met_by_a_client_fsync_is_reported_and_replaced_too() {
    // No sync pass after the first, at the start: the clients' fsyncs meet the loss first.
    let (_thin, cluster, thin_server, files) = thin_cluster(3600, false);
    for (path, bytes) in &files {
        // EIO, or success once the master has the copy down as damaged: the fsync then covers
        // the copies left, which hold the data.
        match write_file(path, bytes) {
            Ok(()) => {}
            Err(e) if e.raw_os_error() == Some(libc::EIO) => {}
            Err(e) => panic!("writing {}: {e}", path.display()),
        }
    }
    let log = cluster.log_of(Process::Chunkserver(thin_server));
    assert!(
        log.contains("sync failed") && !log.contains(LOST),
        "a client's fsync, and not the sync pass, was to meet the loss; the thin server's log:\n{log}"
    );
    replaced(&cluster, &files);
}

#[test]
fn a_direct_write_the_disk_cannot_store_fails_at_once_and_the_copy_is_made_elsewhere() {
    // A sync pass every second: the hashes and headers still go through the page cache, and
    // those the disk loses are the sync pass's to find.
    let (_thin, cluster, thin_server, files) = thin_cluster(1, true);
    // No fsync, as `cp` writes: the data is on two good copies when the close returns.
    write_without_fsync(&files);
    let log = cluster.log_of(Process::Chunkserver(thin_server));
    // The loop device says ENOSPC where the kernel passes its backing file's error on, EIO
    // where it does not.
    assert!(
        log.contains("write failed")
            && (log.contains("no space left") || log.contains("input/output error")),
        "the thin disk's server was to refuse a write; its log:\n{log}"
    );
    replaced(&cluster, &files);
}

#[test]
fn a_direct_write_the_device_refuses_despite_room_takes_the_directory_out_of_use_at_once() {
    // No sync pass after the first, at the start: only the refused write can tell.
    let (_thin, cluster, thin_server, files) = thin_cluster(3600, true);
    write_without_fsync(&files);
    reports_no_space(&cluster, thin_server);
    let log = cluster.log_of(Process::Chunkserver(thin_server));
    assert!(
        log.contains(DIR_LOST) && !log.contains(LOST),
        "the refused write, not a sync pass, was to take the directory out of use; the log:\n{log}"
    );
    read_back(&files);
}

#[test]
fn a_copy_marked_lost_is_replaced_after_its_chunkserver_and_the_master_restart() {
    let configs = Configs::new(QUICK_MASTER, "");
    let mut cluster = configs.builder().chunkservers(3).start();
    cluster.allow_log_errors(BEFORE_THIS_START);
    let all = [0, 1, 2];
    let file = (cluster.mount_path(0).join("marked"), data(MIB + 99, 71));
    write_file(&file.0, &file.1).expect("write");
    let victim = {
        let admin = Admin::connect(&cluster);
        check_placement(&cluster, &admin, &all, std::slice::from_ref(&file), 2)
            .unwrap_or_else(|e| panic!("after the write: {e}"));
        let chunk = admin.chunks_of(&file.0)[0].clone();
        Disks::scan(&cluster, &all).valid_files(chunk.chunk)[0].clone()
    };
    // As a chunkserver leaves a copy whose fsync lost writes, then both it and the master go
    // down before the copy is replaced: only the marker on disk remembers it.
    cluster.kill_chunkserver(victim.server);
    cluster.kill_master();
    let mut marker = victim.path.clone().into_os_string();
    marker.push(".lost");
    let marker = std::path::PathBuf::from(marker);
    std::fs::write(&marker, b"").expect("writing the marker");
    cluster.start_master();
    cluster.start_chunkserver(victim.server);

    let admin = Admin::connect(&cluster);
    eventually(
        Duration::from_secs(60),
        "the marked copy is replaced, and deleted with its marker",
        || {
            check_copies(&cluster, &admin, &all, std::slice::from_ref(&file), 2)?;
            match (victim.path.exists(), marker.exists()) {
                (false, false) => Ok(()),
                (copy, marker) => Err(format!("copy there: {copy}, marker there: {marker}")),
            }
        },
    );
    assert!(
        cluster
            .log_of(Process::Master)
            .contains("reports a damaged copy"),
        "the master did not hear of the marked copy"
    );
    assert_eq!(
        std::fs::read(&file.0).expect("read back"),
        *file.1,
        "the file reads back wrong"
    );
}
