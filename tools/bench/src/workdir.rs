//! The run's work directory: both clusters' data, mounts and logs. After a successful run it is
//! removed; after a failed one only the logs and configs are kept, for a look at what happened.
//! Nothing is removed while something under it is still mounted.

use std::path::{Path, PathBuf};

use anyhow::Context;

/// Subdirectories kept after a failed run.
const KEPT_ON_FAILURE: [&str; 2] = ["logs", "etc"];

/// The work directory, cleaned up on drop.
pub struct WorkDir {
    path: PathBuf,
    keep: bool,
    succeeded: bool,
}

impl WorkDir {
    /// Creates `elkfs-bench-XXXXXX` in `parent` (default: the system temp dir); `keep` keeps all of
    /// it at the end.
    pub fn create(parent: Option<&Path>, keep: bool) -> anyhow::Result<Self> {
        let parent = parent.map_or_else(std::env::temp_dir, Path::to_path_buf);
        std::fs::create_dir_all(&parent)
            .with_context(|| format!("creating {}", parent.display()))?;
        let dir = tempfile::Builder::new()
            .prefix("elkfs-bench-")
            .tempdir_in(&parent)
            .with_context(|| format!("creating a work directory in {}", parent.display()))?
            .keep();
        // Canonical, so mountpoints under it compare equal to what mountinfo lists.
        let path = dir
            .canonicalize()
            .with_context(|| format!("resolving {}", dir.display()))?;
        Ok(WorkDir {
            path,
            keep,
            succeeded: false,
        })
    }

    /// The directory.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Marks the run as successful: the directory is removed at the end (unless kept).
    pub fn succeeded(&mut self) {
        self.succeeded = true;
    }

    fn still_mounted(&self) -> bool {
        elkfs_common::mount_table::read()
            .unwrap_or_default()
            .iter()
            .any(|m| m.mount_point.starts_with(&self.path))
    }

    fn remove_data(&self) -> std::io::Result<()> {
        // <work>/<cluster>/<part>: keep the logs and configs of each cluster.
        for cluster in std::fs::read_dir(&self.path)?.flatten() {
            let cluster = cluster.path();
            if !cluster.is_dir() {
                continue;
            }
            for part in std::fs::read_dir(&cluster)?.flatten() {
                let keep = KEPT_ON_FAILURE
                    .iter()
                    .any(|k| part.file_name().to_string_lossy() == *k);
                if keep {
                    continue;
                }
                let path = part.path();
                if path.is_dir() {
                    std::fs::remove_dir_all(&path)?;
                } else {
                    std::fs::remove_file(&path)?;
                }
            }
        }
        Ok(())
    }
}

impl Drop for WorkDir {
    fn drop(&mut self) {
        let path = self.path.display();
        if self.still_mounted() {
            eprintln!("elkfs-bench: leaving {path} in place: something under it is still mounted");
        } else if self.keep {
            eprintln!("elkfs-bench: work directory kept: {path}");
        } else if self.succeeded {
            if let Err(e) = std::fs::remove_dir_all(&self.path) {
                eprintln!("elkfs-bench: could not remove {path}: {e}");
            }
        } else {
            match self.remove_data() {
                Ok(()) => eprintln!("elkfs-bench: logs kept in {path}"),
                Err(e) => eprintln!("elkfs-bench: could not clean {path}: {e}"),
            }
        }
    }
}
