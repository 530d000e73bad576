//! Ctrl-C and SIGTERM. The run stops at its next [`check`] and the clusters are torn down by their
//! `Drop`. Every process and mount the harness starts is also listed here, so that when the main
//! thread cannot get to its teardown (a request stuck in a hung mount, a second Ctrl-C), a watcher
//! thread stops the processes and detaches the mounts itself before exiting.

use std::path::{Path, PathBuf};
use std::process::Child;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Mutex, MutexGuard};
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};

use crate::mountpoint;

/// How long the main thread gets to tear down on its own after the first signal.
const GRACE: Duration = Duration::from_secs(45);
/// How long mount processes get after SIGTERM in an emergency teardown.
const EMERGENCY_MOUNT_WAIT: Duration = Duration::from_secs(3);
/// How long daemons get after SIGTERM in an emergency teardown.
const EMERGENCY_DAEMON_WAIT: Duration = Duration::from_secs(3);
/// Exit status after an interrupt, as a shell reports SIGINT.
pub const INTERRUPTED_EXIT: i32 = 130;

static INTERRUPTED: AtomicBool = AtomicBool::new(false);
static SIGNALS: AtomicUsize = AtomicUsize::new(0);
static REGISTRY: Mutex<Registry> = Mutex::new(Registry {
    processes: Vec::new(),
    mounts: Vec::new(),
});

/// Whether a started process serves a mount (stopped first) or is a daemon.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    /// A FUSE mount process.
    Mount,
    /// A master or chunkserver.
    Server,
}

/// The processes started and not yet reaped, and the mountpoints that may be mounted.
pub struct Registry {
    processes: Vec<(u32, Role)>,
    mounts: Vec<PathBuf>,
}

impl Registry {
    /// Records a child that is running; its pid cannot be reused until it is reaped.
    pub fn add_process(&mut self, child: &Child, role: Role) {
        self.processes.push((child.id(), role));
    }

    /// Reaps `child` if it has exited, and forgets it in the same step (under the lock, so the
    /// watcher never signals a pid that was reaped and reused).
    pub fn try_reap(
        &mut self,
        child: &mut Child,
    ) -> std::io::Result<Option<std::process::ExitStatus>> {
        let status = child.try_wait()?;
        if status.is_some() {
            let pid = child.id();
            self.processes.retain(|(p, _)| *p != pid);
        }
        Ok(status)
    }
}

/// The registry, locked. A poisoned lock is still usable: the lists stay consistent.
pub fn registry() -> MutexGuard<'static, Registry> {
    REGISTRY
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Records a mountpoint that is (or is about to be) mounted.
pub fn add_mount(path: &Path) {
    registry().mounts.push(path.to_path_buf());
}

/// Forgets a mountpoint once it is unmounted.
pub fn remove_mount(path: &Path) {
    registry().mounts.retain(|p| p != path);
}

extern "C" fn on_signal(_signal: libc::c_int) {
    // Only atomics here: they are async-signal-safe.
    SIGNALS.fetch_add(1, Ordering::SeqCst);
    INTERRUPTED.store(true, Ordering::SeqCst);
}

/// Installs the SIGINT/SIGTERM/SIGHUP handler and starts the watcher thread.
pub fn install() -> anyhow::Result<()> {
    for signal in [libc::SIGINT, libc::SIGTERM, libc::SIGHUP] {
        // SAFETY: `action` is fully initialised (zeroed, then the handler and an empty mask set),
        // and the handler only touches atomics, which is async-signal-safe.
        let result = unsafe {
            let mut action: libc::sigaction = std::mem::zeroed();
            action.sa_sigaction = on_signal as extern "C" fn(libc::c_int) as libc::sighandler_t;
            action.sa_flags = libc::SA_RESTART;
            libc::sigemptyset(&mut action.sa_mask);
            libc::sigaction(signal, &action, std::ptr::null_mut())
        };
        if result != 0 {
            return Err(std::io::Error::last_os_error())
                .with_context(|| format!("installing the handler for signal {signal}"));
        }
    }
    thread::Builder::new()
        .name("interrupt-watcher".into())
        .spawn(watch)
        .context("starting the interrupt watcher thread")?;
    Ok(())
}

/// Whether Ctrl-C (or SIGTERM) was received.
pub fn interrupted() -> bool {
    INTERRUPTED.load(Ordering::SeqCst)
}

/// Fails with "interrupted" once a signal was received; called between steps and in loops.
pub fn check() -> anyhow::Result<()> {
    if interrupted() {
        bail!("interrupted");
    }
    Ok(())
}

/// Sleeps for `duration`, returning early with an error when interrupted.
pub fn sleep(duration: Duration) -> anyhow::Result<()> {
    let end = Instant::now() + duration;
    loop {
        check()?;
        let now = Instant::now();
        if now >= end {
            return Ok(());
        }
        thread::sleep((end - now).min(Duration::from_millis(50)));
    }
}

fn watch() {
    while !interrupted() {
        thread::sleep(Duration::from_millis(100));
    }
    eprintln!("elkfs-bench: interrupted; stopping the clusters (Ctrl-C again to force)");
    let deadline = Instant::now() + GRACE;
    while Instant::now() < deadline && SIGNALS.load(Ordering::SeqCst) < 2 {
        thread::sleep(Duration::from_millis(100));
    }
    eprintln!("elkfs-bench: stopping every process and mount the harness started");
    emergency_teardown();
    std::process::exit(INTERRUPTED_EXIT);
}

/// Stops the registered mount processes, detaches their mountpoints, then stops the daemons:
/// SIGTERM, a short wait, SIGKILL. Processes are not reaped (the main thread owns them), so their
/// pids stay ours while the registry lists them.
fn emergency_teardown() {
    for role in [Role::Mount, Role::Server] {
        let wait = match role {
            Role::Mount => EMERGENCY_MOUNT_WAIT,
            Role::Server => EMERGENCY_DAEMON_WAIT,
        };
        signal_all(role, libc::SIGTERM);
        thread::sleep(wait);
        signal_all(role, libc::SIGKILL);
        if role == Role::Mount {
            let mounts = registry().mounts.clone();
            for path in mounts {
                if let Err(e) = mountpoint::detach_if_mounted(&path) {
                    eprintln!("elkfs-bench: could not detach {}: {e:#}", path.display());
                }
            }
        }
    }
}

fn signal_all(role: Role, signal: libc::c_int) {
    let registry = registry();
    for &(pid, r) in &registry.processes {
        if r != role {
            continue;
        }
        let Ok(pid) = libc::pid_t::try_from(pid) else {
            continue;
        };
        // SAFETY: kill(2) has no memory-safety preconditions; the registry lock is held, so the
        // pid belongs to an unreaped child of ours and cannot have been reused.
        unsafe {
            libc::kill(pid, signal);
        }
    }
}
