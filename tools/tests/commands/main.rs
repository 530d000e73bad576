//! End-to-end tests of the `elkfs` commands on real clusters: each command's output (golden text
//! for the MooseFS-shaped ones, parsed `--json`) and its effect on the cluster.

mod eattrs;
mod goals;
mod info;
mod snapshots;
mod status;
mod support;
mod trash;
mod users;
