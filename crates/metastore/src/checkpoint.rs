//! Writing metadata images in the background while commits go on, and what follows a good one:
//! old images and the changelog files no kept image needs are deleted.
//!
//! An image of version `V` is started under the commit lock (so `V` is exactly the last applied
//! record), the changelog is fsynced up to `V` (an image must never be ahead of the durable log,
//! or a power cut could make the next record reuse a version the image already holds), then
//! the keys are read a page at a time through the copy-on-write [`Overlay`](crate::snapshot)
//! and streamed to the file. The two newest images are kept, and the changelog back to the older
//! of them, so that either one can rebuild the state.

use std::path::PathBuf;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use crate::changelog;
use crate::error::StoreError;
use crate::image::{self, ImageWriter};
use crate::keys;
use crate::recovery::CHANGELOG_DIR;
use crate::snapshot::Overlay;
use crate::store::MetaStore;
use crate::txn::decode_value;

/// What a finished image is, for the log.
#[derive(Clone, Debug)]
pub struct ImageReport {
    /// The changelog version the image holds the state of.
    pub version: u64,
    /// The image file.
    pub path: PathBuf,
    /// Key-value records in it.
    pub keys: u64,
    /// Its size in bytes.
    pub bytes: u64,
    /// How long writing it took.
    pub elapsed: Duration,
    /// Old values commits saved for it while it was written (copy-on-write).
    pub saved_values: u64,
    /// Older images deleted afterwards.
    pub removed_images: usize,
    /// Changelog files deleted afterwards (every record in them is in both kept images).
    pub removed_changelogs: usize,
}

/// When the last image was written, and whether one is being written.
pub(crate) struct ImageSchedule {
    last: Mutex<LastImage>,
    /// Held while an image is written: one at a time.
    running: Mutex<()>,
    /// Set at shutdown: the image being written stops and no new one starts.
    stopped: AtomicBool,
}

struct LastImage {
    version: Option<u64>,
    at: Instant,
}

impl ImageSchedule {
    /// The schedule as the images in `dir` leave it (the clock starts now).
    pub(crate) fn new(dir: &std::path::Path) -> Result<ImageSchedule, StoreError> {
        let newest = image::list(dir)?.first().map(|(v, _)| *v);
        Ok(ImageSchedule {
            last: Mutex::new(LastImage {
                version: newest,
                at: Instant::now(),
            }),
            running: Mutex::new(()),
            stopped: AtomicBool::new(false),
        })
    }
}

/// Ends the dump however writing the image ends.
struct EndDump<'a>(&'a Overlay);

impl EndDump<'_> {
    /// Ends the dump now; returns how many values commits saved for it.
    fn finish(self) -> u64 {
        let saved = self.0.end();
        std::mem::forget(self);
        saved
    }
}

impl Drop for EndDump<'_> {
    fn drop(&mut self) {
        self.0.end();
    }
}

impl MetaStore {
    /// Whether a new image is due: `image_every_records` records or `image_every` (with at
    /// least one record) since the last one, or `first_image_after_records` when there is none.
    pub fn image_due(&self) -> bool {
        if self.images.stopped.load(Ordering::Relaxed) {
            return false;
        }
        let version = self.version().0;
        let Ok(last) = self.images.last.lock() else {
            return false;
        };
        let since = version.saturating_sub(last.version.unwrap_or(0));
        if since == 0 {
            return false;
        }
        let every = match last.version {
            Some(_) => self.config.image_every_records,
            None => self.config.first_image_after_records,
        };
        since >= every.max(1) || last.at.elapsed() >= self.config.image_every
    }

    /// Writes an image of the current state without holding up commits (blocking: run it on a
    /// thread of its own), then deletes images older than the previous one and changelog files
    /// that only hold records both kept images contain.
    pub fn write_image(&self) -> Result<ImageReport, StoreError> {
        let busy = |reason: &str| StoreError::Image {
            path: self.dir.clone(),
            reason: reason.to_string(),
        };
        let _running = self
            .images
            .running
            .try_lock()
            .map_err(|_| busy("another image is being written"))?;
        if self.images.stopped.load(Ordering::Relaxed) {
            return Err(busy("the store is shutting down"));
        }
        let started = Instant::now();
        let version = {
            let writer = self
                .writer
                .lock()
                .map_err(|_| busy("the commit lock is poisoned"))?;
            if let Some((reason, _)) = self.refused.get() {
                return Err(busy(&format!("the store failed earlier: {reason}")));
            }
            if writer.version == 0 {
                return Err(busy("nothing has been committed yet"));
            }
            self.overlay.start()?;
            writer.version
        };
        let dump = EndDump(&self.overlay);
        self.sync()?;
        let mut out = ImageWriter::create(&self.dir, version)?;
        let mut applied_seen = None;
        loop {
            if self.images.stopped.load(Ordering::Relaxed) {
                return Err(busy("stopped: the store is shutting down"));
            }
            let page = self
                .overlay
                .next_page(self.kv.as_ref(), self.config.image_page_keys)?;
            if page.is_empty() {
                break;
            }
            for (key, value) in page {
                if key == keys::APPLIED {
                    applied_seen = Some(decode_value::<u64>(&key, &value)?);
                }
                out.push(&key, &value)?;
            }
        }
        let saved_values = dump.finish();
        // The snapshot must be of exactly `version`: sled's own marker says so.
        if applied_seen != Some(version) {
            return Err(busy(&format!(
                "the snapshot holds applied version {applied_seen:?}, not {version}; image discarded"
            )));
        }
        let (path, keys, bytes) = out.finish()?;
        if let Ok(mut last) = self.images.last.lock() {
            last.version = Some(version);
            last.at = Instant::now();
        }
        let (removed_images, removed_changelogs) = self.prune_after_image()?;
        Ok(ImageReport {
            version,
            path,
            keys,
            bytes,
            elapsed: started.elapsed(),
            saved_values,
            removed_images,
            removed_changelogs,
        })
    }

    /// Stops an image being written and refuses new ones (at shutdown, so that it is quick).
    pub fn stop_images(&self) {
        self.images.stopped.store(true, Ordering::Relaxed);
    }

    /// Keeps the two newest images and the changelog from the older of them on.
    fn prune_after_image(&self) -> Result<(usize, usize), StoreError> {
        let images = image::list(&self.dir)?;
        let mut removed_images = 0;
        for (_, path) in images.iter().skip(2) {
            std::fs::remove_file(path).map_err(|e| StoreError::Image {
                path: path.clone(),
                reason: format!("cannot delete an old image: {e}"),
            })?;
            removed_images += 1;
        }
        let removed_changelogs = match images.get(1) {
            Some((older, _)) => {
                // sled must not need the records deleted: it is made durable past them first
                // (changes held back from it are applied, then it is flushed).
                self.kv.flush()?;
                changelog::remove_files_through(&self.dir.join(CHANGELOG_DIR), *older)?
            }
            None => 0,
        };
        Ok((removed_images, removed_changelogs))
    }
}
