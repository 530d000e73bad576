//! A new chunk is logged before its servers create it (they are told in the background). One
//! that ended up with no copy anywhere (a master that died before telling them, servers that
//! all lost it) holds nothing the file shows while it lies past the file's end: the next write
//! replaces it with a new chunk instead of failing.

use std::fs::OpenOptions;
use std::io::Write;
use std::time::Duration;

use elkfs_testkit::Process;

use crate::support::{
    Admin, Configs, Disks, MIB, QUICK_MASTER, check_copies, close_checked, data, eventually,
};

#[test]
fn a_new_chunk_past_the_end_that_no_server_holds_gives_way_to_a_new_one_at_the_next_write() {
    let configs = Configs::new(QUICK_MASTER, "");
    let mut cluster = configs.builder().chunkservers(2).start();
    let admin = Admin::connect(&cluster);
    let all = [0, 1];
    let path = cluster.mount_path(0).join("leased");
    std::fs::File::create(&path).expect("creating the file");

    let lost = admin.lease_without_writing(&path, 0);
    eventually(
        Duration::from_secs(10),
        "both copies of the new chunk",
        || {
            let disks = Disks::scan(&cluster, &all);
            match disks.files(lost).len() {
                2 => Ok(()),
                _ => Err(disks.describe(lost)),
            }
        },
    );
    // Both servers come back without the chunk, so the master knows no copy of it at all.
    for i in all {
        cluster.stop_chunkserver(i);
    }
    for f in Disks::scan(&cluster, &all).files(lost) {
        std::fs::remove_file(&f.path).expect("removing a copy");
    }
    let registered = |cluster: &elkfs_testkit::Cluster| {
        cluster
            .log_of(Process::Master)
            .matches("chunkserver registered")
            .count()
    };
    let before = registered(&cluster);
    for i in all {
        cluster.start_chunkserver(i);
    }
    eventually(
        Duration::from_secs(20),
        "both servers registered again",
        || match registered(&cluster) - before {
            n if n >= 2 => Ok(()),
            n => Err(format!("{n} of 2")),
        },
    );

    // Not truncated on open: a truncation to 0 would drop the chunk before the write.
    let content = data(MIB, 7);
    let mut f = OpenOptions::new()
        .write(true)
        .open(&path)
        .expect("opening the file");
    f.write_all(&content).expect("writing");
    close_checked(f).expect("the write after the chunk's copies vanished");

    let chunks = admin.chunks_of(&path);
    assert_eq!(chunks.len(), 1, "{chunks:?}");
    assert_ne!(
        chunks[0].chunk, lost,
        "the chunk without copies is still the file's"
    );
    check_copies(&cluster, &admin, &all, &[(path, content)], 2)
        .unwrap_or_else(|e| panic!("after the write: {e}"));
}
