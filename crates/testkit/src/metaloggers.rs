//! Metaloggers in a test cluster, and promoting one: the master started again on a
//! metalogger's data directory.

use std::ffi::OsString;
use std::path::PathBuf;

use crate::bin_dir::METALOGGER_BIN;
use crate::cluster::{Cluster, check_index};
use crate::daemon::Daemon;
use crate::error::StartError;
use crate::handles::{MetaloggerHandle, Process};
use crate::lifecycle::{expect_clean_stop, expect_killed, note_if_exited};

impl Cluster {
    /// Adds a metalogger with a fresh data directory (`mlN/` under [`Cluster::dir`]) following
    /// the master, starts it, waits until its copy has caught up once, and returns its index.
    pub fn add_metalogger(&mut self) -> usize {
        let i = self
            .new_metalogger()
            .unwrap_or_else(|e| panic!("adding a metalogger failed: {e}"));
        self.start_metalogger(i);
        i
    }

    /// Records one more metalogger and creates its directory, without starting it.
    pub(crate) fn new_metalogger(&mut self) -> Result<usize, StartError> {
        let program = self.bin_dir.join(METALOGGER_BIN);
        if !program.is_file() {
            return Err(StartError::BinaryMissing {
                binary: METALOGGER_BIN.to_owned(),
                dir: self.bin_dir.clone(),
            });
        }
        let i = self.metaloggers.len();
        let name = format!("ml{i}");
        let data_dir = self.root.join(&name);
        std::fs::create_dir_all(&data_dir)
            .map_err(|e| StartError::io(format!("creating {}", data_dir.display()), e))?;
        crate::cluster::give(&data_dir, &self.launcher)?;
        self.metaloggers.push(MetaloggerHandle {
            daemon: Daemon::new(
                format!("metalogger{i}"),
                program,
                self.root.join(format!("logs/{name}.log")),
                self.root.join(format!("run/{name}.ready")),
                self.launcher.clone(),
            )
            .on_host(crate::cluster::new_host(self.network.as_ref())?),
            data_dir,
        });
        Ok(i)
    }

    /// Starts metalogger `i` (again) on its directory and waits until its copy has caught up
    /// with the master once (its ready file). Panics if it does not.
    pub fn start_metalogger(&mut self, i: usize) {
        self.try_start_metalogger(i)
            .unwrap_or_else(|e| panic!("starting metalogger {i} failed: {e}"));
    }

    /// Like [`Cluster::start_metalogger`], returning the error instead.
    pub fn try_start_metalogger(&mut self, i: usize) -> Result<(), StartError> {
        let master = self.master_addr();
        check_index("metalogger", i, self.metaloggers.len());
        let (env, timeout) = (&self.env, self.ready_timeout);
        let ml = &mut self.metaloggers[i];
        note_if_exited(&mut ml.daemon, &mut self.problems);
        let _ = std::fs::remove_file(ml.daemon.ready_path());
        let mut args: Vec<OsString> = vec![
            "--master".into(),
            master.to_string().into(),
            "--data-dir".into(),
            ml.data_dir.clone().into(),
            "--ready-file".into(),
            ml.daemon.ready_path().into(),
            "--cluster-key".into(),
            self.cluster_key.clone().into(),
        ];
        if self.tls_ca.is_some() {
            args.push("--tls".into());
        }
        ml.daemon.start(&args, env, timeout).map(drop)
    }

    /// Stops metalogger `i` with SIGTERM; panics unless it exits 0 in time.
    pub fn stop_metalogger(&mut self, i: usize) {
        expect_clean_stop(self.daemon_mut(Process::Metalogger(i)));
    }

    /// Kills metalogger `i` with SIGKILL, as a crash would.
    pub fn kill_metalogger(&mut self, i: usize) {
        expect_killed(self.daemon_mut(Process::Metalogger(i)));
    }

    /// Metalogger `i`'s next starts use `dir` as their `--data-dir`: a copy of its directory
    /// the test made elsewhere, such as on a small disk of its own.
    pub fn set_metalogger_data_dir(&mut self, i: usize, dir: impl Into<PathBuf>) {
        check_index("metalogger", i, self.metaloggers.len());
        self.metaloggers[i].data_dir = dir.into();
    }

    /// Metalogger `i`'s directory and process.
    pub fn metalogger(&self, i: usize) -> &MetaloggerHandle {
        check_index("metalogger", i, self.metaloggers.len());
        &self.metaloggers[i]
    }

    /// How many metaloggers the cluster has (running or not).
    pub fn metalogger_count(&self) -> usize {
        self.metaloggers.len()
    }

    /// The master's next starts use `dir` as their `--data-dir`, on the same port as before:
    /// with a metalogger's directory (stop the metalogger first), that is promotion.
    pub fn set_master_data_dir(&mut self, dir: impl Into<PathBuf>) {
        self.master.data_dir = dir.into();
    }
}
