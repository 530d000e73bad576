//! End-to-end tests of who gets in: the master's exports file (addresses, paths, `ro`,
//! `maproot`, goal limits, passwords) and its reload on SIGHUP, with real daemons and real
//! mounts. A second loopback address (127.0.0.2) stands in for another machine: mounts connect
//! from it with `-o bind=127.0.0.2`.
//!
//! Run as root (the harness mounts through /dev/fuse).

mod capabilities;
mod fuzz;
mod tls;
mod unprivileged;

use std::ffi::OsString;
use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::Duration;

use elkfs_client::master::{MasterClient, SessionOptions};
use elkfs_proto::master::{Change, MasterReply, MasterRequest, TreeAttr};
use elkfs_proto::types::Caller;
use elkfs_proto::{InodeId, Status};
use elkfs_testkit::{Cluster, Process, wait_until};

/// Log lines the refusals below write on purpose.
const EXPECTED_WARNINGS: &[&str] = &[
    "mount refused",
    "refused a connection",
    "no longer lets a session in",
    "cannot mount",
    "refused the connection",
    "master unreachable",
];

/// A cluster whose master reads `exports` (written to a file in `dir`) and has `/pub` and
/// `/secret` directories; no mount yet.
fn cluster_with_exports(dir: &Path, exports: &str) -> (Cluster, PathBuf) {
    let file = dir.join("exports.cfg");
    fs::write(&file, exports).expect("writing the exports file");
    let mut builder = Cluster::builder()
        .chunkservers(2)
        .mounts(0)
        .master_args([OsString::from("--exports"), file.clone().into()]);
    for pattern in EXPECTED_WARNINGS {
        builder = builder.allow_log_errors(pattern);
    }
    let mut cluster = builder.start();
    let admin = cluster.add_mount(None, "");
    for d in ["pub", "secret"] {
        fs::create_dir(cluster.mount_path(admin).join(d)).expect("mkdir");
    }
    fs::write(cluster.mount_path(admin).join("pub/hello"), b"hello").expect("write");
    (cluster, file)
}

/// Mounts `subdir` with `options`; the mount's log on failure.
fn try_mount(cluster: &mut Cluster, subdir: &str, options: &str) -> Result<usize, String> {
    cluster
        .try_add_mount(Some(subdir), options)
        .map_err(|e| e.to_string())
}

/// The whole file, with loopback for the administrator and rules for "another machine".
const RULES: &str = "\
# the administrator's own machine
127.0.0.1        /        rw,alldirs,maproot=0
# another machine: /pub read-only, nothing else
127.0.0.2        /pub     ro
127.0.0.5        /        rw,alldirs,maproot=0,mingoal=2,maxgoal=3
127.0.0.6        /        rw,alldirs,maproot=1234:1235
127.0.0.7        /secret  rw,password=hunter2
";

#[test]
fn another_machine_gets_only_what_its_line_gives_it() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (mut cluster, file) = cluster_with_exports(dir.path(), RULES);

    let pub_mount = try_mount(&mut cluster, "/pub", "bind=127.0.0.2").expect("/pub mounts");
    let pub_path = cluster.mount_path(pub_mount).to_path_buf();
    assert_eq!(fs::read(pub_path.join("hello")).expect("read"), b"hello");
    let write = fs::write(pub_path.join("new"), b"x");
    assert_eq!(
        write.map_err(|e| e.raw_os_error()),
        Err(Some(libc::EROFS)),
        "a read-only export refuses writes"
    );

    let refused = try_mount(&mut cluster, "/", "bind=127.0.0.2").expect_err("/ is not exported");
    assert!(
        refused.contains("127.0.0.2") && refused.contains(&file.display().to_string()),
        "the refusal names the address and the file to edit:\n{refused}"
    );
    let refused = try_mount(&mut cluster, "/pub", "bind=127.0.0.3").expect_err("no line");
    assert!(
        refused.contains("127.0.0.3") && refused.contains(&file.display().to_string()),
        "{refused}"
    );
}

#[test]
fn maproot_owns_roots_files_and_goal_limits_hold() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (mut cluster, _) = cluster_with_exports(dir.path(), RULES);

    let mapped = try_mount(&mut cluster, "/", "bind=127.0.0.6").expect("mounts");
    let made = cluster.mount_path(mapped).join("pub/by-root");
    fs::write(&made, b"x").expect("root writes");
    let meta = fs::metadata(&made).expect("stat");
    assert_eq!((meta.uid(), meta.gid()), (1234, 1235), "root is mapped");

    // Goal limits apply to the session of the machine the line names (here a client-library
    // session from 127.0.0.5, as a mount there would have).
    let master = cluster.master_addr().to_string();
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    let set_goal = |goal: u64| -> Result<(), Status> {
        runtime.block_on(async {
            let options = SessionOptions {
                bind: Some("127.0.0.5".parse().expect("ip")),
                ..SessionOptions::default()
            };
            let client = MasterClient::connect_with(
                &master,
                "/",
                "goal-test",
                Duration::from_secs(10),
                options,
            )
            .await
            .expect("127.0.0.5 is let in");
            let file = lookup(&client, &["pub", "hello"]).await;
            let request = MasterRequest::ChangeTree {
                inode: file,
                attr: TreeAttr::Goal,
                change: Change::Set(goal),
                recursive: false,
                caller: Caller { uid: 0, gid: 0 },
            };
            client.request(&request).await.map(|_| ())
        })
    };
    assert_eq!(set_goal(3), Ok(()));
    assert_eq!(set_goal(4), Err(Status::NotPermitted), "above maxgoal=3");
    assert_eq!(set_goal(1), Err(Status::NotPermitted), "below mingoal=2");
}

/// The inode at `path` below the session's root.
async fn lookup(client: &MasterClient, path: &[&str]) -> InodeId {
    let mut inode = client.root();
    for name in path {
        let request = MasterRequest::Lookup {
            parent: inode,
            name: name.as_bytes().to_vec(),
        };
        match client.request(&request).await {
            Ok(MasterReply::Attr(attr)) => inode = attr.inode,
            other => panic!("looking up {name}: {other:?}"),
        }
    }
    inode
}

#[test]
fn passwords_are_proved_and_password_files_must_be_private() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (mut cluster, _) = cluster_with_exports(dir.path(), RULES);

    let missing = try_mount(&mut cluster, "/secret", "bind=127.0.0.7").expect_err("no password");
    assert!(missing.contains("password"), "{missing}");
    let wrong = try_mount(&mut cluster, "/secret", "bind=127.0.0.7,password=hunter3")
        .expect_err("wrong password");
    assert!(wrong.contains("wrong password"), "{wrong}");
    let right = try_mount(&mut cluster, "/secret", "bind=127.0.0.7,password=hunter2")
        .expect("right password");
    fs::write(cluster.mount_path(right).join("s"), b"s").expect("writes");

    let file = dir.path().join("password");
    fs::write(&file, "hunter2\n").expect("write");
    fs::set_permissions(&file, fs::Permissions::from_mode(0o644)).expect("chmod");
    let options = format!("bind=127.0.0.7,passwordfile={}", file.display());
    let open = try_mount(&mut cluster, "/secret", &options).expect_err("readable by others");
    assert!(open.contains("chmod 600"), "{open}");
    fs::set_permissions(&file, fs::Permissions::from_mode(0o600)).expect("chmod");
    try_mount(&mut cluster, "/secret", &options).expect("private password file");
}

#[test]
fn sighup_reloads_the_exports_and_closes_only_sessions_no_longer_allowed() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (mut cluster, file) = cluster_with_exports(dir.path(), RULES);
    let kept = try_mount(&mut cluster, "/pub", "bind=127.0.0.2").expect("mounts");
    let dropped = try_mount(&mut cluster, "/", "bind=127.0.0.5,master_timeout=2").expect("mounts");
    let kept_path = cluster.mount_path(kept).to_path_buf();
    let dropped_path = cluster.mount_path(dropped).to_path_buf();

    let without_5: String = RULES
        .lines()
        .filter(|l| !l.starts_with("127.0.0.5"))
        .map(|l| format!("{l}\n"))
        .collect();
    fs::write(&file, without_5).expect("rewrite the exports file");
    let pid = cluster.master().pid().expect("master runs");
    // SAFETY: SIGHUP to the master this test started.
    unsafe { libc::kill(pid as libc::pid_t, libc::SIGHUP) };

    wait_until(
        Duration::from_secs(30),
        "the dropped session to be closed",
        || {
            cluster
                .log_of(Process::Master)
                .contains("no longer lets a session in")
        },
    );
    let refused = fs::write(dropped_path.join("pub/after"), b"x");
    assert!(
        refused.is_err(),
        "the mount whose line was removed is refused after its reconnect"
    );
    assert_eq!(fs::read(kept_path.join("hello")).expect("read"), b"hello");
}
