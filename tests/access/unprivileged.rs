//! The whole cluster without root: master, metalogger, chunkservers and the mount run as an
//! ordinary user made for the test (the mount through the setuid `fusermount3`, as any user's
//! FUSE mount does), and that user writes and reads files through it.

use std::fs;
use std::process::Command;

use std::time::Duration;

use elkfs_client::master::MasterClient;
use elkfs_proto::master::MasterRequest;
use elkfs_proto::types::Caller;
use elkfs_testkit::Cluster;

/// An ordinary user, removed again on drop.
struct User {
    name: String,
    uid: u32,
    gid: u32,
}

impl User {
    fn create() -> User {
        let name = format!("elkun{}", std::process::id());
        let status = Command::new("useradd")
            .args([
                "--user-group",
                "--no-create-home",
                "--shell",
                "/bin/sh",
                &name,
            ])
            .status()
            .expect("running useradd");
        assert!(status.success(), "useradd {name} failed");
        let id = |flag: &str| -> u32 {
            let out = Command::new("id").args([flag, &name]).output().expect("id");
            String::from_utf8_lossy(&out.stdout)
                .trim()
                .parse()
                .expect("a numeric id")
        };
        let (uid, gid) = (id("-u"), id("-g"));
        User { name, uid, gid }
    }

    /// Runs `script` with `sh -c` as this user; returns its standard output.
    fn sh(&self, script: &str) -> String {
        let out = Command::new("setpriv")
            .args([
                &format!("--reuid={}", self.uid),
                &format!("--regid={}", self.gid),
                "--clear-groups",
                "--",
                "sh",
                "-c",
                script,
            ])
            .output()
            .expect("running setpriv");
        assert!(
            out.status.success(),
            "as {}: {script}: {}",
            self.name,
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }
}

impl Drop for User {
    fn drop(&mut self) {
        let _ = Command::new("userdel").arg(&self.name).status();
    }
}

/// `/dev/fuse` opened to every user for the test's duration, as on a usual machine (where it is
/// 0666; in some containers it is 0600 and fuser opens it before calling `fusermount3`); the
/// old mode comes back on drop.
struct OpenFuseDevice {
    mode: u32,
}

impl OpenFuseDevice {
    fn open() -> OpenFuseDevice {
        use std::os::unix::fs::PermissionsExt;
        let mode = fs::metadata(FUSE_DEVICE)
            .expect("/dev/fuse exists")
            .permissions()
            .mode()
            & 0o7777;
        fs::set_permissions(FUSE_DEVICE, fs::Permissions::from_mode(mode | 0o666))
            .expect("chmod /dev/fuse");
        OpenFuseDevice { mode }
    }
}

impl Drop for OpenFuseDevice {
    fn drop(&mut self) {
        use std::os::unix::fs::PermissionsExt;
        let _ = fs::set_permissions(FUSE_DEVICE, fs::Permissions::from_mode(self.mode));
    }
}

const FUSE_DEVICE: &str = "/dev/fuse";

/// The user id a process runs as (from /proc).
fn uid_of(pid: u32) -> u32 {
    let status = fs::read_to_string(format!("/proc/{pid}/status")).expect("reading /proc");
    status
        .lines()
        .find_map(|l| l.strip_prefix("Uid:"))
        .and_then(|l| l.split_whitespace().next()?.parse().ok())
        .expect("a Uid line")
}

#[test]
fn the_whole_cluster_runs_as_an_ordinary_user() {
    let user = User::create();
    let _device = OpenFuseDevice::open();
    let cluster = Cluster::builder()
        .chunkservers(2)
        .metaloggers(1)
        .run_as(user.uid, user.gid)
        .start();
    let processes = [
        ("master", cluster.master().pid()),
        ("metalogger", cluster.metalogger(0).pid()),
        ("chunkserver 0", cluster.chunkserver(0).pid()),
        ("chunkserver 1", cluster.chunkserver(1).pid()),
        ("mount", cluster.mount(0).pid()),
    ];
    for (which, pid) in processes {
        let pid = pid.unwrap_or_else(|| panic!("{which} is not running"));
        assert_eq!(uid_of(pid), user.uid, "{which} does not run as the user");
    }
    // The filesystem's root belongs to root, as on any new filesystem: an administrator gives
    // the user a directory (here through the client library, as root on the master's host).
    let master = cluster.master_addr().to_string();
    tokio::runtime::Runtime::new()
        .expect("runtime")
        .block_on(async {
            let admin = MasterClient::connect(&master, "/", "admin", Duration::from_secs(10))
                .await
                .expect("a session");
            let request = MasterRequest::Mkdir {
                parent: admin.root(),
                name: b"home".to_vec(),
                mode: 0o755,
                umask: 0,
                caller: Caller {
                    uid: user.uid,
                    gid: user.gid,
                },
            };
            admin.request(&request).await.expect("mkdir home");
        });
    let mnt = format!("{}/home", cluster.mount_path(0).display());
    let read = user.sh(&format!(
        "set -e; mkdir {mnt}/d; head -c 3000000 /dev/urandom > {mnt}/d/f; \
         cmp {mnt}/d/f {mnt}/d/f; stat -c '%u %s' {mnt}/d/f"
    ));
    assert_eq!(read.trim(), format!("{} 3000000", user.uid));
}
