//! A version bump the master told one copy of and died before logging: the next master bumps
//! the other copy and the client writes there; when the first copy's server comes back it must
//! count as stale, not as a current copy that happens to carry the same version number (that
//! made reads after master restarts return the bytes from before an acknowledged write).

use std::fs::OpenOptions;
use std::os::fd::IntoRawFd;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use elkfs_testkit::{Cluster, wait_until};

/// (id, version) of every chunk copy on chunkserver `server`.
fn copies(cluster_dirs: &[PathBuf], server: usize) -> Vec<(u64, u32)> {
    cluster_dirs
        .iter()
        .flat_map(|dir| elkfs_e2e::chunk_files(server, dir))
        .map(|c| (c.id, c.version))
        .collect()
}

fn signal(pid: u32, sig: libc::c_int) {
    // SAFETY: sending a signal to a daemon this test started.
    assert_eq!(
        unsafe { libc::kill(pid as libc::pid_t, sig) },
        0,
        "kill {pid}"
    );
}

fn write_at(path: &Path, offset: u64, data: &[u8]) -> std::io::Result<()> {
    let f = OpenOptions::new().write(true).open(path)?;
    f.write_all_at(data, offset)?;
    let fd = f.into_raw_fd();
    // SAFETY: `fd` was just taken out of the `File`.
    if unsafe { libc::close(fd) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

#[test]
fn a_copy_bumped_by_a_master_that_died_before_logging_it_is_stale_after_a_later_write() {
    let _one = super::master_crash::one_cluster_at_a_time();
    let mut cluster = Cluster::builder()
        .chunkservers(2)
        .mounts(1)
        .mount_options("master_timeout=60")
        .start();
    let path = cluster.mount_path(0).join("f");
    let old = elkfs_e2e::pseudo_random(300 * 1024, 1);
    std::fs::write(&path, &old).expect("first write");
    let (id, v) = copies(cluster.chunkserver_data_dirs(0), 0)
        .into_iter()
        .next()
        .expect("a copy on chunkserver 0");
    assert!(
        copies(cluster.chunkserver_data_dirs(1), 1).contains(&(id, v)),
        "both servers hold the chunk at version {v}"
    );

    // Chunkserver 1 hangs, so the master's bump for the next write waits for it after
    // chunkserver 0 has carried it out; the master dies right there, before logging it.
    let cs1 = cluster.chunkserver(1).pid().expect("chunkserver 1 runs");
    signal(cs1, libc::SIGSTOP);
    let new = elkfs_e2e::pseudo_random(100 * 1024, 2);
    let offset = 123_457u64;
    let writer = {
        let (path, new) = (path.clone(), new.clone());
        std::thread::spawn(move || write_at(&path, offset, &new))
    };
    let cs0_dirs = cluster.chunkserver_data_dirs(0).to_vec();
    wait_until(
        Duration::from_secs(20),
        "chunkserver 0 to carry out the bump",
        || {
            copies(&cs0_dirs, 0)
                .iter()
                .any(|&(i, version)| i == id && version > v)
        },
    );
    cluster.kill_master();
    // Chunkserver 1 never carries the bump out (it dies with the command unread), and
    // chunkserver 0 is away while the next master bumps chunkserver 1 for the retried write.
    cluster.kill_chunkserver(1);
    cluster.kill_chunkserver(0);
    cluster.start_master();
    cluster.start_chunkserver(1);
    writer
        .join()
        .expect("writer thread")
        .expect("the write is acknowledged");
    let mut expected = old.clone();
    expected[offset as usize..offset as usize + new.len()].copy_from_slice(&new);

    // Chunkserver 0 comes back with the unlogged bump; chunkserver 1, which has the write,
    // goes away: what is read must never be the bytes from before the write.
    cluster.start_chunkserver(0);
    cluster.stop_chunkserver(1);
    match elkfs_e2e::read_uncached(&path) {
        Ok(bytes) => assert!(
            bytes == expected,
            "read {} bytes from the copy that missed the acknowledged write (first difference \
             at {:?})",
            bytes.len(),
            bytes.iter().zip(&expected).position(|(a, b)| a != b)
        ),
        Err(e) => eprintln!("unlogged_bump: no current copy while chunkserver 1 is away: {e}"),
    }
    cluster.start_chunkserver(1);
    let bytes = elkfs_e2e::read_uncached(&path).expect("read with chunkserver 1 back");
    assert!(bytes == expected, "the acknowledged write reads back");
}
