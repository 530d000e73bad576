//! Reading daemon logs: finding `ERROR` lines and panics a test did not expect, and taking a log's
//! last lines for failure messages.

use std::borrow::Cow;

/// Prefix of the lines the harness itself writes into a log (start, signals); never scanned.
pub(crate) const MARKER: &str = "[elkfs-testkit]";

/// Whether a log line reports an error: a tracing `ERROR` event or a Rust panic.
///
/// The level is the first field of a tracing line, or the second after a timestamp; looking only
/// there keeps an `INFO` message that mentions "ERROR" from counting.
fn is_error_line(line: &str) -> bool {
    let level_is_error = line
        .split_whitespace()
        .take(2)
        .any(|field| field == "ERROR" || field == "ERROR:");
    level_is_error || line.contains("\"level\":\"ERROR\"") || line.contains("panicked at")
}

/// The lines of `text` that report an error and contain none of the `allowed` patterns, with
/// terminal colour codes removed.
pub(crate) fn unexpected_errors(text: &str, allowed: &[String]) -> Vec<String> {
    text.lines()
        .filter(|line| !line.starts_with(MARKER))
        .map(strip_ansi)
        .filter(|line| is_error_line(line))
        .filter(|line| !allowed.iter().any(|p| line.contains(p.as_str())))
        .map(Cow::into_owned)
        .collect()
}

/// The last `n` lines of `text`, joined with newlines.
pub(crate) fn tail(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// Removes ANSI escape sequences (`ESC [ ... letter`), in case a daemon colours its output.
fn strip_ansi(line: &str) -> Cow<'_, str> {
    if !line.contains('\x1b') {
        return Cow::Borrowed(line);
    }
    let mut out = String::with_capacity(line.len());
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        if c != '\x1b' {
            out.push(c);
            continue;
        }
        if chars.next() == Some('[') {
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        }
    }
    Cow::Owned(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    const LOG: &str = "\
2025-01-01T00:00:00.000001Z  INFO listening on 127.0.0.1:9421
2025-01-01T00:00:00.000002Z  WARN chunk 12 undergoal
2025-01-01T00:00:00.000003Z ERROR chunkserver 127.0.0.1:4000 disconnected: reset
2025-01-01T00:00:00.000004Z ERROR metadata store: corrupt key
[elkfs-testkit] starting elkfs-master --listen 127.0.0.1:0 --note ' ERROR '
thread 'tokio-runtime-worker' panicked at master/src/state.rs:10:5:
";

    #[test]
    fn finds_error_and_panic_lines() {
        let found = unexpected_errors(LOG, &[]);
        assert_eq!(found.len(), 3, "{found:?}");
        assert!(found[0].contains("disconnected"));
        assert!(found[1].contains("corrupt key"));
        assert!(found[2].contains("panicked at"));
    }

    #[test]
    fn allowed_patterns_excuse_matching_lines() {
        let allowed = vec!["disconnected".to_owned(), "panicked at".to_owned()];
        let found = unexpected_errors(LOG, &allowed);
        assert_eq!(found.len(), 1);
        assert!(found[0].contains("corrupt key"));
    }

    #[test]
    fn warn_and_info_lines_and_the_word_error_in_text_are_not_errors() {
        let log = "t  INFO no ERROR here\nt  WARN retrying after error\nt  INFO errors: 0\n";
        assert!(unexpected_errors(log, &[]).is_empty());
        assert!(!is_error_line("t  INFO ERRORS=0"));
        assert!(is_error_line("ERROR: no data dir"));
        assert!(is_error_line(
            r#"{"timestamp":"t","level":"ERROR","fields":{}}"#
        ));
    }

    #[test]
    fn coloured_levels_are_recognised() {
        let log = "\x1b[2m2025-01-01T00:00:00Z\x1b[0m \x1b[31mERROR\x1b[0m boom\n";
        let found = unexpected_errors(log, &[]);
        assert_eq!(found, vec!["2025-01-01T00:00:00Z ERROR boom".to_owned()]);
    }

    #[test]
    fn tail_keeps_the_last_lines() {
        assert_eq!(tail("a\nb\nc\n", 2), "b\nc");
        assert_eq!(tail("a\n", 5), "a");
        assert_eq!(tail("", 5), "");
    }
}
