//! The ElkFS metalogger (a follower of the master's changelog) is not written yet; this crate
//! holds its place in the workspace layout. See docs/ARCHITECTURE.md, "What is not there yet".
