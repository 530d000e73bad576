//! Waiting for an eventually consistent condition (replication done, a chunkserver noticed gone)
//! by polling it, instead of sleeping a fixed time and hoping.

use std::thread;
use std::time::{Duration, Instant};

/// How often [`wait_until`] checks its condition.
const POLL: Duration = Duration::from_millis(20);

/// Polls `cond` every 20 ms until it returns true; panics naming `what` if that takes longer
/// than `deadline`.
pub fn wait_until(deadline: Duration, what: &str, mut cond: impl FnMut() -> bool) {
    let end = Instant::now() + deadline;
    loop {
        if cond() {
            return;
        }
        if Instant::now() >= end {
            panic!("timed out after {deadline:?} waiting until {what}");
        }
        thread::sleep(POLL);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn returns_once_the_condition_holds() {
        let mut calls = 0;
        wait_until(Duration::from_secs(5), "the third call", || {
            calls += 1;
            calls == 3
        });
        assert_eq!(calls, 3);
    }

    #[test]
    #[should_panic(expected = "waiting until pigs fly")]
    fn panics_with_what_on_timeout() {
        wait_until(Duration::from_millis(50), "pigs fly", || false);
    }
}
