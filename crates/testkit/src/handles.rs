//! What the cluster keeps per process — directories, address, arguments, the running child — and
//! the read-only views tests get of it.

use std::ffi::OsString;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use crate::daemon::Daemon;

/// Names one process of a [`Cluster`](crate::Cluster), for [`Cluster::log_of`](crate::Cluster::log_of).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Process {
    /// The master.
    Master,
    /// Chunkserver `i` (in the order started or added).
    Chunkserver(usize),
    /// Mount `i` (in the order started or added).
    Mount(usize),
    /// Metalogger `i` (in the order added).
    Metalogger(usize),
}

/// The master: its data directory, its address (kept across restarts) and its process.
pub struct MasterHandle {
    pub(crate) daemon: Daemon,
    pub(crate) data_dir: PathBuf,
    pub(crate) addr: Option<SocketAddr>,
    pub(crate) args: Vec<OsString>,
}

impl MasterHandle {
    /// The address clients and chunkservers connect to; the same after every restart.
    pub fn addr(&self) -> SocketAddr {
        self.addr
            .unwrap_or_else(|| panic!("the master has never become ready, so it has no address"))
    }

    /// The master's `--data-dir`.
    pub fn data_dir(&self) -> &Path {
        &self.data_dir
    }

    /// The pid while the harness has it running; `None` after a stop or kill.
    pub fn pid(&self) -> Option<u32> {
        self.daemon.pid()
    }

    /// The log file every run of the master appends to.
    pub fn log_path(&self) -> &Path {
        self.daemon.log_path()
    }
}

/// A chunkserver: its data directories, its last announced address and its process.
pub struct ChunkserverHandle {
    pub(crate) daemon: Daemon,
    pub(crate) data_dirs: Vec<PathBuf>,
    pub(crate) marked_for_removal: Vec<bool>,
    pub(crate) addr: Option<SocketAddr>,
    pub(crate) args: Vec<OsString>,
    /// The `--cluster-key` file.
    pub(crate) cluster_key: PathBuf,
}

impl ChunkserverHandle {
    /// The `--data` directories, in the order they are passed.
    pub fn data_dirs(&self) -> &[PathBuf] {
        &self.data_dirs
    }

    /// Whether data directory `j` is passed as `*DIR` (marked for removal).
    pub fn is_marked_for_removal(&self, j: usize) -> bool {
        self.marked_for_removal.get(j).copied().unwrap_or(false)
    }

    /// The data address it wrote to its ready file the last time it started.
    pub fn addr(&self) -> SocketAddr {
        self.addr.unwrap_or_else(|| {
            panic!(
                "{} has never become ready, so it has no address",
                self.daemon.name()
            )
        })
    }

    /// The pid while the harness has it running; `None` after a stop or kill.
    pub fn pid(&self) -> Option<u32> {
        self.daemon.pid()
    }

    /// The log file every run of this chunkserver appends to.
    pub fn log_path(&self) -> &Path {
        self.daemon.log_path()
    }

    /// The command-line arguments for a start listening on `listen`.
    pub(crate) fn command_args(
        &self,
        master: SocketAddr,
        listen: &str,
        ready: &Path,
    ) -> Vec<OsString> {
        let mut args: Vec<OsString> = vec!["--master".into(), master.to_string().into()];
        for (dir, marked) in self.data_dirs.iter().zip(&self.marked_for_removal) {
            let mut value = OsString::from(if *marked { "*" } else { "" });
            value.push(dir);
            args.push("--data".into());
            args.push(value);
        }
        args.extend([
            "--listen".into(),
            listen.into(),
            "--ready-file".into(),
            ready.into(),
            "--cluster-key".into(),
            self.cluster_key.clone().into(),
        ]);
        args.extend(self.args.iter().cloned());
        args
    }
}

/// A FUSE mount: its mountpoint, what it mounts, its options and its process.
pub struct MountHandle {
    pub(crate) daemon: Daemon,
    pub(crate) path: PathBuf,
    pub(crate) subdir: Option<String>,
    pub(crate) options: String,
    pub(crate) args: Vec<OsString>,
}

impl MountHandle {
    /// The mountpoint; it stays the same across remounts.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The subdirectory of the filesystem that is mounted (`None`: the root).
    pub fn subdir(&self) -> Option<&str> {
        self.subdir.as_deref()
    }

    /// The `-o` options (comma separated; empty: none).
    pub fn options(&self) -> &str {
        &self.options
    }

    /// The pid while the harness has it running; `None` after an unmount or kill.
    pub fn pid(&self) -> Option<u32> {
        self.daemon.pid()
    }

    /// The log file every run of this mount appends to.
    pub fn log_path(&self) -> &Path {
        self.daemon.log_path()
    }

    /// The command-line arguments for mounting from the master at `master`.
    pub(crate) fn command_args(&self, master: SocketAddr, ready: &Path) -> Vec<OsString> {
        let source = match &self.subdir {
            Some(sub) => format!("{master}:/{}", sub.trim_start_matches('/')),
            None => master.to_string(),
        };
        let mut args: Vec<OsString> = vec![source.into(), self.path.clone().into(), "-f".into()];
        if !self.options.is_empty() {
            args.extend(["-o".into(), self.options.clone().into()]);
        }
        args.extend(["--ready-file".into(), ready.into()]);
        args.extend(self.args.iter().cloned());
        args
    }
}

/// A metalogger: its data directory (a master data directory in waiting) and its process.
pub struct MetaloggerHandle {
    pub(crate) daemon: Daemon,
    pub(crate) data_dir: PathBuf,
}

impl MetaloggerHandle {
    /// Its `--data-dir`: what a promoted master starts on.
    pub fn data_dir(&self) -> &Path {
        &self.data_dir
    }

    /// The pid while the harness has it running; `None` after a stop or kill.
    pub fn pid(&self) -> Option<u32> {
        self.daemon.pid()
    }

    /// The log file every run of this metalogger appends to.
    pub fn log_path(&self) -> &Path {
        self.daemon.log_path()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn daemon() -> Daemon {
        Daemon::new(
            "x".into(),
            "/bin/x".into(),
            "/l".into(),
            "/r".into(),
            crate::launcher::Launcher::default(),
        )
    }

    #[test]
    fn chunkserver_args_follow_the_contract() {
        let cs = ChunkserverHandle {
            daemon: daemon(),
            data_dirs: vec!["/t/cs0/data0".into(), "/t/cs0/data1".into()],
            marked_for_removal: vec![false, true],
            addr: None,
            args: vec!["--config".into(), "/t/cs.toml".into()],
            cluster_key: "/t/cluster.key".into(),
        };
        let master: SocketAddr = "127.0.0.1:9421".parse().expect("addr");
        let args = cs.command_args(master, "127.0.0.1:0", Path::new("/t/run/cs0.ready"));
        let expected = "--master 127.0.0.1:9421 --data /t/cs0/data0 --data */t/cs0/data1 \
                        --listen 127.0.0.1:0 --ready-file /t/run/cs0.ready --cluster-key /t/cluster.key \
                        --config /t/cs.toml";
        assert_eq!(join(&args), expected);
    }

    #[test]
    fn mount_args_follow_the_contract() {
        let mut mount = MountHandle {
            daemon: daemon(),
            path: "/t/mnt1".into(),
            subdir: Some("/a/b".into()),
            options: "ro,direct_io".into(),
            args: Vec::new(),
        };
        let master: SocketAddr = "127.0.0.1:9421".parse().expect("addr");
        let ready = Path::new("/t/run/mount1.ready");
        assert_eq!(
            join(&mount.command_args(master, ready)),
            "127.0.0.1:9421:/a/b /t/mnt1 -f -o ro,direct_io --ready-file /t/run/mount1.ready"
        );
        mount.subdir = None;
        mount.options.clear();
        assert_eq!(
            join(&mount.command_args(master, ready)),
            "127.0.0.1:9421 /t/mnt1 -f --ready-file /t/run/mount1.ready"
        );
    }

    fn join(args: &[OsString]) -> String {
        args.iter()
            .map(|a| a.to_string_lossy().into_owned())
            .collect::<Vec<_>>()
            .join(" ")
    }
}
