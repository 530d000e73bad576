//! A chunkserver that stops answering without closing its connections, as a server cut off by
//! the network (or a hung machine) looks to its peers: no FIN, no RST, just silence. It must be
//! treated like one that vanished: its chunks copied elsewhere after the lost-server delay, and
//! readers moved on to other copies. When it answers again, its extra copies go.
//!
//! The server is frozen with SIGSTOP: its peers see what a network cut shows them, while the
//! server itself does nothing meanwhile (`network_cut.rs` cuts a real link, with the server
//! running on).

use std::time::Duration;

use crate::support::{
    Admin, Configs, Frozen, MIB, QUICK_MASTER, Readers, data, wait_back_at_two_copies,
    wait_replaced, written_with_a_holder,
};

#[test]
fn a_server_that_goes_silent_without_closing_its_connections_is_treated_as_lost() {
    let configs = Configs::new(QUICK_MASTER, "");
    let cluster = configs.builder().chunkservers(4).start();
    let admin = Admin::connect(&cluster);
    let file = (cluster.mount_path(0).join("f"), data(4 * MIB + 3, 11));
    let all = [0, 1, 2, 3];
    let victim = written_with_a_holder(&cluster, &admin, &all, &file);
    let live: Vec<usize> = all.into_iter().filter(|&i| i != victim).collect();

    let frozen = Frozen::freeze(cluster.chunkserver(victim).pid().expect("running"));
    wait_replaced(&cluster, &admin, &live, &file, victim, "silent");
    let readers = Readers::start(std::slice::from_ref(&file), 2);
    readers.wait_for_reads_within(10, Duration::from_secs(20));

    frozen.thaw();
    wait_back_at_two_copies(&cluster, &admin, &all, file, victim, readers);
}
