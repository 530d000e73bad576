//! Open directories and the page of each one's listing fetched last. The kernel reads a
//! directory a few KiB at a time (about a hundred names per READDIR, twenty-five per
//! READDIRPLUS), while the master answers a thousand names per request: each open directory keeps
//! the master's last page and serves the kernel's next requests from it. A page serves for as
//! long as the kernel may cache attributes, counted from when it was fetched, and only while
//! this mount has changed nothing since (the kernel would take the page's older attributes
//! over the ones a change gave it); a listing started again from the beginning (`rewinddir`)
//! always asks the master anew.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use elkfs_proto::types::{Attr, DirEntry};

/// The cookie before a directory's first entry (after `.` and `..`).
pub const START: u64 = 2;

/// One name of a fetched page, with its attributes when the page was fetched for READDIRPLUS.
#[derive(Clone, Debug)]
pub struct Listed {
    /// Name, inode, kind and cookie.
    pub entry: DirEntry,
    /// The inode's attributes (pages fetched with attributes only).
    pub attr: Option<Attr>,
}

/// A page of a listing as the master sent it.
#[derive(Debug)]
pub struct Page {
    after: u64,
    entries: Vec<Listed>,
    last: bool,
    with_attrs: bool,
    fetched: Instant,
    changes: u64,
}

impl Page {
    /// The master's answer to a request for `asked` names after cookie `after`, sent at
    /// `fetched` when this mount's count of changes ([`elkfs_client::master::MasterClient::changes`])
    /// was `changes`; fewer names than asked means the directory ends here.
    pub fn new(
        after: u64,
        entries: Vec<Listed>,
        asked: usize,
        with_attrs: bool,
        (fetched, changes): (Instant, u64),
    ) -> Page {
        Page {
            after,
            last: entries.len() < asked,
            entries,
            with_attrs,
            fetched,
            changes,
        }
    }

    /// When the master's answer was current.
    pub fn fetched(&self) -> Instant {
        self.fetched
    }

    /// The names after cookie `offset`, if this page knows them: `None` when `offset` is not
    /// on this page, or is its last name and more may follow on the next one.
    pub fn after(&self, offset: u64) -> Option<&[Listed]> {
        let start = if offset == self.after {
            0
        } else {
            self.entries.iter().position(|e| e.entry.cookie == offset)? + 1
        };
        let rest = &self.entries[start..];
        (!rest.is_empty() || self.last).then_some(rest)
    }
}

/// The directories the kernel has open through this mount, by handle.
pub struct OpenDirs {
    next: AtomicU64,
    pages: Mutex<HashMap<u64, Option<Arc<Page>>>>,
    ttl: Duration,
}

impl OpenDirs {
    /// No open directory; pages serve for `ttl`.
    pub fn new(ttl: Duration) -> OpenDirs {
        OpenDirs {
            next: AtomicU64::new(1),
            pages: Mutex::new(HashMap::new()),
            ttl,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<u64, Option<Arc<Page>>>> {
        self.pages.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A handle for a newly opened directory (never 0).
    pub fn open(&self) -> u64 {
        let fh = self.next.fetch_add(1, Ordering::Relaxed);
        self.lock().insert(fh, None);
        fh
    }

    /// Forgets a closed directory and its page.
    pub fn release(&self, fh: u64) {
        self.lock().remove(&fh);
    }

    /// The kept page of `fh` if it can answer for the names after `offset`: fetched for
    /// attributes when `with_attrs`, still fresh, with no change made since (`changes` is the
    /// count now), and not a listing started anew.
    pub fn page_for(
        &self,
        fh: u64,
        offset: u64,
        with_attrs: bool,
        changes: u64,
    ) -> Option<Arc<Page>> {
        if offset <= START {
            return None;
        }
        let page = self.lock().get(&fh)?.clone()?;
        let usable = (page.with_attrs || !with_attrs)
            && page.changes == changes
            && page.fetched.elapsed() < self.ttl
            && page.after(offset).is_some();
        usable.then_some(page)
    }

    /// Keeps `page` as the last one fetched for `fh` (if it is still open).
    pub fn keep(&self, fh: u64, page: Arc<Page>) {
        if let Some(slot) = self.lock().get_mut(&fh) {
            *slot = Some(page);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use elkfs_proto::InodeId;
    use elkfs_proto::types::FileKind;

    fn listed(cookie: u64) -> Listed {
        Listed {
            entry: DirEntry {
                name: format!("n{cookie}").into_bytes(),
                inode: InodeId(cookie + 100),
                kind: FileKind::File,
                cookie,
            },
            attr: None,
        }
    }

    fn cookies(names: &[Listed]) -> Vec<u64> {
        names.iter().map(|l| l.entry.cookie).collect()
    }

    #[test]
    fn a_page_answers_for_its_start_and_its_own_cookies() {
        let full = Page::new(
            START,
            vec![listed(3), listed(5), listed(9)],
            3,
            false,
            (Instant::now(), 0),
        );
        assert_eq!(cookies(full.after(START).unwrap()), vec![3, 5, 9]);
        assert_eq!(cookies(full.after(5).unwrap()), vec![9]);
        assert!(full.after(9).is_none(), "more may follow a full page");
        assert!(full.after(4).is_none(), "not a cookie of this page");
        let last = Page::new(9, vec![listed(12)], 3, false, (Instant::now(), 0));
        assert_eq!(cookies(last.after(12).unwrap()), Vec::<u64>::new());
        let empty = Page::new(START, vec![], 3, false, (Instant::now(), 0));
        assert_eq!(empty.after(START).unwrap().len(), 0);
    }

    #[test]
    fn pages_serve_their_handle_while_fresh_and_unchanged_and_never_a_fresh_start() {
        let dirs = OpenDirs::new(Duration::from_millis(100));
        let fh = dirs.open();
        let other = dirs.open();
        assert_ne!(fh, other);
        let page = Arc::new(Page::new(
            START,
            vec![listed(3), listed(4)],
            2,
            false,
            (Instant::now(), 7),
        ));
        dirs.keep(fh, page);
        assert!(dirs.page_for(fh, 3, false, 7).is_some());
        assert!(
            dirs.page_for(fh, 3, true, 7).is_none(),
            "no attributes on it"
        );
        assert!(dirs.page_for(fh, 3, false, 8).is_none(), "a change since");
        assert!(
            dirs.page_for(fh, START, false, 7).is_none(),
            "rewinddir asks anew"
        );
        assert!(dirs.page_for(other, 3, false, 7).is_none());
        std::thread::sleep(Duration::from_millis(120));
        assert!(dirs.page_for(fh, 3, false, 7).is_none(), "stale");
        dirs.release(fh);
        let page = Arc::new(Page::new(
            START,
            vec![listed(3)],
            2,
            true,
            (Instant::now(), 7),
        ));
        dirs.keep(fh, page);
        assert!(
            dirs.page_for(fh, 3, true, 7).is_none(),
            "closed handles keep nothing"
        );
    }
}
