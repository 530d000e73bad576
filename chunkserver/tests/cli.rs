//! The chunkserver's command line: `--help` shows the defaults, a missing data dir is refused.

use std::process::Command;

fn chunkserver() -> Command {
    Command::new(env!("CARGO_BIN_EXE_elkfs-chunkserver"))
}

#[test]
fn help_prints_the_default_ports() {
    let out = chunkserver().arg("--help").output().unwrap();
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("0.0.0.0:9422"), "{text}");
    assert!(text.contains("localhost:9421"), "{text}");
}

#[test]
fn starting_without_a_data_dir_is_refused_with_a_reason() {
    let out = chunkserver().output().unwrap();
    assert!(!out.status.success());
    let text = String::from_utf8_lossy(&out.stderr);
    assert!(text.contains("--data"), "{text}");
}
