//! What a restarted ElkFS master's log says about its start: the line reporting how the metadata
//! was opened (replayed changelog records, or a rebuild) and when it was written, and when the
//! master started listening. The timestamps are the log's own (`tracing`'s RFC 3339 UTC), so
//! the time the master spent opening its metadata is known without changing the master.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// The start of a master, as its log tells it.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct MasterStart {
    /// The "metadata opened: ..." (or "metadata REBUILT ...") line, without its timestamp.
    pub opened: Option<String>,
    /// When that line was written.
    pub opened_at: Option<SystemTime>,
    /// When the "master listening" line was written.
    pub listening_at: Option<SystemTime>,
}

impl MasterStart {
    /// Reads the part of a log that one start of the master wrote.
    pub fn parse(log: &str) -> Self {
        let mut start = MasterStart::default();
        for line in log.lines() {
            let (stamp, rest) = split_stamp(line);
            if start.opened.is_none()
                && (rest.contains("metadata opened:") || rest.contains("metadata REBUILT"))
            {
                start.opened = Some(rest.to_owned());
                start.opened_at = stamp;
            } else if start.listening_at.is_none() && rest.contains("master listening") {
                start.listening_at = stamp;
            }
        }
        start
    }

    /// Seconds from `spawned` to the metadata being open.
    pub fn open_secs(&self, spawned: SystemTime) -> Option<f64> {
        secs_since(spawned, self.opened_at?)
    }

    /// Seconds from `spawned` to the master listening.
    pub fn listening_secs(&self, spawned: SystemTime) -> Option<f64> {
        secs_since(spawned, self.listening_at?)
    }
}

fn secs_since(start: SystemTime, then: SystemTime) -> Option<f64> {
    then.duration_since(start).ok().map(|d| d.as_secs_f64())
}

/// A log line's leading timestamp, if it has one, and the rest of the line (level included).
fn split_stamp(line: &str) -> (Option<SystemTime>, &str) {
    let trimmed = line.trim_start();
    match trimmed.split_once(char::is_whitespace) {
        Some((first, rest)) => match parse_rfc3339_utc(first) {
            Some(time) => (Some(time), rest.trim_start()),
            None => (None, trimmed),
        },
        None => (None, trimmed),
    }
}

/// `2025-06-01T12:34:56.789012Z` as a time; `None` for anything else (other offsets included).
pub fn parse_rfc3339_utc(text: &str) -> Option<SystemTime> {
    let text = text.strip_suffix('Z')?;
    let (date, time) = text.split_once('T')?;
    let mut date_parts = date.splitn(3, '-');
    let year: i64 = number(date_parts.next()?, 4)?;
    let month: i64 = number(date_parts.next()?, 2)?;
    let day: i64 = number(date_parts.next()?, 2)?;
    let (clock, fraction) = match time.split_once('.') {
        Some((clock, fraction)) => (clock, Some(fraction)),
        None => (time, None),
    };
    let mut clock_parts = clock.splitn(3, ':');
    let hour: i64 = number(clock_parts.next()?, 2)?;
    let minute: i64 = number(clock_parts.next()?, 2)?;
    let second: i64 = number(clock_parts.next()?, 2)?;
    if !(1..=12).contains(&month) || !(1..=31).contains(&day) || hour > 23 || minute > 59 {
        return None;
    }
    if second > 60 {
        return None;
    }
    let nanos = match fraction {
        Some(f) if !f.is_empty() && f.len() <= 9 && f.bytes().all(|b| b.is_ascii_digit()) => {
            f.parse::<u32>().ok()? * 10u32.pow(9 - f.len() as u32)
        }
        Some(_) => return None,
        None => 0,
    };
    let days = days_from_civil(year, month, day);
    let secs = days * 86_400 + hour * 3_600 + minute * 60 + second;
    let secs = u64::try_from(secs).ok()?;
    Some(UNIX_EPOCH + Duration::new(secs, nanos))
}

/// Exactly `len` ASCII digits as a number.
fn number(text: &str, len: usize) -> Option<i64> {
    (text.len() == len && text.bytes().all(|b| b.is_ascii_digit()))
        .then(|| text.parse().ok())
        .flatten()
}

/// Days since 1970-01-01 of a date in the proleptic Gregorian calendar (Howard Hinnant's
/// `days_from_civil`).
fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let year = if month <= 2 { year - 1 } else { year };
    let era = year.div_euclid(400);
    let year_of_era = year - era * 400;
    let month_index = (month + 9) % 12;
    let day_of_year = (153 * month_index + 2) / 5 + day - 1;
    let day_of_era = year_of_era * 365 + year_of_era / 4 - year_of_era / 100 + day_of_year;
    era * 146_097 + day_of_era - 719_468
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(secs: u64, nanos: u32) -> SystemTime {
        UNIX_EPOCH + Duration::new(secs, nanos)
    }

    #[test]
    fn rfc3339_utc_timestamps_parse() {
        assert_eq!(parse_rfc3339_utc("1970-01-01T00:00:00Z"), Some(at(0, 0)));
        assert_eq!(
            parse_rfc3339_utc("2000-03-01T00:00:01.5Z"),
            Some(at(951_868_801, 500_000_000))
        );
        assert_eq!(
            parse_rfc3339_utc("2025-06-01T12:34:56.789012Z"),
            Some(at(1_748_781_296, 789_012_000))
        );
        for bad in [
            "2025-06-01T12:34:56+02:00",
            "2025-6-01T12:34:56Z",
            "2025-13-01T12:34:56Z",
            "2025-06-01 12:34:56Z",
            "2025-06-01T12:34:56.Z",
            "INFO",
        ] {
            assert_eq!(parse_rfc3339_utc(bad), None, "{bad}");
        }
    }

    #[test]
    fn the_start_lines_are_found_with_their_times() {
        let log = "\
2025-06-01T12:00:00.000000Z  INFO metadata opened: sled had applied version 10, replayed 5 \
changelog records, now at version 15 dir=/x/master
2025-06-01T12:00:01.250000Z  INFO master listening; only loopback clients are let in addr=127.0.0.1:4000
2025-06-01T12:00:02.000000Z  INFO client session opened session=1
";
        let start = MasterStart::parse(log);
        assert!(
            start
                .opened
                .as_deref()
                .is_some_and(|l| l.starts_with("INFO metadata opened: sled had applied"))
        );
        let spawned = at(1_748_779_199, 500_000_000);
        assert_eq!(start.open_secs(spawned), Some(0.5));
        assert_eq!(start.listening_secs(spawned), Some(1.75));
        assert_eq!(start.open_secs(at(1_748_779_201, 0)), None);
    }

    #[test]
    fn a_rebuild_counts_as_the_open_line_and_plain_lines_have_no_time() {
        let log = "WARN the metadata database must be rebuilt\n\
                   2025-06-01T12:00:00Z  WARN metadata REBUILT from image 7 + 3 changelog records\n";
        let start = MasterStart::parse(log);
        assert_eq!(
            start.opened.as_deref(),
            Some("WARN metadata REBUILT from image 7 + 3 changelog records")
        );
        assert!(start.opened_at.is_some());
        assert_eq!(start.listening_at, None);
        assert_eq!(MasterStart::parse(""), MasterStart::default());
    }
}
