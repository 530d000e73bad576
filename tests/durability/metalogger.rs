//! Metaloggers: following the master's changelog, catching up after being away, fetching a
//! fresh image when the master no longer has the records they need, going on after the master
//! or the metalogger itself is SIGKILLed mid-stream, and promotion: the master started on a
//! metalogger's directory serves the same namespace and data to a mount that was never
//! remounted.
//!
//! Changes are made through the mount (several threads) and, for volume, straight through the
//! client library the mount uses. Each test knows what the namespace must hold afterwards, and
//! checks the metaloggers' changelogs record by record against the master's.

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::fs::{self, File};
use std::net::SocketAddr;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::thread;
use std::time::Duration;

use elkfs_client::{Client, ClientConfig};
use elkfs_e2e::pseudo_random;
use elkfs_metastore::changelog::{self, Record};
use elkfs_metastore::image;
use elkfs_proto::info::ClusterStatus;
use elkfs_proto::master::{MasterReply, MasterRequest};
use elkfs_proto::types::{Caller, FileKind, SetAttr, TimeSet, Timestamp};
use elkfs_proto::{InodeId, Status};
use elkfs_testkit::{Cluster, Process, wait_until};

/// How long anything the tests wait for may take: generous, the machine is small and shared.
const DEADLINE: Duration = Duration::from_secs(180);

/// Who the client-library changes are made as.
const ROOT: Caller = Caller { uid: 0, gid: 0 };

/// Sizes of the files written with data: empty, tiny, one block, odd sizes across blocks.
const DATA_SIZES: [usize; 6] = [0, 1, 4096, 200_003, (1 << 20) + 123, 3 << 20];

/// What one path (relative to the mount) must be.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Entry {
    /// A directory with these permission bits.
    Dir { mode: u32 },
    /// A regular file; its mtime (seconds) is compared only where the workload set one.
    File {
        mode: u32,
        size: u64,
        mtime: Option<i64>,
    },
}

/// The namespace the workload built, and the contents of the files it wrote data into.
#[derive(Default)]
struct Expected {
    entries: BTreeMap<PathBuf, Entry>,
    data: BTreeMap<PathBuf, Vec<u8>>,
}

/// The mode a workload file gets at `step`: varied, so a lost chmod shows.
fn file_mode(step: usize) -> u32 {
    0o600 | ((step as u32 % 8) << 3)
}

/// The mode a workload directory gets at `step`.
fn dir_mode(step: usize) -> u32 {
    0o700 | ((step as u32 % 8) << 3)
}

/// chmod through the mount: one record, and modes that do not depend on the test's umask.
fn chmod(path: &Path, mode: u32) {
    fs::set_permissions(path, fs::Permissions::from_mode(mode))
        .unwrap_or_else(|e| panic!("chmod {mode:o} {}: {e}", path.display()));
}

/// Changes through the mount from `threads` threads: each makes `{tag}-m{t}/` and then, per
/// step, creates, chmods and renames a file and makes and chmods a directory (five records).
fn churn_mount(mount: &Path, tag: &str, threads: usize, steps: usize, expected: &mut Expected) {
    let workers: Vec<_> = (0..threads)
        .map(|t| {
            let dir = mount.join(format!("{tag}-m{t}"));
            thread::spawn(move || {
                fs::create_dir(&dir).unwrap_or_else(|e| panic!("mkdir {}: {e}", dir.display()));
                chmod(&dir, 0o755);
                for i in 0..steps {
                    let file = dir.join(format!("f{i}"));
                    File::create(&file)
                        .unwrap_or_else(|e| panic!("create {}: {e}", file.display()));
                    chmod(&file, file_mode(i));
                    let renamed = dir.join(format!("r{i}"));
                    fs::rename(&file, &renamed)
                        .unwrap_or_else(|e| panic!("rename {}: {e}", file.display()));
                    let sub = dir.join(format!("d{i}"));
                    fs::create_dir(&sub).unwrap_or_else(|e| panic!("mkdir {}: {e}", sub.display()));
                    chmod(&sub, dir_mode(i));
                }
            })
        })
        .collect();
    for worker in workers {
        worker.join().expect("a thread changing the mount failed");
    }
    for t in 0..threads {
        let dir = PathBuf::from(format!("{tag}-m{t}"));
        expected
            .entries
            .insert(dir.clone(), Entry::Dir { mode: 0o755 });
        for i in 0..steps {
            let file = Entry::File {
                mode: file_mode(i),
                size: 0,
                mtime: None,
            };
            expected.entries.insert(dir.join(format!("r{i}")), file);
            let sub = Entry::Dir { mode: dir_mode(i) };
            expected.entries.insert(dir.join(format!("d{i}")), sub);
        }
    }
}

/// Writes files of [`DATA_SIZES`] under `{tag}-data/` through the mount, fsyncs them (so their
/// lengths are recorded) and chmods them, remembering their contents.
fn write_data_files(mount: &Path, tag: &str, expected: &mut Expected) {
    let dir = PathBuf::from(format!("{tag}-data"));
    fs::create_dir(mount.join(&dir)).expect("mkdir for the data files");
    chmod(&mount.join(&dir), 0o755);
    expected
        .entries
        .insert(dir.clone(), Entry::Dir { mode: 0o755 });
    for (i, size) in DATA_SIZES.into_iter().enumerate() {
        let path = dir.join(format!("data{i}"));
        let data = pseudo_random(size, (tag.len() * 1000 + i) as u64 + 7);
        let file = mount.join(&path);
        fs::write(&file, &data).unwrap_or_else(|e| panic!("write {}: {e}", file.display()));
        File::open(&file)
            .and_then(|f| f.sync_all())
            .unwrap_or_else(|e| panic!("fsync {}: {e}", file.display()));
        chmod(&file, 0o640);
        let entry = Entry::File {
            mode: 0o640,
            size: size as u64,
            mtime: None,
        };
        expected.entries.insert(path.clone(), entry);
        expected.data.insert(path, data);
    }
}

/// A client-library session with the master (the mount's library, without FUSE): for changes
/// in bulk, and for the master's status. It reconnects by itself when the master restarts.
struct Session {
    runtime: tokio::runtime::Runtime,
    client: Arc<Client>,
}

impl Session {
    /// Opens a session with the master at `master`.
    fn connect(master: SocketAddr) -> Session {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("a tokio runtime");
        let target = master.to_string();
        let client = runtime
            .block_on(Client::connect(
                &target,
                "/",
                "metalogger-test",
                ClientConfig::default(),
            ))
            .unwrap_or_else(|e| panic!("connecting the client library to {target}: {e}"));
        Session { runtime, client }
    }

    /// What `elkfs status` shows: versions, metaloggers, chunkservers, inode count.
    fn status(&self) -> ClusterStatus {
        match self
            .runtime
            .block_on(self.client.master.request(&MasterRequest::Status))
        {
            Ok(MasterReply::Status(status)) => status,
            other => panic!("asking the master for its status: {other:?}"),
        }
    }

    /// The master's metadata version: the version of its last changelog record.
    fn version(&self) -> u64 {
        self.status().metadata_version
    }

    /// Under `/{tag}-c/`, `tasks` concurrent tasks take `steps` steps each of four records:
    /// create a file, chmod it, rename it and set its mtime.
    fn churn(&self, tag: &str, tasks: usize, steps: usize, expected: &mut Expected) {
        let dir_name = format!("{tag}-c");
        let client = self.client.clone();
        let dir_bytes = dir_name.clone().into_bytes();
        self.runtime.block_on(async move {
            let dir = client
                .mkdir(client.root(), &dir_bytes, 0o755, 0, ROOT)
                .await
                .unwrap_or_else(|s| panic!("mkdir {tag}-c: {s}"))
                .inode;
            let workers: Vec<_> = (0..tasks)
                .map(|t| tokio::spawn(churn_task(client.clone(), dir, t, steps)))
                .collect();
            for worker in workers {
                worker.await.expect("a task changing the namespace failed");
            }
        });
        let dir = PathBuf::from(dir_name);
        expected
            .entries
            .insert(dir.clone(), Entry::Dir { mode: 0o755 });
        for t in 0..tasks {
            for i in 0..steps {
                let entry = Entry::File {
                    mode: file_mode(i),
                    size: 0,
                    mtime: Some(mtime_of(i)),
                };
                expected
                    .entries
                    .insert(dir.join(format!("k{t}-{i}")), entry);
            }
        }
    }
}

/// The mtime (seconds) a client-library file gets at `step`.
fn mtime_of(step: usize) -> i64 {
    1_500_000_000 + step as i64
}

/// One task of [`Session::churn`]: `steps` files in `dir`, four records each.
async fn churn_task(client: Arc<Client>, dir: InodeId, task: usize, steps: usize) {
    for i in 0..steps {
        let (name, new_name) = (format!("n{task}-{i}"), format!("k{task}-{i}"));
        let fail = |what: &str, s: Status| -> ! { panic!("{what} {name}: {s}") };
        let attr = client
            .mknod(dir, name.as_bytes(), FileKind::File, 0o644, 0, 0, ROOT)
            .await
            .unwrap_or_else(|s| fail("mknod", s));
        let mode = SetAttr {
            mode: Some(file_mode(i)),
            ..SetAttr::default()
        };
        client
            .setattr(attr.inode, mode, ROOT)
            .await
            .unwrap_or_else(|s| fail("chmod", s));
        client
            .rename(dir, name.as_bytes(), dir, new_name.as_bytes(), 0)
            .await
            .unwrap_or_else(|s| fail("rename", s));
        let time = Timestamp {
            secs: mtime_of(i),
            nanos: 0,
        };
        let mtime = SetAttr {
            mtime: Some(TimeSet::At(time)),
            ..SetAttr::default()
        };
        client
            .setattr(attr.inode, mtime, ROOT)
            .await
            .unwrap_or_else(|s| fail("set the mtime of", s));
    }
}

/// Waits until at least `count` connected metaloggers tell the master they hold `version`.
fn wait_until_metaloggers_hold(session: &Session, count: usize, version: u64) {
    let what = format!("{count} metalogger(s) hold version {version}");
    wait_until(DEADLINE, &what, || {
        let status = session.status();
        status
            .metaloggers
            .iter()
            .filter(|m| m.version >= version)
            .count()
            >= count
    });
}

/// The log of the last run of a process (the harness marks each start in the log).
fn last_run_log(cluster: &Cluster, which: Process) -> String {
    let log = cluster.log_of(which);
    match log.rfind("[elkfs-testkit] starting") {
        Some(at) => log[at..].to_owned(),
        None => log,
    }
}

/// The version a metalogger said its copy held when it (last) opened it.
fn opened_at_version(log: &str) -> u64 {
    let line = log
        .lines()
        .find(|l| l.contains("metadata copy opened"))
        .unwrap_or_else(|| panic!("the metalogger did not say it opened its copy:\n{log}"));
    line.split_whitespace()
        .find_map(|field| field.strip_prefix("version="))
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no version in {line:?}"))
}

/// Every record of the changelog in data directory `dir`, oldest first; a record cut short at
/// the very end is left out (the master may be writing it). Panics on a damaged record and on a
/// gap, a duplicate or a record out of order: a changelog holds each version exactly once.
fn changelog_of(dir: &Path) -> Vec<Record> {
    let files = changelog::list_files(&dir.join("changelog"))
        .unwrap_or_else(|e| panic!("listing the changelog in {}: {e}", dir.display()));
    let mut records: Vec<Record> = Vec::new();
    let count = files.len();
    for (n, (first, path)) in files.into_iter().enumerate() {
        if let Some(last) = records.last() {
            assert_eq!(
                first,
                last.version + 1,
                "{} does not start where the file before it ends",
                path.display()
            );
        }
        let bytes = fs::read(&path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
        let mut rest = &bytes[..];
        let mut next = first;
        while rest.len() >= 8 {
            let len = u32::from_le_bytes([rest[0], rest[1], rest[2], rest[3]]) as usize;
            let Some((raw, tail)) = rest.split_at_checked(8 + len) else {
                break;
            };
            let record = match changelog::decode_raw(raw) {
                Ok(Some(record)) => record,
                Ok(None) if tail.is_empty() && n + 1 == count => break,
                other => panic!("a damaged record in {}: {other:?}", path.display()),
            };
            assert_eq!(
                record.version,
                next,
                "{}: record {} where {next} was expected",
                path.display(),
                record.version
            );
            next += 1;
            records.push(record);
            rest = tail;
        }
        let whole = rest.is_empty() || n + 1 == count;
        assert!(whole, "{} ends in a partial record", path.display());
    }
    records
}

/// The first and last version of a changelog that holds at least one record.
fn version_range(records: &[Record]) -> (u64, u64) {
    match (records.first(), records.last()) {
        (Some(first), Some(last)) => (first.version, last.version),
        _ => panic!("the changelog holds no record"),
    }
}

/// Checks that a metalogger's records are the master's wherever both reach, and that the
/// metalogger holds nothing the master does not.
fn assert_same_records(copy: &[Record], master: &[Record], whose: &str) {
    let (copy_first, copy_last) = version_range(copy);
    let (master_first, master_last) = version_range(master);
    assert!(
        copy_last <= master_last,
        "{whose} holds records up to {copy_last}, past the master's last, {master_last}"
    );
    let from = copy_first.max(master_first);
    assert!(
        from <= copy_last,
        "{whose} holds {copy_first}..={copy_last}, the master {master_first}..={master_last}: \
         nothing to compare"
    );
    for version in from..=copy_last {
        let ours = &copy[(version - copy_first) as usize];
        let theirs = &master[(version - master_first) as usize];
        assert_eq!(ours, theirs, "{whose} differs from the master at {version}");
    }
}

/// Promotion after losing the master: it is SIGKILLed and its directory deleted, metalogger `i`
/// is stopped and the master started on the metalogger's directory, on the same port. Checks
/// that the metalogger held exactly the master's records and that the promoted master replayed
/// them all; returns the version it starts at.
fn promote(cluster: &mut Cluster, i: usize) -> u64 {
    cluster.kill_master();
    cluster.stop_metalogger(i);
    let copy_dir = cluster.metalogger(i).data_dir().to_path_buf();
    let master_dir = cluster.master().data_dir().to_path_buf();
    let copy = changelog_of(&copy_dir);
    assert_same_records(
        &copy,
        &changelog_of(&master_dir),
        &format!("metalogger {i}"),
    );
    let (_, last) = version_range(&copy);
    fs::remove_dir_all(&master_dir)
        .unwrap_or_else(|e| panic!("deleting {}: {e}", master_dir.display()));
    cluster.set_master_data_dir(&copy_dir);
    cluster.start_master();
    let log = last_run_log(cluster, Process::Master);
    let replayed = log
        .lines()
        .any(|l| l.contains("changelog records") && l.contains(&format!("now at version {last}")));
    assert!(
        replayed,
        "the promoted master does not say it replayed up to {last}:\n{log}"
    );
    last
}

/// Reads a file through the mount, bypassing its page cache.
fn read_uncached(path: &Path) -> Vec<u8> {
    elkfs_e2e::read_uncached(path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()))
}

/// Every entry under `mount`, as [`Entry`] values with their mtimes.
fn walk(mount: &Path) -> BTreeMap<PathBuf, Entry> {
    let mut found = BTreeMap::new();
    let mut dirs = vec![PathBuf::new()];
    while let Some(dir) = dirs.pop() {
        let listing = fs::read_dir(mount.join(&dir))
            .unwrap_or_else(|e| panic!("readdir {}: {e}", dir.display()));
        for item in listing {
            let item = item.unwrap_or_else(|e| panic!("readdir {}: {e}", dir.display()));
            let path = dir.join(item.file_name());
            let meta = fs::symlink_metadata(mount.join(&path))
                .unwrap_or_else(|e| panic!("stat {}: {e}", path.display()));
            let mode = meta.mode() & 0o7777;
            let entry = if meta.is_dir() {
                dirs.push(path.clone());
                Entry::Dir { mode }
            } else {
                Entry::File {
                    mode,
                    size: meta.len(),
                    mtime: Some(meta.mtime()),
                }
            };
            found.insert(path, entry);
        }
    }
    found
}

/// Walks the mount and checks it holds exactly the expected entries, then reads every data file
/// back byte for byte.
fn check_namespace(mount: &Path, expected: &Expected) {
    let found = walk(mount);
    let mut problems = Vec::new();
    for (path, want) in &expected.entries {
        let got = found.get(path).map(|got| match (want, got) {
            (Entry::File { mtime: None, .. }, Entry::File { mode, size, .. }) => Entry::File {
                mode: *mode,
                size: *size,
                mtime: None,
            },
            _ => got.clone(),
        });
        match got {
            None => problems.push(format!("{} is missing", path.display())),
            Some(got) if got != *want => {
                problems.push(format!("{}: {got:?}, expected {want:?}", path.display()))
            }
            Some(_) => {}
        }
    }
    for path in found.keys().filter(|p| !expected.entries.contains_key(*p)) {
        problems.push(format!("{} should not exist", path.display()));
    }
    assert!(
        problems.is_empty(),
        "{} of {} entries are wrong, for example:\n{}",
        problems.len(),
        expected.entries.len(),
        problems[..problems.len().min(10)].join("\n")
    );
    for (path, data) in &expected.data {
        let got = read_uncached(&mount.join(path));
        assert!(
            got == *data,
            "{} reads back {} bytes that differ from the {} written",
            path.display(),
            got.len(),
            data.len()
        );
    }
}

/// After a promotion: chunkservers are back with the new master, the mount still sees every
/// file with its data, and takes new changes.
fn check_promoted(cluster: &Cluster, session: &Session, expected: &Expected) {
    let servers = cluster.chunkserver_count();
    wait_until(DEADLINE, "the chunkservers are back", || {
        session.status().chunkservers.len() == servers
    });
    let mount = cluster.mount_path(0);
    check_namespace(mount, expected);
    let file = mount.join("written-after-promotion");
    fs::write(&file, b"the promoted master takes changes").expect("write after promotion");
    assert_eq!(
        read_uncached(&file),
        b"the promoted master takes changes",
        "a file written after the promotion"
    );
}

/// The acceptance test: a metalogger follows 100 000 changes, is stopped, misses 10 000
/// (file data among them), comes back and catches up from its own files; then the master's
/// directory is deleted, the metalogger's is promoted, and the same mount sees every file and
/// reads its data.
#[test]
fn metalogger_follows_misses_catches_up_and_is_promoted() {
    let mut cluster = Cluster::builder().chunkservers(2).metaloggers(1).start();
    let mount = cluster.mount_path(0).to_path_buf();
    let session = Session::connect(cluster.master_addr());
    let mut expected = Expected::default();

    let start = session.version();
    churn_mount(&mount, "a", 3, 1200, &mut expected);
    write_data_files(&mount, "a", &mut expected);
    session.churn("a", 16, 1400, &mut expected);
    let followed = session.version();
    assert!(
        followed - start >= 100_000,
        "only {} changes were made",
        followed - start
    );
    wait_until_metaloggers_hold(&session, 1, followed);
    cluster.stop_metalogger(0);
    let (_, held) = version_range(&changelog_of(cluster.metalogger(0).data_dir()));
    assert!(held >= followed, "the metalogger stopped at {held}");

    churn_mount(&mount, "b", 2, 300, &mut expected);
    write_data_files(&mount, "b", &mut expected);
    session.churn("b", 8, 250, &mut expected);
    let missed_to = session.version();
    assert!(
        missed_to - held >= 10_000,
        "only {} changes were missed",
        missed_to - held
    );
    cluster.start_metalogger(0);
    wait_until_metaloggers_hold(&session, 1, missed_to);
    let plain = cluster.run_cli_ok(&["status", "-p"]);
    let shown = plain
        .lines()
        .filter_map(|l| l.strip_prefix("metadata backup loggers:\t"))
        .filter_map(|l| l.rsplit('\t').next()?.trim().parse::<u64>().ok())
        .collect::<Vec<_>>();
    assert!(
        shown.len() == 1 && shown[0] >= missed_to,
        "elkfs status -p shows metalogger versions {shown:?}, expected one at {missed_to}+:\n{plain}"
    );
    let log = last_run_log(&cluster, Process::Metalogger(0));
    assert_eq!(opened_at_version(&log), held, "where the copy went on from");
    assert!(
        !log.contains("fetching its image"),
        "the metalogger fetched an image although the changelog reached back:\n{log}"
    );

    let inodes = session.status().inodes;
    promote(&mut cluster, 0);
    assert_eq!(
        session.status().inodes,
        inodes,
        "inodes after the promotion"
    );
    check_promoted(&cluster, &session, &expected);
}

/// A metalogger away while the master wrote newer images and deleted the changelog files it
/// would need is told so, fetches the master's newest image, catches up from there, and its
/// directory (an image and the changelog after it) can be promoted.
#[test]
fn metalogger_too_far_behind_fetches_an_image_and_can_be_promoted() {
    let config = tempfile::NamedTempFile::new().expect("a config file");
    fs::write(
        config.path(),
        "changelog_file_mib = 1\nimage_every_records = 4000\n",
    )
    .expect("writing the master's config");
    let mut cluster = Cluster::builder()
        .chunkservers(2)
        .metaloggers(1)
        .master_args([OsString::from("--config"), config.path().into()])
        .start();
    let mount = cluster.mount_path(0).to_path_buf();
    let session = Session::connect(cluster.master_addr());
    let mut expected = Expected::default();

    churn_mount(&mount, "a", 2, 200, &mut expected);
    write_data_files(&mount, "a", &mut expected);
    session.churn("a", 8, 250, &mut expected);
    wait_until_metaloggers_hold(&session, 1, session.version());
    cluster.stop_metalogger(0);
    let (_, held) = version_range(&changelog_of(cluster.metalogger(0).data_dir()));

    churn_mount(&mount, "b", 1, 200, &mut expected);
    write_data_files(&mount, "b", &mut expected);
    let master_log = cluster.master().data_dir().join("changelog");
    let reaches_back = || {
        let files = changelog::list_files(&master_log).expect("listing the master's changelog");
        files.first().is_some_and(|(first, _)| *first <= held + 1)
    };
    // The master looks for a due image every 2 s and keeps the changelog from the older of its
    // two newest images: it takes a few images, so a few checks, however fast the rounds go.
    let started = std::time::Instant::now();
    let mut rounds = 0;
    while reaches_back() {
        assert!(
            started.elapsed() < std::time::Duration::from_secs(90),
            "the master still has the changelog from {held} after {rounds} rounds of changes"
        );
        session.churn(&format!("b{rounds}"), 8, 300, &mut expected);
        rounds += 1;
    }
    let gone_to = session.version();

    cluster.start_metalogger(0);
    wait_until_metaloggers_hold(&session, 1, gone_to);
    let log = last_run_log(&cluster, Process::Metalogger(0));
    assert!(
        log.contains("fetching its image") && log.contains("metadata image received"),
        "the metalogger does not say it fetched an image:\n{log}"
    );
    let images = image::list(cluster.metalogger(0).data_dir()).expect("listing images");
    let newest = images.first().map_or(0, |(v, _)| *v);
    assert!(
        newest > held,
        "the metalogger's newest image is of {newest}, not after {held}"
    );

    promote(&mut cluster, 0);
    check_promoted(&cluster, &session, &expected);
}

/// Two metaloggers follow while the master is SIGKILLed and restarted under load, and one of
/// them is SIGKILLed mid-stream and restarted while the load goes on: both end with exactly the
/// master's records, each version once, the killed one having gone on from its own files.
#[test]
fn two_metaloggers_go_on_after_master_and_metalogger_crashes() {
    let mut cluster = Cluster::builder()
        .chunkservers(1)
        .mounts(0)
        .metaloggers(2)
        .ready_timeout(DEADLINE)
        .start();
    let session = Session::connect(cluster.master_addr());
    let start = session.version();
    let master = cluster.master_addr();
    let load = thread::spawn(move || {
        Session::connect(master).churn("load", 8, 1500, &mut Expected::default());
    });
    let made = |changes: u64| {
        let what = format!("{changes} changes were made");
        wait_until(DEADLINE, &what, || {
            load.is_finished() || session.version() >= start + changes
        });
        assert!(!load.is_finished(), "the load ended before {what}");
    };

    made(10_000);
    cluster.kill_master();
    cluster.start_master();
    made(25_000);
    cluster.kill_metalogger(1);
    made(30_000);
    // Ready once it has caught up, which it can do only when the load pauses or ends.
    cluster.start_metalogger(1);
    load.join().expect("the load failed");
    let log = last_run_log(&cluster, Process::Metalogger(1));
    assert!(
        opened_at_version(&log) > start + 10_000,
        "the restarted metalogger did not go on from its own files:\n{log}"
    );
    assert!(
        !log.contains("fetching its image"),
        "the restarted metalogger fetched an image:\n{log}"
    );

    session.churn("after", 4, 500, &mut Expected::default());
    let last = session.version();
    wait_until_metaloggers_hold(&session, 2, last);
    cluster.stop_metalogger(0);
    cluster.stop_metalogger(1);
    let master_records = changelog_of(cluster.master().data_dir());
    for i in 0..2 {
        let copy = changelog_of(cluster.metalogger(i).data_dir());
        let (first, held) = version_range(&copy);
        assert_eq!(first, 1, "metalogger {i}'s changelog starts at {first}");
        assert!(held >= last, "metalogger {i} holds {held}, not {last}");
        assert_same_records(&copy, &master_records, &format!("metalogger {i}"));
    }
}
