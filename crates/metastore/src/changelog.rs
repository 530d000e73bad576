//! The changelog: the master's write-ahead log. Every metadata change is appended here (one
//! `write(2)`, so it survives the death of the process) before it is applied or acknowledged.
//!
//! Files are `changelog.<first version, 20 digits>.elk`; records are
//! `u32 body length | u32 checksum | body`, the body being `u64 version | encoded MetaOp`, the
//! checksum the first four bytes of the body's BLAKE3. A record that is cut short or fails its
//! checksum at the end of the last file is a torn write: it is cut off and the log goes on.
//!
//! Once the current file has passed a size limit, the next record starts a new file (rotation),
//! so that files wholly covered by a metadata image can be deleted.

use std::fs::{File, OpenOptions};
use std::io::{BufReader, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use elkfs_proto::codec;

use crate::changelog_sync::ChangelogSync;
use crate::error::StoreError;
use crate::op::MetaOp;

/// Largest record body accepted when reading (a record is one small change).
const MAX_RECORD: u32 = 16 * 1024 * 1024;

const RECORD_HEADER: usize = 8;

/// Size past which the next record starts a new file, unless configured otherwise.
pub const DEFAULT_FILE_BYTES: u64 = 64 * 1024 * 1024;

/// The open changelog, positioned for appending.
pub struct Changelog {
    dir: PathBuf,
    file: File,
    path: PathBuf,
    /// Bytes in the current file.
    len: u64,
    /// Size past which the next record goes to a new file.
    max_file_bytes: u64,
    last_version: u64,
    broken: bool,
    /// A second handle on the current file, swapped on rotation, for fsyncs from other threads.
    sync: Arc<ChangelogSync>,
}

/// A record read back from the changelog.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    /// Its version.
    pub version: u64,
    /// The change.
    pub op: MetaOp,
}

/// The name of the changelog file whose first record has `first_version`.
pub fn file_name(first_version: u64) -> String {
    format!("changelog.{first_version:020}.elk")
}

fn parse_file_name(name: &str) -> Option<u64> {
    name.strip_prefix("changelog.")?
        .strip_suffix(".elk")?
        .parse()
        .ok()
}

fn sync_dir(dir: &Path) -> Result<(), StoreError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io_err(dir))
}

fn io_err(path: &Path) -> impl Fn(std::io::Error) -> StoreError + '_ {
    move |source| StoreError::Changelog {
        path: path.to_path_buf(),
        source,
    }
}

/// The changelog files in `dir`, oldest first, with the first version each holds (none when the
/// directory does not exist).
pub fn list_files(dir: &Path) -> Result<Vec<(u64, PathBuf)>, StoreError> {
    let mut files = Vec::new();
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(files),
        Err(e) => return Err(io_err(dir)(e)),
    };
    for entry in entries {
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

/// Decodes one complete raw record (header and body): `Ok(None)` if it fails its checksum or
/// is cut short, an error if it checks out but does not decode (a newer ElkFS wrote it).
pub fn decode_raw(raw: &[u8]) -> Result<Option<Record>, StoreError> {
    if raw.len() < RECORD_HEADER + 8 {
        return Ok(None);
    }
    let len = u32::from_le_bytes([raw[0], raw[1], raw[2], raw[3]]) as usize;
    let sum = u32::from_le_bytes([raw[4], raw[5], raw[6], raw[7]]);
    let body = &raw[RECORD_HEADER..];
    if body.len() != len || checksum(body) != sum {
        return Ok(None);
    }
    let mut v = [0u8; 8];
    v.copy_from_slice(&body[..8]);
    let version = u64::from_le_bytes(v);
    let op: MetaOp = codec::decode(&body[8..]).map_err(|e| StoreError::Replay {
        version,
        reason: format!("not understood by this version of ElkFS ({e})"),
    })?;
    Ok(Some(Record { version, op }))
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

/// Deletes the files that hold only records up to `version` (each file's records end where the
/// next file begins), never the last file; returns how many went.
pub fn remove_files_through(dir: &Path, version: u64) -> Result<usize, StoreError> {
    let files = list_files(dir)?;
    let mut removed = 0;
    for pair in files.windows(2) {
        let ((_, path), (next_first, _)) = (&pair[0], &pair[1]);
        if *next_first > version.saturating_add(1) {
            break;
        }
        std::fs::remove_file(path).map_err(io_err(path))?;
        removed += 1;
    }
    if removed > 0 {
        sync_dir(dir)?;
    }
    Ok(removed)
}

impl Changelog {
    /// Opens the changelog in `dir` (creating it) and cuts a torn record off the end of the last
    /// file. Every record of the files that may hold `next_version` or later is handed to
    /// `visit` in order (older files are not read); `next_version` also names a new file when
    /// there is none. A file grows to about `max_file_bytes` before the next record starts a
    /// new one.
    pub fn open(
        dir: &Path,
        next_version: u64,
        max_file_bytes: u64,
        visit: &mut dyn FnMut(Record) -> Result<(), StoreError>,
    ) -> Result<Changelog, StoreError> {
        std::fs::create_dir_all(dir).map_err(io_err(dir))?;
        let files = list_files(dir)?;
        // Files before the last one starting at or before `next_version` end before it.
        let start = files
            .iter()
            .rposition(|(first, _)| *first <= next_version)
            .unwrap_or(0);
        let mut last_version = match files.last() {
            Some((first, _)) => first.saturating_sub(1),
            None => next_version.saturating_sub(1),
        };
        let count = files.len();
        for (i, (_, path)) in files.iter().enumerate().skip(start) {
            let mut track = |r: Record| {
                last_version = last_version.max(r.version);
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
                    return Err(StoreError::ChangelogDamaged {
                        path: path.clone(),
                        offset: at,
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
            sync_dir(dir)?;
        }
        let len = file.seek(SeekFrom::End(0)).map_err(io_err(&path))?;
        let sync = Arc::new(ChangelogSync::new(
            file.try_clone().map_err(io_err(&path))?,
            &path,
        ));
        Ok(Changelog {
            dir: dir.to_path_buf(),
            file,
            path,
            len,
            max_file_bytes: max_file_bytes.max(1),
            last_version,
            broken: false,
            sync,
        })
    }

    /// Version of the last record in the log: the last one read or written, or, when the last
    /// file is still empty, the one just before that file's first.
    pub fn last_version(&self) -> u64 {
        self.last_version
    }

    /// Starts the file `changelog.<version>.elk` for the record `version`. The full file is
    /// fsynced first, so only the last file can ever have a torn tail, and the directory after
    /// the new name appears, so the name survives a power cut.
    fn rotate(&mut self, version: u64) -> Result<(), StoreError> {
        self.sync.sync()?;
        let path = self.dir.join(file_name(version));
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .map_err(io_err(&path))?;
        let len = file.metadata().map_err(io_err(&path))?.len();
        if len != 0 {
            return Err(StoreError::Changelog {
                path,
                source: std::io::Error::other(
                    "a new changelog file already exists and is not empty",
                ),
            });
        }
        sync_dir(&self.dir)?;
        let handle = file.try_clone().map_err(io_err(&path))?;
        self.sync.replace(handle, &path);
        tracing::info!(path = %path.display(), "changelog: started a new file");
        self.file = file;
        self.path = path;
        self.len = 0;
        Ok(())
    }

    /// Whether the next append starts a new file (which fsyncs the current one).
    pub fn rotation_due(&self) -> bool {
        self.len >= self.max_file_bytes
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
        if self.len >= self.max_file_bytes {
            self.rotate(version)?;
        }
        let before = self.len;
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
        self.len += record.len() as u64;
        self.last_version = version;
        Ok(())
    }

    /// A handle on the current file (kept current across rotations), for fsyncing it from
    /// another thread: an fsync through it covers every record appended before it, since
    /// earlier files were fsynced when the next one started.
    pub fn sync_handle(&self) -> Arc<ChangelogSync> {
        self.sync.clone()
    }

    /// The file records are appended to.
    pub fn current_path(&self) -> &Path {
        &self.path
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
        Changelog::open(dir, 1, DEFAULT_FILE_BYTES, &mut |r| {
            out.push(r);
            Ok(())
        })
        .unwrap();
        out
    }

    #[test]
    fn records_come_back_in_order_after_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let mut log = Changelog::open(dir.path(), 1, DEFAULT_FILE_BYTES, &mut |_| Ok(())).unwrap();
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
        let mut log = Changelog::open(dir.path(), 1, DEFAULT_FILE_BYTES, &mut |_| Ok(())).unwrap();
        log.append(1, &op(1)).unwrap();
        log.append(2, &op(2)).unwrap();
        let path = log.path.clone();
        drop(log);
        let len = std::fs::metadata(&path).unwrap().len();
        let f = OpenOptions::new().write(true).open(&path).unwrap();
        f.set_len(len - 3).unwrap();
        assert_eq!(read_all(dir.path()).len(), 1);
        let mut log = Changelog::open(dir.path(), 1, DEFAULT_FILE_BYTES, &mut |_| Ok(())).unwrap();
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
        let mut log = Changelog::open(dir.path(), 1, DEFAULT_FILE_BYTES, &mut |_| Ok(())).unwrap();
        log.append(1, &op(1)).unwrap();
        let path = log.path.clone();
        drop(log);
        let body = [2u64.to_le_bytes().to_vec(), vec![0xEE, 0x01]].concat();
        let mut bytes = std::fs::read(&path).unwrap();
        bytes.extend_from_slice(&(body.len() as u32).to_le_bytes());
        bytes.extend_from_slice(&checksum(&body).to_le_bytes());
        bytes.extend_from_slice(&body);
        std::fs::write(&path, &bytes).unwrap();
        let err = Changelog::open(dir.path(), 1, DEFAULT_FILE_BYTES, &mut |_| Ok(()))
            .err()
            .unwrap();
        assert!(err.to_string().contains("not understood"), "{err}");
        assert_eq!(std::fs::read(&path).unwrap(), bytes, "nothing was cut");
    }

    #[test]
    fn a_flipped_byte_in_the_last_record_is_detected() {
        let dir = tempfile::tempdir().unwrap();
        let mut log = Changelog::open(dir.path(), 1, DEFAULT_FILE_BYTES, &mut |_| Ok(())).unwrap();
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

    fn names(dir: &Path) -> Vec<u64> {
        list_files(dir)
            .unwrap()
            .into_iter()
            .map(|(v, _)| v)
            .collect()
    }

    #[test]
    fn a_full_file_makes_the_next_record_start_a_new_file_named_after_it() {
        let dir = tempfile::tempdir().unwrap();
        let mut log = Changelog::open(dir.path(), 1, 40, &mut |_| Ok(())).unwrap();
        let handle = log.sync_handle();
        for v in 1..=10 {
            log.append(v, &op(v)).unwrap();
        }
        // Each record is 18 bytes: a file takes three before passing 40 bytes.
        assert_eq!(names(dir.path()), vec![1, 4, 7, 10]);
        use std::os::unix::fs::MetadataExt;
        let synced = handle.inode();
        let current = std::fs::metadata(log.current_path()).unwrap().ino();
        assert_eq!(synced, current, "the sync handle follows rotation");
        drop(log);
        let versions: Vec<u64> = read_all(dir.path()).iter().map(|r| r.version).collect();
        assert_eq!(versions, (1..=10).collect::<Vec<_>>());
        let log = Changelog::open(dir.path(), 1, 40, &mut |_| Ok(())).unwrap();
        assert_eq!(log.last_version(), 10);
    }

    #[test]
    fn files_that_end_before_the_next_version_are_not_read() {
        let dir = tempfile::tempdir().unwrap();
        let mut log = Changelog::open(dir.path(), 1, 40, &mut |_| Ok(())).unwrap();
        for v in 1..=10 {
            log.append(v, &op(v)).unwrap();
        }
        drop(log);
        let mut seen = Vec::new();
        let log = Changelog::open(dir.path(), 6, 40, &mut |r| {
            seen.push(r.version);
            Ok(())
        })
        .unwrap();
        assert_eq!(
            seen,
            vec![4, 5, 6, 7, 8, 9, 10],
            "from the file holding 6 on"
        );
        assert_eq!(log.last_version(), 10);
    }

    #[test]
    fn an_empty_last_file_still_says_where_the_log_ends() {
        let dir = tempfile::tempdir().unwrap();
        let mut log = Changelog::open(dir.path(), 1, 1 << 20, &mut |_| Ok(())).unwrap();
        log.append(1, &op(1)).unwrap();
        drop(log);
        // As after a rotation that crashed before its first record.
        std::fs::write(dir.path().join(file_name(8)), b"").unwrap();
        let log = Changelog::open(dir.path(), 1, 1 << 20, &mut |_| Ok(())).unwrap();
        assert_eq!(log.last_version(), 7);
    }

    #[test]
    fn only_files_wholly_at_or_below_a_version_are_removed_and_never_the_last() {
        let dir = tempfile::tempdir().unwrap();
        let mut log = Changelog::open(dir.path(), 1, 40, &mut |_| Ok(())).unwrap();
        for v in 1..=10 {
            log.append(v, &op(v)).unwrap();
        }
        assert_eq!(remove_files_through(dir.path(), 5).unwrap(), 1);
        assert_eq!(names(dir.path()), vec![4, 7, 10], "file 4 holds 6");
        assert_eq!(remove_files_through(dir.path(), 6).unwrap(), 1);
        assert_eq!(names(dir.path()), vec![7, 10]);
        assert_eq!(remove_files_through(dir.path(), 100).unwrap(), 1);
        assert_eq!(names(dir.path()), vec![10]);
        log.append(11, &op(11)).unwrap();
        drop(log);
        let versions: Vec<u64> = read_all(dir.path()).iter().map(|r| r.version).collect();
        assert_eq!(versions, vec![10, 11]);
    }
}
