//! A small read brings its whole 64 KiB block into the kernel's page cache (the mount stores the
//! rest of the block after its reply), and what it stores never hides a newer write, truncate
//! or another mount's change seen at an open.

use std::fs::{File, OpenOptions};
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::time::Duration;

use elkfs_e2e::resident_pages;
use elkfs_testkit::{Cluster, wait_until};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

const BLOCK: u64 = 64 * 1024;
const PAGE: u64 = 4096;

fn pattern(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i / 7) as u8 ^ seed.wrapping_mul(31))
        .collect()
}

#[test]
fn a_small_read_brings_its_whole_block_into_the_page_cache() {
    let cluster = Cluster::builder().chunkservers(2).start();
    let path = cluster.mount_path(0).join("blocks");
    let len = 4 * BLOCK + 5000;
    let data = pattern(len as usize, 1);
    std::fs::write(&path, &data).unwrap();

    // A handle open for writing (the writer above, until its close is done) stops reads
    // around; the file is opened again (which drops the kernel's pages) until one is stored.
    let block = (BLOCK / PAGE) as usize..(2 * BLOCK / PAGE) as usize;
    let mut page = vec![0u8; PAGE as usize];
    let mut file = File::open(&path).unwrap();
    wait_until(
        Duration::from_secs(10),
        "the rest of the block to be in the page cache",
        || {
            file = File::open(&path).unwrap();
            assert!(
                resident_pages(&file, len).iter().all(|r| !r),
                "an open starts with nothing cached"
            );
            file.read_exact_at(&mut page, BLOCK + 3 * PAGE).unwrap();
            assert_eq!(page, data[(BLOCK + 3 * PAGE) as usize..][..PAGE as usize]);
            std::thread::sleep(Duration::from_millis(20));
            resident_pages(&file, len)[block.clone()].iter().all(|r| *r)
        },
    );

    // The last block, short: stored up to the end of the file, and the length stays.
    file.read_exact_at(&mut page, 4 * BLOCK).unwrap();
    let tail = (4 * BLOCK / PAGE) as usize..len.div_ceil(PAGE) as usize;
    wait_until(
        Duration::from_secs(10),
        "the file's last block to be in the page cache",
        || resident_pages(&file, len)[tail.clone()].iter().all(|r| *r),
    );
    assert_eq!(file.metadata().unwrap().len(), len);

    // What the kernel now answers alone is the file's data.
    let mut back = vec![0u8; len as usize];
    file.read_exact_at(&mut back, 0).unwrap();
    assert!(back == data, "the cached blocks differ from the file");
}

#[test]
fn an_open_after_another_mount_wrote_reads_the_new_data_not_a_block_stored_before() {
    let cluster = Cluster::builder().chunkservers(2).mounts(2).start();
    let a = cluster.mount_path(0).join("shared");
    let b = cluster.mount_path(1).join("shared");
    let len = 16 * BLOCK;
    std::fs::write(&a, pattern(len as usize, 2)).unwrap();
    std::thread::sleep(Duration::from_secs(1));

    let mut stored = 0;
    for round in 0..200u64 {
        // A small read, then at once the other mount writes a page of the same block (the
        // length changes every other round) and this mount opens the file again.
        let block = round % 16 * BLOCK;
        let reader = File::open(&a).unwrap();
        let mut page = vec![0u8; PAGE as usize];
        reader.read_exact_at(&mut page, block).unwrap();
        let new = vec![round as u8 ^ 0x5a; PAGE as usize];
        let writer = OpenOptions::new().write(true).open(&b).unwrap();
        writer.write_all_at(&new, block + 5 * PAGE).unwrap();
        if round % 2 == 1 {
            writer.set_len(len + round).unwrap();
        }
        drop(writer);
        stored += usize::from(resident_pages(&reader, len)[(block / PAGE) as usize + 5]);
        drop(reader);

        let reader = File::open(&a).unwrap();
        reader.read_exact_at(&mut page, block + 5 * PAGE).unwrap();
        assert!(
            page == new,
            "round {round}: a page stored before the other mount's write was read after a new open"
        );
    }
    assert!(stored > 0, "no read around was stored");
}

/// A model of the file: its bytes.
struct Model(Vec<u8>);

fn check_read(file: &File, model: &Model, at: u64, what: &str) {
    let mut buf = vec![0u8; PAGE as usize];
    let n = file.read_at(&mut buf, at).unwrap();
    let expected = model.0.get(at as usize..).unwrap_or(&[]);
    let expected = &expected[..expected.len().min(PAGE as usize)];
    assert!(
        &buf[..n] == expected,
        "{what}: {n} bytes read at {at} differ from the {} expected (file length {})",
        expected.len(),
        model.0.len()
    );
}

#[test]
fn small_reads_mixed_with_writes_truncates_and_opens_on_one_mount_read_what_a_local_file_would() {
    let cluster = Cluster::builder().chunkservers(2).start();
    let path = cluster.mount_path(0).join("mixed");
    let mut model = Model(pattern((8 * BLOCK) as usize, 3));
    std::fs::write(&path, &model.0).unwrap();
    let mut rng = StdRng::seed_from_u64(0xe1cf5);
    let mut reader = File::open(&path).unwrap();

    for step in 0..4000 {
        let blocks = (model.0.len() as u64).div_ceil(BLOCK).max(1);
        let at = rng.random_range(0..blocks) * BLOCK + rng.random_range(0..16) * PAGE;
        match rng.random_range(0..10) {
            0..=4 => check_read(&reader, &model, at, &format!("step {step}, read")),
            5..=6 => {
                // Read, then at once write a neighbouring page of the same block and read it.
                check_read(
                    &reader,
                    &model,
                    at,
                    &format!("step {step}, read before a write"),
                );
                let page = at - at % BLOCK + rng.random_range(0..16) * PAGE;
                let bytes = vec![rng.random::<u8>(); PAGE as usize];
                let writer = OpenOptions::new().write(true).open(&path).unwrap();
                writer.write_all_at(&bytes, page).unwrap();
                drop(writer);
                let end = (page + PAGE) as usize;
                if model.0.len() < end {
                    model.0.resize(end, 0);
                }
                model.0[page as usize..end].copy_from_slice(&bytes);
                check_read(
                    &reader,
                    &model,
                    page,
                    &format!("step {step}, read after a write"),
                );
            }
            7..=8 => {
                // Read, then at once truncate by name (no handle open for writing).
                check_read(
                    &reader,
                    &model,
                    at,
                    &format!("step {step}, read before a truncate"),
                );
                let to = rng.random_range(0..=10 * BLOCK);
                truncate(&path, to);
                model.0.resize(to as usize, 0);
                let seen = std::fs::metadata(&path).unwrap().len();
                assert_eq!(seen, to, "step {step}: the length after a truncate");
                check_read(
                    &reader,
                    &model,
                    at,
                    &format!("step {step}, read after a truncate"),
                );
            }
            _ => reader = File::open(&path).unwrap(),
        }
    }
    assert_eq!(reader.metadata().unwrap().len(), model.0.len() as u64);
    let back = std::fs::read(&path).unwrap();
    assert!(back == model.0, "the file's contents at the end");
}

fn truncate(path: &Path, len: u64) {
    let c = std::ffi::CString::new(path.as_os_str().as_encoded_bytes()).unwrap();
    // SAFETY: a valid NUL-terminated path.
    let r = unsafe { libc::truncate(c.as_ptr(), len as libc::off_t) };
    assert_eq!(r, 0, "truncate: {}", std::io::Error::last_os_error());
}
