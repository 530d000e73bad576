//! A small file opened for reading is read from a chunkserver as soon as the master answers the
//! open, and the handle's first read is answered from that: never with data older than a
//! change made on this mount after the open.

use std::fs::{File, OpenOptions};
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::mpsc;
use std::time::Duration;

use elkfs_e2e::Frozen;
use elkfs_testkit::Cluster;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

const BLOCK: u64 = 64 * 1024;

fn pattern(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i / 11) as u8 ^ seed.wrapping_mul(29))
        .collect()
}

#[test]
fn a_small_file_opened_before_its_chunkservers_stopped_answering_is_read_from_what_its_open_fetched()
 {
    let cluster = Cluster::builder().chunkservers(2).start();
    let path = cluster.mount_path(0).join("small");
    let data = pattern(5000, 1);
    std::fs::write(&path, &data).unwrap();

    // Each attempt gives the read at open half a second to arrive; on a machine too busy for
    // that, the chunkservers are let go again and the attempt repeated.
    for _ in 0..5 {
        let file = File::open(&path).unwrap();
        std::thread::sleep(Duration::from_millis(500));
        let frozen: Vec<Frozen> = (0..2)
            .map(|i| Frozen::freeze(cluster.chunkserver(i).pid().expect("running")))
            .collect();
        let (done, read) = mpsc::channel();
        let reader = std::thread::spawn(move || {
            let mut buf = vec![0u8; 8192];
            let n = file.read_at(&mut buf, 0).unwrap();
            buf.truncate(n);
            let _ = done.send(buf);
        });
        let answered = read.recv_timeout(Duration::from_secs(3));
        drop(frozen);
        reader.join().unwrap();
        if let Ok(bytes) = answered {
            assert!(bytes == data, "the first read returned other data");
            return;
        }
    }
    panic!("the first read after an open waited for the chunkservers every time");
}

/// What happens between the open of the reader and its first read.
#[derive(Debug, Clone, Copy)]
enum Between {
    Nothing,
    WriteAndClose,
    TruncateByName,
    WriteKeptOpen,
    WriteThroughAnEarlierHandle,
}

#[test]
fn a_first_read_after_changes_made_on_the_mount_since_the_open_reads_what_a_local_file_would() {
    let cluster = Cluster::builder().chunkservers(2).start();
    let path = cluster.mount_path(0).join("changing");
    let mut model = pattern(40_000, 2);
    std::fs::write(&path, &model).unwrap();
    let mut rng = StdRng::seed_from_u64(0xea21);

    for step in 0..600 {
        let between = match rng.random_range(0..5) {
            0 => Between::Nothing,
            1 => Between::WriteAndClose,
            2 => Between::TruncateByName,
            3 => Between::WriteKeptOpen,
            _ => Between::WriteThroughAnEarlierHandle,
        };
        let earlier = match between {
            Between::WriteThroughAnEarlierHandle => {
                Some(OpenOptions::new().write(true).open(&path).unwrap())
            }
            _ => None,
        };
        let reader = File::open(&path).unwrap();
        // Lengths around one block: at or below it the open reads the file, above it not.
        let mut writer_kept = None;
        match between {
            Between::Nothing => {}
            Between::WriteAndClose
            | Between::WriteKeptOpen
            | Between::WriteThroughAnEarlierHandle => {
                let at = rng.random_range(0..BLOCK + 4096);
                let bytes = vec![rng.random::<u8>(); rng.random_range(1..6000)];
                let writer = match earlier {
                    Some(earlier) => earlier,
                    None => OpenOptions::new().write(true).open(&path).unwrap(),
                };
                writer.write_all_at(&bytes, at).unwrap();
                let end = at as usize + bytes.len();
                if model.len() < end {
                    model.resize(end, 0);
                }
                model[at as usize..end].copy_from_slice(&bytes);
                if let Between::WriteKeptOpen = between {
                    writer_kept = Some(writer);
                }
            }
            Between::TruncateByName => {
                let to = rng.random_range(0..=BLOCK + 4096);
                truncate(&path, to);
                model.resize(to as usize, 0);
            }
        }
        let at = rng.random_range(0..model.len() as u64 + 4096) / 4096 * 4096;
        let mut buf = vec![0u8; rng.random_range(1..=3) * 4096];
        let n = reader.read_at(&mut buf, at).unwrap();
        let expected = model.get(at as usize..).unwrap_or(&[]);
        let expected = &expected[..expected.len().min(buf.len())];
        assert!(
            &buf[..n] == expected,
            "step {step}, {between:?}: {n} bytes read at {at} differ from the {} expected \
             (file length {})",
            expected.len(),
            model.len()
        );
        drop(writer_kept);
        drop(reader);
        // The kernel tells the mount of a close after it returns; an open while a handle of the
        // file is still open here makes no read at open, so give the close a moment.
        std::thread::sleep(Duration::from_millis(10));
    }
    assert!(
        std::fs::read(&path).unwrap() == model,
        "the file at the end"
    );
}

fn truncate(path: &Path, len: u64) {
    let c = std::ffi::CString::new(path.as_os_str().as_encoded_bytes()).unwrap();
    // SAFETY: a valid NUL-terminated path.
    let r = unsafe { libc::truncate(c.as_ptr(), len as libc::off_t) };
    assert_eq!(r, 0, "truncate: {}", std::io::Error::last_os_error());
}

#[test]
fn a_reader_opened_after_another_mounts_write_reads_it_although_an_earlier_reader_read_at_its_open()
{
    let cluster = Cluster::builder().chunkservers(2).mounts(2).start();
    let here = cluster.mount_path(0).join("shared");
    let there = cluster.mount_path(1).join("shared");
    std::fs::write(&there, pattern(6000, 0)).unwrap();
    for round in 1..=30u8 {
        let earlier = File::open(&here).unwrap();
        // Its read at open has the data from before the write below.
        std::thread::sleep(Duration::from_millis(100));
        let new = pattern(6000, round);
        OpenOptions::new()
            .write(true)
            .open(&there)
            .unwrap()
            .write_all_at(&new, 0)
            .unwrap();
        let later = File::open(&here).unwrap();
        // Whatever the earlier reader gets (close-to-open owes it either), its pages are the
        // later reader's too.
        let mut buf = vec![0u8; 8192];
        earlier.read_at(&mut buf, 0).unwrap();
        let n = later.read_at(&mut buf, 0).unwrap();
        assert!(
            buf[..n] == new[..],
            "round {round}: a reader opened after the other mount's write read older data"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}
