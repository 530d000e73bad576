//! Numbers: the median of a run's samples, and how each kind of value is written.

/// What a measured value is, which decides how it is written.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Unit {
    /// Throughput in MiB per second.
    MibPerSec,
    /// I/O operations per second.
    Iops,
    /// Filesystem operations (creates, stats, ...) per second.
    OpsPerSec,
    /// A duration in seconds.
    Seconds,
    /// Memory in MiB.
    Mib,
}

impl Unit {
    /// The value with its unit, rounded for reading: `612 MiB/s`, `15 200 IOPS`, `2.41 s`.
    pub fn format(self, value: f64) -> String {
        match self {
            Unit::MibPerSec => format!("{} MiB/s", group_thousands(value)),
            Unit::Iops => format!("{} IOPS", group_thousands(value)),
            Unit::OpsPerSec => format!("{}/s", group_thousands(value)),
            Unit::Seconds if value < 10.0 => format!("{value:.2} s"),
            Unit::Seconds => format!("{value:.1} s"),
            Unit::Mib => format!("{} MiB", group_thousands(value)),
        }
    }

    /// A round limit with its unit, without the decimals [`Unit::format`] adds: `2 s`, `64 MiB`.
    pub fn format_limit(self, value: f64) -> String {
        let number = if value.fract() == 0.0 {
            group_thousands(value)
        } else {
            value.to_string()
        };
        match self {
            Unit::MibPerSec => format!("{number} MiB/s"),
            Unit::Iops => format!("{number} IOPS"),
            Unit::OpsPerSec => format!("{number}/s"),
            Unit::Seconds => format!("{number} s"),
            Unit::Mib => format!("{number} MiB"),
        }
    }
}

/// A value rounded to an integer, with a space between groups of three digits (`15 200`).
pub fn group_thousands(value: f64) -> String {
    if !value.is_finite() {
        return value.to_string();
    }
    let rounded = value.round();
    let digits = format!("{}", rounded.abs() as u64);
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(' ');
        }
        out.push(c);
    }
    if rounded < 0.0 {
        out.insert(0, '-');
    }
    out
}

/// The median of `samples` (the mean of the middle two for an even count); `None` when empty.
pub fn median(samples: &[f64]) -> Option<f64> {
    let mut sorted: Vec<f64> = samples.iter().copied().filter(|v| !v.is_nan()).collect();
    if sorted.is_empty() {
        return None;
    }
    sorted.sort_by(f64::total_cmp);
    let mid = sorted.len() / 2;
    Some(if sorted.len() % 2 == 1 {
        sorted[mid]
    } else {
        (sorted[mid - 1] + sorted[mid]) / 2.0
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn median_of_odd_even_and_empty() {
        assert_eq!(median(&[3.0, 1.0, 2.0]), Some(2.0));
        assert_eq!(median(&[4.0, 1.0, 3.0, 2.0]), Some(2.5));
        assert_eq!(median(&[7.0]), Some(7.0));
        assert_eq!(median(&[]), None);
        assert_eq!(median(&[f64::NAN, 1.0]), Some(1.0));
    }

    #[test]
    fn values_are_written_with_their_unit() {
        assert_eq!(Unit::MibPerSec.format(612.4), "612 MiB/s");
        assert_eq!(Unit::Iops.format(15_234.0), "15 234 IOPS");
        assert_eq!(Unit::OpsPerSec.format(1_234_567.0), "1 234 567/s");
        assert_eq!(Unit::Seconds.format(2.414), "2.41 s");
        assert_eq!(Unit::Seconds.format(61.26), "61.3 s");
        assert_eq!(Unit::Mib.format(374.0), "374 MiB");
        assert_eq!(group_thousands(999.6), "1 000");
        assert_eq!(group_thousands(-1500.0), "-1 500");
        assert_eq!(Unit::Seconds.format_limit(2.0), "2 s");
        assert_eq!(Unit::Seconds.format_limit(0.5), "0.5 s");
        assert_eq!(Unit::Mib.format_limit(1024.0), "1 024 MiB");
    }
}
