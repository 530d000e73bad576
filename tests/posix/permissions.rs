//! Permissions are the kernel's, with the mounting user's view: real non-root users get
//! EACCES and EPERM exactly where they get them on ext4, sticky and setgid directories work,
//! and chown/chmod rules hold. Every scenario runs on a local directory and on ElkFS (mounted
//! with allow_other) with the same users, and the outcomes must match line for line.

use std::path::Path;

use crate::sys::{self, Errno, ts};
use crate::users::{People, Report, TestUser, same_as_local, shared_cluster};

fn own(path: &Path, user: &TestUser, gid: u32) {
    sys::lchown(path, user.uid, gid).unwrap();
}

fn mode_of(path: &Path) -> Result<String, Errno> {
    sys::lstat(path).map(|s| format!("{:o}", s.st_mode & 0o7777))
}

fn access_matrix(root: &Path, people: &People) -> Report {
    let p = |s: &str| root.join(s);
    let (alice, bob) = (&people.alice, &people.bob);
    for (dir, mode) in [
        ("pub", 0o755),
        ("priv", 0o700),
        ("wx", 0o333),
        ("ro", 0o555),
        ("open", 0o777),
    ] {
        sys::mkdir(&p(dir), 0o755).unwrap();
        own(&p(dir), alice, alice.gid);
        sys::chmod(&p(dir), mode).unwrap();
    }
    for (file, mode) in [
        ("pub/r600", 0o600),
        ("pub/r644", 0o644),
        ("pub/w666", 0o666),
        ("pub/x000", 0o000),
        ("pub/g640", 0o640),
        ("pub/run755", 0o755),
    ] {
        std::fs::write(p(file), b"#!/bin/sh\nexit 0\n").unwrap();
        own(
            &p(file),
            alice,
            if file.ends_with("g640") {
                people.team.gid
            } else {
                alice.gid
            },
        );
        sys::chmod(&p(file), mode).unwrap();
    }
    std::fs::write(p("priv/secret"), b"s").unwrap();

    let rd = libc::O_RDONLY;
    let wr = libc::O_WRONLY;
    let mut report = bob.run(|r| {
        r.op("bob reads 0600", sys::open(&p("pub/r600"), rd, 0));
        r.op("bob reads 0644", sys::open(&p("pub/r644"), rd, 0));
        r.op("bob writes 0644", sys::open(&p("pub/r644"), wr, 0));
        r.op("bob writes 0666", sys::open(&p("pub/w666"), wr, 0));
        r.op("bob reads 0000", sys::open(&p("pub/x000"), rd, 0));
        r.op(
            "bob reads 0640 of a group he is not in",
            sys::open(&p("pub/g640"), rd, 0),
        );
        r.op("bob lists 0755", sys::list(&p("pub")));
        r.op(
            "bob creates in 0755",
            sys::open(&p("pub/new"), libc::O_CREAT | wr, 0o644),
        );
        r.op("bob unlinks in 0755", sys::unlink(&p("pub/r644")));
        r.op("bob lists 0700", sys::list(&p("priv")));
        r.op("bob stats in 0700", sys::lstat(&p("priv/secret")));
        r.op("bob lists 0333", sys::list(&p("wx")));
        r.op(
            "bob creates in 0333",
            sys::open(&p("wx/bobs"), libc::O_CREAT | wr, 0o644),
        );
        r.op("bob stats in 0333", sys::lstat(&p("wx/bobs")));
        r.op(
            "bob creates in 0555",
            sys::open(&p("ro/x"), libc::O_CREAT | wr, 0o644),
        );
        r.op("bob mkdir in 0555", sys::mkdir(&p("ro/x"), 0o755));
        r.op("bob chmods alice's file", sys::chmod(&p("pub/w666"), 0o600));
        r.op(
            "bob chowns alice's file to himself",
            sys::lchown(&p("pub/w666"), bob.uid, u32::MAX),
        );
        r.op(
            "bob touches a writable file (NULL times)",
            sys::utimensat(&p("pub/w666"), None, 0),
        );
        r.op(
            "bob touches it with UTIME_NOW",
            sys::utimensat(
                &p("pub/w666"),
                Some([ts(0, libc::UTIME_NOW), ts(0, libc::UTIME_NOW)]),
                0,
            ),
        );
        r.op(
            "bob sets explicit times on it",
            sys::utimensat(&p("pub/w666"), Some([ts(5, 0), ts(5, 0)]), 0),
        );
        r.op(
            "bob touches a read-only file",
            sys::utimensat(&p("pub/r644"), None, 0),
        );
        r.op("bob truncates 0666", sys::truncate(&p("pub/w666"), 1));
        r.op("bob truncates 0644", sys::truncate(&p("pub/r644"), 1));
        r.op(
            "bob renames out of 0755",
            sys::rename(&p("pub/r644"), &p("open/taken")),
        );
        r.op(
            "bob creates in 0777",
            sys::open(&p("open/bobs"), libc::O_CREAT | wr, 0o600),
        );
        r.op(
            "bob renames his own file",
            sys::rename(&p("open/bobs"), &p("open/bobs2")),
        );
        r.op(
            "bob hard-links a file he cannot read",
            sys::link(&p("pub/r600"), &p("open/stolen")),
        );
        r.op(
            "bob hard-links a file he can read",
            sys::link(&p("pub/r644"), &p("open/shared")),
        );
        r.op("bob rmdirs alice's dir", sys::rmdir(&p("ro")));
        r.op("bob access R 0600", sys::access(&p("pub/r600"), libc::R_OK));
        r.op("bob access W 0666", sys::access(&p("pub/w666"), libc::W_OK));
        r.op(
            "bob access X 0755",
            sys::access(&p("pub/run755"), libc::X_OK),
        );
        r.op("bob access X 0644", sys::access(&p("pub/r644"), libc::X_OK));
        r.op(
            "bob sets user xattr on 0666",
            sys::setxattr(&p("pub/w666"), "user.b", b"1", 0, true),
        );
        r.op(
            "bob sets user xattr on 0644",
            sys::setxattr(&p("pub/r644"), "user.b", b"1", 0, true),
        );
        r.op(
            "bob sets a trusted xattr",
            sys::setxattr(&p("pub/w666"), "trusted.b", b"1", 0, true),
        );
        r.note(
            "bob's new file",
            sys::lstat(&p("open/bobs2"))
                .map(|s| (s.st_uid == bob.uid, s.st_gid == bob.gid, s.st_mode & 0o7777)),
        );
    });
    let alice_report = alice.run(|r| {
        r.op("alice reads her 0000", sys::open(&p("pub/x000"), rd, 0));
        r.op("alice chmods her 0000", sys::chmod(&p("pub/x000"), 0o400));
        r.op("alice reads it now", sys::open(&p("pub/x000"), rd, 0));
        r.op(
            "alice reads 0640 through her group",
            sys::open(&p("pub/g640"), rd, 0),
        );
        r.op(
            "alice sets explicit times on her file",
            sys::utimensat(&p("pub/r600"), Some([ts(5, 0), ts(5, 0)]), 0),
        );
        r.op(
            "alice unlinks bob's file in her 0777 dir",
            sys::unlink(&p("open/bobs2")),
        );
        r.op("alice lists her 0333", sys::list(&p("wx")));
    });
    report.lines.extend(alice_report.lines);
    report.op("root reads 0000", sys::open(&p("pub/r600"), rd, 0));
    report.op("root writes 0444", sys::open(&p("pub/x000"), wr, 0));
    report.op("root lists 0333", sys::list(&p("wx")));
    report
}

#[test]
fn non_root_users_get_eacces_and_eperm_where_a_local_filesystem_does() {
    let cluster = shared_cluster();
    let people = People::create();
    let want = same_as_local("access", &cluster, |root| access_matrix(root, &people));
    assert_eq!(want.outcome("bob reads 0600"), "EACCES");
    assert_eq!(want.outcome("bob chmods alice's file"), "EPERM");
    assert_eq!(want.outcome("bob reads 0644"), "ok");
}

fn sticky_dir(root: &Path, people: &People) -> Report {
    let tmp = root.join("tmp");
    sys::mkdir(&tmp, 0o755).unwrap();
    sys::chmod(&tmp, 0o1777).unwrap();
    let p = |s: &str| tmp.join(s);
    let mut report = people.alice.run(|r| {
        r.op(
            "alice creates a",
            sys::open(&p("a"), libc::O_CREAT | libc::O_WRONLY, 0o666),
        );
        r.op(
            "alice creates a2",
            sys::open(&p("a2"), libc::O_CREAT | libc::O_WRONLY, 0o666),
        );
        r.op("alice mkdir dir", sys::mkdir(&p("dir"), 0o777));
    });
    report.lines.extend(
        people
            .bob
            .run(|r| {
                r.op("bob unlinks alice's a", sys::unlink(&p("a")));
                r.op("bob renames alice's a", sys::rename(&p("a"), &p("b")));
                r.op("bob rmdirs alice's dir", sys::rmdir(&p("dir")));
                r.op(
                    "bob writes alice's 0666 a",
                    sys::open(&p("a"), libc::O_WRONLY, 0),
                );
                r.op(
                    "bob creates c",
                    sys::open(&p("c"), libc::O_CREAT | libc::O_WRONLY, 0o644),
                );
                r.op(
                    "bob renames c over alice's a2",
                    sys::rename(&p("c"), &p("a2")),
                );
                r.op("bob renames c to d", sys::rename(&p("c"), &p("d")));
            })
            .lines,
    );
    report.lines.extend(
        people
            .alice
            .run(|r| {
                r.op("alice unlinks bob's d", sys::unlink(&p("d")));
                r.op("alice unlinks her a", sys::unlink(&p("a")));
            })
            .lines,
    );
    report.op("root unlinks bob's d", sys::unlink(&p("d")));
    report.note("left", sys::list(&tmp));
    report.note("sticky mode", mode_of(&tmp));
    report
}

#[test]
fn sticky_directories_let_only_owners_remove_or_rename_entries() {
    let cluster = shared_cluster();
    let people = People::create();
    let want = same_as_local("sticky", &cluster, |root| sticky_dir(root, &people));
    assert_eq!(want.outcome("bob unlinks alice's a"), "EPERM");
    assert_eq!(want.outcome("alice unlinks her a"), "ok");
}

fn setgid_dir(root: &Path, people: &People) -> Report {
    let shared = root.join("shared");
    sys::mkdir(&shared, 0o755).unwrap();
    sys::lchown(&shared, 0, people.team.gid).unwrap();
    sys::chmod(&shared, 0o2777).unwrap();
    let p = |s: &str| shared.join(s);
    let team = people.team.gid;
    let describe = move |path: &Path| {
        sys::lstat(path).map(|s| {
            format!(
                "gid-is-team={} mode={:o}",
                s.st_gid == team,
                s.st_mode & 0o7777
            )
        })
    };
    let mut report = people.alice.run(|r| {
        r.op(
            "alice creates",
            sys::open(&p("a"), libc::O_CREAT | libc::O_WRONLY, 0o664),
        );
        r.note("alice's file", describe(&p("a")));
        r.op("alice mkdir", sys::mkdir(&p("sub"), 0o775));
        r.note("alice's dir inherits setgid", describe(&p("sub")));
        r.op(
            "alice creates below",
            sys::open(&p("sub/deep"), libc::O_CREAT | libc::O_WRONLY, 0o600),
        );
        r.note("deep file", describe(&p("sub/deep")));
        r.op(
            "alice sets g+s on her team file",
            sys::chmod(&p("a"), 0o2775),
        );
        r.note("kept", describe(&p("a")));
        r.op("alice symlink", sys::symlink("a", &p("sl")));
        r.note(
            "symlink gid",
            sys::lstat(&p("sl")).map(|s| s.st_gid == team),
        );
    });
    report.lines.extend(
        people
            .bob
            .run(|r| {
                r.op(
                    "bob (not in team) creates",
                    sys::open(&p("b"), libc::O_CREAT | libc::O_WRONLY, 0o664),
                );
                r.note("bob's file still gets the team group", describe(&p("b")));
                r.op(
                    "bob sets g+s on a file of a group he is not in",
                    sys::chmod(&p("b"), 0o2775),
                );
                r.note("setgid silently dropped", describe(&p("b")));
                r.op("bob mkdir", sys::mkdir(&p("bobdir"), 0o755));
                r.note("bob's dir", describe(&p("bobdir")));
                r.op(
                    "bob mknod fifo",
                    sys::mknod(&p("fifo"), libc::S_IFIFO | 0o644, 0),
                );
                r.note("fifo", describe(&p("fifo")));
            })
            .lines,
    );
    report.op(
        "root moves a setgid dir elsewhere",
        sys::rename(&p("sub"), &root.join("moved")),
    );
    report.note(
        "moved dir keeps its mode and group",
        describe(&root.join("moved")),
    );
    report
}

#[test]
fn setgid_directories_pass_their_group_and_setgid_bit_on() {
    let cluster = shared_cluster();
    let people = People::create();
    let want = same_as_local("setgid", &cluster, |root| setgid_dir(root, &people));
    assert_eq!(
        want.outcome("alice's dir inherits setgid"),
        "Ok(\"gid-is-team=true mode=2755\")"
    );
}

fn chown_rules(root: &Path, people: &People) -> Report {
    let p = |s: &str| root.join(s);
    let (alice, bob) = (&people.alice, &people.bob);
    for f in ["f", "suid", "sgid", "plain_sgid", "w"] {
        std::fs::write(p(f), b"data").unwrap();
        own(&p(f), alice, alice.gid);
    }
    sys::chmod(&p("f"), 0o644).unwrap();
    sys::chmod(&p("suid"), 0o4755).unwrap();
    sys::chmod(&p("sgid"), 0o2755).unwrap();
    sys::chmod(&p("plain_sgid"), 0o2644).unwrap();
    sys::chmod(&p("w"), 0o6777).unwrap();
    let team = people.team.gid;
    let bob_gid = bob.gid;
    let bob_uid = bob.uid;
    let mut report = alice.run(|r| {
        r.op(
            "alice gives her file to bob",
            sys::lchown(&p("f"), bob_uid, u32::MAX),
        );
        r.op(
            "alice chgrps to her team",
            sys::lchown(&p("f"), u32::MAX, team),
        );
        r.op(
            "alice chgrps to bob's group",
            sys::lchown(&p("f"), u32::MAX, bob_gid),
        );
        r.op(
            "alice chowns -1 -1",
            sys::lchown(&p("f"), u32::MAX, u32::MAX),
        );
        r.op(
            "alice chgrps her setuid file",
            sys::lchown(&p("suid"), u32::MAX, team),
        );
        r.note("setuid dropped", mode_of(&p("suid")));
        r.op(
            "alice chgrps her setgid file",
            sys::lchown(&p("sgid"), u32::MAX, team),
        );
        r.note("setgid dropped", mode_of(&p("sgid")));
        r.op(
            "alice chgrps a non-exec setgid file",
            sys::lchown(&p("plain_sgid"), u32::MAX, team),
        );
        r.note(
            "mandatory-lock style setgid kept",
            mode_of(&p("plain_sgid")),
        );
    });
    report.lines.extend(
        bob.run(|r| {
            r.op(
                "bob writes a 6777 file",
                std::fs::OpenOptions::new()
                    .append(true)
                    .open(p("w"))
                    .and_then(|mut f| {
                        use std::io::Write;
                        f.write_all(b"x")
                    })
                    .map_err(|e| Errno(e.raw_os_error().unwrap_or(0))),
            );
            r.note(
                "suid and sgid cleared by another user's write",
                mode_of(&p("w")),
            );
            r.op(
                "bob chowns his way in",
                sys::lchown(&p("f"), bob_uid, u32::MAX),
            );
        })
        .lines,
    );
    sys::chmod(&p("suid"), 0o4755).unwrap();
    report.op(
        "root chowns a setuid file",
        sys::lchown(&p("suid"), bob_uid, u32::MAX),
    );
    report.note("root's chown clears setuid", mode_of(&p("suid")));
    report.op("root chowns to any ids", sys::lchown(&p("f"), 12345, 54321));
    report.note("owner", sys::lstat(&p("f")).map(|s| (s.st_uid, s.st_gid)));
    report
}

#[test]
fn chown_and_setuid_rules_hold_for_non_root_users() {
    let cluster = shared_cluster();
    let people = People::create();
    let want = same_as_local("chown", &cluster, |root| chown_rules(root, &people));
    assert_eq!(want.outcome("alice gives her file to bob"), "EPERM");
    assert_eq!(want.outcome("alice chgrps to her team"), "ok");
}

#[test]
fn files_created_by_a_user_belong_to_that_user_and_honour_the_umask() {
    let cluster = shared_cluster();
    let people = People::create();
    let want = same_as_local("owner", &cluster, |root| {
        sys::chmod(root, 0o777).unwrap();
        let p = |s: &str| root.join(s);
        let carol = &people.carol;
        let (uid, gid) = (carol.uid, carol.gid);
        carol.run(|r| {
            // SAFETY: umask(2) in the forked child only.
            unsafe { libc::umask(0o027) };
            r.op(
                "create",
                sys::open(&p("f"), libc::O_CREAT | libc::O_WRONLY, 0o666),
            );
            r.op("mkdir", sys::mkdir(&p("d"), 0o777));
            r.op("mknod", sys::mknod(&p("n"), libc::S_IFIFO | 0o666, 0));
            r.op("symlink", sys::symlink("f", &p("s")));
            for name in ["f", "d", "n", "s"] {
                r.note(
                    name,
                    sys::lstat(&p(name))
                        .map(|s| (s.st_uid == uid, s.st_gid == gid, s.st_mode & 0o7777)),
                );
            }
            r.op(
                "mknod a device as a user",
                sys::mknod(&p("dev"), libc::S_IFCHR | 0o600, libc::makedev(1, 3)),
            );
        })
    });
    assert_eq!(want.outcome("f"), "Ok((true, true, 416))");
}

#[test]
fn root_bypasses_permission_bits_but_not_the_execute_rule() {
    let cluster = shared_cluster();
    let m = cluster.mount_path(0);
    std::fs::copy("/bin/true", m.join("true")).unwrap();
    sys::chmod(&m.join("true"), 0o644).unwrap();
    let run = |path: &Path| {
        std::process::Command::new(path)
            .status()
            .map_err(|e| Errno(e.raw_os_error().unwrap_or(0)))
            .map(|s| s.success())
    };
    assert_eq!(
        run(&m.join("true")),
        Err(Errno(libc::EACCES)),
        "root cannot exec a 0644 file"
    );
    sys::chmod(&m.join("true"), 0o755).unwrap();
    assert_eq!(
        run(&m.join("true")),
        Ok(true),
        "a program runs from the mount"
    );
    std::fs::write(m.join("locked"), b"secret").unwrap();
    sys::chmod(&m.join("locked"), 0).unwrap();
    assert_eq!(std::fs::read(m.join("locked")).unwrap(), b"secret");
    std::fs::create_dir(m.join("closed")).unwrap();
    sys::chmod(&m.join("closed"), 0).unwrap();
    std::fs::write(m.join("closed/inside"), b"x").expect("root creates in a 0000 directory");
    assert_eq!(sys::list(&m.join("closed")).unwrap(), vec!["inside"]);
}
