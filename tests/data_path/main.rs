//! End-to-end tests of the data path: files through a real mount into chunk files and back.

mod chunk_files;
mod early_read;
mod errors;
mod fetch_ahead;
mod file_sizes;
mod frames;
mod read_around;
mod two_mounts;
