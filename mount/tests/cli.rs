//! The mount's command line, as mount(8) and fstab call it: clear refusals, no hang.

use std::process::Command;

fn mount() -> Command {
    Command::new(env!("CARGO_BIN_EXE_elkfs-mount"))
}

#[test]
fn an_unknown_option_is_refused_with_its_name() {
    let dir = tempfile::tempdir().unwrap();
    let out = mount()
        .args(["127.0.0.1:/"])
        .arg(dir.path())
        .args(["-o", "rw,frobnicate"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let text = String::from_utf8_lossy(&out.stderr);
    assert!(text.contains("unknown mount option 'frobnicate'"), "{text}");
}

#[test]
fn a_missing_mount_point_is_refused() {
    let out = mount()
        .args(["127.0.0.1:/", "/nonexistent/elkfs-mnt", "-f"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let text = String::from_utf8_lossy(&out.stderr);
    assert!(text.contains("/nonexistent/elkfs-mnt"), "{text}");
}

#[test]
fn an_unreachable_master_fails_the_mount_in_the_foreground_process() {
    let dir = tempfile::tempdir().unwrap();
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    drop(listener);
    let out = mount()
        .arg(format!("127.0.0.1:{port}:/"))
        .arg(dir.path())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let text = String::from_utf8_lossy(&out.stderr);
    assert!(text.contains("cannot reach the master"), "{text}");
}
