//! A new chunk is logged before its servers create it (they are told in the background). One
//! that ended up with no copy anywhere (a master that died before telling them, servers that
//! all lost it) holds nothing the file shows while it lies past the file's end: the next write
//! replaces it with a new chunk instead of failing. A chunk inside the file that lost every copy
//! is lost data, and stays an error.

use std::fs::OpenOptions;
use std::io::Write;
use std::path::Path;
use std::time::Duration;

use elkfs_testkit::{Cluster, Process};

use crate::support::{
    Admin, Configs, Disks, MIB, QUICK_MASTER, check_copies, close_checked, data, eventually,
};

const BOTH: [usize; 2] = [0, 1];

/// Stops both servers, removes every file of `chunk` from their disks and starts them again,
/// so that the master knows no copy of it at all.
fn restart_without(cluster: &mut Cluster, chunk: u64) {
    for i in BOTH {
        cluster.stop_chunkserver(i);
    }
    for f in Disks::scan(cluster, &BOTH).files(chunk) {
        std::fs::remove_file(&f.path).expect("removing a copy");
    }
    let registered = |cluster: &Cluster| {
        cluster
            .log_of(Process::Master)
            .matches("chunkserver registered")
            .count()
    };
    let before = registered(cluster);
    for i in BOTH {
        cluster.start_chunkserver(i);
    }
    eventually(
        Duration::from_secs(20),
        "both servers registered again",
        || match registered(cluster) - before {
            n if n >= 2 => Ok(()),
            n => Err(format!("{n} of 2")),
        },
    );
}

/// Writes `data` at the start of the file at `path` without truncating it first (a truncation
/// to 0 would drop the chunk before the write), then fsync and close.
fn overwrite(path: &Path, data: &[u8]) -> std::io::Result<()> {
    let mut f = OpenOptions::new().write(true).open(path)?;
    f.write_all(data)?;
    close_checked(f)
}

#[test]
fn a_new_chunk_past_the_end_that_no_server_holds_gives_way_to_a_new_one_at_the_next_write() {
    let configs = Configs::new(QUICK_MASTER, "");
    let mut cluster = configs.builder().chunkservers(2).start();
    let admin = Admin::connect(&cluster);
    let path = cluster.mount_path(0).join("leased");
    std::fs::File::create(&path).expect("creating the file");

    let lost = admin.lease_without_writing(&path, 0);
    eventually(
        Duration::from_secs(10),
        "both copies of the new chunk",
        || {
            let disks = Disks::scan(&cluster, &BOTH);
            match disks.files(lost).len() {
                2 => Ok(()),
                _ => Err(disks.describe(lost)),
            }
        },
    );
    restart_without(&mut cluster, lost);

    let content = data(MIB, 7);
    overwrite(&path, &content).expect("the write after the chunk's copies vanished");
    let chunks = admin.chunks_of(&path);
    assert_eq!(chunks.len(), 1, "{chunks:?}");
    assert_ne!(
        chunks[0].chunk, lost,
        "the chunk without copies is still the file's"
    );
    check_copies(&cluster, &admin, &BOTH, &[(path, content)], 2)
        .unwrap_or_else(|e| panic!("after the write: {e}"));
}

#[test]
fn a_chunk_holding_file_data_that_no_server_holds_is_never_replaced_by_a_write() {
    let configs = Configs::new(QUICK_MASTER, "");
    let mut cluster = configs
        .builder()
        .chunkservers(2)
        .allow_log_errors("no valid copy")
        .allow_log_errors("giving up on a chunk write")
        .start();
    let admin = Admin::connect(&cluster);
    let path = cluster.mount_path(0).join("written");
    std::fs::File::create(&path).expect("creating the file");
    overwrite(&path, &data(64 * 1024, 3)).expect("the first write");
    let chunks = admin.chunks_of(&path);
    assert_eq!(chunks.len(), 1, "{chunks:?}");
    let lost = chunks[0].chunk;

    restart_without(&mut cluster, lost);

    // The file's data went with every copy: a write into that chunk must fail rather than put
    // a new chunk in its place, which would read back as zeros where the data was.
    assert!(
        overwrite(&path, b"after the loss").is_err(),
        "the write into a lost chunk succeeded"
    );
    assert_eq!(
        admin.chunks_of(&path)[0].chunk,
        lost,
        "the lost chunk was replaced"
    );
}
