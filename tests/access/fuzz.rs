//! Fuzzing the daemons' ports with real processes: tens of thousands of random and mutated
//! frames, from the hello on, sent to the master's port (as client, chunkserver and metalogger)
//! and to a chunkserver's data port. Every daemon must still run and serve a normal client
//! afterwards. A failure prints its seed; `ELKFS_FUZZ_SEED=<seed>` replays it.

use std::collections::VecDeque;
use std::io::{ErrorKind, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};
use std::{fs, thread};

use elkfs_e2e::{chunk_files, pseudo_random};
use elkfs_proto::capability::{Access, Capability, CapabilityKey, unix_now};
use elkfs_proto::chunkserver::{ChunkReport, CsRequest, Space};
use elkfs_proto::cluster_key::ClusterKey;
use elkfs_proto::codec;
use elkfs_proto::data::{DataReply, DataRequest, DataResponse};
use elkfs_proto::geometry::{CHUNK_SIZE, MAX_DATA_PAYLOAD};
use elkfs_proto::hello::{Hello, HelloReply, PROTOCOL_VERSION, Role};
use elkfs_proto::master::{Change, Lock, LockKind, MasterRequest, TreeAttr};
use elkfs_proto::metalogger::MlRequest;
use elkfs_proto::types::{Caller, FileKind, SetAttr, TimeSet, Timestamp};
use elkfs_proto::{
    ChunkId, ChunkVersion, DATA_LIMITS, FrameLimits, InodeId, MASTER_CHUNKSERVER_LIMITS,
    MASTER_CLIENT_LIMITS, MASTER_METALOGGER_LIMITS, Status,
};
use elkfs_testkit::{Cluster, Process};
use rand::rngs::StdRng;
use rand::seq::IndexedRandom;
use rand::{Rng, SeedableRng};

/// The seed of a plain run; `ELKFS_FUZZ_SEED` chooses another (a number, or `random`).
const DEFAULT_SEED: u64 = 0x0E1C_F022_2026;
const SEED_ENV: &str = "ELKFS_FUZZ_SEED";

/// Connections opened to each port.
const CONNECTIONS_PER_PORT: usize = 250;
/// Requests in one conversation at most (half as many at least).
const MAX_FRAMES: usize = 100;
/// The same for a metalogger, whose fetches may each wait a second for news.
const MAX_METALOGGER_FRAMES: usize = 12;
/// Connections sent to each port at the same time.
const THREADS_PER_PORT: usize = 3;
/// Share of connections that never get past a broken or refused hello.
const BROKEN_HELLO_SHARE: f64 = 0.15;
/// Share of requests sent with bytes changed (when the change still decodes).
const MUTATED_SHARE: f64 = 0.3;
/// Connecting and writing; a daemon slower than this has stopped serving.
const IO_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a conversation that ends cleanly waits for its answers before closing (some never
/// come: a lock request that waits for a lock), and how long the answers to any connection are
/// read before it is dropped.
const ANSWER_TIMEOUT: Duration = Duration::from_secs(2);

/// Chunk ids from here up are never allocated in a test cluster: requests that could change a
/// chunk name only these, so the data the checks read afterwards can only be hurt by a bug.
const UNKNOWN_CHUNKS: u64 = 1 << 40;

/// The master logs this as an `ERROR` whenever a chunkserver reports damage to a copy the
/// master does not know it holds, which every fake chunkserver's `ChunkDamaged` is (a false
/// alarm: the real copies are intact).
const FALSE_DAMAGE_ALARM: &str = "no intact copy of a chunk is left";

/// The file written before the fuzz and read back after it.
const BEFORE_FUZZ: &str = "before-fuzz";

fn seed_from_env() -> u64 {
    match std::env::var(SEED_ENV) {
        Ok(s) if s == "random" => rand::rng().random(),
        Ok(s) => s
            .parse()
            .unwrap_or_else(|_| panic!("{SEED_ENV} must be a number or 'random', not {s:?}")),
        Err(_) => DEFAULT_SEED,
    }
}

// Found by this test and fixed: a fake metalogger's `Fetch { after: u64::MAX }` overflowed a
// counter in the master, and a fake chunkserver reporting space near `u64::MAX` overflowed the
// space totals, so every client's `StatFs` panicked while it was connected.
#[test]
fn daemons_keep_serving_after_tens_of_thousands_of_random_and_mutated_frames() {
    let seed = seed_from_env();
    println!("fuzz seed {seed} (rerun with {SEED_ENV}={seed})");
    let mut cluster = Cluster::builder()
        .chunkservers(1)
        .metaloggers(1)
        .allow_log_errors(FALSE_DAMAGE_ALARM)
        .start();
    let mount = cluster.mount_path(0).to_path_buf();
    let before = pseudo_random(3 << 20, seed);
    fs::write(mount.join(BEFORE_FUZZ), &before).expect("writing before the fuzz");
    let (before_chunk, before_version) = chunk_files(0, &cluster.chunkserver_data_dirs(0)[0])
        .first()
        .map(|c| (ChunkId(c.id), ChunkVersion(c.version)))
        .expect("the chunk of the file written before the fuzz");
    let targets = Targets::create(&cluster, &mount);

    let ports = [
        Port {
            name: "master",
            addr: cluster.master_addr(),
            roles: &[Role::Client, Role::Chunkserver, Role::Metalogger],
            refused: &[Role::DataClient, Role::DataPeer],
        },
        Port {
            name: "chunkserver data port",
            addr: cluster.chunkserver(0).addr(),
            roles: &[Role::DataClient, Role::DataPeer],
            refused: &[Role::Client, Role::Chunkserver, Role::Metalogger],
        },
    ];
    let started = Instant::now();
    let tallies: Vec<Tally> = thread::scope(|s| {
        let runs: Vec<_> = ports
            .iter()
            .enumerate()
            .map(|(i, port)| {
                let targets = &targets;
                s.spawn(move || fuzz_port(port, targets, seed ^ ((i as u64) << 56)))
            })
            .collect();
        runs.into_iter()
            .map(|run| run.join().expect("fuzzing thread"))
            .collect()
    });
    for (port, tally) in ports.iter().zip(&tallies) {
        println!(
            "{}: {} connections ({} of {} valid hellos accepted), {} frames sent, {} received",
            port.name,
            tally.connections,
            tally.accepted,
            tally.conversations,
            tally.frames,
            tally.received
        );
    }
    println!("fuzzing took {:?}", started.elapsed());

    let daemons = [
        ("master", Process::Master, cluster.master().pid()),
        (
            "chunkserver",
            Process::Chunkserver(0),
            cluster.chunkserver(0).pid(),
        ),
        (
            "metalogger",
            Process::Metalogger(0),
            cluster.metalogger(0).pid(),
        ),
    ];
    for (name, which, pid) in daemons {
        assert!(
            pid.is_some_and(is_running),
            "the {name} died during the fuzz (seed {seed}); last connections:\n{}\nits log ends:\n{}",
            recent_connections(&ports, &tallies),
            log_tail(&cluster, which)
        );
    }
    for (port, tally) in ports.iter().zip(&tallies) {
        if let Some(failure) = &tally.failure {
            panic!(
                "{} stopped serving (seed {seed}): {failure}\nlast connections:\n{}",
                port.name,
                recent_connections(&ports, &tallies)
            );
        }
        // A fuzz whose frames all bounced off the hello would prove nothing.
        assert!(
            tally.frames >= 10_000 && tally.accepted * 20 >= tally.conversations * 19,
            "{}: {} frames sent, {} of {} valid hellos accepted",
            port.name,
            tally.frames,
            tally.accepted,
            tally.conversations
        );
    }

    // A normal client: a new mount (a new session, nothing cached) reads what was stored before
    // the fuzz and what the first mount writes now, both from the chunkserver.
    let fresh = cluster.add_mount(None, "");
    let fresh = cluster.mount_path(fresh).to_path_buf();
    let read = fs::read(fresh.join(BEFORE_FUZZ)).expect("reading data stored before the fuzz");
    assert!(read == before, "data stored before the fuzz changed");
    let after = pseudo_random(5 << 20, seed.wrapping_add(1));
    fs::write(mount.join("after-fuzz"), &after).expect("writing after the fuzz");
    let read = fs::read(fresh.join("after-fuzz")).expect("reading after the fuzz");
    assert!(
        read == after,
        "data written after the fuzz reads back wrong"
    );

    // The chunkserver still answers on its data port: a sync is carried out, and a chain that
    // comes back to it (the only chain a single server has) is refused at once.
    let cs = cluster.chunkserver(0).addr();
    for (chain, expect_synced) in [(vec![], true), (vec![cs], false)] {
        let request = DataRequest::Sync {
            chunk: before_chunk,
            chain: chain.clone(),
            capability: capabilities_of(&cluster).sign(
                before_chunk,
                before_version,
                Access::Read,
                unix_now(),
            ),
        };
        let answer = ask_data_port(cs, &request);
        let as_expected = match &answer {
            Ok(Ok(DataReply::Synced)) => expect_synced,
            Ok(Err(e)) => !expect_synced && e.status == Status::Invalid,
            _ => false,
        };
        assert!(
            as_expected,
            "{request:?} after the fuzz (seed {seed}): {answer:?}"
        );
    }
}

/// Sends one request on a new data connection and waits for its answer.
fn ask_data_port(addr: SocketAddr, request: &DataRequest) -> Result<DataResponse, String> {
    let mut stream = TcpStream::connect_timeout(&addr, IO_TIMEOUT).map_err(|e| e.to_string())?;
    stream
        .set_read_timeout(Some(IO_TIMEOUT))
        .map_err(|e| e.to_string())?;
    let mut bytes = frame(
        &encode_hello(&Hello::new(Role::DataClient, "elkfs-check")),
        &[],
    );
    let body = codec::encode(request).map_err(|e| e.to_string())?;
    bytes.extend(frame(&request_header(0, 7, &body), &[]));
    stream.write_all(&bytes).map_err(|e| e.to_string())?;
    let mut read_header = || -> Result<Vec<u8>, String> {
        let mut prefix = [0u8; 8];
        stream
            .read_exact(&mut prefix)
            .map_err(|e| format!("no answer: {e}"))?;
        let len = |i: usize| u32::from_le_bytes(prefix[i..i + 4].try_into().expect("4 bytes"));
        let mut header = vec![0u8; len(0) as usize];
        let mut data = vec![0u8; len(4) as usize];
        stream
            .read_exact(&mut header)
            .map_err(|e| format!("no answer: {e}"))?;
        stream
            .read_exact(&mut data)
            .map_err(|e| format!("no answer: {e}"))?;
        Ok(header)
    };
    let hello: HelloReply = codec::decode(&read_header()?).map_err(|e| e.to_string())?;
    if !matches!(hello, HelloReply::Accepted { .. }) {
        return Err(format!("hello refused: {hello:?}"));
    }
    let header = read_header()?;
    let ((_kind, _id), used) =
        codec::decode_prefix::<(u8, u64)>(&header).map_err(|e| e.to_string())?;
    codec::decode(&header[used..]).map_err(|e| e.to_string())
}

// Found by the fuzz and fixed: bincode has no nesting limit, so a `Tagged` request nested about
// 5,000 deep (a 20 KB frame) overflowed the stack of the master's connection task and aborted
// the master. Decoding now refuses a `Tagged` inside a `Tagged`.
#[test]
fn master_survives_a_deeply_nested_tagged_request() {
    let cluster = Cluster::builder().chunkservers(1).start();
    for depth in [100, 5_000, 50_000] {
        let header = nested_tagged_header(depth);
        let mut bytes = frame(&encode_hello(&Hello::new(Role::Client, "elkfs-fuzz")), &[]);
        bytes.extend(frame(&header, &[]));
        let plan = Plan {
            bytes,
            frames: 2,
            conversation: true,
            answers: Some(2),
            summary: format!("a Tagged request nested {depth} deep"),
        };
        // Whether it is answered or the connection closed does not matter; the master must live.
        let _ = send(cluster.master_addr(), &plan);
        assert!(
            cluster.master().pid().is_some_and(is_running),
            "the master died on a Tagged request nested {depth} deep ({} bytes); its log ends:\n{}",
            header.len(),
            log_tail(&cluster, Process::Master)
        );
    }
    let mount = cluster.mount_path(0).to_path_buf();
    fs::write(mount.join("after"), b"still serving").expect("writing after");
    assert_eq!(
        fs::read(mount.join("after")).expect("reading"),
        b"still serving"
    );
}

// Each request on a data connection holds one of the connection's 64 in-flight places until
// the next server of its chain answers, and a chunkserver uses one connection per peer. Chains
// that came back to a server (the server itself; across servers, A, B, A, B...) used to fill
// every place of that connection with requests waiting on requests that could get no place,
// and the connection was stuck for good (with two servers, every goal-2 write then took 10 s).
// Such chains are now refused; this keeps it so.
#[test]
fn chunkserver_keeps_forwarding_after_chains_that_come_back_to_it() {
    let cluster = Cluster::builder().chunkservers(2).start();
    fs::write(cluster.mount_path(0).join("file"), b"data").expect("writing a file");
    let (chunk, version) = chunk_files(0, &cluster.chunkserver_data_dirs(0)[0])
        .first()
        .map(|c| (ChunkId(c.id), ChunkVersion(c.version)))
        .expect("the file's chunk");
    let capability = capabilities_of(&cluster).sign(chunk, version, Access::Read, unix_now());
    let cs = cluster.chunkserver(0).addr();
    let mut bytes = frame(
        &encode_hello(&Hello::new(Role::DataClient, "elkfs-fuzz")),
        &[],
    );
    let looping = DataRequest::Sync {
        chunk,
        chain: vec![cs; 8],
        capability,
    };
    let body = codec::encode(&looping).expect("encoding");
    for id in 0..40 {
        bytes.extend(frame(&request_header(0, id, &body), &[]));
    }
    let plan = Plan {
        bytes,
        frames: 41,
        conversation: true,
        answers: Some(41),
        summary: "40 syncs with a chain of 8 times the server itself".into(),
    };
    let got = send(cs, &plan).expect("sending the looping chains");
    // The file has a copy on both servers (goal 2): a sync forwarded to the other one works.
    let request = DataRequest::Sync {
        chunk,
        chain: vec![cluster.chunkserver(1).addr()],
        capability,
    };
    let answer = ask_data_port(cs, &request);
    assert!(
        matches!(answer, Ok(Ok(DataReply::Synced))),
        "after {} (answered: {} frames), {request:?} gets {answer:?}",
        plan.summary,
        got.frames
    );
}

/// Signs capabilities as the cluster's master does (the test holds the cluster key).
fn capabilities_of(cluster: &Cluster) -> CapabilityKey {
    let key = ClusterKey::read_file(cluster.cluster_key_file()).expect("reading the cluster key");
    CapabilityKey::new(&key)
}

/// A request header (kind, id, body) whose body is a `Tagged` of a `Tagged` of ... `StatFs`.
fn nested_tagged_header(depth: usize) -> Vec<u8> {
    let inner = codec::encode(&MasterRequest::StatFs).expect("encoding");
    let once = codec::encode(&MasterRequest::Tagged {
        client: 0,
        slot: 0,
        seq: 0,
        retry: false,
        request: Box::new(MasterRequest::StatFs),
    })
    .expect("encoding");
    let level = &once[..once.len() - inner.len()];
    let mut header = codec::encode(&(0u8, 1u64)).expect("encoding");
    for _ in 0..depth {
        header.extend_from_slice(level);
    }
    header.extend_from_slice(&inner);
    header
}

// ---------------------------------------------------------------------------------------------
// Running the fuzz

/// A daemon port under fuzz, with the roles it accepts and those it refuses.
struct Port {
    name: &'static str,
    addr: SocketAddr,
    roles: &'static [Role],
    refused: &'static [Role],
}

/// What the connections to one port did.
#[derive(Default)]
struct Tally {
    connections: usize,
    /// Connections that said a valid hello, and those of them the daemon accepted.
    conversations: usize,
    accepted: usize,
    frames: usize,
    received: usize,
    /// The last connections, for the report when a daemon dies.
    recent: VecDeque<String>,
    /// Why the port stopped taking connections, if it did.
    failure: Option<String>,
}

const RECENT: usize = 8;

impl Tally {
    fn add(&mut self, i: usize, plan: &Plan, got: Received) {
        self.connections += 1;
        self.conversations += usize::from(plan.conversation);
        self.accepted += usize::from(plan.conversation && got.accepted);
        self.frames += plan.frames;
        self.received += got.frames;
        self.recent.push_back(format!("#{i}: {}", plan.summary));
        if self.recent.len() > RECENT {
            self.recent.pop_front();
        }
    }
}

/// Runs every connection to `port`, `THREADS_PER_PORT` at a time; connection `i` uses its own
/// seed, so a run sends the same whatever the threads' timing.
fn fuzz_port(port: &Port, targets: &Targets, seed: u64) -> Tally {
    let tally = Mutex::new(Tally::default());
    thread::scope(|s| {
        for first in 0..THREADS_PER_PORT {
            let tally = &tally;
            s.spawn(move || {
                for i in (first..CONNECTIONS_PER_PORT).step_by(THREADS_PER_PORT) {
                    let mut rng = StdRng::seed_from_u64(seed.wrapping_add(i as u64));
                    let plan = match rng.random_bool(BROKEN_HELLO_SHARE) {
                        true => broken_hello(port, &mut rng),
                        false => conversation(port, targets, &mut rng),
                    };
                    let result = send(port.addr, &plan);
                    let mut tally = tally.lock().unwrap_or_else(|p| p.into_inner());
                    match result {
                        Ok(got) => tally.add(i, &plan, got),
                        Err(e) => {
                            let summary = &plan.summary;
                            tally
                                .failure
                                .get_or_insert(format!("#{i} ({summary}): {e}"));
                        }
                    }
                    if tally.failure.is_some() {
                        return;
                    }
                }
            });
        }
    });
    tally.into_inner().unwrap_or_else(|p| p.into_inner())
}

/// What one connection sends.
struct Plan {
    bytes: Vec<u8>,
    frames: usize,
    /// Whether it starts with a valid hello of a role the port accepts.
    conversation: bool,
    /// Frames to wait for before closing (the hello's answer and the requests'); none for a
    /// connection that ends with a frame after which the daemon closes it anyway.
    answers: Option<usize>,
    summary: String,
}

/// What came back on one connection.
struct Received {
    frames: usize,
    /// Whether the first frame was a hello reply accepting the connection.
    accepted: bool,
}

/// Sends a plan on a new connection while reading what comes back. Fails only when the daemon
/// does not take the connection.
fn send(addr: SocketAddr, plan: &Plan) -> Result<Received, String> {
    let stream = TcpStream::connect_timeout(&addr, IO_TIMEOUT)
        .map_err(|e| format!("cannot connect: {e}"))?;
    stream
        .set_write_timeout(Some(IO_TIMEOUT))
        .and_then(|()| stream.set_read_timeout(Some(Duration::from_millis(100))))
        .map_err(|e| format!("socket options: {e}"))?;
    let reader = stream
        .try_clone()
        .map_err(|e| format!("cloning the socket: {e}"))?;
    let seen = AtomicUsize::new(0);
    Ok(thread::scope(|s| {
        let reading = s.spawn(|| drain(reader, &seen));
        // The daemon may close the connection at any frame, so a failed write is expected.
        let _ = (&stream).write_all(&plan.bytes);
        if let Some(answers) = plan.answers {
            let deadline = Instant::now() + ANSWER_TIMEOUT;
            while seen.load(Ordering::Relaxed) < answers && Instant::now() < deadline {
                thread::sleep(Duration::from_millis(5));
            }
        }
        let _ = stream.shutdown(Shutdown::Write);
        reading.join().expect("reading answers")
    }))
}

/// Reads what the daemon sends until it closes the connection or twice [`ANSWER_TIMEOUT`]
/// passes, counting whole frames in `seen` as they come.
fn drain(mut stream: TcpStream, seen: &AtomicUsize) -> Received {
    let deadline = Instant::now() + 2 * ANSWER_TIMEOUT;
    let (mut pending, mut buf) = (Vec::new(), vec![0u8; 64 * 1024]);
    let mut accepted = None;
    while Instant::now() < deadline {
        match stream.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => {
                pending.extend_from_slice(&buf[..n]);
                let frames = take_frames(&mut pending, &mut accepted);
                seen.fetch_add(frames, Ordering::Relaxed);
            }
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(_) => break,
        }
    }
    Received {
        frames: seen.load(Ordering::Relaxed),
        accepted: accepted.unwrap_or(false),
    }
}

/// Removes the whole frames at the front of `pending` and returns how many there were; the
/// first frame of a connection says in `accepted` whether its hello was accepted.
fn take_frames(pending: &mut Vec<u8>, accepted: &mut Option<bool>) -> usize {
    let (mut at, mut count) = (0, 0);
    while pending.len() - at >= 8 {
        let len = |i: usize| u32::from_le_bytes(pending[i..i + 4].try_into().expect("4 bytes"));
        let header = at + 8..at + 8 + len(at) as usize;
        let end = header.end + len(at + 4) as usize;
        if pending.len() < end {
            break;
        }
        if accepted.is_none() {
            let reply = codec::decode::<HelloReply>(&pending[header]);
            *accepted = Some(matches!(reply, Ok(HelloReply::Accepted { .. })));
        }
        (at, count) = (end, count + 1);
    }
    pending.drain(..at);
    count
}

/// Whether process `pid` is alive (a zombie, dead but not yet reaped, is not).
fn is_running(pid: u32) -> bool {
    match fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => !matches!(
            stat.rsplit_once(')')
                .and_then(|(_, rest)| rest.trim_start().chars().next()),
            Some('Z' | 'X') | None
        ),
        Err(_) => false,
    }
}

fn log_tail(cluster: &Cluster, which: Process) -> String {
    let log = cluster.log_of(which);
    let lines: Vec<&str> = log.lines().collect();
    lines[lines.len().saturating_sub(30)..].join("\n")
}

fn recent_connections(ports: &[Port], tallies: &[Tally]) -> String {
    let mut out = String::new();
    for (port, tally) in ports.iter().zip(tallies) {
        for line in &tally.recent {
            out.push_str(&format!("  {} {line}\n", port.name));
        }
    }
    out
}

// ---------------------------------------------------------------------------------------------
// What a connection sends

/// `u32 header length | u32 data length | header | data`, as `frame::write_frame` writes it.
fn frame(header: &[u8], data: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(8 + header.len() + data.len());
    out.extend_from_slice(&(header.len() as u32).to_le_bytes());
    out.extend_from_slice(&(data.len() as u32).to_le_bytes());
    out.extend_from_slice(header);
    out.extend_from_slice(data);
    out
}

fn encode_hello(hello: &Hello) -> Vec<u8> {
    codec::encode(hello).expect("encoding a hello")
}

/// A connection that never gets past the hello: random bytes, a length past the hello's limit,
/// another protocol version, a role the port refuses, a mutated or cut-off hello, or nothing.
fn broken_hello(port: &Port, rng: &mut StdRng) -> Plan {
    let role = *port.roles.choose(rng).expect("a role");
    let good = encode_hello(&Hello::new(role, "elkfs-fuzz"));
    let (bytes, what) = match rng.random_range(0..7) {
        0 => (random_bytes(rng, 4096), "random bytes"),
        1 => {
            let mut bytes = rng.random_range(4097..=u32::MAX).to_le_bytes().to_vec();
            bytes.extend(rng.random::<u32>().to_le_bytes());
            (bytes, "a hello longer than allowed")
        }
        2 => {
            let mut hello = Hello::new(role, "elkfs-fuzz");
            hello.protocol_version = *[0, PROTOCOL_VERSION + 1, u32::MAX].choose(rng).expect("v");
            (
                frame(&encode_hello(&hello), &[]),
                "another protocol version",
            )
        }
        3 => {
            let refused = *port.refused.choose(rng).expect("a refused role");
            let hello = encode_hello(&Hello::new(refused, "elkfs-fuzz"));
            (frame(&hello, &[]), "a role the port refuses")
        }
        4 => (frame(&mutated(&good, rng), &[]), "a mutated hello"),
        5 => {
            let whole = frame(&good, &[]);
            let cut = rng.random_range(1..whole.len());
            (whole[..cut].to_vec(), "a cut-off hello")
        }
        _ => (Vec::new(), "nothing"),
    };
    Plan {
        bytes,
        frames: 1,
        conversation: false,
        answers: None,
        summary: what.to_string(),
    }
}

/// A valid hello, then requests of that role (some with bytes changed, all of which decode),
/// then an ending: a clean close or a frame that makes the daemon close the connection.
fn conversation(port: &Port, targets: &Targets, rng: &mut StdRng) -> Plan {
    let role = *port.roles.choose(rng).expect("a role");
    let mut out = frame(&encode_hello(&Hello::new(role, "elkfs-fuzz")), &[]);
    let most = match role {
        Role::Metalogger => MAX_METALOGGER_FRAMES,
        _ => MAX_FRAMES,
    };
    let count = rng.random_range(most / 2..=most);
    let id_bits = rng.random_range(1..64);
    let mut id = rng.random_range(0..1u64 << id_bits);
    let mut mutated_count = 0;
    for i in 0..count {
        let request = match (role, i) {
            (Role::Client, 0) if rng.random_bool(0.85) => Request::Master(open_session(rng)),
            (Role::Chunkserver, 0) if rng.random_bool(0.8) => Request::Cs(register(rng)),
            _ => Request::random(role, targets, rng),
        };
        let mut body = request.encode();
        if request.may_mutate() && rng.random_bool(MUTATED_SHARE) {
            let decoding = (0..8)
                .map(|_| mutated(&body, rng))
                .find(|b| decodes(role, b) && targets.spares_checked_inodes(role, b));
            if let Some(b) = decoding {
                body = b;
                mutated_count += 1;
            }
        }
        out.extend(frame(&request_header(0, id, &body), &request.data(rng)));
        id = id.wrapping_add(1);
    }
    let ending = end_conversation(role, targets, rng, &mut out);
    let clean = ending == CLEAN_CLOSE;
    Plan {
        bytes: out,
        frames: 1 + count + usize::from(!clean),
        conversation: true,
        answers: clean.then_some(1 + count),
        summary: format!("{role:?}: {count} requests ({mutated_count} mutated), then {ending}"),
    }
}

const CLEAN_CLOSE: &str = "a clean close once answered";

fn request_header(kind: u8, id: u64, body: &[u8]) -> Vec<u8> {
    let mut header = codec::encode(&(kind, id)).expect("encoding");
    header.extend_from_slice(body);
    header
}

fn limits_of(role: Role) -> FrameLimits {
    match role {
        Role::Client => MASTER_CLIENT_LIMITS,
        Role::Chunkserver => MASTER_CHUNKSERVER_LIMITS,
        Role::Metalogger => MASTER_METALOGGER_LIMITS,
        Role::DataClient | Role::DataPeer => DATA_LIMITS,
    }
}

/// The last frame of a conversation, appended to `out`; says what it was.
fn end_conversation(
    role: Role,
    targets: &Targets,
    rng: &mut StdRng,
    out: &mut Vec<u8>,
) -> &'static str {
    let limits = limits_of(role);
    let body = Request::random(role, targets, rng).encode();
    match rng.random_range(0..8) {
        0 | 1 => CLEAN_CLOSE,
        2 => {
            let garbage = (0..100)
                .map(|_| mutated(&request_header(0, 1, &body), rng))
                .find(|b| !b.is_empty() && !decodes_as_header(role, b))
                .unwrap_or_else(|| vec![0xff; 9]);
            out.extend(frame(&garbage, &[]));
            "a frame that does not decode"
        }
        3 => {
            let kind = *[1, 2, 0x7f, 0xff].choose(rng).expect("kind");
            out.extend(frame(&request_header(kind, rng.random(), &body), &[]));
            "a response to no request, or a frame of an unknown kind"
        }
        4 => {
            let len = rng.random_range(limits.max_header + 1..=u32::MAX);
            out.extend(len.to_le_bytes());
            out.extend(0u32.to_le_bytes());
            out.extend(random_bytes(rng, 64));
            "a header length past the limit"
        }
        5 => {
            let header = request_header(0, 1, &body);
            let len = rng.random_range(limits.max_data + 1..=u32::MAX);
            out.extend((header.len() as u32).to_le_bytes());
            out.extend(len.to_le_bytes());
            out.extend(header);
            "a data length past the limit"
        }
        6 => {
            let whole = frame(&request_header(0, 1, &body), &random_bytes(rng, 100));
            let cut = rng.random_range(1..whole.len());
            out.extend_from_slice(&whole[..cut]);
            "a cut-off frame"
        }
        _ => {
            out.extend(frame(&[], &[]));
            "an empty frame"
        }
    }
}

/// Whether a request body decodes as what `role` sends.
fn decodes(role: Role, body: &[u8]) -> bool {
    match role {
        Role::Client => codec::decode::<MasterRequest>(body).is_ok(),
        Role::Chunkserver => codec::decode::<CsRequest>(body).is_ok(),
        Role::Metalogger => codec::decode::<MlRequest>(body).is_ok(),
        Role::DataClient | Role::DataPeer => codec::decode::<DataRequest>(body).is_ok(),
    }
}

/// Whether a whole frame header decodes as a request `role` sends.
fn decodes_as_header(role: Role, header: &[u8]) -> bool {
    match codec::decode_prefix::<(u8, u64)>(header) {
        Ok(((0, _), used)) => decodes(role, &header[used..]),
        _ => false,
    }
}

/// `bytes` with one to three bytes replaced, bits flipped, bytes inserted or removed.
fn mutated(bytes: &[u8], rng: &mut StdRng) -> Vec<u8> {
    let mut out = bytes.to_vec();
    for _ in 0..rng.random_range(1..=3) {
        let at = rng.random_range(0..=out.len());
        match rng.random_range(0..4) {
            0 if at < out.len() => out[at] = telling_byte(rng),
            1 if at < out.len() => out[at] ^= 1 << rng.random_range(0..8),
            2 if at < out.len() => {
                out.drain(at..(at + rng.random_range(1..4)).min(out.len()));
            }
            _ => {
                let new: Vec<u8> = (0..rng.random_range(1..6))
                    .map(|_| telling_byte(rng))
                    .collect();
                out.splice(at..at, new);
            }
        }
    }
    out
}

/// A random byte, often one that means something to bincode (small values, varint markers).
fn telling_byte(rng: &mut StdRng) -> u8 {
    if rng.random_bool(0.5) {
        *[0, 1, 2, 3, 0x7f, 0x80, 0xfb, 0xfc, 0xfd, 0xff]
            .choose(rng)
            .expect("byte")
    } else {
        rng.random()
    }
}

fn random_bytes(rng: &mut StdRng, most: usize) -> Vec<u8> {
    let len = rng.random_range(1..=most);
    (0..len).map(|_| rng.random()).collect()
}

// ---------------------------------------------------------------------------------------------
// Random requests

/// What random requests point at: a scratch tree made for the fuzz (never the root, nor the
/// files the checks read afterwards), the chunks on the chunkserver, and the cluster's ports.
struct Targets {
    /// The root and the file written before the fuzz.
    checked: Vec<InodeId>,
    dirs: Vec<InodeId>,
    files: Vec<InodeId>,
    chunks: Vec<(ChunkId, ChunkVersion)>,
    master: SocketAddr,
    chunkserver: SocketAddr,
    capabilities: CapabilityKey,
}

impl Targets {
    /// Makes `/fuzz` with two files and a subdirectory holding a third, all with data.
    fn create(cluster: &Cluster, mount: &Path) -> Targets {
        let top = mount.join("fuzz");
        fs::create_dir_all(top.join("sub")).expect("creating the scratch tree");
        for (i, file) in ["a", "b", "sub/c"].iter().enumerate() {
            fs::write(top.join(file), pseudo_random(100_000 << i, i as u64))
                .expect("writing a scratch file");
        }
        let ino = |p: &str| InodeId(fs::metadata(top.join(p)).expect("stat").ino());
        let chunks = chunk_files(0, &cluster.chunkserver_data_dirs(0)[0])
            .into_iter()
            .map(|c| (ChunkId(c.id), ChunkVersion(c.version)))
            .collect::<Vec<_>>();
        assert!(
            !chunks.is_empty(),
            "the files' chunks are on the chunkserver"
        );
        let before = fs::metadata(mount.join(BEFORE_FUZZ)).expect("stat");
        Targets {
            checked: vec![InodeId::ROOT, InodeId(before.ino())],
            dirs: vec![ino("."), ino("sub")],
            files: vec![ino("a"), ino("b"), ino("sub/c")],
            chunks,
            master: cluster.master_addr(),
            chunkserver: cluster.chunkserver(0).addr(),
            capabilities: capabilities_of(cluster),
        }
    }

    /// Mostly a capability the master could have signed for the request (so the fuzz gets past
    /// the check), sometimes an expired, forged or misdirected one.
    fn capability(
        &self,
        rng: &mut StdRng,
        chunk: ChunkId,
        version: ChunkVersion,
        access: Access,
    ) -> Capability {
        let now = unix_now();
        match rng.random_range(0..8) {
            0 => self.capabilities.sign(chunk, version, access, now - 3600),
            1 => Capability {
                mac: rng.random(),
                ..self.capabilities.sign(chunk, version, access, now)
            },
            2 => self
                .capabilities
                .sign(unknown_chunk(rng), version, access, now),
            3 => self.capabilities.sign(chunk, version, Access::Read, now),
            _ => self.capabilities.sign(chunk, version, access, now),
        }
    }

    /// Whether a master request leaves alone the inodes the checks after the fuzz read: a
    /// changed byte can turn a scratch inode into one of them, and a session changing those
    /// (truncating the file written before) would be no bug.
    fn spares_checked_inodes(&self, role: Role, body: &[u8]) -> bool {
        let Ok(request) = codec::decode::<MasterRequest>(body) else {
            return role != Role::Client;
        };
        let named = format!("{request:?}");
        !self
            .checked
            .iter()
            .any(|inode| named.contains(&format!("{inode:?}")))
    }

    /// Mostly the scratch tree's inodes, sometimes ones that do not exist.
    fn inode(&self, rng: &mut StdRng) -> InodeId {
        match rng.random_range(0..10) {
            0 => InodeId(0),
            1 => InodeId(u64::MAX),
            2 => InodeId(UNKNOWN_CHUNKS + rng.random_range(0..1000)),
            3..=5 => *self.dirs.choose(rng).expect("dir"),
            _ => *self.files.choose(rng).expect("file"),
        }
    }

    fn dir(&self, rng: &mut StdRng) -> InodeId {
        match rng.random_bool(0.9) {
            true => *self.dirs.choose(rng).expect("dir"),
            false => self.inode(rng),
        }
    }

    fn file(&self, rng: &mut StdRng) -> InodeId {
        match rng.random_bool(0.9) {
            true => *self.files.choose(rng).expect("file"),
            false => self.inode(rng),
        }
    }

    /// A chunk to read or sync: a real one (maybe with the wrong version) or an unknown one.
    fn chunk(&self, rng: &mut StdRng) -> (ChunkId, ChunkVersion) {
        let (chunk, version) = *self.chunks.choose(rng).expect("chunk");
        match rng.random_range(0..4) {
            0 | 1 => (chunk, version),
            2 => (chunk, ChunkVersion(number32(rng))),
            _ => (unknown_chunk(rng), version),
        }
    }

    /// Where a chained write or sync goes on: nowhere, this chunkserver again, the master (which
    /// refuses a data peer), a closed port, or a chain too long to be valid.
    fn chain(&self, rng: &mut StdRng) -> Vec<SocketAddr> {
        let closed: SocketAddr = "127.0.0.1:1".parse().expect("address");
        match rng.random_range(0..6) {
            0 | 1 => Vec::new(),
            2 => vec![self.chunkserver],
            3 => vec![self.master],
            4 => vec![closed, self.chunkserver],
            _ => vec![self.chunkserver; rng.random_range(2..12)],
        }
    }
}

fn unknown_chunk(rng: &mut StdRng) -> ChunkId {
    ChunkId(UNKNOWN_CHUNKS + rng.random_range(0..1 << 20))
}

/// Where fake chunkservers say their data port is: loopback addresses nothing listens on.
fn fake_data_addr(rng: &mut StdRng) -> SocketAddr {
    let addrs = ["127.0.0.1:1", "[::1]:1", "0.0.0.0:9", "127.0.0.3:7"];
    addrs.choose(rng).expect("addr").parse().expect("address")
}

fn number(rng: &mut StdRng) -> u64 {
    match rng.random_range(0..6) {
        0 => 0,
        1 => 1,
        2 => rng.random_range(2..1000),
        3 => u32::MAX.into(),
        4 => u64::MAX,
        _ => rng.random(),
    }
}

fn number32(rng: &mut StdRng) -> u32 {
    match rng.random_range(0..5) {
        0 => 0,
        1 => 1,
        2 => rng.random_range(2..1000),
        3 => u32::MAX,
        _ => rng.random(),
    }
}

/// A name: usually a short one that other connections use too, sometimes one a master must
/// refuse (empty, `.`, `..`, with `/`, 256 bytes) or random bytes.
fn name(rng: &mut StdRng) -> Vec<u8> {
    match rng.random_range(0..10) {
        0 => Vec::new(),
        1 => b".".to_vec(),
        2 => b"..".to_vec(),
        3 => b"a/b".to_vec(),
        4 => vec![b'n'; 256],
        5 => random_bytes(rng, 24),
        _ => format!("f{}", rng.random_range(0..40)).into_bytes(),
    }
}

fn caller(rng: &mut StdRng) -> Caller {
    let id = |rng: &mut StdRng| *[0, 1000, 65534, u32::MAX].choose(rng).expect("id");
    Caller {
        uid: id(rng),
        gid: id(rng),
    }
}

fn timestamp(rng: &mut StdRng) -> Timestamp {
    Timestamp {
        secs: *[0, -1, i64::MIN, i64::MAX, 1_700_000_000]
            .choose(rng)
            .expect("secs"),
        nanos: *[0, 999_999_999, 1_000_000_000, u32::MAX]
            .choose(rng)
            .expect("nanos"),
    }
}

fn option<T>(rng: &mut StdRng, value: impl FnOnce(&mut StdRng) -> T) -> Option<T> {
    rng.random_bool(0.5).then(|| value(rng))
}

/// A request of the kind a connection's role sends.
enum Request {
    Master(MasterRequest),
    Cs(CsRequest),
    Ml(MlRequest),
    Data(DataRequest),
}

impl Request {
    fn random(role: Role, targets: &Targets, rng: &mut StdRng) -> Request {
        match role {
            Role::Client => Request::Master(master_request(targets, rng)),
            Role::Chunkserver => Request::Cs(cs_request(targets, rng)),
            Role::Metalogger => Request::Ml(ml_request(rng)),
            Role::DataClient | Role::DataPeer => Request::Data(data_request(targets, rng)),
        }
    }

    fn encode(&self) -> Vec<u8> {
        match self {
            Request::Master(r) => codec::encode(r),
            Request::Cs(r) => codec::encode(r),
            Request::Ml(r) => codec::encode(r),
            Request::Data(r) => codec::encode(r),
        }
        .expect("encoding a request")
    }

    /// Whether changed bytes cannot turn it into a legitimate change of data the checks read:
    /// a chunk report or a write names only unknown chunks, but a changed byte could name a
    /// real one (a fake server adopting it, or writing into it), which is no bug.
    fn may_mutate(&self) -> bool {
        !matches!(
            self,
            Request::Cs(CsRequest::Chunks(_)) | Request::Data(DataRequest::Write { .. })
        )
    }

    /// The frame's raw data: bytes to store for a write, nothing otherwise (the master's
    /// connections carry none, so any would close them).
    fn data(&self, rng: &mut StdRng) -> Vec<u8> {
        match self {
            Request::Data(DataRequest::Write { .. }) => random_bytes(rng, 16 * 1024),
            _ => Vec::new(),
        }
    }
}

fn open_session(rng: &mut StdRng) -> MasterRequest {
    let subdirs = [
        "/",
        "/fuzz",
        "/fuzz/sub",
        "/missing",
        "",
        "/../..",
        "/fuzz/a",
    ];
    MasterRequest::OpenSession {
        subdir: subdirs.choose(rng).expect("subdir").to_string(),
        mount_point: String::from_utf8_lossy(&name(rng)).into_owned(),
        proof: option(rng, |rng| rng.random()),
        client: rng.random(),
    }
}

fn register(rng: &mut StdRng) -> CsRequest {
    CsRequest::Register {
        server_id: rng.random(),
        data_addr: fake_data_addr(rng),
        space: Space {
            total: number(rng),
            available: number(rng),
        },
        chunk_count: number(rng),
        proof: rng.random(),
    }
}

fn lock(rng: &mut StdRng) -> Lock {
    Lock {
        kind: *[LockKind::Read, LockKind::Write, LockKind::Unlock]
            .choose(rng)
            .expect("kind"),
        start: number(rng),
        end: number(rng),
        owner: rng.random_range(0..4),
        pid: number32(rng),
    }
}

fn master_request(t: &Targets, rng: &mut StdRng) -> MasterRequest {
    use MasterRequest as R;
    let (inode, dir, file) = (t.inode(rng), t.dir(rng), t.file(rng));
    let (name, caller) = (name(rng), caller(rng));
    match rng.random_range(0..45) {
        0 => R::Lookup { parent: dir, name },
        1 => R::GetAttr { inode },
        2 => R::SetAttr {
            inode,
            changes: SetAttr {
                mode: option(rng, number32),
                uid: option(rng, number32),
                gid: option(rng, number32),
                size: option(rng, |rng| number(rng) % (1 << 30)),
                atime: option(rng, |rng| TimeSet::At(timestamp(rng))),
                mtime: Some(TimeSet::Now),
            },
            caller,
        },
        3 => R::Mknod {
            parent: dir,
            name,
            kind: *[
                FileKind::File,
                FileKind::Fifo,
                FileKind::Dir,
                FileKind::CharDevice,
            ]
            .choose(rng)
            .expect("kind"),
            mode: number32(rng),
            umask: number32(rng),
            rdev: number32(rng),
            caller,
            open: rng.random(),
        },
        4 => R::Mkdir {
            parent: dir,
            name,
            mode: number32(rng),
            umask: 0o22,
            caller,
        },
        5 => R::Symlink {
            parent: dir,
            name,
            target: random_bytes(rng, 300),
            caller,
        },
        6 => R::Link {
            inode: file,
            parent: dir,
            name,
        },
        7 => R::ReadLink { inode },
        8 => R::Unlink { parent: dir, name },
        9 => R::Rmdir { parent: dir, name },
        10 => R::Rename {
            parent: dir,
            name,
            new_parent: t.dir(rng),
            new_name: self::name(rng),
            flags: *[0, 1, 2, 3, u32::MAX].choose(rng).expect("flags"),
        },
        11 => R::ReadDir {
            inode,
            after: number(rng),
            limit: number32(rng),
        },
        12 => R::StatFs,
        13 => R::ReadChunk {
            inode,
            index: number32(rng),
        },
        14 => R::WriteChunk {
            inode: file,
            index: rng.random_range(0..4),
            carried: number(rng),
        },
        15 => R::WriteEnd {
            inode: file,
            index: number32(rng),
            chunk: ChunkId(number(rng)),
            length: number(rng),
        },
        16 => R::Fsync,
        17 => R::GetXattr { inode, name },
        18 => R::ListXattr { inode },
        19 => R::SetXattr {
            inode,
            name,
            value: random_bytes(rng, 512),
            flags: rng.random_range(0..4),
        },
        20 => R::RemoveXattr { inode, name },
        21 => R::Open { inode },
        22 => R::Close {
            inodes: (0..rng.random_range(0..20)).map(|_| t.inode(rng)).collect(),
        },
        23 => R::Reopen {
            inodes: (0..rng.random_range(0..20)).map(|_| t.inode(rng)).collect(),
        },
        24 => R::SetLock {
            inode,
            lock: lock(rng),
            wait: rng.random_bool(0.2),
        },
        25 => R::TestLock {
            inode,
            lock: lock(rng),
        },
        26 => R::ReleaseLocks {
            inode,
            owner: rng.random_range(0..4),
        },
        27 => R::ChangeTree {
            inode,
            attr: *[TreeAttr::Goal, TreeAttr::TrashTime, TreeAttr::Eattr]
                .choose(rng)
                .expect("attr"),
            change: match rng.random_range(0..5) {
                0 => Change::Set(number(rng)),
                1 => Change::Raise(number(rng)),
                2 => Change::Lower(number(rng)),
                3 => Change::AddFlags(number(rng)),
                _ => Change::RemoveFlags(number(rng)),
            },
            recursive: rng.random(),
            caller,
        },
        28 => R::Access { inode },
        29 => R::AppendBegin { inode: file },
        30 => R::AppendEnd { inode: file },
        31 => R::ClearChunks {
            inode: file,
            first: number32(rng),
            end: number32(rng),
        },
        32 => R::FileInfo { inode },
        33 => R::DirInfo { inode },
        34 => R::SummarizeTree {
            inode,
            attr: TreeAttr::Goal,
        },
        35 => R::TrashList { caller },
        36 => R::TrashRestore { inode, caller },
        37 => R::TrashPurge {
            inode: option(rng, |rng| t.inode(rng)),
            caller,
        },
        // Files only: a directory snapshotted into itself again and again doubles each time.
        38 => R::Snapshot {
            source: file,
            parent: dir,
            name,
            caller,
        },
        39 => R::Status,
        40 => R::Tagged {
            client: rng.random_range(0..4),
            slot: rng.random_range(0..4),
            seq: rng.random_range(0..100),
            retry: rng.random(),
            request: Box::new(match rng.random_range(0..4) {
                0 => R::Tagged {
                    client: 0,
                    slot: 0,
                    seq: 0,
                    retry: false,
                    request: Box::new(R::StatFs),
                },
                _ => master_request(t, rng),
            }),
        },
        41 => R::RetryWriteChunk {
            inode: file,
            index: rng.random_range(0..4),
            failed: vec![t.chunkserver, fake_data_addr(rng)],
        },
        42 => R::Challenge,
        43 => R::ReclaimLocks {
            locks: (0..rng.random_range(0..8))
                .map(|_| (t.inode(rng), lock(rng)))
                .collect(),
            last: rng.random(),
        },
        _ => open_session(rng),
    }
}

/// A request from a fake chunkserver: its chunk reports name only chunks the master never
/// made, so it cannot take over (or make stale) a real copy.
fn cs_request(t: &Targets, rng: &mut StdRng) -> CsRequest {
    let report = |rng: &mut StdRng, chunk| ChunkReport {
        chunk,
        version: ChunkVersion(number32(rng)),
        marked_for_removal: rng.random(),
    };
    match rng.random_range(0..6) {
        0 => register(rng),
        1 => CsRequest::Chunks(
            (0..rng.random_range(0..40))
                .map(|_| {
                    let chunk = unknown_chunk(rng);
                    report(rng, chunk)
                })
                .collect(),
        ),
        2 => CsRequest::RegisterDone,
        3 => CsRequest::Heartbeat {
            space: Space {
                total: number(rng),
                available: number(rng),
            },
        },
        4 => CsRequest::ChunkDamaged {
            chunk: {
                let (chunk, _) = t.chunk(rng);
                report(rng, chunk)
            },
        },
        _ => CsRequest::Stopping,
    }
}

/// A request from a fake metalogger; most fetches start from the beginning (answered at once),
/// a few from the future (answered after the master's long poll).
fn ml_request(rng: &mut StdRng) -> MlRequest {
    match rng.random_range(0..3) {
        0 => MlRequest::Fetch {
            after: *[0, 0, 0, 1, 2, u64::MAX].choose(rng).expect("after"),
            max_bytes: number32(rng),
        },
        1 => MlRequest::LatestImage,
        _ => MlRequest::FetchImage {
            version: number(rng),
            offset: number(rng),
            length: number32(rng),
        },
    }
}

fn data_request(t: &Targets, rng: &mut StdRng) -> DataRequest {
    let offset = |rng: &mut StdRng| match rng.random_range(0..4) {
        0 => 0,
        1 => (CHUNK_SIZE - 1) as u32,
        2 => u32::MAX,
        _ => rng.random_range(0..CHUNK_SIZE as u32),
    };
    match rng.random_range(0..3) {
        0 => {
            let (chunk, version) = t.chunk(rng);
            DataRequest::Read {
                chunk,
                version,
                offset: offset(rng),
                length: *[0, 1, 65_536, MAX_DATA_PAYLOAD, u32::MAX]
                    .choose(rng)
                    .expect("length"),
                capability: t.capability(rng, chunk, version, Access::Read),
            }
        }
        1 => {
            let (chunk, version) = (unknown_chunk(rng), ChunkVersion(number32(rng)));
            DataRequest::Write {
                chunk,
                version,
                offset: offset(rng),
                chain: t.chain(rng),
                capability: t.capability(rng, chunk, version, Access::Write),
                create: false,
            }
        }
        _ => {
            let (chunk, version) = t.chunk(rng);
            DataRequest::Sync {
                chunk,
                chain: t.chain(rng),
                capability: t.capability(rng, chunk, version, Access::Read),
            }
        }
    }
}
