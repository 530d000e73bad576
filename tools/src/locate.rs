//! Finding the cluster behind a path: the mount answers the `elkfs.info` extended attribute on
//! every path with the master's address and the inode's number there. For paths that no longer
//! exist (the trash) the nearest existing directory is asked, and the path's place in the
//! master's namespace is worked out from the mount's root.

use std::collections::HashMap;
use std::ffi::CString;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Component, Path, PathBuf};
use std::sync::{Mutex, OnceLock};

use elkfs_client::mount_info::{MountInfo, XATTR};

use crate::failure::Failure;

/// What the mount says about `path` (symbolic links are followed).
pub fn mount_info(path: &Path) -> Result<MountInfo, Failure> {
    let c_path =
        CString::new(path.as_os_str().as_bytes()).map_err(|_| Failure::from_errno(libc::EINVAL))?;
    let c_name = CString::new(XATTR).map_err(|_| Failure::from_errno(libc::EINVAL))?;
    let mut buf = vec![0u8; 4096];
    loop {
        // SAFETY: both strings are NUL-terminated and `buf` is writable for its length.
        let n = unsafe {
            libc::getxattr(
                c_path.as_ptr(),
                c_name.as_ptr(),
                buf.as_mut_ptr().cast(),
                buf.len(),
            )
        };
        if n >= 0 {
            buf.truncate(n as usize);
            break;
        }
        let errno = std::io::Error::last_os_error().raw_os_error().unwrap_or(0);
        match errno {
            libc::ERANGE if buf.len() < 1 << 20 => buf.resize(buf.len() * 4, 0),
            libc::ENODATA | libc::EOPNOTSUPP | libc::ENOSYS => return Err(Failure::not_elkfs()),
            _ => return Err(Failure::from_errno(errno)),
        }
    }
    let text = String::from_utf8_lossy(&buf);
    let info = MountInfo::parse(&text).map_err(|_| Failure::not_elkfs())?;
    if let Some(ca) = &info.tls_ca {
        tls_masters()
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(info.master.clone(), PathBuf::from(ca));
    }
    Ok(info)
}

/// Masters that a mount this command looked at reaches over TLS, with the certificate it trusts.
fn tls_masters() -> &'static Mutex<HashMap<String, PathBuf>> {
    static MASTERS: OnceLock<Mutex<HashMap<String, PathBuf>>> = OnceLock::new();
    MASTERS.get_or_init(Default::default)
}

/// The cluster certificate to reach `master` over TLS with: the one its mount uses, else
/// `$ELKFS_TLS_CA` (for `--master`); `None` for plain TCP.
pub fn tls_ca_for(master: &str) -> Option<PathBuf> {
    let learned = tls_masters()
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .get(master)
        .cloned();
    learned.or_else(|| {
        std::env::var_os(TLS_CA_ENV)
            .filter(|v| !v.is_empty())
            .map(PathBuf::from)
    })
}

/// The environment variable naming the cluster certificate for masters given by `--master`.
pub const TLS_CA_ENV: &str = "ELKFS_TLS_CA";

/// The master a cluster-wide command (`status`, `trash`) talks to: `--master` if given, else
/// the cluster of `path` if given, else that of the current directory when it is on ElkFS, else
/// `$ELKFS_MASTER`, else `localhost:9421`.
pub fn cluster_master(flag: Option<&str>, path: Option<&Path>) -> Result<String, Failure> {
    if let Some(master) = flag {
        return Ok(master.to_string());
    }
    if let Some(path) = path {
        return Ok(mount_info(path)?.master);
    }
    if let Ok(info) = mount_info(Path::new(".")) {
        return Ok(info.master);
    }
    match std::env::var(elkfs_common::defaults::MASTER_ENV) {
        Ok(master) if !master.is_empty() => Ok(master),
        _ => Ok(elkfs_common::defaults::MASTER_ADDR.to_string()),
    }
}

/// Where a path (existing or not) is in the master's namespace, and the mount showing it.
#[derive(Clone, Debug)]
pub struct Place {
    /// What the mount says about the nearest existing directory at or above the path.
    pub info: MountInfo,
    /// The path from the root of the master's namespace (`/` for the root).
    pub namespace_path: String,
}

impl Place {
    /// How to show `namespace_path` (this place or below it) to a user who named this place
    /// `given`: `given` followed by the rest of the path (`t` and `/t/x/f` give `t/x/f`).
    pub fn shown(&self, given: &str, namespace_path: &str) -> Option<String> {
        let rest = strip_dir_prefix(namespace_path, &self.namespace_path)?;
        let rest = rest.trim_start_matches('/');
        Some(if rest.is_empty() {
            given.to_string()
        } else if given.ends_with('/') {
            format!("{given}{rest}")
        } else {
            format!("{given}/{rest}")
        })
    }

    /// Whether `namespace_path` is this place or below it.
    pub fn contains(&self, namespace_path: &str) -> bool {
        strip_dir_prefix(namespace_path, &self.namespace_path).is_some()
    }
}

/// Works out where `path` is, even if it does not exist any more.
pub fn place(path: &Path) -> Result<Place, Failure> {
    let absolute = if path.is_absolute() {
        path.to_path_buf()
    } else {
        std::env::current_dir()?.join(path)
    };
    let absolute = lexically_normal(&absolute);
    let mut existing = absolute.as_path();
    let mut missing: Vec<&std::ffi::OsStr> = Vec::new();
    while std::fs::metadata(existing).is_err() {
        match (existing.parent(), existing.file_name()) {
            (Some(parent), Some(name)) => {
                missing.push(name);
                existing = parent;
            }
            _ => return Err(Failure::from_errno(libc::ENOENT)),
        }
    }
    let existing = existing.canonicalize()?;
    let info = mount_info(&existing)?;
    let mount_root = mount_root_of(&existing)?;
    let mut relative = existing
        .strip_prefix(&mount_root)
        .map(Path::to_path_buf)
        .unwrap_or_default();
    for name in missing.iter().rev() {
        relative.push(name);
    }
    let mut namespace_path = normalize_subdir(&info.subdir);
    for part in relative.components() {
        if namespace_path != "/" {
            namespace_path.push('/');
        }
        namespace_path.push_str(&part.as_os_str().to_string_lossy());
    }
    Ok(Place {
        info,
        namespace_path,
    })
}

/// The highest directory at or above `path` on the same filesystem: the mount's root.
fn mount_root_of(path: &Path) -> Result<PathBuf, Failure> {
    let dev = std::fs::metadata(path)?.dev();
    let mut root = path.to_path_buf();
    while let Some(parent) = root.parent() {
        match std::fs::metadata(parent) {
            Ok(m) if m.dev() == dev => root = parent.to_path_buf(),
            _ => break,
        }
    }
    Ok(root)
}

/// `subdir` as `/` or `/a/b` (no trailing slash).
fn normalize_subdir(subdir: &str) -> String {
    let trimmed = subdir.trim_end_matches('/');
    if trimmed.is_empty() {
        "/".to_string()
    } else if trimmed.starts_with('/') {
        trimmed.to_string()
    } else {
        format!("/{trimmed}")
    }
}

/// `path` below `dir` (`""` for `dir` itself), or `None` when it is elsewhere.
fn strip_dir_prefix<'a>(path: &'a str, dir: &str) -> Option<&'a str> {
    if dir == "/" {
        return Some(path);
    }
    let rest = path.strip_prefix(dir)?;
    (rest.is_empty() || rest.starts_with('/')).then_some(rest)
}

/// Removes `.` and resolves `..` by name (the path may not exist, so it cannot be resolved on
/// disk).
fn lexically_normal(path: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for part in path.components() {
        match part {
            Component::CurDir => {}
            Component::ParentDir => {
                out.pop();
            }
            other => out.push(other.as_os_str()),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn place_at(subdir: &str, namespace_path: &str) -> Place {
        Place {
            info: MountInfo {
                master: "m".into(),
                subdir: subdir.into(),
                inode: elkfs_proto::InodeId(1),
                tls_ca: None,
            },
            namespace_path: namespace_path.into(),
        }
    }

    #[test]
    fn namespace_paths_show_as_the_user_named_them() {
        let p = place_at("/", "/d");
        assert_eq!(p.shown("d", "/d/a/b").as_deref(), Some("d/a/b"));
        assert_eq!(p.shown("./d/", "/d/a").as_deref(), Some("./d/a"));
        assert_eq!(p.shown("d", "/d").as_deref(), Some("d"));
        assert_eq!(p.shown("d", "/dd/a"), None);
        assert!(p.contains("/d/a") && p.contains("/d") && !p.contains("/dd/a"));
        let p = place_at("/sub/", "/sub/x");
        assert_eq!(p.shown(".", "/sub/x/y").as_deref(), Some("./y"));
        assert!(place_at("/", "/").contains("/anything"));
    }

    #[test]
    fn dot_dot_is_resolved_by_name() {
        assert_eq!(
            lexically_normal(Path::new("/a/./b/../c")),
            PathBuf::from("/a/c")
        );
    }
}
