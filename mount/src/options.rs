//! The mount's command line as `mount(8)` and fstab pass it: `[HOST[:PORT]][:/SUBDIR] DIR -o OPTS`.

use std::path::PathBuf;

use elkfs_common::defaults;

/// What to mount where, and how.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MountSpec {
    /// The master, `HOST[:PORT]`.
    pub master: String,
    /// The subdirectory of the namespace to mount (`/` for all of it).
    pub subdir: String,
    /// Where to mount it.
    pub mount_point: PathBuf,
    /// Mount read-only.
    pub read_only: bool,
    /// Let other users than the mounting one use the mount.
    pub allow_other: bool,
    /// Stay in the foreground.
    pub foreground: bool,
    /// How long operations wait for an unreachable master (restart, failover) before they
    /// fail with EIO (`-o master_timeout=SECS`).
    pub master_timeout: std::time::Duration,
    /// The export's password (`-o password=PASS`); visible in `ps`, so prefer a file.
    pub password: Option<String>,
    /// A file holding the password (`-o passwordfile=FILE`, mode 0600 or stricter).
    pub password_file: Option<PathBuf>,
    /// The local address to connect to the master from (`-o bind=IP`).
    pub bind: Option<std::net::IpAddr>,
    /// Encrypt with TLS, trusting the cluster authority whose certificate is in this file
    /// (`-o tls`, which takes /etc/elkfs/ca.crt, or `-o tlsca=FILE`).
    pub tls_ca: Option<PathBuf>,
    /// How far ahead of a sequential reader the kernel reads, in KiB (`-o readahead_kb=N`; 0
    /// leaves the kernel's own setting).
    pub readahead_kb: u32,
    /// Threads of the async runtime that talks to the master and chunkservers
    /// (`-o workers=N`).
    pub workers: usize,
    /// Which reads through this mount move access times (`-o noatime`, `-o nodiratime`).
    pub atime: AtimeUpdates,
}

/// Which reads through a mount move access times (the master applies `relatime` to those).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AtimeUpdates {
    /// Reads of files (not with `-o noatime`).
    pub files: bool,
    /// Listings of directories (not with `-o noatime` or `-o nodiratime`).
    pub dirs: bool,
}

/// A command line that cannot be mounted, with the reason.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum OptionError {
    /// A `-o` option this filesystem does not know.
    #[error("unknown mount option '{0}'")]
    Unknown(String),
    /// An option whose value does not parse.
    #[error("mount option '{0}' needs {1}")]
    BadValue(String, &'static str),
    /// The source is not `[HOST[:PORT]][:/SUBDIR]`.
    #[error("'{0}' is not a source of the form [HOST[:PORT]][:/SUBDIR]")]
    BadSource(String),
}

/// The largest read-ahead accepted (1 GiB): more would only tie up page cache.
const MAX_READAHEAD_KB: u32 = 1024 * 1024;

/// The most runtime threads a mount takes (`-o workers`).
const MAX_WORKERS: usize = 64;

/// Generic options `mount(8)` and fstab pass that concern the kernel or mount itself, not us.
const GENERIC: &[&str] = &[
    "rw",
    "defaults",
    "dev",
    "nodev",
    "suid",
    "nosuid",
    "exec",
    "noexec",
    "async",
    "sync",
    "auto",
    "noauto",
    "user",
    "nouser",
    "users",
    "owner",
    "_netdev",
    "nofail",
    "default_permissions",
    "loud",
    "silent",
];

/// Splits a source into master address and subdirectory: `host:/sub`, `host:9421:/sub`,
/// `host`, `:/sub` and the empty string (the default master) are all accepted.
pub fn parse_source(source: &str) -> Result<(String, String), OptionError> {
    let default_master = || {
        std::env::var(defaults::MASTER_ENV).unwrap_or_else(|_| defaults::MASTER_ADDR.to_string())
    };
    let (master, subdir) = match source.find(":/") {
        Some(i) => (&source[..i], &source[i + 1..]),
        None if source.starts_with('/') => ("", source),
        None => (source, "/"),
    };
    if master.contains('/') {
        return Err(OptionError::BadSource(source.to_string()));
    }
    let master = if master.is_empty() {
        default_master()
    } else {
        master.to_string()
    };
    Ok((master, subdir.to_string()))
}

/// Builds the spec from the source, mount point, `-o` option strings and `-f`.
pub fn parse(
    source: &str,
    mount_point: PathBuf,
    options: &[String],
    foreground: bool,
) -> Result<MountSpec, OptionError> {
    let (master, mut subdir) = parse_source(source)?;
    let mut spec = MountSpec {
        master,
        subdir: String::new(),
        mount_point,
        read_only: false,
        allow_other: false,
        foreground,
        master_timeout: defaults::MASTER_TIMEOUT,
        password: None,
        password_file: None,
        bind: None,
        tls_ca: None,
        readahead_kb: defaults::READAHEAD_KB,
        workers: defaults::MOUNT_WORKERS,
        atime: AtimeUpdates {
            files: true,
            dirs: true,
        },
    };
    for opt in options
        .iter()
        .flat_map(|o| o.split(','))
        .filter(|o| !o.is_empty())
    {
        let (key, value) = match opt.split_once('=') {
            Some((k, v)) => (k, Some(v)),
            None => (opt, None),
        };
        match (key, value) {
            ("ro", None) => spec.read_only = true,
            ("rw", None) => spec.read_only = false,
            ("allow_other", None) => spec.allow_other = true,
            ("subdir", Some(dir)) => subdir = dir.to_string(),
            ("master", Some(m)) => spec.master = m.to_string(),
            ("master_timeout", Some(secs)) => {
                spec.master_timeout = secs
                    .parse::<u64>()
                    .ok()
                    .filter(|&s| s > 0)
                    .map(std::time::Duration::from_secs)
                    .ok_or_else(|| {
                        OptionError::BadValue(opt.to_string(), "a whole number of seconds above 0")
                    })?;
            }
            ("password", Some(p)) if !p.is_empty() => spec.password = Some(p.to_string()),
            ("passwordfile", Some(f)) if !f.is_empty() => spec.password_file = Some(f.into()),
            ("password" | "passwordfile", _) => {
                return Err(OptionError::BadValue(opt.to_string(), "a value"));
            }
            ("bind", Some(ip)) => {
                spec.bind = Some(ip.parse().map_err(|_| {
                    OptionError::BadValue(opt.to_string(), "an IP address of this host")
                })?);
            }
            ("readahead_kb", Some(kib)) => {
                spec.readahead_kb = kib
                    .parse::<u32>()
                    .ok()
                    .filter(|&k| k <= MAX_READAHEAD_KB)
                    .ok_or_else(|| {
                        OptionError::BadValue(opt.to_string(), "a number of KiB from 0 to 1048576")
                    })?;
            }
            ("workers", Some(n)) => {
                spec.workers = n
                    .parse::<usize>()
                    .ok()
                    .filter(|n| (1..=MAX_WORKERS).contains(n))
                    .ok_or_else(|| {
                        OptionError::BadValue(opt.to_string(), "a number of threads from 1 to 64")
                    })?;
            }
            ("tls", None) => {
                spec.tls_ca
                    .get_or_insert_with(|| defaults::TLS_CA_FILE.into());
            }
            ("tlsca", Some(f)) if !f.is_empty() => spec.tls_ca = Some(f.into()),
            ("tls" | "tlsca", _) => {
                return Err(OptionError::BadValue(
                    opt.to_string(),
                    "no value (tls) or a file (tlsca=FILE)",
                ));
            }
            ("noatime", None) => {
                spec.atime = AtimeUpdates {
                    files: false,
                    dirs: false,
                }
            }
            ("nodiratime", None) => spec.atime.dirs = false,
            ("atime" | "relatime" | "norelatime" | "strictatime", None) => {
                spec.atime = AtimeUpdates {
                    files: true,
                    dirs: true,
                }
            }
            ("diratime", None) => spec.atime.dirs = true,
            (k, None) if GENERIC.contains(&k) => {}
            ("comment" | "x-systemd.automount", _) => {}
            (k, _) if k.starts_with("x-") => {}
            _ => return Err(OptionError::Unknown(opt.to_string())),
        }
    }
    spec.subdir = if subdir.starts_with('/') {
        subdir
    } else {
        format!("/{subdir}")
    };
    Ok(spec)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sources_split_into_master_and_subdir() {
        assert_eq!(
            parse_source("10.0.0.1:/").unwrap(),
            ("10.0.0.1".into(), "/".into())
        );
        assert_eq!(
            parse_source("h:9500:/a/b").unwrap(),
            ("h:9500".into(), "/a/b".into())
        );
        assert_eq!(
            parse_source("h:9500").unwrap(),
            ("h:9500".into(), "/".into())
        );
        assert_eq!(parse_source(":/x").unwrap().1, "/x");
        assert!(parse_source("a/b:/x").is_err());
    }

    #[test]
    fn fstab_options_are_understood_and_unknown_ones_refused() {
        let spec = parse(
            "h:/",
            "/mnt".into(),
            &["rw,nosuid,nodev,relatime,_netdev,ro".into()],
            false,
        )
        .unwrap();
        assert!(spec.read_only);
        assert_eq!(spec.subdir, "/");
        let spec = parse("h:/", "/mnt".into(), &["subdir=proj".into()], true).unwrap();
        assert_eq!(spec.subdir, "/proj");
        assert_eq!(
            parse("h", "/mnt".into(), &["frobnicate".into()], false),
            Err(OptionError::Unknown("frobnicate".into()))
        );
    }

    #[test]
    fn the_master_timeout_is_whole_seconds_above_zero() {
        let spec = parse("h", "/mnt".into(), &["master_timeout=5".into()], false).unwrap();
        assert_eq!(spec.master_timeout, std::time::Duration::from_secs(5));
        let spec = parse("h", "/mnt".into(), &[], false).unwrap();
        assert_eq!(spec.master_timeout, defaults::MASTER_TIMEOUT);
        for bad in [
            "master_timeout=0",
            "master_timeout=1.5",
            "master_timeout=soon",
        ] {
            assert!(
                matches!(
                    parse("h", "/mnt".into(), &[bad.into()], false),
                    Err(OptionError::BadValue(..))
                ),
                "{bad}"
            );
        }
    }

    #[test]
    fn noatime_and_nodiratime_turn_access_times_off_and_the_last_option_wins() {
        let atime = |opts: &[&str]| {
            let opts: Vec<String> = opts.iter().map(|o| o.to_string()).collect();
            let a = parse("h", "/mnt".into(), &opts, false).unwrap().atime;
            (a.files, a.dirs)
        };
        assert_eq!(atime(&[]), (true, true));
        assert_eq!(atime(&["noatime"]), (false, false));
        assert_eq!(atime(&["rw,nodiratime"]), (true, false));
        assert_eq!(atime(&["noatime,relatime"]), (true, true));
        assert_eq!(atime(&["relatime", "noatime"]), (false, false));
    }

    #[test]
    fn workers_are_one_to_sixty_four_threads() {
        let spec = parse("h", "/mnt".into(), &[], false).unwrap();
        assert_eq!(spec.workers, defaults::MOUNT_WORKERS);
        let spec = parse("h", "/mnt".into(), &["workers=4".into()], false).unwrap();
        assert_eq!(spec.workers, 4);
        for bad in ["workers=0", "workers=65", "workers=two", "workers"] {
            assert!(
                matches!(
                    parse("h", "/mnt".into(), &[bad.into()], false),
                    Err(OptionError::BadValue(..) | OptionError::Unknown(..))
                ),
                "{bad}"
            );
        }
    }

    #[test]
    fn the_readahead_is_kib_up_to_a_gib() {
        let spec = parse("h", "/mnt".into(), &[], false).unwrap();
        assert_eq!(spec.readahead_kb, defaults::READAHEAD_KB);
        let spec = parse("h", "/mnt".into(), &["readahead_kb=0".into()], false).unwrap();
        assert_eq!(spec.readahead_kb, 0);
        let spec = parse("h", "/mnt".into(), &["readahead_kb=2048".into()], false).unwrap();
        assert_eq!(spec.readahead_kb, 2048);
        for bad in ["readahead_kb=-1", "readahead_kb=4M", "readahead_kb=1048577"] {
            assert!(
                matches!(
                    parse("h", "/mnt".into(), &[bad.into()], false),
                    Err(OptionError::BadValue(..))
                ),
                "{bad}"
            );
        }
    }

    #[test]
    fn passwords_and_the_local_address_are_options() {
        let opts = ["passwordfile=/etc/elkfs/p,bind=127.0.0.2".into()];
        let spec = parse("h", "/mnt".into(), &opts, false).unwrap();
        assert_eq!(spec.password_file, Some(PathBuf::from("/etc/elkfs/p")));
        assert_eq!(spec.bind, Some("127.0.0.2".parse().unwrap()));
        let spec = parse("h", "/mnt".into(), &["password=s3cret".into()], false).unwrap();
        assert_eq!(spec.password.as_deref(), Some("s3cret"));
        for bad in ["password=", "passwordfile", "bind=here"] {
            assert!(
                matches!(
                    parse("h", "/mnt".into(), &[bad.into()], false),
                    Err(OptionError::BadValue(..))
                ),
                "{bad}"
            );
        }
        let spec = parse("h", "/mnt".into(), &["tls".into()], false).unwrap();
        assert_eq!(spec.tls_ca, Some(PathBuf::from(defaults::TLS_CA_FILE)));
        let spec = parse("h", "/mnt".into(), &["tlsca=/k/ca.crt,tls".into()], false).unwrap();
        assert_eq!(spec.tls_ca, Some(PathBuf::from("/k/ca.crt")));
        assert!(parse("h", "/mnt".into(), &["tls=yes".into()], false).is_err());
    }
}
