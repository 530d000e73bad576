//! A chunkserver whose disk fills up under writes answers "no space" (ENOSPC): the writes go on
//! to other servers and succeed, and once its disk is full, new chunks go elsewhere.

use std::io;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use elkfs_testkit::Process;

use crate::support::{
    Admin, CHUNK_SIZE, Configs, Disks, MIB, QUICK_MASTER, Tmpfs, Writer, check_copies,
    check_placement, data, eventually, fill_up, write_file,
};

#[test]
fn a_server_whose_disk_fills_up_answers_enospc_and_new_chunks_go_elsewhere() {
    // cs0 on a 160 MiB tmpfs, empty, so the master's first pick for every new chunk; cs1..cs3
    // on the (much fuller, much bigger) shared disk.
    let small = Tmpfs::mount(160);
    let configs = Configs::new(QUICK_MASTER, "");
    let mut cluster = configs.builder().chunkservers(0).start();
    let full = cluster.add_chunkserver_on([small.path()]);
    for _ in 0..3 {
        cluster.add_chunkserver();
    }
    let admin = Admin::connect(&cluster);
    let mnt = cluster.mount_path(0).to_path_buf();
    let all = [0, 1, 2, 3];

    // Four full chunks at once, all placed on cs0 before it next reports its space: 256 MiB
    // for 160.
    let first: Vec<(PathBuf, Arc<[u8]>)> = (0..4)
        .map(|i| (mnt.join(format!("first{i}")), data(CHUNK_SIZE, 20 + i)))
        .collect();
    let writers: Vec<Writer> = first
        .iter()
        .map(|(p, d)| Writer::start(p, d.clone()))
        .collect();
    for (w, (path, _)) in writers.into_iter().zip(&first) {
        w.finish().unwrap_or_else(|e| {
            panic!(
                "writing {} failed although 3 servers have room: {e}",
                path.display()
            )
        });
    }
    let log = cluster.log_of(Process::Chunkserver(full));
    assert!(
        log.contains("no space left"),
        "cs0 never ran out of space, so this test tested nothing; its log:\n{log}"
    );
    for (path, want) in &first {
        assert!(
            std::fs::read(path).expect("read") == **want,
            "{} reads back wrong",
            path.display()
        );
    }
    eventually(
        Duration::from_secs(60),
        "the first files' chunks have 2 good copies and no partial ones",
        || check_placement(&cluster, &admin, &all, &first, 2),
    );

    // Now cs0's disk is full: a file written then must go to the others. The disk is topped
    // up before each write, as the master deleting cs0's stale copies frees space on it again
    // (and copying chunks there later, once it has room, is no fault).
    let second: Vec<(PathBuf, Arc<[u8]>)> = (0..4)
        .map(|i| (mnt.join(format!("second{i}")), data(16 * MIB, 30 + i)))
        .collect();
    for (i, (path, bytes)) in second.iter().enumerate() {
        fill_up(&small.path().join(format!("filler{i}")));
        write_file(path, bytes).expect("a write while cs0's disk is full");
        let disks = Disks::scan(&cluster, &all);
        for c in admin.chunks_of(path) {
            assert!(
                !disks.servers_at(c.chunk, c.version).contains(&full),
                "{} was written to cs0 although its disk was full",
                path.display()
            );
        }
    }
    eventually(
        Duration::from_secs(60),
        "every chunk has 2 good copies",
        || {
            check_placement(&cluster, &admin, &all, &first, 2)?;
            check_placement(&cluster, &admin, &all, &second, 2)
        },
    );
    let mut every = first.clone();
    every.extend(second.iter().cloned());
    for (path, want) in &every {
        assert!(
            std::fs::read(path).expect("read") == **want,
            "{} reads back wrong",
            path.display()
        );
    }
    // The master may still be moving copies off the full disk (balancing): the disks and its
    // listing agree once it is done.
    eventually(
        Duration::from_secs(60),
        "every copy holds its data and the master lists exactly the servers holding one",
        || check_copies(&cluster, &admin, &all, &every, 2),
    );
}

#[test]
fn a_write_every_server_refuses_for_want_of_space_fails_with_enospc_not_eio() {
    // One server on a 160 MiB tmpfs, goal 1: three 64 MiB files written at once all go there
    // before it next reports its space, and cannot all fit.
    let small = Tmpfs::mount(160);
    let configs = Configs::new(QUICK_MASTER, "");
    let mut cluster = configs.builder().chunkservers(0).start();
    let full = cluster.add_chunkserver_on([small.path()]);
    let admin = Admin::connect(&cluster);
    let mnt = cluster.mount_path(0).to_path_buf();
    admin.set_goal(&mnt, 1, true);

    let files: Vec<(PathBuf, Arc<[u8]>)> = (0..3)
        .map(|i| (mnt.join(format!("big{i}")), data(CHUNK_SIZE, 40 + i)))
        .collect();
    let writers: Vec<Writer> = files
        .iter()
        .map(|(p, d)| Writer::start(p, d.clone()))
        .collect();
    let errors: Vec<io::Error> = writers
        .into_iter()
        .filter_map(|w| w.finish().err())
        .collect();
    let log = cluster.log_of(Process::Chunkserver(full));
    assert!(
        log.contains("no space left"),
        "the server never ran out of space, so this test tested nothing; its log:\n{log}"
    );
    assert!(!errors.is_empty(), "192 MiB fitted in 160");
    for e in &errors {
        assert_eq!(
            e.raw_os_error(),
            Some(libc::ENOSPC),
            "a write refused for want of space failed with: {e}"
        );
    }
}
