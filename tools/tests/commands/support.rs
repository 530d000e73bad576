//! Helpers: running `elkfs` in a directory (so paths print as given, like MooseFS examples),
//! reproducible data, chunk files on the chunkservers' disks, waiting for a condition.

use std::collections::BTreeSet;
use std::path::Path;
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use elkfs_testkit::Cluster;
use serde_json::Value;

/// Bytes in a MiB.
pub const MIB: usize = 1024 * 1024;

/// Master settings that let replication start at once (counts in `status` are then current).
pub const QUICK_MASTER: &str =
    "replication_startup_delay_secs = 0\nreplication_delay_lost_secs = 1\n";

/// A cluster of three chunkservers and one mount whose master uses `config` (TOML), which must
/// outlive it (keep the returned directory).
pub fn cluster_with_master_config(config: &str) -> (tempfile::TempDir, Cluster) {
    let dir = tempfile::tempdir().expect("temp dir for the master config");
    let path = dir.path().join("master.toml");
    std::fs::write(&path, config).expect("write the master config");
    let cluster = Cluster::builder()
        .chunkservers(3)
        .master_args(["--config".as_ref(), path.as_os_str()])
        .start();
    (dir, cluster)
}

/// Runs `elkfs ARGS` in `dir` with no `ELKFS_MASTER`, so paths alone find the master.
pub fn elkfs(dir: &Path, args: &[&str]) -> Output {
    command(dir, args)
        .output()
        .unwrap_or_else(|e| panic!("running elkfs {args:?}: {e}"))
}

/// The command `elkfs(dir, args)` runs, for tests that change how it runs.
pub fn command(dir: &Path, args: &[&str]) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_elkfs"));
    cmd.args(args)
        .current_dir(dir)
        .env_remove("ELKFS_MASTER")
        .stdin(std::process::Stdio::null());
    cmd
}

/// Runs `elkfs ARGS` in `dir`, checks that it succeeded without a word on stderr, and returns
/// its stdout.
pub fn ok(dir: &Path, args: &[&str]) -> String {
    let out = elkfs(dir, args);
    expect_ok(args, &out)
}

/// Checks that a run succeeded quietly; returns its stdout.
pub fn expect_ok(args: &[&str], out: &Output) -> String {
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success() && stderr.is_empty(),
        "elkfs {args:?} failed ({}).\nstdout:\n{stdout}\nstderr:\n{stderr}",
        out.status
    );
    stdout
}

/// Runs `elkfs ARGS` in `dir`, expecting exit status 1; returns (stdout, stderr).
pub fn fails(dir: &Path, args: &[&str]) -> (String, String) {
    let out = elkfs(dir, args);
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(
        out.status.code(),
        Some(1),
        "elkfs {args:?} should fail with status 1.\nstdout:\n{stdout}\nstderr:\n{stderr}"
    );
    (stdout, stderr)
}

/// Runs `elkfs --json ARGS` in `dir` and parses its stdout (whatever the exit status).
pub fn json(dir: &Path, args: &[&str]) -> Value {
    let mut all = vec!["--json"];
    all.extend_from_slice(args);
    let out = elkfs(dir, &all);
    let stdout = String::from_utf8_lossy(&out.stdout);
    serde_json::from_str(&stdout).unwrap_or_else(|e| {
        panic!(
            "elkfs {all:?} printed no JSON document ({e}):\n{stdout}\nstderr:\n{}",
            String::from_utf8_lossy(&out.stderr)
        )
    })
}

/// `len` bytes of reproducible pseudo-random data (xorshift).
pub fn data(len: usize, seed: u64) -> Vec<u8> {
    let mut state = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        out.extend_from_slice(&state.to_le_bytes());
    }
    out.truncate(len);
    out
}

/// Writes a file through the mount and closes it (so the master knows its length).
pub fn write(path: &Path, bytes: &[u8]) {
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).expect("create the parent directories");
    }
    std::fs::write(path, bytes).unwrap_or_else(|e| panic!("writing {}: {e}", path.display()));
}

/// Every `(server index, chunk id)` with a chunk file on disk, whatever its version.
pub fn chunk_files(cluster: &Cluster) -> BTreeSet<(usize, u64)> {
    let mut out = BTreeSet::new();
    for server in 0..cluster.chunkserver_count() {
        for dir in cluster.chunkserver_data_dirs(server) {
            let Ok(subdirs) = std::fs::read_dir(dir) else {
                continue;
            };
            for sub in subdirs.flatten() {
                let Ok(files) = std::fs::read_dir(sub.path()) else {
                    continue;
                };
                for f in files.flatten() {
                    let name = f.file_name().to_string_lossy().into_owned();
                    let id = name
                        .strip_prefix("chunk_")
                        .and_then(|rest| rest.split('_').next())
                        .and_then(|hex| u64::from_str_radix(hex, 16).ok());
                    if let Some(id) = id {
                        out.insert((server, id));
                    }
                }
            }
        }
    }
    out
}

/// Whether some chunkserver has a file of chunk `id`.
pub fn on_disk(cluster: &Cluster, id: u64) -> bool {
    chunk_files(cluster).iter().any(|&(_, c)| c == id)
}

/// The chunk ids of a file by index, from `elkfs --json fileinfo`.
pub fn chunk_ids(dir: &Path, file: &str) -> Vec<u64> {
    let doc = json(dir, &["fileinfo", file]);
    doc[0]["chunks"]
        .as_array()
        .unwrap_or_else(|| panic!("no chunks in {doc}"))
        .iter()
        .map(|c| c["id"].as_u64().expect("a chunk id"))
        .collect()
}

/// Polls `cond` every 200 ms until it holds; panics naming `what` after `deadline`.
pub fn eventually(deadline: Duration, what: &str, mut cond: impl FnMut() -> bool) {
    let end = Instant::now() + deadline;
    while !cond() {
        assert!(
            Instant::now() < end,
            "timed out after {deadline:?} waiting until {what}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}
