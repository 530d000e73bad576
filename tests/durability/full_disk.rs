//! The master's disk full or losing writes. Every change needs a changelog record, so on a full
//! disk changes are refused, with ENOSPC as a local file system would say (not EIO), while reads
//! and listings go on; once there is room again the master takes changes as before. Nothing it
//! acknowledged before, during or after is lost, as a SIGKILL and a restart afterwards show. On
//! a disk that lost writes, no fsync succeeds any more. A metalogger's full disk holds it back
//! until there is room.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use elkfs_e2e::{ThinDisk, Tmpfs, fill_up, pseudo_random};
use elkfs_testkit::{Cluster, wait_until};

/// Stops the master, copies its data directory into `dir` and starts it there.
fn move_master_to(cluster: &mut Cluster, dir: &Path) {
    cluster.stop_master();
    copy_dir(cluster.master().data_dir(), dir);
    cluster.set_master_data_dir(dir);
    cluster.start_master();
}

/// Creates the file at `path`, writes to it and fsyncs it.
fn write_and_fsync(path: &Path) -> std::io::Result<()> {
    let mut file = std::fs::File::create(path)?;
    file.write_all(b"maybe lost")?;
    file.sync_all()
}

/// Copies the contents of directory `from` into `to`, keeping modes and owners.
fn copy_dir(from: &Path, to: &Path) {
    let status = Command::new("cp")
        .arg("-a")
        .arg(from.join("."))
        .arg(to)
        .status()
        .expect("running cp");
    assert!(
        status.success(),
        "cp -a {} {}: {status}",
        from.display(),
        to.display()
    );
}

/// The ids of the chunks on the cluster's chunkservers' disks.
fn chunk_ids(cluster: &Cluster) -> Vec<u64> {
    elkfs_e2e::all_chunk_files(cluster)
        .iter()
        .map(|f| f.id)
        .collect()
}

/// What the test expects of one name in its directory.
#[derive(Clone)]
enum Entry {
    Dir,
    /// A file and its data.
    File(Vec<u8>),
    /// A file created whose write was refused: empty, or the data if the write was done
    /// after all.
    Unsure(Vec<u8>),
}

/// What the test expects in its directory, by name.
type Model = BTreeMap<String, Entry>;

/// One change in `dir`, the `i`-th: a file created and written, a directory made, or a file
/// renamed. Applied to `model` as far as the mount says it was done; the error otherwise.
fn change(dir: &Path, i: u64, model: &mut Model) -> std::io::Result<()> {
    match i % 3 {
        0 => {
            let name = format!("file{i}");
            let data = pseudo_random(10 * 1024, i + 1);
            let mut file = std::fs::File::create(dir.join(&name))?;
            model.insert(name.clone(), Entry::Unsure(data.clone()));
            file.write_all(&data)?;
            drop(file);
            model.insert(name, Entry::File(data));
        }
        1 => {
            let name = format!("dir{i}");
            std::fs::create_dir(dir.join(&name))?;
            model.insert(name, Entry::Dir);
        }
        _ => {
            let from = model
                .iter()
                .rev()
                .find(|(_, entry)| !matches!(entry, Entry::Dir))
                .map(|(name, _)| name.clone())
                .expect("the first change creates a file");
            let to = format!("renamed{i}");
            std::fs::rename(dir.join(&from), dir.join(&to))?;
            let entry = model.remove(&from).expect("in the model");
            model.insert(to, entry);
        }
    }
    Ok(())
}

/// Checks that `dir` holds exactly what `model` says, every file with its data.
fn check(dir: &Path, model: &Model, when: &str) {
    let mut listed: Vec<String> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("{when}: listing: {e}"))
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    listed.sort();
    let expected: Vec<String> = model.keys().cloned().collect();
    assert_eq!(listed, expected, "{when}: the listing");
    for (name, entry) in model {
        let path = dir.join(name);
        let read =
            || std::fs::read(&path).unwrap_or_else(|e| panic!("{when}: reading {path:?}: {e}"));
        match entry {
            Entry::Dir => assert!(path.is_dir(), "{when}: {path:?} is not a directory"),
            Entry::File(data) => assert!(
                read() == *data,
                "{when}: {path:?} reads back different data"
            ),
            Entry::Unsure(data) => {
                let read = read();
                assert!(
                    read.is_empty() || read == *data,
                    "{when}: {path:?}, whose write was refused, holds {} other bytes",
                    read.len()
                );
            }
        }
    }
}

#[test]
fn a_master_whose_disk_is_full_refuses_changes_with_enospc_and_loses_none() {
    let _one = super::master_crash::one_cluster_at_a_time();
    // Declared before the cluster, so the master has stopped when it is unmounted.
    let disk = Tmpfs::mount(32);
    // Purges at once after the restart onto the small disk.
    let config = tempfile::NamedTempFile::new().expect("a config file");
    std::fs::write(config.path(), "reopen_grace_secs = 0\n").expect("writing the config");
    let mut cluster = Cluster::builder()
        .chunkservers(1)
        .mounts(1)
        .master_args([std::ffi::OsStr::new("--config"), config.path().as_os_str()])
        .allow_log_errors("the master's disk is full")
        .allow_log_errors("metadata database failed")
        .allow_log_errors("fsyncing the changelog failed")
        .start();
    move_master_to(&mut cluster, disk.path());
    let dir = cluster.mount_path(0).join("dir");
    std::fs::create_dir(&dir).expect("mkdir");
    // A file deleted while open, to be closed when its purge cannot be logged.
    let m = cluster.mount_path(0).to_path_buf();
    cluster.run_cli_ok(&["settrashtime", "0", m.to_str().expect("utf-8")]);
    let chunks_before = chunk_ids(&cluster);
    std::fs::write(m.join("doomed"), vec![1u8; 100_000]).expect("write");
    let doomed_chunks: Vec<u64> = chunk_ids(&cluster)
        .into_iter()
        .filter(|c| !chunks_before.contains(c))
        .collect();
    assert_eq!(doomed_chunks.len(), 1, "the doomed file's chunk");
    let doomed = std::fs::File::open(m.join("doomed")).expect("open");
    std::fs::remove_file(m.join("doomed")).expect("unlink");
    let mut model = Model::new();
    for i in 0..300 {
        change(&dir, i, &mut model).unwrap_or_else(|e| panic!("change {i} with room: {e}"));
    }

    // The changelog's last page may still take a few records once the disk is full; after
    // that every change is refused.
    let filler = disk.path().join("filler");
    fill_up(&filler);
    let mut refused_in_a_row = 0;
    let mut i = 300;
    while refused_in_a_row < 6 {
        assert!(
            i < 1300,
            "changes still succeed with the master's disk full"
        );
        if let Err(e) = change(&dir, i, &mut model) {
            assert_eq!(
                e.raw_os_error(),
                Some(libc::ENOSPC),
                "change {i} with the master's disk full: {e}"
            );
            refused_in_a_row += 1;
        } else {
            refused_in_a_row = 0;
        }
        i += 1;
    }
    // Its last close: the purge cannot be logged now, and must be made later.
    drop(doomed);
    // Long enough for the master to try, and fail, to purge the file and to apply its held
    // changes to sled, and for sled to try to flush (every 500 ms).
    std::thread::sleep(Duration::from_millis(1500));
    check(&dir, &model, "with the master's disk full");
    // A purge's record is small: it may still have fitted where creates no longer did.
    let purged_while_full = !chunk_ids(&cluster).contains(&doomed_chunks[0]);
    if purged_while_full {
        eprintln!("the purge fitted on the full disk; its retry is not tested in this run");
    }

    std::fs::remove_file(&filler).expect("removing the filler");
    // The master takes changes again at once. (Had sled met the full disk too, it would write
    // nothing more until a restart; the master would go on holding changes in memory, logged,
    // for 4 096 keys, far more than this test makes.)
    wait_until(
        Duration::from_secs(10),
        "a change succeeds with room again",
        || change(&dir, i, &mut model).is_ok(),
    );
    for i in i + 1..i + 31 {
        change(&dir, i, &mut model).unwrap_or_else(|e| panic!("change {i} with room again: {e}"));
    }
    check(&dir, &model, "with room again");
    // The purge that could not be made is made later (the purge worker tries every 5 s).
    wait_until(
        Duration::from_secs(15),
        "the doomed file is purged and its chunk deleted",
        || !chunk_ids(&cluster).contains(&doomed_chunks[0]),
    );

    cluster.kill_master();
    cluster.start_master();
    check(&dir, &model, "after a SIGKILL of the master");
}

/// A disk under the master that takes the changelog's writes and then cannot store them (a thin
/// volume out of backing space). The fsync that finds out fails, and so must every later one:
/// the kernel reports a lost write to one fsync only, and a client told its file is on disk
/// after that could lose it to the next power cut.
#[test]
fn after_the_masters_disk_lost_writes_no_fsync_in_the_mount_succeeds() {
    let _one = super::master_crash::one_cluster_at_a_time();
    // 64 MiB to store what claims to be 512.
    let disk = ThinDisk::new(64, 512);
    let mut cluster = Cluster::builder()
        .chunkservers(1)
        .mounts(1)
        .allow_log_errors("fsyncing the changelog")
        .allow_log_errors("metadata database")
        .allow_log_errors("cannot apply a logged change")
        .allow_log_errors("metadata store failed")
        .allow_log_errors("the master's disk is full")
        .allow_log_errors("cannot fsync the changelog")
        .start();
    move_master_to(&mut cluster, disk.path());
    let m = cluster.mount_path(0).to_path_buf();
    let before = m.join("before");
    std::fs::write(&before, b"on disk").expect("write");
    std::fs::File::open(&before)
        .and_then(|f| f.sync_all())
        .expect("fsync while the disk works");

    // More than the backing store holds, written back: from here on writes to the disk fail.
    let filler = disk.path().join("filler");
    let _ = std::fs::write(&filler, vec![0x5Au8; 96 << 20]);
    let _ = std::fs::File::open(&filler).and_then(|f| f.sync_all());

    // The changelog's last block was stored while the disk had room: rewriting it succeeds. The
    // records that reach a new block find the disk full.
    let failed_at = (0..400).find(|i| write_and_fsync(&m.join(format!("after{i}"))).is_err());
    assert!(
        failed_at.is_some(),
        "every fsync succeeded on a disk that lost writes"
    );
    // With room again, writes reach the disk, but those lost stay lost: the kernel told one
    // fsync, and a later one would succeed.
    disk.give_room(512);
    for i in 0..5 {
        assert!(
            write_and_fsync(&m.join(format!("with-room{i}"))).is_err(),
            "change {i} after the room came back was fsynced, after an fsync of the changelog \
             failed at change {failed_at:?}"
        );
    }
    assert!(
        cluster.master().pid().is_some(),
        "the master is still running"
    );
    let status = cluster.run_cli_ok(&["status"]);
    assert!(
        status.contains("every change is refused until the master restarts"),
        "elkfs status does not say the master refuses changes:\n{status}"
    );
    // It cannot stop cleanly (its last fsync fails, and it exits 1 saying so); nor would a
    // restart on this disk help.
    cluster.kill_master();
}

/// The metadata version the master is at and the one each connected metalogger holds
/// (`elkfs status --json`).
fn versions(cluster: &Cluster) -> (u64, Vec<u64>) {
    let status: serde_json::Value =
        serde_json::from_str(&cluster.run_cli_ok(&["status", "--json"])).expect("status JSON");
    let master = status["metadata_version"]
        .as_u64()
        .expect("metadata_version");
    let metaloggers = status["metaloggers"]
        .as_array()
        .expect("metaloggers")
        .iter()
        .map(|m| m["version"].as_u64().expect("version"))
        .collect();
    (master, metaloggers)
}

/// A metalogger whose disk fills up cannot store the master's records: it says so (not that it
/// lost the master), and once there is room it catches up by itself.
#[test]
fn a_metalogger_whose_disk_fills_up_catches_up_once_there_is_room() {
    let _one = super::master_crash::one_cluster_at_a_time();
    let disk = Tmpfs::mount(16);
    let mut cluster = Cluster::builder()
        .chunkservers(1)
        .mounts(1)
        .allow_log_errors("cannot update the metadata copy")
        .start();
    let ml = cluster.add_metalogger();
    cluster.stop_metalogger(ml);
    copy_dir(cluster.metalogger(ml).data_dir(), disk.path());
    cluster.set_metalogger_data_dir(ml, disk.path());
    cluster.start_metalogger(ml);
    let m = cluster.mount_path(0).to_path_buf();

    let filler = disk.path().join("filler");
    fill_up(&filler);
    for i in 0..300 {
        std::fs::write(m.join(format!("f{i}")), b"x").expect("the master has room");
    }
    wait_until(
        Duration::from_secs(20),
        "the metalogger says it cannot update its copy",
        || {
            cluster
                .log_of(elkfs_testkit::Process::Metalogger(ml))
                .contains("cannot update the metadata copy")
        },
    );
    let log = cluster.log_of(elkfs_testkit::Process::Metalogger(ml));
    assert!(
        !log.contains("lost the master"),
        "a full disk is logged as a lost master:\n{log}"
    );
    let (master, behind) = versions(&cluster);
    assert!(
        behind.iter().all(|&v| v < master),
        "the metalogger holds version {behind:?} of {master} on a full disk"
    );

    std::fs::remove_file(&filler).expect("removing the filler");
    wait_until(
        Duration::from_secs(20),
        "the metalogger catches up with the master",
        || {
            let (master, metaloggers) = versions(&cluster);
            metaloggers.len() == 1 && metaloggers[0] >= master
        },
    );
}
