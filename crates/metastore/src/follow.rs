//! Reading the changelog as it grows, for metaloggers: records after a version, straight from
//! the files, continuing where the last read stopped. A record still being written (a torn
//! tail) is left for the next read.

use std::fs::File;
use std::io::{BufReader, Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

use crate::changelog::{self, Record};
use crate::error::StoreError;

/// Bytes before a record's body: `u32 length | u32 checksum`.
const HEADER: usize = 8;

/// Why records cannot be read from the position asked for.
#[derive(Debug, thiserror::Error)]
pub enum FollowError {
    /// The changelog no longer holds the record after `after` (an image replaced it).
    #[error("the changelog no longer reaches back to version {0}")]
    Gone(u64),
    /// The files could not be read, or a complete record is damaged.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// A reader's place in the changelog.
pub struct Follower {
    dir: PathBuf,
    /// The next version wanted.
    next: u64,
    /// The file being read and how far its complete records go.
    at: Option<(PathBuf, u64)>,
}

impl Follower {
    /// A reader of the records after version `after`.
    pub fn new(dir: &Path, after: u64) -> Follower {
        Follower {
            dir: dir.to_path_buf(),
            // A peer may ask for anything; past the last version there is simply nothing.
            next: after.saturating_add(1),
            at: None,
        }
    }

    /// The last version read.
    pub fn last(&self) -> u64 {
        self.next - 1
    }

    /// The next raw records (as stored: header and body), up to about `max_bytes`; empty when
    /// there is nothing new yet.
    pub fn read(&mut self, max_bytes: usize) -> Result<Vec<u8>, FollowError> {
        let mut out = Vec::new();
        loop {
            let (path, offset) = match self.at.take() {
                Some(at) => at,
                None => match self.file_for(self.next)? {
                    Some(path) => (path, 0),
                    None => return Ok(out),
                },
            };
            let (offset, clean_end) = self.read_file(&path, offset, max_bytes, &mut out)?;
            if out.len() >= max_bytes || !clean_end {
                self.at = Some((path, offset));
                return Ok(out);
            }
            // The file ended: go on in the next one if there is one for the next version.
            match self.file_for(self.next)? {
                Some(next_path) if next_path != path => {}
                _ => {
                    self.at = Some((path, offset));
                    return Ok(out);
                }
            }
        }
    }

    /// The file holding version `version`, if the log reaches it.
    fn file_for(&self, version: u64) -> Result<Option<PathBuf>, FollowError> {
        let files = changelog::list_files(&self.dir)?;
        let Some((first, _)) = files.first() else {
            return Ok(None);
        };
        if *first > version {
            return Err(FollowError::Gone(version - 1));
        }
        Ok(files
            .iter()
            .rev()
            .find(|(first, _)| *first <= version)
            .map(|(_, p)| p.clone()))
    }

    /// Appends the complete records of `path` from `offset` with versions from `self.next` on;
    /// returns the offset after the last complete record and whether the file ended cleanly.
    fn read_file(
        &mut self,
        path: &Path,
        offset: u64,
        max_bytes: usize,
        out: &mut Vec<u8>,
    ) -> Result<(u64, bool), FollowError> {
        let io = |source| StoreError::Changelog {
            path: path.to_path_buf(),
            source,
        };
        let mut file = File::open(path).map_err(io)?;
        file.seek(SeekFrom::Start(offset)).map_err(io)?;
        let mut reader = BufReader::with_capacity(1 << 20, file);
        let mut offset = offset;
        loop {
            if out.len() >= max_bytes {
                return Ok((offset, false));
            }
            let mut header = [0u8; HEADER];
            let got = read_full(&mut reader, &mut header).map_err(io)?;
            if got < HEADER {
                return Ok((offset, got == 0));
            }
            let len = u32::from_le_bytes([header[0], header[1], header[2], header[3]]) as usize;
            let mut raw = header.to_vec();
            raw.resize(HEADER + len, 0);
            if read_full(&mut reader, &mut raw[HEADER..]).map_err(io)? < len {
                return Ok((offset, false));
            }
            let record = match changelog::decode_raw(&raw) {
                Ok(Some(r)) => r,
                // Not complete yet (being written) or torn: wait for the next read.
                Ok(None) => return Ok((offset, false)),
                Err(e) => return Err(FollowError::Store(e)),
            };
            offset += raw.len() as u64;
            if record.version < self.next {
                continue;
            }
            if record.version > self.next {
                return Err(FollowError::Gone(self.next - 1));
            }
            self.next += 1;
            out.extend_from_slice(&raw);
        }
    }
}

/// Splits raw records (as [`Follower::read`] returns them) back into records, checking each.
pub fn split_raw(mut bytes: &[u8]) -> Result<Vec<Record>, String> {
    let mut records = Vec::new();
    while !bytes.is_empty() {
        if bytes.len() < HEADER {
            return Err("a record is cut short".into());
        }
        let len = u32::from_le_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]) as usize;
        let (raw, rest) = bytes
            .split_at_checked(HEADER + len)
            .ok_or("a record is cut short")?;
        match changelog::decode_raw(raw) {
            Ok(Some(r)) => records.push(r),
            Ok(None) => return Err("a record fails its checksum".into()),
            Err(e) => return Err(e.to_string()),
        }
        bytes = rest;
    }
    Ok(records)
}

fn read_full(reader: &mut impl Read, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut filled = 0;
    while filled < buf.len() {
        match reader.read(&mut buf[filled..]) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(filled)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::changelog::Changelog;
    use crate::op::MetaOp;

    fn op(n: u64) -> MetaOp {
        MetaOp::ReserveChunkIds { up_to: n }
    }

    #[test]
    fn a_follower_reads_across_files_and_waits_at_a_torn_tail() {
        let dir = tempfile::tempdir().unwrap();
        let mut log = Changelog::open(dir.path(), 1, 200, &mut |_| Ok(())).unwrap();
        for v in 1..=20 {
            log.append(v, &op(v)).unwrap();
        }
        let mut follower = Follower::new(dir.path(), 5);
        let first = split_raw(&follower.read(100).unwrap()).unwrap();
        assert_eq!(first[0].version, 6);
        let mut seen: Vec<u64> = first.iter().map(|r| r.version).collect();
        loop {
            let more = split_raw(&follower.read(100).unwrap()).unwrap();
            if more.is_empty() {
                break;
            }
            seen.extend(more.iter().map(|r| r.version));
        }
        assert_eq!(seen, (6..=20).collect::<Vec<_>>());
        // Half a record at the end is left alone until it is complete.
        let path = log.current_path().to_path_buf();
        let record = changelog::encode_record(21, &op(21)).unwrap();
        use std::io::Write;
        let mut f = std::fs::OpenOptions::new()
            .append(true)
            .open(&path)
            .unwrap();
        f.write_all(&record[..5]).unwrap();
        assert!(follower.read(100).unwrap().is_empty());
        f.write_all(&record[5..]).unwrap();
        let last = split_raw(&follower.read(100).unwrap()).unwrap();
        assert_eq!(last[0].version, 21);
        assert_eq!(follower.last(), 21);
    }

    #[test]
    fn a_follower_behind_the_oldest_file_is_told_so() {
        let dir = tempfile::tempdir().unwrap();
        let mut log = Changelog::open(dir.path(), 1, 100, &mut |_| Ok(())).unwrap();
        for v in 1..=30 {
            log.append(v, &op(v)).unwrap();
        }
        let files = changelog::list_files(dir.path()).unwrap();
        std::fs::remove_file(&files[0].1).unwrap();
        let mut follower = Follower::new(dir.path(), 0);
        assert!(matches!(follower.read(1000), Err(FollowError::Gone(0))));
    }
}
