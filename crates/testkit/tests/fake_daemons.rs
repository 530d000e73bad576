//! The harness's process handling, checked against a shell stand-in for the ElkFS binaries
//! (`fake_daemon.sh`): readiness, restarts on the same port, stops, kills, and how a test fails
//! when a daemon logs an error, crashes, or ignores SIGTERM. Needs no FUSE and no ElkFS build.

use std::any::Any;
use std::panic::{self, AssertUnwindSafe};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::time::Duration;

use elkfs_testkit::{
    CHUNKSERVER_BIN, CLI_BIN, Cluster, ClusterBuilder, MASTER_BIN, MOUNT_BIN, Process, StartError,
};

/// A directory holding the fake script under every binary name. Written once per test process,
/// before any test spawns a child, so no child inherits a script open for writing (ETXTBSY).
fn fake_bin_dir() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("elkfs-testkit-fake-bin");
        std::fs::create_dir_all(&dir).expect("creating the fake bin dir");
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fake_daemon.sh");
        for name in [MASTER_BIN, CHUNKSERVER_BIN, MOUNT_BIN, CLI_BIN] {
            let tmp = dir.join(format!("{name}.tmp"));
            std::fs::copy(&script, &tmp).expect("copying the fake daemon");
            let mode = std::os::unix::fs::PermissionsExt::from_mode(0o755);
            std::fs::set_permissions(&tmp, mode).expect("making the fake daemon executable");
            std::fs::rename(&tmp, dir.join(name)).expect("installing the fake daemon");
        }
        dir
    })
}

fn fake_cluster() -> ClusterBuilder {
    Cluster::builder()
        .bin_dir(fake_bin_dir())
        .ready_timeout(Duration::from_secs(10))
}

/// Runs `f` and returns its panic message; fails if it does not panic.
fn panic_message(f: impl FnOnce()) -> String {
    let payload: Box<dyn Any + Send> = match panic::catch_unwind(AssertUnwindSafe(f)) {
        Ok(()) => panic!("expected a panic"),
        Err(payload) => payload,
    };
    match payload.downcast::<String>() {
        Ok(message) => *message,
        Err(payload) => payload
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .unwrap_or_default(),
    }
}

/// Whether `pid` is one of our daemons and has not finished exiting. A process being killed
/// loses its command line before it becomes a zombie, so the state in `/proc/PID/stat` (after
/// the name in parentheses) is what says it is done: `Z` once its parent may reap it.
fn is_alive(pid: u32) -> bool {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return false;
    };
    let state = stat
        .rsplit_once(')')
        .and_then(|(_, rest)| rest.split_whitespace().next());
    stat.contains("(elkfs-") && !matches!(state, Some("Z" | "X"))
}

#[test]
fn processes_restart_on_the_same_ports_and_are_gone_after_drop() {
    let mut cluster = fake_cluster().chunkservers(2).mounts(1).start();
    let master = cluster.master_addr();
    assert_ne!(master.port(), 0);
    assert!(cluster.dir().join("cs1/data0").is_dir());
    assert_eq!(cluster.mount_path(0), cluster.dir().join("mnt0"));
    let cs0 = cluster.chunkserver(0).addr();

    cluster.restart_all();
    assert_eq!(cluster.master_addr(), master);
    assert_eq!(cluster.chunkserver(0).addr(), cs0);

    cluster.kill_master();
    assert!(cluster.master().pid().is_none());
    cluster.start_master();
    assert_eq!(cluster.master_addr(), master);

    cluster.stop_chunkserver(1);
    cluster.kill_chunkserver(0);
    cluster.start_chunkserver(0);
    cluster.start_chunkserver(1);
    assert_eq!(cluster.add_chunkserver(), 2);

    let sub = cluster.add_mount(Some("/a/b"), "ro,direct_io");
    let mount_log = cluster.log_of(Process::Mount(sub));
    assert!(mount_log.contains(&format!("{master}:/a/b")), "{mount_log}");
    assert!(mount_log.contains("-o ro,direct_io"), "{mount_log}");
    cluster.unmount(sub);
    cluster.remount(sub);
    cluster.kill_mount(0);
    cluster.remount(0);

    let master_log = cluster.log_of(Process::Master);
    assert_eq!(master_log.matches("[elkfs-testkit] starting").count(), 3);

    let pids = cluster.pids();
    assert_eq!(pids.len(), 1 + 3 + 2);
    drop(cluster);
    let left: Vec<u32> = pids.into_iter().filter(|&pid| is_alive(pid)).collect();
    assert!(left.is_empty(), "processes left after drop: {left:?}");
}

#[test]
fn unexpected_error_line_fails_the_test_on_drop() {
    let message = panic_message(|| {
        let cluster = fake_cluster()
            .chunkservers(1)
            .mounts(0)
            .chunkserver_args(["--fake-error", "disk on fire"])
            .start();
        drop(cluster);
    });
    assert!(message.contains("disk on fire"), "{message}");
    assert!(message.contains("cs0.log"), "{message}");
}

#[test]
fn allowed_error_lines_do_not_fail_the_test() {
    let mut cluster = fake_cluster()
        .chunkservers(1)
        .mounts(0)
        .chunkserver_args(["--fake-error", "disk on fire"])
        .master_args(["--fake-error", "chunkserver lost"])
        .allow_log_errors("chunkserver lost")
        .start();
    cluster.allow_log_errors("on fire");
}

#[test]
fn process_exiting_before_ready_is_reported_with_its_log() {
    let result = fake_cluster()
        .mounts(0)
        .master_args(["--fake-exit", "bad config key"])
        .try_start();
    match result {
        Err(StartError::ExitedBeforeReady {
            name, status, tail, ..
        }) => {
            assert_eq!(name, "master");
            assert_eq!(status.code(), Some(3));
            assert!(tail.contains("bad config key"), "{tail}");
        }
        Err(other) => panic!("unexpected error: {other}"),
        Ok(_) => panic!("the master should have failed to start"),
    }
}

#[test]
fn master_restart_retries_while_its_port_is_in_use() {
    let mut cluster = fake_cluster().chunkservers(1).mounts(0).start();
    let master = cluster.master_addr();
    let flag = cluster.dir().join("in-use-once");
    cluster.set_master_args(["--fake-in-use-once".into(), flag.into_os_string()]);
    cluster.stop_master();
    cluster.start_master();
    assert_eq!(cluster.master_addr(), master);
    let log = cluster.log_of(Process::Master);
    assert!(log.contains("Address already in use"), "{log}");
}

#[test]
fn crashed_process_fails_the_test_on_drop() {
    let message = panic_message(|| {
        let mut cluster = fake_cluster().chunkservers(1).mounts(0).start();
        let pid = cluster.chunkserver(0).pid().expect("cs0 runs");
        let status = Command::new("kill")
            .args(["-KILL", &pid.to_string()])
            .status()
            .expect("running kill");
        assert!(status.success());
        let exit = cluster.wait_for_exit(Process::Chunkserver(0), Duration::from_secs(5));
        assert!(!exit.success());
        // Reaped by wait_for_exit, so expected; a second crash is not.
        cluster.start_chunkserver(0);
        let pid = cluster.chunkserver(0).pid().expect("cs0 runs again");
        assert!(is_alive(pid), "a running daemon counts as alive");
        Command::new("kill")
            .args(["-KILL", &pid.to_string()])
            .status()
            .expect("running kill");
        elkfs_testkit::wait_until(Duration::from_secs(5), "cs0 is dead", || !is_alive(pid));
        drop(cluster);
    });
    assert!(message.contains("cs0 had exited on its own"), "{message}");
}

#[test]
fn daemon_ignoring_sigterm_is_killed_and_reported() {
    let message = panic_message(|| {
        let cluster = fake_cluster()
            .chunkservers(1)
            .mounts(0)
            .chunkserver_args(["--fake-ignore-term"])
            .start();
        drop(cluster);
    });
    assert!(
        message.contains("cs0 did not exit within 5s of SIGTERM"),
        "{message}"
    );
}

#[test]
fn missing_binaries_are_explained() {
    let empty = tempfile::tempdir().expect("temp dir");
    match Cluster::builder().bin_dir(empty.path()).try_start() {
        Err(e @ StartError::BinaryMissing { .. }) => {
            assert!(
                e.to_string().contains("cargo build --workspace --bins"),
                "{e}"
            );
        }
        Err(other) => panic!("unexpected error: {other}"),
        Ok(_) => panic!("started without binaries"),
    }
}

#[test]
fn cli_runs_with_the_master_address() {
    let cluster = fake_cluster().chunkservers(0).mounts(0).start();
    let stdout = cluster.run_cli_ok(&["--fake-print-master"]);
    assert_eq!(stdout.trim(), format!("master={}", cluster.master_addr()));
}

#[test]
fn a_chunkserver_can_be_added_on_directories_the_test_owns() {
    let own = tempfile::tempdir().expect("temp dir");
    let dirs = [own.path().join("disk-a"), own.path().join("disk-b")];
    let mut cluster = fake_cluster().chunkservers(1).mounts(0).start();
    let i = cluster.add_chunkserver_on(dirs.clone());
    assert_eq!(i, 1);
    assert_eq!(cluster.chunkserver_data_dirs(i), &dirs);
    assert!(
        dirs.iter().all(|d| d.is_dir()),
        "the directories are created"
    );
    let log = cluster.log_of(Process::Chunkserver(i));
    let expected = format!("--data {} --data {}", dirs[0].display(), dirs[1].display());
    assert!(log.contains(&expected), "{log}");
    cluster.stop_chunkserver(i);
    cluster.start_chunkserver(i);
    assert!(
        cluster
            .log_of(Process::Chunkserver(i))
            .matches(&expected)
            .count()
            == 2
    );
}
