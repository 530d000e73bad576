//! Signals to the mount process: SIGTERM flushes and unmounts cleanly, SIGKILL leaves no hung
//! mount point (and `umount -l` clears a dead one).

use std::ffi::OsStr;
use std::process::Command;
use std::sync::mpsc;
use std::time::Duration;

use elkfs_testkit::Cluster;

use crate::host::{self, expect_success, mount_type};
use crate::mounting::{ManualMount, mount_binary, run_bounded};
use crate::sys::{self, Errno};

#[test]
fn sigterm_flushes_buffered_writes_and_unmounts_even_with_a_file_open() {
    let mut cluster = Cluster::builder().chunkservers(2).start();
    let path = cluster.mount_path(0).join("unclosed");
    let data = elkfs_e2e::pseudo_random(5 << 20, 11);
    let file = sys::open(&path, libc::O_CREAT | libc::O_WRONLY, 0o644).unwrap();
    assert_eq!(sys::pwrite(&file, &data, 0).unwrap(), data.len());
    // SIGTERM while the file is still open: the harness checks exit 0 and the detach.
    cluster.unmount(0);
    assert_eq!(mount_type(cluster.mount_path(0)), None);
    drop(file);
    cluster.remount(0);
    assert_eq!(
        std::fs::read(&path).unwrap(),
        data,
        "the data written before SIGTERM is all there after remounting"
    );
}

#[test]
fn a_sigkilled_mount_does_not_hang_its_mount_point_and_umount_l_clears_it() {
    let cluster = Cluster::builder().chunkservers(1).start();
    let mnt = cluster.dir().join("killed");
    let guard = ManualMount::at(&mnt);
    let mut cmd = Command::new(mount_binary());
    cmd.arg(cluster.master_addr().to_string()).arg(&mnt);
    expect_success(
        "elkfs-mount",
        &run_bounded(cmd, Duration::from_secs(30), "elkfs-mount"),
    );
    std::fs::write(mnt.join("f"), b"x").unwrap();
    let pids = guard.server_pids();
    assert_eq!(pids.len(), 1, "one process serves the mount: {pids:?}");
    // SAFETY: kill(2) of the mount process this test started.
    unsafe { libc::kill(pids[0], libc::SIGKILL) };
    guard.wait_until_no_server("the killed mount process is gone");

    // Using the dead mount point returns at once (an error is fine), it does not hang.
    let (tx, rx) = mpsc::channel();
    let probe = mnt.clone();
    std::thread::spawn(move || tx.send(sys::lstat(&probe.join("f")).map(drop)));
    let result = rx
        .recv_timeout(Duration::from_secs(5))
        .expect("stat on the killed mount's mount point hung for 5 s");
    eprintln!("stat on the dead mount: {result:?}");
    if mount_type(&mnt).is_some() {
        // The kernel answers for the dead connection: ENOTCONN, or ECONNABORTED for a request
        // that was queued when the connection went away.
        assert!(
            result == Err(Errno(libc::ENOTCONN)) || result == Err(Errno(libc::ECONNABORTED)),
            "stat on a dead mount: {result:?}"
        );
        let out = host::run("umount", &[OsStr::new("-l"), mnt.as_os_str()], "mount");
        expect_success("umount -l on the dead mount", &out);
    }
    assert_eq!(mount_type(&mnt), None);
    assert_eq!(
        sys::list(&mnt).unwrap(),
        Vec::<String>::new(),
        "the mount point is a plain dir again"
    );
}
