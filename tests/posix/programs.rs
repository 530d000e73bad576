//! Real programs on the mount: git (init, add, commit, clone, gc, fsck), tar extracting a source
//! tree that `diff -r` and `tar --compare` find identical to the original, and sqlite3 with
//! concurrent writers (which needs working locks). Needs Debian's git, sqlite3 and tar.

use std::ffi::OsStr;
use std::path::Path;
use std::process::{Command, Output};

use elkfs_e2e::pseudo_random;
use elkfs_testkit::Cluster;

use crate::host::{self, expect_success, run_command};
use crate::sys;

fn git(dir: &Path, home: &Path, args: &[&str]) -> String {
    let mut cmd = Command::new("git");
    cmd.arg("-C")
        .arg(dir)
        .args([
            "-c",
            "user.name=ElkFS Test",
            "-c",
            "user.email=test@elkfs.invalid",
        ])
        .args(["-c", "init.defaultBranch=main", "-c", "gc.auto=0"])
        .args(args)
        .env("HOME", home)
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env_remove("GIT_DIR");
    let out = run_command(&mut cmd, "git");
    expect_success(&format!("git {}", args.join(" ")), &out)
}

#[test]
fn git_init_add_commit_clone_gc_and_fsck_work_on_the_mount() {
    let cluster = Cluster::builder().chunkservers(2).start();
    let m = cluster.mount_path(0);
    let home = tempfile::tempdir().unwrap();
    let repo = m.join("repo");
    std::fs::create_dir(&repo).unwrap();
    git(&repo, home.path(), &["init", "-q"]);
    std::fs::create_dir_all(repo.join("src/deep")).unwrap();
    std::fs::write(repo.join("README"), b"hello from ElkFS\n").unwrap();
    std::fs::write(repo.join("src/deep/data.bin"), pseudo_random(3 << 20, 1)).unwrap();
    for i in 0..100 {
        std::fs::write(repo.join(format!("src/f{i}.txt")), format!("file {i}\n")).unwrap();
    }
    std::fs::write(repo.join("run.sh"), b"#!/bin/sh\necho ok\n").unwrap();
    sys::chmod(&repo.join("run.sh"), 0o755).unwrap();
    sys::symlink("README", &repo.join("link")).unwrap();
    git(&repo, home.path(), &["add", "-A"]);
    git(&repo, home.path(), &["commit", "-q", "-m", "first"]);

    std::fs::write(repo.join("README"), b"changed\n").unwrap();
    git(&repo, home.path(), &["mv", "src/f1.txt", "src/moved.txt"]);
    git(&repo, home.path(), &["rm", "-q", "src/f2.txt"]);
    git(&repo, home.path(), &["commit", "-q", "-a", "-m", "second"]);
    assert_eq!(git(&repo, home.path(), &["status", "--porcelain"]), "");

    // A local clone on the same filesystem hard-links the objects.
    let out = run_command(
        Command::new("git")
            .arg("clone")
            .arg("-q")
            .arg(&repo)
            .arg(m.join("clone"))
            .env("HOME", home.path())
            .env("GIT_CONFIG_NOSYSTEM", "1"),
        "git",
    );
    expect_success("git clone", &out);
    let clone = m.join("clone");
    let log = git(&clone, home.path(), &["log", "--format=%s"]);
    assert_eq!(log.lines().collect::<Vec<_>>(), vec!["second", "first"]);
    git(&clone, home.path(), &["fsck", "--full", "--strict"]);
    let diff = host::run(
        "diff",
        &[
            OsStr::new("-r"),
            OsStr::new("--no-dereference"),
            OsStr::new("--exclude=.git"),
            repo.as_os_str(),
            clone.as_os_str(),
        ],
        "diffutils",
    );
    expect_success("diff -r repo clone", &diff);
    let run_sh = Command::new(clone.join("run.sh"))
        .output()
        .expect("run a script from the clone");
    assert_eq!(String::from_utf8_lossy(&run_sh.stdout), "ok\n");

    // Work in the clone, pull it back, repack everything.
    std::fs::write(clone.join("NEW"), b"from the clone\n").unwrap();
    git(&clone, home.path(), &["add", "NEW"]);
    git(&clone, home.path(), &["commit", "-q", "-m", "third"]);
    git(
        &repo,
        home.path(),
        &["pull", "-q", "--ff-only", &clone.to_string_lossy(), "main"],
    );
    assert_eq!(
        std::fs::read(repo.join("NEW")).unwrap(),
        b"from the clone\n"
    );
    git(
        &repo,
        home.path(),
        &["gc", "-q", "--aggressive", "--prune=now"],
    );
    git(&repo, home.path(), &["fsck", "--full", "--strict"]);
    assert_eq!(
        git(&repo, home.path(), &["rev-list", "--count", "HEAD"]).trim(),
        "3"
    );
}

/// A source tree with the awkward parts tar must restore: hard links, symlinks, an empty dir,
/// modes, a FIFO, an old mtime, a large file and long names.
fn make_tree(dir: &Path) {
    let root = host::repo_root();
    let out = run_command(
        Command::new("sh").arg("-c").arg(format!(
            "tar -C '{}' --exclude=target -cf - crates docs | tar -C '{}' -xf -",
            root.display(),
            dir.display()
        )),
        "tar",
    );
    expect_success("copying the repository's sources", &out);
    let extra = dir.join("extra");
    std::fs::create_dir_all(extra.join("empty")).unwrap();
    std::fs::write(extra.join("big.bin"), pseudo_random(5 << 20, 2)).unwrap();
    std::fs::write(extra.join("secret"), b"0600").unwrap();
    sys::chmod(&extra.join("secret"), 0o600).unwrap();
    std::fs::write(extra.join("tool"), b"#!/bin/sh\n").unwrap();
    sys::chmod(&extra.join("tool"), 0o4755).unwrap();
    sys::link(&extra.join("big.bin"), &extra.join("hardlink.bin")).unwrap();
    sys::symlink("big.bin", &extra.join("rel-link")).unwrap();
    sys::symlink("../crates", &extra.join("dir-link")).unwrap();
    sys::symlink("/nonexistent/target", &extra.join("dangling")).unwrap();
    sys::mknod(&extra.join("fifo"), libc::S_IFIFO | 0o640, 0).unwrap();
    let long = "l".repeat(200);
    std::fs::write(extra.join(&long), b"long name").unwrap();
    sys::utimensat(
        &extra.join("secret"),
        Some([sys::ts(946_684_800, 0), sys::ts(946_684_800, 0)]),
        0,
    )
    .unwrap();
    sys::lchown(&extra.join("tool"), 1234, 5678).unwrap();
}

#[test]
fn tar_extracts_a_source_tree_that_diff_and_tar_compare_find_identical() {
    let cluster = Cluster::builder().chunkservers(2).start();
    let local = host::local_dir("tar");
    let src = local.path().join("src");
    std::fs::create_dir(&src).unwrap();
    make_tree(&src);
    let archive = local.path().join("tree.tar");
    expect_success(
        "tar -c",
        &host::run(
            "tar",
            &[
                OsStr::new("-C"),
                src.as_os_str(),
                OsStr::new("-cf"),
                archive.as_os_str(),
                OsStr::new("."),
            ],
            "tar",
        ),
    );
    let dst = cluster.mount_path(0).join("tree");
    std::fs::create_dir(&dst).unwrap();
    let out = host::run(
        "tar",
        &[
            OsStr::new("-C"),
            dst.as_os_str(),
            OsStr::new("-xpf"),
            archive.as_os_str(),
            OsStr::new("--same-owner"),
        ],
        "tar",
    );
    expect_success("tar -x onto the mount", &out);

    // diff cannot compare FIFOs; tar --compare below checks the FIFO.
    let diff = host::run(
        "diff",
        &[
            OsStr::new("-r"),
            OsStr::new("--no-dereference"),
            OsStr::new("--exclude=fifo"),
            src.as_os_str(),
            dst.as_os_str(),
        ],
        "diffutils",
    );
    expect_success("diff -r of the original and the extracted tree", &diff);
    // tar --compare checks modes, owners, mtimes, sizes, link targets and contents.
    let compare = host::run(
        "tar",
        &[
            OsStr::new("-C"),
            dst.as_os_str(),
            OsStr::new("--compare"),
            OsStr::new("-f"),
            archive.as_os_str(),
        ],
        "tar",
    );
    let text = expect_success("tar --compare", &compare);
    assert_eq!(text.trim(), "", "tar --compare found differences");
    let (a, b) = (
        sys::lstat(&dst.join("extra/big.bin")).unwrap(),
        sys::lstat(&dst.join("extra/hardlink.bin")).unwrap(),
    );
    assert_eq!(
        (a.st_ino, a.st_nlink),
        (b.st_ino, 2),
        "the hard link was restored as one"
    );
    assert_eq!(
        sys::kind(sys::lstat(&dst.join("extra/fifo")).unwrap().st_mode),
        "fifo"
    );

    // And back: a tar of the mount's tree extracts locally to the same thing.
    let back = local.path().join("back");
    std::fs::create_dir(&back).unwrap();
    let out = run_command(
        Command::new("sh").arg("-c").arg(format!(
            "tar -C '{}' -cf - . | tar -C '{}' -xpf -",
            dst.display(),
            back.display()
        )),
        "tar",
    );
    expect_success("tar of the mount's tree", &out);
    let diff = host::run(
        "diff",
        &[
            OsStr::new("-r"),
            OsStr::new("--no-dereference"),
            OsStr::new("--exclude=fifo"),
            src.as_os_str(),
            back.as_os_str(),
        ],
        "diffutils",
    );
    expect_success("diff -r of the original and the round trip", &diff);
}

fn sqlite(db: &Path, sql: &str) -> Output {
    run_command(
        Command::new("sqlite3")
            .arg("-batch")
            .arg("-cmd")
            .arg(".timeout 30000")
            .arg(db)
            .arg(sql),
        "sqlite3",
    )
}

fn sqlite_ok(db: &Path, sql: &str) -> String {
    let out = sqlite(db, sql);
    expect_success(&format!("sqlite3 {sql}"), &out)
        .trim()
        .to_owned()
}

fn concurrent_inserts(db: &Path, writers: usize, rows: usize) {
    let children: Vec<_> = (0..writers)
        .map(|w| {
            let script: String = (0..rows)
                .map(|i| format!("INSERT INTO t(v, who) VALUES ('w{w}-{i}', {w});\n"))
                .collect();
            Command::new("sqlite3")
                .arg("-batch")
                .arg("-cmd")
                .arg(".timeout 30000")
                .arg(db)
                .arg(script)
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .expect("running sqlite3 (Debian package sqlite3)")
        })
        .collect();
    for (w, child) in children.into_iter().enumerate() {
        let out = child.wait_with_output().unwrap();
        expect_success(&format!("sqlite3 writer {w}"), &out);
    }
}

#[test]
fn sqlite3_creates_and_queries_a_database_with_concurrent_writers() {
    let cluster = Cluster::builder().chunkservers(2).mounts(2).start();
    for (name, mode) in [("rollback.db", "DELETE"), ("wal.db", "WAL")] {
        let db = cluster.mount_path(0).join(name);
        assert_eq!(
            sqlite_ok(&db, &format!("PRAGMA journal_mode={mode};")).to_uppercase(),
            mode
        );
        sqlite_ok(
            &db,
            "CREATE TABLE t(id INTEGER PRIMARY KEY, v TEXT, who INTEGER);
             CREATE INDEX t_v ON t(v);
             WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c WHERE x < 5000)
             INSERT INTO t(v, who) SELECT hex(randomblob(64)), -1 FROM c;",
        );
        assert_eq!(sqlite_ok(&db, "SELECT count(*) FROM t;"), "5000");
        // Three processes inserting one row per transaction at the same time.
        concurrent_inserts(&db, 3, 150);
        assert_eq!(sqlite_ok(&db, "SELECT count(*) FROM t;"), "5450", "{mode}");
        assert_eq!(
            sqlite_ok(&db, "SELECT count(DISTINCT v) FROM t WHERE who >= 0;"),
            "450"
        );
        assert_eq!(sqlite_ok(&db, "PRAGMA integrity_check;"), "ok", "{mode}");
        sqlite_ok(&db, "DELETE FROM t WHERE who = -1; VACUUM;");
        assert_eq!(sqlite_ok(&db, "SELECT count(*) FROM t;"), "450");
        if mode == "DELETE" {
            // Closed on mount A, opened on mount B: the same database.
            let other = cluster.mount_path(1).join(name);
            assert_eq!(sqlite_ok(&other, "SELECT count(*) FROM t;"), "450");
            assert_eq!(sqlite_ok(&other, "PRAGMA integrity_check;"), "ok");
        }
    }
}
