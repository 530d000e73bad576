//! Loading a daemon's TOML configuration file; command-line flags override what it says.

use std::path::Path;

use anyhow::Context;
use serde::de::DeserializeOwned;

/// Reads `path` as TOML into `T` (whose fields all have defaults and which refuses unknown keys),
/// or returns `T::default()` when no file is given.
pub fn load<T: DeserializeOwned + Default>(path: Option<&Path>) -> anyhow::Result<T> {
    let Some(path) = path else {
        return Ok(T::default());
    };
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read config file {}", path.display()))?;
    toml::from_str(&text).with_context(|| format!("invalid config file {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(serde::Deserialize, Default, Debug)]
    #[serde(default, deny_unknown_fields)]
    struct Sample {
        port: u16,
    }

    #[test]
    fn unknown_keys_are_refused_with_the_file_name() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x.toml");
        std::fs::write(&path, "port = 5\n").unwrap();
        assert_eq!(load::<Sample>(Some(&path)).unwrap().port, 5);
        std::fs::write(&path, "prot = 5\n").unwrap();
        let err = format!("{:#}", load::<Sample>(Some(&path)).unwrap_err());
        assert!(err.contains("x.toml") && err.contains("prot"), "{err}");
        assert_eq!(load::<Sample>(None).unwrap().port, 0);
    }
}
