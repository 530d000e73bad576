//! The files a mount has open are known to the master per session, so that a file unlinked
//! while open lives on until its last close. After a reconnect the mount tells the new session
//! which files it has open (`Reopen`); an open waiting for the master at that moment must not be
//! counted twice, or the file outlives its last close and its chunks stay until the mount's next
//! reconnect.

use std::time::Duration;

use elkfs_testkit::{Cluster, wait_until};

/// Every chunk file on the cluster's chunkservers.
fn chunk_files(cluster: &Cluster) -> usize {
    (0..cluster.chunkserver_count())
        .flat_map(|server| {
            cluster
                .chunkserver_data_dirs(server)
                .iter()
                .flat_map(move |dir| elkfs_e2e::chunk_files(server, dir))
        })
        .count()
}

#[test]
fn a_file_opened_while_the_master_restarts_is_purged_after_its_close_and_unlink() {
    let _one = super::master_crash::one_cluster_at_a_time();
    let mut cluster = Cluster::builder()
        .chunkservers(1)
        .mounts(1)
        .mount_options("master_timeout=60")
        .start();
    let m = cluster.mount_path(0).to_path_buf();
    cluster.run_cli_ok(&["settrashtime", "-r", "0", m.to_str().unwrap()]);
    let file = m.join("opened-across");
    std::fs::write(&file, vec![7u8; 100_000]).expect("write");
    wait_until(
        Duration::from_secs(10),
        "the file's chunk is stored",
        || chunk_files(&cluster) == 1,
    );
    // Known to the kernel and the mount, so the open itself is what waits for the master.
    std::fs::metadata(&file).expect("stat");

    cluster.kill_master();
    let opener = {
        let file = file.clone();
        std::thread::spawn(move || std::fs::File::open(file))
    };
    std::thread::sleep(Duration::from_millis(700));
    cluster.start_master();
    let opened = opener.join().expect("the opener").expect("open");
    drop(opened);
    std::fs::remove_file(&file).expect("unlink");
    wait_until(
        Duration::from_secs(20),
        "the closed, unlinked file's chunk is deleted",
        || chunk_files(&cluster) == 0,
    );
}
