//! Describing the cluster a test wants before starting it: how many chunkservers, data
//! directories and mounts, and extra arguments or environment for the processes.

use std::ffi::OsString;
use std::path::PathBuf;
use std::time::Duration;

use crate::cluster::Cluster;
use crate::error::StartError;

/// How long a process may take to write its ready file, unless the builder says otherwise.
pub const READY_TIMEOUT: Duration = Duration::from_secs(30);

/// Settings for [`Cluster::builder`]; [`ClusterBuilder::start`] starts the processes.
///
/// Defaults: 3 chunkservers with 1 data directory each, 1 mount of the root with no options,
/// no metalogger, no extra arguments, 30 s to become ready.
#[derive(Clone, Debug)]
pub struct ClusterBuilder {
    pub(crate) chunkservers: usize,
    pub(crate) data_dirs_per_server: usize,
    pub(crate) mounts: usize,
    pub(crate) metaloggers: usize,
    pub(crate) mount_options: String,
    pub(crate) master_args: Vec<OsString>,
    pub(crate) chunkserver_args: Vec<OsString>,
    pub(crate) mount_args: Vec<OsString>,
    pub(crate) env: Vec<(OsString, OsString)>,
    pub(crate) allowed_errors: Vec<String>,
    pub(crate) ready_timeout: Duration,
    pub(crate) bin_dir: Option<PathBuf>,
    pub(crate) run_as: Option<(u32, u32)>,
    pub(crate) tls: bool,
    pub(crate) private_network: bool,
}

impl Default for ClusterBuilder {
    fn default() -> Self {
        ClusterBuilder {
            chunkservers: 3,
            data_dirs_per_server: 1,
            mounts: 1,
            metaloggers: 0,
            mount_options: String::new(),
            master_args: Vec::new(),
            chunkserver_args: Vec::new(),
            mount_args: Vec::new(),
            env: Vec::new(),
            allowed_errors: Vec::new(),
            ready_timeout: READY_TIMEOUT,
            bin_dir: None,
            run_as: None,
            tls: false,
            private_network: false,
        }
    }
}

impl ClusterBuilder {
    /// Runs every process on a host of its own on a private network (see [`crate::Network`]),
    /// so that tests can cut one's link ([`Cluster::cut_link`]). The test reaches the master
    /// only from a host of the network ([`Cluster::enter_network`]); the mounts' files as usual.
    pub fn private_network(mut self) -> Self {
        self.private_network = true;
        self
    }

    /// Number of chunkservers started (and used again by [`Cluster::add_chunkserver`] for dirs).
    pub fn chunkservers(mut self, n: usize) -> Self {
        self.chunkservers = n;
        self
    }

    /// Number of `--data` directories each chunkserver gets.
    pub fn data_dirs_per_server(mut self, n: usize) -> Self {
        self.data_dirs_per_server = n;
        self
    }

    /// Number of mounts of the filesystem root started with the cluster.
    pub fn mounts(mut self, n: usize) -> Self {
        self.mounts = n;
        self
    }

    /// Number of metaloggers started with the cluster, right after the master (default 0).
    pub fn metaloggers(mut self, n: usize) -> Self {
        self.metaloggers = n;
        self
    }

    /// `-o` options (comma separated) for the mounts started with the cluster.
    pub fn mount_options(mut self, options: &str) -> Self {
        self.mount_options = options.to_owned();
        self
    }

    /// Extra arguments appended to the master's command line (every start).
    pub fn master_args<I, S>(mut self, args: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<OsString>,
    {
        self.master_args = args.into_iter().map(Into::into).collect();
        self
    }

    /// Extra arguments appended to every chunkserver's command line, including added ones.
    pub fn chunkserver_args<I, S>(mut self, args: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<OsString>,
    {
        self.chunkserver_args = args.into_iter().map(Into::into).collect();
        self
    }

    /// Extra arguments appended to every mount's command line, including added ones.
    pub fn mount_args<I, S>(mut self, args: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<OsString>,
    {
        self.mount_args = args.into_iter().map(Into::into).collect();
        self
    }

    /// An environment variable for every process (for example `ELKFS_LOG=debug`).
    pub fn env(mut self, key: impl Into<OsString>, value: impl Into<OsString>) -> Self {
        self.env.push((key.into(), value.into()));
        self
    }

    /// `ERROR` lines containing `pattern` do not fail the test (see [`Cluster::allow_log_errors`]);
    /// set here for errors expected during startup.
    pub fn allow_log_errors(mut self, pattern: &str) -> Self {
        self.allowed_errors.push(pattern.to_owned());
        self
    }

    /// How long each process may take to become ready (default [`READY_TIMEOUT`]).
    pub fn ready_timeout(mut self, timeout: Duration) -> Self {
        self.ready_timeout = timeout;
        self
    }

    /// Takes the binaries from `dir` instead of the target directory (release builds, or stand-in
    /// programs in the harness's own tests).
    pub fn bin_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.bin_dir = Some(dir.into());
        self
    }

    /// Runs every daemon (mounts too, through `fusermount3`) as this user and group instead of
    /// root; the cluster's directories are given to them.
    pub fn run_as(mut self, uid: u32, gid: u32) -> Self {
        self.run_as = Some((uid, gid));
        self
    }

    /// Encrypts every connection with TLS: the master, chunkservers and metaloggers get
    /// `--tls`, mounts `-o tls,tlsca=` with the cluster's certificate ([`Cluster::tls_ca_file`]).
    pub fn tls(mut self) -> Self {
        self.tls = true;
        self
    }

    /// Starts the master, the chunkservers and the mounts, each waited for in that order.
    /// Panics with the reason and the logs' last lines if anything fails to start.
    pub fn start(self) -> Cluster {
        let mut cluster = Cluster::create(&self)
            .unwrap_or_else(|e| panic!("creating the ElkFS test cluster failed: {e}"));
        // Panicking while `cluster` is alive lets its drop print every log's tail and clean up.
        if let Err(e) = cluster.start_initial(&self) {
            panic!("starting the ElkFS test cluster failed: {e}");
        }
        cluster
    }

    /// Like [`ClusterBuilder::start`], but returns the error (after cleaning up) instead of
    /// panicking, for tests that expect a process to refuse to start.
    pub fn try_start(self) -> Result<Cluster, StartError> {
        let mut cluster = Cluster::create(&self)?;
        match cluster.start_initial(&self) {
            Ok(()) => Ok(cluster),
            Err(e) => {
                cluster.checks = false;
                Err(e)
            }
        }
    }
}
