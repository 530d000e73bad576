//! A writer that dies between its writes and its report of the file's new length leaves bytes
//! past the file's end. None of them may ever show: a truncate or a write that grows the file
//! over them reads zeros there, as on a local filesystem. A writer still at work is another matter: what
//! it wrote stays. So does what a writer stored before its connection was cut, for a grace time
//! (`unreported_write_grace_secs`) in which it may come back and report it: the master cannot
//! tell it from a dead one.
//!
//! The file is written through one mount and read through another that never read it before,
//! so the first mount's page cache (which holds zeros past the end it knew) cannot hide what
//! the chunkservers return.

use std::fs::OpenOptions;
use std::io::{Seek, SeekFrom, Write};
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::time::{Duration, Instant};

use crate::support::{
    Admin, CHUNK_SIZE, Configs, MIB, QUICK_MASTER, close_checked, data, write_at, write_file,
};

/// Master settings with a grace of `secs` for slots written under a lease that ended without
/// a report.
fn master_config(secs: u64) -> String {
    format!("{QUICK_MASTER}unreported_write_grace_secs = {secs}\n")
}

/// Grows the file at `path` to `size` bytes by truncate.
fn grow(path: &Path, size: u64) {
    let f = OpenOptions::new()
        .write(true)
        .open(path)
        .expect("opening the file");
    f.set_len(size).expect("growing the file by truncate");
    close_checked(f).expect("closing the file");
}

/// The first byte at or after `from` that is not zero, as "offset: byte".
fn first_nonzero(bytes: &[u8], from: usize) -> Option<String> {
    bytes[from..]
        .iter()
        .position(|&b| b != 0)
        .map(|p| format!("{}: {:#04x}", from + p, bytes[from + p]))
}

#[test]
fn what_a_dead_writer_left_past_the_end_reads_as_zeros_once_a_truncate_grows_the_file() {
    let grace = Duration::from_secs(1);
    let configs = Configs::new(&master_config(grace.as_secs()), "");
    let cluster = configs.builder().chunkservers(2).mounts(2).start();
    let writer_side = cluster.mount_path(0).join("grown");
    let head = data(100, 1);
    write_file(&writer_side, &head).expect("writing the file's first 100 bytes");

    // An empty file: its end is on a chunk boundary, so its first chunk lies wholly past it.
    let empty_side = cluster.mount_path(0).join("was-empty");
    write_file(&empty_side, &[]).expect("creating an empty file");

    let dead = Admin::connect(&cluster);
    // In the chunk that holds the end, and in a chunk of its own wholly past it.
    dead.write_unreported(&writer_side, 100, &[0xaa; 8192]);
    dead.write_unreported(&writer_side, CHUNK_SIZE as u64 + 4096, &[0xbb; 8192]);
    dead.write_unreported(&empty_side, 0, &[0xcc; 8192]);
    drop(dead);
    // Past the grace in which it might still have come back.
    std::thread::sleep(grace + Duration::from_secs(2));

    let size = CHUNK_SIZE as u64 + 65536;
    grow(&writer_side, size);
    grow(&empty_side, 65536);
    let was_empty = std::fs::read(cluster.mount_path(1).join("was-empty")).expect("reading it");
    assert_eq!(was_empty.len(), 65536);
    assert_eq!(
        first_nonzero(&was_empty, 0),
        None,
        "a byte the dead writer left in an empty file's first chunk shows"
    );

    let got = std::fs::read(cluster.mount_path(1).join("grown")).expect("reading it back");
    assert_eq!(got.len() as u64, size);
    assert!(got[..100] == head[..], "the file's first 100 bytes changed");
    assert_eq!(
        (
            first_nonzero(&got[..CHUNK_SIZE], 100),
            first_nonzero(&got, CHUNK_SIZE)
        ),
        (None, None),
        "a byte the dead writer left past the old end shows (in the chunk holding it, in the next)"
    );
}

#[test]
fn what_a_dead_writer_left_past_the_end_reads_as_zeros_once_a_write_grows_the_file() {
    let grace = Duration::from_secs(1);
    let configs = Configs::new(&master_config(grace.as_secs()), "");
    let cluster = configs.builder().chunkservers(2).mounts(2).start();
    // A write into the chunk holding the end, past what the dead writer left there; a write
    // two chunks further on, past a chunk of the dead writer's own; a write into an empty
    // file's first chunk.
    let head = data(100, 8);
    let same_chunk = cluster.mount_path(0).join("same-chunk");
    let further = cluster.mount_path(0).join("further");
    let was_empty = cluster.mount_path(0).join("was-empty");
    write_file(&same_chunk, &head).expect("writing a file's first 100 bytes");
    write_file(&further, &head).expect("writing another file's first 100 bytes");
    write_file(&was_empty, &[]).expect("creating an empty file");

    let dead = Admin::connect(&cluster);
    dead.write_unreported(&same_chunk, 100, &[0xaa; 8192]);
    dead.write_unreported(&further, 100, &[0xbb; 8192]);
    dead.write_unreported(&further, CHUNK_SIZE as u64 + 4096, &[0xcc; 8192]);
    dead.write_unreported(&was_empty, 0, &[0xdd; 8192]);
    drop(dead);
    // Past the grace in which it might still have come back.
    std::thread::sleep(grace + Duration::from_secs(2));

    let tail = data(4096, 9);
    write_at(&same_chunk, 65536, &tail);
    let far = 2 * CHUNK_SIZE as u64 + 100;
    write_at(&further, far, &tail);
    write_at(&was_empty, 16384, &tail);

    let read = |name: &str| std::fs::read(cluster.mount_path(1).join(name)).expect("reading");
    let got = read("same-chunk");
    assert_eq!(got.len(), 65536 + 4096);
    assert!(got[..100] == head[..], "the file's first 100 bytes changed");
    assert!(got[65536..] == tail[..], "the write past the end was lost");
    assert_eq!(
        first_nonzero(&got[..65536], 100),
        None,
        "a byte the dead writer left in the chunk written shows"
    );
    let got = read("further");
    assert_eq!(got.len() as u64, far + 4096);
    assert!(
        got[..100] == head[..],
        "the other file's first 100 bytes changed"
    );
    assert!(
        got[far as usize..] == tail[..],
        "the write two chunks on was lost"
    );
    assert_eq!(
        first_nonzero(&got[..far as usize], 100),
        None,
        "a byte the dead writer left in a chunk between the old end and the write shows"
    );
    let got = read("was-empty");
    assert_eq!(got.len(), 16384 + 4096);
    assert_eq!(
        first_nonzero(&got[..16384], 0),
        None,
        "a byte the dead writer left in an empty file's first chunk shows"
    );
}

#[test]
fn what_a_live_writer_stores_past_the_end_stays_when_another_mount_writes_further_on() {
    let configs = Configs::new(&master_config(0), "");
    let cluster = configs.builder().chunkservers(2).mounts(2).start();
    let writer_side = cluster.mount_path(0).join("shared");
    let other_side = cluster.mount_path(1).join("shared");
    let head = data(100, 10);
    write_file(&writer_side, &head).expect("writing the file's first 100 bytes");

    // Written past the end and not yet closed (so perhaps stored and not yet reported) when
    // the other mount writes two chunks further on.
    let near = data(4 * MIB, 11);
    let far = data(MIB, 12);
    let f = OpenOptions::new()
        .write(true)
        .open(&writer_side)
        .expect("opening the file");
    f.write_all_at(&near, MIB as u64)
        .expect("writing past the end");
    let far_at = 2 * CHUNK_SIZE as u64;
    write_at(&other_side, far_at, &far);
    close_checked(f).expect("closing the writer's file");

    let got = std::fs::read(&other_side).expect("reading it back");
    assert_eq!(got.len() as u64, far_at + MIB as u64);
    assert!(got[..100] == head[..], "the file's first 100 bytes changed");
    assert!(
        got[MIB..5 * MIB] == near[..],
        "what the first mount wrote past the old end was lost"
    );
    assert!(
        got[far_at as usize..] == far[..],
        "what the other mount wrote was lost"
    );
    assert_eq!(
        first_nonzero(&got[..far_at as usize], 5 * MIB),
        None,
        "between the writes"
    );
}

#[test]
fn what_a_writer_holding_its_lease_stored_past_the_end_stays_when_another_mount_writes_further_on()
{
    let configs = Configs::new(&master_config(0), "");
    let cluster = configs.builder().chunkservers(2).mounts(2).start();
    let path = cluster.mount_path(0).join("held");
    let head = data(100, 13);
    write_file(&path, &head).expect("writing the file's first 100 bytes");

    // Stored under a lease its writer still holds and has not reported yet.
    let writer = Admin::connect(&cluster);
    let stored = data(8192, 14);
    writer.write_unreported(&path, 100, &stored);
    let tail = data(4096, 15);
    let far = 2 * CHUNK_SIZE as u64;
    // Through the other mount, whose page cache holds nothing of the file's head.
    let other_side = cluster.mount_path(1).join("held");
    write_at(&other_side, far, &tail);

    let got = std::fs::read(&other_side).expect("reading it back");
    assert_eq!(got.len() as u64, far + 4096);
    assert!(got[..100] == head[..], "the file's first 100 bytes changed");
    assert!(
        got[100..100 + 8192] == stored[..],
        "what the lease's holder stored past the old end was cut"
    );
    assert!(
        got[far as usize..] == tail[..],
        "the write further on was lost"
    );
    drop(writer);
}

#[test]
fn what_a_live_writer_wrote_past_the_end_stays_when_another_mount_grows_the_file() {
    let configs = Configs::new(&master_config(0), "");
    let cluster = configs.builder().chunkservers(2).mounts(2).start();
    let writer_side = cluster.mount_path(0).join("grown");
    let other_side = cluster.mount_path(1).join("grown");
    let head = data(100, 2);
    write_file(&writer_side, &head).expect("writing the file's first 100 bytes");

    // Written past the end, in the chunk holding it and in the next one, and not yet closed
    // (so perhaps not yet stored, or stored and not yet reported) when the other mount grows
    // the file.
    let near = data(4 * MIB, 3);
    let far = data(4 * MIB, 4);
    let mut f = OpenOptions::new()
        .write(true)
        .open(&writer_side)
        .expect("opening the file");
    f.seek(SeekFrom::Start(MIB as u64)).expect("seeking");
    f.write_all(&near).expect("writing past the end");
    f.seek(SeekFrom::Start(CHUNK_SIZE as u64))
        .expect("seeking to the next chunk");
    f.write_all(&far).expect("writing into the next chunk");

    let size = 2 * CHUNK_SIZE as u64;
    let g = OpenOptions::new()
        .write(true)
        .open(&other_side)
        .expect("opening the file on the other mount");
    g.set_len(size).expect("growing the file by truncate");
    close_checked(g).expect("closing it on the other mount");
    close_checked(f).expect("closing the writer's file");

    let got = std::fs::read(&other_side).expect("reading it back");
    assert_eq!(got.len() as u64, size);
    assert!(got[..100] == head[..], "the file's first 100 bytes changed");
    assert_eq!(
        first_nonzero(&got[..MIB], 100),
        None,
        "between the head and the first write"
    );
    assert!(
        got[MIB..5 * MIB] == near[..],
        "the write past the old end in its chunk was lost"
    );
    assert!(
        got[CHUNK_SIZE..CHUNK_SIZE + 4 * MIB] == far[..],
        "the write into the next chunk was lost"
    );
    assert_eq!(
        first_nonzero(&got, CHUNK_SIZE + 4 * MIB),
        None,
        "past the writes"
    );
}

#[test]
fn what_a_writer_cut_off_lately_stored_past_the_end_stays_when_a_truncate_grows_the_file() {
    let grace = Duration::from_secs(5);
    let configs = Configs::new(&master_config(grace.as_secs()), "");
    let cluster = configs.builder().chunkservers(2).mounts(2).start();
    // Every slot counts as written unreported for the grace after the master's start.
    let past_start = Instant::now() + grace + Duration::from_millis(500);
    let writer_side = cluster.mount_path(0).join("grown");
    let head = data(100, 5);
    write_file(&writer_side, &head).expect("writing the file's first 100 bytes");
    std::thread::sleep(past_start.saturating_duration_since(Instant::now()));

    let near = data(8192, 6);
    let far = data(8192, 7);
    let cut_off = Admin::connect(&cluster);
    cut_off.write_unreported(&writer_side, 100, &near);
    cut_off.write_unreported(&writer_side, CHUNK_SIZE as u64 + 4096, &far);
    drop(cut_off);
    let cut = Instant::now();

    let size = CHUNK_SIZE as u64 + 65536;
    grow(&writer_side, size);
    assert!(
        cut.elapsed() < grace,
        "the truncate came {:?} after the writer's connection ended, past the grace: \
         this run says nothing",
        cut.elapsed()
    );

    let got = std::fs::read(cluster.mount_path(1).join("grown")).expect("reading it back");
    assert_eq!(got.len() as u64, size);
    assert!(got[..100] == head[..], "the file's first 100 bytes changed");
    assert!(
        got[100..100 + 8192] == near[..],
        "what the writer stored in the chunk holding the old end was cut"
    );
    let far_at = CHUNK_SIZE + 4096;
    assert!(
        got[far_at..far_at + 8192] == far[..],
        "what the writer stored in the next chunk was dropped"
    );
}
