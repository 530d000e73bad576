//! Helpers shared by the end-to-end test binaries: reproducible data, chunk files on disk,
//! errno checks, a request to a chunkserver's data port, small disks of their own.

mod frozen;
mod thin_disk;
mod tmpfs;

pub use frozen::Frozen;
pub use thin_disk::ThinDisk;
pub use tmpfs::{Tmpfs, fill_up, statvfs};

use std::io::{self, Read};
use std::net::SocketAddr;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};

use bytes::Bytes;
use elkfs_proto::connection::{self, NoMessage, NoRequests};
use elkfs_proto::data::{DataRequest, DataResponse};
use elkfs_proto::{Connection, DATA_LIMITS, Hello, Role};

/// Sends `request` (with `data`) on a new data connection to the chunkserver at `server`, as
/// a client program would, and returns its answer with the bytes that came with it.
pub async fn ask_data(
    server: SocketAddr,
    request: &DataRequest,
    data: &[u8],
) -> (DataResponse, Bytes) {
    let conn: Connection<DataRequest, DataResponse> =
        connection::connect::<DataRequest, DataResponse, NoMessage, NoMessage, _>(
            server,
            &Hello::new(Role::DataClient, "elkfs-e2e"),
            DATA_LIMITS,
            "chunkserver",
            NoRequests,
        )
        .await
        .expect("connecting to the data port");
    conn.call(request, Bytes::copy_from_slice(data))
        .await
        .expect("an answer from the chunkserver")
}

/// `len` bytes of reproducible pseudo-random data (xorshift, seeded), fast enough for 200 MiB.
pub fn pseudo_random(len: usize, seed: u64) -> Vec<u8> {
    let mut state = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        out.extend_from_slice(&state.to_le_bytes());
    }
    out.truncate(len);
    out
}

/// Reads a file through a mount after dropping its cached pages, so the bytes come from the
/// chunkservers (through whatever master the mount talks to now).
pub fn read_uncached(path: &Path) -> io::Result<Vec<u8>> {
    let mut file = std::fs::File::open(path)?;
    // SAFETY: posix_fadvise only reads its arguments; the descriptor is open.
    let rc = unsafe { libc::posix_fadvise(file.as_raw_fd(), 0, 0, libc::POSIX_FADV_DONTNEED) };
    if rc != 0 {
        return Err(io::Error::from_raw_os_error(rc));
    }
    let mut data = Vec::new();
    file.read_to_end(&mut data)?;
    Ok(data)
}

/// A chunk file found in a chunkserver's data directory.
#[derive(Clone, Debug)]
pub struct ChunkFile {
    /// Which chunkserver (index in the cluster).
    pub server: usize,
    /// The chunk id, from the file name.
    pub id: u64,
    /// The version, from the file name.
    pub version: u32,
    /// The subdirectory name (`AA`).
    pub subdir: String,
    /// Full path.
    pub path: PathBuf,
}

/// Every chunk file on every chunkserver of `cluster`.
pub fn all_chunk_files(cluster: &elkfs_testkit::Cluster) -> Vec<ChunkFile> {
    (0..cluster.chunkserver_count())
        .flat_map(|i| {
            cluster
                .chunkserver_data_dirs(i)
                .iter()
                .flat_map(move |d| chunk_files(i, d))
                .collect::<Vec<_>>()
        })
        .collect()
}

/// Every `AA/chunk_<16 hex>_<8 hex>.elk` file under `dir`, for chunkserver `server`.
pub fn chunk_files(server: usize, dir: &Path) -> Vec<ChunkFile> {
    let mut out = Vec::new();
    let Ok(subdirs) = std::fs::read_dir(dir) else {
        return out;
    };
    for sub in subdirs.flatten() {
        let subdir = sub.file_name().to_string_lossy().to_string();
        let Ok(files) = std::fs::read_dir(sub.path()) else {
            continue;
        };
        for f in files.flatten() {
            let name = f.file_name().to_string_lossy().to_string();
            if let Some((id, version)) = parse_chunk_name(&name) {
                out.push(ChunkFile {
                    server,
                    id,
                    version,
                    subdir: subdir.clone(),
                    path: f.path(),
                });
            }
        }
    }
    out
}

/// Which pages (4 KiB) of `file`'s first `len` bytes the kernel's page cache holds.
pub fn resident_pages(file: &std::fs::File, len: u64) -> Vec<bool> {
    let pages = len.div_ceil(4096) as usize;
    // SAFETY: a read-only shared mapping of an open file, unmapped before returning; mincore
    // only reads the page tables for it and writes `pages` bytes into `residency`.
    unsafe {
        let map = libc::mmap(
            std::ptr::null_mut(),
            len as usize,
            libc::PROT_READ,
            libc::MAP_SHARED,
            file.as_raw_fd(),
            0,
        );
        assert_ne!(map, libc::MAP_FAILED, "{}", std::io::Error::last_os_error());
        let mut residency = vec![0u8; pages];
        let r = libc::mincore(map, len as usize, residency.as_mut_ptr());
        let error = std::io::Error::last_os_error();
        libc::munmap(map, len as usize);
        assert_eq!(r, 0, "mincore: {error}");
        residency.iter().map(|b| b & 1 == 1).collect()
    }
}

/// Parses `chunk_<16 uppercase hex>_<8 uppercase hex>.elk`.
pub fn parse_chunk_name(name: &str) -> Option<(u64, u32)> {
    let rest = name.strip_prefix("chunk_")?.strip_suffix(".elk")?;
    let (id, version) = rest.split_once('_')?;
    let upper_hex = |s: &str| {
        s.chars()
            .all(|c| c.is_ascii_digit() || ('A'..='F').contains(&c))
    };
    if id.len() != 16 || version.len() != 8 || !upper_hex(id) || !upper_hex(version) {
        return None;
    }
    Some((
        u64::from_str_radix(id, 16).ok()?,
        u32::from_str_radix(version, 16).ok()?,
    ))
}

/// The errno of an I/O error, or a panic naming what was expected.
pub fn errno_of<T: std::fmt::Debug>(result: io::Result<T>, what: &str) -> i32 {
    match result {
        Ok(v) => panic!("{what}: expected an error, got {v:?}"),
        Err(e) => e
            .raw_os_error()
            .unwrap_or_else(|| panic!("{what}: not an OS error: {e}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunk_names_parse_only_in_their_exact_form() {
        assert_eq!(
            parse_chunk_name("chunk_00000000000000CB_00000001.elk"),
            Some((0xCB, 1))
        );
        assert_eq!(
            parse_chunk_name("chunk_00000000000000cb_00000001.elk"),
            None
        );
        assert_eq!(parse_chunk_name("chunk_CB_00000001.elk"), None);
    }

    #[test]
    fn pseudo_random_data_is_reproducible_and_not_constant() {
        let a = pseudo_random(1000, 7);
        assert_eq!(a, pseudo_random(1000, 7));
        assert_ne!(a, pseudo_random(1000, 8));
        assert!(a.iter().any(|&b| b != a[0]));
    }
}
