//! What the healing tests share: quick master settings, a view of every chunk file
//! on the servers' disks, the client library (goals, chunk locations), background readers and
//! writers, and polling with a record of what was still missing.

use std::collections::{BTreeMap, BTreeSet};
use std::ffi::OsString;
use std::fs::{File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::net::SocketAddr;
use std::os::fd::IntoRawFd;
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use elkfs_client::{Client, ClientConfig};
use elkfs_e2e::{ChunkFile, ask_data, chunk_files};
pub use elkfs_e2e::{Frozen, Tmpfs, fill_up};
use elkfs_proto::InodeId;
use elkfs_proto::capability::Access;
use elkfs_proto::data::{DataReply, DataRequest};
use elkfs_proto::master::{MasterReply, MasterRequest, WriteLease};
use elkfs_testkit::{Cluster, ClusterBuilder, Process, wait_until};
use tempfile::TempDir;

pub const MIB: usize = 1 << 20;
/// Size of a full chunk.
pub const CHUNK_SIZE: usize = 64 * MIB;
/// Bytes in front of the data in a chunk file (docs/FORMAT.md).
pub const CHUNK_HEADER: usize = 64 * 1024;

/// How often [`eventually`] looks (its checks scan directories; no need to do it every 20 ms).
const CHECK_EVERY: Duration = Duration::from_millis(200);

/// Master settings for quick healing: a server that vanished or stopped is waited for 1 s, and
/// copying may start as soon as the master is up.
pub const QUICK_MASTER: &str = "\
replication_delay_lost_secs = 1
replication_delay_planned_secs = 1
replication_startup_delay_secs = 0
";

/// Configuration files for the master and the chunkservers, in a directory that lives as long
/// as this value (declare it before the cluster).
pub struct Configs {
    _dir: TempDir,
    master: PathBuf,
    chunkserver: PathBuf,
}

impl Configs {
    /// Writes `master` and `chunkserver` (TOML) to files.
    pub fn new(master: &str, chunkserver: &str) -> Configs {
        let dir = tempfile::Builder::new()
            .prefix("elkfs-heal-config-")
            .tempdir()
            .expect("creating a config dir");
        let (m, c) = (
            dir.path().join("master.toml"),
            dir.path().join("chunkserver.toml"),
        );
        std::fs::write(&m, master).expect("writing master.toml");
        std::fs::write(&c, chunkserver).expect("writing chunkserver.toml");
        Configs {
            _dir: dir,
            master: m,
            chunkserver: c,
        }
    }

    /// A cluster builder whose master and chunkservers read these files.
    pub fn builder(&self) -> ClusterBuilder {
        Cluster::builder()
            .master_args(config_arg(&self.master))
            .chunkserver_args(config_arg(&self.chunkserver))
    }
}

fn config_arg(file: &Path) -> [OsString; 2] {
    ["--config".into(), file.as_os_str().to_owned()]
}

/// Every chunk file on the disks of some chunkservers, by chunk id. Files at version 0 (copies
/// still being built by replication) are left out.
pub struct Disks {
    by_chunk: BTreeMap<u64, Vec<ChunkFile>>,
}

impl Disks {
    /// Lists every data directory of `servers`.
    pub fn scan(cluster: &Cluster, servers: &[usize]) -> Disks {
        let mut by_chunk: BTreeMap<u64, Vec<ChunkFile>> = BTreeMap::new();
        for &i in servers {
            for dir in cluster.chunkserver_data_dirs(i) {
                for f in chunk_files(i, dir) {
                    if f.version != 0 {
                        by_chunk.entry(f.id).or_default().push(f);
                    }
                }
            }
        }
        Disks { by_chunk }
    }

    /// Every chunk id seen.
    pub fn chunks(&self) -> Vec<u64> {
        self.by_chunk.keys().copied().collect()
    }

    /// Every file of `chunk`, whatever its version.
    pub fn files(&self, chunk: u64) -> &[ChunkFile] {
        self.by_chunk.get(&chunk).map_or(&[], Vec::as_slice)
    }

    /// The highest version of `chunk` on these disks: the valid one.
    pub fn version(&self, chunk: u64) -> Option<u32> {
        self.files(chunk).iter().map(|f| f.version).max()
    }

    /// Files of `chunk` at its highest version.
    pub fn valid_files(&self, chunk: u64) -> Vec<&ChunkFile> {
        let version = self.version(chunk);
        self.files(chunk)
            .iter()
            .filter(|f| Some(f.version) == version)
            .collect()
    }

    /// Servers holding `chunk` at its highest version.
    pub fn valid_servers(&self, chunk: u64) -> BTreeSet<usize> {
        self.valid_files(chunk).iter().map(|f| f.server).collect()
    }

    /// Servers holding `chunk` at exactly `version`.
    pub fn servers_at(&self, chunk: u64, version: u32) -> BTreeSet<usize> {
        self.files(chunk)
            .iter()
            .filter(|f| f.version == version)
            .map(|f| f.server)
            .collect()
    }

    /// Files of `chunk` at a version below its highest.
    pub fn stale_files(&self, chunk: u64) -> Vec<&ChunkFile> {
        let version = self.version(chunk);
        self.files(chunk)
            .iter()
            .filter(|f| Some(f.version) != version)
            .collect()
    }

    /// One line about a chunk's files, for messages: `chunk 1A: v3 on [0, 2], v2 on [1]`.
    pub fn describe(&self, chunk: u64) -> String {
        let mut by_version: BTreeMap<u32, Vec<String>> = BTreeMap::new();
        for f in self.files(chunk) {
            let dir = f
                .path
                .parent()
                .and_then(Path::parent)
                .unwrap_or(Path::new(""));
            by_version.entry(f.version).or_default().push(format!(
                "cs{} {}",
                f.server,
                dir.display()
            ));
        }
        let parts: Vec<String> = by_version
            .iter()
            .rev()
            .map(|(v, servers)| format!("v{v} on [{}]", servers.join(", ")))
            .collect();
        format!("chunk {chunk:X}: {}", parts.join("; "))
    }

    /// Chunks that do not have exactly `goal` valid copies or still have stale ones, described;
    /// empty when every chunk is at its goal with nothing left over.
    pub fn off_goal(&self, goal: usize) -> Vec<String> {
        self.by_chunk
            .keys()
            .filter(|&&c| self.valid_servers(c).len() != goal || !self.stale_files(c).is_empty())
            .map(|&c| self.describe(c))
            .collect()
    }
}

/// `Ok` if `problems` is empty, else the first few and how many there are.
pub fn none_left(problems: Vec<String>) -> Result<(), String> {
    if problems.is_empty() {
        return Ok(());
    }
    let shown: Vec<&str> = problems.iter().take(4).map(String::as_str).collect();
    Err(format!("{} left: {}", problems.len(), shown.join(" | ")))
}

/// A chunk of a file as the master has it: id, current version, servers listed for reads.
#[derive(Clone, Debug)]
pub struct ChunkLocation {
    pub index: u32,
    pub chunk: u64,
    pub version: u32,
    pub servers: Vec<SocketAddr>,
}

/// A session with the master through the client library, for what the mount does not offer:
/// setting goals and asking where a file's chunks are.
pub struct Admin {
    runtime: tokio::runtime::Runtime,
    client: Arc<Client>,
}

impl Admin {
    /// Connects to the cluster's master.
    pub fn connect(cluster: &Cluster) -> Admin {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("a tokio runtime");
        let addr = cluster.master_addr().to_string();
        let client = runtime
            .block_on(Client::connect(
                &addr,
                "/",
                "healing-test",
                ClientConfig::default(),
            ))
            .unwrap_or_else(|e| panic!("connecting the client library to {addr}: {e}"));
        Admin { runtime, client }
    }

    /// Sets the goal of what `path` (in the mount) names, of the tree below it too when
    /// `recursive`; returns how many inodes changed and how many already had that goal.
    pub fn set_goal(&self, path: &Path, goal: u8, recursive: bool) -> (u64, u64) {
        let inode = inode_of(path);
        self.runtime
            .block_on(self.client.set_goal(inode, goal, recursive))
            .unwrap_or_else(|s| panic!("set_goal({}, {goal}) failed: {s}", path.display()))
    }

    /// The chunkservers as the master sees them (`elkfs status`).
    pub fn servers(&self) -> Vec<elkfs_proto::info::ServerStatus> {
        match self
            .runtime
            .block_on(self.client.master.request(&MasterRequest::Status))
        {
            Ok(MasterReply::Status(status)) => status.chunkservers,
            other => panic!("asking the master for its status: {other:?}"),
        }
    }

    /// The chunks of the file at `path` (in the mount): what the master would tell a reader.
    pub fn chunks_of(&self, path: &Path) -> Vec<ChunkLocation> {
        let inode = inode_of(path);
        let mut out = Vec::new();
        let mut index = 0u32;
        loop {
            let request = MasterRequest::ReadChunk { inode, index };
            let location = match self.runtime.block_on(self.client.master.request(&request)) {
                Ok(MasterReply::ReadLocation(l)) => l,
                Ok(other) => panic!("ReadChunk answered {other:?}"),
                Err(s) => panic!("ReadChunk({}, {index}) failed: {s}", path.display()),
            };
            if let Some((chunk, version)) = location.chunk {
                out.push(ChunkLocation {
                    index,
                    chunk: chunk.0,
                    version: version.0,
                    servers: location.servers,
                });
            }
            index += 1;
            if u64::from(index) * CHUNK_SIZE as u64 >= location.file_length {
                return out;
            }
        }
    }
}

impl Admin {
    /// A write lease on chunk `index` of `inode` (the file at `path`) for this session.
    fn write_lease(&self, path: &Path, inode: InodeId, index: u32) -> WriteLease {
        match self
            .runtime
            .block_on(self.client.master.request(&MasterRequest::WriteChunk {
                inode,
                index,
                carried: 0,
            })) {
            Ok(MasterReply::WriteLease(lease)) => lease,
            other => panic!("WriteChunk({}, {index}) answered {other:?}", path.display()),
        }
    }

    /// Takes a write lease on chunk `index` of the file at `path` and ends it without writing,
    /// as a client would that died before its first write: the master makes the chunk (if new)
    /// and tells its servers to create it. Returns the chunk's id.
    pub fn lease_without_writing(&self, path: &Path, index: u32) -> u64 {
        let inode = inode_of(path);
        let lease = self.write_lease(path, inode, index);
        let length = std::fs::metadata(path).expect("stat").len();
        let end = MasterRequest::WriteEnd {
            inode,
            index,
            chunk: lease.chunk,
            length,
        };
        if let Err(s) = self.runtime.block_on(self.client.master.request(&end)) {
            panic!("WriteEnd({}, {index}) failed: {s}", path.display());
        }
        lease.chunk.0
    }

    /// Writes `data` at `offset` of the file at `path` under a write lease of this session, on
    /// every server of the chain, and never reports the new length: what a client leaves that
    /// dies between its writes and its report. Drop the `Admin` to end the session (and the
    /// lease) as such a client's death does.
    pub fn write_unreported(&self, path: &Path, offset: u64, data: &[u8]) {
        let inode = inode_of(path);
        let index = (offset / CHUNK_SIZE as u64) as u32;
        let lease = self.write_lease(path, inode, index);
        let (first, rest) = lease.chain.split_first().expect("a chain of servers");
        let request = DataRequest::Write {
            chunk: lease.chunk,
            version: lease.version,
            offset: (offset % CHUNK_SIZE as u64) as u32,
            chain: rest.to_vec(),
            capability: lease.capability,
            create: lease.capability.access == Access::Create,
        };
        let answer = self.runtime.block_on(ask_data(*first, &request, data));
        assert_eq!(
            answer.0,
            Ok(DataReply::Written),
            "the unreported write at {offset}"
        );
    }
}

fn inode_of(path: &Path) -> InodeId {
    let meta = std::fs::metadata(path)
        .unwrap_or_else(|e| panic!("stat {} through the mount: {e}", path.display()));
    InodeId(meta.ino())
}

/// The index of the chunkserver whose data address is `addr`.
pub fn server_at(cluster: &Cluster, addr: SocketAddr) -> Option<usize> {
    (0..cluster.chunkserver_count()).find(|&i| cluster.chunkserver(i).addr() == addr)
}

/// Writes `file` through the mount, checks that its chunks have 2 copies on `servers`, and
/// returns one of the servers holding its first chunk.
pub fn written_with_a_holder(
    cluster: &Cluster,
    admin: &Admin,
    servers: &[usize],
    file: &(PathBuf, Arc<[u8]>),
) -> usize {
    write_file(&file.0, &file.1).expect("write");
    check_placement(cluster, admin, servers, std::slice::from_ref(file), 2)
        .unwrap_or_else(|e| panic!("after the write: {e}"));
    let chunk = admin.chunks_of(&file.0)[0].chunk;
    *Disks::scan(cluster, servers)
        .valid_servers(chunk)
        .first()
        .expect("a copy")
}

/// Checks, for every chunk of each file, that exactly `copies` of `servers` hold it at the
/// master's current version, that no stale copy is left on them, and that the master lists
/// exactly those servers for reads. Cheap enough to poll: reads no chunk data.
pub fn check_placement(
    cluster: &Cluster,
    admin: &Admin,
    servers: &[usize],
    files: &[(PathBuf, Arc<[u8]>)],
    copies: usize,
) -> Result<(), String> {
    check_chunks(cluster, admin, servers, files, copies, false)
}

/// `Ok` once the log of `process` has a line with `needle`.
pub fn logged(cluster: &Cluster, process: Process, needle: &str) -> Result<(), String> {
    match cluster.log_of(process).contains(needle) {
        true => Ok(()),
        false => Err(format!("no \"{needle}\" in its log")),
    }
}

/// Waits until the master, having lost `victim` (`how` it went: "cut-off", "silent"), keeps
/// `file`'s chunks at 2 copies on the `live` servers and names only those for reads.
pub fn wait_replaced(
    cluster: &Cluster,
    admin: &Admin,
    live: &[usize],
    file: &(PathBuf, Arc<[u8]>),
    victim: usize,
    how: &str,
) {
    eventually(
        Duration::from_secs(45),
        &format!(
            "the master treats the {how} cs{victim} as lost: 2 copies on the others, and it names only those for reads"
        ),
        || check_placement(cluster, admin, live, std::slice::from_ref(file), 2),
    );
}

/// Waits until `victim` is back and `file`'s chunks have exactly 2 copies on `all` servers; then
/// `readers` read a few more times, must have read no wrong byte, and every copy is checked.
pub fn wait_back_at_two_copies(
    cluster: &Cluster,
    admin: &Admin,
    all: &[usize],
    file: (PathBuf, Arc<[u8]>),
    victim: usize,
    readers: Readers,
) {
    eventually(
        Duration::from_secs(45),
        &format!("cs{victim} is back and the chunk has exactly 2 copies"),
        || check_placement(cluster, admin, all, std::slice::from_ref(&file), 2),
    );
    readers.wait_for_reads(4);
    readers.finish_without_errors();
    check_copies(cluster, admin, all, &[file], 2).unwrap_or_else(|e| panic!("at the end: {e}"));
}

/// [`check_placement`], and each copy holds exactly the file's bytes for that chunk.
pub fn check_copies(
    cluster: &Cluster,
    admin: &Admin,
    servers: &[usize],
    files: &[(PathBuf, Arc<[u8]>)],
    copies: usize,
) -> Result<(), String> {
    check_chunks(cluster, admin, servers, files, copies, true)
}

fn check_chunks(
    cluster: &Cluster,
    admin: &Admin,
    servers: &[usize],
    files: &[(PathBuf, Arc<[u8]>)],
    copies: usize,
    compare_bytes: bool,
) -> Result<(), String> {
    let disks = Disks::scan(cluster, servers);
    let mut problems = Vec::new();
    for (path, data) in files {
        let chunks = admin.chunks_of(path);
        let expected_chunks = data.len().div_ceil(CHUNK_SIZE);
        if chunks.len() != expected_chunks {
            problems.push(format!(
                "{}: the master lists {} chunks, expected {expected_chunks}",
                path.display(),
                chunks.len()
            ));
        }
        for c in &chunks {
            let holders = disks.servers_at(c.chunk, c.version);
            let listed: BTreeSet<usize> = c
                .servers
                .iter()
                .filter_map(|a| server_at(cluster, *a))
                .collect();
            let what = format!(
                "{} chunk {} ({})",
                path.display(),
                c.index,
                disks.describe(c.chunk)
            );
            if holders.len() != copies {
                problems.push(format!(
                    "{what}: {} copies at v{}, want {copies}",
                    holders.len(),
                    c.version
                ));
            }
            if disks.version(c.chunk) != Some(c.version) || !disks.stale_files(c.chunk).is_empty() {
                problems.push(format!("{what}: the master's version is v{}", c.version));
            }
            if listed != holders {
                problems.push(format!(
                    "{what}: the master lists servers {listed:?} for reads"
                ));
            }
            if !compare_bytes {
                continue;
            }
            let start = c.index as usize * CHUNK_SIZE;
            let want = &data[start..data.len().min(start + CHUNK_SIZE)];
            for f in disks
                .files(c.chunk)
                .iter()
                .filter(|f| f.version == c.version)
            {
                if let Err(e) = copy_holds(f, want) {
                    problems.push(format!("{what}: the copy {} {e}", f.path.display()));
                }
            }
        }
    }
    none_left(problems)
}

/// Whether a chunk file's data is exactly `want` (its hashes are the chunkserver's business).
pub fn copy_holds(file: &ChunkFile, want: &[u8]) -> Result<(), String> {
    let mut f = File::open(&file.path).map_err(|e| format!("cannot be opened: {e}"))?;
    let mut data = Vec::with_capacity(want.len());
    f.seek(SeekFrom::Start(CHUNK_HEADER as u64))
        .and_then(|_| f.read_to_end(&mut data))
        .map_err(|e| format!("cannot be read: {e}"))?;
    if data.len() != want.len() {
        return Err(format!(
            "holds {} bytes of data, not {}",
            data.len(),
            want.len()
        ));
    }
    match data.iter().zip(want).position(|(a, b)| a != b) {
        None => Ok(()),
        Some(at) => Err(format!("differs at data byte {at}")),
    }
}

/// Flips the lowest bit of the data byte at `offset` of a chunk file, behind the chunkserver's
/// back, as a failing disk would.
pub fn flip_bit(file: &ChunkFile, offset: usize) {
    let mut f = OpenOptions::new()
        .read(true)
        .write(true)
        .open(&file.path)
        .unwrap_or_else(|e| panic!("opening {}: {e}", file.path.display()));
    let at = (CHUNK_HEADER + offset) as u64;
    let mut byte = [0u8; 1];
    f.seek(SeekFrom::Start(at)).expect("seek");
    f.read_exact(&mut byte).expect("read the byte to flip");
    f.seek(SeekFrom::Start(at)).expect("seek");
    f.write_all(&[byte[0] ^ 0x01])
        .expect("write the flipped byte");
    f.sync_all().expect("fsync the damaged chunk file");
}

/// Writes `data` to `path` through the mount (created or truncated), then fsync and close,
/// whose errors count: write-behind errors surface there.
pub fn write_file(path: &Path, data: &[u8]) -> io::Result<()> {
    let mut f = File::create(path)?;
    f.write_all(data)?;
    close_checked(f)
}

/// Writes `data` at `offset` of the existing file at `path` through the mount, then fsync and
/// close, panicking on any error.
pub fn write_at(path: &Path, offset: u64, data: &[u8]) {
    let f = OpenOptions::new()
        .write(true)
        .open(path)
        .unwrap_or_else(|e| panic!("opening {}: {e}", path.display()));
    f.write_all_at(data, offset)
        .unwrap_or_else(|e| panic!("writing at {offset} of {}: {e}", path.display()));
    close_checked(f).unwrap_or_else(|e| panic!("closing {}: {e}", path.display()));
}

/// fsync, then close(2) with its result (dropping a `File` ignores it).
pub fn close_checked(f: File) -> io::Result<()> {
    f.sync_all()?;
    let fd = f.into_raw_fd();
    // SAFETY: `fd` was just taken out of the `File`, so nothing else closes it.
    if unsafe { libc::close(fd) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// `len` bytes of reproducible data, shared by the threads that write and check it.
pub fn data(len: usize, seed: u64) -> Arc<[u8]> {
    elkfs_e2e::pseudo_random(len, seed).into()
}

/// A file written through the mount from a thread, 1 MiB per `write`, so a test can hurt the
/// cluster half-way.
pub struct Writer {
    progress: Arc<AtomicU64>,
    handle: Option<JoinHandle<io::Result<()>>>,
    path: PathBuf,
}

impl Writer {
    /// Starts writing `data` over `path` from offset 0: created if missing, and not truncated,
    /// so an existing file's chunks are rewritten in place (their versions bumped).
    pub fn start(path: &Path, data: Arc<[u8]>) -> Writer {
        let progress = Arc::new(AtomicU64::new(0));
        let counter = progress.clone();
        let target = path.to_path_buf();
        let handle = thread::spawn(move || {
            let mut f = OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(false)
                .open(&target)?;
            for piece in data.chunks(MIB) {
                f.write_all(piece)?;
                counter.fetch_add(piece.len() as u64, Ordering::SeqCst);
            }
            close_checked(f)
        });
        Writer {
            progress,
            handle: Some(handle),
            path: path.to_path_buf(),
        }
    }

    /// Waits until `bytes` were handed to the kernel; panics if the write ended first (the
    /// test would then not hurt the cluster *during* the write).
    pub fn wait_for(&self, bytes: u64) {
        wait_until(
            Duration::from_secs(60),
            &format!("{bytes} bytes are written to {}", self.path.display()),
            || {
                let done = self.progress.load(Ordering::SeqCst);
                if done < bytes && self.handle.as_ref().is_some_and(JoinHandle::is_finished) {
                    panic!(
                        "the write of {} ended after {done} bytes",
                        self.path.display()
                    );
                }
                done >= bytes
            },
        );
    }

    /// Whether the thread is done (written, synced and closed, or failed).
    pub fn is_finished(&self) -> bool {
        self.handle.as_ref().is_none_or(JoinHandle::is_finished)
    }

    /// Waits for the end of the write and returns its result.
    pub fn finish(mut self) -> io::Result<()> {
        let handle = self.handle.take().expect("finished once");
        handle
            .join()
            .unwrap_or_else(|_| panic!("the writer thread panicked"))
    }
}

impl Drop for Writer {
    fn drop(&mut self) {
        // A failing test must not leave a thread writing into a mount being torn down; the
        // cluster's drop unmounts, which ends the writes with errors.
        if let Some(h) = self.handle.take()
            && !thread::panicking()
        {
            let _ = h.join();
        }
    }
}

/// Threads reading files through the mount again and again until stopped, every read a fresh
/// open (so the kernel's cache is dropped and the bytes come from a chunkserver), each compared
/// with the bytes written.
pub struct Readers {
    stop: Arc<AtomicBool>,
    reads: Arc<AtomicU64>,
    threads: Vec<JoinHandle<Vec<String>>>,
}

impl Readers {
    /// Starts `threads` threads, each reading every file in turn (starting at different ones).
    pub fn start(files: &[(PathBuf, Arc<[u8]>)], threads: usize) -> Readers {
        assert!(!files.is_empty(), "nothing to read");
        let stop = Arc::new(AtomicBool::new(false));
        let reads = Arc::new(AtomicU64::new(0));
        let threads = (0..threads)
            .map(|t| {
                let (stop, reads) = (stop.clone(), reads.clone());
                let files = files.to_vec();
                thread::spawn(move || {
                    let mut wrong = Vec::new();
                    let started = Instant::now();
                    for (path, want) in files.iter().cycle().skip(t) {
                        if stop.load(Ordering::SeqCst) {
                            break;
                        }
                        let when = started.elapsed().as_secs_f64();
                        match std::fs::read(path) {
                            Ok(got) if *got == **want => {}
                            Ok(got) => {
                                let at = got.iter().zip(want.iter()).position(|(a, b)| a != b);
                                wrong.push(format!(
                                    "{when:.1}s: {} read {} bytes (want {}), first difference at {at:?}",
                                    path.display(),
                                    got.len(),
                                    want.len()
                                ));
                            }
                            Err(e) => {
                                wrong.push(format!("{when:.1}s: reading {} failed: {e}", path.display()))
                            }
                        }
                        reads.fetch_add(1, Ordering::SeqCst);
                    }
                    wrong
                })
            })
            .collect();
        Readers {
            stop,
            reads,
            threads,
        }
    }

    /// Waits until `n` more whole-file reads have ended (some surely saw the cluster as it is
    /// now).
    pub fn wait_for_reads(&self, n: u64) {
        self.wait_for_reads_within(n, Duration::from_secs(60));
    }

    /// [`Readers::wait_for_reads`] with a deadline of its own.
    pub fn wait_for_reads_within(&self, n: u64, deadline: Duration) {
        let target = self.reads.load(Ordering::SeqCst) + n;
        wait_until(deadline, &format!("{n} more reads end"), || {
            self.reads.load(Ordering::SeqCst) >= target
        });
    }

    /// Stops the readers; panics listing every read that failed or returned wrong bytes.
    pub fn finish_without_errors(mut self) {
        let (reads, wrong) = self.stop_all();
        assert!(
            wrong.is_empty(),
            "{} of {reads} reads went wrong:\n{}",
            wrong.len(),
            wrong.join("\n")
        );
        assert!(reads > 0, "no read ended at all");
    }

    fn stop_all(&mut self) -> (u64, Vec<String>) {
        self.stop.store(true, Ordering::SeqCst);
        let mut wrong = Vec::new();
        for t in self.threads.drain(..) {
            match t.join() {
                Ok(w) => wrong.extend(w),
                Err(_) => wrong.push("a reader thread panicked".to_owned()),
            }
        }
        (self.reads.load(Ordering::SeqCst), wrong)
    }
}

impl Drop for Readers {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // A failing test leaves the threads be: a read stuck in a broken mount ends with an
        // error once the cluster unmounts it.
        if !thread::panicking() {
            self.stop_all();
        }
    }
}

/// Polls `check` (every 200 ms) until it returns `Ok`, for at most `deadline`; `Err` says what
/// is still missing. Each new answer is printed with the time, so a failed test shows how far
/// things got and how fast.
pub fn eventually(deadline: Duration, what: &str, mut check: impl FnMut() -> Result<(), String>) {
    let started = Instant::now();
    let mut next = started;
    let mut last = String::new();
    wait_until(deadline, what, || {
        if Instant::now() < next {
            return false;
        }
        next = Instant::now() + CHECK_EVERY;
        match check() {
            Ok(()) => {
                eprintln!("[{:5.1}s] {what}: yes", started.elapsed().as_secs_f64());
                true
            }
            Err(state) => {
                if state != last {
                    eprintln!(
                        "[{:5.1}s] {what}: not yet: {state}",
                        started.elapsed().as_secs_f64()
                    );
                    last = state;
                }
                false
            }
        }
    });
}

/// Moves every chunk file of `from` into the same `AA` subdirectory of `to` (replacing a file of
/// the same name there), as an operator merging two disks would; returns how many moved.
pub fn move_chunk_files(from: &Path, to: &Path) -> usize {
    let files = chunk_files(usize::MAX, from);
    for f in &files {
        let dest_dir = to.join(&f.subdir);
        std::fs::create_dir_all(&dest_dir).expect("creating a chunk subdirectory");
        let dest = dest_dir.join(f.path.file_name().expect("a file name"));
        std::fs::rename(&f.path, &dest)
            .unwrap_or_else(|e| panic!("moving {} to {}: {e}", f.path.display(), dest.display()));
    }
    files.len()
}
