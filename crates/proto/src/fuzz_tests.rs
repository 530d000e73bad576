//! Fuzz tests of everything that reads a peer's bytes: every message decoder and the frame reader
//! get random bytes, and valid encodings with bytes changed, cut off or inserted. Nothing may
//! panic, whatever decodes must encode back to the same message, and the frame reader never
//! allocates past its connection kind's limits, however large the lengths a peer announces.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::fmt::Debug;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::{Pin, pin};
use std::sync::LazyLock;
use std::task::{Context, Poll, Waker};

use proptest::collection::vec;
use proptest::prelude::*;
use proptest::sample::{Index, select};
use serde::Serialize;
use serde::de::DeserializeOwned;
use tokio::io::{AsyncRead, AsyncReadExt, ReadBuf};

use crate::capability::{Access, Capability};
use crate::chunkserver::{
    ChunkReport, CsCommand, CsCommandResult, CsReply, CsRequest, CsResponse, Space,
};
use crate::codec;
use crate::data::{DataError, DataReply, DataRequest, DataResponse};
use crate::frame::{self, FrameError, FrameLimits, PREFIX_LEN};
use crate::hello::{Hello, HelloReply, Role};
use crate::ids::{ChunkId, ChunkVersion, InodeId, ServerId, SessionId};
use crate::info::{
    ChunkCopies, ClusterStatus, CopyInfo, CopyState, DirStats, MetaloggerStatus, ServerStatus,
    TrashEntry,
};
use crate::master::{
    Change, Lock, LockKind, MasterReply, MasterRequest, MasterResponse, ReadLocation, TreeAttr,
    WriteLease,
};
use crate::metalogger::{MlReply, MlRequest, MlResponse};
use crate::status::Status;
use crate::types::{
    Attr, Caller, DirEntry, DirEntryPlus, FileKind, FsStats, SetAttr, TimeSet, Timestamp,
};
use crate::{
    DATA_LIMITS, MASTER_CHUNKSERVER_LIMITS, MASTER_CLIENT_LIMITS, MASTER_METALOGGER_LIMITS,
};

/// Cases per decoder property: every input goes to every decoder, so each sees tens of thousands
/// of random and of mutated inputs, in well under a second.
const DECODER_CASES: u32 = 25_000;

/// Cases per frame reader property (some fill buffers of megabytes).
const FRAME_CASES: u32 = 5_000;

// ---------------------------------------------------------------------------------------------
// Measuring allocations

/// The system allocator, noting the largest single allocation each thread asks for, so a test
/// can see what reading one frame allocated.
struct LargestAllocation;

thread_local! {
    static LARGEST: Cell<usize> = const { Cell::new(0) };
}

fn note(size: usize) {
    // `try_with`: the allocator also runs while a thread's locals are being torn down.
    let _ = LARGEST.try_with(|largest| largest.set(largest.get().max(size)));
}

// SAFETY: every call is passed on unchanged to the system allocator.
unsafe impl GlobalAlloc for LargestAllocation {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        note(layout.size());
        unsafe { System.alloc(layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        note(layout.size());
        unsafe { System.alloc_zeroed(layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        note(new_size);
        unsafe { System.realloc(ptr, layout, new_size) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static ALLOCATOR: LargestAllocation = LargestAllocation;

/// Runs `f`, returning its result and the largest single allocation it made on this thread.
fn largest_allocation_of<T>(f: impl FnOnce() -> T) -> (T, usize) {
    LARGEST.with(|largest| largest.set(0));
    let out = f();
    (out, LARGEST.with(Cell::get))
}

// ---------------------------------------------------------------------------------------------
// Decoders and valid messages

/// Decodes `bytes` as a `T` every way a connection does (alone, and after a frame's kind and
/// request id); a message that decodes must encode and decode back to itself.
fn decode_as<T: Serialize + DeserializeOwned + PartialEq + Debug>(bytes: &[u8]) {
    if let Ok(message) = codec::decode::<T>(bytes) {
        let again = codec::encode(&message).expect("a decoded message encodes");
        let back: T = codec::decode(&again).expect("a re-encoded message decodes");
        assert_eq!(back, message, "decoded from {bytes:02x?}");
    }
    let _ = codec::decode_prefix::<T>(bytes);
    if let Ok(((_kind, _id), used)) = codec::decode_prefix::<(u8, u64)>(bytes) {
        let _ = codec::decode::<T>(&bytes[used..]);
    }
}

/// Decodes bytes as one message type, panicking on any broken rule.
type Decoder = fn(&[u8]);

/// Every message type a connection decodes, by name.
const DECODERS: &[(&str, Decoder)] = &[
    ("Hello", decode_as::<Hello>),
    ("HelloReply", decode_as::<HelloReply>),
    ("MasterRequest", decode_as::<MasterRequest>),
    ("MasterResponse", decode_as::<MasterResponse>),
    ("CsRequest", decode_as::<CsRequest>),
    ("CsResponse", decode_as::<CsResponse>),
    ("CsCommand", decode_as::<CsCommand>),
    ("CsCommandResult", decode_as::<CsCommandResult>),
    ("DataRequest", decode_as::<DataRequest>),
    ("DataResponse", decode_as::<DataResponse>),
    ("MlRequest", decode_as::<MlRequest>),
    ("MlResponse", decode_as::<MlResponse>),
];

fn decode_everywhere(bytes: &[u8]) {
    for (_, decode) in DECODERS {
        decode(bytes);
    }
}

/// A valid encoding to mutate, and the decoder of its type.
struct Sample {
    /// The type, for failure messages.
    what: &'static str,
    bytes: Vec<u8>,
    decode: Decoder,
}

static SAMPLES: LazyLock<Vec<Sample>> = LazyLock::new(samples);

/// Each message alone and as a connection frames it (kind, request id, body); every encoding is
/// checked to decode back to its message.
fn samples() -> Vec<Sample> {
    fn add<T: Serialize + DeserializeOwned + PartialEq + Debug>(
        out: &mut Vec<Sample>,
        what: &'static str,
        messages: Vec<T>,
    ) {
        for (i, message) in messages.iter().enumerate() {
            let body = codec::encode(message).expect("encoding a sample");
            let back: T = codec::decode(&body).expect("decoding a sample");
            assert_eq!(&back, message, "{what} sample {i} does not round-trip");
            let header = codec::encode(&(0u8, 1u64 << (i * 5 % 64), message)).expect("encoding");
            for bytes in [body, header] {
                out.push(Sample {
                    what,
                    bytes,
                    decode: decode_as::<T>,
                });
            }
        }
    }
    let mut out = Vec::new();
    add(&mut out, "Hello", hellos());
    add(&mut out, "HelloReply", hello_replies());
    add(&mut out, "MasterRequest", master_requests());
    add(&mut out, "MasterResponse", master_responses());
    add(&mut out, "CsRequest", cs_requests());
    add(&mut out, "CsResponse", cs_responses());
    add(&mut out, "CsCommand", cs_commands());
    add(&mut out, "CsCommandResult", cs_command_results());
    add(&mut out, "DataRequest", data_requests());
    add(&mut out, "DataResponse", data_responses());
    add(&mut out, "MlRequest", ml_requests());
    add(&mut out, "MlResponse", ml_responses());
    out
}

fn v4() -> SocketAddr {
    "127.0.0.1:9422".parse().expect("address")
}

fn v6() -> SocketAddr {
    "[fe80::1]:65535".parse().expect("address")
}

const CALLER: Caller = Caller { uid: 1000, gid: 0 };

fn hellos() -> Vec<Hello> {
    let mut odd = Hello::new(Role::DataPeer, "fuzz");
    odd.protocol_version = u32::MAX;
    odd.software = "ü\u{10FFFF}".into();
    vec![Hello::new(Role::Client, "elkfs-mount"), odd]
}

fn hello_replies() -> Vec<HelloReply> {
    vec![
        HelloReply::Accepted {
            protocol_version: 2,
        },
        HelloReply::Refused {
            reason: "protocol version mismatch".into(),
        },
    ]
}

fn master_requests() -> Vec<MasterRequest> {
    let inode = InodeId(0x1_0000_0001);
    let mkdir = MasterRequest::Mkdir {
        parent: InodeId::ROOT,
        name: b"dir".to_vec(),
        mode: 0o755,
        umask: 0o22,
        caller: CALLER,
    };
    vec![
        MasterRequest::OpenSession {
            subdir: "/a/b".into(),
            mount_point: "/mnt".into(),
            proof: Some([0xAB; 32]),
            client: 0x1234_5678,
        },
        MasterRequest::Lookup {
            parent: InodeId::ROOT,
            name: b"hello".to_vec(),
        },
        MasterRequest::SetAttr {
            inode,
            changes: SetAttr {
                mode: Some(0o4755),
                uid: Some(0),
                gid: None,
                size: Some(u64::MAX),
                atime: Some(TimeSet::Now),
                mtime: Some(TimeSet::At(Timestamp {
                    secs: -1,
                    nanos: 999_999_999,
                })),
            },
            caller: CALLER,
        },
        MasterRequest::Mknod {
            parent: InodeId::ROOT,
            name: vec![0xff; 40],
            kind: FileKind::BlockDevice,
            mode: 0o600,
            umask: 0,
            rdev: 0x0801,
            caller: CALLER,
            open: true,
        },
        MasterRequest::Rename {
            parent: inode,
            name: b"a".to_vec(),
            new_parent: InodeId::ROOT,
            new_name: b"b".to_vec(),
            flags: 2,
        },
        MasterRequest::ReadDir {
            inode,
            after: u64::MAX,
            limit: u32::MAX,
        },
        MasterRequest::ReadDirPlus {
            inode,
            after: 7,
            limit: 1024,
        },
        MasterRequest::LookupAhead {
            parent: inode,
            name: b"f000001".to_vec(),
            limit: 64,
        },
        MasterRequest::LeaseDir { dir: inode },
        MasterRequest::WriteEnd {
            inode,
            index: 3,
            chunk: ChunkId(77),
            length: 1 << 40,
        },
        MasterRequest::SetXattr {
            inode,
            name: b"user.k".to_vec(),
            value: vec![0; 300],
            flags: 1,
        },
        MasterRequest::Reopen {
            inodes: vec![InodeId(2), InodeId(u64::MAX)],
        },
        MasterRequest::ReclaimLocks {
            locks: vec![(
                InodeId(9),
                Lock {
                    kind: LockKind::Read,
                    start: 5,
                    end: 9,
                    owner: 1,
                    pid: 2,
                },
            )],
            last: true,
        },
        MasterRequest::SetLock {
            inode,
            lock: Lock {
                kind: LockKind::Write,
                start: 0,
                end: u64::MAX,
                owner: 42,
                pid: 4242,
            },
            wait: true,
        },
        MasterRequest::ChangeTree {
            inode: InodeId::ROOT,
            attr: TreeAttr::Eattr,
            change: Change::RemoveFlags(0xff),
            recursive: true,
            caller: CALLER,
        },
        MasterRequest::ClearChunks {
            inode,
            first: 0,
            end: u32::MAX,
        },
        MasterRequest::TrashPurge {
            inode: None,
            caller: CALLER,
        },
        MasterRequest::Snapshot {
            source: InodeId::ROOT,
            parent: inode,
            name: b"snap".to_vec(),
            caller: CALLER,
        },
        MasterRequest::Tagged {
            client: u64::MAX,
            slot: u16::MAX,
            seq: 9,
            retry: true,
            request: Box::new(mkdir),
        },
        MasterRequest::RetryWriteChunk {
            inode,
            index: 0,
            failed: vec![v4(), v6()],
        },
        MasterRequest::StatFs,
        MasterRequest::Challenge,
    ]
}

fn attr() -> Attr {
    Attr {
        inode: InodeId(5),
        kind: FileKind::Symlink,
        mode: 0o777,
        nlink: 1,
        uid: 0,
        gid: u32::MAX,
        size: 11,
        atime: Timestamp { secs: 0, nanos: 0 },
        mtime: Timestamp {
            secs: i64::MIN,
            nanos: 1,
        },
        ctime: Timestamp {
            secs: i64::MAX,
            nanos: 999_999_999,
        },
        rdev: 0,
        goal: 9,
        trash_time: 86_400,
        eattrs: 0b1010,
    }
}

fn master_responses() -> Vec<MasterResponse> {
    let copy = CopyInfo {
        server: v6(),
        version: ChunkVersion(3),
        state: CopyState::Damaged,
    };
    let when = Timestamp {
        secs: 1_700_000_000,
        nanos: 5,
    };
    vec![
        Ok(MasterReply::Session {
            session: SessionId(3),
            root: InodeId::ROOT,
            read_only: true,
        }),
        Ok(MasterReply::Attr(attr())),
        Ok(MasterReply::Entries(vec![DirEntry {
            name: b"x".to_vec(),
            inode: InodeId(9),
            kind: FileKind::Dir,
            cookie: u64::MAX,
        }])),
        Ok(MasterReply::EntriesPlus(vec![DirEntryPlus {
            entry: DirEntry {
                name: b"y".to_vec(),
                inode: InodeId(10),
                kind: FileKind::File,
                cookie: 12,
            },
            attr: attr(),
            has_xattrs: true,
        }])),
        Ok(MasterReply::Stats(FsStats {
            total_bytes: 1 << 50,
            available_bytes: 3,
            inodes: 7,
        })),
        Ok(MasterReply::ReadLocation(ReadLocation {
            file_length: 100,
            chunk: Some((ChunkId(1), ChunkVersion(2))),
            servers: vec![v4(), v6()],
            capability: Some(test_capability()),
        })),
        Ok(MasterReply::WriteLease(WriteLease {
            chunk: ChunkId(u64::MAX),
            version: ChunkVersion(u32::MAX),
            chain: vec![v4()],
            file_length: 0,
            capability: test_capability(),
        })),
        Ok(MasterReply::Reclaimed(vec![(
            InodeId(3),
            Lock {
                kind: LockKind::Write,
                start: 0,
                end: u64::MAX,
                owner: 7,
                pid: 8,
            },
        )])),
        Ok(MasterReply::LeasedNames(vec![
            b"a".to_vec(),
            vec![0xff; 255],
        ])),
        Ok(MasterReply::XattrNames(vec![
            b"user.a".to_vec(),
            Vec::new(),
        ])),
        Ok(MasterReply::Conflict(Some(Lock {
            kind: LockKind::Read,
            start: 10,
            end: 20,
            owner: 1,
            pid: 2,
        }))),
        Ok(MasterReply::FileChunks(vec![ChunkCopies {
            index: 0,
            chunk: ChunkId(8),
            version: ChunkVersion(1),
            refs: 2,
            copies: vec![copy],
        }])),
        Ok(MasterReply::DirStats(DirStats {
            inodes: 1,
            dirs: 1,
            ..DirStats::default()
        })),
        Ok(MasterReply::TreeSummary {
            files: vec![(2, 10)],
            dirs: vec![(u64::MAX, 1)],
        }),
        Ok(MasterReply::Trash(vec![TrashEntry {
            inode: InodeId(12),
            path: "/a/b".into(),
            deleted: when,
            expires: when,
            length: 4096,
        }])),
        Ok(MasterReply::Status(ClusterStatus {
            master_version: "elkfs-master 0.1.0".into(),
            chunkservers: vec![ServerStatus {
                addr: v4(),
                chunks: 5,
                total: 10,
                available: 2,
            }],
            metaloggers: vec![MetaloggerStatus {
                addr: v6(),
                version: 77,
            }],
            workers: vec![("replication".into(), "idle".into())],
            ..ClusterStatus::default()
        })),
        Ok(MasterReply::Challenge { nonce: [1; 32] }),
        Ok(MasterReply::Entry {
            attr: attr(),
            parent: attr(),
        }),
        Ok(MasterReply::Removed { parent: attr() }),
        Ok(MasterReply::Opened {
            attr: attr(),
            first_chunk: Some(ReadLocation {
                file_length: 4096,
                chunk: Some((ChunkId(3), ChunkVersion(1))),
                servers: vec![v4()],
                capability: Some(test_capability()),
            }),
        }),
        Ok(MasterReply::Opened {
            attr: attr(),
            first_chunk: None,
        }),
        Ok(MasterReply::Refused {
            reason: "no line of the exports file lets 10.0.0.1 in".into(),
        }),
        Err(Status::Locked),
    ]
}

fn cs_requests() -> Vec<CsRequest> {
    let report = ChunkReport {
        chunk: ChunkId(0xDEAD_BEEF),
        version: ChunkVersion(7),
        marked_for_removal: true,
    };
    vec![
        CsRequest::Register {
            server_id: u64::MAX,
            data_addr: v6(),
            space: Space {
                total: 1 << 40,
                available: 0,
            },
            chunk_count: 3,
            proof: [3; 32],
        },
        CsRequest::Challenge { nonce: [4; 32] },
        CsRequest::Chunks(vec![report; 3]),
        CsRequest::RegisterDone,
        CsRequest::Heartbeat {
            space: Space::default(),
        },
        CsRequest::ChunkDamaged { chunk: report },
        CsRequest::Stopping,
        CsRequest::ChunkCreated { chunk: report },
    ]
}

fn cs_responses() -> Vec<CsResponse> {
    vec![
        Ok(CsReply::Registered {
            server: ServerId(4),
            clock: u64::MAX,
        }),
        Ok(CsReply::Challenge {
            proof: [1; 32],
            nonce: [2; 32],
        }),
        Ok(CsReply::Done),
        Err(Status::Protocol),
    ]
}

fn cs_commands() -> Vec<CsCommand> {
    let (chunk, from, to) = (ChunkId(0x1234_5678_9ABC), ChunkVersion(1), ChunkVersion(2));
    vec![
        CsCommand::Create { chunk, version: to },
        CsCommand::SetVersion { chunk, from, to },
        CsCommand::Truncate {
            chunk,
            from,
            to,
            length: 65_536,
        },
        CsCommand::Delete { chunk, version: to },
        CsCommand::Replicate {
            chunk,
            version: to,
            source: v4(),
        },
        CsCommand::Duplicate {
            chunk,
            version: from,
            new_chunk: ChunkId(1),
            new_version: to,
        },
        CsCommand::DeleteMany {
            chunks: vec![(chunk, to), (ChunkId(1), from)],
        },
    ]
}

fn cs_command_results() -> Vec<CsCommandResult> {
    vec![Ok(()), Err(Status::WrongVersion)]
}

fn data_requests() -> Vec<DataRequest> {
    vec![
        DataRequest::Read {
            chunk: ChunkId(3),
            version: ChunkVersion(1),
            offset: 65_536,
            length: u32::MAX,
            capability: test_capability(),
        },
        DataRequest::Write {
            chunk: ChunkId(3),
            version: ChunkVersion(1),
            offset: 0,
            chain: vec![v4(), v6()],
            capability: test_capability(),
            create: true,
        },
        DataRequest::Sync {
            chunk: ChunkId(u64::MAX),
            chain: Vec::new(),
            capability: test_capability(),
        },
    ]
}

fn test_capability() -> Capability {
    Capability {
        chunk: ChunkId(3),
        version: ChunkVersion(1),
        access: Access::Write,
        expires: u64::MAX,
        mac: [9; 32],
    }
}

fn data_responses() -> Vec<DataResponse> {
    vec![
        Ok(DataReply::Read),
        Ok(DataReply::Written),
        Ok(DataReply::Synced),
        Err(DataError {
            status: Status::Corrupt,
            server: v6(),
        }),
    ]
}

fn ml_requests() -> Vec<MlRequest> {
    vec![
        MlRequest::Fetch {
            after: 1 << 33,
            max_bytes: u32::MAX,
        },
        MlRequest::LatestImage,
        MlRequest::Challenge { nonce: [5; 32] },
        MlRequest::Join { proof: [6; 32] },
        MlRequest::FetchImage {
            version: 12,
            offset: u64::MAX,
            length: 4096,
        },
    ]
}

fn ml_responses() -> Vec<MlResponse> {
    vec![
        Ok(MlReply::Records { last: 99 }),
        Ok(MlReply::Gone),
        Ok(MlReply::Joined),
        Ok(MlReply::Challenge {
            proof: [7; 32],
            nonce: [8; 32],
        }),
        Ok(MlReply::Image {
            version: 5,
            size: 1 << 20,
        }),
        Ok(MlReply::ImagePart),
        Err(Status::Io),
    ]
}

// ---------------------------------------------------------------------------------------------
// Mutations

/// One change to an encoding; positions are relative, so they fit any length.
#[derive(Clone, Debug)]
enum Mutation {
    /// Replaces a byte.
    Replace(Index, u8),
    /// Flips one bit of a byte.
    FlipBit(Index, u8),
    /// Inserts bytes.
    Insert(Index, Vec<u8>),
    /// Removes up to this many bytes.
    Remove(Index, usize),
    /// Cuts off everything from a position.
    Truncate(Index),
}

/// Any byte, often one that means something to bincode: small enum indices and lengths, and
/// the markers of 2-, 4-, 8- and 16-byte varints.
fn telling_byte() -> impl Strategy<Value = u8> {
    prop_oneof![
        any::<u8>(),
        select(vec![
            0u8, 1, 2, 3, 0x7f, 0x80, 0xfa, 0xfb, 0xfc, 0xfd, 0xfe, 0xff
        ]),
    ]
}

fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        3 => (any::<Index>(), telling_byte()).prop_map(|(at, b)| Mutation::Replace(at, b)),
        2 => (any::<Index>(), 0u8..8).prop_map(|(at, bit)| Mutation::FlipBit(at, bit)),
        2 => (any::<Index>(), vec(telling_byte(), 1..16))
            .prop_map(|(at, bytes)| Mutation::Insert(at, bytes)),
        1 => (any::<Index>(), 1usize..8).prop_map(|(at, n)| Mutation::Remove(at, n)),
        1 => any::<Index>().prop_map(Mutation::Truncate),
    ]
}

fn apply(bytes: &mut Vec<u8>, mutation: &Mutation) {
    let len = bytes.len();
    match mutation {
        Mutation::Insert(at, new) => {
            let at = at.index(len + 1);
            bytes.splice(at..at, new.iter().copied());
        }
        _ if len == 0 => {}
        Mutation::Replace(at, b) => bytes[at.index(len)] = *b,
        Mutation::FlipBit(at, bit) => bytes[at.index(len)] ^= 1 << bit,
        Mutation::Remove(at, n) => {
            let at = at.index(len);
            bytes.drain(at..(at + n).min(len));
        }
        Mutation::Truncate(at) => bytes.truncate(at.index(len)),
    }
}

/// Plain random bytes, and bytes made mostly of small values, which bincode reads as valid enum
/// indices, lengths and booleans, so decoding gets deep into a message before it fails.
fn random_bytes() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        vec(any::<u8>(), 0..256),
        vec(prop_oneof![4 => 0u8..4, 1 => telling_byte()], 0..128),
    ]
}

// ---------------------------------------------------------------------------------------------
// Frames

/// The limits a frame reader is used with: each connection kind's, the hello exchange's (4096
/// bytes of header, no data) and a tiny one, under which random streams hold whole frames.
fn limits() -> impl Strategy<Value = FrameLimits> {
    select(vec![
        FrameLimits {
            max_header: 64,
            max_data: 128,
        },
        FrameLimits {
            max_header: 4096,
            max_data: 0,
        },
        MASTER_CLIENT_LIMITS,
        MASTER_CHUNKSERVER_LIMITS,
        MASTER_METALOGGER_LIMITS,
        DATA_LIMITS,
    ])
}

/// A length field, chosen relative to the limit it is checked against.
#[derive(Clone, Copy, Debug)]
enum Length {
    /// A small length.
    Small(u32),
    /// The limit, or one more or less.
    NearLimit(i8),
    /// Past the limit, anywhere up to `u32::MAX`.
    Past(Index),
}

fn length() -> impl Strategy<Value = Length> {
    prop_oneof![
        4 => (0u32..300).prop_map(Length::Small),
        1 => (-1i8..=1).prop_map(Length::NearLimit),
        4 => any::<Index>().prop_map(Length::Past),
    ]
}

impl Length {
    fn against(self, limit: u32) -> u32 {
        match self {
            Length::Small(n) => n,
            Length::NearLimit(d) => limit.saturating_add_signed(i32::from(d)),
            Length::Past(at) => limit + 1 + at.index((u32::MAX - limit) as usize) as u32,
        }
    }
}

/// A piece of a byte stream sent to a frame reader.
#[derive(Clone, Debug)]
enum Piece {
    /// A well-formed frame with random contents.
    Frame(Vec<u8>, Vec<u8>),
    /// A valid message as a frame's header.
    Message(Index),
    /// Just the two length fields.
    Lengths(Length, Length),
    /// Random bytes.
    Garbage(Vec<u8>),
}

fn piece() -> impl Strategy<Value = Piece> {
    prop_oneof![
        3 => (vec(any::<u8>(), 0..80), vec(any::<u8>(), 0..140))
            .prop_map(|(header, data)| Piece::Frame(header, data)),
        3 => any::<Index>().prop_map(Piece::Message),
        2 => (length(), length()).prop_map(|(h, d)| Piece::Lengths(h, d)),
        1 => vec(any::<u8>(), 1..64).prop_map(Piece::Garbage),
    ]
}

fn stream_of(pieces: &[Piece], limits: FrameLimits) -> Vec<u8> {
    fn frame(out: &mut Vec<u8>, header: &[u8], data: &[u8]) {
        out.extend_from_slice(&(header.len() as u32).to_le_bytes());
        out.extend_from_slice(&(data.len() as u32).to_le_bytes());
        out.extend_from_slice(header);
        out.extend_from_slice(data);
    }
    let mut out = Vec::new();
    for piece in pieces {
        match piece {
            Piece::Frame(header, data) => frame(&mut out, header, data),
            Piece::Message(pick) => {
                frame(&mut out, &SAMPLES[pick.index(SAMPLES.len())].bytes, &[]);
            }
            Piece::Lengths(header, data) => {
                let header = header.against(limits.max_header);
                let data = data.against(limits.max_data);
                out.extend_from_slice(&header.to_le_bytes());
                out.extend_from_slice(&data.to_le_bytes());
            }
            Piece::Garbage(bytes) => out.extend_from_slice(bytes),
        }
    }
    out
}

/// Runs a future whose reader is in memory, so it never has to wait.
fn run_now<F: Future>(future: F) -> F::Output {
    match pin!(future).poll(&mut Context::from_waker(Waker::noop())) {
        Poll::Ready(out) => out,
        Poll::Pending => panic!("reading from memory had to wait"),
    }
}

/// Reads frames until the stream ends or breaks the rules, checking each frame against `limits`
/// and every read's allocations against the larger of the two limits (and the padding that puts
/// a large payload at a page boundary).
fn read_all(stream: &[u8], limits: FrameLimits) {
    let most = limits.max_header.max(limits.max_data) as usize + frame::DATA_ALIGN;
    let mut reader = stream;
    loop {
        let before = reader.len();
        let (result, largest) =
            largest_allocation_of(|| run_now(frame::read_frame(&mut reader, limits)));
        assert!(
            largest <= most,
            "reading a frame allocated {largest} bytes under {limits:?}"
        );
        let used = before - reader.len();
        match result {
            Ok(Some(f)) => {
                assert!(!f.header.is_empty());
                assert!(f.header.len() <= limits.max_header as usize);
                assert!(f.data.len() <= limits.max_data as usize);
                assert_eq!(used, PREFIX_LEN + f.header.len() + f.data.len());
            }
            Ok(None) => {
                assert_eq!(before, 0, "a clean end only where the stream ends");
                return;
            }
            Err(FrameError::TooLarge { .. } | FrameError::EmptyHeader) => {
                assert_eq!(used, PREFIX_LEN, "refused after reading the lengths only");
                return;
            }
            Err(FrameError::Io(e)) => {
                assert_eq!(e.kind(), io::ErrorKind::UnexpectedEof);
                assert!(reader.is_empty(), "a torn frame only where the stream ends");
                return;
            }
        }
    }
}

/// A peer that sends `0xA5` forever, counting the bytes taken from it.
#[derive(Default)]
struct EndlessPeer {
    sent: usize,
}

impl AsyncRead for EndlessPeer {
    fn poll_read(
        mut self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let n = buf.remaining();
        buf.initialize_unfilled().fill(0xA5);
        buf.advance(n);
        self.sent += n;
        Poll::Ready(Ok(()))
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(DECODER_CASES))]

    #[test]
    fn random_bytes_never_panic_a_decoder(bytes in random_bytes()) {
        decode_everywhere(&bytes);
    }

    #[test]
    fn mutated_messages_never_panic_a_decoder(
        pick in any::<Index>(),
        mutations in vec(mutation(), 1..5),
    ) {
        let sample = &SAMPLES[pick.index(SAMPLES.len())];
        let mut bytes = sample.bytes.clone();
        for m in &mutations {
            apply(&mut bytes, m);
        }
        (sample.decode)(&bytes);
        decode_everywhere(&bytes);
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(FRAME_CASES))]

    #[test]
    fn frame_reader_survives_random_and_mutated_streams(
        limits in limits(),
        pieces in vec(piece(), 0..8),
        mutations in vec(mutation(), 0..4),
    ) {
        let mut stream = stream_of(&pieces, limits);
        for m in &mutations {
            apply(&mut stream, m);
        }
        read_all(&stream, limits);
    }

    #[test]
    fn announced_lengths_are_checked_before_anything_is_read(
        limits in limits(),
        header in length(),
        data in length(),
    ) {
        let (header, data) = (header.against(limits.max_header), data.against(limits.max_data));
        let mut prefix = header.to_le_bytes().to_vec();
        prefix.extend_from_slice(&data.to_le_bytes());
        let mut peer = EndlessPeer::default();
        let (result, largest) = largest_allocation_of(|| {
            run_now(frame::read_frame(&mut (&prefix[..]).chain(&mut peer), limits))
        });
        let fits = header <= limits.max_header && data <= limits.max_data;
        match result {
            Ok(Some(f)) => {
                prop_assert!(fits && header > 0);
                prop_assert_eq!((f.header.len(), f.data.len()), (header as usize, data as usize));
                prop_assert_eq!(peer.sent, (header + data) as usize);
                prop_assert!(largest <= header.max(data) as usize + frame::DATA_ALIGN);
            }
            Err(FrameError::TooLarge { .. }) => {
                prop_assert!(!fits);
                prop_assert_eq!(peer.sent, 0);
                prop_assert_eq!(largest, 0, "nothing allocated for a refused frame");
            }
            Err(FrameError::EmptyHeader) => {
                prop_assert!(fits && header == 0);
                prop_assert_eq!(peer.sent, 0);
            }
            other => prop_assert!(false, "unexpected result {:?}", other),
        }
    }
}

#[test]
fn every_sample_is_a_valid_encoding_of_every_message_type() {
    let samples = samples();
    for (name, _) in DECODERS {
        assert!(
            samples.iter().any(|s| s.what == *name),
            "no sample of {name}"
        );
    }
}

#[test]
fn maximal_lengths_are_refused_for_every_connection_kind() {
    for limits in [
        MASTER_CLIENT_LIMITS,
        MASTER_CHUNKSERVER_LIMITS,
        MASTER_METALOGGER_LIMITS,
        DATA_LIMITS,
    ] {
        for (header, data) in [(u32::MAX, 0), (1, u32::MAX), (u32::MAX, u32::MAX)] {
            let mut prefix = header.to_le_bytes().to_vec();
            prefix.extend_from_slice(&data.to_le_bytes());
            let mut peer = EndlessPeer::default();
            let result = run_now(frame::read_frame(
                &mut (&prefix[..]).chain(&mut peer),
                limits,
            ));
            assert!(
                matches!(result, Err(FrameError::TooLarge { .. })),
                "{limits:?} {header} {data}: {result:?}"
            );
            assert_eq!(peer.sent, 0);
        }
    }
}

/// Set in the child process that decodes a deeply nested request: a stack overflow aborts the
/// whole process, so the test runs it in a child to report it instead of dying with it.
const NESTED_CHILD_ENV: &str = "ELKFS_PROTO_FUZZ_NESTED_CHILD";

/// A frame header as a client sends it: a request that is a [`MasterRequest::Tagged`] of a
/// `Tagged` of ... of `StatFs`, nested as deep as fits in a client's frame.
fn nested_tagged_header() -> Vec<u8> {
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
    let depth = (MASTER_CLIENT_LIMITS.max_header as usize - 16) / level.len();
    let mut header = codec::encode(&(0u8, 1u64)).expect("encoding");
    for _ in 0..depth {
        header.extend_from_slice(level);
    }
    header.extend_from_slice(&inner);
    header
}

/// A peer may send a `Tagged` request nested as deep as a frame allows; decoding it must end in
/// `Ok` or `Err` on a thread with the stack a tokio worker (a connection task) has, not in a
/// stack overflow that aborts the daemon.
// Bincode has no nesting limit: about 5,000 levels (a 20 KB frame) overflowed a 2 MiB stack
// and aborted the master, until decoding refused a `Tagged` inside a `Tagged`.
#[test]
fn deeply_nested_tagged_request_does_not_overflow_a_workers_stack() {
    let header = nested_tagged_header();
    assert!(header.len() <= MASTER_CLIENT_LIMITS.max_header as usize);
    if std::env::var_os(NESTED_CHILD_ENV).is_some() {
        let decoding = std::thread::Builder::new()
            .stack_size(2 << 20)
            .spawn(move || {
                let ((_kind, _id), used) =
                    codec::decode_prefix::<(u8, u64)>(&header).expect("kind and id");
                codec::decode::<MasterRequest>(&header[used..]).is_ok()
            })
            .expect("spawning a thread");
        let decoded = decoding.join().expect("decoding thread");
        println!("nested request decoded: {decoded}");
        return;
    }
    let name = module_path!()
        .split_once("::")
        .map_or("", |(_, path)| path)
        .to_owned()
        + "::deeply_nested_tagged_request_does_not_overflow_a_workers_stack";
    let child = std::process::Command::new(std::env::current_exe().expect("test binary"))
        .args([name.as_str(), "--exact", "--nocapture", "--test-threads=1"])
        .env(NESTED_CHILD_ENV, "1")
        .output()
        .expect("running the test binary");
    let stdout = String::from_utf8_lossy(&child.stdout);
    assert!(
        child.status.success() && stdout.contains("nested request decoded"),
        "decoding a {}-byte nested Tagged request crashed: {}\n{stdout}{}",
        nested_tagged_header().len(),
        child.status,
        String::from_utf8_lossy(&child.stderr)
    );
}
