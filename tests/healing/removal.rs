//! A data directory marked for removal (`--data '*DIR'`) is emptied: its chunks are copied to
//! other servers and then deleted from it, while every file stays readable.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use elkfs_e2e::chunk_files;

use crate::support::{
    Admin, Configs, MIB, QUICK_MASTER, Readers, check_copies, check_placement, data, eventually,
    move_chunk_files, write_at, write_file,
};

#[test]
fn a_data_directory_marked_for_removal_is_emptied_onto_other_servers_while_reads_go_on() {
    let configs = Configs::new(QUICK_MASTER, "");
    let mut cluster = configs
        .builder()
        .chunkservers(3)
        .data_dirs_per_server(2)
        .start();
    let admin = Admin::connect(&cluster);
    let mnt = cluster.mount_path(0).to_path_buf();
    let files: Vec<(PathBuf, Arc<[u8]>)> = (0..16)
        .map(|i| {
            (
                mnt.join(format!("f{i:02}")),
                data(MIB + i * 70_000, 90 + i as u64),
            )
        })
        .collect();
    for (path, bytes) in &files {
        write_file(path, bytes).expect("write");
    }
    let all = [0, 1, 2];
    check_placement(&cluster, &admin, &all, &files, 2)
        .unwrap_or_else(|e| panic!("after writing: {e}"));

    // All of cs0's chunks into its second directory (found there at the next start), which is
    // then marked for removal: the disk that is about to be pulled.
    cluster.stop_chunkserver(0);
    let dirs = cluster.chunkserver_data_dirs(0).to_vec();
    let moved = move_chunk_files(&dirs[0], &dirs[1]);
    assert!(moved > 0, "cs0 had no chunk files");
    cluster.set_marked_for_removal(0, 1, true);
    cluster.start_chunkserver(0);

    let readers = Readers::start(&files, 2);
    eventually(
        Duration::from_secs(60),
        "the marked directory is empty and every chunk has 2 copies elsewhere",
        || {
            let left = chunk_files(0, &dirs[1]);
            if !left.is_empty() {
                return Err(format!("{} of {moved} chunk files still in it", left.len()));
            }
            check_placement(&cluster, &admin, &all, &files, 2)
        },
    );
    readers.wait_for_reads(files.len() as u64);
    readers.finish_without_errors();
    check_copies(&cluster, &admin, &all, &files, 2)
        .unwrap_or_else(|e| panic!("after emptying: {e}"));
}

#[test]
fn a_snapshot_copy_made_beside_a_copy_marked_for_removal_leaves_the_marked_directory_too() {
    let configs = Configs::new(QUICK_MASTER, "");
    let mut cluster = configs
        .builder()
        .chunkservers(4)
        .data_dirs_per_server(2)
        .start();
    // cs3 comes later: until then every chunk at goal 3 has a copy on each of cs0-cs2, so none
    // can leave cs0's marked directory before the writes below copy it there.
    cluster.stop_chunkserver(3);
    let admin = Admin::connect(&cluster);
    let mnt = cluster.mount_path(0).to_path_buf();
    admin.set_goal(&mnt, 3, true);
    let files: Vec<(PathBuf, Arc<[u8]>)> = (0..4)
        .map(|i| {
            (
                mnt.join(format!("f{i}")),
                data(MIB + i * 1000, 110 + i as u64),
            )
        })
        .collect();
    for (path, bytes) in &files {
        write_file(path, bytes).expect("write");
        let snap = path.with_extension("snap");
        cluster.run_cli_ok(&[
            "snapshot",
            &path.display().to_string(),
            &snap.display().to_string(),
        ]);
    }
    let first_three = [0, 1, 2];
    check_placement(&cluster, &admin, &first_three, &files, 3)
        .unwrap_or_else(|e| panic!("after writing: {e}"));

    cluster.stop_chunkserver(0);
    let dirs = cluster.chunkserver_data_dirs(0).to_vec();
    assert!(
        move_chunk_files(&dirs[0], &dirs[1]) > 0,
        "cs0 had no chunk files"
    );
    cluster.set_marked_for_removal(0, 1, true);
    cluster.start_chunkserver(0);

    // Each file's chunk, shared with its snapshot, is copied on every server before the write:
    // on cs0, beside the source, in the marked directory.
    let mut written = Vec::new();
    for (path, bytes) in &files {
        let mut new = bytes.to_vec();
        new[..4096].fill(0x5a);
        write_at(path, 0, &new[..4096]);
        written.push((path.clone(), Arc::from(new)));
    }

    cluster.start_chunkserver(3);
    eventually(
        Duration::from_secs(30),
        "the marked directory is empty, the snapshots' chunks and the files' own copies moved off",
        || {
            let left = chunk_files(0, &dirs[1]);
            if left.is_empty() {
                Ok(())
            } else {
                Err(format!("{} chunk files still in it", left.len()))
            }
        },
    );
    check_copies(&cluster, &admin, &[0, 1, 2, 3], &written, 3)
        .unwrap_or_else(|e| panic!("after emptying: {e}"));
}
