//! A bit flipped in a chunk file, as a failing disk does it: found by the background chunk test
//! or by a read, never handed to a reader, and the copy replaced by a good one.

use std::time::Duration;

use elkfs_testkit::Process;

use crate::support::{
    Admin, CHUNK_SIZE, Configs, Disks, MIB, QUICK_MASTER, Readers, check_copies, check_placement,
    data, eventually, flip_bit, logged, write_file,
};

/// What the chunkserver logs when its chunk test finds damage.
const FOUND_BY_TEST: &str = "chunk test found a damaged copy";
/// What the chunkserver logs when a read hits a damaged block.
const FOUND_BY_READ: &str = "damaged chunk copy";

fn lines_with<'a>(log: &'a str, needle: &str) -> Vec<&'a str> {
    log.lines().filter(|l| l.contains(needle)).collect()
}

#[test]
fn a_flipped_bit_is_found_by_the_chunk_test_and_the_copy_is_replaced() {
    let configs = Configs::new(QUICK_MASTER, "chunk_test_mib_per_sec = 256\n");
    let cluster = configs.builder().chunkservers(3).start();
    let admin = Admin::connect(&cluster);
    let file = (
        cluster.mount_path(0).join("tested"),
        data(3 * MIB + 1234, 5),
    );
    write_file(&file.0, &file.1).expect("write");
    let all = [0, 1, 2];
    check_placement(&cluster, &admin, &all, std::slice::from_ref(&file), 2)
        .unwrap_or_else(|e| panic!("after the write: {e}"));
    let chunk = admin.chunks_of(&file.0)[0].clone();
    let victim = Disks::scan(&cluster, &all).valid_files(chunk.chunk)[0].clone();

    // Nothing reads the file until the chunk test has found the damage, so that is what finds it.
    flip_bit(&victim, 2 * MIB + 77);
    eventually(
        Duration::from_secs(30),
        &format!(
            "the chunk test of cs{} finds the flipped bit",
            victim.server
        ),
        || logged(&cluster, Process::Chunkserver(victim.server), FOUND_BY_TEST),
    );
    let readers = Readers::start(std::slice::from_ref(&file), 2);
    eventually(
        Duration::from_secs(60),
        "the damaged copy is replaced by a good one",
        || check_copies(&cluster, &admin, &all, std::slice::from_ref(&file), 2),
    );
    readers.wait_for_reads(4);
    readers.finish_without_errors();
    let master_log = cluster.log_of(Process::Master);
    assert!(
        master_log.contains("reports a damaged copy"),
        "the master did not hear of the damage"
    );
}

#[test]
fn a_flipped_bit_is_found_by_a_read_that_still_gets_good_bytes_and_the_copy_is_replaced() {
    // The chunk test must not get there first. At 1 MiB/s it rests 64 s after checking a full
    // chunk, and it checks chunks in id order: a full 64 MiB decoy written first, on the same
    // server as the damaged copy, keeps it away from the later file for the whole test.
    let configs = Configs::new(QUICK_MASTER, "chunk_test_mib_per_sec = 1\n");
    let cluster = configs.builder().chunkservers(3).start();
    let admin = Admin::connect(&cluster);
    let mnt = cluster.mount_path(0).to_path_buf();
    let decoy = (mnt.join("decoy"), data(CHUNK_SIZE, 6));
    write_file(&decoy.0, &decoy.1).expect("write the decoy");
    let file = (mnt.join("read"), data(2 * MIB + 99, 7));
    write_file(&file.0, &file.1).expect("write");
    let all = [0, 1, 2];
    let disks = Disks::scan(&cluster, &all);
    let decoy_chunk = admin.chunks_of(&decoy.0)[0].chunk;
    let chunk = admin.chunks_of(&file.0)[0].chunk;
    let victim = disks
        .valid_files(chunk)
        .into_iter()
        .find(|f| disks.valid_servers(decoy_chunk).contains(&f.server))
        .unwrap_or_else(|| panic!("two copies each on three servers must share one"))
        .clone();

    let readers = Readers::start(std::slice::from_ref(&file), 2);
    readers.wait_for_reads(2);
    flip_bit(&victim, MIB + 5);
    eventually(
        Duration::from_secs(30),
        &format!("a read from cs{} hits the flipped bit", victim.server),
        || logged(&cluster, Process::Chunkserver(victim.server), FOUND_BY_READ),
    );
    eventually(
        Duration::from_secs(60),
        "the damaged copy is replaced by a good one",
        || check_copies(&cluster, &admin, &all, std::slice::from_ref(&file), 2),
    );
    readers.wait_for_reads(10);
    readers.finish_without_errors();
    let log = cluster.log_of(Process::Chunkserver(victim.server));
    let by_test = lines_with(&log, FOUND_BY_TEST);
    assert!(
        by_test.is_empty(),
        "the chunk test, not a read, found the damage (or it found damage that is not there): {by_test:?}"
    );
}
