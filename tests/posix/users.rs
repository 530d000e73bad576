//! Real non-root users for permission tests: created with `useradd`/`groupadd`, removed on drop,
//! and a way to run a piece of the test as one of them (a forked child that drops to the
//! user's uid, gid and groups) recording what each operation returned.

use std::fmt::Write as _;
use std::io::Read;
use std::os::fd::{FromRawFd, OwnedFd};
use std::path::Path;
use std::process::Command;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU32, Ordering};

use elkfs_testkit::Cluster;

use crate::host::{self, expect_success, run_command};
use crate::sys::{self, Errno, Sys};

/// `useradd` and friends take a lock on /etc/passwd; tests in parallel take turns.
static ACCOUNTS: Mutex<()> = Mutex::new(());
static NEXT: AtomicU32 = AtomicU32::new(0);

fn unique_name(prefix: &str) -> String {
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    format!("{prefix}{}x{n}", std::process::id())
}

fn account_tool(args: &[&str]) -> String {
    let _turn = ACCOUNTS.lock().unwrap_or_else(|e| e.into_inner());
    let mut cmd = Command::new(args[0]);
    cmd.args(&args[1..]);
    let out = run_command(&mut cmd, "passwd");
    expect_success(&args.join(" "), &out)
}

fn id_of(flag: &str, name: &str) -> Vec<u32> {
    account_tool(&["id", flag, name])
        .split_whitespace()
        .map(|s| s.parse().expect("numeric id"))
        .collect()
}

/// A group that exists for the test's duration.
pub struct TestGroup {
    /// Group name.
    pub name: String,
    /// Group id.
    pub gid: u32,
}

impl TestGroup {
    /// Creates a new group.
    pub fn create() -> TestGroup {
        let name = unique_name("elkg");
        account_tool(&["groupadd", &name]);
        let line = account_tool(&["getent", "group", &name]);
        let gid = line
            .split(':')
            .nth(2)
            .and_then(|g| g.parse().ok())
            .unwrap_or_else(|| panic!("no gid in {line:?}"));
        TestGroup { name, gid }
    }
}

impl Drop for TestGroup {
    fn drop(&mut self) {
        let _turn = ACCOUNTS.lock().unwrap_or_else(|e| e.into_inner());
        let _ = Command::new("groupdel").arg(&self.name).output();
    }
}

/// A non-root user that exists for the test's duration (no home directory, no login shell).
pub struct TestUser {
    /// Login name.
    pub name: String,
    /// User id.
    pub uid: u32,
    /// Primary group id (the user's own group).
    pub gid: u32,
    /// All group ids, primary first.
    pub groups: Vec<u32>,
}

impl TestUser {
    /// Creates a user with its own primary group and membership in `extra` groups.
    pub fn create(extra: &[&TestGroup]) -> TestUser {
        let name = unique_name("elku");
        let mut args = vec![
            "useradd",
            "--no-create-home",
            "--user-group",
            "--shell",
            "/usr/sbin/nologin",
        ];
        let list = extra
            .iter()
            .map(|g| g.name.as_str())
            .collect::<Vec<_>>()
            .join(",");
        if !extra.is_empty() {
            args.extend(["--groups", &list]);
        }
        args.push(&name);
        account_tool(&args);
        let uid = id_of("-u", &name)[0];
        let gid = id_of("-g", &name)[0];
        let mut groups = id_of("-G", &name);
        groups.retain(|&g| g != gid);
        groups.insert(0, gid);
        TestUser {
            name,
            uid,
            gid,
            groups,
        }
    }

    /// Runs `f` in a child process that has become this user, and returns what it recorded.
    pub fn run(&self, f: impl FnOnce(&mut Report)) -> Report {
        run_as(self.uid, self.gid, &self.groups, f)
    }
}

impl Drop for TestUser {
    fn drop(&mut self) {
        let _turn = ACCOUNTS.lock().unwrap_or_else(|e| e.into_inner());
        let _ = Command::new("userdel").arg(&self.name).output();
        // userdel removes the user's own group too (USERGROUPS_ENAB); make sure.
        let _ = Command::new("groupdel").arg(&self.name).output();
    }
}

/// What a sequence of operations returned, one line each (`label: ok` or `label: EACCES`),
/// so two runs compare line by line.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Report {
    /// The recorded lines.
    pub lines: Vec<String>,
}

impl Report {
    /// Records an operation's outcome.
    pub fn op<T>(&mut self, label: &str, result: Sys<T>) {
        let outcome = match result {
            Ok(_) => "ok".to_owned(),
            Err(e) => e.name(),
        };
        self.lines.push(format!("{label}: {outcome}"));
    }

    /// Records a value.
    pub fn note(&mut self, label: &str, value: impl std::fmt::Debug) {
        self.lines.push(format!("{label}: {value:?}"));
    }

    /// The outcome recorded for `label` (`ok`, `EACCES`, ...).
    pub fn outcome(&self, label: &str) -> &str {
        let prefix = format!("{label}: ");
        self.lines
            .iter()
            .find_map(|l| l.strip_prefix(&prefix))
            .unwrap_or_else(|| panic!("nothing recorded for {label:?} in\n{self:?}"))
    }
}

impl std::fmt::Debug for Report {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for line in &self.lines {
            writeln!(f, "  {line}")?;
        }
        Ok(())
    }
}

/// Asserts two reports are equal, showing the lines that differ.
pub fn assert_same(what: &str, expected: &Report, actual: &Report) {
    if expected == actual {
        return;
    }
    let mut diff = String::new();
    let n = expected.lines.len().max(actual.lines.len());
    for i in 0..n {
        let e = expected.lines.get(i).map_or("<none>", String::as_str);
        let a = actual.lines.get(i).map_or("<none>", String::as_str);
        let mark = if e == a { "  " } else { "!!" };
        let _ = writeln!(diff, "{mark} local: {e:<50} elkfs: {a}");
    }
    panic!("{what}: ElkFS differs from the local filesystem:\n{diff}");
}

/// Runs `f` in a forked child with the given credentials; the child sends its report back
/// through a pipe. The child only makes system calls and allocates (glibc's malloc is safe
/// after fork); a panic in it is reported as a `PANIC` line.
pub fn run_as(uid: u32, gid: u32, groups: &[u32], f: impl FnOnce(&mut Report)) -> Report {
    let mut fds = [0; 2];
    // SAFETY: `fds` has room for the two descriptors.
    assert_eq!(unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) }, 0);
    // SAFETY: both descriptors were just created and are owned here.
    let (read_end, write_end) =
        unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
    // SAFETY: the child only calls async-signal-safe functions and malloc before _exit.
    let pid = unsafe { libc::fork() };
    assert!(pid >= 0, "fork failed: {}", Errno::last());
    if pid == 0 {
        drop(read_end);
        let mut report = Report::default();
        // SAFETY: plain credential system calls on our own process.
        let dropped = unsafe {
            libc::setgroups(groups.len(), groups.as_ptr()) == 0
                && libc::setgid(gid) == 0
                && libc::setuid(uid) == 0
        };
        if dropped {
            let ran = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| f(&mut report)));
            if ran.is_err() {
                report.lines.push("PANIC in the child".to_owned());
            }
        } else {
            report
                .lines
                .push(format!("CANNOT BECOME uid {uid}: {}", Errno::last()));
        }
        let text = report.lines.join("\n");
        let file = std::fs::File::from(write_end);
        use std::io::Write;
        let _ = (&file).write_all(text.as_bytes());
        // SAFETY: leaves the child without running the parent's destructors or atexit hooks.
        unsafe { libc::_exit(0) };
    }
    drop(write_end);
    let mut text = String::new();
    let _ = std::fs::File::from(read_end).read_to_string(&mut text);
    let mut status = 0;
    // SAFETY: waits for our own child.
    unsafe { libc::waitpid(pid, &mut status, 0) };
    let report = Report {
        lines: text.lines().map(str::to_owned).collect(),
    };
    assert!(
        !report
            .lines
            .iter()
            .any(|l| l.starts_with("PANIC") || l.starts_with("CANNOT")),
        "the child running as uid {uid} failed:\n{report:?}"
    );
    report
}

/// Two users and a group: `alice` is in `team`, `bob` is not unless a scenario says so.
pub struct People {
    pub team: TestGroup,
    pub alice: TestUser,
    pub bob: TestUser,
    /// A second member of `team`.
    pub carol: TestUser,
}

impl People {
    pub fn create() -> People {
        let team = TestGroup::create();
        let alice = TestUser::create(&[&team]);
        let bob = TestUser::create(&[]);
        let carol = TestUser::create(&[&team]);
        People {
            team,
            alice,
            bob,
            carol,
        }
    }
}

/// A cluster whose mount lets other users in, with its directory reachable by them.
pub fn shared_cluster() -> Cluster {
    let cluster = Cluster::builder()
        .chunkservers(1)
        .mount_options("allow_other")
        .start();
    host::open_up(cluster.dir());
    cluster
}

/// Runs `scenario` in a fresh subdirectory of a local directory and of the ElkFS mount and
/// asserts equal reports; returns the local one for extra checks.
pub fn same_as_local(what: &str, cluster: &Cluster, scenario: impl Fn(&Path) -> Report) -> Report {
    let local = host::local_dir(what);
    let elk_root = cluster.mount_path(0).join(what);
    sys::mkdir(&elk_root, 0o755).unwrap();
    sys::chmod(&elk_root, 0o755).unwrap();
    let local_root = local.path().join(what);
    sys::mkdir(&local_root, 0o755).unwrap();
    sys::chmod(&local_root, 0o755).unwrap();
    let want = scenario(&local_root);
    let got = scenario(&elk_root);
    assert_same(what, &want, &got);
    want
}
