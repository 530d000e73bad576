//! Mounting like any filesystem: `mount.elkfs` through an fstab line and `mount -T`, `umount`,
//! daemonizing only once ready, clear failures, subdirectory and read-only mounts, SIGTERM and
//! SIGKILL of the mount process, and a non-root user mounting through fusermount3.

use std::ffi::OsStr;
use std::net::TcpListener;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use elkfs_testkit::{Cluster, MOUNT_BIN, wait_until};

use crate::host::{self, expect_success, mount_type, pids_with_arg, run_command};
use crate::sys::{self, Errno};
use crate::users::TestUser;

const MOUNT_HELPER: &str = "/sbin/mount.elkfs";

/// Whether a FUSE filesystem is mounted at `path`.
pub(crate) fn is_fuse(path: &Path) -> bool {
    mount_type(path).is_some_and(|t| t == "fuse" || t.starts_with("fuse."))
}

#[test]
fn mounts_show_as_fuse_elkfs_with_their_source_in_the_mount_table() {
    let mut cluster = Cluster::builder().chunkservers(1).start();
    std::fs::create_dir(cluster.mount_path(0).join("projects")).unwrap();
    let i = cluster.add_mount(Some("projects"), "");
    let addr = cluster.master_addr();
    for (mount, source) in [(0, format!("{addr}:/")), (i, format!("{addr}:/projects"))] {
        let path = cluster.mount_path(mount);
        let out = host::run(
            "findmnt",
            &[
                OsStr::new("-n"),
                OsStr::new("-o"),
                OsStr::new("SOURCE,FSTYPE"),
                path.as_os_str(),
            ],
            "util-linux",
        );
        let line = expect_success("findmnt", &out);
        let fields: Vec<&str> = line.split_whitespace().collect();
        assert_eq!(
            fields,
            vec![source.as_str(), "fuse.elkfs"],
            "`findmnt {}` should show the source and the type fuse.elkfs (so `df -t fuse.elkfs` \
             and `findmnt -t fuse.elkfs` find ElkFS mounts)",
            path.display()
        );
    }
}

pub(crate) fn mount_binary() -> PathBuf {
    elkfs_testkit::binary(MOUNT_BIN).unwrap_or_else(|e| panic!("{e}"))
}

/// A mount made outside the harness: on drop it is detached if still mounted and any process
/// of ours still serving it is killed.
pub(crate) struct ManualMount {
    path: PathBuf,
}

impl ManualMount {
    pub(crate) fn at(path: &Path) -> ManualMount {
        std::fs::create_dir_all(path).unwrap();
        ManualMount {
            path: path.to_path_buf(),
        }
    }

    /// Pids of elkfs-mount processes serving this mount point.
    pub(crate) fn server_pids(&self) -> Vec<i32> {
        pids_with_arg(&self.path)
            .into_iter()
            .filter(|pid| {
                std::fs::read_link(format!("/proc/{pid}/exe"))
                    .is_ok_and(|exe| exe.file_name() == Some(OsStr::new(MOUNT_BIN)))
            })
            .collect()
    }

    pub(crate) fn wait_until_no_server(&self, what: &str) {
        wait_until(Duration::from_secs(10), what, || {
            self.server_pids().is_empty()
        });
    }
}

impl Drop for ManualMount {
    fn drop(&mut self) {
        if mount_type(&self.path).is_some() {
            let _ = Command::new("umount").arg("-l").arg(&self.path).output();
        }
        for pid in self.server_pids() {
            // SAFETY: kill(2) of a process this test started (found by its unique mount point).
            unsafe { libc::kill(pid, libc::SIGKILL) };
        }
    }
}

/// Installs `/sbin/mount.elkfs` as a symlink to the built elkfs-mount for the test's duration
/// (left alone if the system already has one).
struct MountHelper {
    created: bool,
}

impl MountHelper {
    fn install() -> MountHelper {
        let helper = Path::new(MOUNT_HELPER);
        if std::fs::symlink_metadata(helper).is_ok() {
            eprintln!(
                "using the existing {MOUNT_HELPER} -> {:?}",
                std::fs::read_link(helper)
            );
            return MountHelper { created: false };
        }
        std::os::unix::fs::symlink(mount_binary(), helper)
            .unwrap_or_else(|e| panic!("creating {MOUNT_HELPER}: {e}"));
        MountHelper { created: true }
    }
}

impl Drop for MountHelper {
    fn drop(&mut self) {
        if self.created {
            let _ = std::fs::remove_file(MOUNT_HELPER);
        }
    }
}

fn output_text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// Runs a command that must finish within `limit` (it is killed and the test fails otherwise).
pub(crate) fn run_bounded(mut cmd: Command, limit: Duration, what: &str) -> Output {
    let child = cmd
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("{what}: cannot start: {e}"));
    let pid = child.id() as i32;
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || tx.send(child.wait_with_output()));
    match rx.recv_timeout(limit) {
        Ok(out) => out.unwrap(),
        Err(_) => {
            // SAFETY: our own child.
            unsafe { libc::kill(pid, libc::SIGKILL) };
            panic!("{what} did not finish within {limit:?}");
        }
    }
}

#[test]
fn fstab_entries_mount_with_mount_t_and_unmount_with_umount() {
    let cluster = Cluster::builder().chunkservers(1).start();
    std::fs::create_dir_all(cluster.mount_path(0).join("projects/p1")).unwrap();
    std::fs::write(
        cluster.mount_path(0).join("projects/p1/README"),
        b"project one",
    )
    .unwrap();
    let _helper = MountHelper::install();
    let root = cluster.dir().join("fstab-root");
    let sub = cluster.dir().join("fstab-projects");
    let (m_root, m_sub) = (ManualMount::at(&root), ManualMount::at(&sub));
    let addr = cluster.master_addr();
    let fstab = cluster.dir().join("fstab");
    std::fs::write(
        &fstab,
        format!(
            "# ElkFS test fstab\n{addr}:/ {} elkfs defaults,_netdev 0 0\n\
             {addr}:/projects {} elkfs ro,_netdev,noatime 0 0\n",
            root.display(),
            sub.display()
        ),
    )
    .unwrap();

    for dir in [&root, &sub] {
        let mut cmd = Command::new("mount");
        cmd.arg("-T").arg(&fstab).arg(dir);
        let out = run_bounded(cmd, Duration::from_secs(30), "mount -T");
        expect_success(
            &format!("mount -T {} {}", fstab.display(), dir.display()),
            &out,
        );
        // mount(8) returned: the mount must be usable now, not eventually.
        assert!(
            is_fuse(dir),
            "{} is not mounted after mount(8) returned",
            dir.display()
        );
    }
    assert_eq!(
        std::fs::read(root.join("projects/p1/README")).unwrap(),
        b"project one"
    );
    assert_eq!(
        std::fs::read(sub.join("p1/README")).unwrap(),
        b"project one"
    );
    assert_eq!(sys::list(&sub).unwrap(), vec!["p1"]);
    std::fs::write(root.join("via-fstab"), b"written through the fstab mount").unwrap();
    assert_eq!(
        sys::io_errno(std::fs::write(sub.join("nope"), b"x")),
        Err(Errno(libc::EROFS)),
        "the fstab line says ro"
    );
    let findmnt = host::run(
        "findmnt",
        &[
            OsStr::new("-n"),
            OsStr::new("-o"),
            OsStr::new("SOURCE,FSTYPE,OPTIONS"),
            sub.as_os_str(),
        ],
        "util-linux",
    );
    let line = expect_success("findmnt", &findmnt);
    assert!(
        line.contains("fuse") && line.contains("ro"),
        "findmnt: {line}"
    );

    for dir in [&root, &sub] {
        let out = host::run("umount", &[dir.as_os_str()], "mount");
        expect_success(&format!("umount {}", dir.display()), &out);
        assert_eq!(mount_type(dir), None);
    }
    m_root.wait_until_no_server("the fstab mount's process exits after umount");
    m_sub.wait_until_no_server("the ro fstab mount's process exits after umount");
    assert_eq!(
        std::fs::read(cluster.mount_path(0).join("via-fstab")).unwrap(),
        b"written through the fstab mount"
    );
}

#[test]
fn elkfs_mount_returns_only_once_the_mount_is_ready_and_serves_from_the_background() {
    let cluster = Cluster::builder().chunkservers(1).start();
    std::fs::write(cluster.mount_path(0).join("hello"), b"world").unwrap();
    let mnt = cluster.dir().join("bg");
    let guard = ManualMount::at(&mnt);
    let mut cmd = Command::new(mount_binary());
    cmd.arg(cluster.master_addr().to_string()).arg(&mnt);
    let out = run_bounded(cmd, Duration::from_secs(30), "elkfs-mount");
    expect_success("elkfs-mount without -f", &out);
    // No waiting: the moment it returns, the mount works.
    assert!(is_fuse(&mnt), "not mounted when elkfs-mount returned");
    assert_eq!(std::fs::read(mnt.join("hello")).unwrap(), b"world");
    assert_eq!(
        guard.server_pids().len(),
        1,
        "one background process serves the mount"
    );

    let out = host::run("umount", &[mnt.as_os_str()], "mount");
    expect_success("umount", &out);
    guard.wait_until_no_server("the background process exits after umount");
}

fn expect_refusal(cmd: Command, what: &str, must_mention: &[&str], mnt: &Path) {
    let started = Instant::now();
    let out = run_bounded(cmd, Duration::from_secs(30), what);
    let text = output_text(&out);
    assert!(
        !out.status.success(),
        "{what}: elkfs-mount succeeded:\n{text}"
    );
    for word in must_mention {
        assert!(
            text.contains(word),
            "{what}: the message should mention {word:?}; it was:\n{text}"
        );
    }
    assert!(
        text.trim().lines().count() <= 5,
        "{what}: a clear message, not a wall of text:\n{text}"
    );
    eprintln!(
        "{what}: refused in {:?}: {}",
        started.elapsed(),
        text.trim()
    );
    let guard = ManualMount {
        path: mnt.to_path_buf(),
    };
    guard.wait_until_no_server(&format!("{what}: no mount process is left behind"));
}

#[test]
fn elkfs_mount_fails_with_a_clear_message_when_it_cannot_mount() {
    let mut cluster = Cluster::builder().chunkservers(1).start();
    let bin = mount_binary();
    let addr = cluster.master_addr().to_string();

    // Master unreachable: a port nothing listens on.
    let closed_port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mnt = cluster.dir().join("unreachable");
    let _g1 = ManualMount::at(&mnt);
    let mut cmd = Command::new(&bin);
    cmd.arg(format!("127.0.0.1:{closed_port}")).arg(&mnt);
    expect_refusal(cmd, "master unreachable", &[&closed_port.to_string()], &mnt);
    assert_eq!(mount_type(&mnt), None);

    // Mount point missing.
    let missing = cluster.dir().join("no-such-dir");
    let mut cmd = Command::new(&bin);
    cmd.arg(&addr).arg(&missing);
    expect_refusal(cmd, "missing mount point", &["no-such-dir"], &missing);

    // Bad option.
    let mnt = cluster.dir().join("badopt");
    let _g2 = ManualMount::at(&mnt);
    let mut cmd = Command::new(&bin);
    cmd.arg(&addr).arg(&mnt).args(["-o", "rw,frobnicate=3"]);
    expect_refusal(cmd, "bad option", &["frobnicate"], &mnt);
    assert_eq!(mount_type(&mnt), None);

    // A subdirectory that does not exist.
    let mnt = cluster.dir().join("badsub");
    let _g3 = ManualMount::at(&mnt);
    let mut cmd = Command::new(&bin);
    cmd.arg(format!("{addr}:/does/not/exist")).arg(&mnt);
    expect_refusal(cmd, "missing subdirectory", &["/does/not/exist"], &mnt);
    assert_eq!(mount_type(&mnt), None);

    // Mount point busy: already an ElkFS mount.
    let busy = cluster.mount_path(0).to_path_buf();
    let mut cmd = Command::new(&bin);
    cmd.arg(&addr).arg(&busy);
    let out = run_bounded(cmd, Duration::from_secs(30), "busy mount point");
    let text = output_text(&out);
    let stacked = host::mount_count(&busy);
    if stacked > 1 {
        let _ = Command::new("umount").arg("-l").arg(&busy).output();
    }
    assert!(
        !out.status.success(),
        "mounting over a live ElkFS mount succeeded:\n{text}"
    );
    assert_eq!(
        stacked,
        1,
        "a second mount was stacked on {}",
        busy.display()
    );
    assert!(
        text.contains(&*busy.to_string_lossy()),
        "the message should name the busy mount point:\n{text}"
    );
    std::fs::write(busy.join("still-works"), b"x").expect("the original mount still works");

    // A refused mount may log errors in the master; none of the above is a failure of ours.
    cluster.allow_log_errors("does/not/exist");
}

/// Opens /dev/fuse to everyone for the test's duration, as a desktop system has it (FACTS.md),
/// and restores its mode afterwards.
struct UserFuseAccess {
    old_mode: u32,
}

impl UserFuseAccess {
    fn grant() -> UserFuseAccess {
        let old_mode = std::fs::metadata("/dev/fuse").unwrap().permissions().mode() & 0o7777;
        std::fs::set_permissions("/dev/fuse", std::fs::Permissions::from_mode(0o666)).unwrap();
        UserFuseAccess { old_mode }
    }
}

impl Drop for UserFuseAccess {
    fn drop(&mut self) {
        let _ =
            std::fs::set_permissions("/dev/fuse", std::fs::Permissions::from_mode(self.old_mode));
    }
}

#[test]
fn a_non_root_user_mounts_through_fusermount3_and_unmounts_with_fusermount3_u() {
    let cluster = Cluster::builder().chunkservers(1).start();
    host::open_up(cluster.dir());
    let _access = UserFuseAccess::grant();
    let user = TestUser::create(&[]);
    let home = cluster.mount_path(0).join("home");
    std::fs::create_dir(&home).unwrap();
    sys::lchown(&home, user.uid, user.gid).unwrap();
    let mnt = cluster.dir().join("usermnt");
    let guard = ManualMount::at(&mnt);
    sys::lchown(&mnt, user.uid, user.gid).unwrap();

    let mut cmd = Command::new(mount_binary());
    cmd.arg(cluster.master_addr().to_string())
        .arg(&mnt)
        .uid(user.uid)
        .gid(user.gid)
        .env("HOME", "/");
    let out = run_bounded(cmd, Duration::from_secs(30), "elkfs-mount as a user");
    expect_success("elkfs-mount as a non-root user", &out);
    assert!(is_fuse(&mnt), "the user's mount is not there");

    let file = mnt.join("home/users-file");
    let report = user.run(|r| {
        r.op("write", sys::io_errno(std::fs::write(&file, b"mine")));
        r.note("owner", sys::lstat(&file).map(|s| (s.st_uid, s.st_gid)));
        r.note("read", sys::io_errno(std::fs::read(&file)));
    });
    assert_eq!(report.outcome("write"), "ok", "{report:?}");
    assert_eq!(
        report.outcome("owner"),
        format!("Ok(({}, {}))", user.uid, user.gid)
    );
    // Without allow_other the mount is the user's alone: root gets EACCES, as with any FUSE fs.
    assert_eq!(sys::lstat(&file).map(drop), Err(Errno(libc::EACCES)));

    let mut cmd = Command::new("fusermount3");
    cmd.arg("-u").arg(&mnt).uid(user.uid).gid(user.gid);
    expect_success(
        "fusermount3 -u as the user",
        &run_command(&mut cmd, "fuse3"),
    );
    assert_eq!(mount_type(&mnt), None);
    guard.wait_until_no_server("the user's mount process exits after fusermount3 -u");
    assert_eq!(
        std::fs::read(cluster.mount_path(0).join("home/users-file")).unwrap(),
        b"mine"
    );
}
