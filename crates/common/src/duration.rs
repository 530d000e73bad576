//! Times as MooseFS writes them (trash times in `mfsexports.cfg`, `mfssettrashtime`): plain
//! seconds, or numbers with units from the largest to the smallest.

/// Parses `3600`, `90s`, `30m`, `2h30m` or `1w2d` as seconds; units are w, d, h, m and s, in
/// either case. A number after the last unit ("1h30") or units out of order are refused as
/// ambiguous, and so is a value past `u64`.
pub fn parse_seconds(text: &str) -> Option<u64> {
    if text.is_empty() {
        return None;
    }
    if let Some(seconds) = parse_decimal(text) {
        return Some(seconds);
    }
    let mut total: u64 = 0;
    let mut previous_unit = u64::MAX;
    let mut rest = text;
    while !rest.is_empty() {
        let unit_at = rest.find(|c: char| !c.is_ascii_digit())?;
        let number = parse_decimal(&rest[..unit_at])?;
        let unit = match rest[unit_at..].chars().next()?.to_ascii_lowercase() {
            'w' => 7 * 24 * 3600,
            'd' => 24 * 3600,
            'h' => 3600,
            'm' => 60,
            's' => 1,
            _ => return None,
        };
        if unit >= previous_unit {
            return None;
        }
        previous_unit = unit;
        total = total.checked_add(number.checked_mul(unit)?)?;
        // The unit is one ASCII byte.
        rest = &rest[unit_at + 1..];
    }
    Some(total)
}

/// Parses a non-empty string of ASCII digits (no sign, no spaces) that fits a `u64`.
pub fn parse_decimal(text: &str) -> Option<u64> {
    if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    text.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seconds_and_units_from_largest_to_smallest() {
        assert_eq!(parse_seconds("3600"), Some(3600));
        assert_eq!(parse_seconds("90s"), Some(90));
        assert_eq!(parse_seconds("2h30m"), Some(9000));
        assert_eq!(parse_seconds("1W2D"), Some(9 * 86_400));
        for bad in ["", "1h30", "30m2h", "1y", "-5", "1 h", "h"] {
            assert_eq!(parse_seconds(bad), None, "{bad:?}");
        }
        assert_eq!(parse_seconds("99999999999999999999"), None);
    }
}
