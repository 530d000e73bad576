//! The files a mount has open are known to the master per session, so that a file unlinked
//! while open lives on until its last close. After a reconnect the mount tells the new session
//! which files it has open (`Reopen`); an open waiting for the master at that moment must not be
//! counted twice, or the file outlives its last close and its chunks stay until the mount's next
//! reconnect.

use std::os::fd::AsRawFd;
use std::os::unix::fs::OpenOptionsExt;
use std::time::Duration;

use elkfs_testkit::{Cluster, wait_until};

/// How long the tests' masters give mounts to reconnect (`reopen_grace_secs`, 60 s unless set):
/// a mount with files open is back within about 4 s of a master restart (it polls every 2 s).
const REOPEN_GRACE_SECS: u64 = 6;

/// One chunkserver and `mounts` mounts that wait a minute for a master gone, a master that gives
/// mounts `grace_secs` to come back, and the trash time of the whole tree set to `trash_secs`.
/// The config file must outlive the cluster (the master reads it at every start).
fn mounts_with_trash_time(
    mounts: usize,
    grace_secs: u64,
    trash_secs: u32,
) -> (Cluster, tempfile::NamedTempFile) {
    let config = tempfile::NamedTempFile::new().expect("a config file");
    std::fs::write(config.path(), format!("reopen_grace_secs = {grace_secs}\n")).unwrap();
    let cluster = Cluster::builder()
        .chunkservers(1)
        .mounts(mounts)
        .mount_options("master_timeout=60")
        .master_args([std::ffi::OsStr::new("--config"), config.path().as_os_str()])
        .start();
    let m = cluster.mount_path(0).to_str().unwrap().to_owned();
    cluster.run_cli_ok(&["settrashtime", "-r", &trash_secs.to_string(), &m]);
    (cluster, config)
}

/// [`mounts_with_trash_time`] with one mount and [`REOPEN_GRACE_SECS`], and the mount's path.
fn one_mount_with_trash_time(secs: u32) -> (Cluster, tempfile::NamedTempFile, std::path::PathBuf) {
    let (cluster, config) = mounts_with_trash_time(1, REOPEN_GRACE_SECS, secs);
    let m = cluster.mount_path(0).to_path_buf();
    (cluster, config, m)
}

#[test]
fn a_file_opened_while_the_master_restarts_is_purged_after_its_close_and_unlink() {
    let _one = super::master_crash::one_cluster_at_a_time();
    let (mut cluster, _config, m) = one_mount_with_trash_time(0);
    let file = m.join("opened-across");
    std::fs::write(&file, vec![7u8; 100_000]).expect("write");
    wait_until(
        Duration::from_secs(10),
        "the file's chunk is stored",
        || elkfs_e2e::all_chunk_files(&cluster).len() == 1,
    );
    // Opened through /proc from an `O_PATH` descriptor (which the filesystem never sees), the
    // file is not looked up again: the open itself is what waits for the master.
    let path_only = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_PATH)
        .open(&file)
        .expect("O_PATH open");
    let through_proc = format!("/proc/self/fd/{}", path_only.as_raw_fd());

    cluster.kill_master();
    // Two opens wait: the second for the first's answer from the master.
    let openers: Vec<_> = (0..2)
        .map(|_| {
            let path = through_proc.clone();
            std::thread::spawn(move || std::fs::File::open(path))
        })
        .collect();
    std::thread::sleep(Duration::from_millis(700));
    cluster.start_master();
    let opened: Vec<_> = openers
        .into_iter()
        .map(|opener| opener.join().expect("the opener").expect("open"))
        .collect();
    std::fs::remove_file(&file).expect("unlink");
    let mut read_back = Vec::new();
    std::io::Read::read_to_end(&mut &opened[1], &mut read_back).expect("read while unlinked");
    assert_eq!(
        read_back,
        vec![7u8; 100_000],
        "the unlinked file, still open, reads"
    );
    drop(opened);
    drop(path_only);
    wait_until(
        Duration::from_secs(20),
        "the closed, unlinked file's chunk is deleted",
        || elkfs_e2e::all_chunk_files(&cluster).is_empty(),
    );
}

/// A file deleted while open goes to the trash and outlives its trash time until its last close
/// (a log file a daemon still writes). A master restart in between must not purge it before the
/// mount has reconnected and said it has the file open.
#[test]
fn a_trashed_file_still_open_outlives_its_trash_time_across_a_master_restart() {
    let _one = super::master_crash::one_cluster_at_a_time();
    let (mut cluster, _config, m) = one_mount_with_trash_time(1);
    let file = m.join("still-written.log");
    std::fs::write(&file, vec![5u8; 100_000]).expect("write");
    let mut open = std::fs::OpenOptions::new()
        .read(true)
        .append(true)
        .open(&file)
        .expect("open");
    std::fs::remove_file(&file).expect("unlink");
    // Its trash time passes while it is open.
    std::thread::sleep(Duration::from_millis(2500));

    cluster.kill_master();
    cluster.start_master();
    // Past the reopen grace, when the files due during it are purged unless reopened.
    std::thread::sleep(Duration::from_secs(REOPEN_GRACE_SECS + 1));
    std::io::Write::write_all(&mut open, &[6u8; 1000]).expect("append after the restart");
    open.sync_all().expect("fsync after the restart");
    let mut read_back = Vec::new();
    std::io::Seek::seek(&mut open, std::io::SeekFrom::Start(0)).expect("seek");
    std::io::Read::read_to_end(&mut open, &mut read_back).expect("read after the restart");
    assert_eq!(read_back.len(), 101_000, "the open file lost data");
    assert!(
        read_back[..100_000].iter().all(|&b| b == 5)
            && read_back[100_000..].iter().all(|&b| b == 6)
    );
    drop(open);
    wait_until(
        Duration::from_secs(20),
        "the closed file, past its trash time, is purged and its chunk deleted",
        || elkfs_e2e::all_chunk_files(&cluster).is_empty(),
    );
}

/// A file deleted while two mounts have it open. After a master restart one mount is back and
/// closes it while the other is not back yet: the file must wait for that one (the master cannot
/// know it is still to come), which reads it when back, and is purged at its close.
#[test]
fn a_file_open_on_a_mount_not_back_yet_after_a_master_restart_is_not_purged_by_another_close() {
    let _one = super::master_crash::one_cluster_at_a_time();
    let (mut cluster, _config) = mounts_with_trash_time(2, 10, 0);
    let (a, b) = (
        cluster.mount_path(0).to_path_buf(),
        cluster.mount_path(1).to_path_buf(),
    );
    std::fs::write(a.join("shared"), vec![3u8; 100_000]).expect("write");
    let on_a = std::fs::File::open(a.join("shared")).expect("open on a");
    // Not read before the restart, so that no page of it is in b's page cache.
    let mut on_b = std::fs::File::open(b.join("shared")).expect("open on b");
    std::fs::remove_file(a.join("shared")).expect("unlink");

    cluster.kill_master();
    let b_away = elkfs_e2e::Frozen::freeze(cluster.mount(1).pid().expect("b's mount runs"));
    cluster.start_master();
    // Answered once a is back.
    std::fs::write(a.join("probe"), b"a is back").expect("a create through a");
    drop(on_a);
    // a's close reaches the master within 10 ms; a purge would delete the chunk soon after.
    std::thread::sleep(Duration::from_millis(1500));
    b_away.thaw();
    let mut read_back = Vec::new();
    std::io::Read::read_to_end(&mut on_b, &mut read_back).expect("read on b once back");
    assert_eq!(
        read_back,
        vec![3u8; 100_000],
        "b's open file, unlinked, reads"
    );
    drop(on_b);
    wait_until(
        Duration::from_secs(30),
        "the file is purged after b's close and its chunk deleted",
        || elkfs_e2e::all_chunk_files(&cluster).len() == 1,
    );
}
