//! A chunkserver killed with SIGKILL while one program reads a file and another writes one: both
//! end with the right bytes, and the chunks that lost a copy get it back on the servers left.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use elkfs_testkit::Process;

use crate::support::{
    Admin, Configs, Disks, MIB, QUICK_MASTER, Readers, Writer, check_copies, data, eventually,
    logged, none_left, write_file,
};

#[test]
fn a_server_killed_under_a_reader_and_a_writer_loses_no_data_and_goal_three_comes_back() {
    let configs = Configs::new(QUICK_MASTER, "");
    let mut cluster = configs.builder().chunkservers(4).start();
    let admin = Admin::connect(&cluster);
    let dir = cluster.mount_path(0).join("three");
    std::fs::create_dir(&dir).expect("mkdir");
    assert_eq!(admin.set_goal(&dir, 3, false), (1, 0));
    let read = (dir.join("read-all-along"), data(100 * MIB, 1));
    write_file(&read.0, &read.1).expect("writing the file to read");
    let written = (dir.join("written-meanwhile"), data(160 * MIB, 2));

    let readers = Readers::start(std::slice::from_ref(&read), 2);
    readers.wait_for_reads(1);
    let writer = Writer::start(&written.0, written.1.clone());
    // 100 MiB handed over, at most 32 MiB of it not yet stored: the first chunk is complete on
    // its three servers and the second one is being written.
    writer.wait_for(100 * MIB as u64);

    // The victim holds a copy of both chunks of the file being written (the newest chunk is
    // the one being written now) and of the file being read.
    let all = [0, 1, 2, 3];
    let disks = Disks::scan(&cluster, &all);
    let holders = |path: &std::path::Path| -> BTreeSet<usize> {
        admin
            .chunks_of(path)
            .iter()
            .flat_map(|c| disks.servers_at(c.chunk, c.version))
            .collect()
    };
    let newest = *disks.chunks().last().expect("chunks on disk");
    let first = admin.chunks_of(&written.0)[0].clone();
    assert_ne!(
        first.chunk, newest,
        "the second chunk is not being written yet"
    );
    let candidates: BTreeSet<usize> = disks
        .valid_servers(newest)
        .intersection(&disks.servers_at(first.chunk, first.version))
        .copied()
        .collect();
    let victim = *candidates
        .intersection(&holders(&read.0))
        .next()
        .unwrap_or_else(|| {
            panic!(
                "no server holds copies of both written chunks and of the read file: {}",
                disks.describe(newest)
            )
        });
    cluster.kill_chunkserver(victim);
    let killed_at = Instant::now();
    assert!(
        !writer.is_finished(),
        "the write ended before cs{victim} was killed; nothing was tested"
    );

    // The write's result is checked last, so a failure there still lets the rest be seen.
    let write_result = writer.finish();
    readers.wait_for_reads(4);
    readers.finish_without_errors();
    assert!(
        std::fs::read(&written.0).expect("reading the written file") == *written.1,
        "the file written while cs{victim} was killed reads back wrong (the write said {write_result:?})"
    );

    let live: Vec<usize> = all.into_iter().filter(|&i| i != victim).collect();
    eventually(
        Duration::from_secs(60).saturating_sub(killed_at.elapsed()),
        "every chunk has 3 valid copies on the 3 servers left (within a minute of the kill)",
        || none_left(Disks::scan(&cluster, &live).off_goal(3)),
    );
    check_copies(&cluster, &admin, &live, &[read, written], 3)
        .unwrap_or_else(|e| panic!("after healing: {e}"));
    let master_log = cluster.log_of(Process::Master);
    assert!(
        master_log.contains("chunkserver disconnected"),
        "the master never noticed cs{victim} was gone"
    );
    // write(2)s, fsync and close of the file written across the kill all succeed: its data is
    // stored on the servers left, so nothing is lost and nothing may be reported lost.
    write_result.unwrap_or_else(|e| {
        panic!("writing (write, fsync, close) across the kill of cs{victim} failed: {e}")
    });
}

/// A file at goal 1 whose only copy is on a server killed: the master says its chunk has no
/// valid copy left (the file cannot be read meanwhile), and says so again when the server is
/// back and every chunk has one.
#[test]
fn a_chunk_whose_only_copy_is_on_a_killed_server_is_logged_until_the_server_is_back() {
    let configs = Configs::new(QUICK_MASTER, "");
    let mut cluster = configs.builder().chunkservers(2).start();
    let admin = Admin::connect(&cluster);
    let dir = cluster.mount_path(0).join("one");
    std::fs::create_dir(&dir).expect("mkdir");
    assert_eq!(admin.set_goal(&dir, 1, false), (1, 0));
    let file = (dir.join("only-copy"), data(MIB, 7));
    write_file(&file.0, &file.1).expect("writing the file");
    let chunk = admin.chunks_of(&file.0)[0].chunk;
    let holder = Disks::scan(&cluster, &[0, 1])
        .files(chunk)
        .first()
        .expect("a server holds the chunk")
        .server;
    cluster.kill_chunkserver(holder);
    let missing = "chunks without a valid copy";
    eventually(
        Duration::from_secs(30),
        "the master logs the chunk without a copy",
        || logged(&cluster, Process::Master, missing),
    );
    cluster.start_chunkserver(holder);
    let back = "every chunk has a valid copy again";
    eventually(
        Duration::from_secs(30),
        "the master logs every chunk back",
        || logged(&cluster, Process::Master, back),
    );
    assert_eq!(std::fs::read(&file.0).expect("read"), *file.1);
}
