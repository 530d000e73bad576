//! Differential test: the same random operations on an ElkFS mount and on a local directory
//! must give the same results — contents, sizes, modes, link counts, listings and errno values.
//!
//! CI runs a fixed seed; `ELKFS_DIFF_SEED=N` and `ELKFS_DIFF_OPS=N` run others (a random seed
//! with `ELKFS_DIFF_SEED=random`). Names come from a small pool so that operations collide and
//! the error paths (EEXIST, ENOENT, ENOTEMPTY, EISDIR, ENOTDIR, ELOOP, ...) are taken often.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Instant;

use elkfs_testkit::Cluster;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use crate::host;
use crate::random_ops::{Op, apply, random_op, snapshot};
use crate::sys::{self, Errno};
use crate::users::TestUser;

const DEFAULT_SEED: u64 = 0x00E1_4F55_2025;
const DEFAULT_OPS: usize = 2000;
/// Every this many operations, the whole trees are compared.
const CHECK_EVERY: usize = 200;
/// The mounts' attribute cache timeout, with some slack.
const ATTR_TIMEOUT: std::time::Duration = std::time::Duration::from_millis(1200);
/// Operations shown when a run fails.
const TAIL: usize = 30;

fn seed_from_env() -> u64 {
    match std::env::var("ELKFS_DIFF_SEED") {
        Ok(s) if s == "random" => rand::rng().random(),
        Ok(s) => s
            .parse()
            .unwrap_or_else(|_| panic!("ELKFS_DIFF_SEED must be a number or 'random', not {s:?}")),
        Err(_) => DEFAULT_SEED,
    }
}

fn ops_from_env() -> usize {
    std::env::var("ELKFS_DIFF_OPS")
        .ok()
        .map(|s| s.parse().expect("ELKFS_DIFF_OPS must be a number"))
        .unwrap_or(DEFAULT_OPS)
}

/// The failure report: what differed, the last operations, and how to run it again.
fn failure(seed: u64, done: &[Op], i: usize, what: &str) -> String {
    let start = done.len().saturating_sub(TAIL);
    let tail: Vec<String> = done[start..]
        .iter()
        .enumerate()
        .map(|(k, op)| format!("  #{}: {op}", start + k))
        .collect();
    format!(
        "differential run failed at operation #{i} (ELKFS_DIFF_SEED={seed}):\n{what}\n\
         last operations:\n{}\nrerun with ELKFS_DIFF_SEED={seed} ELKFS_DIFF_OPS={}",
        tail.join("\n"),
        i + 1
    )
}

/// What differs between the two trees, if anything.
fn tree_difference(local: &Path, elk: &Path) -> Option<String> {
    let (want, got) = (snapshot(local), snapshot(elk));
    if want == got {
        return None;
    }
    let mut diff = Vec::new();
    for line in &want {
        if !got.contains(line) {
            diff.push(format!("  local only: {line}"));
        }
    }
    for line in &got {
        if !want.contains(line) {
            diff.push(format!("  elkfs only: {line}"));
        }
    }
    Some(format!("the trees differ:\n{}", diff.join("\n")))
}

/// Runs `count` random operations from `seed` on both trees; returns how often each outcome
/// (`ok`, `ENOENT`, ...) happened, or the failure report at the first difference.
fn run_ops(
    seed: u64,
    count: usize,
    local: &Path,
    elk: &Path,
) -> Result<BTreeMap<String, usize>, String> {
    let mut rng = StdRng::seed_from_u64(seed);
    let mut done: Vec<Op> = Vec::with_capacity(count);
    let mut outcomes: BTreeMap<String, usize> = BTreeMap::new();
    for i in 0..count {
        let op = random_op(&mut rng);
        let want = apply(&op, local);
        let got = apply(&op, elk);
        let word = want.split_whitespace().next().unwrap_or("").to_owned();
        *outcomes.entry(word).or_default() += 1;
        done.push(op);
        if want != got {
            return Err(failure(
                seed,
                &done,
                i,
                &format!("local: {want}\nelkfs: {got}"),
            ));
        }
        let checkpoint = (i + 1) % CHECK_EVERY == 0 || i + 1 == count;
        if checkpoint && let Some(diff) = tree_difference(local, elk) {
            return Err(failure(seed, &done, i, &diff));
        }
    }
    Ok(outcomes)
}

/// A run where nearly everything fails the same way would prove little.
fn check_variety(count: usize, outcomes: &BTreeMap<String, usize>) {
    if count >= DEFAULT_OPS {
        let ok = outcomes.get("ok").copied().unwrap_or(0);
        assert!(
            ok * 10 >= count,
            "too few operations succeeded: {outcomes:?}"
        );
        assert!(
            outcomes.len() >= 7,
            "too few kinds of outcome: {outcomes:?}"
        );
    }
}

#[test]
fn random_operations_give_the_same_results_as_a_local_filesystem() {
    let seed = seed_from_env();
    let count = ops_from_env();
    eprintln!("differential run: ELKFS_DIFF_SEED={seed} ELKFS_DIFF_OPS={count}");
    let mut cluster = Cluster::builder().chunkservers(2).mounts(2).start();
    let elk = cluster.mount_path(0).join("diff");
    let local_dir = host::local_dir("diff");
    let local = local_dir.path().join("diff");
    sys::mkdir(&elk, 0o755).expect("mkdir on ElkFS");
    sys::mkdir(&local, 0o755).expect("mkdir locally");

    let started = Instant::now();
    let outcomes = run_ops(seed, count, &local, &elk).unwrap_or_else(|report| panic!("{report}"));
    eprintln!(
        "{count} operations matched in {:?}; outcomes: {outcomes:?}",
        started.elapsed()
    );
    check_variety(count, &outcomes);

    // The end state is the master's, not only the first mount's: another mount sees it once its
    // attribute cache has expired, and so does every mount after a restart of the whole cluster.
    std::thread::sleep(ATTR_TIMEOUT);
    let other = cluster.mount_path(1).join("diff");
    if let Some(diff) = tree_difference(&local, &other) {
        panic!("after {count} operations (ELKFS_DIFF_SEED={seed}), the second mount sees:\n{diff}");
    }
    cluster.restart_all();
    if let Some(diff) = tree_difference(&local, &elk) {
        panic!("after {count} operations (ELKFS_DIFF_SEED={seed}) and a restart:\n{diff}");
    }
}

#[test]
fn random_operations_as_a_non_root_user_give_the_same_results_as_a_local_filesystem() {
    // The same, run by an ordinary user: modes such as 0000 or 0555 from the random chmods now
    // deny access, so the kernel's permission checks on ElkFS meet ext4's.
    let seed = seed_from_env().wrapping_add(1);
    let count = ops_from_env();
    eprintln!("differential run as a user: ELKFS_DIFF_SEED={seed} ELKFS_DIFF_OPS={count}");
    let cluster = Cluster::builder()
        .chunkservers(2)
        .mount_options("allow_other")
        .start();
    host::open_up(cluster.dir());
    let user = TestUser::create(&[]);
    let elk = cluster.mount_path(0).join("diff");
    let local_dir = host::local_dir("diff-user");
    let local = local_dir.path().join("diff");
    for dir in [&elk, &local] {
        sys::mkdir(dir, 0o755).unwrap();
        sys::lchown(dir, user.uid, user.gid).unwrap();
    }
    let report = user.run(|r| match run_ops(seed, count, &local, &elk) {
        Ok(outcomes) => {
            for (outcome, n) in outcomes {
                r.lines.push(format!("{outcome} {n}"));
            }
        }
        Err(failure) => r
            .lines
            .push(format!("FAILED as uid {}: {failure}", user.uid)),
    });
    let text = report.lines.join("\n");
    assert!(!text.starts_with("FAILED"), "{text}");
    let outcomes: BTreeMap<String, usize> = report
        .lines
        .iter()
        .filter_map(|l| l.split_once(' '))
        .map(|(k, v)| (k.to_owned(), v.parse().expect("a count")))
        .collect();
    eprintln!("{count} operations matched as a user; outcomes: {outcomes:?}");
    check_variety(count, &outcomes);
    assert!(
        outcomes.contains_key("EACCES"),
        "the run never met a permission check: {outcomes:?}"
    );
}

#[test]
fn the_differential_runner_notices_a_difference() {
    // The comparison itself must be able to fail: the same op on trees that differ.
    let a = host::local_dir("diff-self-a");
    let b = host::local_dir("diff-self-b");
    std::fs::write(a.path().join("a"), b"x").unwrap();
    let op = Op::Stat { path: "a".into() };
    assert_ne!(apply(&op, a.path()), apply(&op, b.path()));
    assert_eq!(apply(&op, b.path()), Errno(libc::ENOENT).name());
    assert_ne!(snapshot(a.path()), snapshot(b.path()));
}
