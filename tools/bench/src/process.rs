//! One process the harness starts (a master, a chunkserver, a mount): its output goes to a log
//! file, it runs in its own process group (so Ctrl-C reaches only the harness, which then stops it
//! in order), it is listed in the interrupt registry, and dropping it stops it.

use std::fs::OpenOptions;
use std::io::ErrorKind;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};

use crate::interrupt::{self, Role};

/// How long a process gets to exit after SIGTERM before SIGKILL.
pub const STOP_TIMEOUT: Duration = Duration::from_secs(10);
/// How often readiness and exits are polled.
const POLL: Duration = Duration::from_millis(20);
/// Log lines quoted in error messages.
const TAIL_LINES: usize = 15;

/// How a process ended when the harness stopped it.
#[derive(Debug)]
pub enum Ending {
    /// It was not running (never started, or already reaped).
    NotRunning,
    /// It had exited on its own before it was asked to.
    ExitedEarlier(ExitStatus),
    /// It exited after SIGTERM.
    Exited(ExitStatus),
    /// It did not exit in time after SIGTERM and was killed.
    Killed,
}

impl Ending {
    /// A sentence about an ending that is not a clean exit, if it is not.
    pub fn problem(&self, name: &str) -> Option<String> {
        match self {
            Ending::NotRunning => None,
            Ending::Exited(status) if status.success() => None,
            Ending::Exited(status) => Some(format!("{name} exited with {status} after SIGTERM")),
            Ending::ExitedEarlier(status) => Some(format!(
                "{name} had exited on its own ({status}) before the end of the run"
            )),
            Ending::Killed => Some(format!(
                "{name} did not exit within {STOP_TIMEOUT:?} of SIGTERM and was killed"
            )),
        }
    }
}

/// A child process with its log.
pub struct Daemon {
    name: String,
    child: Option<Child>,
    log: PathBuf,
}

impl Daemon {
    /// Starts `command` with stdin closed and stdout/stderr appended to `log`.
    pub fn spawn(name: &str, mut command: Command, role: Role, log: &Path) -> anyhow::Result<Self> {
        let out = OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
            .with_context(|| format!("opening log {}", log.display()))?;
        let err = out
            .try_clone()
            .with_context(|| format!("opening log {}", log.display()))?;
        command
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .env("NO_COLOR", "1")
            .process_group(0);
        // Spawned under the registry lock so an emergency teardown cannot miss it.
        let mut registry = interrupt::registry();
        let child = command
            .spawn()
            .with_context(|| format!("starting {name} ({:?})", command.get_program()))?;
        registry.add_process(&child, role);
        Ok(Daemon {
            name: name.to_owned(),
            child: Some(child),
            log: log.to_path_buf(),
        })
    }

    /// The name used in messages (`elkfs master`, `mfschunkserver 2`).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The process id while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// If the process has exited, reaps it and returns its status.
    pub fn try_exit(&mut self) -> Option<ExitStatus> {
        let child = self.child.as_mut()?;
        match interrupt::registry().try_reap(child) {
            Ok(Some(status)) => {
                self.child = None;
                Some(status)
            }
            // An error means it was reaped elsewhere, which this harness never does; treat it as
            // still running so the stop path's SIGKILL settles it.
            Ok(None) | Err(_) => None,
        }
    }

    /// Polls `ready` until it returns true; fails with the log's tail if the process exits first
    /// or `timeout` passes.
    pub fn wait_for(
        &mut self,
        what: &str,
        timeout: Duration,
        mut ready: impl FnMut() -> anyhow::Result<bool>,
    ) -> anyhow::Result<()> {
        let deadline = Instant::now() + timeout;
        loop {
            interrupt::check()?;
            if ready()? {
                return Ok(());
            }
            if let Some(status) = self.try_exit() {
                bail!(
                    "{} exited ({status}) before {what}; last lines of {}:\n{}",
                    self.name,
                    self.log.display(),
                    self.log_tail()
                );
            }
            if Instant::now() >= deadline {
                bail!(
                    "{} not ready ({what}) within {timeout:?}; last lines of {}:\n{}",
                    self.name,
                    self.log.display(),
                    self.log_tail()
                );
            }
            thread::sleep(POLL);
        }
    }

    /// Waits until the process writes `path` (an ElkFS ready file) and returns its first line.
    pub fn wait_ready_file(&mut self, path: &Path, timeout: Duration) -> anyhow::Result<String> {
        let mut content = String::new();
        let what = format!("writing its ready file {}", path.display());
        self.wait_for(&what, timeout, || match std::fs::read_to_string(path) {
            Ok(text) => {
                content = text.lines().next().unwrap_or_default().trim().to_owned();
                Ok(true)
            }
            Err(e) if e.kind() == ErrorKind::NotFound => Ok(false),
            Err(e) => Err(e).with_context(|| format!("reading {}", path.display())),
        })?;
        Ok(content)
    }

    /// Sends `signal` if the process runs.
    pub fn signal(&self, signal: libc::c_int) {
        let Some(pid) = self.pid().and_then(|p| libc::pid_t::try_from(p).ok()) else {
            return;
        };
        // SAFETY: kill(2) has no memory-safety preconditions; the child is ours and unreaped
        // (only this struct reaps it), so the pid cannot have been reused.
        unsafe {
            libc::kill(pid, signal);
        }
    }

    /// Sends SIGTERM; returns the ending right away when there is nothing to wait for (not
    /// running, or it had already exited), `None` when [`Daemon::await_exit`] should follow.
    pub fn terminate(&mut self) -> Option<Ending> {
        if self.child.is_none() {
            return Some(Ending::NotRunning);
        }
        if let Some(status) = self.try_exit() {
            return Some(Ending::ExitedEarlier(status));
        }
        self.signal(libc::SIGTERM);
        None
    }

    /// Waits for the exit after [`Daemon::terminate`]; SIGKILL at `deadline`.
    pub fn await_exit(&mut self, deadline: Instant) -> Ending {
        loop {
            if self.child.is_none() {
                return Ending::NotRunning;
            }
            if let Some(status) = self.try_exit() {
                return Ending::Exited(status);
            }
            if Instant::now() >= deadline {
                self.kill();
                return Ending::Killed;
            }
            thread::sleep(POLL);
        }
    }

    /// SIGTERM, then up to `timeout` for it to exit, then SIGKILL.
    pub fn stop(&mut self, timeout: Duration) -> Ending {
        self.terminate()
            .unwrap_or_else(|| self.await_exit(Instant::now() + timeout))
    }

    /// SIGKILL, and waits until it is gone.
    pub fn kill(&mut self) {
        if self.child.is_none() {
            return;
        }
        self.signal(libc::SIGKILL);
        while self.child.is_some() {
            if self.try_exit().is_none() {
                thread::sleep(POLL);
            }
        }
    }

    /// The last lines of the log.
    pub fn log_tail(&self) -> String {
        let text = match std::fs::read(&self.log) {
            Ok(bytes) => String::from_utf8_lossy(&bytes).into_owned(),
            Err(e) => return format!("(cannot read the log: {e})"),
        };
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(TAIL_LINES)..].join("\n")
    }
}

/// Stops several daemons at once (SIGTERM to all, then waits for each); returns the problems.
pub fn stop_all<'a>(daemons: impl IntoIterator<Item = &'a mut Daemon>) -> Vec<String> {
    let mut pending: Vec<(&mut Daemon, Option<Ending>)> = daemons
        .into_iter()
        .map(|d| {
            let early = d.terminate();
            (d, early)
        })
        .collect();
    let deadline = Instant::now() + STOP_TIMEOUT;
    pending
        .iter_mut()
        .filter_map(|(daemon, early)| {
            let ending = early.take().unwrap_or_else(|| daemon.await_exit(deadline));
            ending.problem(daemon.name())
        })
        .collect()
}

impl Drop for Daemon {
    fn drop(&mut self) {
        self.stop(STOP_TIMEOUT);
    }
}

/// Runs a short command to completion and returns its standard output; fails with its stderr
/// unless it exits 0.
pub fn run_tool(program: &str, args: &[&str]) -> anyhow::Result<String> {
    let output = Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("running {program} {}", args.join(" ")))?;
    if !output.status.success() {
        bail!(
            "{program} {} failed ({}): {}{}",
            args.join(" "),
            output.status,
            String::from_utf8_lossy(&output.stderr).trim(),
            String::from_utf8_lossy(&output.stdout).trim()
        );
    }
    Ok(String::from_utf8_lossy(&output.stdout).into_owned())
}

/// Whether `program` can be found on `PATH`.
pub fn on_path(program: &str) -> bool {
    std::env::var_os("PATH")
        .is_some_and(|path| std::env::split_paths(&path).any(|dir| dir.join(program).is_file()))
}
