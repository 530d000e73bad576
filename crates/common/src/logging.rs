//! Logging setup: `tracing` to stderr, one line per event, level from `ELKFS_LOG` (default info).

use std::io::IsTerminal;

use tracing_subscriber::EnvFilter;

/// Environment variable holding the log filter (`debug`, `elkfs_master=debug,info`, ...).
pub const LOG_ENV: &str = "ELKFS_LOG";

/// Installs the stderr logger for a program; call once at the start of `main`.
pub fn init() {
    init_with(&[]);
}

/// Like [`init`], with extra filter directives that apply unless `ELKFS_LOG` is set.
pub fn init_with(default_directives: &[&str]) {
    let mut default = String::from("info");
    for d in default_directives {
        default.push(',');
        default.push_str(d);
    }
    let filter = EnvFilter::try_from_env(LOG_ENV).unwrap_or_else(|_| EnvFilter::new(default));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .with_target(false)
        .try_init();
}
