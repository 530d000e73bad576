//! Progress lines on stderr, each stamped with the time since the run started, so a long run shows
//! what it is doing and how far it got. Each line also samples the machine's load, so the report
//! can say how busy the machine was with other work.

use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

static START: OnceLock<Instant> = OnceLock::new();
/// The highest 1-minute load average seen, as `f64` bits.
static PEAK_LOAD: AtomicU64 = AtomicU64::new(0);

/// Starts the clock the progress lines are stamped with (the first call wins).
pub fn start() {
    START.get_or_init(Instant::now);
}

/// Seconds since [`start`].
pub fn elapsed_secs() -> f64 {
    START.get_or_init(Instant::now).elapsed().as_secs_f64()
}

/// Prints one progress line.
pub fn step(message: &str) {
    sample_load();
    eprintln!("{}", stamp(elapsed_secs(), message));
}

/// The 1-minute load average from the text of `/proc/loadavg`.
pub fn parse_load(loadavg: &str) -> Option<f64> {
    loadavg.split_whitespace().next()?.parse().ok()
}

fn sample_load() {
    let Some(load) = std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|t| parse_load(&t))
    else {
        return;
    };
    let _ = PEAK_LOAD.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |bits| {
        (load > f64::from_bits(bits)).then(|| load.to_bits())
    });
}

/// The highest 1-minute load average seen at a progress line.
pub fn peak_load() -> f64 {
    f64::from_bits(PEAK_LOAD.load(Ordering::SeqCst))
}

/// `[  12m03s] message`.
pub fn stamp(secs: f64, message: &str) -> String {
    let whole = secs.max(0.0) as u64;
    format!("[{:>3}m{:02}s] {message}", whole / 60, whole % 60)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn load_is_the_first_field() {
        assert_eq!(parse_load("3.52 2.10 1.00 3/456 789\n"), Some(3.52));
        assert_eq!(parse_load(""), None);
    }

    #[test]
    fn stamps_show_minutes_and_seconds() {
        assert_eq!(stamp(0.4, "go"), "[  0m00s] go");
        assert_eq!(stamp(723.9, "x"), "[ 12m03s] x");
    }
}
