//! POSIX (fcntl) and BSD (flock) locks hold across two mounts of the cluster, with the
//! semantics Linux gives them on one machine.

use std::fs::File;
use std::os::fd::{AsRawFd, IntoRawFd};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use elkfs_testkit::Cluster;

use crate::sys::{self, Errno, Sys};

fn flock_struct(kind: i32, start: i64, len: i64) -> libc::flock {
    // SAFETY: an all-zero flock is valid; the fields that matter are set below.
    let mut fl: libc::flock = unsafe { std::mem::zeroed() };
    fl.l_type = kind as i16;
    fl.l_whence = libc::SEEK_SET as i16;
    fl.l_start = start;
    fl.l_len = len;
    fl
}

/// `fcntl(F_SETLK / F_SETLKW)` of `kind` over `start..start+len`.
fn set_lock(f: &File, cmd: i32, kind: i32, start: i64, len: i64) -> Sys<()> {
    let fl = flock_struct(kind, start, len);
    // SAFETY: `fl` is a valid flock for the duration of the call.
    sys::check(unsafe { libc::fcntl(f.as_raw_fd(), cmd, &fl) }).map(drop)
}

/// `fcntl(F_GETLK)`: the type of a lock that would conflict (F_UNLCK if none).
fn get_lock(f: &File, kind: i32, start: i64, len: i64) -> Sys<(i32, i64, i64)> {
    let mut fl = flock_struct(kind, start, len);
    // SAFETY: `fl` is a valid flock the kernel fills in.
    sys::check(unsafe { libc::fcntl(f.as_raw_fd(), libc::F_GETLK, &mut fl) })?;
    Ok((i32::from(fl.l_type), fl.l_start, fl.l_len))
}

fn flock(f: &File, op: i32) -> Sys<()> {
    // SAFETY: plain system call on an owned descriptor.
    sys::check(unsafe { libc::flock(f.as_raw_fd(), op) }).map(drop)
}

fn open_rw(path: &Path) -> File {
    sys::open(path, libc::O_RDWR | libc::O_CREAT, 0o644).unwrap()
}

#[test]
fn posix_locks_conflict_across_two_mounts() {
    let cluster = Cluster::builder().chunkservers(1).mounts(2).start();
    let a = open_rw(&cluster.mount_path(0).join("db"));
    let b = open_rw(&cluster.mount_path(1).join("db"));

    set_lock(&a, libc::F_SETLK, libc::F_WRLCK, 0, 100).unwrap();
    assert_eq!(
        set_lock(&b, libc::F_SETLK, libc::F_WRLCK, 50, 10),
        Err(Errno(libc::EAGAIN)),
        "a write lock held through mount A must stop mount B"
    );
    assert_eq!(
        set_lock(&b, libc::F_SETLK, libc::F_RDLCK, 99, 1),
        Err(Errno(libc::EAGAIN))
    );
    let (kind, start, len) = get_lock(&b, libc::F_WRLCK, 0, 0).unwrap();
    assert_eq!(
        (kind, start, len),
        (libc::F_WRLCK, 0, 100),
        "F_GETLK reports A's lock"
    );
    set_lock(&b, libc::F_SETLK, libc::F_WRLCK, 100, 50).expect("a range next to it is free");

    // Shared read locks coexist across mounts.
    set_lock(&a, libc::F_SETLK, libc::F_RDLCK, 1000, 10).unwrap();
    set_lock(&b, libc::F_SETLK, libc::F_RDLCK, 1000, 10).unwrap();
    assert_eq!(
        set_lock(&a, libc::F_SETLK, libc::F_WRLCK, 1000, 10),
        Err(Errno(libc::EAGAIN)),
        "upgrading while the other mount reads"
    );

    // Unlocking lets the other side in.
    set_lock(&a, libc::F_SETLK, libc::F_UNLCK, 0, 100).unwrap();
    set_lock(&b, libc::F_SETLK, libc::F_WRLCK, 0, 100).unwrap();
    assert_eq!(get_lock(&a, libc::F_RDLCK, 0, 10).unwrap().0, libc::F_WRLCK);
}

#[test]
fn a_blocking_posix_lock_waits_for_the_other_mount_to_release() {
    let cluster = Cluster::builder().chunkservers(1).mounts(2).start();
    let a = open_rw(&cluster.mount_path(0).join("f"));
    let path_b = cluster.mount_path(1).join("f");
    set_lock(&a, libc::F_SETLK, libc::F_WRLCK, 0, 0).unwrap();

    let (tx, rx) = mpsc::channel();
    let b = open_rw(&path_b);
    let waiter = std::thread::spawn(move || {
        let r = set_lock(&b, libc::F_SETLKW, libc::F_WRLCK, 0, 0);
        tx.send(()).unwrap();
        (r, b)
    });
    assert!(
        rx.recv_timeout(Duration::from_millis(700)).is_err(),
        "F_SETLKW on mount B returned while mount A held the lock"
    );
    set_lock(&a, libc::F_SETLK, libc::F_UNLCK, 0, 0).unwrap();
    rx.recv_timeout(Duration::from_secs(10))
        .expect("F_SETLKW on mount B did not return within 10 s of the unlock");
    let (r, b) = waiter.join().unwrap();
    r.expect("the blocking lock is granted");
    assert_eq!(
        set_lock(&a, libc::F_SETLK, libc::F_WRLCK, 0, 0),
        Err(Errno(libc::EAGAIN)),
        "mount B holds it now"
    );
    drop(b);
}

#[test]
fn closing_any_descriptor_releases_the_process_posix_locks() {
    let cluster = Cluster::builder().chunkservers(1).mounts(2).start();
    let path = cluster.mount_path(0).join("f");
    let a = open_rw(&path);
    let b = open_rw(&cluster.mount_path(1).join("f"));
    set_lock(&a, libc::F_SETLK, libc::F_WRLCK, 0, 0).unwrap();
    assert_eq!(
        set_lock(&b, libc::F_SETLK, libc::F_WRLCK, 0, 0),
        Err(Errno(libc::EAGAIN))
    );
    // POSIX: closing another descriptor of the same file drops this process's locks.
    drop(File::open(&path).unwrap());
    set_lock(&b, libc::F_SETLK, libc::F_WRLCK, 0, 0)
        .expect("the lock must be gone once the process closed a descriptor of the file");
    drop(a);
}

/// flock(1) holding a lock on `path` while its command sleeps, in a process group of its own
/// (the command inherits the locked descriptor, so both must die to drop the lock).
fn hold_with_flock_command(path: &Path, mode: &str) -> Child {
    use std::os::unix::process::CommandExt;
    Command::new("flock")
        .arg(mode)
        .arg(path)
        .args(["-c", "echo locked; exec sleep 600"])
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .process_group(0)
        .spawn()
        .expect("running flock(1) from util-linux")
}

/// SIGKILL to the holder's whole process group (flock and its sleeping command), then reap.
fn kill_holder(mut holder: Child) {
    // SAFETY: kill(2) of the process group this test created for the holder.
    unsafe { libc::kill(-(holder.id() as i32), libc::SIGKILL) };
    holder.wait().unwrap();
}

fn wait_for_line(child: &mut Child) {
    use std::io::BufRead;
    let out = child.stdout.take().expect("piped stdout");
    let mut line = String::new();
    std::io::BufReader::new(out).read_line(&mut line).unwrap();
    assert_eq!(line.trim(), "locked", "flock(1) did not take the lock");
}

#[test]
fn flock_locks_conflict_across_two_mounts_and_die_with_their_holder() {
    let cluster = Cluster::builder().chunkservers(1).mounts(2).start();
    let pa = cluster.mount_path(0).join("lockfile");
    std::fs::write(&pa, b"").unwrap();
    let b = open_rw(&cluster.mount_path(1).join("lockfile"));

    let mut holder = hold_with_flock_command(&pa, "-x");
    wait_for_line(&mut holder);
    assert_eq!(
        flock(&b, libc::LOCK_EX | libc::LOCK_NB),
        Err(Errno(libc::EWOULDBLOCK)),
        "an exclusive flock held through mount A must stop mount B"
    );
    assert_eq!(
        flock(&b, libc::LOCK_SH | libc::LOCK_NB),
        Err(Errno(libc::EWOULDBLOCK))
    );

    // The holder dies without unlocking: its lock goes with it.
    kill_holder(holder);
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        match flock(&b, libc::LOCK_EX | libc::LOCK_NB) {
            Ok(()) => break,
            Err(e) if Instant::now() < deadline => assert_eq!(e, Errno(libc::EWOULDBLOCK)),
            Err(e) => panic!("the dead holder's flock is still held after 5 s: {e}"),
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    flock(&b, libc::LOCK_UN).unwrap();

    // Shared locks coexist across mounts; an exclusive one waits for both.
    let mut reader = hold_with_flock_command(&pa, "-s");
    wait_for_line(&mut reader);
    flock(&b, libc::LOCK_SH | libc::LOCK_NB).expect("two shared flocks coexist");
    let a2 = open_rw(&pa);
    assert_eq!(
        flock(&a2, libc::LOCK_EX | libc::LOCK_NB),
        Err(Errno(libc::EWOULDBLOCK))
    );
    kill_holder(reader);
    flock(&b, libc::LOCK_UN).unwrap();
    let deadline = Instant::now() + Duration::from_secs(5);
    while flock(&a2, libc::LOCK_EX | libc::LOCK_NB).is_err() {
        assert!(
            Instant::now() < deadline,
            "the exclusive flock never became free"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn posix_locks_of_a_killed_process_are_released() {
    let cluster = Cluster::builder().chunkservers(1).mounts(2).start();
    let pa = cluster.mount_path(0).join("f");
    std::fs::write(&pa, b"").unwrap();
    let b = open_rw(&cluster.mount_path(1).join("f"));
    // flock(1) has no fcntl mode; a child of ours takes the POSIX lock and is killed.
    let (read_end, write_end) = {
        let mut fds = [0; 2];
        // SAFETY: `fds` has room for two descriptors.
        assert_eq!(unsafe { libc::pipe(fds.as_mut_ptr()) }, 0);
        fds.into()
    };
    let path_c = sys::cpath(&pa);
    // SAFETY: the child makes only system calls before it is killed.
    let pid = unsafe { libc::fork() };
    if pid == 0 {
        // SAFETY: system calls only; the child never returns.
        unsafe {
            let fd = libc::open(path_c.as_ptr(), libc::O_RDWR);
            let fl = flock_struct(libc::F_WRLCK, 0, 0);
            let ok = fd >= 0 && libc::fcntl(fd, libc::F_SETLK, &fl) == 0;
            let byte = [u8::from(ok)];
            libc::write(write_end, byte.as_ptr().cast(), 1);
            libc::pause();
            libc::_exit(0);
        }
    }
    let read_end: i32 = read_end;
    let mut byte = [0u8; 1];
    // SAFETY: reading one byte into a valid buffer.
    unsafe {
        libc::close(write_end);
        libc::read(read_end, byte.as_mut_ptr().cast(), 1);
        libc::close(read_end);
    }
    assert_eq!(byte[0], 1, "the child could not take the lock");
    assert_eq!(
        set_lock(&b, libc::F_SETLK, libc::F_WRLCK, 0, 0),
        Err(Errno(libc::EAGAIN))
    );
    // SAFETY: our own child.
    unsafe {
        libc::kill(pid, libc::SIGKILL);
        libc::waitpid(pid, std::ptr::null_mut(), 0);
    }
    let deadline = Instant::now() + Duration::from_secs(5);
    while set_lock(&b, libc::F_SETLK, libc::F_WRLCK, 0, 0).is_err() {
        assert!(
            Instant::now() < deadline,
            "the killed process's lock is still held after 5 s"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn locks_held_through_a_master_restart_are_taken_back_before_another_mount_gets_them() {
    let mut cluster = Cluster::builder().chunkservers(1).mounts(2).start();
    let a = open_rw(&cluster.mount_path(0).join("db"));
    let b = open_rw(&cluster.mount_path(1).join("db"));
    set_lock(&a, libc::F_SETLK, libc::F_WRLCK, 0, 100).unwrap();
    set_lock(&a, libc::F_SETLK, libc::F_RDLCK, 1000, 10).unwrap();
    set_lock(&a, libc::F_SETLK, libc::F_UNLCK, 40, 10).unwrap();

    // The restarted master knows no lock; mount A claims its own when it reconnects, which a
    // request through it (a create always reaches the master) waits for.
    cluster.kill_master();
    cluster.start_master();
    std::fs::write(cluster.mount_path(0).join("after the restart"), b"x").unwrap();

    assert_eq!(
        set_lock(&b, libc::F_SETLK, libc::F_WRLCK, 50, 10),
        Err(Errno(libc::EAGAIN)),
        "mount A's lock must still stop mount B after the master restarted"
    );
    assert_eq!(
        set_lock(&b, libc::F_SETLK, libc::F_WRLCK, 1005, 1),
        Err(Errno(libc::EAGAIN)),
        "and so must its read lock a writer"
    );
    set_lock(&b, libc::F_SETLK, libc::F_WRLCK, 40, 10)
        .expect("the range A unlocked before the restart is free");
    set_lock(&b, libc::F_SETLK, libc::F_RDLCK, 1000, 10).expect("readers share");

    set_lock(&a, libc::F_SETLK, libc::F_UNLCK, 0, 100).unwrap();
    set_lock(&b, libc::F_SETLK, libc::F_WRLCK, 50, 10).expect("free once A unlocks");
}

/// A cluster with a file `shared` written through mount 0, a read-only mount (its index) and
/// that file opened through it, read-locked over its first 10 bytes.
fn read_locked_through_a_read_only_mount() -> (Cluster, std::path::PathBuf, usize, File) {
    let mut cluster = Cluster::builder().chunkservers(1).start();
    let path = cluster.mount_path(0).join("shared");
    std::fs::write(&path, b"data").unwrap();
    let ro = cluster.add_mount(None, "ro");
    let reader = File::open(cluster.mount_path(ro).join("shared")).unwrap();
    set_lock(&reader, libc::F_SETLK, libc::F_RDLCK, 0, 10).unwrap();
    (cluster, path, ro, reader)
}

#[test]
fn an_idle_read_only_mount_takes_its_locks_back_after_a_master_restart() {
    let (mut cluster, path, ro, reader) = read_locked_through_a_read_only_mount();

    // Nothing asks anything through the read-only mount: it must reconnect by itself.
    cluster.kill_master();
    cluster.start_master();
    let log = cluster
        .log_path(elkfs_testkit::Process::Mount(ro))
        .to_path_buf();
    elkfs_testkit::wait_until(
        Duration::from_secs(20),
        "the read-only mount to claim its lock again",
        || {
            std::fs::read_to_string(&log)
                .is_ok_and(|l| l.contains("locks claimed again after a reconnect"))
        },
    );
    let writer = open_rw(&path);
    assert_eq!(
        set_lock(&writer, libc::F_SETLK, libc::F_WRLCK, 5, 1),
        Err(Errno(libc::EAGAIN)),
        "the read-only mount's read lock must stop a writer after the master restarted"
    );
    drop(reader);
    set_lock(&writer, libc::F_SETLK, libc::F_WRLCK, 5, 1).expect("free once the reader closes");
}

/// A mount frozen with SIGSTOP (it answers nothing, as if cut off), thawed when dropped.
struct Frozen(i32);

impl Frozen {
    fn freeze(pid: u32) -> Frozen {
        let pid = pid as i32;
        // SAFETY: kill(2) of a mount process this test's cluster started.
        unsafe { libc::kill(pid, libc::SIGSTOP) };
        Frozen(pid)
    }
}

impl Drop for Frozen {
    fn drop(&mut self) {
        // SAFETY: as in `freeze`.
        unsafe { libc::kill(self.0, libc::SIGCONT) };
    }
}

#[test]
fn after_a_master_restart_new_locks_wait_for_the_mounts_that_held_locks_to_claim_them() {
    let mut cluster = Cluster::builder().chunkservers(1).mounts(2).start();
    let a = open_rw(&cluster.mount_path(0).join("db"));
    let b = open_rw(&cluster.mount_path(1).join("db"));
    set_lock(&a, libc::F_SETLK, libc::F_WRLCK, 0, 100).unwrap();

    // Mount A is cut off while the master restarts, so it cannot claim its lock at once.
    let frozen = Frozen::freeze(cluster.mount(0).pid().expect("mount A runs"));
    cluster.kill_master();
    cluster.start_master();
    let (tx, rx) = mpsc::channel();
    let b_lock = b.try_clone().unwrap();
    std::thread::spawn(move || {
        let _ = tx.send(set_lock(&b_lock, libc::F_SETLK, libc::F_WRLCK, 50, 10));
    });
    assert!(
        matches!(
            rx.recv_timeout(Duration::from_secs(3)),
            Err(mpsc::RecvTimeoutError::Timeout)
        ),
        "mount B's lock request must wait while a mount that held locks has not claimed them"
    );

    drop(frozen);
    std::fs::write(cluster.mount_path(0).join("after the restart"), b"x").unwrap();
    assert_eq!(
        rx.recv_timeout(Duration::from_secs(60))
            .expect("mount B's request is answered once mount A claimed its lock"),
        Err(Errno(libc::EAGAIN)),
        "mount A's lock must still stop mount B"
    );
    assert_eq!(
        get_lock(&b, libc::F_WRLCK, 50, 10).unwrap().0,
        libc::F_WRLCK,
        "mount B sees mount A's lock"
    );
    set_lock(&a, libc::F_SETLK, libc::F_UNLCK, 0, 100).unwrap();
    set_lock(&b, libc::F_SETLK, libc::F_WRLCK, 50, 10).expect("free once A unlocks");
}

#[test]
fn a_read_only_mount_that_once_held_a_lock_comes_back_by_itself_to_end_the_grace_period() {
    let (mut cluster, path, _, reader) = read_locked_through_a_read_only_mount();
    set_lock(&reader, libc::F_SETLK, libc::F_UNLCK, 0, 10).unwrap();
    drop(reader);
    // The kernel sends the close after `close(2)` returns; once the master has it, the mount
    // has nothing to tell the master any more. (Should the close still be on its way, the mount
    // reconnects for it and the test cannot fail, without proving anything.)
    std::thread::sleep(Duration::from_secs(2));

    // The master still counts the read-only mount among the clients to wait for, and nothing
    // asks anything through it: it must reconnect and claim (nothing) by itself.
    cluster.kill_master();
    cluster.start_master();
    elkfs_testkit::wait_until(
        Duration::from_secs(15),
        "every client that held locks to have claimed them",
        || {
            cluster
                .log_of(elkfs_testkit::Process::Master)
                .contains("every client that held locks has claimed them")
        },
    );
    let writer = open_rw(&path);
    set_lock(&writer, libc::F_SETLK, libc::F_WRLCK, 0, 10).expect("nobody holds it");
}

#[test]
fn a_process_whose_lock_was_lost_while_its_mount_was_away_gets_eio() {
    let config = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(config.path(), "lock_grace_secs = 1\n").unwrap();
    let mut cluster = Cluster::builder()
        .chunkservers(1)
        .mounts(2)
        .master_args([
            std::ffi::OsString::from("--config"),
            config.path().as_os_str().to_owned(),
        ])
        .start();
    let a = open_rw(&cluster.mount_path(0).join("db"));
    let a2 = open_rw(&cluster.mount_path(0).join("db2"));
    let b = open_rw(&cluster.mount_path(1).join("db"));
    let b2 = open_rw(&cluster.mount_path(1).join("db2"));
    set_lock(&a, libc::F_SETLK, libc::F_WRLCK, 0, 100).unwrap();
    set_lock(&a, libc::F_SETLK, libc::F_WRLCK, 200, 10).unwrap();
    set_lock(&a2, libc::F_SETLK, libc::F_WRLCK, 0, 100).unwrap();

    // Mount A stays away past the restarted master's grace period; mount B takes the ranges.
    let frozen = Frozen::freeze(cluster.mount(0).pid().expect("mount A runs"));
    cluster.kill_master();
    cluster.start_master();
    elkfs_testkit::wait_until(Duration::from_secs(15), "the grace period to end", || {
        cluster
            .log_of(elkfs_testkit::Process::Master)
            .contains("the grace period for locks ended")
    });
    set_lock(&b, libc::F_SETLK, libc::F_WRLCK, 50, 10).expect("A's lock is not claimed");
    set_lock(&b2, libc::F_SETLK, libc::F_WRLCK, 50, 10).expect("nor this one");

    drop(frozen);
    // A create reaches the master after mount A's reconnect and its claims.
    std::fs::write(cluster.mount_path(0).join("after the restart"), b"x").unwrap();
    cluster.allow_log_errors("another client took it meanwhile");
    set_lock(&a, libc::F_SETLK, libc::F_UNLCK, 200, 10)
        .expect("an unlock of a lock claimed back goes through");
    set_lock(&b, libc::F_SETLK, libc::F_WRLCK, 200, 10).expect("free once A unlocked it");
    assert_eq!(
        set_lock(&a, libc::F_SETLK, libc::F_WRLCK, 0, 10),
        Err(Errno(libc::EIO)),
        "the process that held the lost lock hears of it at its next lock request"
    );
    assert_eq!(
        set_lock(&a, libc::F_SETLK, libc::F_WRLCK, 0, 100),
        Err(Errno(libc::EAGAIN)),
        "then B's lock stops it as any other"
    );
    set_lock(&a, libc::F_SETLK, libc::F_WRLCK, 0, 10).expect("a range nobody holds");
    let fd = a2.into_raw_fd();
    // SAFETY: closing a descriptor this test owns, taken from its `File`.
    assert_eq!(
        sys::check(unsafe { libc::close(fd) }).map(drop),
        Err(Errno(libc::EIO)),
        "or at its close of the file"
    );
}
