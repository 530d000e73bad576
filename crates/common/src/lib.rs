//! What every ElkFS program shares: default constants, address parsing, configuration loading,
//! logging setup and daemon plumbing. Uses no other ElkFS crate.

pub mod address;
pub mod config;
pub mod daemon;
pub mod defaults;
pub mod duration;
pub mod logging;
pub mod malloc;
pub mod mount_table;
pub mod worker;
