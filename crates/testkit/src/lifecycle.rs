//! Starting, stopping, killing and restarting the processes of a running [`Cluster`], the way
//! fault tests need: the master comes back on the same port, chunkservers on the same directories,
//! mounts at the same mountpoints.

use std::ffi::OsString;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitStatus;
use std::thread;
use std::time::{Duration, Instant};

use crate::cluster::{Cluster, check_index};
use crate::daemon::{self, Daemon, Ending};
use crate::error::StartError;
use crate::handles::{MountHandle, Process};
use crate::mountinfo;

/// How long a process gets to exit after SIGTERM before it is killed.
pub const STOP_TIMEOUT: Duration = Duration::from_secs(5);
/// Starts of a master whose port is still in use (100 ms apart) before giving up.
const MASTER_PORT_ATTEMPTS: u32 = 20;
/// Starts of a chunkserver whose old port is still in use before it takes a new one.
const CHUNKSERVER_PORT_ATTEMPTS: u32 = 5;

impl Cluster {
    /// Starts the master (again): same data dir, and the same port as its first run so clients
    /// and chunkservers reconnect. Panics if it does not become ready.
    pub fn start_master(&mut self) {
        self.try_start_master()
            .unwrap_or_else(|e| panic!("starting the master failed: {e}"));
    }

    /// Like [`Cluster::start_master`], returning the error instead, for tests that expect the
    /// master to refuse to start.
    pub fn try_start_master(&mut self) -> Result<(), StartError> {
        note_if_exited(&mut self.master.daemon, &mut self.problems);
        let port = self.master.addr.map_or(0, |a| a.port());
        let ready = self.master.daemon.ready_path().to_path_buf();
        let mut args: Vec<OsString> = vec![
            "--data-dir".into(),
            self.master.data_dir.clone().into(),
            "--listen".into(),
            format!("{}:{port}", self.master.daemon.listen_ip()).into(),
            "--ready-file".into(),
            ready.into(),
        ];
        args.extend(self.master.args.iter().cloned());
        let attempts = if port == 0 { 1 } else { MASTER_PORT_ATTEMPTS };
        let daemon = &mut self.master.daemon;
        let content = daemon.start_on_port(port, attempts, &args, &self.env, self.ready_timeout)?;
        let addr = parse_ready_addr(daemon, &content)?;
        if port != 0 && addr.port() != port {
            daemon.kill();
            return Err(StartError::BadReadyFile {
                name: daemon.name().to_owned(),
                content,
                expected: format!("expected the port of its first run, {port}"),
            });
        }
        self.master.addr = Some(addr);
        Ok(())
    }

    /// Stops the master with SIGTERM; panics unless it exits 0 within [`STOP_TIMEOUT`].
    pub fn stop_master(&mut self) {
        expect_clean_stop(&mut self.master.daemon);
    }

    /// Kills the master with SIGKILL, as a crash would.
    pub fn kill_master(&mut self) {
        expect_killed(&mut self.master.daemon);
    }

    /// Replaces the extra arguments of the master's next starts.
    pub fn set_master_args<I, S>(&mut self, args: I)
    where
        I: IntoIterator<Item = S>,
        S: Into<OsString>,
    {
        self.master.args = args.into_iter().map(Into::into).collect();
    }

    /// Starts chunkserver `i` (again) with its directories, on its old port if that is free, and
    /// waits until the master knows it. Panics if it does not become ready.
    pub fn start_chunkserver(&mut self, i: usize) {
        self.try_start_chunkserver(i)
            .unwrap_or_else(|e| panic!("starting chunkserver {i} failed: {e}"));
    }

    /// Like [`Cluster::start_chunkserver`], returning the error instead.
    pub fn try_start_chunkserver(&mut self, i: usize) -> Result<(), StartError> {
        let master = self.master_addr();
        check_index("chunkserver", i, self.chunkservers.len());
        let (env, timeout) = (&self.env, self.ready_timeout);
        let cs = &mut self.chunkservers[i];
        note_if_exited(&mut cs.daemon, &mut self.problems);
        let ready = cs.daemon.ready_path().to_path_buf();
        let ip = cs.daemon.listen_ip();
        let fresh_args = cs.command_args(master, &format!("{ip}:0"), &ready);
        let content = match cs.addr.map(|a| a.port()) {
            Some(port) => {
                let args = cs.command_args(master, &format!("{ip}:{port}"), &ready);
                let attempts = CHUNKSERVER_PORT_ATTEMPTS;
                match cs.daemon.start_on_port(port, attempts, &args, env, timeout) {
                    Err(StartError::AddressInUse { .. }) => {
                        cs.daemon.start(&fresh_args, env, timeout)?
                    }
                    other => other?,
                }
            }
            None => cs.daemon.start(&fresh_args, env, timeout)?,
        };
        cs.addr = Some(parse_ready_addr(&cs.daemon, &content)?);
        Ok(())
    }

    /// Stops chunkserver `i` with SIGTERM; panics unless it exits 0 within [`STOP_TIMEOUT`].
    pub fn stop_chunkserver(&mut self, i: usize) {
        expect_clean_stop(self.daemon_mut(Process::Chunkserver(i)));
    }

    /// Kills chunkserver `i` with SIGKILL, as a crash would.
    pub fn kill_chunkserver(&mut self, i: usize) {
        expect_killed(self.daemon_mut(Process::Chunkserver(i)));
    }

    /// Adds a chunkserver with fresh data directories, starts it and returns its index.
    pub fn add_chunkserver(&mut self) -> usize {
        let i = self
            .new_chunkserver()
            .unwrap_or_else(|e| panic!("adding a chunkserver failed: {e}"));
        self.start_chunkserver(i);
        i
    }

    /// Adds a chunkserver whose `--data` directories are `dirs` (created if missing) instead of
    /// fresh ones under [`Cluster::dir`], starts it and returns its index. For a chunkserver on a
    /// file system of its own, such as a size-limited tmpfs the test mounted: the test owns the
    /// directories, and keeps them (and their mounts) until the cluster is dropped.
    pub fn add_chunkserver_on<I, P>(&mut self, dirs: I) -> usize
    where
        I: IntoIterator<Item = P>,
        P: Into<PathBuf>,
    {
        let dirs: Vec<PathBuf> = dirs.into_iter().map(Into::into).collect();
        if dirs.is_empty() {
            panic!("add_chunkserver_on needs at least one data directory");
        }
        let i = self
            .new_chunkserver_on(dirs)
            .unwrap_or_else(|e| panic!("adding a chunkserver failed: {e}"));
        self.start_chunkserver(i);
        i
    }

    /// Passes data directory `j` of chunkserver `i` as `*DIR` (marked for removal) or plainly,
    /// from the chunkserver's next start on.
    pub fn set_marked_for_removal(&mut self, i: usize, j: usize, marked: bool) {
        check_index("chunkserver", i, self.chunkservers.len());
        let cs = &mut self.chunkservers[i];
        let dirs = cs.marked_for_removal.len();
        match cs.marked_for_removal.get_mut(j) {
            Some(flag) => *flag = marked,
            None => panic!("chunkserver {i} has no data dir {j}; it has {dirs}"),
        }
    }

    /// Replaces the extra arguments of chunkserver `i`'s next starts.
    pub fn set_chunkserver_args<I, S>(&mut self, i: usize, args: I)
    where
        I: IntoIterator<Item = S>,
        S: Into<OsString>,
    {
        check_index("chunkserver", i, self.chunkservers.len());
        self.chunkservers[i].args = args.into_iter().map(Into::into).collect();
    }

    /// Mounts `subdir` (`None`: the root) with `-o options` at a new mountpoint under
    /// [`Cluster::dir`], waits until the mount is live, and returns the mount's index.
    pub fn add_mount(&mut self, subdir: Option<&str>, options: &str) -> usize {
        let i = self
            .new_mount(subdir, options)
            .unwrap_or_else(|e| panic!("adding a mount failed: {e}"));
        self.remount(i);
        i
    }

    /// Like [`Cluster::add_mount`], returning the error (with the mount's log) when the mount
    /// fails, for tests that expect a refusal; the mount keeps its index either way.
    pub fn try_add_mount(
        &mut self,
        subdir: Option<&str>,
        options: &str,
    ) -> Result<usize, StartError> {
        let i = self.new_mount(subdir, options)?;
        self.try_remount(i).map(|()| i)
    }

    /// Mounts mount `i` again at the same mountpoint with the same options.
    pub fn remount(&mut self, i: usize) {
        self.try_remount(i)
            .unwrap_or_else(|e| panic!("mounting mount {i} failed: {e}"));
    }

    /// Like [`Cluster::remount`], returning the error instead.
    pub fn try_remount(&mut self, i: usize) -> Result<(), StartError> {
        let master = self.master_addr();
        check_index("mount", i, self.mounts.len());
        let (env, timeout) = (&self.env, self.ready_timeout);
        let mount = &mut self.mounts[i];
        note_if_exited(&mut mount.daemon, &mut self.problems);
        let args = mount.command_args(master, mount.daemon.ready_path());
        let started = mount.daemon.start(&args, env, timeout);
        if started.is_err() {
            // A mount that died or was killed half-way may have left the mountpoint behind.
            if let Err(problem) = detach_leftover(mount) {
                self.problems.push(problem);
            }
        }
        started.map(drop)
    }

    /// Unmounts mount `i`: SIGTERM to its process, which unmounts and exits 0. Panics if it
    /// does not, or if the mountpoint is still mounted afterwards (it is detached either way).
    pub fn unmount(&mut self, i: usize) {
        check_index("mount", i, self.mounts.len());
        let mount = &mut self.mounts[i];
        expect_clean_stop(&mut mount.daemon);
        if let Err(problem) = detach_leftover(mount) {
            panic!("{problem}");
        }
    }

    /// Kills mount `i`'s process with SIGKILL, then detaches the dead mountpoint
    /// (`umount2(MNT_DETACH)`) so nothing is left behind.
    pub fn kill_mount(&mut self, i: usize) {
        check_index("mount", i, self.mounts.len());
        let mount = &mut self.mounts[i];
        expect_killed(&mut mount.daemon);
        if let Err(e) = mountinfo::detach_if_mounted(&mount.path) {
            panic!("detaching {} failed: {e}", mount.path.display());
        }
    }

    /// Waits up to `timeout` for a process that is expected to exit by itself (a refused
    /// config, a fatal disk error) and returns its exit status; panics if it keeps running.
    pub fn wait_for_exit(&mut self, which: Process, timeout: Duration) -> ExitStatus {
        let deadline = Instant::now() + timeout;
        let daemon = self.daemon_mut(which);
        let status = loop {
            if let Some(status) = daemon.try_reap() {
                break status;
            }
            if daemon.pid().is_none() {
                panic!("{} is not running", daemon.name());
            }
            if Instant::now() >= deadline {
                panic!("{} did not exit within {timeout:?}", daemon.name());
            }
            thread::sleep(Duration::from_millis(10));
        };
        if let Process::Mount(i) = which
            && let Err(problem) = detach_leftover(&self.mounts[i])
        {
            self.problems.push(problem);
        }
        status
    }

    /// Stops everything that is running (mounts, then chunkservers, then the master, each with
    /// SIGTERM) and starts it again with the same directories and ports, remounting at the same
    /// mountpoints. The master is started even if it was not running; chunkservers and mounts
    /// the test had stopped stay stopped.
    pub fn restart_all(&mut self) {
        let mounts: Vec<usize> = (0..self.mounts.len())
            .filter(|&i| self.mounts[i].pid().is_some())
            .collect();
        let servers: Vec<usize> = (0..self.chunkservers.len())
            .filter(|&i| self.chunkservers[i].pid().is_some())
            .collect();
        let stopped =
            daemon::stop_together(self.mounts.iter_mut().map(|m| &mut m.daemon), STOP_TIMEOUT);
        let mut problems = stop_problems(stopped);
        problems.extend(self.mounts.iter().filter_map(|m| detach_leftover(m).err()));
        let stopped = daemon::stop_together(
            self.chunkservers.iter_mut().map(|c| &mut c.daemon),
            STOP_TIMEOUT,
        );
        problems.extend(stop_problems(stopped));
        problems.extend(
            self.master
                .daemon
                .stop(STOP_TIMEOUT)
                .stop_problem("master", STOP_TIMEOUT),
        );
        if !problems.is_empty() {
            panic!("restart_all: stopping failed:\n{}", problems.join("\n"));
        }
        self.start_master();
        for i in servers {
            self.start_chunkserver(i);
        }
        for i in mounts {
            self.remount(i);
        }
    }
}

/// Before a start: a process that died on its own since the last check is reaped and reported;
/// one that is still running is a mistake in the test.
pub(crate) fn note_if_exited(daemon: &mut Daemon, problems: &mut Vec<String>) {
    if let Some(status) = daemon.try_reap() {
        problems.push(format!(
            "{} had exited on its own ({status}) before it was started again",
            daemon.name()
        ));
    } else if daemon.pid().is_some() {
        panic!("{} is already running", daemon.name());
    }
}

pub(crate) fn expect_clean_stop(daemon: &mut Daemon) {
    let ending = daemon.stop(STOP_TIMEOUT);
    if let Ending::NotRunning = ending {
        panic!("cannot stop {}: it is not running", daemon.name());
    }
    if let Some(problem) = ending.stop_problem(daemon.name(), STOP_TIMEOUT) {
        panic!("{problem}");
    }
}

pub(crate) fn expect_killed(daemon: &mut Daemon) {
    match daemon.kill() {
        Ending::Killed | Ending::Exited(_) => {}
        Ending::NotRunning => panic!("cannot kill {}: it is not running", daemon.name()),
        Ending::ExitedEarlier(status) => panic!(
            "cannot kill {}: it had already exited on its own ({status})",
            daemon.name()
        ),
    }
}

pub(crate) fn stop_problems(stopped: Vec<(String, Ending)>) -> Vec<String> {
    stopped
        .into_iter()
        .filter_map(|(name, ending)| ending.stop_problem(&name, STOP_TIMEOUT))
        .collect()
}

/// After a mount process is gone: detaches the mountpoint if it is still mounted, which is a
/// problem (a mount must unmount when it exits) reported as the error.
pub(crate) fn detach_leftover(mount: &MountHandle) -> Result<(), String> {
    let path = mount.path.display();
    match mountinfo::detach_if_mounted(&mount.path) {
        Ok(false) => Ok(()),
        Ok(true) => Err(format!(
            "{} left {path} mounted after its process ended; detached it",
            mount.daemon.name()
        )),
        Err(e) => Err(format!(
            "{path} is still mounted and detaching it failed: {e}"
        )),
    }
}

fn parse_ready_addr(daemon: &Daemon, content: &str) -> Result<SocketAddr, StartError> {
    content
        .trim()
        .parse()
        .map_err(|_| StartError::BadReadyFile {
            name: daemon.name().to_owned(),
            content: content.to_owned(),
            expected: "expected HOST:PORT".to_owned(),
        })
}
