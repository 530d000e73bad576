//! The metalogger's command line. Being an integration test, this also makes `cargo test`
//! build the `elkfs-metalogger` binary that the end-to-end tests start.

use std::process::Command;

fn metalogger() -> Command {
    Command::new(env!("CARGO_BIN_EXE_elkfs-metalogger"))
}

#[test]
fn help_names_the_options_and_promotion() {
    let out = metalogger().arg("--help").output().unwrap();
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    for option in ["--master", "--data-dir", "--config"] {
        assert!(text.contains(option), "{option} missing from:\n{text}");
    }
    assert!(text.contains("master data directory"), "{text}");
}

#[test]
fn an_unknown_flag_is_refused() {
    let out = metalogger().arg("--frobnicate").output().unwrap();
    assert!(!out.status.success());
}

#[test]
fn a_data_directory_in_use_is_refused_with_the_holder() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join(".elkfs.lock"), "").unwrap();
    let held = std::fs::File::open(dir.path().join(".elkfs.lock")).unwrap();
    // SAFETY: flock on a descriptor this test owns.
    let locked = unsafe {
        libc::flock(
            std::os::fd::AsRawFd::as_raw_fd(&held),
            libc::LOCK_EX | libc::LOCK_NB,
        )
    };
    assert_eq!(locked, 0);
    let out = metalogger()
        .args(["--master", "127.0.0.1:1", "--data-dir"])
        .arg(dir.path())
        .output()
        .unwrap();
    assert!(!out.status.success());
    let text = String::from_utf8_lossy(&out.stderr);
    assert!(text.contains("in use by another ElkFS process"), "{text}");
}
