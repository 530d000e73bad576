//! Opening the store after any stop, including crashes and power cuts, without a manual step.
//!
//! The usual path opens sled and replays the changelog records newer than sled's `mapplied`.
//! sled is rebuilt instead when it does not open (an error or a panic), holds a value that does
//! not decode, has applied more than the changelog holds (after a power cut sled may keep changes
//! whose records were never fsynced: the durable log is the truth), or needs records the
//! changelog no longer has. A rebuild loads the newest image that verifies (older ones if not)
//! into a new database next to the old one, replays the changelog from the image's version,
//! and only then moves the old database aside (`metadata.sled.damaged-<unix time>`) and puts the
//! new one in its place; if no image and changelog together reach the present, nothing is
//! touched and the error says what is missing.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, OnceLock};

use crate::changelog::{self, Changelog, Record};
use crate::checkpoint::ImageSchedule;
use crate::error::StoreError;
use crate::image;
use crate::keys;
use crate::kv::{KvStore, SledStore, Write};
use crate::kv_cache::CachedKv;
use crate::namespace;
use crate::op::MetaOp;
use crate::requests;
use crate::snapshot::Overlay;
use crate::store::{MetaStore, StoreConfig, Writer, encode_u64, read_counter};
use crate::txn::{ExecError, Txn};
use crate::write_behind::{MAX_HELD_KEYS, WriteBehind};

/// The sled directory inside the data directory.
pub const SLED_DIR: &str = "metadata.sled";
/// The changelog directory inside the data directory.
pub const CHANGELOG_DIR: &str = "changelog";
/// Where a rebuild builds the new database before it replaces the old one.
const REBUILD_DIR: &str = "metadata.sled.rebuild";
/// Keys per batch when loading an image.
const LOAD_BATCH: usize = 4096;

/// What happened while opening the store, for the operator's log (its `Display` is one line).
#[derive(Clone, Debug, Default)]
pub struct OpenReport {
    /// The version sled had applied when it opened (0 if it did not open).
    pub applied_before: u64,
    /// Records replayed from the changelog (on a rebuild: onto the image).
    pub replayed: u64,
    /// Records that did not apply on replay (should be 0).
    pub replay_failures: u64,
    /// The database was rebuilt from an image and the changelog.
    pub rebuilt: bool,
    /// The version of the image the rebuild started from (`None`: from an empty state).
    pub from_image: Option<u64>,
    /// Why the database was rebuilt.
    pub reason: Option<String>,
    /// Where the old database was moved.
    pub moved_aside: Option<PathBuf>,
    /// The version of the last change, once open.
    pub version: u64,
}

impl fmt::Display for OpenReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.rebuilt {
            match self.from_image {
                Some(v) => write!(f, "metadata REBUILT from image {v}")?,
                None => write!(f, "metadata REBUILT from the start of the changelog")?,
            }
            write!(
                f,
                " + {} changelog records, now at version {}",
                self.replayed, self.version
            )?;
            if let Some(reason) = &self.reason {
                write!(f, "; reason: {reason}")?;
            }
            if let Some(aside) = &self.moved_aside {
                write!(f, "; the old database is kept in {}", aside.display())?;
            }
        } else {
            write!(
                f,
                "metadata opened: sled had applied version {}, replayed {} changelog records, now at version {}",
                self.applied_before, self.replayed, self.version
            )?;
        }
        if self.replay_failures > 0 {
            write!(
                f,
                "; {} records did not apply and were skipped",
                self.replay_failures
            )?;
        }
        Ok(())
    }
}

/// The store's parts once the state is current.
struct Opened {
    kv: Box<dyn KvStore>,
    changelog: Changelog,
    version: u64,
}

/// Why the usual open did not work.
enum Failure {
    /// sled cannot be used as it is: rebuild it. `keep` is false for an empty database.
    Rebuild { reason: String, keep: bool },
    /// Something a rebuild cannot help with (an unreadable changelog, a failed disk).
    Fatal(StoreError),
}

pub(crate) fn open(
    dir: &Path,
    config: &StoreConfig,
) -> Result<(MetaStore, OpenReport), StoreError> {
    std::fs::create_dir_all(dir).map_err(|source| StoreError::Changelog {
        path: dir.to_path_buf(),
        source,
    })?;
    let removed = image::remove_unfinished(dir)?;
    if removed > 0 {
        tracing::info!(count = removed, "removed unfinished metadata images");
    }
    remove_dir_if_present(&dir.join(REBUILD_DIR))?;
    let mut report = OpenReport::default();
    let opened = match attempt_caught(dir, config, &mut report) {
        Ok(opened) => opened,
        Err(Failure::Fatal(e @ StoreError::ChangelogDamaged { .. })) => {
            return Err(StoreError::Unrecoverable {
                dir: dir.to_path_buf(),
                missing: format!("{e}, so the changes recorded from there on are lost"),
            });
        }
        Err(Failure::Fatal(e)) => return Err(e),
        Err(Failure::Rebuild { reason, keep }) => {
            tracing::warn!(%reason, "the metadata database must be rebuilt");
            rebuild(dir, config, &reason, keep, &mut report)?;
            let mut again = OpenReport::default();
            match attempt_caught(dir, config, &mut again) {
                Ok(opened) => opened,
                Err(Failure::Fatal(e)) => return Err(e),
                Err(Failure::Rebuild { reason, .. }) => {
                    return Err(StoreError::Sled {
                        path: dir.join(SLED_DIR),
                        reason: format!("the rebuilt database does not open cleanly: {reason}"),
                    });
                }
            }
        }
    };
    report.version = opened.version;
    let store = MetaStore {
        sync_file: opened.changelog.sync_handle(),
        kv: Box::new(CachedKv::new(
            opened.kv,
            config.hot_entries,
            config.hot_bytes(),
        )),
        writer: Mutex::new(Writer {
            changelog: opened.changelog,
            version: opened.version,
        }),
        refused: OnceLock::new(),
        dir: dir.to_path_buf(),
        config: config.clone(),
        overlay: Overlay::default(),
        images: ImageSchedule::new(dir)?,
    };
    Ok((store, report))
}

fn attempt_caught(
    dir: &Path,
    config: &StoreConfig,
    report: &mut OpenReport,
) -> Result<Opened, Failure> {
    // sled may panic on reads as well as on open: treat that as damage too.
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        attempt(dir, config, report)
    }))
    .unwrap_or_else(|panic| {
        Err(Failure::Rebuild {
            reason: format!("sled panicked: {}", panic_message(&panic)),
            keep: true,
        })
    })
}

/// The usual open: sled as it is, plus the changelog records it has not applied.
fn attempt(dir: &Path, config: &StoreConfig, report: &mut OpenReport) -> Result<Opened, Failure> {
    let sled_dir = dir.join(SLED_DIR);
    let kv = open_sled(&sled_dir, config.sled_cache_capacity()).map_err(|e| match e {
        SledOpenError::Failed(reason) => Failure::Rebuild {
            reason: format!("sled does not open: {reason}"),
            keep: true,
        },
        SledOpenError::Locked(reason) => Failure::Fatal(StoreError::Sled {
            path: sled_dir.clone(),
            reason,
        }),
    })?;
    // Replayed records reach sled many at a time, as the master's own changes do.
    let kv: Box<dyn KvStore> = Box::new(WriteBehind::new(kv, MAX_HELD_KEYS));
    let applied = read_counter(kv.as_ref(), keys::APPLIED).map_err(|e| Failure::Rebuild {
        reason: format!("sled's applied version is unreadable: {e}"),
        keep: true,
    })?;
    report.applied_before = applied;
    let empty = applied == 0 && kv.scan(&[], None, 1).is_ok_and(|rows| rows.is_empty());
    let needs_rebuild = |reason: String| Failure::Rebuild {
        reason,
        keep: !empty,
    };
    let mut replayer = Replayer::new(kv.as_ref(), applied);
    let changelog = Changelog::open(
        &dir.join(CHANGELOG_DIR),
        applied + 1,
        config.changelog_file_bytes,
        &mut |record| replayer.apply(record),
    );
    let changelog = match changelog {
        Ok(changelog) => changelog,
        Err(e) => {
            return Err(match replayer.problem.take() {
                Some(problem) => {
                    needs_rebuild(format!("sled had applied version {applied}; {problem}"))
                }
                None => Failure::Fatal(e),
            });
        }
    };
    report.replayed = replayer.replayed;
    report.replay_failures = replayer.failures;
    let last = changelog.last_version();
    if applied > last {
        return Err(needs_rebuild(format!(
            "sled has applied version {applied} but the changelog ends at {last}: sled kept \
             changes whose records never reached the disk (a power cut), so the state is \
             rebuilt from what the changelog holds"
        )));
    }
    if replayer.last_seen < last {
        return Err(needs_rebuild(format!(
            "sled had applied version {}; changelog records {}..={last} are missing",
            applied,
            replayer.last_seen + 1
        )));
    }
    drop(replayer);
    Ok(Opened {
        kv,
        changelog,
        version: last,
    })
}

/// Applies changelog records in order, each in one batch with the new `mapplied`.
struct Replayer<'a> {
    kv: &'a dyn KvStore,
    last_seen: u64,
    replayed: u64,
    failures: u64,
    /// What made replay stop, in words, when it was the state or a gap and not the changelog.
    problem: Option<String>,
}

impl<'a> Replayer<'a> {
    fn new(kv: &'a dyn KvStore, applied: u64) -> Replayer<'a> {
        Replayer {
            kv,
            last_seen: applied,
            replayed: 0,
            failures: 0,
            problem: None,
        }
    }

    fn apply(&mut self, record: Record) -> Result<(), StoreError> {
        if record.version <= self.last_seen {
            return Ok(());
        }
        if record.version != self.last_seen + 1 {
            let problem = format!(
                "changelog records {}..={} are missing (the next record found is {})",
                self.last_seen + 1,
                record.version - 1,
                record.version
            );
            self.problem = Some(problem.clone());
            return Err(StoreError::Replay {
                version: record.version,
                reason: problem,
            });
        }
        if let MetaOp::ForgetRequests { before } = &record.op {
            let kv = self.kv;
            return self.finish(
                record.version,
                requests::forget_in_steps(kv, *before, record.version, |w| kv.apply(w)),
            );
        }
        let mut txn = Txn::new(self.kv);
        match namespace::execute(&mut txn, &record.op) {
            Ok(_) => {}
            Err(ExecError::Refused(status)) => {
                self.failures += 1;
                tracing::error!(version = record.version, %status, op = ?record.op, "changelog record does not apply on replay; skipped");
                txn = Txn::new(self.kv);
            }
            Err(ExecError::Store(e)) => {
                self.problem = Some(format!("replaying record {}: {e}", record.version));
                return Err(e);
            }
        }
        let mut writes: Vec<Write> = txn.into_writes();
        writes.push((keys::APPLIED.to_vec(), Some(encode_u64(record.version))));
        self.finish(record.version, self.kv.apply(writes))
    }

    /// Counts record `version` as replayed once applying it worked.
    fn finish(&mut self, version: u64, applied: Result<(), StoreError>) -> Result<(), StoreError> {
        if let Err(e) = applied {
            self.problem = Some(format!("applying record {version}: {e}"));
            return Err(e);
        }
        self.last_seen = version;
        self.replayed += 1;
        Ok(())
    }
}

/// Builds a new database from an image and the changelog, then puts it in place of the old.
fn rebuild(
    dir: &Path,
    config: &StoreConfig,
    reason: &str,
    keep_old: bool,
    report: &mut OpenReport,
) -> Result<(), StoreError> {
    let log_dir = dir.join(CHANGELOG_DIR);
    let files = changelog::list_files(&log_dir)?;
    let unrecoverable = |missing: String| StoreError::Unrecoverable {
        dir: dir.to_path_buf(),
        missing: format!("{reason}; {missing}"),
    };
    let Some(&(log_first, _)) = files.first() else {
        return Err(unrecoverable(format!(
            "{} holds no changelog file, so the changes after any image are unknown",
            log_dir.display()
        )));
    };
    let mut notes = Vec::new();
    let mut source = None;
    for (version, path) in image::list(dir)? {
        if log_first > version + 1 {
            notes.push(format!(
                "image {} is of version {version} but the changelog starts at {log_first} \
                 (records {}..={} are missing)",
                path.display(),
                version + 1,
                log_first - 1
            ));
            continue;
        }
        match image::verify(&path) {
            Ok(info) if info.version == version => {
                source = Some((version, path));
                break;
            }
            Ok(info) => notes.push(format!(
                "image {} says version {} in its header",
                path.display(),
                info.version
            )),
            Err(e) => {
                tracing::warn!(error = %e, "a metadata image is damaged; trying an older one");
                notes.push(e.to_string());
            }
        }
    }
    if source.is_none() && log_first != 1 {
        notes.push(format!(
            "there is no usable image and the changelog starts at version {log_first}, not 1"
        ));
        return Err(unrecoverable(notes.join("; ")));
    }

    let build_dir = dir.join(REBUILD_DIR);
    let mut cleanup = RemoveOnDrop(Some(build_dir.clone()));
    let kv = open_sled(&build_dir, config.sled_cache_capacity()).map_err(|e| StoreError::Sled {
        path: build_dir.clone(),
        reason: match e {
            SledOpenError::Failed(reason) | SledOpenError::Locked(reason) => reason,
        },
    })?;
    let kv: Box<dyn KvStore> = Box::new(WriteBehind::new(kv, MAX_HELD_KEYS));
    let start = match &source {
        Some((version, path)) => {
            load_image(kv.as_ref(), path, *version)?;
            tracing::info!(image = %path.display(), "loaded the metadata image");
            *version
        }
        None => 0,
    };
    let mut replayer = Replayer::new(kv.as_ref(), start);
    let changelog = Changelog::open(
        &log_dir,
        start + 1,
        config.changelog_file_bytes,
        &mut |record| replayer.apply(record),
    )
    .map_err(|e| match (replayer.problem.take(), e) {
        (Some(problem), _) => unrecoverable(format!("rebuilding from version {start}: {problem}")),
        (None, e @ StoreError::ChangelogDamaged { .. }) => unrecoverable(e.to_string()),
        (None, e) => e,
    })?;
    let last = changelog.last_version();
    if replayer.last_seen < last {
        return Err(unrecoverable(format!(
            "changelog records {}..={last} are missing",
            replayer.last_seen + 1
        )));
    }
    let (replayed, failures) = (replayer.replayed, replayer.failures);
    drop(replayer);
    drop(changelog);
    kv.flush()?;
    drop(kv);

    let sled_dir = dir.join(SLED_DIR);
    if sled_dir.exists() {
        if keep_old {
            let aside = aside_name(dir);
            std::fs::rename(&sled_dir, &aside).map_err(|e| StoreError::Sled {
                path: sled_dir.clone(),
                reason: format!("cannot move it aside to {}: {e}", aside.display()),
            })?;
            report.moved_aside = Some(aside);
        } else {
            remove_dir_if_present(&sled_dir)?;
        }
    }
    std::fs::rename(&build_dir, &sled_dir).map_err(|e| StoreError::Sled {
        path: build_dir.clone(),
        reason: format!("cannot rename it to {}: {e}", sled_dir.display()),
    })?;
    cleanup.0 = None;
    std::fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| StoreError::Sled {
            path: dir.to_path_buf(),
            reason: format!("cannot fsync the data directory: {e}"),
        })?;
    report.rebuilt = true;
    report.from_image = source.map(|(v, _)| v);
    report.replayed = replayed;
    report.replay_failures = failures;
    report.reason = Some(reason.to_string());
    Ok(())
}

/// Loads an image into an empty database, in batches.
fn load_image(kv: &dyn KvStore, path: &Path, version: u64) -> Result<(), StoreError> {
    let mut batch: Vec<Write> = Vec::with_capacity(LOAD_BATCH);
    image::read(path, &mut |key, value| {
        batch.push((key, Some(value)));
        if batch.len() >= LOAD_BATCH {
            kv.apply(std::mem::take(&mut batch))?;
        }
        Ok(())
    })?;
    kv.apply(batch)?;
    let applied = read_counter(kv, keys::APPLIED)?;
    if applied != version {
        return Err(StoreError::Image {
            path: path.to_path_buf(),
            reason: format!("holds applied version {applied}, not {version}"),
        });
    }
    Ok(())
}

/// Why sled did not open.
enum SledOpenError {
    /// Another process (or, briefly, the threads of a database just closed) holds its lock:
    /// not damage, so never a reason to rebuild.
    Locked(String),
    /// An error or a panic while opening: the database is damaged.
    Failed(String),
}

/// How long opening waits for a lock held by the threads of a database just closed.
const LOCK_WAIT: std::time::Duration = std::time::Duration::from_secs(10);

/// Opens sled, turning a panic inside sled into an error, and waiting a little for a lock.
fn open_sled(path: &Path, capacity: u64) -> Result<Box<dyn KvStore>, SledOpenError> {
    let started = std::time::Instant::now();
    loop {
        let opened = std::panic::catch_unwind(|| {
            #[cfg(test)]
            if path.join(TEST_PANIC_MARKER).exists() {
                panic!("sled test hook: panicking on open");
            }
            SledStore::open(path, capacity)
        });
        match opened {
            Ok(Ok(store)) => return Ok(Box::new(store)),
            Ok(Err(e)) => {
                let reason = e.to_string();
                // sled says so only in words (an `Io` error of kind `Other`).
                if !reason.contains("could not acquire lock") {
                    return Err(SledOpenError::Failed(reason));
                }
                if started.elapsed() >= LOCK_WAIT {
                    return Err(SledOpenError::Locked(format!(
                        "{reason}: is another master running on this data directory?"
                    )));
                }
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
            Err(panic) => {
                return Err(SledOpenError::Failed(format!(
                    "sled panicked: {}",
                    panic_message(&panic)
                )));
            }
        }
    }
}

/// A file that, in tests, makes opening the sled directory holding it panic.
#[cfg(test)]
pub(crate) const TEST_PANIC_MARKER: &str = "elkfs-test-panic-on-open";

fn panic_message(panic: &Box<dyn std::any::Any + Send>) -> String {
    panic
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "(no message)".to_string())
}

fn aside_name(dir: &Path) -> PathBuf {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let base = format!("{SLED_DIR}.damaged-{secs}");
    let mut path = dir.join(&base);
    let mut n = 2;
    while path.exists() {
        path = dir.join(format!("{base}-{n}"));
        n += 1;
    }
    path
}

fn remove_dir_if_present(path: &Path) -> Result<(), StoreError> {
    match std::fs::remove_dir_all(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(StoreError::Sled {
            path: path.to_path_buf(),
            reason: format!("cannot remove it: {e}"),
        }),
    }
}

/// Removes a half-built database if the rebuild stops early.
struct RemoveOnDrop(Option<PathBuf>);

impl Drop for RemoveOnDrop {
    fn drop(&mut self) {
        if let Some(path) = self.0.take() {
            let _ = std::fs::remove_dir_all(path);
        }
    }
}
