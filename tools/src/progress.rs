//! A spinner on stderr for requests that take a while (a recursive change over a big tree is
//! one request the master works through). Shown only on a terminal and only after a second, so
//! quick commands and scripts never see it.

use std::future::Future;
use std::io::{IsTerminal, Write};
use std::time::Duration;

use tokio::time::Instant;

/// How long a request runs before the spinner appears.
const SHOW_AFTER: Duration = Duration::from_secs(1);
/// How often the spinner turns.
const TICK: Duration = Duration::from_millis(200);
const FRAMES: [char; 4] = ['|', '/', '-', '\\'];

/// Awaits `work`, showing `working on WHAT...` with the time spent while it runs.
pub async fn with_progress<F: Future>(what: &str, work: F) -> F::Output {
    if !std::io::stderr().is_terminal() {
        return work.await;
    }
    tokio::pin!(work);
    let start = Instant::now();
    let mut ticks = tokio::time::interval_at(start + SHOW_AFTER, TICK);
    let mut shown = 0usize;
    loop {
        tokio::select! {
            out = &mut work => {
                if shown > 0 {
                    let mut err = std::io::stderr().lock();
                    let _ = write!(err, "\r\x1b[K");
                    let _ = err.flush();
                }
                return out;
            }
            _ = ticks.tick() => {
                let frame = FRAMES[shown % FRAMES.len()];
                shown += 1;
                let secs = start.elapsed().as_secs();
                let mut err = std::io::stderr().lock();
                let _ = write!(err, "\r{frame} working on {what}... {secs}s");
                let _ = err.flush();
            }
        }
    }
}
