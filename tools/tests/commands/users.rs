//! The commands as a non-root user: they do what the user may do and fail with the path and
//! the reason otherwise. Real users are made with `useradd` and removed afterwards; the mount
//! uses `allow_other` so they can reach it.

use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, Output};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use elkfs_testkit::Cluster;
use serde_json::Value;

use crate::support::{command, eventually, ok, write};

/// `useradd` and `userdel` lock /etc/passwd: one at a time.
static ACCOUNTS: Mutex<()> = Mutex::new(());
static NEXT: AtomicU32 = AtomicU32::new(0);

/// A user (with its own group) that exists while this value lives.
struct TestUser {
    name: String,
    uid: u32,
    gid: u32,
}

impl TestUser {
    fn create() -> TestUser {
        let name = format!(
            "elkcli{}x{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        );
        let _turn = ACCOUNTS.lock().unwrap_or_else(|e| e.into_inner());
        run("useradd", &["-M", "-U", "-s", "/usr/sbin/nologin", &name]);
        let uid = run("id", &["-u", &name]).trim().parse().expect("a uid");
        let gid = run("id", &["-g", &name]).trim().parse().expect("a gid");
        TestUser { name, uid, gid }
    }

    /// Runs `elkfs ARGS` in `dir` as this user.
    fn elkfs(&self, dir: &Path, args: &[&str]) -> Output {
        command(dir, args)
            .uid(self.uid)
            .gid(self.gid)
            .output()
            .unwrap_or_else(|e| panic!("running elkfs {args:?} as {}: {e}", self.name))
    }

    /// Runs `elkfs ARGS` as this user, expecting success; returns stdout.
    fn ok(&self, dir: &Path, args: &[&str]) -> String {
        crate::support::expect_ok(args, &self.elkfs(dir, args))
    }

    /// Runs `elkfs ARGS` as this user, expecting status 1; returns (stdout, stderr).
    fn fails(&self, dir: &Path, args: &[&str]) -> (String, String) {
        let out = self.elkfs(dir, args);
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        assert_eq!(
            out.status.code(),
            Some(1),
            "elkfs {args:?} as {} should fail.\nstdout:\n{stdout}\nstderr:\n{stderr}",
            self.name
        );
        (stdout, stderr)
    }
}

impl Drop for TestUser {
    fn drop(&mut self) {
        let _turn = ACCOUNTS.lock().unwrap_or_else(|e| e.into_inner());
        let _ = Command::new("userdel").arg(&self.name).output();
    }
}

fn run(program: &str, args: &[&str]) -> String {
    let out = Command::new(program)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("running {program}: {e}"));
    assert!(
        out.status.success(),
        "{program} {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A cluster whose mount other users can reach, a user, and a tree: `d/` and `d/f` owned by
/// root, `d/u/` and `d/u/g` owned by the user.
fn setup() -> (Cluster, TestUser) {
    let cluster = Cluster::builder()
        .chunkservers(1)
        .mount_options("allow_other")
        .start();
    std::fs::set_permissions(cluster.dir(), std::fs::Permissions::from_mode(0o755))
        .expect("open the cluster directory to other users");
    let user = TestUser::create();
    let mnt = cluster.mount_path(0);
    write(&mnt.join("d/f"), b"root's");
    write(&mnt.join("d/u/g"), b"the user's");
    for p in ["d/u", "d/u/g"] {
        std::os::unix::fs::chown(mnt.join(p), Some(user.uid), Some(user.gid)).expect("chown");
    }
    (cluster, user)
}

#[test]
fn a_non_root_user_changes_only_what_they_own() {
    let (cluster, user) = setup();
    let mnt = cluster.mount_path(0);

    assert_eq!(
        user.ok(mnt, &["getgoal", "d/f", "d/u/g"]),
        "d/f: 2\nd/u/g: 2\n"
    );
    let (stdout, stderr) = user.fails(mnt, &["setgoal", "3", "d/f", "d/u/g"]);
    assert_eq!(stdout, "d/u/g: goal: 3\n");
    assert_eq!(stderr, "elkfs: d/f: operation not permitted\n");
    assert_eq!(
        user.ok(mnt, &["setgoal", "-r", "3", "d"]),
        "d:\n\
         \x20inodes with goal changed:                       1\n\
         \x20inodes with goal not changed:                   1\n\
         \x20inodes with permission denied:                  2\n"
    );
    assert_eq!(
        ok(mnt, &["getgoal", "-r", "d"]),
        "d:\n\
         \x20files with goal                2 :          1\n\
         \x20files with goal                3 :          1\n\
         \x20directories with goal          2 :          1\n\
         \x20directories with goal          3 :          1\n"
    );
    let out = user.elkfs(mnt, &["--json", "settrashtime", "-r", "0", "d"]);
    let doc: Value = serde_json::from_slice(&out.stdout).expect("JSON");
    assert_eq!(doc[0]["changed"], 2);
    assert_eq!(doc[0]["permission_denied"], 2);
    let (_, stderr) = user.fails(mnt, &["settrashtime", "0", "d/f"]);
    assert_eq!(stderr, "elkfs: d/f: operation not permitted\n");
    let (_, stderr) = user.fails(mnt, &["seteattr", "-f", "nodatacache", "d/f"]);
    assert_eq!(stderr, "elkfs: d/f: operation not permitted\n");
    assert_eq!(
        user.ok(mnt, &["seteattr", "-f", "nodatacache", "d/u/g"]),
        "d/u/g: attribute(s) changed\n"
    );

    // What the user may not read, the user cannot ask about either.
    std::fs::set_permissions(mnt.join("d/f"), std::fs::Permissions::from_mode(0o600))
        .expect("chmod 600 d/f");
    let (_, stderr) = user.fails(mnt, &["getgoal", "d/f"]);
    assert_eq!(stderr, "elkfs: d/f: permission denied\n");
}

#[test]
fn noowner_lets_every_user_act_as_the_owner() {
    let (cluster, user) = setup();
    let mnt = cluster.mount_path(0);
    assert_eq!(
        ok(mnt, &["seteattr", "-f", "noowner", "d/f"]),
        "d/f: attribute(s) changed\n"
    );
    // The mount shows the user as the owner (once the kernel's 1 s attribute cache of the file
    // has run out)...
    let owner_seen = || {
        let out = Command::new("stat")
            .args(["-c", "%u"])
            .arg(mnt.join("d/f"))
            .uid(user.uid)
            .gid(user.gid)
            .output()
            .expect("stat as the user");
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    };
    eventually(
        Duration::from_secs(5),
        "the user sees d/f as theirs",
        || owner_seen() == user.uid.to_string(),
    );
    // ...and, as with MooseFS, the user may change it as its owner could.
    assert_eq!(user.ok(mnt, &["setgoal", "3", "d/f"]), "d/f: goal: 3\n");
}

#[test]
fn a_non_root_user_cannot_snapshot_into_a_directory_they_cannot_write() {
    let (cluster, user) = setup();
    let mnt = cluster.mount_path(0);
    // Into their own directory: fine.
    assert_eq!(user.ok(mnt, &["snapshot", "d/f", "d/u/copy"]), "");
    assert_eq!(
        std::fs::read(mnt.join("d/u/copy")).expect("d/u/copy"),
        b"root's"
    );
    // Into root's directory (mode 755): refused, as creating a file there would be.
    let (_, stderr) = user.fails(mnt, &["snapshot", "d/u/g", "d/stolen"]);
    assert_eq!(stderr, "elkfs: d/u/g: permission denied\n");
    assert!(
        !mnt.join("d/stolen").exists(),
        "the snapshot was made anyway"
    );
}

#[test]
fn a_non_root_user_sees_purges_and_restores_only_their_own_deleted_files() {
    let (cluster, user) = setup();
    let mnt = cluster.mount_path(0);
    std::fs::remove_file(mnt.join("d/f")).expect("rm d/f");
    std::fs::remove_file(mnt.join("d/u/g")).expect("rm d/u/g");
    let paths = |out: &str| -> Vec<String> {
        let doc: Value = serde_json::from_str(out).expect("JSON");
        let mut paths: Vec<String> = doc[0]["entries"]
            .as_array()
            .expect("entries")
            .iter()
            .map(|e| e["path"].as_str().expect("path").to_string())
            .collect();
        paths.sort();
        paths
    };
    // The paths of other users' deleted files are not shown to them.
    assert_eq!(
        paths(&user.ok(mnt, &["--json", "trash", "list", "d"])),
        ["d/u/g"]
    );
    assert_eq!(
        paths(&ok(mnt, &["--json", "trash", "list", "d"])),
        ["d/f", "d/u/g"]
    );
    for verb in ["purge", "restore"] {
        let (_, stderr) = user.fails(mnt, &["trash", verb, "d/f"]);
        assert_eq!(stderr, "elkfs: d/f: nothing in the trash was there\n");
    }

    // Emptying the whole trash empties only the user's part of it.
    let master = cluster.master_addr().to_string();
    assert_eq!(
        user.ok(mnt, &["trash", "purge", "--all", "--master", &master]),
        "1 file purged\n"
    );
    assert_eq!(
        ok(mnt, &["trash", "list", "d/u"]),
        "",
        "the user's own file is still in the trash"
    );
    assert_eq!(
        ok(mnt, &["trash", "restore", "d/f"]),
        "d/f: 1 file restored\n"
    );
}
