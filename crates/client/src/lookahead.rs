//! Names looked up ahead. A program that looks names up one after another in sorted order
//! (`rsync`, a script over `f000001`, `f000002`, ...) costs one round trip to the master per
//! name. After a few such lookups in a directory, the client asks for the name and the ones
//! that follow it in byte order, with their attributes ([`MasterRequest::LookupAhead`]), and
//! answers the next lookups from that window; the window grows while it keeps answering and
//! shrinks back when it does not.
//!
//! A window answers only what the kernel itself could have kept had it listed the directory
//! when the window was fetched (READDIRPLUS): only names present then, for no longer than the
//! attribute cache time counted from the fetch, and never a name or inode that this client
//! has changed since (`recent_changes.rs`). Absent names are asked for (unless a directory
//! lease answers them, `dir_leases.rs`), so a name another mount makes shows at once, as
//! without the window. Inodes whose attributes must not be cached, and files with more than
//! one name (a change through one name would go unseen through the others), are left out.
//!
//! [`MasterRequest::LookupAhead`]: elkfs_proto::master::MasterRequest::LookupAhead

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use elkfs_proto::InodeId;
use elkfs_proto::types::{Attr, DirEntryPlus, FileKind, eattr};

use crate::recent_changes::{RecentChanges, Touched};

/// Names asked for by a directory's first window.
pub const FIRST_WINDOW: u32 = 16;

/// Most names asked for by one window.
pub const LARGEST_WINDOW: u32 = 256;

/// Lookups in increasing order, each missing the window, before a window is fetched.
const STREAK: u32 = 2;

/// Most misses let go by between windows that keep answering nothing.
const LONGEST_BACKOFF: u32 = 64;

/// Directories followed at once; past this, what is known of them is dropped.
const DIRECTORIES: usize = 64;

/// The names of one directory fetched together, with their attributes.
struct Window {
    fetched: Instant,
    asked: u32,
    names: HashMap<Vec<u8>, Attr>,
    hits: u32,
    /// Whether its hits have been counted towards the next window's size.
    judged: bool,
}

/// How lookups in one directory have gone.
#[derive(Default)]
struct DirScan {
    last_miss: Option<Vec<u8>>,
    streak: u32,
    next_size: u32,
    /// Misses to let go by before the next window, after windows that answered nothing.
    wait: u32,
    backoff: u32,
    window: Option<Window>,
}

#[derive(Default)]
struct State {
    dirs: HashMap<InodeId, DirScan>,
    /// The name each inode in a window goes by there, to drop it when its attributes change.
    names_of: HashMap<InodeId, (InodeId, Vec<u8>)>,
    /// Changes (counted by [`RecentChanges`]) already applied to the windows.
    seen: u64,
}

impl State {
    fn forget_name(&mut self, dir: InodeId, name: &[u8]) {
        let window = self.dirs.get_mut(&dir).and_then(|d| d.window.as_mut());
        if let Some(attr) = window.and_then(|w| w.names.remove(name)) {
            self.names_of.remove(&attr.inode);
        }
    }

    fn forget_inode(&mut self, inode: InodeId) {
        if let Some((dir, name)) = self.names_of.remove(&inode)
            && let Some(window) = self.dirs.get_mut(&dir).and_then(|d| d.window.as_mut())
        {
            window.names.remove(&name);
        }
    }

    fn forget_windows(&mut self) {
        for scan in self.dirs.values_mut() {
            scan.window = None;
        }
        self.names_of.clear();
    }

    fn apply(&mut self, touched: &Touched) {
        match touched {
            Touched::Everything => self.forget_windows(),
            Touched::Some { inodes, names } => {
                for inode in inodes {
                    self.forget_inode(*inode);
                }
                for (dir, name) in names {
                    self.forget_name(*dir, name);
                }
            }
        }
    }

    /// Applies every change recorded since the windows were last brought up to date.
    fn catch_up(&mut self, changes: &RecentChanges) {
        self.replay(changes, self.seen);
    }

    /// Applies every change recorded after the first `from` to every window.
    fn replay(&mut self, changes: &RecentChanges, from: u64) {
        match changes.since(from, |t| self.apply(t)) {
            Some(count) => self.seen = count,
            None => {
                self.forget_windows();
                self.seen = changes.count();
            }
        }
    }

    fn drop_window(&mut self, dir: InodeId) {
        if let Some(window) = self.dirs.get_mut(&dir).and_then(|d| d.window.take()) {
            for attr in window.names.values() {
                if self
                    .names_of
                    .get(&attr.inode)
                    .is_some_and(|(d, _)| *d == dir)
                {
                    self.names_of.remove(&attr.inode);
                }
            }
        }
    }
}

/// When a window's request was sent: the time and how many changes had been recorded.
#[derive(Clone, Copy, Debug)]
pub struct FetchStart {
    at: Instant,
    changes: u64,
}

impl FetchStart {
    /// Now, with `changes` recorded so far.
    pub fn now(changes: &RecentChanges) -> FetchStart {
        FetchStart {
            at: Instant::now(),
            changes: changes.count(),
        }
    }
}

/// The windows of every directory being looked up in order.
pub struct Lookahead {
    ttl: Duration,
    state: Mutex<State>,
}

impl Lookahead {
    /// No window yet; windows answer for `ttl` after their fetch (zero: never).
    pub fn new(ttl: Duration) -> Lookahead {
        Lookahead {
            ttl,
            state: Mutex::new(State::default()),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// `name` in `dir` from a window, with how long ago the window was fetched; `None` when
    /// the master must be asked.
    pub fn answer(
        &self,
        dir: InodeId,
        name: &[u8],
        changes: &RecentChanges,
    ) -> Option<(Attr, Duration)> {
        let mut state = self.lock();
        // Most lookups find no window at all: nothing to catch up on for them.
        state.dirs.get(&dir)?.window.as_ref()?;
        state.catch_up(changes);
        let window = state.dirs.get_mut(&dir)?.window.as_mut()?;
        let age = window.fetched.elapsed();
        if age >= self.ttl {
            return None;
        }
        let attr = window.names.get(name)?.clone();
        window.hits += 1;
        Some((attr, age))
    }

    /// Notes that looking `name` up in `dir` missed the windows, and says how many names to
    /// ask for with it, if a window is worth fetching now.
    pub fn missed(&self, dir: InodeId, name: &[u8]) -> Option<u32> {
        if self.ttl.is_zero() {
            return None;
        }
        let mut state = self.lock();
        if !state.dirs.contains_key(&dir) && state.dirs.len() >= DIRECTORIES {
            state.dirs.clear();
            state.names_of.clear();
        }
        let scan = state.dirs.entry(dir).or_default();
        scan.streak = match &scan.last_miss {
            Some(last) if name > last.as_slice() => scan.streak.saturating_add(1),
            _ => 0,
        };
        scan.last_miss = Some(name.to_vec());
        if let Some(w) = scan.window.as_mut().filter(|w| !w.judged) {
            w.judged = true;
            if w.hits * 2 >= w.asked {
                scan.next_size = (w.asked * 2).min(LARGEST_WINDOW);
                scan.backoff = 0;
            } else {
                scan.next_size = FIRST_WINDOW;
                // Names made in order at the end of a directory: none is there ahead.
                if w.hits == 0 {
                    scan.backoff = (scan.backoff * 2).clamp(1, LONGEST_BACKOFF);
                    scan.wait = scan.backoff;
                }
            }
        }
        if scan.wait > 0 {
            scan.wait -= 1;
            return None;
        }
        (scan.streak >= STREAK).then_some(scan.next_size.max(FIRST_WINDOW))
    }

    /// Notes that a name looked up in `dir` without a window was there: names are ahead of
    /// the lookups again (the creates that made windows pointless are over).
    pub fn found(&self, dir: InodeId) {
        if let Some(scan) = self.lock().dirs.get_mut(&dir) {
            scan.backoff = 0;
            scan.wait = 0;
        }
    }

    /// Keeps what the master answered to a window's request started at `start`, minus what
    /// this client changed after that.
    pub fn fetched(
        &self,
        dir: InodeId,
        start: FetchStart,
        asked: u32,
        entries: &[DirEntryPlus],
        changes: &RecentChanges,
    ) {
        let mut state = self.lock();
        state.drop_window(dir);
        let Some(scan) = state.dirs.get_mut(&dir) else {
            return;
        };
        let names: HashMap<Vec<u8>, Attr> = entries
            .iter()
            .filter(|e| cacheable(&e.attr))
            .map(|e| (e.entry.name.clone(), e.attr.clone()))
            .collect();
        let inodes: Vec<(InodeId, Vec<u8>)> = names
            .iter()
            .map(|(name, attr)| (attr.inode, name.clone()))
            .collect();
        scan.window = Some(Window {
            fetched: start.at,
            asked,
            names,
            hits: 0,
            judged: false,
        });
        for (inode, name) in inodes {
            // An inode is kept under one name only: another window's may be older.
            state.forget_inode(inode);
            state.names_of.insert(inode, (dir, name));
        }
        // Changes since the request was sent may not show in the answer. Replaying them on
        // the other windows too only drops what a later fetch may still hold rightly.
        let from = state.seen.min(start.changes);
        state.replay(changes, from);
    }
}

/// Whether an inode may answer from a window.
fn cacheable(attr: &Attr) -> bool {
    attr.eattrs & eattr::NOATTRCACHE == 0 && (attr.kind == FileKind::Dir || attr.nlink == 1)
}

#[cfg(test)]
mod tests {
    use super::*;
    use elkfs_proto::master::MasterRequest;
    use elkfs_proto::types::{Caller, DirEntry, SetAttr};

    const DIR: InodeId = InodeId(1);

    fn entry(name: &str, inode: u64, nlink: u32, eattrs: u8) -> DirEntryPlus {
        DirEntryPlus {
            entry: DirEntry {
                name: name.as_bytes().to_vec(),
                inode: InodeId(inode),
                kind: FileKind::File,
                cookie: inode,
            },
            attr: crate::test_attrs::file(inode, FileKind::File, nlink, eattrs),
            has_xattrs: false,
        }
    }

    fn files(names: &[&str]) -> Vec<DirEntryPlus> {
        names
            .iter()
            .enumerate()
            .map(|(i, n)| entry(n, 100 + i as u64, 1, 0))
            .collect()
    }

    fn answers(ahead: &Lookahead, changes: &RecentChanges, name: &str) -> Option<u64> {
        ahead
            .answer(DIR, name.as_bytes(), changes)
            .map(|(attr, _)| attr.inode.0)
    }

    /// Misses `a` and `b`, then fetches a window at `c` holding `names`.
    fn window_at_c(ahead: &Lookahead, changes: &RecentChanges, names: &[&str]) {
        assert_eq!(ahead.missed(DIR, b"a"), None);
        assert_eq!(ahead.missed(DIR, b"b"), None);
        assert_eq!(ahead.missed(DIR, b"c"), Some(FIRST_WINDOW));
        let start = FetchStart::now(changes);
        ahead.fetched(DIR, start, FIRST_WINDOW, &files(names), changes);
    }

    #[test]
    fn lookups_in_increasing_order_fetch_a_window_that_answers_the_names_it_holds() {
        let changes = RecentChanges::default();
        let ahead = Lookahead::new(Duration::from_secs(60));
        assert_eq!(answers(&ahead, &changes, "c"), None);
        window_at_c(&ahead, &changes, &["c", "d", "e"]);
        assert_eq!(answers(&ahead, &changes, "d"), Some(101));
        assert_eq!(answers(&ahead, &changes, "d"), Some(101));
        // Absent names are always asked for: another mount may have made them.
        assert_eq!(answers(&ahead, &changes, "cc"), None);
        assert_eq!(ahead.answer(InodeId(2), b"d", &changes), None);
    }

    #[test]
    fn lookups_out_of_order_never_fetch_a_window() {
        let ahead = Lookahead::new(Duration::from_secs(60));
        for name in ["m", "l", "k", "j", "a", "z", "b"] {
            assert_eq!(ahead.missed(DIR, name.as_bytes()), None, "{name}");
        }
        let off = Lookahead::new(Duration::ZERO);
        for name in ["a", "b", "c", "d"] {
            assert_eq!(off.missed(DIR, name.as_bytes()), None, "{name}");
        }
    }

    #[test]
    fn a_window_stops_answering_when_the_attribute_cache_time_is_over() {
        let changes = RecentChanges::default();
        let ahead = Lookahead::new(Duration::from_millis(50));
        window_at_c(&ahead, &changes, &["c", "d"]);
        let (_, age) = ahead.answer(DIR, b"d", &changes).unwrap();
        assert!(age < Duration::from_millis(50));
        std::thread::sleep(Duration::from_millis(60));
        assert_eq!(answers(&ahead, &changes, "d"), None);
    }

    #[test]
    fn what_this_client_changed_after_the_request_was_sent_is_not_answered() {
        let changes = RecentChanges::default();
        let ahead = Lookahead::new(Duration::from_secs(60));
        for name in ["a", "b", "c"] {
            ahead.missed(DIR, name.as_bytes());
        }
        let start = FetchStart::now(&changes);
        // Answered while the window's request was on its way: the master may have answered
        // the window first.
        changes.record(&MasterRequest::Unlink {
            parent: DIR,
            name: b"d".to_vec(),
        });
        changes.record(&MasterRequest::SetAttr {
            inode: InodeId(102),
            changes: SetAttr::default(),
            caller: Caller { uid: 0, gid: 0 },
        });
        ahead.fetched(DIR, start, 16, &files(&["c", "d", "e", "f", "g"]), &changes);
        assert_eq!(answers(&ahead, &changes, "c"), Some(100));
        assert_eq!(answers(&ahead, &changes, "d"), None);
        assert_eq!(answers(&ahead, &changes, "e"), None);
        // And after the window arrived.
        changes.record(&MasterRequest::Rename {
            parent: DIR,
            name: b"f".to_vec(),
            new_parent: InodeId(7),
            new_name: b"x".to_vec(),
            flags: 0,
        });
        changes.record(&MasterRequest::Access {
            inode: InodeId(100),
        });
        assert_eq!(answers(&ahead, &changes, "f"), None);
        assert_eq!(answers(&ahead, &changes, "c"), None);
        assert_eq!(answers(&ahead, &changes, "g"), Some(104));
        changes.record(&MasterRequest::ChangeTree {
            inode: InodeId(9),
            attr: elkfs_proto::master::TreeAttr::Goal,
            change: elkfs_proto::master::Change::Set(3),
            recursive: true,
            caller: Caller { uid: 0, gid: 0 },
        });
        assert_eq!(answers(&ahead, &changes, "g"), None);
    }

    #[test]
    fn files_with_several_names_and_uncacheable_inodes_are_not_kept() {
        let changes = RecentChanges::default();
        let ahead = Lookahead::new(Duration::from_secs(60));
        for name in ["a", "b", "c"] {
            ahead.missed(DIR, name.as_bytes());
        }
        let entries = vec![
            entry("c", 5, 2, 0),
            entry("d", 6, 1, eattr::NOATTRCACHE),
            entry("e", 7, 1, eattr::NOOWNER),
        ];
        ahead.fetched(DIR, FetchStart::now(&changes), 16, &entries, &changes);
        assert_eq!(answers(&ahead, &changes, "c"), None);
        assert_eq!(answers(&ahead, &changes, "d"), None);
        assert_eq!(answers(&ahead, &changes, "e"), Some(7));
    }

    #[test]
    fn a_window_grows_while_it_answers_and_shrinks_back_when_it_does_not() {
        let changes = RecentChanges::default();
        let ahead = Lookahead::new(Duration::from_secs(60));
        let names: Vec<String> = (0..200).map(|i| format!("f{i:03}")).collect();
        let mut asked_for = Vec::new();
        let mut i = 0;
        while i < names.len() {
            if answers(&ahead, &changes, &names[i]).is_none()
                && let Some(asked) = ahead.missed(DIR, names[i].as_bytes())
            {
                asked_for.push(asked);
                let held: Vec<&str> = names[i..]
                    .iter()
                    .take(asked as usize)
                    .map(|s| s.as_str())
                    .collect();
                let start = FetchStart::now(&changes);
                ahead.fetched(DIR, start, asked, &files(&held), &changes);
            }
            i += 1;
        }
        assert_eq!(asked_for, vec![16, 32, 64, 128]);
        assert_eq!(ahead.missed(DIR, b"g000"), Some(256));
        let start = FetchStart::now(&changes);
        ahead.fetched(DIR, start, 256, &files(&["g000", "g001"]), &changes);
        // A window that answered nothing: one miss goes by, and the next window is small.
        assert_eq!(ahead.missed(DIR, b"h000"), None);
        assert_eq!(ahead.missed(DIR, b"h001"), Some(FIRST_WINDOW));
    }

    #[test]
    fn names_made_in_order_at_the_end_of_a_directory_fetch_fewer_and_fewer_windows() {
        let changes = RecentChanges::default();
        let ahead = Lookahead::new(Duration::from_secs(60));
        let mut fetched_at = Vec::new();
        for i in 0..200 {
            // The name is not there yet, nor any after it.
            let name = format!("f{i:03}");
            if let Some(asked) = ahead.missed(DIR, name.as_bytes()) {
                fetched_at.push(i);
                ahead.fetched(DIR, FetchStart::now(&changes), asked, &[], &changes);
            }
        }
        assert_eq!(fetched_at, vec![2, 4, 7, 12, 21, 38, 71, 136]);
        // Once names are found again (the files are being read back), windows come at once.
        ahead.found(DIR);
        assert_eq!(ahead.missed(DIR, b"g000"), Some(FIRST_WINDOW));
    }
}
