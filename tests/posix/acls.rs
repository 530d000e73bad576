//! POSIX ACLs: setfacl/getfacl (Debian `acl`) give the same listings as on ext4, the kernel
//! enforces them for real users (named entries, the mask, default ACLs on new files), and the
//! raw `system.posix_acl_*` xattrs hold the same bytes.

use std::ffi::OsStr;
use std::path::Path;

use crate::host::{self, expect_success};
use crate::sys;
use crate::users::{People, Report, same_as_local, shared_cluster};

fn setfacl(args: &[&str], path: &Path) -> String {
    let mut all: Vec<&OsStr> = args.iter().map(OsStr::new).collect();
    all.push(path.as_os_str());
    let out = host::run("setfacl", &all, "acl");
    if out.status.success() {
        "ok".into()
    } else {
        format!(
            "failed: {}",
            String::from_utf8_lossy(&out.stderr)
                .trim()
                .replace(&*path.to_string_lossy(), "PATH")
        )
    }
}

fn getfacl(path: &Path) -> String {
    let out = host::run(
        "getfacl",
        &[OsStr::new("-c"), OsStr::new("-n"), path.as_os_str()],
        "acl",
    );
    expect_success("getfacl", &out).trim().replace('\n', " | ")
}

fn acl_scenario(root: &Path, people: &People) -> Report {
    let p = |s: &str| root.join(s);
    let (alice, bob) = (&people.alice, &people.bob);
    let bob_entry = format!("u:{}:r", bob.uid);
    std::fs::write(p("f"), b"alice's").unwrap();
    sys::lchown(&p("f"), alice.uid, alice.gid).unwrap();
    sys::chmod(&p("f"), 0o640).unwrap();
    let mut r = Report::default();

    r.note("setfacl named user", setfacl(&["-m", &bob_entry], &p("f")));
    r.note("getfacl", getfacl(&p("f")));
    r.note(
        "mode shows the mask",
        sys::lstat(&p("f")).map(|s| format!("{:o}", s.st_mode & 0o777)),
    );
    r.note(
        "raw access acl",
        sys::getxattr(&p("f"), "system.posix_acl_access").map(|v| host::fnv(&v)),
    );
    r.lines.extend(
        bob.run(|r| {
            r.op(
                "bob reads through his ACL entry",
                sys::open(&p("f"), libc::O_RDONLY, 0),
            );
            r.op("bob cannot write", sys::open(&p("f"), libc::O_WRONLY, 0));
        })
        .lines,
    );

    r.op("chmod 600 masks the entry", sys::chmod(&p("f"), 0o600));
    r.note("getfacl after chmod", getfacl(&p("f")));
    r.lines.extend(
        bob.run(|r| {
            r.op("bob is masked out", sys::open(&p("f"), libc::O_RDONLY, 0));
        })
        .lines,
    );

    r.note(
        "setfacl -x",
        setfacl(&["-x", &format!("u:{}", bob.uid)], &p("f")),
    );
    r.note("getfacl after -x", getfacl(&p("f")));
    r.note("setfacl -b", setfacl(&["-b"], &p("f")));
    r.note("getfacl after -b", getfacl(&p("f")));
    r.op(
        "no access acl left",
        sys::getxattr(&p("f"), "system.posix_acl_access"),
    );

    // Default ACLs: new entries in the directory inherit them, and the umask is ignored.
    sys::mkdir(&p("d"), 0o755).unwrap();
    sys::lchown(&p("d"), alice.uid, alice.gid).unwrap();
    sys::chmod(&p("d"), 0o770).unwrap();
    r.note(
        "setfacl default",
        setfacl(
            &["-d", "-m", &format!("u:{}:rwx,g::r-x,o::---", bob.uid)],
            &p("d"),
        ),
    );
    r.note(
        "setfacl access on dir",
        setfacl(&["-m", &format!("u:{}:rwx", bob.uid)], &p("d")),
    );
    r.note("getfacl dir", getfacl(&p("d")));
    r.lines.extend(
        alice
            .run(|r| {
                // SAFETY: umask(2) in the forked child only.
                unsafe { libc::umask(0o077) };
                r.op(
                    "alice creates in the dir",
                    sys::open(&p("d/new"), libc::O_CREAT | libc::O_WRONLY, 0o666),
                );
                r.op("alice mkdir in the dir", sys::mkdir(&p("d/sub"), 0o777));
            })
            .lines,
    );
    r.note("new file's acl", getfacl(&p("d/new")));
    r.note(
        "new file's mode",
        sys::lstat(&p("d/new")).map(|s| format!("{:o}", s.st_mode & 0o777)),
    );
    r.note("new dir's acl", getfacl(&p("d/sub")));
    r.note(
        "raw default acl",
        sys::getxattr(&p("d/sub"), "system.posix_acl_default").map(|v| host::fnv(&v)),
    );
    r.lines.extend(
        bob.run(|r| {
            r.op("bob enters the dir through the ACL", sys::list(&p("d")));
            r.op(
                "bob writes the inherited file",
                sys::open(&p("d/new"), libc::O_WRONLY, 0),
            );
            r.op(
                "bob creates in the inherited dir",
                sys::open(&p("d/sub/bobs"), libc::O_CREAT | libc::O_WRONLY, 0o644),
            );
            r.note(
                "bob cannot set ACLs on alice's file",
                setfacl(&["-m", "o::rwx"], &p("d/new")),
            );
        })
        .lines,
    );

    // Raw xattr round trip: copy the ACL bytes to another file.
    std::fs::write(p("g"), b"g").unwrap();
    let acl = sys::getxattr(&p("d/new"), "system.posix_acl_access");
    r.note("raw acl readable", acl.as_ref().map(|v| v.len()));
    if let Ok(bytes) = acl {
        r.op(
            "raw acl written to g",
            sys::setxattr(&p("g"), "system.posix_acl_access", &bytes, 0, true),
        );
        r.note("g's acl", getfacl(&p("g")));
    }
    r.op(
        "garbage acl refused",
        sys::setxattr(&p("g"), "system.posix_acl_access", b"garbage", 0, true),
    );
    r
}

#[test]
fn posix_acls_list_and_enforce_like_on_a_local_filesystem() {
    let cluster = shared_cluster();
    let people = People::create();
    let want = same_as_local("acl", &cluster, |root| acl_scenario(root, &people));
    assert_eq!(want.outcome("bob reads through his ACL entry"), "ok");
    assert_eq!(want.outcome("bob is masked out"), "EACCES");
}
