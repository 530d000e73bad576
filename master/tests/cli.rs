//! The master's command line: `--help` shows the defaults, bad flags are refused.

use std::process::Command;

fn master() -> Command {
    Command::new(env!("CARGO_BIN_EXE_elkfs-master"))
}

#[test]
fn help_prints_the_default_port_and_data_dir() {
    let out = master().arg("--help").output().unwrap();
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("0.0.0.0:9421"), "{text}");
    assert!(text.contains("/var/lib/elkfs/master"), "{text}");
    assert!(text.contains("--data-dir"), "{text}");
}

#[test]
fn an_unknown_flag_is_refused() {
    let out = master().arg("--frobnicate").output().unwrap();
    assert!(!out.status.success());
}

#[test]
fn a_config_file_with_an_unknown_key_is_refused_with_its_name() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("master.toml");
    std::fs::write(&config, "listen = \"127.0.0.1:0\"\nlistne = 1\n").unwrap();
    let out = master().arg("--config").arg(&config).output().unwrap();
    assert!(!out.status.success());
    let text = String::from_utf8_lossy(&out.stderr);
    assert!(
        text.contains("master.toml") && text.contains("listne"),
        "{text}"
    );
}
