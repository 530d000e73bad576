//! A new, empty chunkserver joins servers that are 30% full: chunks move to it until every
//! server's disk is about as full as the others.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::support::{
    Admin, Configs, Disks, MIB, QUICK_MASTER, Tmpfs, check_copies, data, eventually, none_left,
    write_file,
};

/// Size of each server's tmpfs.
const DISK_MIB: u64 = 256;
/// How long used space must stay even to count as converged.
const SETTLED: Duration = Duration::from_secs(6);

fn used(disks: &[Tmpfs]) -> Vec<f64> {
    disks.iter().map(Tmpfs::used_percent).collect()
}

fn spread(used: &[f64]) -> f64 {
    let max = used.iter().copied().fold(f64::MIN, f64::max);
    let min = used.iter().copied().fold(f64::MAX, f64::min);
    max - min
}

#[test]
fn a_new_empty_server_takes_chunks_until_used_space_is_even() {
    // Every data directory on a disk of its own (here they would all share one file system).
    let disks: Vec<Tmpfs> = (0..4).map(|_| Tmpfs::mount(DISK_MIB)).collect();
    let configs = Configs::new(QUICK_MASTER, "");
    let mut cluster = configs.builder().chunkservers(0).start();
    for disk in &disks[..3] {
        cluster.add_chunkserver_on([disk.path()]);
    }
    let admin = Admin::connect(&cluster);
    let mnt = cluster.mount_path(0).to_path_buf();

    // Many 1 MiB files (one small chunk each) at goal 2, until the three disks are 30% full.
    let mut files: Vec<(PathBuf, Arc<[u8]>)> = Vec::new();
    while used(&disks[..3]).iter().sum::<f64>() / 3.0 < 30.0 {
        let n = files.len();
        assert!(
            n < 400,
            "{n} MiB written and the disks are still not 30% full"
        );
        let file = (mnt.join(format!("f{n:03}")), data(MIB, 1000 + n as u64));
        write_file(&file.0, &file.1).expect("write");
        files.push(file);
    }
    eprintln!("{} files written; used: {:.1?}", files.len(), used(&disks));

    cluster.add_chunkserver_on([disks[3].path()]);
    let all = [0, 1, 2, 3];
    // Converged means it stays so: for longer than a few space reports (every 2 s) and passes
    // of the replication worker (every second), not a moment caught in passing.
    let mut even_since: Option<Instant> = None;
    eventually(
        Duration::from_secs(90),
        "used space on the four disks stays within 5 points for 6 s, with 2 copies of every chunk",
        || {
            let now = used(&disks);
            let state = if spread(&now) > 5.0 {
                Err(format!("used % {now:.1?}"))
            } else {
                none_left(Disks::scan(&cluster, &all).off_goal(2))
                    .map_err(|e| format!("used % {now:.1?}; {e}"))
            };
            if let Err(e) = state {
                even_since = None;
                return Err(e);
            }
            let since = *even_since.get_or_insert_with(Instant::now);
            if since.elapsed() < SETTLED {
                return Err(format!(
                    "used % {now:.1?}, even for {:.1?}",
                    since.elapsed()
                ));
            }
            Ok(())
        },
    );
    for (path, want) in &files {
        assert!(
            std::fs::read(path).expect("read") == **want,
            "{} reads back wrong after balancing",
            path.display()
        );
    }
    check_copies(&cluster, &admin, &all, &files, 2)
        .unwrap_or_else(|e| panic!("after balancing: {e}"));
}
