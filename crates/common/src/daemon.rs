//! Plumbing every daemon shares: stopping on SIGTERM/SIGINT and announcing readiness.

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
