//! What the chunkservers keep on disk: named chunk files, two copies at goal 2, and a flipped
//! byte that is caught and read around.

use std::collections::{BTreeMap, BTreeSet};
use std::io::{Read, Seek, SeekFrom, Write};
use std::time::Duration;

use elkfs_e2e::{all_chunk_files, pseudo_random};
use elkfs_testkit::{Cluster, Process, wait_until};

const MIB: usize = 1024 * 1024;

/// Bytes in front of the data in a chunk file.
const HEADER: u64 = 64 * 1024;

#[test]
fn chunks_are_named_files_with_two_copies_on_two_servers_at_goal_two() {
    let cluster = Cluster::builder().chunkservers(3).start();
    let data = pseudo_random(70 * MIB, 3);
    std::fs::write(cluster.mount_path(0).join("two-chunks"), &data).unwrap();
    let files = all_chunk_files(&cluster);
    let mut servers_of: BTreeMap<u64, BTreeSet<usize>> = BTreeMap::new();
    for f in &files {
        assert_eq!(
            f.subdir,
            format!("{:02X}", (f.id >> 8) & 0xFF),
            "{f:?} is in the wrong subdirectory"
        );
        assert!(servers_of.entry(f.id).or_default().insert(f.server));
    }
    assert_eq!(
        servers_of.len(),
        2,
        "a 70 MiB file has two chunks: {files:?}"
    );
    for (id, servers) in &servers_of {
        assert_eq!(
            servers.len(),
            2,
            "chunk {id:X} should be on two servers: {files:?}"
        );
    }
    let stored: u64 = files
        .iter()
        .map(|f| std::fs::metadata(&f.path).unwrap().len() - HEADER)
        .sum();
    assert_eq!(
        stored,
        2 * data.len() as u64,
        "each byte is stored exactly twice"
    );
}

#[test]
fn the_copies_of_the_chunks_of_removed_files_are_deleted_from_every_chunkserver() {
    let cluster = Cluster::builder().chunkservers(3).start();
    let m = cluster.mount_path(0);
    cluster.run_cli_ok(&["settrashtime", "-r", "0", m.to_str().unwrap()]);
    let kept = m.join("kept");
    std::fs::write(&kept, b"stays").unwrap();
    for i in 0..60 {
        std::fs::write(m.join(format!("f{i}")), pseudo_random(5000, i)).unwrap();
    }
    std::fs::write(m.join("cut"), pseudo_random(70 * MIB, 4)).unwrap();
    assert_eq!(all_chunk_files(&cluster).len(), 2 * (1 + 60 + 2));

    for i in 0..60 {
        std::fs::remove_file(m.join(format!("f{i}"))).unwrap();
    }
    std::fs::OpenOptions::new()
        .write(true)
        .open(m.join("cut"))
        .unwrap()
        .set_len(1000)
        .unwrap();
    wait_until(
        Duration::from_secs(20),
        "the freed copies to be deleted",
        || all_chunk_files(&cluster).len() == 2 * (1 + 1),
    );
    assert_eq!(std::fs::read(&kept).unwrap(), b"stays");
    assert_eq!(
        std::fs::read(m.join("cut")).unwrap(),
        pseudo_random(70 * MIB, 4)[..1000]
    );
}

#[test]
fn copies_of_files_removed_while_their_chunkserver_was_down_are_deleted_when_it_comes_back() {
    let mut cluster = Cluster::builder().chunkservers(2).start();
    let m = cluster.mount_path(0).to_path_buf();
    cluster.run_cli_ok(&["settrashtime", "-r", "0", m.to_str().unwrap()]);
    let kept = m.join("kept");
    std::fs::write(&kept, b"stays").unwrap();
    for i in 0..30 {
        std::fs::write(m.join(format!("f{i}")), pseudo_random(3000, i)).unwrap();
    }
    assert_eq!(all_chunk_files(&cluster).len(), 2 * 31);

    cluster.kill_chunkserver(1);
    for i in 0..30 {
        std::fs::remove_file(m.join(format!("f{i}"))).unwrap();
    }
    wait_until(
        Duration::from_secs(20),
        "the running chunkserver to delete its copies",
        || {
            all_chunk_files(&cluster)
                .iter()
                .filter(|f| f.server == 0)
                .count()
                == 1
        },
    );
    assert_eq!(
        all_chunk_files(&cluster)
            .iter()
            .filter(|f| f.server == 1)
            .count(),
        31,
        "the stopped chunkserver's files are untouched"
    );

    cluster.start_chunkserver(1);
    wait_until(
        Duration::from_secs(30),
        "the copies the returning chunkserver holds of removed files to be deleted",
        || all_chunk_files(&cluster).len() == 2,
    );
    assert_eq!(std::fs::read(&kept).unwrap(), b"stays");
}

#[test]
fn files_closed_on_one_mount_are_deleted_when_another_mount_unlinks_them() {
    // A mount tells the master of its closes together, a moment later, in the background; the
    // master must still hear of every one, or it keeps the files unlinked elsewhere as open.
    let cluster = Cluster::builder().chunkservers(1).mounts(2).start();
    let (a, b) = (cluster.mount_path(0), cluster.mount_path(1));
    cluster.run_cli_ok(&["settrashtime", "-r", "0", a.to_str().unwrap()]);
    for i in 0..20 {
        std::fs::write(a.join(format!("f{i}")), pseudo_random(5000, i)).unwrap();
        assert_eq!(
            std::fs::read(a.join(format!("f{i}"))).unwrap(),
            pseudo_random(5000, i)
        );
    }
    assert_eq!(all_chunk_files(&cluster).len(), 20);
    for i in 0..20 {
        std::fs::remove_file(b.join(format!("f{i}"))).unwrap();
    }
    wait_until(
        Duration::from_secs(20),
        "the copies of the files closed on mount A and unlinked on mount B to be deleted",
        || all_chunk_files(&cluster).is_empty(),
    );
}

#[test]
fn a_flipped_byte_in_one_copy_is_detected_and_the_other_copy_is_read() {
    let mut cluster = Cluster::builder().chunkservers(2).start();
    let path = cluster.mount_path(0).join("victim");
    let data = pseudo_random(MIB, 9);
    std::fs::write(&path, &data).unwrap();
    let files = all_chunk_files(&cluster);
    assert_eq!(files.len(), 2, "{files:?}");
    let victim = &files[0];
    let mut f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(&victim.path)
        .unwrap();
    let at = HEADER + 300_000;
    let mut byte = [0u8; 1];
    f.seek(SeekFrom::Start(at)).unwrap();
    f.read_exact(&mut byte).unwrap();
    f.seek(SeekFrom::Start(at)).unwrap();
    f.write_all(&[byte[0] ^ 0x01]).unwrap();
    drop(f);

    // Each open drops the kernel's cached pages, so every read goes to a chunkserver; copies are
    // picked at random, so a few reads reach the damaged one.
    let damaged_server = victim.server;
    let mut reads = 0;
    wait_until(
        Duration::from_secs(60),
        "the damaged copy to be detected",
        || {
            reads += 1;
            assert!(
                std::fs::read(&path).unwrap() == data,
                "read {reads} returned wrong data"
            );
            cluster
                .log_of(Process::Chunkserver(damaged_server))
                .contains("damaged chunk copy")
        },
    );
    for _ in 0..10 {
        assert!(std::fs::read(&path).unwrap() == data);
    }
    cluster.allow_log_errors("damaged");
}

#[test]
fn a_file_written_with_pauses_keeps_its_write_lease_through_them() {
    // A program slower than the chain empties the mount's buffer after every write. Once it has
    // shown that it writes in bursts, the mount keeps the lease through the pauses, so the chunk
    // is not moved to a new version (two master round trips and a rename on every copy) per
    // write; it ends the lease at the latest about a second after taking it.
    let cluster = Cluster::builder().chunkservers(2).start();
    let path = cluster.mount_path(0).join("paused");
    let writes = 30;
    let mut file = std::fs::File::create(&path).unwrap();
    let started = std::time::Instant::now();
    for i in 0..writes {
        file.write_all(&pseudo_random(MIB, i)).unwrap();
        std::thread::sleep(Duration::from_millis(5));
    }
    drop(file);
    let elapsed = started.elapsed();
    let files = all_chunk_files(&cluster);
    assert_eq!(files.len(), 2, "one chunk on two servers: {files:?}");
    // The first pause ends a lease; after that, one more per second of writing, and one for
    // each pause the test machine stretched past the linger. Ending the lease at every pause
    // takes it to version 30.
    let most = writes as u32 / 3 + elapsed.as_secs() as u32;
    for f in &files {
        assert!(
            f.version <= most,
            "{writes} writes in {elapsed:?} took the chunk to version {} (at most {most} expected): {files:?}",
            f.version
        );
    }
    let expected: Vec<u8> = (0..writes).flat_map(|i| pseudo_random(MIB, i)).collect();
    assert!(std::fs::read(&path).unwrap() == expected);
}
