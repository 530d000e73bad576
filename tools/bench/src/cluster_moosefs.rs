//! A local MooseFS 3 cluster of the same shape as the ElkFS one: a master and three chunkservers
//! on loopback, data under one directory on the same disk, goal 2, trash off, mounted twice (the
//! default cache mode and `mfscachemode=DIRECT`). Dropping it unmounts and stops everything.
//!
//! MooseFS refuses chunkservers whose address is in 127.0.0.0/8, so the master remaps 127.0.0.1 to
//! 0.0.0.0 (`REMAP_*`) and the chunkservers connect to 0.0.0.0, which Linux routes to the host.

use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use anyhow::{Context, bail};

use crate::interrupt::Role;
use crate::mountpoint::{self, MountProcess};
use crate::process::{self, Daemon, STOP_TIMEOUT};

/// Chunkservers in the cluster.
pub const CHUNKSERVERS: usize = 3;
/// Where the Debian package keeps the empty metadata file a new master starts from.
const EMPTY_METADATA: &str = "/var/lib/mfs/metadata.mfs.empty";
/// How long the master and the chunkservers may take to come up.
const START_TIMEOUT: Duration = Duration::from_secs(60);

/// The TCP ports of one cluster, all on 127.0.0.1.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Ports {
    /// Master, for metaloggers.
    pub metalogger: u16,
    /// Master, for chunkservers.
    pub chunkserver: u16,
    /// Master, for clients (mounts, tools).
    pub client: u16,
    /// Each chunkserver's data port.
    pub data: [u16; CHUNKSERVERS],
}

impl Ports {
    /// Free ports, picked by binding to port 0 (all at once, so they differ) and releasing them.
    pub fn pick() -> anyhow::Result<Self> {
        let listeners = (0..3 + CHUNKSERVERS)
            .map(|_| TcpListener::bind("127.0.0.1:0"))
            .collect::<Result<Vec<_>, _>>()
            .context("picking free ports on 127.0.0.1")?;
        let ports = listeners
            .iter()
            .map(|l| l.local_addr().map(|a| a.port()))
            .collect::<Result<Vec<_>, _>>()
            .context("reading a picked port")?;
        Ok(Ports {
            metalogger: ports[0],
            chunkserver: ports[1],
            client: ports[2],
            data: [ports[3], ports[4], ports[5]],
        })
    }
}

/// `mfsmaster.cfg` for a master keeping its data in `data` with `exports` and `topology` files.
pub fn master_config(data: &Path, exports: &Path, topology: &Path, ports: &Ports) -> String {
    format!(
        "# Written by elkfs-bench.\n\
         WORKING_USER = root\n\
         WORKING_GROUP = root\n\
         DATA_PATH = {data}\n\
         EXPORTS_FILENAME = {exports}\n\
         TOPOLOGY_FILENAME = {topology}\n\
         MATOML_LISTEN_HOST = 127.0.0.1\n\
         MATOML_LISTEN_PORT = {ml}\n\
         MATOCS_LISTEN_HOST = 127.0.0.1\n\
         MATOCS_LISTEN_PORT = {cs}\n\
         MATOCL_LISTEN_HOST = 127.0.0.1\n\
         MATOCL_LISTEN_PORT = {cl}\n\
         REMAP_BITS = 32\n\
         REMAP_SOURCE_IP_CLASS = 127.0.0.1\n\
         REMAP_DESTINATION_IP_CLASS = 0.0.0.0\n\
         # Replicate as soon as a chunk is under goal, also in the first minute after start.\n\
         REPLICATIONS_DELAY_INIT = 0\n",
        data = data.display(),
        exports = exports.display(),
        topology = topology.display(),
        ml = ports.metalogger,
        cs = ports.chunkserver,
        cl = ports.client,
    )
}

/// `mfschunkserver.cfg` for chunkserver `i`, keeping its state in `data` and its chunks in the
/// folders listed in `hdd_conf`.
pub fn chunkserver_config(i: usize, data: &Path, hdd_conf: &Path, ports: &Ports) -> String {
    format!(
        "# Written by elkfs-bench.\n\
         WORKING_USER = root\n\
         WORKING_GROUP = root\n\
         DATA_PATH = {data}\n\
         HDD_CONF_FILENAME = {hdd}\n\
         MASTER_HOST = 0.0.0.0\n\
         MASTER_PORT = {master}\n\
         BIND_HOST = 127.0.0.1\n\
         CSSERV_LISTEN_HOST = 127.0.0.1\n\
         CSSERV_LISTEN_PORT = {port}\n",
        data = data.display(),
        hdd = hdd_conf.display(),
        master = ports.chunkserver,
        port = ports.data[i],
    )
}

/// The chunkservers `mfscli -SCS` lists: (data port, total space in bytes).
pub fn parse_chunkservers(mfscli: &str) -> Vec<(u16, u64)> {
    mfscli
        .lines()
        .filter_map(|line| {
            let fields: Vec<&str> = line.split('\t').collect();
            if fields.first()?.trim() != "chunk servers:" {
                return None;
            }
            let port = fields.get(2)?.trim().parse().ok()?;
            let total = fields.get(10)?.trim().parse().ok()?;
            Some((port, total))
        })
        .collect()
}

/// One copy of a chunk, as `mfsfileinfo` lists it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Copy {
    /// The data port of the chunkserver holding it.
    pub port: u16,
    /// Whether its status is `VALID`.
    pub valid: bool,
}

/// The copies of each chunk of a file, from `mfsfileinfo` output:
///
/// ```text
///     chunk 0: 0000000000000FB1_00000001 / (id:4017 ver:1)
///         copy 1: 0.0.0.0:39409 (status:VALID)
/// ```
pub fn parse_fileinfo(text: &str) -> Vec<Vec<Copy>> {
    let mut chunks: Vec<Vec<Copy>> = Vec::new();
    for line in text.lines().map(str::trim) {
        if line.starts_with("chunk ") {
            chunks.push(Vec::new());
            continue;
        }
        let Some(rest) = line.strip_prefix("copy ") else {
            continue;
        };
        let Some((_, copy)) = rest.split_once(": ") else {
            continue;
        };
        let mut parts = copy.split_whitespace();
        let port = parts
            .next()
            .and_then(|addr| addr.rsplit_once(':'))
            .and_then(|(_, port)| port.parse().ok());
        let valid = parts
            .next()
            .is_some_and(|status| status == "(status:VALID)");
        if let (Some(port), Some(chunk)) = (port, chunks.last_mut()) {
            chunk.push(Copy { port, valid });
        }
    }
    chunks
}

/// How many chunks have fewer than `goal` valid copies on chunkservers other than `lost`.
pub fn under_goal(chunks: &[Vec<Copy>], goal: usize, lost: Option<u16>) -> usize {
    chunks
        .iter()
        .filter(|copies| {
            copies
                .iter()
                .filter(|c| c.valid && Some(c.port) != lost)
                .count()
                < goal
        })
        .count()
}

/// A running MooseFS cluster.
pub struct MfsCluster {
    // Field order is teardown order: mounts, chunkservers, master.
    mounts: Vec<MountProcess>,
    chunkservers: Vec<Daemon>,
    master: Daemon,
    ports: Ports,
    /// Where the mounts go: the default one, then the DIRECT one.
    mountpoints: [PathBuf; 2],
    logs: PathBuf,
}

impl MfsCluster {
    /// Index of the default mount in [`MfsCluster::mount_path`].
    pub const DEFAULT_MOUNT: usize = 0;
    /// Index of the `mfscachemode=DIRECT` mount.
    pub const DIRECT_MOUNT: usize = 1;

    /// Starts the master, the chunkservers and both mounts under `root`, then sets goal 2 and
    /// trash time 0 on the root directory.
    pub fn start(root: &Path) -> anyhow::Result<Self> {
        let ports = Ports::pick()?;
        let logs = root.join("logs");
        let etc = root.join("etc");
        let master_dir = root.join("master");
        for dir in [&logs, &etc, &master_dir] {
            std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        }
        std::fs::copy(EMPTY_METADATA, master_dir.join("metadata.mfs"))
            .with_context(|| format!("copying {EMPTY_METADATA} (package moosefs-master)"))?;
        let exports = etc.join("mfsexports.cfg");
        let topology = etc.join("mfstopology.cfg");
        write(&exports, "*\t/\trw,alldirs,admin,maproot=0:0\n")?;
        write(&topology, "")?;
        let master_cfg = etc.join("mfsmaster.cfg");
        write(
            &master_cfg,
            &master_config(&master_dir, &exports, &topology, &ports),
        )?;

        let mut command = Command::new("mfsmaster");
        command.arg("-f").arg("-c").arg(&master_cfg);
        let mut master =
            Daemon::spawn("mfsmaster", command, Role::Server, &logs.join("master.log"))?;
        let client_port = ports.client;
        master.wait_for("listening for clients", START_TIMEOUT, || {
            Ok(TcpStream::connect(("127.0.0.1", client_port)).is_ok())
        })?;

        let mut chunkservers = Vec::new();
        for i in 0..CHUNKSERVERS {
            let dir = root.join(format!("cs{i}"));
            let chunks = dir.join("chunks");
            let state = dir.join("state");
            for d in [&chunks, &state] {
                std::fs::create_dir_all(d).with_context(|| format!("creating {}", d.display()))?;
            }
            let hdd = etc.join(format!("mfshdd{i}.cfg"));
            write(&hdd, &format!("{}\n", chunks.display()))?;
            let cfg = etc.join(format!("mfschunkserver{i}.cfg"));
            write(&cfg, &chunkserver_config(i, &state, &hdd, &ports))?;
            let mut command = Command::new("mfschunkserver");
            command.arg("-f").arg("-c").arg(&cfg);
            let log = logs.join(format!("cs{i}.log"));
            let name = format!("mfschunkserver {i}");
            chunkservers.push(Daemon::spawn(&name, command, Role::Server, &log)?);
        }
        let mut cluster = MfsCluster {
            mounts: Vec::new(),
            chunkservers,
            master,
            ports,
            mountpoints: [
                mountpoint::make_mountpoint(&root.join("mnt"))?,
                mountpoint::make_mountpoint(&root.join("mnt-direct"))?,
            ],
            logs,
        };
        cluster.wait_chunkservers()?;
        cluster.mount()?;
        let root_dir = cluster
            .mount_path(Self::DEFAULT_MOUNT)?
            .to_string_lossy()
            .into_owned();
        process::run_tool("mfssetgoal", &["-r", "2", &root_dir])?;
        process::run_tool("mfssettrashtime", &["-r", "0", &root_dir])?;
        Ok(cluster)
    }

    /// Mounts both mounts (again), unless they are mounted.
    pub fn mount(&mut self) -> anyhow::Result<()> {
        if !self.mounts.is_empty() {
            return Ok(());
        }
        for (i, path) in self.mountpoints.iter().enumerate() {
            let direct = i == Self::DIRECT_MOUNT;
            let mut command = Command::new("mfsmount");
            command
                .arg(path)
                .arg("-f")
                .args(["-H", "127.0.0.1", "-P"])
                .arg(self.ports.client.to_string());
            if direct {
                command.args(["-o", "mfscachemode=DIRECT"]);
            }
            let (label, name) = if direct {
                ("mfsmount DIRECT", "mnt-direct")
            } else {
                ("mfsmount", "mnt")
            };
            let log = self.logs.join(format!("{name}.log"));
            // mfsmount exits with status 1 after SIGTERM; only a mount left behind is a problem.
            let mut mount = MountProcess::spawn(label, command, path, &log, false)?;
            mount.wait_mounted()?;
            self.mounts.push(mount);
        }
        Ok(())
    }

    /// Unmounts both mounts (stopping their processes, whose problems are printed); the
    /// cluster goes on.
    pub fn unmount(&mut self) {
        self.mounts.clear();
    }

    fn wait_chunkservers(&mut self) -> anyhow::Result<()> {
        let client = self.ports.client.to_string();
        let wanted = self.ports.data;
        // Polled on the master's process, so its exit ends the wait; the chunkservers' after.
        let master = &mut self.master;
        master.wait_for(
            "the chunkservers registered with their space",
            START_TIMEOUT,
            || {
                let out = Command::new("mfscli")
                    .args(["-H", "127.0.0.1", "-P", &client, "-SCS"])
                    .output()
                    .context("running mfscli (package moosefs-cli)")?;
                let listed = parse_chunkservers(&String::from_utf8_lossy(&out.stdout));
                Ok(wanted
                    .iter()
                    .all(|p| listed.iter().any(|&(port, total)| port == *p && total > 0)))
            },
        )?;
        for cs in &mut self.chunkservers {
            if let Some(status) = cs.try_exit() {
                bail!("{} exited ({status}):\n{}", cs.name(), cs.log_tail());
            }
        }
        Ok(())
    }

    /// Mountpoint `i` ([`MfsCluster::DEFAULT_MOUNT`] or [`MfsCluster::DIRECT_MOUNT`]).
    pub fn mount_path(&self, i: usize) -> anyhow::Result<&Path> {
        self.mounts
            .get(i)
            .map(MountProcess::path)
            .with_context(|| format!("MooseFS mount {i} is not running"))
    }

    /// The master's process id.
    pub fn master_pid(&self) -> anyhow::Result<u32> {
        self.master.pid().context("mfsmaster is not running")
    }

    /// Kills chunkserver `i` with SIGKILL, as a crash would (SIGTERM would put it in maintenance
    /// mode, and nothing would be replicated for 30 minutes).
    pub fn kill_chunkserver(&mut self, i: usize) -> anyhow::Result<()> {
        let cs = self
            .chunkservers
            .get_mut(i)
            .with_context(|| format!("there is no MooseFS chunkserver {i}"))?;
        cs.kill();
        Ok(())
    }

    /// The copies of each chunk of `file` (a path in a mount), as the master sees them.
    pub fn chunk_copies(&self, file: &Path) -> anyhow::Result<Vec<Vec<Copy>>> {
        let text = process::run_tool("mfsfileinfo", &[&file.to_string_lossy()])?;
        Ok(parse_fileinfo(&text))
    }

    /// The index of the chunkserver listening on data port `port`.
    pub fn chunkserver_on_port(&self, port: u16) -> Option<usize> {
        self.ports.data.iter().position(|p| *p == port)
    }

    /// Unmounts and stops everything; returns what did not end cleanly.
    pub fn stop(&mut self) -> Vec<String> {
        let mut problems = Vec::new();
        for mut mount in self.mounts.drain(..) {
            problems.extend(mount.unmount());
        }
        problems.extend(process::stop_all(&mut self.chunkservers));
        problems.extend(self.master.stop(STOP_TIMEOUT).problem(self.master.name()));
        problems
    }
}

impl Drop for MfsCluster {
    fn drop(&mut self) {
        for problem in self.stop() {
            eprintln!("elkfs-bench: {problem}");
        }
    }
}

fn write(path: &Path, text: &str) -> anyhow::Result<()> {
    std::fs::write(path, text).with_context(|| format!("writing {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mfscli_chunkserver_lines_give_port_and_space() {
        let text = "chunk servers:\t0.0.0.0\t19422\t3\t-\t3.0.117\t0\tmaintenance_off\t0\t25498451968\t97572749312\t-\t0\t0\t0\n\
                    chunk servers:\t0.0.0.0\t19423\t1\t-\t3.0.117\t0\tmaintenance_off\t0\t0\t0\t-\t0\t0\t0\n\
                    something else\n";
        assert_eq!(
            parse_chunkservers(text),
            vec![(19422, 97_572_749_312), (19423, 0)]
        );
    }

    #[test]
    fn fileinfo_lists_copies_per_chunk() {
        let text = "/m/data:\n\
                    \tchunk 0: 0000000000000FB1_00000001 / (id:4017 ver:1)\n\
                    \t\tcopy 1: 0.0.0.0:39409 (status:VALID)\n\
                    \t\tcopy 2: 0.0.0.0:39437 (status:VALID)\n\
                    \tchunk 1: 0000000000000FB2_00000001 / (id:4018 ver:1)\n\
                    \t\tcopy 1: 0.0.0.0:39437 (status:INVALID)\n\
                    \t\tcopy 2: 0.0.0.0:42233 (status:VALID)\n\
                    \tchunk 2: 0000000000000FB3_00000001 / (id:4019 ver:1)\n\
                    \t\tno valid copies !!!\n";
        let chunks = parse_fileinfo(text);
        assert_eq!(chunks.len(), 3);
        assert_eq!(
            chunks[0],
            vec![
                Copy {
                    port: 39409,
                    valid: true
                },
                Copy {
                    port: 39437,
                    valid: true
                }
            ]
        );
        assert!(!chunks[1][0].valid);
        assert!(chunks[2].is_empty());
        assert_eq!(under_goal(&chunks, 2, None), 2);
        assert_eq!(under_goal(&chunks, 1, None), 1);
        assert_eq!(under_goal(&chunks, 1, Some(42233)), 2);
        assert_eq!(under_goal(&chunks[..1], 2, Some(39409)), 1);
    }

    #[test]
    fn configs_name_every_port_and_the_remap() {
        let ports = Ports {
            metalogger: 1,
            chunkserver: 2,
            client: 3,
            data: [4, 5, 6],
        };
        let master = master_config(Path::new("/m"), Path::new("/e"), Path::new("/t"), &ports);
        for line in [
            "MATOCS_LISTEN_PORT = 2",
            "MATOCL_LISTEN_PORT = 3",
            "REMAP_DESTINATION_IP_CLASS = 0.0.0.0",
            "DATA_PATH = /m",
        ] {
            assert!(master.contains(line), "{line} missing from\n{master}");
        }
        let cs = chunkserver_config(2, Path::new("/s"), Path::new("/h"), &ports);
        assert!(cs.contains("CSSERV_LISTEN_PORT = 6") && cs.contains("MASTER_PORT = 2"));
    }
}
