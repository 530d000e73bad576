//! End-to-end tests of durability: real daemons, a real FUSE mount, and the master killed, its
//! metadata directory deleted or damaged, metaloggers stopped, restarted and promoted; and the
//! chunkservers' own syncing of data no client fsynced.
//! What a client was told is done must survive; what the mount sees must stay consistent; and
//! the mount must keep working through it all without being remounted.
//!
//! Run as root (the harness mounts through /dev/fuse).

mod chunk_sync;
mod full_disk;
mod master_crash;
mod metalogger;
mod numbered_requests;
mod reopen;
mod unlogged_bump;
