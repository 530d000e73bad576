//! Large writes of chunk data sent to the disk directly (`O_DIRECT`), past the page cache.
//!
//! Copying new data into the page cache costs most where the kernel's free memory is cold: on a
//! virtual machine that hands freed memory back to its host (free page reporting, a balloon),
//! every page the cache takes for new data is first faulted in by the host. There a sequential
//! writer's data cost a chunkserver about 1.3 s of CPU per GiB in that copy alone, against about
//! 0.1 s to write the same GiB directly from memory already in use (the frame it arrived in).
//! So the aligned middle of a large write goes directly to the disk; its unaligned ends, small
//! writes (whose page cache copy is cheap and whose data is likely read again soon), and file
//! systems that refuse direct I/O (tmpfs on older kernels) go through the page cache as before.
//! The kernel keeps both kinds coherent: a direct write first writes back and drops any cached
//! page of its range. Which writes may go directly at all (only data past a chunk's end) is
//! `ChunkFile::write`'s choice.

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;

use crate::o_direct::{ALIGN, MIN_DIRECT, padding, with_o_direct};

/// Bytes copied into an aligned buffer and written per direct write, for data that does not
/// start at an aligned address.
const PIECE: usize = 1024 * 1024;

/// Writes all of `data` at `pos` of `file`, the aligned middle of a large write directly to the
/// disk where the file system allows it, the rest through the page cache.
pub(crate) fn write_all_at(file: &File, data: &[u8], pos: u64) -> io::Result<()> {
    let Some((head, middle)) = direct_part(pos, data.len()) else {
        return file.write_all_at(data, pos);
    };
    if head > 0 {
        file.write_all_at(&data[..head], pos)?;
    }
    let direct = &data[head..head + middle];
    let direct_pos = pos + head as u64;
    if !write_direct(file, direct, direct_pos)? {
        file.write_all_at(direct, direct_pos)?;
    }
    let tail = head + middle;
    if tail < data.len() {
        file.write_all_at(&data[tail..], pos + tail as u64)?;
    }
    Ok(())
}

/// For a write of `len` bytes at `pos`: the length of its unaligned head and of its aligned
/// middle, when that middle is large enough to write directly.
fn direct_part(pos: u64, len: usize) -> Option<(usize, usize)> {
    let align = ALIGN as u64;
    let end = pos.checked_add(len as u64)?;
    let first = pos.next_multiple_of(align);
    let last = end / align * align;
    if last <= first || ((last - first) as usize) < MIN_DIRECT {
        return None;
    }
    Some(((first - pos) as usize, (last - first) as usize))
}

/// Writes `data` (aligned in length and position) at `pos` with `O_DIRECT` set on the file for
/// the time of the write: straight from `data` where it starts at an aligned address (a large
/// frame's payload does, see `elkfs_proto::frame`, and so does its part written directly when
/// its chunk offset is a multiple of 4 KiB), else through an aligned buffer. `Ok(false)` when
/// the file system refuses direct I/O, before or during the write: the caller then writes the
/// whole range through the page cache.
fn write_direct(file: &File, data: &[u8], pos: u64) -> io::Result<bool> {
    let written = with_o_direct(file, |file| {
        if padding(data.as_ptr()) == 0 {
            file.write_all_at(data, pos)
        } else {
            write_through_aligned_buffer(file, data, pos)
        }
    });
    match written {
        None => Ok(false),
        Some(Ok(())) => Ok(true),
        Some(Err(e)) if matches!(e.raw_os_error(), Some(libc::EINVAL | libc::EOPNOTSUPP)) => {
            Ok(false)
        }
        Some(Err(e)) => Err(e),
    }
}

/// Writes `data`, which does not start at an aligned address, piece by piece through an
/// aligned buffer of its own (freed after: a thread keeps nothing between writes).
fn write_through_aligned_buffer(file: &File, data: &[u8], pos: u64) -> io::Result<()> {
    let piece = PIECE.min(data.len());
    let mut buffer = vec![0u8; piece + ALIGN];
    let skip = padding(buffer.as_ptr());
    let aligned = &mut buffer[skip..skip + piece];
    let mut done = 0;
    while done < data.len() {
        let n = piece.min(data.len() - done);
        aligned[..n].copy_from_slice(&data[done..done + n]);
        file.write_all_at(&aligned[..n], pos + done as u64)?;
        done += n;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn small_or_unaligned_writes_stay_buffered() {
        assert_eq!(direct_part(0, MIN_DIRECT - 1), None);
        assert_eq!(direct_part(1, MIN_DIRECT), None);
        assert_eq!(direct_part(0, 0), None);
        assert_eq!(direct_part(u64::MAX - 10, MIN_DIRECT), None);
    }

    #[test]
    fn the_aligned_middle_goes_direct() {
        assert_eq!(direct_part(0, MIN_DIRECT), Some((0, MIN_DIRECT)));
        assert_eq!(
            direct_part(100, MIN_DIRECT + ALIGN + 50),
            Some((ALIGN - 100, MIN_DIRECT))
        );
        let (head, middle) = direct_part(65536 + 7, 3 << 20).unwrap();
        assert_eq!((65536 + 7 + head as u64) % ALIGN as u64, 0);
        assert_eq!(middle % ALIGN, 0);
        assert!(head + middle <= 3 << 20);
        assert!(3 << 20 < head + middle + ALIGN);
    }

    #[test]
    fn writes_land_whole_whatever_the_split() {
        let dir = tempfile::tempdir().unwrap();
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(dir.path().join("f"))
            .unwrap();
        let data: Vec<u8> = (0..(3 * PIECE + 12_345)).map(|i| (i % 251) as u8).collect();
        let mut expected = vec![0u8; 8 * PIECE];
        for (pos, len) in [
            (0, 4096),
            (777, MIN_DIRECT + 9_000),
            (PIECE as u64, data.len()),
        ] {
            write_all_at(&file, &data[..len], pos).unwrap();
            expected[pos as usize..pos as usize + len].copy_from_slice(&data[..len]);
        }
        let mut backing = vec![0u8; 2 * PIECE + ALIGN];
        let skip = padding(backing.as_ptr());
        let aligned = &mut backing[skip..skip + 2 * PIECE];
        aligned.copy_from_slice(&data[5..5 + 2 * PIECE]);
        write_all_at(&file, aligned, 2 * PIECE as u64 + 4096).unwrap();
        expected[2 * PIECE + 4096..4 * PIECE + 4096].copy_from_slice(aligned);
        let mut read = vec![0u8; 8 * PIECE];
        let n = file.read_at(&mut read, 0).unwrap();
        assert_eq!(n, PIECE + data.len());
        assert_eq!(&read[..n], &expected[..n]);
    }
}
