//! A chunkserver that is away while a file is rewritten comes back with copies of an older
//! version: they are never served, they are deleted, and the server gets current copies instead.

use std::collections::BTreeSet;
use std::time::Duration;

use elkfs_testkit::Process;

use crate::support::{
    Admin, Configs, Disks, MIB, QUICK_MASTER, Readers, Writer, check_copies, check_placement, data,
    eventually, server_at, write_file,
};

#[test]
fn copies_a_stopped_server_missed_a_rewrite_of_are_never_served_and_replaced_by_current_ones() {
    let configs = Configs::new(QUICK_MASTER, "");
    let mut cluster = configs.builder().chunkservers(3).start();
    let admin = Admin::connect(&cluster);
    let mnt = cluster.mount_path(0).to_path_buf();
    // Goal 3 on 3 servers: while one is away nothing can be copied, so when it is back, its
    // stale copies are in the way of the goal.
    assert_eq!(admin.set_goal(&mnt, 3, false), (1, 0));
    let path = mnt.join("rewritten");
    let before = data(96 * MIB, 3);
    write_file(&path, &before).expect("first write");
    let all = [0, 1, 2];
    check_placement(&cluster, &admin, &all, &[(path.clone(), before)], 3)
        .unwrap_or_else(|e| panic!("after the first write: {e}"));

    // Rewritten in place (same chunks, new versions); cs2 stops half-way.
    let after = data(96 * MIB, 4);
    let writer = Writer::start(&path, after.clone());
    writer.wait_for(40 * MIB as u64);
    cluster.stop_chunkserver(2);
    assert!(
        !writer.is_finished(),
        "the rewrite ended before cs2 stopped"
    );
    writer.finish().expect("the rewrite goes on without cs2");

    let disks = Disks::scan(&cluster, &all);
    let chunks = admin.chunks_of(&path);
    for c in &chunks {
        assert_eq!(
            disks.servers_at(c.chunk, c.version),
            BTreeSet::from([0, 1]),
            "{} (current v{})",
            disks.describe(c.chunk),
            c.version
        );
        assert!(
            disks
                .files(c.chunk)
                .iter()
                .any(|f| f.server == 2 && f.version < c.version),
            "cs2 should hold a stale copy: {}",
            disks.describe(c.chunk)
        );
    }

    let file = (path.clone(), after);
    let readers = Readers::start(std::slice::from_ref(&file), 2);
    cluster.start_chunkserver(2);
    eventually(
        Duration::from_secs(60),
        "cs2's stale copies are gone and every chunk has 3 current copies",
        || {
            // Never served: every server the master names for a read holds the current version.
            // (Asked first, then the disks: a copy is listed only once it is complete.)
            let chunks = admin.chunks_of(&path);
            let disks = Disks::scan(&cluster, &all);
            for c in chunks {
                for addr in &c.servers {
                    let server = server_at(&cluster, *addr).expect("a known server");
                    assert!(
                        disks.servers_at(c.chunk, c.version).contains(&server),
                        "the master sends readers to cs{server} for v{} of {}",
                        c.version,
                        disks.describe(c.chunk)
                    );
                }
            }
            check_placement(&cluster, &admin, &all, std::slice::from_ref(&file), 3)
        },
    );
    readers.wait_for_reads(2);
    readers.finish_without_errors();
    check_copies(&cluster, &admin, &all, &[file], 3)
        .unwrap_or_else(|e| panic!("after healing: {e}"));
    let master_log = cluster.log_of(Process::Master);
    assert!(
        master_log.contains("stale copies"),
        "the master did not say cs2's copies were stale"
    );
}
