//! `status`: the master, each chunkserver and the workers, as `mfscli` prints them on a pipe,
//! found from a mount, `--master` or `ELKFS_MASTER`; `--watch` refreshes until Ctrl-C.

use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use crate::support::{
    MIB, QUICK_MASTER, cluster_with_master_config, command, data, eventually, write,
};

#[test]
fn status_shows_the_master_the_chunkservers_and_the_workers() {
    let (_config, cluster) = cluster_with_master_config(QUICK_MASTER);
    let mnt = cluster.mount_path(0);
    write(&mnt.join("f"), &data(MIB, 50));

    // Through the testkit (ELKFS_MASTER set, current directory not on ElkFS).
    let mut text = String::new();
    eventually(
        Duration::from_secs(20),
        "status counts the file's chunk and its two copies",
        || {
            text = cluster.run_cli_ok(&["status"]);
            text.contains("master info:\tchunks\t1\n")
                && text.contains("master info:\tall chunk copies\t2\n")
        },
    );
    let version = env!("CARGO_PKG_VERSION");
    assert!(
        text.starts_with(&format!("master info:\tmaster version\t{version}\n")),
        "{text}"
    );
    assert!(text.contains("master info:\tall fs objects\t2\n"), "{text}");
    for class in ["missing", "undergoal", "overgoal"] {
        assert!(
            text.contains(&format!("all chunks matrix:\tchunkclass {class}:\t0\n")),
            "{text}"
        );
    }
    let mut ports: Vec<u16> = text
        .lines()
        .filter(|l| l.starts_with("chunk servers:\t"))
        .map(|l| {
            let fields: Vec<&str> = l.split('\t').collect();
            assert_eq!(fields.len(), 15, "mfscli's columns: {l:?}");
            assert_eq!(fields[1], "127.0.0.1");
            let total: u64 = fields[10].parse().expect("total space");
            assert!(total > 0, "{l}");
            fields[2].parse().expect("a port")
        })
        .collect();
    ports.sort();
    let mut expected: Vec<u16> = (0..3)
        .map(|i| cluster.chunkserver(i).addr().port())
        .collect();
    expected.sort();
    assert_eq!(ports, expected);
    for worker in ["replication", "trash"] {
        assert!(text.contains(&format!("workers:\t{worker}\t")), "{text}");
    }

    // From a path in the mount, without ELKFS_MASTER; and as JSON.
    let out = command(Path::new("/"), &["--json", "status"])
        .arg(mnt)
        .output()
        .expect("run elkfs status");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let doc: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON");
    assert_eq!(doc["chunkservers"].as_array().map(Vec::len), Some(3));
    assert_eq!(doc["chunk_copies"], 2);
    assert_eq!(doc["master_version"], format!("elkfs-master {version}"));
    assert!(doc["workers"].as_array().is_some_and(|w| !w.is_empty()));

    // --watch refreshes until Ctrl-C, then exits 0.
    let child = command(Path::new("/"), &["status", "--watch", "0.5"])
        .env("ELKFS_MASTER", cluster.master_addr().to_string())
        .stdout(Stdio::piped())
        .spawn()
        .expect("start elkfs status --watch");
    std::thread::sleep(Duration::from_millis(1800));
    // SAFETY: signalling our own child by its pid.
    unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGINT) };
    let out = child
        .wait_with_output()
        .expect("wait for elkfs status --watch");
    assert!(
        out.status.success(),
        "status --watch ended with {}",
        out.status
    );
    let text = String::from_utf8_lossy(&out.stdout);
    let rounds = text.matches("master info:\tmaster version").count();
    assert!(rounds >= 2, "only {rounds} refreshes:\n{text}");
}

#[test]
fn status_names_the_master_it_cannot_reach() {
    let out = command(Path::new("/"), &["status", "--master", "127.0.0.1:1"])
        .output()
        .expect("run elkfs status");
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.starts_with("elkfs: 127.0.0.1:1: cannot reach the master at 127.0.0.1:1"),
        "{stderr}"
    );
    let out = command(
        Path::new("/"),
        &["--json", "status", "--master", "127.0.0.1:1"],
    )
    .output()
    .expect("run elkfs --json status");
    assert_eq!(out.status.code(), Some(1));
    let doc: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON");
    assert_eq!(doc["master"], "127.0.0.1:1");
    assert!(
        doc["error"]
            .as_str()
            .is_some_and(|e| e.contains("cannot reach"))
    );
}
