//! POSIX end-to-end tests: programs that work on ext4 must work on ElkFS with the same results
//! and the same errors. Each test starts its own cluster and uses its mount the way a program
//! would; where "the same as Linux" is the rule, the test does the same thing in a local
//! directory (ext4 or tmpfs) and compares.
//!
//! Run as root (the harness mounts through /dev/fuse). Tests that act as non-root users create
//! them with `useradd` and remove them afterwards. Programs used: git, sqlite3, tar, diff,
//! setfacl/getfacl (Debian `acl`), fusermount3 (Debian `fuse3`), mount/umount/findmnt, flock.

mod host;
mod sys;
mod users;

mod acls;
mod big_dirs;
mod caching;
mod differential;
mod file_io;
mod links_and_nodes;
mod listings;
mod locks;
mod lookahead;
mod mount_options;
mod mount_signals;
mod mounting;
mod permissions;
mod programs;
mod random_ops;
mod rename;
mod sparse;
mod statfs;
mod times;
mod unlink_open;
mod xattrs;
