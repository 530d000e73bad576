//! The cluster key: the secret that the master, chunkservers and metaloggers of one cluster
//! share and clients never see. It admits chunkservers and metaloggers (see
//! [`crate::auth::cluster_proof`]) and signs chunk capabilities. The master creates it in its
//! data directory on first start; other nodes are given a copy of that file.

use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// Name of the key file in a master's (or metalogger's) data directory.
pub const KEY_FILE: &str = "cluster.key";

/// Why a key file could not be used.
#[derive(Debug, thiserror::Error)]
pub enum KeyFileError {
    /// There is no file at the path.
    #[error("no cluster key at {0}")]
    Missing(PathBuf),
    /// The file holds something other than a key.
    #[error("{0} does not hold a cluster key (64 hex digits)")]
    Malformed(PathBuf),
    /// Reading or writing it failed.
    #[error("cannot use the cluster key file {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// What the OS said.
        #[source]
        source: std::io::Error,
    },
}

/// The secret every daemon of one cluster holds (master, chunkservers, metaloggers; never
/// clients): it admits chunkservers and metaloggers and signs chunk capabilities.
#[derive(Clone, PartialEq, Eq)]
pub struct ClusterKey([u8; 32]);

impl std::fmt::Debug for ClusterKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ClusterKey(..)")
    }
}

impl ClusterKey {
    /// The key made of `bytes`.
    pub fn from_bytes(bytes: [u8; 32]) -> ClusterKey {
        ClusterKey(bytes)
    }

    /// The key's bytes.
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// The key as 64 lowercase hex digits (how key files hold it).
    pub fn to_hex(&self) -> String {
        self.0.iter().map(|b| format!("{b:02x}")).collect()
    }

    /// Parses 64 hex digits (surrounding whitespace allowed).
    pub fn from_hex(text: &str) -> Option<ClusterKey> {
        let text = text.trim();
        if text.len() != 64 || !text.is_ascii() {
            return None;
        }
        let mut bytes = [0u8; 32];
        for (i, byte) in bytes.iter_mut().enumerate() {
            *byte = u8::from_str_radix(&text[2 * i..2 * i + 2], 16).ok()?;
        }
        Some(ClusterKey(bytes))
    }
}

impl ClusterKey {
    /// Reads the key file at `path`.
    pub fn read_file(path: &Path) -> Result<ClusterKey, KeyFileError> {
        let text = match std::fs::read_to_string(path) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(KeyFileError::Missing(path.to_path_buf()));
            }
            Err(source) => {
                return Err(KeyFileError::Io {
                    path: path.to_path_buf(),
                    source,
                });
            }
        };
        ClusterKey::from_hex(&text).ok_or_else(|| KeyFileError::Malformed(path.to_path_buf()))
    }

    /// Whether the key file at `path` can be read by other users than its owner (a key that
    /// leaked lets anyone join the cluster and sign capabilities).
    pub fn file_is_exposed(path: &Path) -> bool {
        std::fs::metadata(path).is_ok_and(|m| m.permissions().mode() & 0o077 != 0)
    }

    /// Writes this key to a new file at `path`, readable by its owner only, and makes it
    /// durable; an existing file is left alone (error).
    pub fn write_new_file(&self, path: &Path) -> Result<(), KeyFileError> {
        let io = |source| KeyFileError::Io {
            path: path.to_path_buf(),
            source,
        };
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(path)
            .map_err(io)?;
        file.write_all(format!("{}\n", self.to_hex()).as_bytes())
            .and_then(|()| file.sync_all())
            .map_err(io)?;
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::File::open(dir)
                .and_then(|d| d.sync_all())
                .map_err(io)?;
        }
        Ok(())
    }

    /// Reads a chunkserver's or metalogger's copy of the key; the error says what to do, and a
    /// copy that other users can read is warned about.
    pub fn read_member_copy(path: &Path) -> Result<ClusterKey, String> {
        let key = ClusterKey::read_file(path).map_err(|e| {
            format!(
                "{e}: copy the master's cluster key (the file {KEY_FILE} in its data directory) \
                 to {} or give its path with --cluster-key",
                path.display()
            )
        })?;
        warn_if_exposed(path);
        Ok(key)
    }

    /// The key in `path`, or `fresh` written there when there is no file yet; says which.
    pub fn load_or_create(
        path: &Path,
        fresh: impl FnOnce() -> [u8; 32],
    ) -> Result<(ClusterKey, bool), KeyFileError> {
        match ClusterKey::read_file(path) {
            Err(KeyFileError::Missing(_)) => {
                let key = ClusterKey::from_bytes(fresh());
                match key.write_new_file(path) {
                    Ok(()) => Ok((key, true)),
                    // Another process made it meanwhile: use theirs.
                    Err(KeyFileError::Io { source, .. })
                        if source.kind() == std::io::ErrorKind::AlreadyExists =>
                    {
                        Ok((ClusterKey::read_file(path)?, false))
                    }
                    Err(e) => Err(e),
                }
            }
            other => other.map(|key| (key, false)),
        }
    }
}

/// Warns when the key file at `path` can be read by other users than its owner.
pub fn warn_if_exposed(path: &Path) {
    if ClusterKey::file_is_exposed(path) {
        tracing::warn!(key = %path.display(), "the cluster key file can be read by other users; chmod 600 it");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cluster_keys_round_trip_through_hex() {
        let key = ClusterKey::from_bytes(std::array::from_fn(|i| i as u8 * 7));
        assert_eq!(
            ClusterKey::from_hex(&format!("{}\n", key.to_hex())),
            Some(key.clone())
        );
        assert_eq!(ClusterKey::from_hex("abc"), None);
        assert_eq!(ClusterKey::from_hex(&"zz".repeat(32)), None);
        assert!(!format!("{key:?}").contains(&key.to_hex()[..8]));
    }

    #[test]
    fn a_key_file_is_made_once_private_and_read_back() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(KEY_FILE);
        assert!(matches!(
            ClusterKey::read_file(&path),
            Err(KeyFileError::Missing(_))
        ));
        let (made, created) = ClusterKey::load_or_create(&path, || [5; 32]).unwrap();
        assert!(created);
        assert!(!ClusterKey::file_is_exposed(&path));
        let (again, created) = ClusterKey::load_or_create(&path, || [6; 32]).unwrap();
        assert!(!created);
        assert_eq!(made, again);
        std::fs::write(&path, "not a key").unwrap();
        assert!(matches!(
            ClusterKey::read_file(&path),
            Err(KeyFileError::Malformed(_))
        ));
    }
}
