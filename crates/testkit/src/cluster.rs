//! The running test cluster: its directory layout, the processes in it, and what tests read from
//! it (addresses, mountpoints, logs, the CLI's output).

use std::ffi::OsString;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use elkfs_proto::cluster_key::{ClusterKey, KEY_FILE};
use elkfs_proto::tls::ClusterAuthority;
use tempfile::TempDir;

use crate::bin_dir::{self, CHUNKSERVER_BIN, CLI_BIN, MASTER_BIN, MOUNT_BIN};
use crate::builder::ClusterBuilder;
use crate::daemon::Daemon;
use crate::error::StartError;
use crate::handles::{ChunkserverHandle, MasterHandle, MetaloggerHandle, MountHandle, Process};
use crate::launcher::Launcher;
use crate::network::{Host, Network, OnHost};

/// Environment variable the `elkfs` CLI reads the master address from.
pub const MASTER_ENV: &str = "ELKFS_MASTER";

/// A master, metaloggers, chunkservers and FUSE mounts running as real processes on 127.0.0.1, everything in
/// one temporary directory (`master/`, `ml0/`, `cs0/data0/`, `mnt0/`, `logs/`, `run/`).
///
/// Dropping it unmounts the mounts and stops every process (SIGTERM, SIGKILL after
/// [`STOP_TIMEOUT`](crate::STOP_TIMEOUT)); unless the test is already failing, it then fails the
/// test if a process logged an unexpected `ERROR` (see [`Cluster::allow_log_errors`]), panicked,
/// died on its own, or did not exit 0 on SIGTERM. Set `ELKFS_KEEP_TEST_DIR=1` to keep the
/// directory of a failed test.
pub struct Cluster {
    pub(crate) root: PathBuf,
    pub(crate) bin_dir: PathBuf,
    pub(crate) env: Vec<(OsString, OsString)>,
    pub(crate) ready_timeout: Duration,
    pub(crate) data_dirs_per_server: usize,
    pub(crate) chunkserver_args: Vec<OsString>,
    pub(crate) mount_args: Vec<OsString>,
    pub(crate) master: MasterHandle,
    pub(crate) chunkservers: Vec<ChunkserverHandle>,
    pub(crate) mounts: Vec<MountHandle>,
    pub(crate) metaloggers: Vec<MetaloggerHandle>,
    /// Starts every process of the cluster (see [`crate::launcher`]).
    pub(crate) launcher: Launcher,
    /// The cluster key every chunkserver and metalogger is given (the master has a copy).
    pub(crate) cluster_key: PathBuf,
    /// The cluster authority's certificate when every connection uses TLS.
    pub(crate) tls_ca: Option<PathBuf>,
    pub(crate) allowed_errors: Vec<String>,
    /// Things that went wrong with processes during the test, reported when it ends.
    pub(crate) problems: Vec<String>,
    /// Off when the cluster is dropped after a failed `try_start`: the error was returned.
    pub(crate) checks: bool,
    /// The private network every process runs on, if the builder asked for one; removed after
    /// every process is gone.
    pub(crate) network: Option<Network>,
    /// Declared last so it is removed after every process is gone.
    pub(crate) temp_dir: Option<TempDir>,
}

impl Cluster {
    /// The cluster key file every chunkserver and metalogger is started with (the master's
    /// data directory holds the same key).
    pub fn cluster_key_file(&self) -> &Path {
        &self.cluster_key
    }

    /// The cluster authority's certificate mounts trust, when the cluster uses TLS.
    pub fn tls_ca_file(&self) -> Option<&Path> {
        self.tls_ca.as_deref()
    }

    /// Settings for a new cluster; see [`ClusterBuilder`] for the defaults.
    pub fn builder() -> ClusterBuilder {
        ClusterBuilder::default()
    }

    /// Creates the directory layout and the (not yet started) master.
    pub(crate) fn create(builder: &ClusterBuilder) -> Result<Cluster, StartError> {
        let bin_dir = match &builder.bin_dir {
            Some(dir) => dir.clone(),
            None => bin_dir::bin_dir()?,
        };
        let mut needed = vec![MASTER_BIN, CHUNKSERVER_BIN];
        if builder.mounts > 0 {
            needed.push(MOUNT_BIN);
        }
        for name in needed {
            if !bin_dir.join(name).is_file() {
                return Err(StartError::BinaryMissing {
                    binary: name.to_owned(),
                    dir: bin_dir,
                });
            }
        }
        let temp_dir = tempfile::Builder::new()
            .prefix("elkfs-test-")
            .tempdir()
            .map_err(|e| StartError::io("creating the cluster's temp dir", e))?;
        // Canonical, so mountpoints compare equal to the paths in /proc/self/mountinfo.
        let root = temp_dir
            .path()
            .canonicalize()
            .map_err(|e| StartError::io("resolving the cluster's temp dir", e))?;
        let launcher = Launcher::new(builder.run_as);
        give(&root, &launcher)?;
        for sub in ["master", "logs", "run"] {
            create_dir(&root.join(sub))?;
            give(&root.join(sub), &launcher)?;
        }
        let cluster_key = root.join(KEY_FILE);
        let key = make_cluster_key(
            &[&cluster_key, &root.join("master").join(KEY_FILE)],
            &launcher,
        )?;
        let tls_ca = match builder.tls {
            false => None,
            true => Some(
                ClusterAuthority::from_cluster_key(&key)
                    .and_then(|authority| authority.write_certificate(&root))
                    .map_err(|e| {
                        StartError::io(
                            "writing the cluster's certificate",
                            std::io::Error::other(e),
                        )
                    })?,
            ),
        };
        let mut master_args = builder.master_args.clone();
        let mut chunkserver_args = builder.chunkserver_args.clone();
        if builder.private_network {
            // Mounts come from the network's hosts, not from loopback.
            let exports = root.join("exports.cfg");
            std::fs::write(
                &exports,
                format!("{} / rw,alldirs,maproot=0\n", Network::SUBNET),
            )
            .map_err(|e| StartError::io("writing the exports file", e))?;
            master_args.extend(["--exports".into(), exports.into()]);
        }
        if builder.tls {
            master_args.push("--tls".into());
            chunkserver_args.push("--tls".into());
        }
        let network = match builder.private_network {
            false => None,
            true => Some(
                Network::new(launcher.clone())
                    .map_err(|e| StartError::io("making the private network", e))?,
            ),
        };
        let master = MasterHandle {
            daemon: Daemon::new(
                "master".into(),
                bin_dir.join(MASTER_BIN),
                root.join("logs/master.log"),
                root.join("run/master.ready"),
                launcher.clone(),
            )
            .on_host(new_host(network.as_ref())?),
            data_dir: root.join("master"),
            addr: None,
            args: master_args,
        };
        Ok(Cluster {
            root,
            bin_dir,
            env: builder.env.clone(),
            ready_timeout: builder.ready_timeout,
            data_dirs_per_server: builder.data_dirs_per_server,
            chunkserver_args,
            mount_args: builder.mount_args.clone(),
            master,
            chunkservers: Vec::new(),
            mounts: Vec::new(),
            metaloggers: Vec::new(),
            launcher,
            cluster_key,
            tls_ca,
            allowed_errors: builder.allowed_errors.clone(),
            problems: Vec::new(),
            checks: true,
            network,
            temp_dir: Some(temp_dir),
        })
    }

    /// Starts what the builder asked for: master, then metaloggers, chunkservers and mounts.
    pub(crate) fn start_initial(&mut self, builder: &ClusterBuilder) -> Result<(), StartError> {
        self.try_start_master()?;
        for _ in 0..builder.metaloggers {
            let i = self.new_metalogger()?;
            self.try_start_metalogger(i)?;
        }
        for _ in 0..builder.chunkservers {
            let i = self.new_chunkserver()?;
            self.try_start_chunkserver(i)?;
        }
        for _ in 0..builder.mounts {
            let i = self.new_mount(None, &builder.mount_options)?;
            self.try_remount(i)?;
        }
        Ok(())
    }

    /// Creates the directories of one more chunkserver and records it, without starting it.
    pub(crate) fn new_chunkserver(&mut self) -> Result<usize, StartError> {
        let name = format!("cs{}", self.chunkservers.len());
        let data_dirs: Vec<PathBuf> = (0..self.data_dirs_per_server)
            .map(|j| self.root.join(&name).join(format!("data{j}")))
            .collect();
        self.new_chunkserver_on(data_dirs)
    }

    /// Records one more chunkserver using `data_dirs` (created if missing), without starting it.
    pub(crate) fn new_chunkserver_on(
        &mut self,
        data_dirs: Vec<PathBuf>,
    ) -> Result<usize, StartError> {
        let i = self.chunkservers.len();
        let name = format!("cs{i}");
        for dir in &data_dirs {
            create_dir(dir)?;
            give(dir, &self.launcher)?;
        }
        self.chunkservers.push(ChunkserverHandle {
            daemon: Daemon::new(
                name.clone(),
                self.bin_dir.join(CHUNKSERVER_BIN),
                self.root.join(format!("logs/{name}.log")),
                self.root.join(format!("run/{name}.ready")),
                self.launcher.clone(),
            )
            .on_host(new_host(self.network.as_ref())?),
            marked_for_removal: vec![false; data_dirs.len()],
            data_dirs,
            addr: None,
            args: self.chunkserver_args.clone(),
            cluster_key: self.cluster_key.clone(),
        });
        Ok(i)
    }

    /// Creates the mountpoint of one more mount and records it, without mounting.
    pub(crate) fn new_mount(
        &mut self,
        subdir: Option<&str>,
        options: &str,
    ) -> Result<usize, StartError> {
        let i = self.mounts.len();
        let name = format!("mount{i}");
        let path = self.root.join(format!("mnt{i}"));
        create_dir(&path)?;
        give(&path, &self.launcher)?;
        self.mounts.push(MountHandle {
            daemon: Daemon::new(
                name.clone(),
                self.bin_dir.join(MOUNT_BIN),
                self.root.join(format!("logs/{name}.log")),
                self.root.join(format!("run/{name}.ready")),
                self.launcher.clone(),
            )
            .on_host(new_host(self.network.as_ref())?),
            path,
            subdir: subdir.map(str::to_owned),
            options: match &self.tls_ca {
                None => options.to_owned(),
                // The test's own options come last, so they can override these.
                Some(ca) => [&format!("tls,tlsca={}", ca.display()), options]
                    .iter()
                    .filter(|o| !o.is_empty())
                    .cloned()
                    .collect::<Vec<_>>()
                    .join(","),
            },
            args: self.mount_args.clone(),
        });
        Ok(i)
    }

    /// The host `process` runs on, when the cluster is on a private network.
    pub fn host_of(&self, process: Process) -> Option<Host> {
        self.daemon(process).host().cloned()
    }

    /// Cuts the network link of the host `process` runs on (the cluster must be on a private
    /// network): nothing reaches it or comes from it, and nothing tells its peers so.
    pub fn cut_link(&self, process: Process) {
        let (network, host) = self.network_and_host(process);
        network.cut(&host);
    }

    /// Puts back the link [`Cluster::cut_link`] cut.
    pub fn reconnect_link(&self, process: Process) {
        let (network, host) = self.network_and_host(process);
        network.reconnect(&host);
    }

    fn network_and_host(&self, process: Process) -> (&Network, Host) {
        let host = self.host_of(process).expect("every process has a host");
        (self.network(), host)
    }

    fn network(&self) -> &Network {
        self.network
            .as_ref()
            .expect("the cluster is not on a private network (ClusterBuilder::private_network)")
    }

    /// Moves the calling thread onto a host of its own on the cluster's private network, so it
    /// can reach the master and the chunkservers (and the processes it starts, the CLI, too),
    /// until the guard is dropped.
    pub fn enter_network(&self) -> OnHost {
        let host = self
            .network()
            .add_host()
            .unwrap_or_else(|e| panic!("adding the test's host to the network: {e}"));
        OnHost::enter(&host).unwrap_or_else(|e| panic!("entering the test's host: {e}"))
    }

    /// The cluster's temporary directory; everything the processes store is under it.
    pub fn dir(&self) -> &Path {
        &self.root
    }

    /// The master's address, the same across master restarts.
    pub fn master_addr(&self) -> SocketAddr {
        self.master.addr()
    }

    /// The master's directories, address and process.
    pub fn master(&self) -> &MasterHandle {
        &self.master
    }

    /// Chunkserver `i`'s directories, address and process.
    pub fn chunkserver(&self, i: usize) -> &ChunkserverHandle {
        check_index("chunkserver", i, self.chunkservers.len());
        &self.chunkservers[i]
    }

    /// Chunkserver `i`'s `--data` directories.
    pub fn chunkserver_data_dirs(&self, i: usize) -> &[PathBuf] {
        self.chunkserver(i).data_dirs()
    }

    /// How many chunkservers the cluster has (running or not).
    pub fn chunkserver_count(&self) -> usize {
        self.chunkservers.len()
    }

    /// Mount `i`'s mountpoint, options and process.
    pub fn mount(&self, i: usize) -> &MountHandle {
        check_index("mount", i, self.mounts.len());
        &self.mounts[i]
    }

    /// Mount `i`'s mountpoint.
    pub fn mount_path(&self, i: usize) -> &Path {
        self.mount(i).path()
    }

    /// How many mounts the cluster has (mounted or not).
    pub fn mount_count(&self) -> usize {
        self.mounts.len()
    }

    /// The pids of every process currently running, for checks that nothing is left behind.
    pub fn pids(&self) -> Vec<u32> {
        let master = self.master.pid();
        let servers = self.chunkservers.iter().map(ChunkserverHandle::pid);
        let mounts = self.mounts.iter().map(MountHandle::pid);
        let metaloggers = self.metaloggers.iter().map(MetaloggerHandle::pid);
        std::iter::once(master)
            .chain(servers)
            .chain(mounts)
            .chain(metaloggers)
            .flatten()
            .collect()
    }

    /// `ERROR` lines (and panic messages) containing `pattern` no longer fail the test.
    pub fn allow_log_errors(&mut self, pattern: &str) {
        self.allowed_errors.push(pattern.to_owned());
    }

    /// The whole log of a process, every run of it, for assertions on what it said.
    pub fn log_of(&self, which: Process) -> String {
        self.daemon(which).log_text()
    }

    /// The log file of a process.
    pub fn log_path(&self, which: Process) -> &Path {
        self.daemon(which).log_path()
    }

    /// Runs the `elkfs` CLI with `ELKFS_MASTER` set to the master's address.
    pub fn run_cli(&self, args: &[&str]) -> Output {
        let program = self.bin_dir.join(CLI_BIN);
        if !program.is_file() {
            let missing = StartError::BinaryMissing {
                binary: CLI_BIN.to_owned(),
                dir: self.bin_dir.clone(),
            };
            panic!("{missing}");
        }
        Command::new(&program)
            .args(args)
            .env(MASTER_ENV, self.master_addr().to_string())
            .env("NO_COLOR", "1")
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .output()
            .unwrap_or_else(|e| panic!("running {} {args:?} failed: {e}", program.display()))
    }

    /// Runs the `elkfs` CLI, panics unless it exits 0, and returns its standard output.
    pub fn run_cli_ok(&self, args: &[&str]) -> String {
        let output = self.run_cli(args);
        let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
        if !output.status.success() {
            panic!(
                "elkfs {args:?} failed ({}).\nstdout:\n{stdout}\nstderr:\n{}",
                output.status,
                String::from_utf8_lossy(&output.stderr)
            );
        }
        stdout
    }

    pub(crate) fn daemon(&self, which: Process) -> &Daemon {
        match which {
            Process::Master => &self.master.daemon,
            Process::Chunkserver(i) => &self.chunkserver(i).daemon,
            Process::Mount(i) => &self.mount(i).daemon,
            Process::Metalogger(i) => &self.metalogger(i).daemon,
        }
    }

    pub(crate) fn daemon_mut(&mut self, which: Process) -> &mut Daemon {
        match which {
            Process::Master => &mut self.master.daemon,
            Process::Chunkserver(i) => {
                check_index("chunkserver", i, self.chunkservers.len());
                &mut self.chunkservers[i].daemon
            }
            Process::Mount(i) => {
                check_index("mount", i, self.mounts.len());
                &mut self.mounts[i].daemon
            }
            Process::Metalogger(i) => {
                check_index("metalogger", i, self.metaloggers.len());
                &mut self.metaloggers[i].daemon
            }
        }
    }

    /// Every daemon, master first, for reports.
    pub(crate) fn daemons(&self) -> impl Iterator<Item = &Daemon> {
        std::iter::once(&self.master.daemon)
            .chain(self.chunkservers.iter().map(|c| &c.daemon))
            .chain(self.mounts.iter().map(|m| &m.daemon))
            .chain(self.metaloggers.iter().map(|m| &m.daemon))
    }
}

/// Panics with a message naming the mistake when a test uses an index the cluster does not have.
pub(crate) fn check_index(kind: &str, i: usize, count: usize) {
    if i >= count {
        panic!("there is no {kind} {i}; the cluster has {count}");
    }
}

/// Writes one new random cluster key to each of `files` (the master finds it in its data
/// directory as if it had made it on its first start).
fn make_cluster_key(files: &[&Path], launcher: &Launcher) -> Result<ClusterKey, StartError> {
    let mut bytes = [0u8; 32];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| std::io::Read::read_exact(&mut f, &mut bytes))
        .map_err(|e| StartError::io("reading /dev/urandom for a cluster key", e))?;
    let key = ClusterKey::from_bytes(bytes);
    for file in files {
        key.write_new_file(file)
            .map_err(|e| StartError::io("writing the cluster key", std::io::Error::other(e)))?;
        give(file, launcher)?;
    }
    Ok(key)
}

/// Gives `path` to the user the daemons run as (nothing to do when they run as root).
pub(crate) fn give(path: &Path, launcher: &Launcher) -> Result<(), StartError> {
    match launcher.run_as() {
        None => Ok(()),
        Some((uid, gid)) => std::os::unix::fs::chown(path, Some(uid), Some(gid))
            .map_err(|e| StartError::io(format!("giving {} to uid {uid}", path.display()), e)),
    }
}

/// A new host on `network`, for one more process; `None` without a private network.
pub(crate) fn new_host(network: Option<&Network>) -> Result<Option<Host>, StartError> {
    network
        .map(|n| n.add_host())
        .transpose()
        .map_err(|e| StartError::io("adding a host to the private network", e))
}

fn create_dir(path: &Path) -> Result<(), StartError> {
    std::fs::create_dir_all(path)
        .map_err(|e| StartError::io(format!("creating {}", path.display()), e))
}
