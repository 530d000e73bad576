//! One ElkFS process under test: started with its output appended to a log file, ready once it
//! writes its ready file, stopped with SIGTERM (SIGKILL after a timeout), and always reaped.

use std::ffi::OsString;
use std::fs::{self, OpenOptions};
use std::io::{self, Write};
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::process::ExitStatus;
use std::thread;
use std::time::{Duration, Instant};

use crate::error::StartError;
use crate::launcher::Launcher;
use crate::log_scan::{self, MARKER};
use crate::network::Host;

/// How often the ready file is looked for.
const READY_POLL: Duration = Duration::from_millis(10);
/// How long a SIGKILLed process may take to be reaped.
const REAP_TIMEOUT: Duration = Duration::from_secs(10);
/// How often a stopping process is checked for exit.
const EXIT_POLL: Duration = Duration::from_millis(10);
/// Pause between attempts to rebind a port that is still in use.
const PORT_RETRY_GAP: Duration = Duration::from_millis(100);
/// Lines of log quoted in error messages.
pub(crate) const TAIL_LINES: usize = 30;

/// How a process ended when the harness stopped or killed it.
#[derive(Debug)]
pub(crate) enum Ending {
    /// There was no process (never started, or already stopped by the harness).
    NotRunning,
    /// It exited after the signal.
    Exited(ExitStatus),
    /// It had already exited on its own before the signal.
    ExitedEarlier(ExitStatus),
    /// It was killed with SIGKILL (asked for, or after not exiting on SIGTERM in time).
    Killed,
}

impl Ending {
    /// What is wrong with this ending of a SIGTERM stop, if anything: ElkFS daemons exit 0 on
    /// SIGTERM, promptly, and only when asked.
    pub(crate) fn stop_problem(&self, name: &str, timeout: Duration) -> Option<String> {
        match self {
            Ending::NotRunning => None,
            Ending::Exited(status) if status.success() => None,
            Ending::Exited(status) => Some(format!(
                "{name} exited with {status} after SIGTERM instead of exit status 0"
            )),
            Ending::ExitedEarlier(status) => Some(format!(
                "{name} had exited on its own ({status}) before the harness stopped it"
            )),
            Ending::Killed => Some(format!(
                "{name} did not exit within {timeout:?} of SIGTERM and was killed"
            )),
        }
    }
}

/// Sends SIGTERM to all `daemons` at once, then waits for each until `timeout` after the signal
/// (SIGKILL after that); returns each one's name and ending.
pub(crate) fn stop_together<'a>(
    daemons: impl Iterator<Item = &'a mut Daemon>,
    timeout: Duration,
) -> Vec<(String, Ending)> {
    let mut pending: Vec<(&mut Daemon, Option<Ending>)> = daemons
        .map(|d| {
            let early = d.terminate();
            (d, early)
        })
        .collect();
    let deadline = Instant::now() + timeout;
    pending
        .iter_mut()
        .map(|(daemon, early)| {
            let ending = early.take().unwrap_or_else(|| daemon.await_exit(deadline));
            (daemon.name().to_owned(), ending)
        })
        .collect()
}

/// A child process of the harness and the files that go with it.
pub(crate) struct Daemon {
    name: String,
    program: PathBuf,
    log_path: PathBuf,
    ready_path: PathBuf,
    launcher: Launcher,
    /// The running process, started by `launcher` and not yet seen to end.
    pid: Option<u32>,
    /// Byte ranges of the log written by failed start attempts that were retried (port in use);
    /// their errors were expected and are not reported.
    excused: Vec<Range<usize>>,
    /// The host of a private network it runs on (`None`: the machine's own, on 127.0.0.1).
    host: Option<Host>,
}

impl Daemon {
    /// A daemon called `name` (`master`, `cs0`, `mount1`) running `program`; nothing is started.
    pub(crate) fn new(
        name: String,
        program: PathBuf,
        log_path: PathBuf,
        ready_path: PathBuf,
        launcher: Launcher,
    ) -> Self {
        Daemon {
            name,
            program,
            log_path,
            ready_path,
            launcher,
            pid: None,
            excused: Vec::new(),
            host: None,
        }
    }

    /// The same daemon, run on `host` of a private network when given.
    pub(crate) fn on_host(mut self, host: Option<Host>) -> Self {
        self.host = host;
        self
    }

    /// The host it runs on, if on a private network.
    pub(crate) fn host(&self) -> Option<&Host> {
        self.host.as_ref()
    }

    /// The address it listens on: its host's, or 127.0.0.1.
    pub(crate) fn listen_ip(&self) -> std::net::IpAddr {
        match &self.host {
            Some(host) => host.ip.into(),
            None => std::net::Ipv4Addr::LOCALHOST.into(),
        }
    }

    /// The name used in log file names and messages.
    pub(crate) fn name(&self) -> &str {
        &self.name
    }

    /// The log file all runs of this process append to.
    pub(crate) fn log_path(&self) -> &Path {
        &self.log_path
    }

    /// The file the process writes once it is ready.
    pub(crate) fn ready_path(&self) -> &Path {
        &self.ready_path
    }

    /// The pid of the process the harness started and has not stopped yet.
    pub(crate) fn pid(&self) -> Option<u32> {
        self.pid
    }

    /// Starts the process and waits until it writes its ready file; returns the file's content.
    pub(crate) fn start(
        &mut self,
        args: &[OsString],
        env: &[(OsString, OsString)],
        timeout: Duration,
    ) -> Result<String, StartError> {
        self.spawn(args, env)?;
        self.wait_ready(timeout)
    }

    /// Like [`Daemon::start`] for a process told to listen on a fixed, previously used `port`:
    /// when it exits because the address is still in use, it is started again a few times.
    pub(crate) fn start_on_port(
        &mut self,
        port: u16,
        attempts: u32,
        args: &[OsString],
        env: &[(OsString, OsString)],
        timeout: Duration,
    ) -> Result<String, StartError> {
        for attempt in 1..=attempts {
            let offset = self.log_bytes().len();
            match self.start(args, env, timeout) {
                Err(StartError::ExitedBeforeReady { .. }) if self.address_in_use_since(offset) => {
                    let end = self.log_bytes().len();
                    self.excused.push(offset..end);
                    if attempt < attempts {
                        thread::sleep(PORT_RETRY_GAP);
                    }
                }
                other => return other,
            }
        }
        Err(StartError::AddressInUse {
            name: self.name.clone(),
            port,
            attempts,
        })
    }

    /// Sends SIGTERM. Returns how it ended when there is nothing to wait for (not running, or it
    /// had already exited); `None` means the signal was sent and [`Daemon::await_exit`] follows.
    pub(crate) fn terminate(&mut self) -> Option<Ending> {
        if self.pid.is_none() {
            return Some(Ending::NotRunning);
        }
        if let Some(status) = self.try_reap() {
            return Some(Ending::ExitedEarlier(status));
        }
        self.note("sending SIGTERM");
        self.signal(libc::SIGTERM);
        None
    }

    /// Waits until the process exits; at `deadline` it is killed with SIGKILL.
    pub(crate) fn await_exit(&mut self, deadline: Instant) -> Ending {
        loop {
            if self.pid.is_none() {
                return Ending::NotRunning;
            }
            if let Some(status) = self.try_reap() {
                return Ending::Exited(status);
            }
            if Instant::now() >= deadline {
                self.note("did not exit in time after SIGTERM; sending SIGKILL");
                self.kill_and_reap();
                return Ending::Killed;
            }
            thread::sleep(EXIT_POLL);
        }
    }

    /// SIGTERM, then wait up to `timeout` for the exit (SIGKILL after that).
    pub(crate) fn stop(&mut self, timeout: Duration) -> Ending {
        match self.terminate() {
            Some(ending) => ending,
            None => self.await_exit(Instant::now() + timeout),
        }
    }

    /// SIGKILL and reap.
    pub(crate) fn kill(&mut self) -> Ending {
        if self.pid.is_none() {
            return Ending::NotRunning;
        }
        if let Some(status) = self.try_reap() {
            return Ending::ExitedEarlier(status);
        }
        self.note("sending SIGKILL");
        self.kill_and_reap();
        Ending::Killed
    }

    /// If the process exited on its own, reaps it and returns its status.
    pub(crate) fn try_reap(&mut self) -> Option<ExitStatus> {
        let pid = self.pid?;
        // An error here means the launcher is gone; keep treating the process as running and
        // let the stop path's SIGKILL settle it.
        let status = self.launcher.exit_status(pid).ok().flatten()?;
        self.pid = None;
        Some(status)
    }

    /// The whole log, lossily decoded.
    pub(crate) fn log_text(&self) -> String {
        String::from_utf8_lossy(&self.log_bytes()).into_owned()
    }

    /// The log without the parts written by retried start attempts, for error scanning.
    pub(crate) fn scannable_log(&self) -> String {
        let bytes = self.log_bytes();
        let mut kept = Vec::with_capacity(bytes.len());
        let mut pos = 0;
        for range in &self.excused {
            kept.extend_from_slice(bytes.get(pos..range.start).unwrap_or_default());
            pos = range.end;
        }
        kept.extend_from_slice(bytes.get(pos..).unwrap_or_default());
        String::from_utf8_lossy(&kept).into_owned()
    }

    /// The raw log; empty when it does not exist yet.
    fn log_bytes(&self) -> Vec<u8> {
        fs::read(&self.log_path).unwrap_or_default()
    }

    /// The last lines of the log.
    pub(crate) fn log_tail(&self) -> String {
        log_scan::tail(&self.log_text(), TAIL_LINES)
    }

    fn spawn(&mut self, args: &[OsString], env: &[(OsString, OsString)]) -> Result<(), StartError> {
        if !self.program.is_file() {
            let file_name = self.program.file_name().unwrap_or_default();
            return Err(StartError::BinaryMissing {
                binary: file_name.to_string_lossy().into_owned(),
                dir: self.program.parent().unwrap_or(Path::new("")).to_path_buf(),
            });
        }
        match fs::remove_file(&self.ready_path) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => {
                let what = format!("removing the old ready file {}", self.ready_path.display());
                return Err(StartError::io(what, e));
            }
            _ => {}
        }
        let log_err = |e| StartError::io(format!("opening log {}", self.log_path.display()), e);
        let mut log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log_path)
            .map_err(log_err)?;
        let command_line = std::iter::once(self.program.as_os_str())
            .chain(args.iter().map(OsString::as_os_str))
            .map(|a| a.to_string_lossy())
            .collect::<Vec<_>>()
            .join(" ");
        writeln!(log, "{MARKER} starting {command_line}").map_err(log_err)?;

        let mut full_env: Vec<(OsString, OsString)> = vec![("NO_COLOR".into(), "1".into())];
        if std::env::var_os("RUST_BACKTRACE").is_none() {
            full_env.push(("RUST_BACKTRACE".into(), "1".into()));
        }
        full_env.extend(env.iter().cloned());
        let pid = self
            .launcher
            .spawn(
                &self.program,
                args,
                &full_env,
                &self.log_path,
                self.host.as_ref().map(|h| h.netns.as_path()),
            )
            .map_err(|source| StartError::Spawn {
                name: self.name.clone(),
                program: self.program.clone(),
                source,
            })?;
        self.pid = Some(pid);
        Ok(())
    }

    fn wait_ready(&mut self, timeout: Duration) -> Result<String, StartError> {
        let deadline = Instant::now() + timeout;
        loop {
            match fs::read_to_string(&self.ready_path) {
                Ok(content) => return Ok(content),
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => {
                    let what = format!("reading the ready file {}", self.ready_path.display());
                    return Err(StartError::io(what, e));
                }
            }
            if let Some(status) = self.try_reap() {
                return Err(StartError::ExitedBeforeReady {
                    name: self.name.clone(),
                    status,
                    log: self.log_path.clone(),
                    tail: self.log_tail(),
                });
            }
            if Instant::now() >= deadline {
                self.note("not ready in time; sending SIGKILL");
                self.kill_and_reap();
                return Err(StartError::NotReady {
                    name: self.name.clone(),
                    timeout,
                    ready_file: self.ready_path.clone(),
                    log: self.log_path.clone(),
                    tail: self.log_tail(),
                });
            }
            thread::sleep(READY_POLL);
        }
    }

    fn address_in_use_since(&self, offset: usize) -> bool {
        let bytes = self.log_bytes();
        let new = String::from_utf8_lossy(bytes.get(offset..).unwrap_or_default()).to_lowercase();
        new.contains("address already in use") || new.contains("os error 98")
    }

    fn signal(&self, signal: libc::c_int) {
        let Some(pid) = self.pid.and_then(|p| libc::pid_t::try_from(p).ok()) else {
            return;
        };
        // SAFETY: kill(2) has no memory-safety preconditions. `pid` is the process this daemon
        // started, last seen running by its launcher.
        unsafe {
            libc::kill(pid, signal);
        }
    }

    fn kill_and_reap(&mut self) {
        if self.pid.is_none() {
            return;
        }
        self.signal(libc::SIGKILL);
        let deadline = Instant::now() + REAP_TIMEOUT;
        while self.try_reap().is_none() && Instant::now() < deadline {
            thread::sleep(EXIT_POLL);
        }
        self.pid = None;
    }

    /// Appends a harness line to the log, so a reader sees where signals and restarts happened.
    fn note(&self, what: &str) {
        if let Ok(mut log) = OpenOptions::new().append(true).open(&self.log_path) {
            let _ = writeln!(log, "{MARKER} {what}");
        }
    }
}

impl Drop for Daemon {
    /// Last resort when the cluster's orderly teardown did not run to the end: never leave a
    /// process or a zombie behind.
    fn drop(&mut self) {
        self.kill_and_reap();
    }
}
