//! The data workloads: one large file written sequentially (with and without fsync), read
//! sequentially, and read at random 4 KiB at a time with fio. The data is pseudo-random (MooseFS
//! stores zero blocks sparsely) and every block is checked when read back.

use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};

use super::{Bench, close, settle, timed};
use crate::fio::RandRead;
use crate::interrupt;
use crate::report::{Column, Goal, Metric};
use crate::stats::Unit;

/// Block size of sequential writes and reads.
pub const BLOCK: usize = 1 << 20;

fn size_label(bytes: u64) -> String {
    if bytes >= 1 << 30 && bytes & ((1 << 30) - 1) == 0 {
        format!("{} GiB", bytes >> 30)
    } else {
        format!("{} MiB", bytes >> 20)
    }
}

fn seq_write_metric(b: &Bench, fsync: bool) -> Metric {
    let size = size_label(b.sizes.file_bytes);
    if fsync {
        Metric {
            key: "seq-write-fsync",
            label: format!("sequential write {size}, 1 MiB blocks, fsync at the end"),
            unit: Unit::MibPerSec,
            goals: vec![Goal::at_least(1.3)],
        }
    } else {
        Metric {
            key: "seq-write",
            label: format!("sequential write {size}, 1 MiB blocks, no fsync"),
            unit: Unit::MibPerSec,
            goals: vec![Goal::at_least(2.0), Goal::at_least_direct(1.3)],
        }
    }
}

/// Writes a new file per run and column, timed from open to close (and the fsync before it).
pub fn seq_write(b: &mut Bench, fsync: bool) -> anyhow::Result<()> {
    let metric = seq_write_metric(b, fsync);
    let size = b.sizes.file_bytes;
    for run in 0..b.sizes.runs {
        for column in Column::ALL {
            interrupt::check()?;
            forget_data_file(b, column)?;
            let dir = b.scratch_dir(column, metric.key)?;
            let path = dir.join(format!("data-{run}"));
            settle()?;
            let secs = timed(|| write_file(&path, size, fsync))?;
            b.data_files.insert(column, path);
            b.record(&metric, column, mib(size) / secs);
        }
    }
    Ok(())
}

/// Reads the file back sequentially, once per run and column, from a dropped cache.
pub fn seq_read(b: &mut Bench) -> anyhow::Result<()> {
    let size = b.sizes.file_bytes;
    let metric = Metric {
        key: "seq-read",
        label: format!("sequential read {}, 1 MiB blocks", size_label(size)),
        unit: Unit::MibPerSec,
        goals: vec![Goal::at_least(2.0), Goal::at_least_direct(1.3)],
    };
    for _ in 0..b.sizes.runs {
        for column in Column::ALL {
            interrupt::check()?;
            let path = data_file(b, column)?;
            settle()?;
            let secs = timed(|| read_file(&path, size))?;
            b.record(&metric, column, mib(size) / secs);
        }
    }
    Ok(())
}

/// 4 KiB random reads of the file with 1 and with 4 readers.
pub fn rand_read(b: &mut Bench) -> anyhow::Result<()> {
    for readers in [1, 4] {
        let metric = Metric {
            key: if readers == 1 {
                "rand-read-1"
            } else {
                "rand-read-4"
            },
            label: format!(
                "4 KiB random reads, {readers} reader{}",
                if readers == 1 { "" } else { "s" }
            ),
            unit: Unit::Iops,
            goals: vec![Goal::at_least(1.5)],
        };
        let job = RandRead {
            readers,
            file_size: b.sizes.file_bytes,
            seconds: b.sizes.randread_secs,
        };
        for _ in 0..b.sizes.runs {
            for column in Column::ALL {
                interrupt::check()?;
                let path = data_file(b, column)?;
                settle()?;
                let iops = job.run(&path)?;
                b.record(&metric, column, iops);
            }
        }
    }
    Ok(())
}

fn mib(bytes: u64) -> f64 {
    bytes as f64 / (1 << 20) as f64
}

/// The file last written through `column`'s mount, written now (untimed) if there is none.
fn data_file(b: &mut Bench, column: Column) -> anyhow::Result<PathBuf> {
    if let Some(path) = b.data_files.get(&column) {
        return Ok(path.clone());
    }
    let dir = b.scratch_dir(column, "data")?;
    let path = dir.join("data");
    crate::progress::step(&format!(
        "  {:<15} writing a {} file to read",
        column.label(),
        size_label(b.sizes.file_bytes)
    ));
    write_file(&path, b.sizes.file_bytes, false)?;
    b.data_files.insert(column, path.clone());
    Ok(path)
}

/// Deletes the previous run's file of `column` (untimed, before the caches are dropped).
fn forget_data_file(b: &mut Bench, column: Column) -> anyhow::Result<()> {
    if let Some(old) = b.data_files.remove(&column) {
        std::fs::remove_file(&old).with_context(|| format!("removing {}", old.display()))?;
    }
    Ok(())
}

/// The pseudo-random content of every block; block `i` carries `i` in its first 8 bytes, so a
/// block read from the wrong place is noticed.
struct Pattern {
    block: Vec<u8>,
}

impl Pattern {
    fn new(len: usize) -> Self {
        let mut state: u64 = 0x9E37_79B9_7F4A_7C15;
        let mut block = Vec::with_capacity(len);
        while block.len() < len {
            // xorshift64: cheap, and enough to keep the data from being sparse or compressible.
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            block.extend_from_slice(&state.to_le_bytes());
        }
        block.truncate(len);
        Pattern { block }
    }

    fn stamp(&mut self, index: u64) -> &[u8] {
        self.block[..8].copy_from_slice(&index.to_le_bytes());
        &self.block
    }

    fn matches(&self, index: u64, data: &[u8]) -> bool {
        data.len() == self.block.len()
            && data[..8] == index.to_le_bytes()
            && data[8..] == self.block[8..]
    }
}

/// Writes `size` bytes in [`BLOCK`]-sized writes into a new file; fsyncs before closing if asked.
pub fn write_file(path: &Path, size: u64, fsync: bool) -> anyhow::Result<()> {
    let mut pattern = Pattern::new(BLOCK);
    let mut file = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .open(path)
        .with_context(|| format!("creating {}", path.display()))?;
    let blocks = size.div_ceil(BLOCK as u64);
    for i in 0..blocks {
        interrupt::check()?;
        let len = (size - i * BLOCK as u64).min(BLOCK as u64) as usize;
        file.write_all(&pattern.stamp(i)[..len])
            .with_context(|| format!("writing block {i} of {}", path.display()))?;
    }
    if fsync {
        file.sync_all()
            .with_context(|| format!("fsync of {}", path.display()))?;
    }
    close(file, path)
}

/// Reads the file written by [`write_file`] in [`BLOCK`]-sized reads, checking every block.
pub fn read_file(path: &Path, size: u64) -> anyhow::Result<()> {
    let pattern = Pattern::new(BLOCK);
    let mut file = File::open(path).with_context(|| format!("opening {}", path.display()))?;
    let mut buf = vec![0u8; BLOCK];
    let blocks = size.div_ceil(BLOCK as u64);
    for i in 0..blocks {
        interrupt::check()?;
        let len = (size - i * BLOCK as u64).min(BLOCK as u64) as usize;
        file.read_exact(&mut buf[..len])
            .with_context(|| format!("reading block {i} of {}", path.display()))?;
        let full_block = len == BLOCK;
        if full_block && !pattern.matches(i, &buf) {
            bail!(
                "block {i} of {} does not hold what was written",
                path.display()
            );
        }
    }
    if file.read(&mut buf[..1]).context("reading at the end")? != 0 {
        bail!("{} is longer than the {size} bytes written", path.display());
    }
    close(file, path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn written_files_read_back_and_corruption_is_caught() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("f");
        let size = 3 * BLOCK as u64;
        write_file(&path, size, true).expect("write");
        read_file(&path, size).expect("read");

        let mut bytes = std::fs::read(&path).expect("raw read");
        bytes[BLOCK + 100] ^= 1;
        std::fs::write(&path, &bytes).expect("corrupt");
        let err = read_file(&path, size).unwrap_err();
        assert!(format!("{err:#}").contains("block 1"), "{err:#}");
        assert!(read_file(&path, 2 * BLOCK as u64).is_err(), "longer file");
    }

    #[test]
    fn blocks_differ_only_in_their_stamp_and_are_not_zero() {
        let mut pattern = Pattern::new(BLOCK);
        let first = pattern.stamp(0).to_vec();
        let second = pattern.stamp(1).to_vec();
        assert_ne!(first, second);
        assert_eq!(first[8..], second[8..]);
        assert!(first.iter().filter(|b| **b == 0).count() < BLOCK / 100);
        assert_eq!(size_label(1 << 30), "1 GiB");
        assert_eq!(size_label(256 << 20), "256 MiB");
    }
}
