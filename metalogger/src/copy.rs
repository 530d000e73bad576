//! The metalogger's copy of the metadata: the master's images and changelog files, laid out as a
//! master data directory so `elkfs-master --data-dir` can start on it (promotion). Every batch of
//! records is fsynced before more are asked for.

use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use elkfs_metastore::changelog::{self, Changelog, Record};
use elkfs_metastore::image;

/// Images kept locally (older changelog files go with the older ones).
const IMAGES_KEPT: usize = 2;

/// The local copy.
pub struct LocalCopy {
    dir: PathBuf,
    file_bytes: u64,
    changelog: Changelog,
}

fn changelog_dir(dir: &Path) -> PathBuf {
    dir.join("changelog")
}

fn sync_dir(dir: &Path) -> anyhow::Result<()> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .with_context(|| format!("cannot fsync {}", dir.display()))
}

impl LocalCopy {
    /// Opens (or creates) the copy in `dir`, finding where its changelog ends.
    pub fn open(dir: &Path, file_bytes: u64) -> anyhow::Result<LocalCopy> {
        std::fs::create_dir_all(changelog_dir(dir))
            .with_context(|| format!("cannot create {}", dir.display()))?;
        image::remove_unfinished(dir)?;
        let changelog = Self::open_changelog(dir, file_bytes)?;
        Ok(LocalCopy {
            dir: dir.to_path_buf(),
            file_bytes,
            changelog,
        })
    }

    fn open_changelog(dir: &Path, file_bytes: u64) -> anyhow::Result<Changelog> {
        let after_image = image::list(dir)?.first().map_or(0, |(v, _)| *v);
        Ok(Changelog::open(
            &changelog_dir(dir),
            after_image + 1,
            file_bytes,
            &mut |_| Ok(()),
        )?)
    }

    /// The last version the copy holds.
    pub fn last(&self) -> u64 {
        self.changelog.last_version()
    }

    /// The newest image the copy holds (0 for none).
    pub fn newest_image(&self) -> anyhow::Result<u64> {
        Ok(image::list(&self.dir)?.first().map_or(0, |(v, _)| *v))
    }

    /// Appends records that must follow on from [`LocalCopy::last`], then fsyncs them.
    pub fn append(&mut self, records: &[Record]) -> anyhow::Result<()> {
        // After a failed fsync nothing more is taken: a record kept here would count as held.
        if self.changelog.sync_handle().failed() {
            bail!("an fsync of the copy's changelog failed: its records may be missing on disk");
        }
        for record in records {
            let expected = self.last() + 1;
            if record.version != expected {
                bail!(
                    "the master sent record {} where {expected} was expected",
                    record.version
                );
            }
            self.changelog.append(record.version, &record.op)?;
        }
        if !records.is_empty() {
            self.changelog
                .sync_handle()
                .sync()
                .context("cannot fsync the changelog")?;
        }
        Ok(())
    }

    /// A file to download the image of `version` into.
    pub fn image_download(&self, version: u64) -> anyhow::Result<(PathBuf, File)> {
        let path = self.dir.join(format!("{}.tmp", image::file_name(version)));
        let file =
            File::create(&path).with_context(|| format!("cannot create {}", path.display()))?;
        Ok((path, file))
    }

    /// Checks a downloaded image and makes it part of the copy. When the copy's changelog does
    /// not reach the image's version, the changelog starts afresh after it.
    pub fn install_image(
        &mut self,
        version: u64,
        download: PathBuf,
        mut file: File,
    ) -> anyhow::Result<()> {
        file.flush()?;
        file.sync_all()
            .with_context(|| format!("cannot fsync {}", download.display()))?;
        drop(file);
        let info = image::verify(&download)?;
        if info.version != version {
            bail!(
                "the image claims version {} instead of {version}",
                info.version
            );
        }
        let path = self.dir.join(image::file_name(version));
        std::fs::rename(&download, &path)
            .with_context(|| format!("cannot rename {}", download.display()))?;
        sync_dir(&self.dir)?;
        if self.last() < version {
            // Our records end before the image: they are of no more use.
            for (_, file) in changelog::list_files(&changelog_dir(&self.dir))? {
                std::fs::remove_file(&file)
                    .with_context(|| format!("cannot remove {}", file.display()))?;
            }
            sync_dir(&changelog_dir(&self.dir))?;
            self.changelog = Self::open_changelog(&self.dir, self.file_bytes)?;
        }
        self.trim()
    }

    /// Keeps the newest images and the changelog files the older kept one still needs.
    fn trim(&mut self) -> anyhow::Result<()> {
        let images = image::list(&self.dir)?;
        for (_, old) in images.iter().skip(IMAGES_KEPT) {
            std::fs::remove_file(old)
                .with_context(|| format!("cannot remove {}", old.display()))?;
        }
        if let Some((oldest_kept, _)) = images.iter().take(IMAGES_KEPT).next_back() {
            changelog::remove_files_through(&changelog_dir(&self.dir), *oldest_kept)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use elkfs_metastore::MetaOp;

    fn record(version: u64) -> Record {
        Record {
            version,
            op: MetaOp::ReserveChunkIds { up_to: version },
        }
    }

    #[test]
    fn records_must_follow_on_and_survive_a_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let mut copy = LocalCopy::open(dir.path(), 1 << 20).unwrap();
        copy.append(&[record(1), record(2)]).unwrap();
        assert!(copy.append(&[record(4)]).is_err());
        drop(copy);
        let copy = LocalCopy::open(dir.path(), 1 << 20).unwrap();
        assert_eq!(copy.last(), 2);
    }
}
