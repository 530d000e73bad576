//! The `elkfs` command line.

use std::process::Command;

#[test]
fn help_lists_the_up_command() {
    let out = Command::new(env!("CARGO_BIN_EXE_elkfs"))
        .arg("--help")
        .output()
        .unwrap();
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).contains("up"));
}

#[test]
fn up_refuses_zero_chunkservers() {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_elkfs"))
        .args(["up", "--chunkservers", "0", "--dir"])
        .arg(dir.path())
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--chunkservers"));
}
