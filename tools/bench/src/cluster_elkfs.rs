//! A local ElkFS cluster of the benchmark's shape: a master, three chunkservers and one mount, all
//! on 127.0.0.1 under one directory, each started with a ready file; dropping it unmounts and
//! stops everything. The master can be killed and started again on the same data and address,
//! as after a crash.

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus};
use std::time::{Duration, Instant, SystemTime};

use anyhow::Context;
use elkfs_proto::cluster_key::KEY_FILE;

use crate::interrupt::Role;
use crate::mountpoint::{self, MountProcess};
use crate::process::{self, Daemon, STOP_TIMEOUT};

/// What every benchmarked ElkFS master is configured with: copies start as soon as a chunk is
/// under goal, also in the first seconds after the master starts, as MooseFS's master is set
/// up (`REPLICATIONS_DELAY_INIT = 0`). With its default 15 s start-up window, a chunkserver
/// lost within 15 s of the start had its chunks copied only once the window ended.
pub const MASTER_CONFIG: &str = "replication_startup_delay_secs = 0\n";

/// How long each ElkFS process may take to write its ready file.
const READY_TIMEOUT: Duration = Duration::from_secs(30);
/// Chunkservers in the cluster (goal 2 is ElkFS's default).
pub const CHUNKSERVERS: usize = 3;
/// The nice value ElkFS's processes run at: the one MooseFS's daemons and mfsmount give
/// themselves by default, so neither system gets more CPU than the other.
pub const NICE: &str = "-19";

/// Where the ElkFS release binaries are.
#[derive(Clone, Debug)]
pub struct ElkBinaries {
    /// The directory holding `elkfs-master`, `elkfs-chunkserver`, `elkfs-mount` and `elkfs`.
    pub dir: PathBuf,
}

impl ElkBinaries {
    /// The names of the binaries the benchmark runs.
    pub const NAMES: [&'static str; 4] =
        ["elkfs-master", "elkfs-chunkserver", "elkfs-mount", "elkfs"];

    fn command(&self, name: &str) -> Command {
        let mut command = Command::new("nice");
        command.args(["-n", NICE]).arg(self.dir.join(name));
        command
    }
}

/// The master exited before becoming ready (for instance because it refuses a config key).
#[derive(Debug)]
pub struct MasterRefused {
    /// Its whole log.
    pub log: String,
    /// The last lines of it.
    pub log_tail: String,
}

impl fmt::Display for MasterRefused {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "the ElkFS master exited before becoming ready:\n{}",
            self.log_tail
        )
    }
}

impl std::error::Error for MasterRefused {}

struct Chunkserver {
    daemon: Daemon,
    data_dir: PathBuf,
}

/// How the master is started: kept so it can be started again after a kill.
struct MasterLaunch {
    bins: ElkBinaries,
    data_dir: PathBuf,
    ready_file: PathBuf,
    config_file: PathBuf,
    log: PathBuf,
}

impl MasterLaunch {
    /// The command for a master listening on `listen`.
    fn command(&self, listen: &str) -> Command {
        let mut command = self.bins.command("elkfs-master");
        command
            .arg("--data-dir")
            .arg(&self.data_dir)
            .args(["--listen", listen, "--ready-file"])
            .arg(&self.ready_file);
        command.arg("--config").arg(&self.config_file);
        command
    }
}

/// When a restarted master was spawned, on both clocks: the monotonic one to time it, the wall
/// clock to compare with the timestamps of its log.
#[derive(Clone, Copy, Debug)]
pub struct Spawned {
    /// The monotonic time of the spawn.
    pub at: Instant,
    /// The wall-clock time of the spawn.
    pub wall: SystemTime,
    /// Where its log started (the log is appended to), in bytes.
    pub log_offset: u64,
}

/// A running ElkFS cluster.
pub struct ElkCluster {
    // Field order is teardown order: the mount, the chunkservers, then the master.
    mount: Option<MountProcess>,
    chunkservers: Vec<Chunkserver>,
    master: Daemon,
    master_launch: MasterLaunch,
    master_addr: String,
    logs: PathBuf,
    /// What it takes to mount again after [`ElkCluster::unmount`].
    remount: Remount,
}

/// Where the ElkFS mount goes and with which binaries.
struct Remount {
    bins: ElkBinaries,
    mountpoint: PathBuf,
    ready_file: PathBuf,
}

impl ElkCluster {
    /// Starts the cluster under `root` (created); `master_config` is TOML added to the master's
    /// `--config` file (which always holds [`MASTER_CONFIG`]). A master that exits before it is
    /// ready yields [`MasterRefused`].
    pub fn start(
        bins: &ElkBinaries,
        root: &Path,
        master_config: Option<&str>,
    ) -> anyhow::Result<Self> {
        let logs = root.join("logs");
        let run = root.join("run");
        for dir in [&logs, &run, &root.join("master")] {
            std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        }

        let config_path = root.join("master.toml");
        let config = format!("{MASTER_CONFIG}{}", master_config.unwrap_or(""));
        std::fs::write(&config_path, config)
            .with_context(|| format!("writing {}", config_path.display()))?;
        let launch = MasterLaunch {
            bins: bins.clone(),
            data_dir: root.join("master"),
            ready_file: run.join("master.ready"),
            config_file: config_path,
            log: logs.join("master.log"),
        };
        let log = launch.log.clone();
        let mut master = Daemon::spawn(
            "ElkFS master",
            launch.command("127.0.0.1:0"),
            Role::Server,
            &log,
        )?;
        let addr = match master.wait_ready_file(&launch.ready_file, READY_TIMEOUT) {
            Ok(addr) => addr,
            Err(_) if master.pid().is_none() => {
                let log = std::fs::read(&log)
                    .map(|b| String::from_utf8_lossy(&b).into_owned())
                    .unwrap_or_default();
                return Err(MasterRefused {
                    log,
                    log_tail: master.log_tail(),
                }
                .into());
            }
            Err(e) => return Err(e),
        };

        let mut chunkservers = Vec::new();
        for i in 0..CHUNKSERVERS {
            let data_dir = root.join(format!("cs{i}"));
            std::fs::create_dir_all(&data_dir)
                .with_context(|| format!("creating {}", data_dir.display()))?;
            let mut command = bins.command("elkfs-chunkserver");
            command
                .args(["--master", &addr, "--listen", "127.0.0.1:0", "--data"])
                .arg(&data_dir)
                .arg("--ready-file")
                .arg(run.join(format!("cs{i}.ready")))
                .arg("--cluster-key")
                .arg(launch.data_dir.join(KEY_FILE));
            let log = logs.join(format!("cs{i}.log"));
            let name = format!("ElkFS chunkserver {i}");
            let daemon = Daemon::spawn(&name, command, Role::Server, &log)?;
            chunkservers.push(Chunkserver { daemon, data_dir });
        }
        let mut cluster = ElkCluster {
            mount: None,
            chunkservers,
            master,
            master_launch: launch,
            master_addr: addr.clone(),
            logs,
            remount: Remount {
                bins: bins.clone(),
                mountpoint: mountpoint::make_mountpoint(&root.join("mnt"))?,
                ready_file: run.join("mount.ready"),
            },
        };
        for (i, cs) in cluster.chunkservers.iter_mut().enumerate() {
            cs.daemon
                .wait_ready_file(&run.join(format!("cs{i}.ready")), READY_TIMEOUT)?;
        }

        let mnt = cluster.remount.mountpoint.clone();
        cluster.mount()?;
        // Trash off, as on the MooseFS cluster: an unlink deletes the file and its chunks.
        let cli = bins.dir.join("elkfs");
        crate::process::run_tool(
            &cli.to_string_lossy(),
            &["settrashtime", "-r", "0", &mnt.to_string_lossy()],
        )?;
        Ok(cluster)
    }

    /// Mounts the file system (again), unless it is mounted.
    pub fn mount(&mut self) -> anyhow::Result<()> {
        if self.mount.is_some() {
            return Ok(());
        }
        let Remount {
            bins,
            mountpoint,
            ready_file,
        } = &self.remount;
        let _ = std::fs::remove_file(ready_file);
        let mut command = bins.command("elkfs-mount");
        command
            .arg(format!("{}:/", self.master_addr))
            .arg(mountpoint)
            .arg("-f")
            .arg("--ready-file")
            .arg(ready_file);
        let log = self.logs.join("mount.log");
        let mut mount = MountProcess::spawn("ElkFS mount", command, mountpoint, &log, true)?;
        mount
            .daemon_mut()
            .wait_ready_file(ready_file, READY_TIMEOUT)?;
        self.mount = Some(mount);
        Ok(())
    }

    /// Unmounts the file system (stopping the mount process, whose problems are printed);
    /// the cluster goes on.
    pub fn unmount(&mut self) {
        self.mount = None;
    }

    /// The mountpoint.
    pub fn mount_path(&self) -> anyhow::Result<&Path> {
        self.mount
            .as_ref()
            .map(MountProcess::path)
            .context("the ElkFS mount is not running")
    }

    /// The master's process id.
    pub fn master_pid(&self) -> anyhow::Result<u32> {
        self.master.pid().context("the ElkFS master is not running")
    }

    /// The address the master listens on (`127.0.0.1:PORT`), the same across restarts.
    pub fn master_addr(&self) -> &str {
        &self.master_addr
    }

    /// The master's log (every start of it appends to the same file).
    pub fn master_log(&self) -> &Path {
        &self.master_launch.log
    }

    /// Kills the master with SIGKILL, as a crash would, and waits until it is gone.
    pub fn kill_master(&mut self) {
        self.master.kill();
    }

    /// Starts the master again on the same data directory and address, after
    /// [`ElkCluster::kill_master`]; returns at once, without waiting for it to be ready.
    pub fn restart_master(&mut self) -> anyhow::Result<Spawned> {
        if self.master.pid().is_some() {
            anyhow::bail!("the ElkFS master is still running; kill it first");
        }
        let ready = &self.master_launch.ready_file;
        match std::fs::remove_file(ready) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(e).with_context(|| format!("removing {}", ready.display())),
        }
        let log = &self.master_launch.log;
        let log_offset = std::fs::metadata(log).map_or(0, |m| m.len());
        let command = self.master_launch.command(&self.master_addr);
        let wall = SystemTime::now();
        let at = Instant::now();
        self.master = Daemon::spawn("ElkFS master", command, Role::Server, log)?;
        Ok(Spawned {
            at,
            wall,
            log_offset,
        })
    }

    /// If the master has exited, its status (the master is then reaped).
    pub fn master_exited(&mut self) -> Option<ExitStatus> {
        self.master.try_exit()
    }

    /// Waits up to `timeout` until a restarted master has written its ready file; fails with
    /// its log's tail if it exits first.
    pub fn wait_master_ready(&mut self, timeout: Duration) -> anyhow::Result<()> {
        let ready = self.master_launch.ready_file.clone();
        self.master.wait_ready_file(&ready, timeout).map(|_| ())
    }

    /// The last lines of the master's log.
    pub fn master_log_tail(&self) -> String {
        self.master.log_tail()
    }

    /// The directory holding the logs of every process.
    pub fn logs_dir(&self) -> &Path {
        &self.logs
    }

    /// Chunk ids (with their newest version) stored by each chunkserver still running; index `i`
    /// is `None` for a chunkserver that was killed.
    pub fn chunks_per_server(&mut self) -> anyhow::Result<Vec<Option<HashMap<u64, u32>>>> {
        let mut result = Vec::new();
        for cs in &mut self.chunkservers {
            if cs.daemon.try_exit().is_some() || cs.daemon.pid().is_none() {
                result.push(None);
            } else {
                result.push(Some(chunk_versions(&cs.data_dir)?));
            }
        }
        Ok(result)
    }

    /// The chunk copies the chunkservers still running hold, as (chunkserver, chunk id).
    pub fn chunk_copies(&mut self) -> anyhow::Result<HashSet<(usize, u64)>> {
        Ok(self
            .chunks_per_server()?
            .iter()
            .enumerate()
            .filter_map(|(i, chunks)| Some((i, chunks.as_ref()?)))
            .flat_map(|(i, chunks)| chunks.keys().map(move |&id| (i, id)))
            .collect())
    }

    /// Kills chunkserver `i` with SIGKILL, as a crash would.
    pub fn kill_chunkserver(&mut self, i: usize) -> anyhow::Result<()> {
        let cs = self
            .chunkservers
            .get_mut(i)
            .with_context(|| format!("there is no ElkFS chunkserver {i}"))?;
        cs.daemon.kill();
        Ok(())
    }

    /// Unmounts and stops everything (mount, chunkservers, master); returns what did not end
    /// cleanly.
    pub fn stop(&mut self) -> Vec<String> {
        let mut problems = Vec::new();
        if let Some(mut mount) = self.mount.take() {
            problems.extend(mount.unmount());
        }
        problems.extend(process::stop_all(
            self.chunkservers.iter_mut().map(|cs| &mut cs.daemon),
        ));
        problems.extend(self.master.stop(STOP_TIMEOUT).problem(self.master.name()));
        problems
    }
}

impl Drop for ElkCluster {
    fn drop(&mut self) {
        for problem in self.stop() {
            eprintln!("elkfs-bench: {problem}");
        }
    }
}

/// Parses an ElkFS chunk file name, `chunk_<16 hex id>_<8 hex version>.elk`.
pub fn parse_chunk_file_name(name: &str) -> Option<(u64, u32)> {
    let rest = name.strip_prefix("chunk_")?.strip_suffix(".elk")?;
    let (id, version) = rest.split_once('_')?;
    let hex = |s: &str, len: usize| {
        s.len() == len
            && s.bytes()
                .all(|b| b.is_ascii_digit() || (b'A'..=b'F').contains(&b))
    };
    if !hex(id, 16) || !hex(version, 8) {
        return None;
    }
    Some((
        u64::from_str_radix(id, 16).ok()?,
        u32::from_str_radix(version, 16).ok()?,
    ))
}

/// The chunks in one chunkserver data directory (`DIR/AA/chunk_*.elk`), id to newest version.
/// Valid on one machine only: it reads the chunkservers' directories directly, in place of a
/// status command ElkFS does not have yet.
pub fn chunk_versions(dir: &Path) -> anyhow::Result<HashMap<u64, u32>> {
    let mut chunks = HashMap::new();
    let entries = std::fs::read_dir(dir).with_context(|| format!("listing {}", dir.display()))?;
    for entry in entries {
        let entry = entry.with_context(|| format!("listing {}", dir.display()))?;
        if !entry.file_type().is_ok_and(|t| t.is_dir()) {
            continue;
        }
        let sub = entry.path();
        let files = match std::fs::read_dir(&sub) {
            Ok(files) => files,
            // A subdirectory may vanish while the chunkserver tidies up.
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => return Err(e).with_context(|| format!("listing {}", sub.display())),
        };
        for file in files.flatten() {
            if let Some((id, version)) = parse_chunk_file_name(&file.file_name().to_string_lossy())
            {
                let newest = chunks.entry(id).or_insert(version);
                *newest = (*newest).max(version);
            }
        }
    }
    Ok(chunks)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunk_file_names_parse_and_others_do_not() {
        assert_eq!(
            parse_chunk_file_name("chunk_00000000000000AB_0000002A.elk"),
            Some((0xAB, 0x2A))
        );
        for bad in [
            "chunk_00000000000000ab_0000002A.elk",
            "chunk_00000000000000AB_0000002A.mfs",
            "chunk_AB_0000002A.elk",
            "chunk_00000000000000AB-0000002A.elk",
            "chunk_00000000000000AB_0000002A.elk.tmp",
            "header.elk",
        ] {
            assert_eq!(parse_chunk_file_name(bad), None, "{bad}");
        }
    }

    #[test]
    fn chunk_scan_keeps_the_newest_version_per_id() {
        let dir = tempfile::tempdir().expect("temp dir");
        let sub = dir.path().join("AB");
        std::fs::create_dir(&sub).expect("subdir");
        for name in [
            "chunk_00000000000000AB_00000001.elk",
            "chunk_00000000000000AB_00000003.elk",
            "chunk_00000000000001AB_00000002.elk",
            "notes.txt",
        ] {
            std::fs::write(sub.join(name), b"").expect("file");
        }
        std::fs::write(dir.path().join("chunk_0000000000000001_00000001.elk"), b"").expect("file");
        let chunks = chunk_versions(dir.path()).expect("scan");
        assert_eq!(chunks, HashMap::from([(0xAB, 3), (0x1AB, 2)]));
    }
}
