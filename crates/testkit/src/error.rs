//! Why starting an ElkFS process (or a whole test cluster) failed, with enough context — the log's
//! last lines — that the failing test's output explains itself.

use std::io;
use std::path::PathBuf;
use std::process::ExitStatus;
use std::time::Duration;

/// A process of the test cluster could not be started or did not become ready.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The binary is not built (or `ELKFS_BIN_DIR` points elsewhere).
    #[error(
        "{binary} not found in {}: run `cargo build --workspace --bins` (or `cargo test \
         --workspace`, which builds them), or set ELKFS_BIN_DIR to the directory holding the \
         ElkFS binaries",
        dir.display()
    )]
    BinaryMissing {
        /// File name of the missing binary.
        binary: String,
        /// Directory that was searched.
        dir: PathBuf,
    },
    /// `Command::spawn` failed.
    #[error("could not start {name} ({}): {source}", program.display())]
    Spawn {
        /// The process's name in the cluster (`master`, `cs0`, `mount1`).
        name: String,
        /// The binary that was run.
        program: PathBuf,
        /// The spawn error.
        source: io::Error,
    },
    /// The process exited before writing its ready file.
    #[error(
        "{name} exited ({status}) before it was ready; last lines of {}:\n{tail}",
        log.display()
    )]
    ExitedBeforeReady {
        /// The process's name in the cluster.
        name: String,
        /// How it exited.
        status: ExitStatus,
        /// Its log file.
        log: PathBuf,
        /// The log's last lines.
        tail: String,
    },
    /// The ready file did not appear in time; the process was killed.
    #[error(
        "{name} was not ready within {timeout:?} (no {}), so it was killed; last lines of {}:\n{tail}",
        ready_file.display(),
        log.display()
    )]
    NotReady {
        /// The process's name in the cluster.
        name: String,
        /// How long the harness waited.
        timeout: Duration,
        /// The ready file that never appeared.
        ready_file: PathBuf,
        /// Its log file.
        log: PathBuf,
        /// The log's last lines.
        tail: String,
    },
    /// The port a restarted process must reuse stayed in use.
    #[error("{name} could not bind port {port}: still in use after {attempts} attempts")]
    AddressInUse {
        /// The process's name in the cluster.
        name: String,
        /// The port it had before and must get again.
        port: u16,
        /// How many times it was started.
        attempts: u32,
    },
    /// The ready file did not hold what the contract says (`HOST:PORT`).
    #[error("{name} wrote {content:?} to its ready file; {expected}")]
    BadReadyFile {
        /// The process's name in the cluster.
        name: String,
        /// What the file held.
        content: String,
        /// What was expected instead.
        expected: String,
    },
    /// A file-system operation of the harness itself failed.
    #[error("{what}: {source}")]
    Io {
        /// What the harness was doing.
        what: String,
        /// The error.
        source: io::Error,
    },
}

impl StartError {
    /// Wraps an I/O error with what the harness was doing when it happened.
    pub(crate) fn io(what: impl Into<String>, source: io::Error) -> Self {
        StartError::Io {
            what: what.into(),
            source,
        }
    }
}
