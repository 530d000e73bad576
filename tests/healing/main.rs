//! End-to-end tests of self-healing: a real master, chunkservers and a FUSE mount, hurt the way
//! disks, nodes and operators hurt them (SIGKILL, stops, flipped bits, full disks, hand-moved
//! chunk files, goal changes, a new server), and then left alone until every chunk is back at its
//! goal with the right bytes in every copy.
//!
//! The master gets short delays (`replication_delay_*_secs`) so healing starts within a second
//! or two; eventual conditions are polled with generous deadlines. "Valid copies" of a chunk are
//! the chunk files at the highest version found on the live servers' disks (version 0 files are
//! unfinished replication targets and do not count), and every test that checks copies also
//! compares the bytes in them with what was written.
//!
//! Run as root: the harness mounts through /dev/fuse, and some tests give a chunkserver a
//! size-limited tmpfs of its own, or an ext4 on a loop device whose backing file lies on such a
//! tmpfs (mounted here, unmounted when the test ends, pass or fail).

mod support;

mod balance;
mod damage;
mod dead_writer;
mod dir_leases;
mod full_disk;
mod goal;
mod hung_server;
mod killed_server;
mod lost_writes;
mod merged_dirs;
mod network_cut;
mod new_chunks;
mod removal;
mod stale_copies;
