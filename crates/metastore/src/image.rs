//! Metadata images: the whole key-value state as of one changelog version, in one file.
//!
//! `image.<V, 20 digits>.elk` in the data directory holds every key and value as they were once
//! record `V` was applied, so the state can be rebuilt from it plus the changelog from `V + 1`.
//! Layout (docs/FORMAT.md, "Metadata images"): a 24-byte header (magic, format version, `V`),
//! the records `u32 key length | u32 value length | key | value` in strictly increasing key
//! order, then an end marker (a key length of 0), the record count and a BLAKE3 of every byte
//! before the hash. Images are written to a temporary name, fsynced, and renamed into place, so a
//! file with the final name is always complete; reading streams the file, never holding it all.

use std::fs::{File, OpenOptions};
use std::io::{BufReader, BufWriter, Read, Write};
use std::path::{Path, PathBuf};

use crate::error::StoreError;

/// The first 8 bytes of every image.
pub const MAGIC: &[u8; 8] = b"ELKFSIMG";

/// The layout version written in the header; a reader refuses others.
pub const FORMAT_VERSION: u32 = 1;

/// Longest key accepted when reading (the longest real key is 9 + 255 bytes).
pub const MAX_KEY: u32 = 4096;

/// Largest value accepted when reading (the largest real one is an xattr of 64 KiB).
pub const MAX_VALUE: u32 = 16 * 1024 * 1024;

const HEADER: usize = 24;

/// Suffix of an image being written.
const TEMP_SUFFIX: &str = ".tmp";

/// The name of the image of version `version`.
pub fn file_name(version: u64) -> String {
    format!("image.{version:020}.elk")
}

fn parse_file_name(name: &str) -> Option<u64> {
    let digits = name.strip_prefix("image.")?.strip_suffix(".elk")?;
    if digits.len() != 20 {
        return None;
    }
    digits.parse().ok()
}

fn damaged(path: &Path, reason: impl Into<String>) -> StoreError {
    StoreError::Image {
        path: path.to_path_buf(),
        reason: reason.into(),
    }
}

fn io_err(path: &Path) -> impl Fn(std::io::Error) -> StoreError + '_ {
    move |e| damaged(path, e.to_string())
}

/// The images in `dir`, newest first, with their versions (by name: a name does not prove the
/// file is whole; [`read`] does).
pub fn list(dir: &Path) -> Result<Vec<(u64, PathBuf)>, StoreError> {
    let mut images = Vec::new();
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(images),
        Err(e) => return Err(io_err(dir)(e)),
    };
    for entry in entries {
        let entry = entry.map_err(io_err(dir))?;
        if let Some(version) = entry.file_name().to_str().and_then(parse_file_name) {
            images.push((version, entry.path()));
        }
    }
    images.sort_by_key(|image| std::cmp::Reverse(image.0));
    Ok(images)
}

/// Deletes images that were being written when the process stopped.
pub fn remove_unfinished(dir: &Path) -> Result<usize, StoreError> {
    let mut removed = 0;
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(0),
        Err(e) => return Err(io_err(dir)(e)),
    };
    for entry in entries {
        let entry = entry.map_err(io_err(dir))?;
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        if name.starts_with("image.") && name.ends_with(TEMP_SUFFIX) {
            std::fs::remove_file(entry.path()).map_err(io_err(&entry.path()))?;
            removed += 1;
        }
    }
    Ok(removed)
}

/// Writes an image: [`ImageWriter::push`] every key in increasing order, then
/// [`ImageWriter::finish`]. Dropped unfinished, it removes its temporary file.
pub struct ImageWriter {
    out: Option<BufWriter<File>>,
    hasher: blake3::Hasher,
    temp: PathBuf,
    path: PathBuf,
    dir: PathBuf,
    count: u64,
    bytes: u64,
    last_key: Option<Vec<u8>>,
}

impl ImageWriter {
    /// Starts the image of version `version` in `dir` (under a temporary name).
    pub fn create(dir: &Path, version: u64) -> Result<ImageWriter, StoreError> {
        let path = dir.join(file_name(version));
        let temp = dir.join(format!("{}{TEMP_SUFFIX}", file_name(version)));
        let file = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .open(&temp)
            .map_err(io_err(&temp))?;
        let mut writer = ImageWriter {
            out: Some(BufWriter::with_capacity(1 << 20, file)),
            hasher: blake3::Hasher::new(),
            temp,
            path,
            dir: dir.to_path_buf(),
            count: 0,
            bytes: 0,
            last_key: None,
        };
        let mut header = Vec::with_capacity(HEADER);
        header.extend_from_slice(MAGIC);
        header.extend_from_slice(&FORMAT_VERSION.to_le_bytes());
        header.extend_from_slice(&0u32.to_le_bytes());
        header.extend_from_slice(&version.to_le_bytes());
        writer.write(&header)?;
        Ok(writer)
    }

    fn write(&mut self, bytes: &[u8]) -> Result<(), StoreError> {
        self.hasher.update(bytes);
        self.bytes += bytes.len() as u64;
        match self.out.as_mut() {
            Some(out) => out.write_all(bytes).map_err(io_err(&self.temp)),
            None => Err(damaged(&self.temp, "the image is already finished")),
        }
    }

    /// Adds one key and its value; keys must come in strictly increasing order.
    pub fn push(&mut self, key: &[u8], value: &[u8]) -> Result<(), StoreError> {
        if key.is_empty() || key.len() > MAX_KEY as usize || value.len() > MAX_VALUE as usize {
            return Err(damaged(
                &self.temp,
                format!(
                    "a key of {} bytes with a value of {} bytes cannot be stored",
                    key.len(),
                    value.len()
                ),
            ));
        }
        if self.last_key.as_deref().is_some_and(|last| last >= key) {
            return Err(damaged(&self.temp, "keys out of order"));
        }
        self.write(&(key.len() as u32).to_le_bytes())?;
        self.write(&(value.len() as u32).to_le_bytes())?;
        self.write(key)?;
        self.write(value)?;
        self.count += 1;
        self.last_key = Some(key.to_vec());
        Ok(())
    }

    /// Writes the trailer, fsyncs the file, gives it its final name and fsyncs the directory.
    /// Returns the final path, the number of records and the file's size.
    pub fn finish(mut self) -> Result<(PathBuf, u64, u64), StoreError> {
        let mut end = Vec::with_capacity(16);
        end.extend_from_slice(&0u32.to_le_bytes());
        end.extend_from_slice(&0u32.to_le_bytes());
        end.extend_from_slice(&self.count.to_le_bytes());
        self.write(&end)?;
        let hash = *self.hasher.finalize().as_bytes();
        let temp = self.temp.clone();
        let mut out = self
            .out
            .take()
            .ok_or_else(|| damaged(&temp, "the image is already finished"))?;
        out.write_all(&hash).map_err(io_err(&temp))?;
        let file = out
            .into_inner()
            .map_err(|e| damaged(&temp, e.error().to_string()))?;
        file.sync_all().map_err(io_err(&temp))?;
        drop(file);
        std::fs::rename(&temp, &self.path).map_err(io_err(&self.path))?;
        File::open(&self.dir)
            .and_then(|d| d.sync_all())
            .map_err(io_err(&self.dir))?;
        Ok((
            self.path.clone(),
            self.count,
            self.bytes + hash.len() as u64,
        ))
    }
}

impl Drop for ImageWriter {
    fn drop(&mut self) {
        if self.out.is_some() {
            self.out = None;
            let _ = std::fs::remove_file(&self.temp);
        }
    }
}

/// What an image holds, as its header and trailer say.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ImageInfo {
    /// The changelog version the image is the state of.
    pub version: u64,
    /// Number of key-value records.
    pub records: u64,
}

/// Reads an image, handing each key and value to `visit` in key order, and checks everything:
/// header, record bounds, key order, count and hash. Records come before the hash is checked,
/// so a caller that keeps them must discard them when this returns an error.
pub fn read(
    path: &Path,
    visit: &mut dyn FnMut(Vec<u8>, Vec<u8>) -> Result<(), StoreError>,
) -> Result<ImageInfo, StoreError> {
    let file = File::open(path).map_err(io_err(path))?;
    let mut reader = HashingReader {
        inner: BufReader::with_capacity(1 << 20, file),
        hasher: blake3::Hasher::new(),
        path,
    };
    let mut header = [0u8; HEADER];
    reader.read_exact(&mut header, "the header")?;
    if &header[..8] != MAGIC {
        return Err(damaged(path, "not an ElkFS metadata image (bad magic)"));
    }
    let format = u32::from_le_bytes([header[8], header[9], header[10], header[11]]);
    if format != FORMAT_VERSION {
        return Err(damaged(
            path,
            format!("image format {format}, this ElkFS reads format {FORMAT_VERSION}"),
        ));
    }
    let mut v = [0u8; 8];
    v.copy_from_slice(&header[16..24]);
    let version = u64::from_le_bytes(v);
    let mut records = 0u64;
    let mut last_key: Option<Vec<u8>> = None;
    loop {
        let mut lens = [0u8; 8];
        reader.read_exact(&mut lens, "a record header")?;
        let key_len = u32::from_le_bytes([lens[0], lens[1], lens[2], lens[3]]);
        let value_len = u32::from_le_bytes([lens[4], lens[5], lens[6], lens[7]]);
        if key_len == 0 {
            break;
        }
        if key_len > MAX_KEY || value_len > MAX_VALUE {
            return Err(damaged(
                path,
                format!(
                    "record {records} announces a key of {key_len} and a value of {value_len} bytes"
                ),
            ));
        }
        let mut key = vec![0u8; key_len as usize];
        reader.read_exact(&mut key, "a key")?;
        let mut value = vec![0u8; value_len as usize];
        reader.read_exact(&mut value, "a value")?;
        if last_key.as_ref().is_some_and(|last| *last >= key) {
            return Err(damaged(
                path,
                format!("record {records} is out of key order"),
            ));
        }
        last_key = Some(key.clone());
        visit(key, value)?;
        records += 1;
    }
    let mut count = [0u8; 8];
    reader.read_exact(&mut count, "the record count")?;
    let count = u64::from_le_bytes(count);
    let expected = *reader.hasher.finalize().as_bytes();
    let mut hash = [0u8; 32];
    reader
        .inner
        .read_exact(&mut hash)
        .map_err(|_| damaged(path, "cut short in its hash"))?;
    if hash != expected {
        return Err(damaged(
            path,
            "the checksum does not match: the file is damaged",
        ));
    }
    if count != records {
        return Err(damaged(
            path,
            format!("holds {records} records but says {count}"),
        ));
    }
    let mut extra = [0u8; 1];
    if reader.inner.read(&mut extra).map_err(io_err(path))? != 0 {
        return Err(damaged(path, "bytes follow the end of the image"));
    }
    Ok(ImageInfo { version, records })
}

/// Checks a whole image without keeping anything.
pub fn verify(path: &Path) -> Result<ImageInfo, StoreError> {
    read(path, &mut |_, _| Ok(()))
}

struct HashingReader<'a> {
    inner: BufReader<File>,
    hasher: blake3::Hasher,
    path: &'a Path,
}

impl HashingReader<'_> {
    fn read_exact(&mut self, buf: &mut [u8], what: &str) -> Result<(), StoreError> {
        self.inner.read_exact(buf).map_err(|e| {
            if e.kind() == std::io::ErrorKind::UnexpectedEof {
                damaged(self.path, format!("cut short in {what}"))
            } else {
                damaged(self.path, e.to_string())
            }
        })?;
        self.hasher.update(buf);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(dir: &Path, version: u64, n: u32) -> PathBuf {
        let mut w = ImageWriter::create(dir, version).unwrap();
        for i in 0..n {
            w.push(&i.to_be_bytes(), &vec![i as u8; (i % 7) as usize])
                .unwrap();
        }
        w.finish().unwrap().0
    }

    fn read_all(path: &Path) -> Result<(ImageInfo, crate::kv::Rows), StoreError> {
        let mut rows = Vec::new();
        let info = read(path, &mut |k, v| {
            rows.push((k, v));
            Ok(())
        })?;
        Ok((info, rows))
    }

    #[test]
    fn an_image_reads_back_what_was_written() {
        let dir = tempfile::tempdir().unwrap();
        let path = sample(dir.path(), 42, 100);
        assert_eq!(path.file_name().unwrap(), "image.00000000000000000042.elk");
        let (info, rows) = read_all(&path).unwrap();
        assert_eq!(
            info,
            ImageInfo {
                version: 42,
                records: 100
            }
        );
        assert_eq!(rows[5], (5u32.to_be_bytes().to_vec(), vec![5u8; 5]));
        assert_eq!(list(dir.path()).unwrap(), vec![(42, path)]);
    }

    #[test]
    fn every_cut_and_every_flipped_byte_of_an_image_is_detected() {
        let dir = tempfile::tempdir().unwrap();
        let path = sample(dir.path(), 7, 5);
        let good = std::fs::read(&path).unwrap();
        for cut in 0..good.len() {
            std::fs::write(&path, &good[..cut]).unwrap();
            assert!(verify(&path).is_err(), "cut at {cut} not detected");
        }
        for at in 0..good.len() {
            let mut bad = good.clone();
            bad[at] ^= 0x01;
            std::fs::write(&path, &bad).unwrap();
            assert!(verify(&path).is_err(), "flip at {at} not detected");
        }
        let mut longer = good.clone();
        longer.push(0);
        std::fs::write(&path, &longer).unwrap();
        assert!(verify(&path).is_err(), "trailing byte not detected");
    }

    #[test]
    fn an_unfinished_image_leaves_no_file_with_the_final_name() {
        let dir = tempfile::tempdir().unwrap();
        let mut w = ImageWriter::create(dir.path(), 9).unwrap();
        w.push(b"a", b"1").unwrap();
        assert!(w.push(b"a", b"2").is_err(), "keys must increase");
        drop(w);
        assert!(list(dir.path()).unwrap().is_empty());
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
        std::fs::write(dir.path().join("image.00000000000000000009.elk.tmp"), b"x").unwrap();
        assert_eq!(remove_unfinished(dir.path()).unwrap(), 1);
    }
}
