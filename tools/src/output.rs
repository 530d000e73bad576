//! Where results go: text on stdout as each path is done (errors as `elkfs: PATH: reason` on
//! stderr), or with `--json` one JSON array at the end with an object per path, errors included.
//! The exit status is 1 when any path failed.

use std::io::Write;
use std::path::Path;
use std::process::ExitCode;

use serde_json::{Value, json};

use crate::failure::Failure;

/// The results of one command.
pub struct Report {
    json: bool,
    docs: Vec<Value>,
    failures: usize,
}

impl Report {
    /// A report in text, or in JSON when `json`.
    pub fn new(json: bool) -> Report {
        Report {
            json,
            docs: Vec::new(),
            failures: 0,
        }
    }

    /// One path succeeded: `text` (whole lines) is printed now, `doc` goes into the JSON array.
    pub fn success(&mut self, text: &str, doc: Value) {
        if self.json {
            self.docs.push(doc);
        } else {
            print_text(text);
        }
    }

    /// One path failed; the others go on.
    pub fn failure(&mut self, path: &str, failure: &Failure) {
        self.failures += 1;
        eprintln!("elkfs: {path}: {failure}");
        if self.json {
            self.docs.push(json!({
                "path": path,
                "error": failure.reason,
                "errno": failure.errno,
            }));
        }
    }

    /// Records a path's outcome.
    pub fn add(&mut self, path: &str, outcome: Result<(String, Value), Failure>) {
        match outcome {
            Ok((text, doc)) => self.success(&text, doc),
            Err(failure) => self.failure(path, &failure),
        }
    }

    /// Runs `work` on every path and records each outcome.
    pub fn each_path<F>(&mut self, paths: &[std::path::PathBuf], mut work: F)
    where
        F: FnMut(&str, &Path) -> Result<(String, Value), Failure>,
    {
        for path in paths {
            let shown = path.display().to_string();
            let outcome = work(&shown, path);
            self.add(&shown, outcome);
        }
    }

    /// Prints the JSON array (in JSON mode) and gives the exit status.
    pub fn finish(self) -> ExitCode {
        if self.json {
            print_json(&Value::Array(self.docs));
        }
        if self.failures > 0 {
            ExitCode::FAILURE
        } else {
            ExitCode::SUCCESS
        }
    }
}

/// Writes text to stdout; a closed stdout (`elkfs ... | head`) is not an error worth a panic.
pub fn print_text(text: &str) {
    let mut out = std::io::stdout().lock();
    let _ = out.write_all(text.as_bytes());
    let _ = out.flush();
}

/// Writes one JSON document to stdout, pretty-printed, with a final newline.
pub fn print_json(doc: &Value) {
    let text = serde_json::to_string_pretty(doc).unwrap_or_else(|_| "null".into());
    print_text(&format!("{text}\n"));
}
