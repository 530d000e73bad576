//! The master killed under load, and started on a damaged or deleted metadata directory.
//!
//! Under load: worker threads change their own corner of the mount (creates, writes of every size,
//! renames, hard links, unlinks, directories) and keep a model of what each acknowledged change
//! did, while the master is SIGKILLed and restarted twenty times. The mount rides through the
//! restarts, so the workers see no error at all; at the end the tree in the mount is exactly the
//! models', a walk through the mount finds every link count right and every file readable to
//! its end, and the offline checker (`elkfs_metastore::check`) finds the master's namespace
//! consistent. The run is reproducible from its seed (`ELKFS_CRASH_SEED`), which is printed.
//!
//! Damaged metadata: with the sled database deleted or garbled (after a clean stop or a SIGKILL)
//! the master starts anyway, rebuilt from its newest image and the changelog, or from the
//! changelog alone when there is no image, says so in its log, and every file written before
//! reads back through the same mount (the data is on the chunkservers, so this proves the chunk
//! map came back too). With the images damaged as well and the changelog no longer starting at
//! version 1 it refuses to start, names the way out (a metalogger), and leaves the directory as
//! it was.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::ffi::CString;
use std::fs::{File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::fd::IntoRawFd;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use elkfs_testkit::{Cluster, Process, wait_until};
use rand::rngs::StdRng;
use rand::{Rng, RngCore, SeedableRng};
use tempfile::TempDir;

const MIB: usize = 1 << 20;
/// Environment variable that replaces [`DEFAULT_SEED`].
const SEED_ENV: &str = "ELKFS_CRASH_SEED";
/// The seed of the random workload and kill times unless `ELKFS_CRASH_SEED` says otherwise.
const DEFAULT_SEED: u64 = 20_250_617;
/// Master SIGKILLs in the test under load (the acceptance text asks for 20).
const KILLS: usize = 20;
/// Worker threads changing the mount while the master is killed.
const WORKERS: usize = 4;
/// Operations each worker must complete after the last restart: the mount still works.
const OPS_AFTER_LAST_RESTART: u64 = 5;
/// Mount option: how long requests wait for the master (well above one restart).
const MOUNT_OPTIONS: &str = "master_timeout=30";
/// The sled database inside the master's data directory (`recovery::SLED_DIR`).
const SLED_DIR: &str = "metadata.sled";
/// The changelog directory inside it, and the name of its first file.
const CHANGELOG_DIR: &str = "changelog";
const FIRST_CHANGELOG: &str = "changelog.00000000000000000001.elk";
/// Master settings that write an image about every two seconds and start a new changelog file
/// after 1 MiB, so the first file is deleted once two images cover it.
const IMAGES_OFTEN: &str = "image_every_secs = 1\nchangelog_file_mib = 1\n";

/// Every test here runs a whole cluster that keeps both cores of the test machine busy; one at
/// a time keeps the kill test's timing (and its load) what it was written for.
static ONE_CLUSTER_AT_A_TIME: Mutex<()> = Mutex::new(());

pub(crate) fn one_cluster_at_a_time() -> MutexGuard<'static, ()> {
    ONE_CLUSTER_AT_A_TIME
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

// ---------------------------------------------------------------------------------------------
// SIGKILLs under load
// ---------------------------------------------------------------------------------------------

#[test]
fn acknowledged_changes_survive_twenty_master_sigkills_under_load() {
    let _one = one_cluster_at_a_time();
    let seed = std::env::var(SEED_ENV)
        .ok()
        .map(|s| {
            s.parse()
                .unwrap_or_else(|_| panic!("{SEED_ENV}={s:?} is not a number"))
        })
        .unwrap_or(DEFAULT_SEED);
    eprintln!("master_crash: seed {seed} (set {SEED_ENV} to replay another)");
    let started = Instant::now();
    let mut cluster = Cluster::builder()
        .chunkservers(3)
        .mounts(1)
        .mount_options(MOUNT_OPTIONS)
        .start();
    let mount = cluster.mount_path(0).to_path_buf();
    let stop = Arc::new(AtomicBool::new(false));
    let workers: Vec<Worker> = (0..WORKERS)
        .map(|i| Worker::start(i, &mount, seed, stop.clone()))
        .collect();

    let mut rng = StdRng::seed_from_u64(seed);
    let mut kills = 0;
    while kills < KILLS && !workers.iter().any(Worker::has_failed) {
        thread::sleep(Duration::from_millis(rng.random_range(100..=1500)));
        cluster.kill_master();
        kills += 1;
        thread::sleep(Duration::from_millis(rng.random_range(0..=500)));
        cluster.start_master();
    }
    let done_at_last_restart: Vec<u64> = workers.iter().map(Worker::ops_done).collect();
    let deadline = Instant::now() + Duration::from_secs(40);
    while Instant::now() < deadline
        && workers
            .iter()
            .zip(&done_at_last_restart)
            .any(|(w, &at)| !w.has_failed() && w.ops_done() < at + OPS_AFTER_LAST_RESTART)
    {
        thread::sleep(Duration::from_millis(50));
    }
    stop.store(true, Ordering::Relaxed);
    let mut failures = Vec::new();
    let mut models = Vec::new();
    for (worker, at) in workers.into_iter().zip(done_at_last_restart) {
        let name = worker.name.clone();
        match worker.finish() {
            Ok((model, ops)) => {
                if ops < at + OPS_AFTER_LAST_RESTART {
                    failures.push(format!(
                        "{name} did only {} operations in 40 s after the last restart",
                        ops - at
                    ));
                }
                models.push((name, model, ops));
            }
            Err(failure) => failures.push(failure),
        }
    }
    assert!(
        failures.is_empty(),
        "seed {seed}, after {kills} kills: a worker saw an error or stalled (the mount must ride \
         through master restarts):\n{}",
        failures.join("\n")
    );
    let total_ops: u64 = models.iter().map(|(_, _, ops)| ops).sum();
    eprintln!(
        "master_crash: {kills} kills, {total_ops} acknowledged operations in {:.1} s",
        started.elapsed().as_secs_f64()
    );

    let mut problems = Vec::new();
    for (name, model, _) in &models {
        problems.extend(model.differences_from(&mount.join(name), name));
    }
    problems.extend(walk_and_check(&mount));
    assert!(
        problems.is_empty(),
        "seed {seed}: the tree in the mount is not what the acknowledged changes made:\n{}",
        problems.join("\n")
    );

    cluster.stop_master();
    let problems =
        elkfs_metastore::check::check_data_dir(cluster.master().data_dir()).expect("check");
    assert!(
        problems.is_empty(),
        "seed {seed}: the offline checker finds the master's namespace inconsistent:\n{}",
        lines(&problems)
    );
    cluster.start_master();
    still_works(&mount, "after-the-kills");
    eprintln!(
        "master_crash: checked in {:.1} s in all",
        started.elapsed().as_secs_f64()
    );
}

/// A worker thread and what it shares with the test.
struct Worker {
    name: String,
    ops: Arc<AtomicU64>,
    failed: Arc<AtomicBool>,
    handle: JoinHandle<Result<(Model, u64), String>>,
}

impl Worker {
    /// Starts worker `index` in `mount/w<index>`, its random choices drawn from `seed`.
    fn start(index: usize, mount: &Path, seed: u64, stop: Arc<AtomicBool>) -> Worker {
        let name = format!("w{index}");
        let root = mount.join(&name);
        let ops = Arc::new(AtomicU64::new(0));
        let failed = Arc::new(AtomicBool::new(false));
        let (ops_seen, failed_seen) = (ops.clone(), failed.clone());
        let label = name.clone();
        let handle = thread::spawn(move || {
            let rng = StdRng::seed_from_u64(seed ^ (index as u64 + 1).wrapping_mul(0x9E37_79B9));
            let mut run = Workload {
                root,
                rng,
                model: Model::default(),
            };
            if let Err(e) = std::fs::create_dir(&run.root) {
                failed_seen.store(true, Ordering::Relaxed);
                return Err(format!("{label}: mkdir of its directory: {e}"));
            }
            let mut done = 0;
            while !stop.load(Ordering::Relaxed) {
                let (what, result) = run.step();
                if let Err(e) = result {
                    failed_seen.store(true, Ordering::Relaxed);
                    return Err(format!("{label}: operation #{done} ({what}) failed: {e}"));
                }
                done += 1;
                ops_seen.store(done, Ordering::Relaxed);
            }
            Ok((run.model, done))
        });
        Worker {
            name,
            ops,
            failed,
            handle,
        }
    }

    fn ops_done(&self) -> u64 {
        self.ops.load(Ordering::Relaxed)
    }

    fn has_failed(&self) -> bool {
        self.failed.load(Ordering::Relaxed)
    }

    /// Waits for the worker (the caller has set the stop flag): its model and operation count,
    /// or what failed.
    fn finish(self) -> Result<(Model, u64), String> {
        self.handle
            .join()
            .unwrap_or_else(|_| Err(format!("{} panicked", self.name)))
    }
}

/// What a worker's acknowledged changes made of its directory: directories and file names by
/// path (relative to its directory), and each file's bytes by a file number (hard links share
/// one).
#[derive(Default)]
struct Model {
    dirs: BTreeSet<String>,
    names: BTreeMap<String, u64>,
    contents: HashMap<u64, Vec<u8>>,
    next_file: u64,
    next_name: u64,
}

/// Most files a worker keeps; past it, creates turn into unlinks.
const MAX_FILES: usize = 40;
/// Most directories a worker keeps.
const MAX_DIRS: usize = 12;

impl Model {
    fn fresh_name(&mut self, prefix: &str) -> String {
        self.next_name += 1;
        format!("{prefix}{}", self.next_name)
    }

    /// The worker's directory ("") and every directory in it.
    fn all_dirs(&self) -> Vec<String> {
        std::iter::once(String::new())
            .chain(self.dirs.iter().cloned())
            .collect()
    }

    fn names_of(&self, file: u64) -> usize {
        self.names.values().filter(|&&f| f == file).count()
    }

    fn subdirs_of(&self, dir: &str) -> usize {
        self.dirs.iter().filter(|d| parent_of(d) == dir).count()
    }

    fn is_empty_dir(&self, dir: &str) -> bool {
        let inside = |p: &String| p.starts_with(&format!("{dir}/"));
        !self.dirs.iter().any(inside) && !self.names.keys().any(inside)
    }

    /// Moves directory `from` (and everything under it) to `to`.
    fn move_dir(&mut self, from: &str, to: &str) {
        let prefix = format!("{from}/");
        let moved = |p: &str| match p.strip_prefix(&prefix) {
            Some(rest) => format!("{to}/{rest}"),
            None if p == from => to.to_owned(),
            None => p.to_owned(),
        };
        self.dirs = self.dirs.iter().map(|d| moved(d)).collect();
        self.names = self.names.iter().map(|(p, f)| (moved(p), *f)).collect();
    }

    /// Every way the tree under `root` differs from the model (`name` prefixes the paths).
    fn differences_from(&self, root: &Path, name: &str) -> Vec<String> {
        let mut problems = Vec::new();
        let mut dirs = BTreeSet::new();
        let mut files = BTreeMap::new();
        if let Err(e) = list_tree(root, "", &mut dirs, &mut files) {
            return vec![format!("{name}: cannot list the tree: {e}")];
        }
        for missing in self.dirs.difference(&dirs) {
            problems.push(format!("{name}/{missing}: directory missing"));
        }
        for extra in dirs.difference(&self.dirs) {
            problems.push(format!("{name}/{extra}: directory that no change made"));
        }
        let mut inode_of_file = HashMap::new();
        for (path, &file) in &self.names {
            let Some(meta) = files.remove(path) else {
                problems.push(format!("{name}/{path}: file missing"));
                continue;
            };
            let expected = &self.contents[&file];
            if let Some(&ino) = inode_of_file.get(&file) {
                if ino != meta.ino() {
                    problems.push(format!(
                        "{name}/{path}: not the same inode as its hard link"
                    ));
                }
            } else {
                inode_of_file.insert(file, meta.ino());
            }
            if meta.nlink() != self.names_of(file) as u64 {
                problems.push(format!(
                    "{name}/{path}: {} links, {} names made",
                    meta.nlink(),
                    self.names_of(file)
                ));
            }
            match std::fs::read(root.join(path)) {
                Ok(bytes) if bytes == *expected => {}
                Ok(bytes) => problems.push(format!(
                    "{name}/{path}: {} bytes read, {} written; first difference at {}",
                    bytes.len(),
                    expected.len(),
                    first_difference(&bytes, expected)
                )),
                Err(e) => problems.push(format!("{name}/{path}: cannot read: {e}")),
            }
        }
        for extra in files.keys() {
            problems.push(format!("{name}/{extra}: file that no change made"));
        }
        let distinct: BTreeSet<u64> = inode_of_file.values().copied().collect();
        if distinct.len() != inode_of_file.len() {
            problems.push(format!("{name}: different files share an inode"));
        }
        for dir in self.all_dirs() {
            let expected = 2 + self.subdirs_of(&dir) as u64;
            match std::fs::symlink_metadata(root.join(&dir)) {
                Ok(meta) if meta.nlink() == expected => {}
                Ok(meta) => problems.push(format!(
                    "{name}/{dir}: directory with {} links, expected {expected}",
                    meta.nlink()
                )),
                Err(e) => problems.push(format!("{name}/{dir}: cannot stat: {e}")),
            }
        }
        problems
    }
}

/// Lists the directories and files under `dir` (paths relative to the first call's `dir`).
fn list_tree(
    dir: &Path,
    relative: &str,
    dirs: &mut BTreeSet<String>,
    files: &mut BTreeMap<String, std::fs::Metadata>,
) -> io::Result<()> {
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let name = entry.file_name().to_string_lossy().into_owned();
        let path = join(relative, &name);
        let meta = std::fs::symlink_metadata(entry.path())?;
        if meta.is_dir() {
            dirs.insert(path.clone());
            list_tree(&entry.path(), &path, dirs, files)?;
        } else {
            files.insert(path, meta);
        }
    }
    Ok(())
}

fn join(dir: &str, name: &str) -> String {
    if dir.is_empty() {
        name.to_owned()
    } else {
        format!("{dir}/{name}")
    }
}

fn parent_of(path: &str) -> &str {
    path.rsplit_once('/').map_or("", |(parent, _)| parent)
}

fn first_difference(a: &[u8], b: &[u8]) -> usize {
    a.iter()
        .zip(b)
        .position(|(x, y)| x != y)
        .unwrap_or(a.len().min(b.len()))
}

/// A worker's random changes to its directory, each applied to the model once it succeeded.
struct Workload {
    root: PathBuf,
    rng: StdRng,
    model: Model,
}

impl Workload {
    /// Makes one random change; returns what it was (for error messages) and how it went.
    fn step(&mut self) -> (String, io::Result<()>) {
        let files = self.model.names.len();
        let mut roll = self.rng.random_range(0..100);
        if files == 0 {
            roll = 0;
        } else if files >= MAX_FILES && roll < 27 {
            roll = 60;
        }
        match roll {
            0..27 => self.create(),
            27..43 => self.write(),
            43..47 => self.truncate(),
            47..59 => self.rename_file(),
            59..67 => self.link(),
            67..77 => self.unlink(),
            77..85 => self.mkdir(),
            85..91 => self.rmdir(),
            91..95 => self.rename_dir(),
            _ => self.read_back(),
        }
    }

    fn path(&self, relative: &str) -> PathBuf {
        self.root.join(relative)
    }

    fn any_dir(&mut self) -> String {
        let dirs = self.model.all_dirs();
        dirs[self.rng.random_range(0..dirs.len())].clone()
    }

    fn any_file(&mut self) -> (String, u64) {
        let i = self.rng.random_range(0..self.model.names.len());
        let (path, file) = self.model.names.iter().nth(i).expect("a file");
        (path.clone(), *file)
    }

    /// A length: mostly small, often up to 1 MiB, sometimes past it (up to 3 MiB).
    fn random_len(&mut self) -> usize {
        match self.rng.random_range(0..100) {
            0..40 => self.rng.random_range(0..4096),
            40..75 => self.rng.random_range(4096..256 * 1024),
            75..92 => self.rng.random_range(256 * 1024..MIB),
            _ => self.rng.random_range(MIB + 1..3 * MIB),
        }
    }

    fn random_bytes(&mut self, len: usize) -> Vec<u8> {
        let mut data = vec![0; len];
        self.rng.fill_bytes(&mut data);
        data
    }

    fn create(&mut self) -> (String, io::Result<()>) {
        let path = join(&self.any_dir(), &self.model.fresh_name("f"));
        let len = self.random_len();
        let data = self.random_bytes(len);
        let sync = self.rng.random_bool(0.1);
        let what = format!("create {path} with {} bytes", data.len());
        let result = (|| {
            let mut f = OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(self.path(&path))?;
            f.write_all(&data)?;
            close_checked(f, sync)
        })();
        if result.is_ok() {
            self.model.next_file += 1;
            let file = self.model.next_file;
            self.model.names.insert(path, file);
            self.model.contents.insert(file, data);
        }
        (what, result)
    }

    /// Overwrites part of a file, appends to it, or rewrites it whole.
    fn write(&mut self) -> (String, io::Result<()>) {
        let (path, file) = self.any_file();
        let old_len = self.model.contents[&file].len();
        let len = self.random_len();
        let data = self.random_bytes(len);
        let (offset, replace) = match self.rng.random_range(0..3) {
            0 => (self.rng.random_range(0..=old_len), false),
            1 => (old_len, false),
            _ => (0, true),
        };
        let sync = self.rng.random_bool(0.1);
        let what = format!(
            "write {} bytes at {offset} of {path} ({old_len} bytes{})",
            data.len(),
            if replace { ", truncated first" } else { "" }
        );
        let result = (|| {
            let f = OpenOptions::new()
                .write(true)
                .truncate(replace)
                .open(self.path(&path))?;
            f.write_all_at(&data, offset as u64)?;
            close_checked(f, sync)
        })();
        if result.is_ok() {
            let content = self.model.contents.get_mut(&file).expect("content");
            if replace {
                content.clear();
            }
            if content.len() < offset + data.len() {
                content.resize(offset + data.len(), 0);
            }
            content[offset..offset + data.len()].copy_from_slice(&data);
        }
        (what, result)
    }

    fn truncate(&mut self) -> (String, io::Result<()>) {
        let (path, file) = self.any_file();
        let old_len = self.model.contents[&file].len();
        let len = self.rng.random_range(0..=old_len + 64 * 1024);
        let what = format!("truncate {path} from {old_len} to {len} bytes");
        let result = OpenOptions::new()
            .write(true)
            .open(self.path(&path))
            .and_then(|f| {
                f.set_len(len as u64)?;
                close_checked(f, false)
            });
        if result.is_ok() {
            let content = self.model.contents.get_mut(&file).expect("content");
            content.resize(len, 0);
        }
        (what, result)
    }

    /// Renames a file to a new name or over another file, in its directory or another.
    fn rename_file(&mut self) -> (String, io::Result<()>) {
        let (from, file) = self.any_file();
        let to = if self.rng.random_bool(0.3) {
            self.any_file().0
        } else {
            join(&self.any_dir(), &self.model.fresh_name("f"))
        };
        let what = format!("rename file {from} to {to}");
        let result = std::fs::rename(self.path(&from), self.path(&to));
        // Renaming a name onto another name of the same file changes nothing (POSIX).
        if result.is_ok() && self.model.names.get(&to) != Some(&file) {
            self.model.names.remove(&from);
            if let Some(replaced) = self.model.names.insert(to, file)
                && self.model.names_of(replaced) == 0
            {
                self.model.contents.remove(&replaced);
            }
        }
        (what, result)
    }

    fn link(&mut self) -> (String, io::Result<()>) {
        let (from, file) = self.any_file();
        let to = join(&self.any_dir(), &self.model.fresh_name("l"));
        let what = format!("link {from} as {to}");
        let result = std::fs::hard_link(self.path(&from), self.path(&to));
        if result.is_ok() {
            self.model.names.insert(to, file);
        }
        (what, result)
    }

    fn unlink(&mut self) -> (String, io::Result<()>) {
        let (path, file) = self.any_file();
        let what = format!("unlink {path}");
        let result = std::fs::remove_file(self.path(&path));
        if result.is_ok() {
            self.model.names.remove(&path);
            if self.model.names_of(file) == 0 {
                self.model.contents.remove(&file);
            }
        }
        (what, result)
    }

    fn mkdir(&mut self) -> (String, io::Result<()>) {
        let parent = self.any_dir();
        if self.model.dirs.len() >= MAX_DIRS || parent.matches('/').count() >= 2 {
            return self.read_back();
        }
        let path = join(&parent, &self.model.fresh_name("d"));
        let what = format!("mkdir {path}");
        let result = std::fs::create_dir(self.path(&path));
        if result.is_ok() {
            self.model.dirs.insert(path);
        }
        (what, result)
    }

    fn rmdir(&mut self) -> (String, io::Result<()>) {
        let empty: Vec<String> = self
            .model
            .dirs
            .iter()
            .filter(|d| self.model.is_empty_dir(d))
            .cloned()
            .collect();
        if empty.is_empty() {
            return self.mkdir();
        }
        let path = empty[self.rng.random_range(0..empty.len())].clone();
        let what = format!("rmdir {path}");
        let result = std::fs::remove_dir(self.path(&path));
        if result.is_ok() {
            self.model.dirs.remove(&path);
        }
        (what, result)
    }

    /// Moves a directory (with what is in it) to a new name under a directory outside it.
    fn rename_dir(&mut self) -> (String, io::Result<()>) {
        let dirs: Vec<String> = self.model.dirs.iter().cloned().collect();
        if dirs.is_empty() {
            return self.mkdir();
        }
        let from = dirs[self.rng.random_range(0..dirs.len())].clone();
        let targets: Vec<String> = self
            .model
            .all_dirs()
            .into_iter()
            .filter(|d| *d != from && !d.starts_with(&format!("{from}/")))
            .collect();
        let parent = targets[self.rng.random_range(0..targets.len())].clone();
        let to = join(&parent, &self.model.fresh_name("d"));
        let what = format!("rename directory {from} to {to}");
        let result = std::fs::rename(self.path(&from), self.path(&to));
        if result.is_ok() {
            self.model.move_dir(&from, &to);
        }
        (what, result)
    }

    /// Reads a file back whole; a difference from the model is an error.
    fn read_back(&mut self) -> (String, io::Result<()>) {
        if self.model.names.is_empty() {
            return self.create();
        }
        let (path, file) = self.any_file();
        let what = format!("read {path} back");
        let result = std::fs::read(self.path(&path)).and_then(|bytes| {
            let expected = &self.model.contents[&file];
            if bytes == *expected {
                Ok(())
            } else {
                Err(io::Error::other(format!(
                    "{} bytes read, {} written; first difference at {}",
                    bytes.len(),
                    expected.len(),
                    first_difference(&bytes, expected)
                )))
            }
        });
        (what, result)
    }
}

/// Optionally fsyncs, then closes with close(2)'s result (dropping a `File` ignores it): the
/// mount reports write-behind errors at the latest there.
fn close_checked(f: File, sync: bool) -> io::Result<()> {
    if sync {
        f.sync_all()?;
    }
    let fd = f.into_raw_fd();
    // SAFETY: `fd` was just taken out of the `File`, so nothing else closes it.
    if unsafe { libc::close(fd) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// A walk through the whole mount that needs no model: every entry can be stat'ed, a file's
/// link count is the number of names found for its inode, a directory's is 2 + its
/// subdirectories, and every file reads to exactly its length.
fn walk_and_check(mount: &Path) -> Vec<String> {
    struct Seen {
        path: PathBuf,
        nlink: u64,
        names: u64,
    }
    let mut problems = Vec::new();
    let mut files: HashMap<u64, Seen> = HashMap::new();
    let mut pending = vec![mount.to_path_buf()];
    while let Some(dir) = pending.pop() {
        let entries = match std::fs::read_dir(&dir) {
            Ok(entries) => entries,
            Err(e) => {
                problems.push(format!("{}: cannot list: {e}", dir.display()));
                continue;
            }
        };
        let mut subdirs = 0;
        for entry in entries {
            let path = match entry {
                Ok(entry) => entry.path(),
                Err(e) => {
                    problems.push(format!("{}: listing failed: {e}", dir.display()));
                    continue;
                }
            };
            let meta = match std::fs::symlink_metadata(&path) {
                Ok(meta) => meta,
                Err(e) => {
                    problems.push(format!("{}: listed but cannot stat: {e}", path.display()));
                    continue;
                }
            };
            if meta.is_dir() {
                subdirs += 1;
                pending.push(path);
                continue;
            }
            match read_to_end(&path) {
                Ok(len) if len == meta.len() => {}
                Ok(len) => problems.push(format!(
                    "{}: {len} bytes read, size {}",
                    path.display(),
                    meta.len()
                )),
                Err(e) => problems.push(format!("{}: cannot read: {e}", path.display())),
            }
            files
                .entry(meta.ino())
                .or_insert(Seen {
                    path,
                    nlink: meta.nlink(),
                    names: 0,
                })
                .names += 1;
        }
        match std::fs::symlink_metadata(&dir) {
            Ok(meta) if meta.nlink() == 2 + subdirs => {}
            Ok(meta) => problems.push(format!(
                "{}: directory with {} links and {subdirs} subdirectories",
                dir.display(),
                meta.nlink()
            )),
            Err(e) => problems.push(format!("{}: cannot stat: {e}", dir.display())),
        }
    }
    for seen in files.values().filter(|s| s.nlink != s.names) {
        problems.push(format!(
            "{}: {} links but {} names found",
            seen.path.display(),
            seen.nlink,
            seen.names
        ));
    }
    problems
}

/// Reads a file to its end; returns how many bytes there were.
fn read_to_end(path: &Path) -> io::Result<u64> {
    let mut f = File::open(path)?;
    let mut buf = vec![0; MIB];
    let mut total = 0;
    loop {
        match f.read(&mut buf)? {
            0 => return Ok(total),
            n => total += n as u64,
        }
    }
}

/// Creates a file in the mount and reads it back: the mount works (it was never remounted).
fn still_works(mount: &Path, name: &str) {
    let path = mount.join(name);
    let data = elkfs_e2e::pseudo_random(MIB + 4321, 99);
    let written = File::create(&path).and_then(|mut f| {
        f.write_all(&data)?;
        close_checked(f, false)
    });
    if let Err(e) = written {
        panic!(
            "writing {} through the same mount failed: {e}",
            path.display()
        );
    }
    match std::fs::read(&path) {
        Ok(read) => assert!(read == data, "{} reads back wrong", path.display()),
        Err(e) => panic!("reading {} back failed: {e}", path.display()),
    }
}

fn lines<T: std::fmt::Display>(items: &[T]) -> String {
    items
        .iter()
        .map(|p| format!("  {p}"))
        .collect::<Vec<_>>()
        .join("\n")
}

// ---------------------------------------------------------------------------------------------
// Deleted and damaged metadata
// ---------------------------------------------------------------------------------------------

#[test]
fn deleted_or_damaged_sled_is_rebuilt_from_the_newest_image_and_the_changelog() {
    let _one = one_cluster_at_a_time();
    let config = MasterConfig::new(IMAGES_OFTEN);
    let mut cluster = config.cluster();
    let mount = cluster.mount_path(0).to_path_buf();
    let mut files = Files::new(mount.join("kept"));
    files.write_batch("before", 6);
    wait_until_the_changelog_no_longer_starts_at_one(&mut cluster, &mut files);
    files.write_batch("after-the-images", 4);
    let data_dir = cluster.master().data_dir().to_path_buf();

    // Deleted after a clean stop: the changelog no longer holds version 1, so only an image
    // plus the changelog can give the state back.
    cluster.stop_master();
    let newest = newest_image(&data_dir).expect("an image");
    std::fs::remove_dir_all(data_dir.join(SLED_DIR)).expect("deleting the sled directory");
    let said = start_and_read_log(&mut cluster);
    assert_contains(&said, &format!("metadata REBUILT from image {newest} + "));
    assert_contains(&said, "sled had applied version 0; changelog records 1..=");
    files.verify();

    // Damaged after a SIGKILL, with more written first.
    files.write_batch("before-the-kill", 3);
    cluster.kill_master();
    let newest = newest_image(&data_dir).expect("an image");
    garble_sled(&mut cluster, &data_dir);
    let said = start_and_read_log(&mut cluster);
    assert_contains(&said, &format!("metadata REBUILT from image {newest} + "));
    assert_contains(&said, "reason: sled does not open");
    assert_contains(&said, "the old database is kept in");
    assert!(
        aside_databases(&data_dir) >= 1,
        "the damaged database is moved aside, not deleted"
    );
    files.verify();

    finish_with_the_offline_check(&mut cluster, &files);
}

#[test]
fn deleted_or_damaged_sled_without_an_image_is_rebuilt_from_the_whole_changelog() {
    let _one = one_cluster_at_a_time();
    let mut cluster = Cluster::builder().mount_options(MOUNT_OPTIONS).start();
    let mount = cluster.mount_path(0).to_path_buf();
    let data_dir = cluster.master().data_dir().to_path_buf();
    let mut files = Files::new(mount.join("kept"));
    files.write_batch("before-the-kill", 6);

    // Damaged after a SIGKILL.
    cluster.kill_master();
    assert_eq!(
        newest_image(&data_dir),
        None,
        "no image yet (the first comes after 1000 records or an hour)"
    );
    garble_sled(&mut cluster, &data_dir);
    let said = start_and_read_log(&mut cluster);
    assert_contains(&said, "metadata REBUILT from the start of the changelog + ");
    assert_contains(&said, "reason: sled does not open");
    files.verify();

    // Deleted after a clean stop: the whole changelog is replayed into a new database.
    files.write_batch("before-the-stop", 3);
    cluster.stop_master();
    std::fs::remove_dir_all(data_dir.join(SLED_DIR)).expect("deleting the sled directory");
    let said = start_and_read_log(&mut cluster);
    assert_contains(
        &said,
        "metadata opened: sled had applied version 0, replayed ",
    );
    assert_eq!(newest_image(&data_dir), None, "still no image");
    files.verify();

    // Only sled's data file damaged after a SIGKILL: sled may open at an older state (the
    // changelog replays the rest) or not at all (rebuilt); either way nothing is lost.
    files.write_batch("before-the-second-kill", 3);
    cluster.kill_master();
    garble_sled_data(&data_dir);
    let said = start_and_read_log(&mut cluster);
    assert!(
        said.contains("metadata opened: sled had applied version ")
            || said.contains("metadata REBUILT from the start of the changelog + "),
        "the master's log does not say how it opened the damaged database:\n{said}"
    );
    files.verify();

    finish_with_the_offline_check(&mut cluster, &files);
}

#[test]
fn damaged_images_and_sled_without_the_changelog_start_make_the_master_refuse_and_name_a_metalogger()
 {
    let _one = one_cluster_at_a_time();
    let config = MasterConfig::new(IMAGES_OFTEN);
    let mut cluster = config.cluster();
    let mount = cluster.mount_path(0).to_path_buf();
    let mut files = Files::new(mount.join("kept"));
    files.write_batch("before", 4);
    wait_until_the_changelog_no_longer_starts_at_one(&mut cluster, &mut files);
    let data_dir = cluster.master().data_dir().to_path_buf();
    cluster.stop_master();

    let saved = tempfile::tempdir().expect("a directory for the good images");
    let images = image_files(&data_dir);
    assert!(!images.is_empty(), "images exist");
    for image in &images {
        let copy = saved.path().join(image.file_name().expect("a name"));
        std::fs::copy(image, copy).expect("saving an image");
        garble_middle(image);
    }
    garble_sled(&mut cluster, &data_dir);
    let sled_before = tree_bytes(&data_dir.join(SLED_DIR));
    cluster.allow_log_errors("cannot rebuild the metadata");
    let offset = cluster.log_of(Process::Master).len();
    let refused = cluster.try_start_master();
    let said = log_since(&cluster, offset);
    assert!(
        refused.is_err(),
        "the master started on damaged images and sled without the changelog's start:\n{said}"
    );
    assert_contains(&said, "cannot rebuild the metadata");
    assert_contains(&said, "metalogger");
    assert_eq!(
        tree_bytes(&data_dir.join(SLED_DIR)),
        sled_before,
        "the refused start left the database as it was"
    );
    assert_eq!(aside_databases(&data_dir), 0, "nothing was moved aside");

    // With the good images back, the same directory starts and has everything.
    for image in &images {
        let copy = saved.path().join(image.file_name().expect("a name"));
        std::fs::copy(copy, image).expect("restoring an image");
    }
    let said = start_and_read_log(&mut cluster);
    assert_contains(&said, "metadata REBUILT from image ");
    files.verify();
    finish_with_the_offline_check(&mut cluster, &files);
}

/// A master configuration file that lives as long as this value.
struct MasterConfig {
    _dir: TempDir,
    path: PathBuf,
}

impl MasterConfig {
    fn new(toml: &str) -> MasterConfig {
        let dir = tempfile::Builder::new()
            .prefix("elkfs-crash-config-")
            .tempdir()
            .expect("a config directory");
        let path = dir.path().join("master.toml");
        std::fs::write(&path, toml).expect("writing master.toml");
        MasterConfig { _dir: dir, path }
    }

    /// A cluster (3 chunkservers, 1 mount) whose master reads this file.
    fn cluster(&self) -> Cluster {
        Cluster::builder()
            .master_args([
                std::ffi::OsString::from("--config"),
                self.path.clone().into(),
            ])
            .mount_options(MOUNT_OPTIONS)
            .start()
    }
}

/// Files written through the mount, with what was written, to read back after each restart.
struct Files {
    dir: PathBuf,
    written: Vec<(PathBuf, Vec<u8>)>,
}

impl Files {
    fn new(dir: PathBuf) -> Files {
        std::fs::create_dir(&dir).expect("mkdir through the mount");
        Files {
            dir,
            written: Vec::new(),
        }
    }

    /// Writes one file named `name` (some bytes long, from a seed of its own).
    fn write(&mut self, name: &str, len: usize) {
        let path = self.dir.join(name);
        let data = elkfs_e2e::pseudo_random(len, self.written.len() as u64 + 1);
        let result = File::create(&path).and_then(|mut f| {
            f.write_all(&data)?;
            close_checked(f, false)
        });
        if let Err(e) = result {
            panic!("writing {} failed: {e}", path.display());
        }
        self.written.push((path, data));
    }

    /// Writes `count` files, one past 1 MiB, the others small.
    fn write_batch(&mut self, prefix: &str, count: usize) {
        for i in 0..count {
            let len = if i == 0 { 2 * MIB + 777 } else { 1000 * i + 1 };
            self.write(&format!("{prefix}-{i}"), len);
        }
    }

    /// Every file reads back as written, through the same mount.
    fn verify(&self) {
        for (path, data) in &self.written {
            match std::fs::read(path) {
                Ok(read) if read == *data => {}
                Ok(read) => panic!(
                    "{} reads back {} bytes, {} were written; first difference at {}",
                    path.display(),
                    read.len(),
                    data.len(),
                    first_difference(&read, data)
                ),
                Err(e) => panic!("{} cannot be read: {e}", path.display()),
            }
        }
    }
}

/// Makes changes until two images cover the first changelog file and it is deleted: from then
/// on, only an image plus the changelog holds the state.
fn wait_until_the_changelog_no_longer_starts_at_one(cluster: &mut Cluster, files: &mut Files) {
    let data_dir = cluster.master().data_dir().to_path_buf();
    let first = data_dir.join(CHANGELOG_DIR).join(FIRST_CHANGELOG);
    assert!(first.exists(), "{} exists at first", first.display());
    // About 1.2 MiB of changelog records, so the next record starts a second file.
    let padded = files.dir.join("padded");
    File::create(&padded).expect("creating the padded file");
    for i in 0..20u8 {
        set_xattr(&padded, "user.padding", &vec![i; 60_000]);
    }
    let deadline = Instant::now() + Duration::from_secs(40);
    let mut round = 0;
    while first.exists() {
        assert!(
            Instant::now() < deadline,
            "the first changelog file is still there after 40 s; images: {:?}, changelog: {:?}",
            image_files(&data_dir),
            std::fs::read_dir(data_dir.join(CHANGELOG_DIR))
                .map(|d| d.flatten().map(|e| e.file_name()).collect::<Vec<_>>())
        );
        // Images are written only when something changed since the last one.
        files.write(&format!("meanwhile-{round}"), 100 + round);
        round += 1;
        thread::sleep(Duration::from_millis(300));
    }
}

fn set_xattr(path: &Path, name: &str, value: &[u8]) {
    let c_path = CString::new(path.as_os_str().as_bytes()).expect("no NUL");
    let c_name = CString::new(name).expect("no NUL");
    // SAFETY: valid NUL-terminated strings and a buffer of the length passed.
    let rc = unsafe {
        libc::setxattr(
            c_path.as_ptr(),
            c_name.as_ptr(),
            value.as_ptr().cast(),
            value.len(),
            0,
        )
    };
    if rc != 0 {
        panic!(
            "setxattr {name} on {} failed: {}",
            path.display(),
            io::Error::last_os_error()
        );
    }
}

/// The metadata images in a data directory (`image.<version>.elk`).
fn image_files(data_dir: &Path) -> Vec<PathBuf> {
    let mut images: Vec<PathBuf> = std::fs::read_dir(data_dir)
        .expect("listing the data directory")
        .flatten()
        .map(|e| e.path())
        .filter(|p| image_version(p).is_some())
        .collect();
    images.sort();
    images
}

fn image_version(path: &Path) -> Option<u64> {
    let name = path.file_name()?.to_str()?;
    name.strip_prefix("image.")?
        .strip_suffix(".elk")?
        .parse()
        .ok()
}

fn newest_image(data_dir: &Path) -> Option<u64> {
    image_files(data_dir)
        .iter()
        .filter_map(|p| image_version(p))
        .max()
}

/// Databases an earlier rebuild moved aside (`metadata.sled.damaged-<time>`).
fn aside_databases(data_dir: &Path) -> usize {
    std::fs::read_dir(data_dir)
        .expect("listing the data directory")
        .flatten()
        .filter(|e| {
            e.file_name()
                .to_string_lossy()
                .starts_with(&format!("{SLED_DIR}.damaged-"))
        })
        .count()
}

/// Damages the sled database the way a bad disk or a bad shutdown might: its configuration
/// file replaced with garbage, and the middle of its data file overwritten.
fn garble_sled(cluster: &mut Cluster, data_dir: &Path) {
    // sled's own complaint, logged through the master's logger before the master rebuilds.
    cluster.allow_log_errors("failed to parse persisted config");
    let sled = data_dir.join(SLED_DIR);
    let conf = sled.join("conf");
    assert!(conf.is_file(), "{} exists", conf.display());
    std::fs::write(&conf, b"segment_size = lots\x00\xff\xfe garbage\n").expect("garbling conf");
    garble_sled_data(data_dir);
}

/// Overwrites the middle of sled's data file.
fn garble_sled_data(data_dir: &Path) {
    let db = data_dir.join(SLED_DIR).join("db");
    assert!(db.is_file(), "{} exists", db.display());
    garble_middle(&db);
}

/// Overwrites a stretch in the middle of a file with other bytes.
fn garble_middle(path: &Path) {
    let len = std::fs::metadata(path).expect("stat").len();
    let f = OpenOptions::new()
        .write(true)
        .open(path)
        .expect("opening to garble");
    let garbage = elkfs_e2e::pseudo_random(4096.min(len as usize / 2).max(1), len);
    f.write_all_at(&garbage, len / 3).expect("garbling");
    f.sync_all().expect("fsync");
}

/// Every file under `dir` with its bytes, to tell whether anything changed.
fn tree_bytes(dir: &Path) -> BTreeMap<PathBuf, Vec<u8>> {
    let mut out = BTreeMap::new();
    let mut pending = vec![dir.to_path_buf()];
    while let Some(d) = pending.pop() {
        for entry in std::fs::read_dir(&d).expect("listing").flatten() {
            let path = entry.path();
            if path.is_dir() {
                pending.push(path);
            } else {
                out.insert(path.clone(), std::fs::read(&path).expect("reading"));
            }
        }
    }
    out
}

/// Starts the master, waits until every chunkserver is back, and returns what the master logged
/// in this run.
fn start_and_read_log(cluster: &mut Cluster) -> String {
    let offset = cluster.log_of(Process::Master).len();
    start_master_with_chunkservers(cluster);
    let said = log_since(cluster, offset);
    for line in said
        .lines()
        .filter(|l| l.contains("metadata opened") || l.contains("REBUILT"))
    {
        eprintln!("master_crash: the master said: {line}");
    }
    said
}

/// Starts the master and waits until every chunkserver has registered with it again, so that
/// the reads that follow check the rebuilt metadata, not how the mount copes with the instant
/// after a start when the master does not know yet where any copy is (the kill test does that).
fn start_master_with_chunkservers(cluster: &mut Cluster) {
    cluster.start_master();
    let wanted = cluster.chunkserver_count();
    wait_until(
        Duration::from_secs(20),
        "every chunkserver is registered with the master again",
        || {
            let status = cluster.run_cli_ok(&["status", "--json"]);
            let status: serde_json::Value =
                serde_json::from_str(&status).expect("elkfs status --json prints JSON");
            status["chunkservers"]
                .as_array()
                .is_some_and(|servers| servers.len() == wanted)
        },
    );
}

/// The master's log from byte `offset` on (all of it if the offset does not fit).
fn log_since(cluster: &Cluster, offset: usize) -> String {
    let log = cluster.log_of(Process::Master);
    log.get(offset..).unwrap_or(&log).to_owned()
}

fn assert_contains(log: &str, wording: &str) {
    assert!(
        log.contains(wording),
        "the master's log does not say {wording:?}:\n{log}"
    );
}

/// Stops the master, checks its namespace offline, starts it again and checks the files and
/// that the mount still works.
fn finish_with_the_offline_check(cluster: &mut Cluster, files: &Files) {
    cluster.stop_master();
    let problems =
        elkfs_metastore::check::check_data_dir(cluster.master().data_dir()).expect("check");
    assert!(
        problems.is_empty(),
        "the offline checker finds the rebuilt namespace inconsistent:\n{}",
        lines(&problems)
    );
    start_master_with_chunkservers(cluster);
    files.verify();
    still_works(&files.dir, "at-the-end");
    let problems = walk_and_check(&files.dir);
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}
