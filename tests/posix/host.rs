//! The test host around the mounts: external programs, the mount table, our processes, and
//! local directories (ext4 and tmpfs) to compare ElkFS with.

use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use crate::sys::chmod;

/// Runs a program, panicking if it cannot be started (a missing tool is a failed test, with
/// the Debian package to install named in `package`).
pub fn run(program: &str, args: &[&OsStr], package: &str) -> Output {
    let mut cmd = Command::new(program);
    cmd.args(args);
    run_command(&mut cmd, package)
}

/// Runs a prepared command; see [`run`].
pub fn run_command(cmd: &mut Command, package: &str) -> Output {
    cmd.output().unwrap_or_else(|e| {
        panic!(
            "cannot run {:?} ({e}); install Debian's `{package}` package",
            cmd.get_program()
        )
    })
}

/// Panics with the program's output unless it exited 0; returns its stdout.
pub fn expect_success(what: &str, output: &Output) -> String {
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(
        output.status.success(),
        "{what} failed ({}):\nstdout:\n{stdout}\nstderr:\n{}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    stdout
}

/// Whether `path` is a mount point now (from /proc/self/mountinfo), and with which fs type.
pub fn mount_type(path: &Path) -> Option<String> {
    let text = std::fs::read_to_string("/proc/self/mountinfo").expect("reading mountinfo");
    let wanted = path.to_string_lossy().replace(' ', "\\040");
    text.lines()
        .filter(|l| l.split(' ').nth(4) == Some(wanted.as_str()))
        .filter_map(|l| l.split(" - ").nth(1))
        .filter_map(|rest| rest.split(' ').next())
        .map(str::to_owned)
        .next_back()
}

/// How many mounts are stacked on `path`.
pub fn mount_count(path: &Path) -> usize {
    let text = std::fs::read_to_string("/proc/self/mountinfo").expect("reading mountinfo");
    let wanted = path.to_string_lossy().replace(' ', "\\040");
    text.lines()
        .filter(|l| l.split(' ').nth(4) == Some(wanted.as_str()))
        .count()
}

/// Pids of processes (ours: started by this test) whose command line mentions `needle`.
pub fn pids_with_arg(needle: &Path) -> Vec<i32> {
    let needle = needle.as_os_str().as_bytes();
    let me = std::process::id() as i32;
    let mut pids = Vec::new();
    for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        if pid == me {
            continue;
        }
        let Ok(cmdline) = std::fs::read(entry.path().join("cmdline")) else {
            continue;
        };
        if cmdline.split(|&b| b == 0).any(|arg| arg == needle) {
            pids.push(pid);
        }
    }
    pids
}

/// The repository's root directory (the parent of `tests/`).
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ has a parent")
        .to_path_buf()
}

/// A fresh local directory (in the system temp dir, ext4 or tmpfs) to compare ElkFS with,
/// readable and traversable by every user.
pub fn local_dir(tag: &str) -> tempfile::TempDir {
    let dir = tempfile::Builder::new()
        .prefix(&format!("elkfs-posix-{tag}-"))
        .tempdir()
        .expect("creating a local reference directory");
    chmod(dir.path(), 0o755).expect("chmod the reference dir");
    dir
}

/// A fresh directory on tmpfs (`/dev/shm`), to tell which behaviour is Linux's and which is
/// one filesystem's.
pub fn tmpfs_dir(tag: &str) -> tempfile::TempDir {
    let dir = tempfile::Builder::new()
        .prefix(&format!("elkfs-posix-{tag}-"))
        .tempdir_in("/dev/shm")
        .expect("creating a tmpfs reference directory");
    chmod(dir.path(), 0o755).expect("chmod the reference dir");
    dir
}

/// Lets other users reach the cluster's mountpoints (the harness makes its dir 0700).
pub fn open_up(dir: &Path) {
    chmod(dir, 0o755).expect("chmod the cluster dir 0755");
}

/// FNV-1a, to summarise file contents in messages.
pub fn fnv(data: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in data {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h
}

/// The process's umask, read without changing it (from /proc/self/status).
pub fn umask() -> u32 {
    let status = std::fs::read_to_string("/proc/self/status").expect("reading /proc/self/status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("Umask:"))
        .and_then(|v| u32::from_str_radix(v.trim(), 8).ok())
        .expect("a Umask line in /proc/self/status")
}
