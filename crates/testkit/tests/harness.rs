//! The harness against the real ElkFS binaries: a cluster with three chunkservers and a FUSE
//! mount keeps a file across `restart_all`, and dropping it leaves no process and no mount.
//! Skipped, with a notice, only while the binaries are not built yet.

use std::path::Path;
use std::time::Duration;

use elkfs_testkit::{Cluster, Process, cluster_binaries_available, fuse_available, wait_until};

/// False (after printing why) when the ElkFS binaries are not built yet.
fn binaries_built() -> bool {
    match cluster_binaries_available() {
        Ok(()) => true,
        Err(e) => {
            eprintln!("SKIPPED: the ElkFS binaries are not built yet: {e}");
            false
        }
    }
}

fn is_our_process(pid: u32) -> bool {
    std::fs::read(format!("/proc/{pid}/cmdline"))
        .is_ok_and(|cmdline| String::from_utf8_lossy(&cmdline).contains("elkfs-"))
}

fn is_mounted(path: &Path) -> bool {
    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").expect("reading mountinfo");
    let path = path.to_string_lossy();
    mountinfo
        .lines()
        .any(|line| line.split(' ').nth(4) == Some(path.as_ref()))
}

#[test]
fn file_survives_restart_all_and_drop_leaves_nothing_behind() {
    if !binaries_built() {
        return;
    }
    if let Err(reason) = fuse_available() {
        panic!("FUSE end-to-end tests cannot run here: {reason}");
    }
    let mut cluster = Cluster::builder().chunkservers(3).mounts(1).start();
    let mountpoint = cluster.mount_path(0).to_path_buf();
    assert!(
        is_mounted(&mountpoint),
        "{} is not mounted",
        mountpoint.display()
    );

    let file = mountpoint.join("hello.bin");
    let data: Vec<u8> = (0..3_000_000u32).map(|i| (i % 251) as u8).collect();
    std::fs::write(&file, &data).expect("writing through the mount");
    assert_eq!(std::fs::read(&file).expect("reading back"), data);

    let master = cluster.master_addr();
    cluster.restart_all();
    assert_eq!(
        cluster.master_addr(),
        master,
        "the master moved to another port"
    );
    assert!(
        is_mounted(&mountpoint),
        "not mounted again after restart_all"
    );
    assert_eq!(
        std::fs::read(&file).expect("reading after restart_all"),
        data
    );
    assert!(
        cluster.log_of(Process::Master).contains(" INFO "),
        "the master logs nothing at info level"
    );

    let pids = cluster.pids();
    assert_eq!(pids.len(), 5, "master + 3 chunkservers + 1 mount");
    let dir = cluster.dir().to_path_buf();
    drop(cluster);

    wait_until(Duration::from_secs(1), "the processes are reaped", || {
        pids.iter().all(|&pid| !is_our_process(pid))
    });
    assert!(!is_mounted(&mountpoint), "the mountpoint is still mounted");
    assert!(!dir.exists(), "the cluster directory was not removed");
}

#[test]
fn processes_can_be_killed_restarted_and_mounted_again() {
    if !binaries_built() {
        return;
    }
    if let Err(reason) = fuse_available() {
        panic!("FUSE end-to-end tests cannot run here: {reason}");
    }
    let mut cluster = Cluster::builder().chunkservers(2).mounts(1).start();
    let root = cluster.mount_path(0).to_path_buf();
    std::fs::create_dir(root.join("sub")).expect("mkdir through the mount");
    std::fs::write(root.join("sub/a.txt"), b"in sub").expect("writing into sub");

    let sub = cluster.add_mount(Some("sub"), "");
    let sub_path = cluster.mount_path(sub).to_path_buf();
    assert_eq!(
        std::fs::read(sub_path.join("a.txt")).expect("reading through the subdir mount"),
        b"in sub"
    );

    cluster.kill_mount(sub);
    assert!(!is_mounted(&sub_path), "a killed mount must be detached");
    cluster.remount(sub);
    assert!(sub_path.join("a.txt").exists());
    cluster.unmount(sub);
    assert!(!is_mounted(&sub_path));

    let master = cluster.master_addr();
    cluster.kill_master();
    cluster.start_master();
    assert_eq!(cluster.master_addr(), master);

    cluster.kill_chunkserver(1);
    cluster.start_chunkserver(1);
    let added = cluster.add_chunkserver();
    assert_eq!(cluster.chunkserver_data_dirs(added).len(), 1);

    wait_until(
        Duration::from_secs(20),
        "the mount works after the master restart",
        || std::fs::read(root.join("sub/a.txt")).is_ok_and(|d| d == b"in sub"),
    );
}
