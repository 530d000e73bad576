//! A disk that accepts writes into the page cache and then cannot store them (a thin or
//! overcommitted volume that ran out of backing space): the chunkserver's sync pass finds the
//! lost write, reports the copy damaged, and the master replaces it, so every file keeps its
//! goal of good copies. Without the pass, the kernel reports such a loss to one fsync only and
//! the copy silently holds old or no data on disk.

use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use elkfs_testkit::{Cluster, Process};

use crate::support::{
    Admin, Configs, MIB, QUICK_MASTER, Tmpfs, check_copies, data, eventually, write_file,
};

/// What a chunkserver logs when a copy's data could not be written to its disk.
const LOST: &str = "a chunk file could not be written to disk";
/// What it logs when it takes the data directory out of use for new chunks.
const DIR_LOST: &str = "a data directory lost writes";

/// An ext4 file system of `claimed_mib` on a loop device whose backing file lives on a tmpfs of
/// `backing_mib`: it takes writes until its dirty pages go to the loop device and the tmpfs is
/// full. Unmounted and detached when dropped.
struct ThinDisk {
    device: String,
    mount: tempfile::TempDir,
    _backing: Tmpfs,
}

fn run(program: &str, args: &[&str]) -> String {
    let out = Command::new(program)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("running {program} (util-linux, e2fsprogs): {e}"));
    assert!(
        out.status.success(),
        "{program} {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

impl ThinDisk {
    fn new(backing_mib: u64, claimed_mib: u64) -> ThinDisk {
        let backing = Tmpfs::mount(backing_mib);
        let image = backing.path().join("disk.img");
        std::fs::File::create(&image)
            .and_then(|f| f.set_len(claimed_mib * MIB as u64))
            .expect("making the sparse disk image");
        let image = image.to_str().expect("utf-8 path");
        let device = run("losetup", &["--find", "--show", image]);
        let mount = tempfile::Builder::new()
            .prefix("elkfs-thin-")
            .tempdir()
            .expect("a mount point");
        let disk = ThinDisk {
            device,
            mount,
            _backing: backing,
        };
        // Every block of its own metadata written now (no discard, no lazy init), so the file
        // system can still work when the data no longer fits behind it.
        run(
            "mkfs.ext4",
            &[
                "-q",
                "-F",
                "-E",
                "nodiscard,lazy_itable_init=0,lazy_journal_init=0",
                &disk.device,
            ],
        );
        run(
            "mount",
            &[&disk.device, disk.path().to_str().expect("utf-8 path")],
        );
        disk
    }

    fn path(&self) -> &Path {
        self.mount.path()
    }
}

impl Drop for ThinDisk {
    fn drop(&mut self) {
        let mounted = self.mount.path().to_string_lossy().to_string();
        for (program, args) in [
            ("umount", vec!["--lazy", mounted.as_str()]),
            ("losetup", vec!["--detach", self.device.as_str()]),
        ] {
            match Command::new(program).args(&args).output() {
                Ok(out) if out.status.success() => {}
                Ok(out) => eprintln!(
                    "{program} {args:?}: {}",
                    String::from_utf8_lossy(&out.stderr)
                ),
                Err(e) => eprintln!("{program} {args:?}: {e}"),
            }
        }
    }
}

type Files = Vec<(std::path::PathBuf, Arc<[u8]>)>;

/// Three servers, the first on a thin disk that can store about 40 MiB and claims 512, their
/// sync passes `sync_interval_secs` apart, and three files of 40 MiB to write through the mount.
fn thin_cluster(sync_interval_secs: u64) -> (ThinDisk, Cluster, usize, Files) {
    let thin = ThinDisk::new(64, 512);
    let configs = Configs::new(
        QUICK_MASTER,
        &format!("sync_interval_secs = {sync_interval_secs}\n"),
    );
    let mut cluster = configs.builder().chunkservers(0).start();
    cluster.allow_log_errors(LOST);
    cluster.allow_log_errors(DIR_LOST);
    // Nearly empty, so the first choice for a copy of every new chunk.
    let thin_server = cluster.add_chunkserver_on([thin.path()]);
    cluster.add_chunkserver();
    cluster.add_chunkserver();
    let mnt = cluster.mount_path(0).to_path_buf();
    let files = (0..3)
        .map(|i| (mnt.join(format!("f{i}")), data(40 * MIB, 60 + i)))
        .collect();
    (thin, cluster, thin_server, files)
}

/// Waits for the thin disk's server's sync pass to find a lost write.
fn found_by_the_sync_pass(cluster: &Cluster, thin_server: usize) {
    eventually(
        Duration::from_secs(30),
        "the thin disk's server finds a lost write",
        || match cluster
            .log_of(Process::Chunkserver(thin_server))
            .contains(LOST)
        {
            true => Ok(()),
            false => Err("nothing logged yet".into()),
        },
    );
}

/// Waits for every chunk to be back at 2 good copies, then checks the copies as their disks
/// hold them.
fn replaced(cluster: &Cluster, files: &Files) {
    let admin = Admin::connect(cluster);
    eventually(
        Duration::from_secs(90),
        "every chunk has 2 good copies again",
        || check_copies(cluster, &admin, &[0, 1, 2], files, 2),
    );
    // The copies are compared with what their disks hold, not with pages the kernel kept: a
    // lost page stays cached, clean and right, until something needs the memory.
    std::fs::write("/proc/sys/vm/drop_caches", "1\n").expect("dropping the page cache");
    check_copies(cluster, &admin, &[0, 1, 2], files, 2)
        .unwrap_or_else(|e| panic!("read from the disks: {e}"));
    for (path, bytes) in files {
        assert!(
            std::fs::read(path).expect("read back") == **bytes,
            "{} reads back wrong",
            path.display()
        );
    }
}

#[test]
fn copies_a_disk_could_not_store_are_reported_and_replaced() {
    // Declared first, so its chunkserver has stopped when the disk goes.
    let (_thin, cluster, thin_server, files) = thin_cluster(1);
    // No fsync, as `cp` writes: only the chunkserver's own sync pass can find the loss.
    for (path, bytes) in &files {
        std::fs::write(path, bytes).unwrap_or_else(|e| panic!("writing {}: {e}", path.display()));
    }
    found_by_the_sync_pass(&cluster, thin_server);
    replaced(&cluster, &files);
    // The disk lost writes: it takes no new chunks, and says it is full.
    let thin_addr = cluster.chunkserver(thin_server).addr();
    let admin = Admin::connect(&cluster);
    eventually(
        Duration::from_secs(10),
        "the thin disk's server reports no space",
        || match admin.servers().iter().find(|s| s.addr == thin_addr) {
            Some(s) if s.available == 0 => Ok(()),
            Some(s) => Err(format!("it reports {} bytes available", s.available)),
            None => Err("the master does not list it".into()),
        },
    );
}

#[test]
fn a_lost_write_met_by_a_client_fsync_is_reported_and_replaced_too() {
    // No sync pass after the first, at the start: the clients' fsyncs meet the loss first.
    let (_thin, cluster, thin_server, files) = thin_cluster(3600);
    for (path, bytes) in &files {
        // EIO, or success once the master has the copy down as damaged: the fsync then covers
        // the copies left, which hold the data.
        match write_file(path, bytes) {
            Ok(()) => {}
            Err(e) if e.raw_os_error() == Some(libc::EIO) => {}
            Err(e) => panic!("writing {}: {e}", path.display()),
        }
    }
    let log = cluster.log_of(Process::Chunkserver(thin_server));
    assert!(
        log.contains("sync failed") && !log.contains(LOST),
        "a client's fsync, and not the sync pass, was to meet the loss; the thin server's log:\n{log}"
    );
    replaced(&cluster, &files);
}
