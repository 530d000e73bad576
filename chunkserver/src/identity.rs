//! The chunkserver's identity: a random id kept in its first data directory, so the master
//! recognises it across restarts (and can wait for it after a planned stop).

use std::path::Path;

use anyhow::Context;

/// Name of the file holding the id, in the first data directory.
pub const ID_FILE: &str = ".elkfs-server-id";

/// Reads the id from `dir`, creating it on first start.
pub fn load_or_create(dir: &Path) -> anyhow::Result<u64> {
    let path = dir.join(ID_FILE);
    if let Ok(text) = std::fs::read_to_string(&path) {
        if let Ok(id) = u64::from_str_radix(text.trim(), 16) {
            return Ok(id);
        }
        tracing::warn!(path = %path.display(), "server id file is damaged; making a new id");
    }
    let id: u64 = rand::random::<u64>().max(1);
    elkfs_common::daemon::write_ready_file(&path, &format!("{id:016x}"))
        .with_context(|| format!("cannot store the server id in {}", path.display()))?;
    Ok(id)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_id_survives_a_restart() {
        let dir = tempfile::tempdir().unwrap();
        let first = load_or_create(dir.path()).unwrap();
        assert_eq!(load_or_create(dir.path()).unwrap(), first);
        std::fs::write(dir.path().join(ID_FILE), "garbage").unwrap();
        assert_ne!(load_or_create(dir.path()).unwrap(), 0);
    }
}
