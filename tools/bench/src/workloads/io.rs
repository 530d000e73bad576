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

/// 4 KiB random reads of the file with 1 and with 4 readers (fio), then reads that each touch a
/// block for the first time.
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
    first_touch_reads(b)
}

/// Reads of the first-touch workload (fewer in a short run's smaller file).
const FIRST_TOUCH_READS: u64 = 4_000;

/// Span of a chunkserver's checked block: a first-touch read lands in a block no earlier read of
/// the run touched, so no cache of either system (ElkFS's mount stores the rest of each block it
/// reads in the page cache) can answer it.
const CHECKED_BLOCK: u64 = 64 * 1024;

/// How many first-touch reads a file of `file_bytes` gets.
pub fn first_touch_count(file_bytes: u64) -> u64 {
    (file_bytes / CHECKED_BLOCK).min(FIRST_TOUCH_READS)
}

/// 4 KiB reads at random, one reader, each in a 64 KiB block not read before: what a random read
/// costs when nothing is cached, beside the fio jobs, whose reads come back to blocks read
/// earlier within their 8 seconds.
fn first_touch_reads(b: &mut Bench) -> anyhow::Result<()> {
    let metric = Metric {
        key: "rand-read-first",
        label: "4 KiB random reads, each in a 64 KiB block not read before".to_owned(),
        unit: Unit::Iops,
        goals: vec![],
    };
    let order = shuffled(b.sizes.file_bytes / CHECKED_BLOCK, 0x5eed);
    let reads = first_touch_count(b.sizes.file_bytes) as usize;
    for _ in 0..b.sizes.runs {
        for column in Column::ALL {
            interrupt::check()?;
            let path = data_file(b, column)?;
            settle()?;
            let file = File::open(&path).with_context(|| format!("opening {}", path.display()))?;
            let mut page = vec![0u8; 4096];
            let secs = timed(|| {
                for (i, block) in order[..reads].iter().enumerate() {
                    let at = block * CHECKED_BLOCK + (i as u64 % 16) * 4096;
                    std::os::unix::fs::FileExt::read_exact_at(&file, &mut page, at)
                        .with_context(|| format!("reading {} at {at}", path.display()))?;
                }
                Ok(())
            })?;
            b.record(&metric, column, reads as f64 / secs);
        }
    }
    Ok(())
}

/// The numbers below `n` in a pseudo-random order (Fisher-Yates driven by splitmix64 from
/// `seed`: the same order in every run and for both systems).
fn shuffled(n: u64, seed: u64) -> Vec<u64> {
    let mut all: Vec<u64> = (0..n).collect();
    let mut state = seed;
    for i in (1..all.len()).rev() {
        state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^= z >> 31;
        all.swap(i, (z % (i as u64 + 1)) as usize);
    }
    all
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
    fn a_shuffle_is_a_permutation_and_the_same_every_time() {
        let order = shuffled(1000, 7);
        let mut sorted = order.clone();
        sorted.sort_unstable();
        assert_eq!(sorted, (0..1000).collect::<Vec<_>>());
        assert_eq!(order, shuffled(1000, 7));
        assert_ne!(order[..10], sorted[..10]);
    }

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
