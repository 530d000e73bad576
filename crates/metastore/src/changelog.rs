//! The changelog: the master's write-ahead log. Every metadata change is appended here (one
//! `write(2)`, so it survives the death of the process) before it is applied or acknowledged.
//!
//! Files are `changelog.<first version, 20 digits>.elk`; records are
//! `u32 body length | u32 checksum | body`, the body being `u64 version | encoded MetaOp`, the
//! checksum the first four bytes of the body's BLAKE3. A record that is cut short or fails its
//! checksum at the end of the last file is a torn write: it is cut off and the log goes on.

use std::fs::{File, OpenOptions};
use std::io::{BufReader, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use elkfs_proto::codec;

use crate::error::StoreError;
use crate::op::MetaOp;

/// Largest record body accepted when reading (a record is one small change).
const MAX_RECORD: u32 = 16 * 1024 * 1024;

const RECORD_HEADER: usize = 8;

/// The open changelog, positioned for appending.
pub struct Changelog {
    dir: PathBuf,
    file: File,
    path: PathBuf,
    last_version: u64,
    broken: bool,
}

/// A record read back from the changelog.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    /// Its version.
    pub version: u64,
    /// The change.
    pub op: MetaOp,
}

fn file_name(first_version: u64) -> String {
    format!("changelog.{first_version:020}.elk")
}

fn parse_file_name(name: &str) -> Option<u64> {
    name.strip_prefix("changelog.")?
        .strip_suffix(".elk")?
        .parse()
        .ok()
}

fn io_err(path: &Path) -> impl Fn(std::io::Error) -> StoreError + '_ {
    move |source| StoreError::Changelog {
        path: path.to_path_buf(),
        source,
    }
}

/// The changelog files in `dir`, oldest first, with the first version each holds.
pub fn list_files(dir: &Path) -> Result<Vec<(u64, PathBuf)>, StoreError> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(io_err(dir))? {
        let entry = entry.map_err(io_err(dir))?;
        if let Some(first) = entry.file_name().to_str().and_then(parse_file_name) {
            files.push((first, entry.path()));
        }
    }
    files.sort();
    Ok(files)
}

/// Encodes one record as it is stored.
pub fn encode_record(version: u64, op: &MetaOp) -> Result<Vec<u8>, StoreError> {
    let mut body = version.to_le_bytes().to_vec();
    codec::encode_into(op, &mut body).map_err(|e| StoreError::Replay {
        version,
        reason: e.to_string(),
    })?;
    let mut out = Vec::with_capacity(RECORD_HEADER + body.len());
    out.extend_from_slice(&(body.len() as u32).to_le_bytes());
    out.extend_from_slice(&checksum(&body).to_le_bytes());
    out.extend_from_slice(&body);
    Ok(out)
}

fn checksum(body: &[u8]) -> u32 {
    let h = blake3::hash(body);
    let b = h.as_bytes();
    u32::from_le_bytes([b[0], b[1], b[2], b[3]])
}

/// How reading a file ended.
enum Tail {
    /// Every byte was a valid record.
    Clean,
    /// A torn or damaged record starts at this offset.
    Torn(u64),
}

/// Reads the records of one file in order, handing each to `visit`.
fn read_file(
    path: &Path,
    visit: &mut dyn FnMut(Record) -> Result<(), StoreError>,
) -> Result<Tail, StoreError> {
    let file = File::open(path).map_err(io_err(path))?;
    let mut reader = BufReader::with_capacity(1 << 20, file);
    let mut offset = 0u64;
    loop {
        let mut header = [0u8; RECORD_HEADER];
        match read_full(&mut reader, &mut header).map_err(io_err(path))? {
            0 => return Ok(Tail::Clean),
            n if n < RECORD_HEADER => return Ok(Tail::Torn(offset)),
            _ => {}
        }
        let len = u32::from_le_bytes([header[0], header[1], header[2], header[3]]);
        let sum = u32::from_le_bytes([header[4], header[5], header[6], header[7]]);
        if !(8..=MAX_RECORD).contains(&len) {
            return Ok(Tail::Torn(offset));
        }
        let mut body = vec![0u8; len as usize];
        if read_full(&mut reader, &mut body).map_err(io_err(path))? < body.len() {
            return Ok(Tail::Torn(offset));
        }
        if checksum(&body) != sum {
            return Ok(Tail::Torn(offset));
        }
        let mut v = [0u8; 8];
        v.copy_from_slice(&body[..8]);
        let version = u64::from_le_bytes(v);
        // The checksum matched, so the bytes are what was written: a record that does not
        // decode comes from a newer ElkFS, and cutting it off would lose a change.
        let op: MetaOp = codec::decode(&body[8..]).map_err(|e| StoreError::Changelog {
            path: path.to_path_buf(),
            source: std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                format!(
                    "record {version} at offset {offset} is not understood by this version of \
                     ElkFS ({e}); run the version that wrote it"
                ),
            ),
        })?;
        visit(Record { version, op })?;
        offset += (RECORD_HEADER + body.len()) as u64;
    }
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

impl Changelog {
    /// Opens the changelog in `dir` (creating it), handing every stored record to `visit` in
    /// order, and cuts a torn record off the end of the last file. `next_version` is used to
    /// name a new file when there is none.
    pub fn open(
        dir: &Path,
        next_version: u64,
        visit: &mut dyn FnMut(Record) -> Result<(), StoreError>,
    ) -> Result<Changelog, StoreError> {
        std::fs::create_dir_all(dir).map_err(io_err(dir))?;
        let files = list_files(dir)?;
        let mut last_version = next_version.saturating_sub(1);
        let count = files.len();
        for (i, (_, path)) in files.iter().enumerate() {
            let mut track = |r: Record| {
                last_version = r.version;
                visit(r)
            };
            match read_file(path, &mut track)? {
                Tail::Clean => {}
                Tail::Torn(at) if i + 1 == count => {
                    tracing::warn!(path = %path.display(), offset = at, "cutting a torn record off the end of the changelog");
                    let f = OpenOptions::new()
                        .write(true)
                        .open(path)
                        .map_err(io_err(path))?;
                    f.set_len(at).map_err(io_err(path))?;
                    f.sync_all().map_err(io_err(path))?;
                }
                Tail::Torn(at) => {
                    return Err(StoreError::Changelog {
                        path: path.clone(),
                        source: std::io::Error::new(
                            std::io::ErrorKind::InvalidData,
                            format!("damaged record at offset {at} in a file that is not the last"),
                        ),
                    });
                }
            }
        }
        let path = match files.last() {
            Some((_, path)) => path.clone(),
            None => dir.join(file_name(last_version + 1)),
        };
        let created = !path.exists();
        let mut file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .map_err(io_err(&path))?;
        if created {
            // The new file's name must survive a power cut too.
            File::open(dir)
                .and_then(|d| d.sync_all())
                .map_err(io_err(dir))?;
        }
        file.seek(SeekFrom::End(0)).map_err(io_err(&path))?;
        Ok(Changelog {
            dir: dir.to_path_buf(),
            file,
            path,
            last_version,
            broken: false,
        })
    }

    /// Version of the last record written.
    pub fn last_version(&self) -> u64 {
        self.last_version
    }

    /// Appends one record with one `write(2)`; it survives the process dying from here on (and a
    /// power cut after the next [`Changelog::sync`]).
    ///
    /// If the write fails part-way (a full disk), the partial record is cut off again so that
    /// later records do not land behind it; if even that fails, the error says the changelog
    /// must not be appended to any more.
    pub fn append(&mut self, version: u64, op: &MetaOp) -> Result<(), StoreError> {
        if self.broken {
            return Err(StoreError::Changelog {
                path: self.path.clone(),
                source: std::io::Error::other(
                    "an earlier partial record could not be cut off; restart the master",
                ),
            });
        }
        let record = encode_record(version, op)?;
        let before = self.file.metadata().map_err(io_err(&self.path))?.len();
        if let Err(e) = self.file.write_all(&record) {
            let cut = self.file.set_len(before);
            self.broken = cut.is_err();
            return Err(StoreError::Changelog {
                path: self.path.clone(),
                source: match cut {
                    Ok(()) => e,
                    Err(cut_err) => std::io::Error::other(format!(
                        "{e}; and cutting the partial record failed ({cut_err}): the changelog \
                         cannot be appended to until the master restarts"
                    )),
                },
            });
        }
        self.last_version = version;
        Ok(())
    }

    /// A second handle on the current file, for fsyncing it from another thread.
    pub fn sync_handle(&self) -> Result<File, StoreError> {
        self.file.try_clone().map_err(io_err(&self.path))
    }

    /// The directory holding the changelog files.
    pub fn dir(&self) -> &Path {
        &self.dir
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn op(n: u64) -> MetaOp {
        MetaOp::ReserveChunkIds { up_to: n }
    }

    fn read_all(dir: &Path) -> Vec<Record> {
        let mut out = Vec::new();
        Changelog::open(dir, 1, &mut |r| {
            out.push(r);
            Ok(())
        })
        .unwrap();
        out
    }

    #[test]
    fn records_come_back_in_order_after_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let mut log = Changelog::open(dir.path(), 1, &mut |_| Ok(())).unwrap();
        for v in 1..=5 {
            log.append(v, &op(v * 10)).unwrap();
        }
        drop(log);
        let records = read_all(dir.path());
        assert_eq!(records.len(), 5);
        assert_eq!(
            records[4],
            Record {
                version: 5,
                op: op(50)
            }
        );
    }

    #[test]
    fn a_torn_tail_is_cut_and_appending_goes_on() {
        let dir = tempfile::tempdir().unwrap();
        let mut log = Changelog::open(dir.path(), 1, &mut |_| Ok(())).unwrap();
        log.append(1, &op(1)).unwrap();
        log.append(2, &op(2)).unwrap();
        let path = log.path.clone();
        drop(log);
        let len = std::fs::metadata(&path).unwrap().len();
        let f = OpenOptions::new().write(true).open(&path).unwrap();
        f.set_len(len - 3).unwrap();
        assert_eq!(read_all(dir.path()).len(), 1);
        let mut log = Changelog::open(dir.path(), 1, &mut |_| Ok(())).unwrap();
        assert_eq!(log.last_version(), 1);
        log.append(2, &op(22)).unwrap();
        drop(log);
        assert_eq!(
            read_all(dir.path())[1],
            Record {
                version: 2,
                op: op(22)
            }
        );
    }

    #[test]
    fn a_record_that_checks_out_but_does_not_decode_is_an_error_not_a_torn_tail() {
        let dir = tempfile::tempdir().unwrap();
        let mut log = Changelog::open(dir.path(), 1, &mut |_| Ok(())).unwrap();
        log.append(1, &op(1)).unwrap();
        let path = log.path.clone();
        drop(log);
        let body = [2u64.to_le_bytes().to_vec(), vec![0xEE, 0x01]].concat();
        let mut bytes = std::fs::read(&path).unwrap();
        bytes.extend_from_slice(&(body.len() as u32).to_le_bytes());
        bytes.extend_from_slice(&checksum(&body).to_le_bytes());
        bytes.extend_from_slice(&body);
        std::fs::write(&path, &bytes).unwrap();
        let err = Changelog::open(dir.path(), 1, &mut |_| Ok(()))
            .err()
            .unwrap();
        assert!(err.to_string().contains("not understood"), "{err}");
        assert_eq!(std::fs::read(&path).unwrap(), bytes, "nothing was cut");
    }

    #[test]
    fn a_flipped_byte_in_the_last_record_is_detected() {
        let dir = tempfile::tempdir().unwrap();
        let mut log = Changelog::open(dir.path(), 1, &mut |_| Ok(())).unwrap();
        log.append(1, &op(1)).unwrap();
        log.append(2, &op(2)).unwrap();
        let path = log.path.clone();
        drop(log);
        let mut bytes = std::fs::read(&path).unwrap();
        let last = bytes.len() - 1;
        bytes[last] ^= 0x40;
        std::fs::write(&path, bytes).unwrap();
        assert_eq!(read_all(dir.path()).len(), 1);
    }
}
