//! Links cut for real, on a private network where every process has a host of its own (see
//! `elkfs_testkit::Network`): a cut drops every packet both ways, with no reset and no FIN, while
//! the processes on both sides go on running, as when a cable is pulled or a switch port dies.

use std::time::Duration;

use elkfs_testkit::Process;

use crate::support::{
    Admin, Configs, MIB, QUICK_MASTER, Readers, check_copies, data, eventually,
    wait_back_at_two_copies, wait_replaced, written_with_a_holder,
};

#[test]
fn a_chunkserver_cut_off_is_replaced_readers_go_on_and_its_extra_copies_go_once_it_is_back() {
    let configs = Configs::new(QUICK_MASTER, "");
    let cluster = configs.builder().chunkservers(4).private_network().start();
    let _on_the_network = cluster.enter_network();
    let admin = Admin::connect(&cluster);
    let file = (cluster.mount_path(0).join("f"), data(4 * MIB + 3, 13));
    let all = [0, 1, 2, 3];
    let victim = written_with_a_holder(&cluster, &admin, &all, &file);
    let live: Vec<usize> = all.into_iter().filter(|&i| i != victim).collect();

    // Reading while the link goes: reads of the cut server's copy move to the other copy.
    let readers = Readers::start(std::slice::from_ref(&file), 2);
    readers.wait_for_reads(2);
    cluster.cut_link(Process::Chunkserver(victim));
    wait_replaced(&cluster, &admin, &live, &file, victim, "cut-off");
    readers.wait_for_reads_within(10, Duration::from_secs(20));

    cluster.reconnect_link(Process::Chunkserver(victim));
    wait_back_at_two_copies(&cluster, &admin, &all, file, victim, readers);
}

/// A mount cut off while it has a file open for writing, and a write of it waiting behind the
/// cut: another mount's write to the file goes through meanwhile, and the cut mount's write
/// either lands whole after it once the link is back or fails, never mixed into it block by
/// block; every copy ends up the same.
#[test]
fn a_writer_cut_off_neither_blocks_another_mount_for_good_nor_mixes_its_late_writes_in() {
    use std::os::unix::fs::FileExt;

    let configs = Configs::new(
        &format!("{QUICK_MASTER}write_lease_timeout_secs = 30\n"),
        "",
    );
    let cluster = configs
        .builder()
        .chunkservers(3)
        .mounts(2)
        .private_network()
        .start();
    let _on_the_network = cluster.enter_network();
    let admin = Admin::connect(&cluster);
    let (a, b) = (
        cluster.mount_path(0).join("shared"),
        cluster.mount_path(1).join("shared"),
    );
    let first = data(MIB, 21);
    let late = data(256 * 1024, 22);
    let theirs = data(MIB, 23);
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(true)
        .read(true)
        .write(true)
        .open(&a)
        .expect("open on the first mount");
    file.write_all_at(&first, 0).expect("first write");
    file.sync_all().expect("fsync before the cut");
    // Under a lease now: the next write goes out with it, and the link goes first.
    cluster.cut_link(Process::Mount(0));
    let late_writer = {
        let late = late.clone();
        std::thread::spawn(move || {
            let written = file.write_all_at(&late, 0);
            let closed = crate::support::close_checked(file);
            (written, closed)
        })
    };

    let started = std::time::Instant::now();
    let other = std::fs::OpenOptions::new()
        .write(true)
        .open(&b)
        .expect("open on the second mount");
    other
        .write_all_at(&theirs, 0)
        .expect("the other mount's write");
    other.sync_all().expect("the other mount's fsync");
    drop(other);
    assert!(
        started.elapsed() < Duration::from_secs(100),
        "the other mount waited {:?}",
        started.elapsed()
    );

    cluster.reconnect_link(Process::Mount(0));
    let (written, closed) = late_writer.join().expect("the cut writer's thread");
    let landed = written.is_ok() && closed.is_ok();
    let mut want = theirs.to_vec();
    if landed {
        want[..late.len()].copy_from_slice(&late);
    }
    let files = [(b.clone(), std::sync::Arc::<[u8]>::from(want.clone()))];
    eventually(
        Duration::from_secs(60),
        &format!(
            "every copy holds the other mount's data{} (late write: {written:?}, close: {closed:?})",
            if landed {
                " with the late write over it"
            } else {
                ""
            }
        ),
        || check_copies(&cluster, &admin, &[0, 1, 2], &files, 2),
    );
    assert!(
        std::fs::read(&b).expect("read on the second mount") == want,
        "the second mount reads something else"
    );
}
