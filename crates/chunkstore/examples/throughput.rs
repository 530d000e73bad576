//! Measures the chunk store's data path and start-up scan on this machine:
//! `cargo run --release -p elkfs-chunkstore --example throughput [-- DIR]`.
//! First it times opening a store of 100,000 chunks (kept in DIR/scan between runs, so dropping
//! the page cache in between measures a cold scan). Then it writes 1 GiB (16 chunks) in 1 MiB
//! pieces, rewrites it (pages now cached), reads it back warm, verifies it, and does small
//! unaligned appends. DIR defaults to a temporary directory.

use std::path::Path;
use std::time::{Duration, Instant};

use elkfs_chunkstore::{ChunkStore, DataDirSpec};
use elkfs_proto::geometry::CHUNK_SIZE;
use elkfs_proto::{ChunkId, ChunkVersion};

const PIECE: usize = 1 << 20;
const CHUNKS: u64 = 16;
const SCAN_CHUNKS: u64 = 100_000;
const VERSION: ChunkVersion = ChunkVersion(1);

fn main() {
    let temp = tempfile::tempdir().expect("temporary directory");
    let root = std::env::args()
        .nth(1)
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| temp.path().to_path_buf());
    scan(&root.join("scan"));
    let data = root.join("data");
    if data.exists() {
        std::fs::remove_dir_all(&data).expect("remove the previous run's data");
    }
    data_path(&data);
}

fn open(dir: &Path) -> ChunkStore {
    let spec = DataDirSpec {
        path: dir.to_path_buf(),
        marked_for_removal: false,
    };
    ChunkStore::open(&[spec]).expect("open store").0
}

fn report(what: &str, bytes: u64, elapsed: Duration) {
    let mb_s = bytes as f64 / 1e6 / elapsed.as_secs_f64();
    println!(
        "{what:<44} {:>8.0} MB/s  ({} MiB in {:.3} s)",
        mb_s,
        bytes >> 20,
        elapsed.as_secs_f64()
    );
}

fn data_path(dir: &Path) {
    let store = open(dir);
    let piece: Vec<u8> = (0..PIECE).map(|i| (i * 7 + i / 4096) as u8).collect();
    let total = CHUNKS * CHUNK_SIZE;

    let started = Instant::now();
    let hashed = (0..total / PIECE as u64).map(|_| blake3::hash(&piece[..65536]));
    let count = hashed.count();
    report(
        "blake3 alone (64 KiB blocks)",
        count as u64 * 65536,
        started.elapsed(),
    );

    let started = Instant::now();
    for chunk in 0..CHUNKS {
        let id = ChunkId(chunk);
        store.create(id, VERSION).expect("create");
        for offset in (0..CHUNK_SIZE).step_by(PIECE) {
            store
                .write(id, VERSION, offset as u32, &piece)
                .expect("write");
        }
    }
    report("write new chunks, 1 MiB pieces", total, started.elapsed());

    let started = Instant::now();
    for chunk in 0..CHUNKS {
        for offset in (0..CHUNK_SIZE).step_by(PIECE) {
            store
                .write(ChunkId(chunk), VERSION, offset as u32, &piece)
                .expect("rewrite");
        }
    }
    report(
        "rewrite them, 1 MiB pieces (cached pages)",
        total,
        started.elapsed(),
    );

    let started = Instant::now();
    let mut read = 0u64;
    for chunk in 0..CHUNKS {
        for offset in (0..CHUNK_SIZE).step_by(PIECE) {
            read += store
                .read(ChunkId(chunk), VERSION, offset as u32, PIECE as u32)
                .expect("read")
                .len() as u64;
        }
    }
    report("read 1 MiB pieces (warm)", read, started.elapsed());

    let started = Instant::now();
    let mut read = 0u64;
    for chunk in 0..CHUNKS {
        for offset in (0..CHUNK_SIZE).step_by(4096 * 17) {
            read += store
                .read(ChunkId(chunk), VERSION, offset as u32, 4096)
                .expect("read")
                .len() as u64;
        }
    }
    report("read 4 KiB pieces, spread (warm)", read, started.elapsed());

    let started = Instant::now();
    let checked: u64 = (0..CHUNKS)
        .map(|chunk| store.verify(ChunkId(chunk)).expect("verify"))
        .sum();
    report("verify whole chunks (warm)", checked, started.elapsed());

    let operations = 100_000u32;
    let started = Instant::now();
    for _ in 0..operations {
        store
            .read(ChunkId(0), VERSION, CHUNK_SIZE as u32, 1)
            .expect("read");
    }
    println!(
        "{:<44} {:>8.2} us",
        "fixed cost of an operation (open + header)",
        started.elapsed().as_secs_f64() * 1e6 / f64::from(operations)
    );

    let id = ChunkId(CHUNKS);
    store.create(id, VERSION).expect("create");
    let small = &piece[..4000];
    let started = Instant::now();
    let mut offset = 0u32;
    while u64::from(offset) + small.len() as u64 <= 64 << 20 {
        store.write(id, VERSION, offset, small).expect("append");
        offset += small.len() as u32;
    }
    report(
        "append 4000-byte pieces (unaligned)",
        u64::from(offset),
        started.elapsed(),
    );
}

fn scan(dir: &Path) {
    let store = open(dir);
    if store.list().len() < SCAN_CHUNKS as usize {
        let started = Instant::now();
        for id in (0..SCAN_CHUNKS).map(ChunkId) {
            if store.info(id).is_none() {
                store.create(id, VERSION).expect("create");
            }
        }
        let elapsed = started.elapsed().as_secs_f64();
        println!("create {SCAN_CHUNKS} empty chunks: {elapsed:.3} s");
    }
    drop(store);

    let started = Instant::now();
    let store = open(dir);
    let opened = started.elapsed().as_secs_f64();
    let started = Instant::now();
    let listed = store.list().len();
    let elapsed = started.elapsed().as_secs_f64();
    println!("open (scan) with {listed} chunks: {opened:.3} s, then list(): {elapsed:.3} s");
}
