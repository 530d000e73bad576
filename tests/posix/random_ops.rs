//! The operations of the differential test: a random generator over a small name pool, each
//! operation applied to a directory tree as one outcome string (value or errno name), and a
//! snapshot of everything about a tree that must match.

use std::fmt;
use std::path::Path;

use elkfs_e2e::pseudo_random;
use rand::Rng;
use rand::rngs::StdRng;
use rand::seq::IndexedRandom;

use crate::host::fnv;
use crate::sys::{self, Sys};

const NAMES: &[&str] = &["a", "b", "c", "d"];
const XATTRS: &[&str] = &["user.one", "user.two", "user.three"];
const MODES: &[u32] = &[
    0o644, 0o600, 0o755, 0o700, 0o444, 0o4755, 0o2755, 0o1777, 0o000,
];
/// Just below the 64 MiB chunk boundary, so some writes and truncates cross it.
const CHUNK_EDGE: u64 = 64 * 1024 * 1024 - 3000;

#[derive(Clone, Debug)]
pub(crate) enum Op {
    Create {
        path: String,
        mode: u32,
        excl: bool,
        trunc: bool,
    },
    Write {
        path: String,
        offset: u64,
        len: usize,
        seed: u64,
        append: bool,
    },
    Truncate {
        path: String,
        len: u64,
    },
    Rename {
        from: String,
        to: String,
        flags: u32,
    },
    Mkfifo {
        path: String,
    },
    Link {
        from: String,
        to: String,
    },
    Symlink {
        target: String,
        path: String,
    },
    Unlink {
        path: String,
    },
    Mkdir {
        path: String,
        mode: u32,
    },
    Rmdir {
        path: String,
    },
    Chmod {
        path: String,
        mode: u32,
    },
    SetXattr {
        path: String,
        name: &'static str,
        value: Vec<u8>,
        flags: i32,
    },
    GetXattr {
        path: String,
        name: &'static str,
    },
    RemoveXattr {
        path: String,
        name: &'static str,
    },
    ListXattr {
        path: String,
    },
    ReadDir {
        path: String,
    },
    Read {
        path: String,
        offset: u64,
        len: usize,
    },
    Stat {
        path: String,
    },
    Readlink {
        path: String,
    },
}

impl fmt::Display for Op {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Op::Write {
                path,
                offset,
                len,
                seed,
                append,
            } => {
                write!(
                    f,
                    "Write {{ path: {path:?}, offset: {offset}, len: {len}, seed: {seed}, append: {append} }}"
                )
            }
            Op::SetXattr {
                path,
                name,
                value,
                flags,
            } => write!(
                f,
                "SetXattr {{ path: {path:?}, name: {name:?}, value: {} bytes, flags: {flags} }}",
                value.len()
            ),
            other => write!(f, "{other:?}"),
        }
    }
}

fn random_path(rng: &mut StdRng) -> String {
    let depth = match rng.random_range(0..10) {
        0..4 => 1,
        4..8 => 2,
        _ => 3,
    };
    (0..depth)
        .map(|_| *NAMES.choose(rng).expect("names"))
        .collect::<Vec<_>>()
        .join("/")
}

pub(crate) fn random_op(rng: &mut StdRng) -> Op {
    let path = random_path(rng);
    match rng.random_range(0..100) {
        0..12 => Op::Create {
            path,
            mode: *[0o644, 0o600, 0o755].choose(rng).expect("modes"),
            excl: rng.random_bool(0.3),
            trunc: rng.random_bool(0.3),
        },
        12..27 => {
            let offset = if rng.random_bool(0.03) {
                CHUNK_EDGE + rng.random_range(0..6000)
            } else {
                rng.random_range(0..300_000)
            };
            Op::Write {
                path,
                offset,
                len: rng.random_range(1..70_000),
                seed: rng.random(),
                append: rng.random_bool(0.15),
            }
        }
        27..32 => Op::Truncate {
            path,
            len: if rng.random_bool(0.03) {
                CHUNK_EDGE + rng.random_range(0..6000)
            } else {
                rng.random_range(0..200_000)
            },
        },
        32..42 => Op::Rename {
            from: path,
            to: random_path(rng),
            flags: *[
                0,
                0,
                0,
                0,
                0,
                0,
                libc::RENAME_NOREPLACE,
                libc::RENAME_EXCHANGE,
            ]
            .choose(rng)
            .expect("flags"),
        },
        42..47 => Op::Link {
            from: path,
            to: random_path(rng),
        },
        47..51 => Op::Symlink {
            target: random_path(rng),
            path,
        },
        51..59 => Op::Unlink { path },
        59..68 => Op::Mkdir {
            path,
            mode: *[0o755, 0o700, 0o2775].choose(rng).expect("modes"),
        },
        68..73 => Op::Rmdir { path },
        73..74 => Op::Mkfifo { path },
        74..78 => Op::Chmod {
            path,
            mode: *MODES.choose(rng).expect("modes"),
        },
        78..82 => {
            let len = rng.random_range(0..200);
            Op::SetXattr {
                path,
                name: XATTRS.choose(rng).expect("xattrs"),
                value: pseudo_random(len, rng.random()),
                flags: *[0, 0, libc::XATTR_CREATE, libc::XATTR_REPLACE]
                    .choose(rng)
                    .expect("flags"),
            }
        }
        82..84 => Op::GetXattr {
            path,
            name: XATTRS.choose(rng).expect("xattrs"),
        },
        84..85 => Op::RemoveXattr {
            path,
            name: XATTRS.choose(rng).expect("xattrs"),
        },
        85..86 => Op::ListXattr { path },
        86..90 => Op::ReadDir { path },
        90..95 => Op::Read {
            path,
            offset: rng.random_range(0..250_000),
            len: rng.random_range(1..100_000),
        },
        95..98 => Op::Stat { path },
        _ => Op::Readlink { path },
    }
}

fn outcome<T: fmt::Debug>(r: Sys<T>) -> String {
    match r {
        Ok(v) => format!("ok {v:?}"),
        Err(e) => e.name(),
    }
}

/// What `lstat` says that must match: type, permission bits, size (not for directories, whose
/// size is the filesystem's own business), link count.
fn stat_summary(path: &Path) -> Sys<String> {
    let st = sys::lstat(path)?;
    let kind = sys::kind(st.st_mode);
    let size = if kind == "dir" {
        "-".to_owned()
    } else {
        st.st_size.to_string()
    };
    Ok(format!(
        "{kind} mode {:o} size {size} nlink {}",
        st.st_mode & 0o7777,
        st.st_nlink
    ))
}

pub(crate) fn apply(op: &Op, root: &Path) -> String {
    let p = |s: &str| root.join(s);
    match op {
        Op::Create {
            path,
            mode,
            excl,
            trunc,
        } => {
            // O_NONBLOCK: a FIFO from the pool must not block the run (ENXIO instead).
            let mut flags = libc::O_CREAT | libc::O_WRONLY | libc::O_NONBLOCK;
            if *excl {
                flags |= libc::O_EXCL;
            }
            if *trunc {
                flags |= libc::O_TRUNC;
            }
            outcome(sys::open(&p(path), flags, *mode).map(drop))
        }
        Op::Write {
            path,
            offset,
            len,
            seed,
            append,
        } => {
            let flags =
                libc::O_WRONLY | libc::O_NONBLOCK | if *append { libc::O_APPEND } else { 0 };
            let data = pseudo_random(*len, *seed);
            outcome(sys::open(&p(path), flags, 0).and_then(|f| {
                let n = if *append {
                    sys::write(&f, &data)?
                } else {
                    sys::pwrite(&f, &data, *offset)?
                };
                sys::close(f)?;
                Ok(n)
            }))
        }
        Op::Truncate { path, len } => outcome(sys::truncate(&p(path), *len)),
        Op::Rename { from, to, flags } => outcome(sys::renameat2(&p(from), &p(to), *flags)),
        Op::Mkfifo { path } => outcome(sys::mknod(&p(path), libc::S_IFIFO | 0o640, 0)),
        Op::Link { from, to } => outcome(sys::link(&p(from), &p(to))),
        Op::Symlink { target, path } => outcome(sys::symlink(target, &p(path))),
        Op::Unlink { path } => outcome(sys::unlink(&p(path))),
        Op::Mkdir { path, mode } => outcome(sys::mkdir(&p(path), *mode)),
        Op::Rmdir { path } => outcome(sys::rmdir(&p(path))),
        Op::Chmod { path, mode } => outcome(sys::chmod(&p(path), *mode)),
        Op::SetXattr {
            path,
            name,
            value,
            flags,
        } => outcome(sys::setxattr(&p(path), name, value, *flags, true)),
        Op::GetXattr { path, name } => {
            outcome(sys::getxattr(&p(path), name).map(|v| (v.len(), fnv(&v))))
        }
        Op::RemoveXattr { path, name } => outcome(sys::removexattr(&p(path), name)),
        Op::ListXattr { path } => outcome(sys::listxattr(&p(path))),
        Op::ReadDir { path } => outcome(sys::list(&p(path))),
        Op::Read { path, offset, len } => outcome(
            sys::open(&p(path), libc::O_RDONLY | libc::O_NONBLOCK, 0)
                .and_then(|f| sys::pread(&f, *len, *offset))
                .map(|d| (d.len(), fnv(&d))),
        ),
        Op::Stat { path } => outcome(stat_summary(&p(path))),
        Op::Readlink { path } => {
            outcome(sys::readlink(&p(path)).map(|t| String::from_utf8_lossy(&t).into_owned()))
        }
    }
}

/// Everything about a tree that must match: per entry (sorted, not following symlinks) its
/// stat summary, contents or target, and xattrs.
pub(crate) fn snapshot(root: &Path) -> Vec<String> {
    let mut out = Vec::new();
    walk(root, "", &mut out);
    out
}

fn walk(root: &Path, rel: &str, out: &mut Vec<String>) {
    let dir = if rel.is_empty() {
        root.to_path_buf()
    } else {
        root.join(rel)
    };
    let names = match sys::list(&dir) {
        Ok(n) => n,
        Err(e) => {
            out.push(format!("{rel}/: cannot list: {e}"));
            return;
        }
    };
    for name in names {
        let rel = if rel.is_empty() {
            name
        } else {
            format!("{rel}/{name}")
        };
        let path = root.join(&rel);
        let summary = outcome(stat_summary(&path));
        let st = sys::lstat(&path);
        let kind = st.map(|s| sys::kind(s.st_mode)).unwrap_or("gone");
        let detail = match kind {
            "file" => outcome(sys::io_errno(std::fs::read(&path)).map(|d| (d.len(), fnv(&d)))),
            "symlink" => {
                outcome(sys::readlink(&path).map(|t| String::from_utf8_lossy(&t).into_owned()))
            }
            _ => String::new(),
        };
        let xattrs = if kind == "symlink" {
            String::new()
        } else {
            match sys::listxattr(&path) {
                Ok(names) => names
                    .iter()
                    .map(|n| {
                        let v = sys::getxattr(&path, n).map(|v| fnv(&v));
                        format!("{n}={}", outcome(v))
                    })
                    .collect::<Vec<_>>()
                    .join(","),
                Err(e) => e.name(),
            }
        };
        out.push(format!("{rel}: {summary} {detail} xattrs[{xattrs}]"));
        if kind == "dir" {
            walk(root, &rel, out);
        }
    }
}
