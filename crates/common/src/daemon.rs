//! Plumbing every daemon shares: stopping on SIGTERM/SIGINT, announcing readiness, and keeping
//! a data directory to one process.

use std::io::Write;
use std::path::Path;

use anyhow::Context;
use tokio_util::sync::CancellationToken;

/// Returns a token that is cancelled on the first SIGTERM or SIGINT (a second one is left to
/// the default action only if the daemon does not stop).
pub fn stop_on_signals() -> anyhow::Result<CancellationToken> {
    use tokio::signal::unix::{SignalKind, signal};
    let token = CancellationToken::new();
    let mut term = signal(SignalKind::terminate()).context("cannot install SIGTERM handler")?;
    let mut int = signal(SignalKind::interrupt()).context("cannot install SIGINT handler")?;
    let cancel = token.clone();
    tokio::spawn(async move {
        tokio::select! {
            _ = term.recv() => tracing::info!(signal = "SIGTERM", "stopping"),
            _ = int.recv() => tracing::info!(signal = "SIGINT", "stopping"),
        }
        cancel.cancel();
    });
    Ok(token)
}

/// Runs a daemon's `serve` on a new async runtime until it returns; its token is cancelled on
/// the first SIGTERM or SIGINT ([`stop_on_signals`]).
pub fn serve_until_stopped<F, Fut>(serve: F) -> anyhow::Result<()>
where
    F: FnOnce(CancellationToken) -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<()>>,
{
    let runtime = tokio::runtime::Runtime::new().context("cannot start the async runtime")?;
    runtime.block_on(async { serve(stop_on_signals()?).await })
}

/// Writes `contents` to `path` atomically (temporary file, then rename), so a process waiting
/// for the file never reads half of it. Used to tell a supervisor the bound address.
pub fn write_ready_file(path: &Path, contents: &str) -> anyhow::Result<()> {
    let tmp = path.with_extension("tmp");
    let mut f = std::fs::File::create(&tmp)
        .with_context(|| format!("cannot create ready file {}", tmp.display()))?;
    f.write_all(contents.as_bytes())
        .and_then(|_| f.write_all(b"\n"))
        .with_context(|| format!("cannot write ready file {}", tmp.display()))?;
    std::fs::rename(&tmp, path)
        .with_context(|| format!("cannot rename ready file to {}", path.display()))?;
    Ok(())
}

/// Name of the lock file a daemon holds in each data directory it uses.
pub const LOCK_FILE: &str = ".elkfs.lock";

/// An exclusive hold on a data directory, released when dropped or when the process dies
/// (even by SIGKILL: it is an `flock`).
#[derive(Debug)]
pub struct DirLock {
    _file: std::fs::File,
}

/// Takes the data directory `dir` for this process, so that two daemons (say, a metalogger and
/// a master promoted on its directory) never write the same files. Fails at once, naming the
/// holder's pid, when another process holds it.
pub fn lock_data_dir(dir: &Path) -> anyhow::Result<DirLock> {
    use std::io::{Read, Seek};
    use std::os::fd::AsRawFd;
    let path = dir.join(LOCK_FILE);
    let mut file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(&path)
        .with_context(|| format!("cannot open {}", path.display()))?;
    // SAFETY: flock on a descriptor we own; it does not touch memory.
    if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
        let error = std::io::Error::last_os_error();
        if error.raw_os_error() == Some(libc::EWOULDBLOCK) {
            let mut holder = String::new();
            let _ = file.read_to_string(&mut holder);
            anyhow::bail!(
                "{} is in use by another ElkFS process (pid {}); stop it first",
                dir.display(),
                holder.trim()
            );
        }
        return Err(error).with_context(|| format!("cannot lock {}", path.display()));
    }
    file.set_len(0)
        .and_then(|_| file.rewind())
        .and_then(|_| writeln!(file, "{}", std::process::id()))
        .with_context(|| format!("cannot write {}", path.display()))?;
    Ok(DirLock { _file: file })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_data_directory_is_held_by_one_holder_until_it_lets_go() {
        let dir = tempfile::tempdir().unwrap();
        let first = lock_data_dir(dir.path()).unwrap();
        let err = lock_data_dir(dir.path()).unwrap_err().to_string();
        assert!(err.contains("in use by another ElkFS process"), "{err}");
        assert!(err.contains(&std::process::id().to_string()), "{err}");
        drop(first);
        lock_data_dir(dir.path()).unwrap();
    }
}
