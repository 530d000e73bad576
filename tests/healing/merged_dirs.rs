//! An operator retires a node by moving its chunk files onto another node's disk and starting
//! only that one: every file stays readable and every chunk gets back to its goal.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use crate::support::{
    Admin, Configs, MIB, QUICK_MASTER, Readers, check_copies, check_placement, data, eventually,
    move_chunk_files, write_file,
};

#[test]
fn chunk_files_of_two_servers_merged_onto_one_are_all_readable_and_back_at_goal() {
    let configs = Configs::new(QUICK_MASTER, "");
    let mut cluster = configs.builder().chunkservers(3).start();
    let admin = Admin::connect(&cluster);
    let mnt = cluster.mount_path(0).to_path_buf();
    let files: Vec<(PathBuf, Arc<[u8]>)> = (0..16)
        .map(|i| {
            (
                mnt.join(format!("f{i:02}")),
                data(MIB + i * 100_000, 80 + i as u64),
            )
        })
        .collect();
    for (path, bytes) in &files {
        write_file(path, bytes).expect("write");
    }
    check_placement(&cluster, &admin, &[0, 1, 2], &files, 2)
        .unwrap_or_else(|e| panic!("after writing: {e}"));

    // cs2's files go onto cs1's disk (a chunk both had is one file there); cs2 never returns.
    cluster.stop_chunkserver(1);
    cluster.stop_chunkserver(2);
    let from = cluster.chunkserver_data_dirs(2)[0].clone();
    let to = cluster.chunkserver_data_dirs(1)[0].clone();
    assert!(move_chunk_files(&from, &to) > 0, "cs2 had no chunk files");
    cluster.start_chunkserver(1);

    let readers = Readers::start(&files, 2);
    let left = [0, 1];
    eventually(
        Duration::from_secs(60),
        "every chunk has 2 copies, on cs0 and cs1",
        || check_placement(&cluster, &admin, &left, &files, 2),
    );
    readers.wait_for_reads(files.len() as u64);
    readers.finish_without_errors();
    check_copies(&cluster, &admin, &left, &files, 2)
        .unwrap_or_else(|e| panic!("after healing: {e}"));
}
