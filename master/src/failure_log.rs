//! The log of a background step that runs every few milliseconds and may fail for a long
//! time (a full disk): one line when it starts failing, one a minute while it lasts, and one
//! when it works again, instead of ten lines a second.

/// How often a background step that keeps failing says so again.
const FAILURE_LOG_EVERY: std::time::Duration = std::time::Duration::from_secs(60);

/// The log of a background step run every few milliseconds: a failure is logged when it starts
/// and once every [`FAILURE_LOG_EVERY`] while it lasts (a full disk would otherwise fill the log
/// with ten lines a second), and the step working again once.
pub struct FailureLog {
    what: &'static str,
    failing_since: Option<(std::time::Instant, std::time::Instant)>,
}

impl FailureLog {
    /// The log of the step `what` (such as `fsyncing the changelog`).
    pub fn new(what: &'static str) -> FailureLog {
        FailureLog {
            what,
            failing_since: None,
        }
    }

    /// The step failed with `error`.
    pub fn failed(&mut self, error: &dyn std::fmt::Display) {
        let now = std::time::Instant::now();
        match &mut self.failing_since {
            Some((_, logged)) if now.duration_since(*logged) < FAILURE_LOG_EVERY => {}
            Some((since, logged)) => {
                *logged = now;
                tracing::error!(%error, failing_for = ?now.duration_since(*since), "{} still fails", self.what);
            }
            None => {
                self.failing_since = Some((now, now));
                tracing::error!(%error, "{} failed; trying again", self.what);
            }
        }
    }

    /// The step worked.
    pub fn worked(&mut self) {
        if let Some((since, _)) = self.failing_since.take() {
            tracing::info!(failed_for = ?since.elapsed(), "{} works again", self.what);
        }
    }
}
