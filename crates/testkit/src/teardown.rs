//! Ending a test cluster: unmount and stop everything, never leave a process or a dead mount
//! behind, and fail the test if a daemon misbehaved or logged an error nobody expected.

use std::path::PathBuf;

use crate::cluster::Cluster;
use crate::daemon::{self, TAIL_LINES};
use crate::lifecycle::{STOP_TIMEOUT, detach_leftover, stop_problems};
use crate::log_scan;

/// Set (non-empty) to keep a failed test's cluster directory instead of removing it.
pub const KEEP_DIR_ENV: &str = "ELKFS_KEEP_TEST_DIR";

/// At most this many unexpected error lines are quoted per log.
const ERROR_LINES_SHOWN: usize = 20;

impl Cluster {
    /// Stops mounts, then chunkservers, then metaloggers, then the master; returns what went
    /// wrong.
    fn stop_everything(&mut self) -> Vec<String> {
        let stopped =
            daemon::stop_together(self.mounts.iter_mut().map(|m| &mut m.daemon), STOP_TIMEOUT);
        let mut problems = stop_problems(stopped);
        problems.extend(self.mounts.iter().filter_map(|m| detach_leftover(m).err()));
        let stopped = daemon::stop_together(
            self.chunkservers.iter_mut().map(|c| &mut c.daemon),
            STOP_TIMEOUT,
        );
        problems.extend(stop_problems(stopped));
        let stopped = daemon::stop_together(
            self.metaloggers.iter_mut().map(|m| &mut m.daemon),
            STOP_TIMEOUT,
        );
        problems.extend(stop_problems(stopped));
        let master = self.master.daemon.stop(STOP_TIMEOUT);
        problems.extend(master.stop_problem("master", STOP_TIMEOUT));
        problems
    }

    /// Every log's error lines not matched by an allowed pattern, by log file.
    fn unexpected_log_errors(&self) -> Vec<(PathBuf, Vec<String>)> {
        self.daemons()
            .map(|d| {
                let errors = log_scan::unexpected_errors(&d.scannable_log(), &self.allowed_errors);
                (d.log_path().to_path_buf(), errors)
            })
            .filter(|(_, errors)| !errors.is_empty())
            .collect()
    }

    /// Prints the last lines of every log, so a failed test shows what the daemons said.
    fn print_log_tails(&self) {
        for daemon in self.daemons() {
            eprintln!(
                "----- last {TAIL_LINES} lines of {} -----\n{}",
                daemon.log_path().display(),
                daemon.log_tail()
            );
        }
    }

    /// Keeps the cluster directory if `ELKFS_KEEP_TEST_DIR` is set; says where it is or how to
    /// keep it next time.
    fn keep_dir_if_asked(&mut self) -> String {
        let asked = std::env::var_os(KEEP_DIR_ENV).is_some_and(|v| !v.is_empty());
        match self.temp_dir.take() {
            Some(dir) if asked => {
                format!("the cluster directory is kept: {}", dir.keep().display())
            }
            dir => {
                self.temp_dir = dir;
                format!("set {KEEP_DIR_ENV}=1 to keep the cluster directory and its logs")
            }
        }
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        let mut problems = std::mem::take(&mut self.problems);
        problems.extend(self.stop_everything());
        if !self.checks {
            return;
        }
        if std::thread::panicking() {
            self.print_log_tails();
            for problem in &problems {
                eprintln!("elkfs-testkit: {problem}");
            }
            eprintln!("elkfs-testkit: {}", self.keep_dir_if_asked());
            return;
        }
        let errors = self.unexpected_log_errors();
        if problems.is_empty() && errors.is_empty() {
            return;
        }
        self.print_log_tails();
        let mut report = String::from("the ElkFS test cluster did not end cleanly:\n");
        for problem in &problems {
            report.push_str(&format!("- {problem}\n"));
        }
        for (log, lines) in &errors {
            report.push_str(&format!("- unexpected errors in {}:\n", log.display()));
            for line in lines.iter().take(ERROR_LINES_SHOWN) {
                report.push_str(&format!("    {line}\n"));
            }
            if lines.len() > ERROR_LINES_SHOWN {
                let more = lines.len() - ERROR_LINES_SHOWN;
                report.push_str(&format!("    ... and {more} more\n"));
            }
        }
        if !errors.is_empty() {
            report.push_str("(expected errors can be allowed with Cluster::allow_log_errors)\n");
        }
        report.push_str(&self.keep_dir_if_asked());
        panic!("{report}");
    }
}
