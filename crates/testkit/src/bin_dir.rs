//! Where the ElkFS binaries under test are: next to each other in the cargo target directory, which
//! is the parent of `deps/` where cargo puts test executables.

use std::ffi::OsString;
use std::path::{Path, PathBuf};

use crate::error::StartError;

/// Environment variable that overrides the directory holding the ElkFS binaries.
pub const BIN_DIR_ENV: &str = "ELKFS_BIN_DIR";

/// File name of the master binary.
pub const MASTER_BIN: &str = "elkfs-master";
/// File name of the chunkserver binary.
pub const CHUNKSERVER_BIN: &str = "elkfs-chunkserver";
/// File name of the metalogger binary.
pub const METALOGGER_BIN: &str = "elkfs-metalogger";
/// File name of the FUSE mount binary.
pub const MOUNT_BIN: &str = "elkfs-mount";
/// File name of the command-line tool.
pub const CLI_BIN: &str = "elkfs";

/// The directory holding the ElkFS binaries: `$ELKFS_BIN_DIR` if set, else `target/<profile>/`
/// found from the running test executable.
pub fn bin_dir() -> Result<PathBuf, StartError> {
    let exe = std::env::current_exe()
        .map_err(|e| StartError::io("finding the test executable (current_exe)", e))?;
    Ok(resolve_bin_dir(std::env::var_os(BIN_DIR_ENV), &exe))
}

/// The path of one ElkFS binary, or an error telling how to build it.
pub fn binary(name: &str) -> Result<PathBuf, StartError> {
    let dir = bin_dir()?;
    let path = dir.join(name);
    if path.is_file() {
        Ok(path)
    } else {
        Err(StartError::BinaryMissing {
            binary: name.to_owned(),
            dir,
        })
    }
}

/// Checks that the binaries a [`Cluster`](crate::Cluster) starts (master, chunkserver, mount)
/// are built; tests of the harness itself use it to skip when they are not.
pub fn cluster_binaries_available() -> Result<(), StartError> {
    for name in [MASTER_BIN, CHUNKSERVER_BIN, MOUNT_BIN] {
        binary(name)?;
    }
    Ok(())
}

/// The rule behind [`bin_dir`], apart from the environment so it can be tested.
fn resolve_bin_dir(env_override: Option<OsString>, exe: &Path) -> PathBuf {
    if let Some(dir) = env_override.filter(|d| !d.is_empty()) {
        return PathBuf::from(dir);
    }
    let exe_dir = exe.parent().unwrap_or(Path::new("."));
    match exe_dir.parent() {
        Some(parent) if exe_dir.file_name().is_some_and(|n| n == "deps") => parent.to_path_buf(),
        _ => exe_dir.to_path_buf(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_executable_in_deps_uses_the_profile_dir() {
        let exe = Path::new("/w/target/debug/deps/harness-0123abcd");
        assert_eq!(resolve_bin_dir(None, exe), Path::new("/w/target/debug"));
    }

    #[test]
    fn executable_outside_deps_uses_its_own_dir() {
        let exe = Path::new("/w/target/release/examples/demo");
        assert_eq!(
            resolve_bin_dir(None, exe),
            Path::new("/w/target/release/examples")
        );
    }

    #[test]
    fn env_override_wins_unless_empty() {
        let exe = Path::new("/w/target/debug/deps/t");
        assert_eq!(
            resolve_bin_dir(Some("/opt/elkfs/bin".into()), exe),
            Path::new("/opt/elkfs/bin")
        );
        assert_eq!(
            resolve_bin_dir(Some("".into()), exe),
            Path::new("/w/target/debug")
        );
    }

    #[test]
    fn missing_binary_error_says_how_to_build() {
        let err = StartError::BinaryMissing {
            binary: MASTER_BIN.into(),
            dir: "/w/target/debug".into(),
        };
        assert!(err.to_string().contains("cargo build --workspace --bins"));
    }
}
