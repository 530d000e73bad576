//! The ElkFS master driven straight through the client library (`elkfs-client`), many requests in
//! flight on one session. This is how the master-scale workload creates a million files in
//! minutes (through a FUSE mount, one create at a time, that takes ten) and looks them up again.

use std::ops::Range;
use std::time::Duration;

use std::sync::Arc;

use anyhow::Context;
use elkfs_client::{Client, ClientConfig};
use elkfs_proto::types::{Caller, FileKind};
use elkfs_proto::{InodeId, Status};
use futures::stream::{self, StreamExt, TryStreamExt};

/// Requests kept in flight on the session.
pub const IN_FLIGHT: usize = 64;
/// How long one request waits out an unreachable master before it fails.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(60);
/// How long one probe of a restarting master may take.
const PROBE_TIMEOUT: Duration = Duration::from_secs(2);
/// What the sessions show as their mount point in the master's session list.
const SESSION_NAME: &str = "elkfs-bench";
/// Creates run as root, like the rest of the harness.
const ROOT: Caller = Caller { uid: 0, gid: 0 };

/// Where the files of a scale run live: file `i` is `d<i / per_dir>/f<i % per_dir>`, so the
/// directories fill one after the other, as an unpacked archive would.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Tree {
    /// Files in all.
    pub files: usize,
    /// Files in each directory (the last one may hold fewer).
    pub per_dir: usize,
}

impl Tree {
    /// Directories needed for [`Tree::files`].
    pub fn dirs(&self) -> usize {
        self.files.div_ceil(self.per_dir.max(1))
    }

    /// The name of directory `d`.
    pub fn dir_name(d: usize) -> String {
        format!("d{d:05}")
    }

    /// The directory file `i` is in.
    pub fn dir_of(&self, i: usize) -> usize {
        i / self.per_dir.max(1)
    }

    /// The name of file `i` in its directory.
    pub fn file_name(&self, i: usize) -> String {
        format!("f{:05}", i % self.per_dir.max(1))
    }
}

/// The master's answer to one lookup made on a fresh session.
#[derive(Debug, PartialEq, Eq)]
pub enum Probe {
    /// The file's attributes came back.
    Found,
    /// The master answered that the file does not exist.
    Missing,
    /// No answer yet: the connection or the session could not be opened, or the request failed.
    NotYet(String),
}

/// Found and missing files of a batch of lookups.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Lookups {
    /// Lookups answered with attributes.
    pub found: usize,
    /// Lookups answered "no such file".
    pub missing: usize,
}

/// A session with one master, and the runtime it runs on.
pub struct NamespaceClient {
    runtime: tokio::runtime::Runtime,
    client: Arc<Client>,
}

impl NamespaceClient {
    /// Opens a session rooted at `/` with the master at `addr`.
    pub fn connect(addr: &str) -> anyhow::Result<Self> {
        let runtime = runtime()?;
        let client = runtime
            .block_on(connect(addr, REQUEST_TIMEOUT))
            .with_context(|| format!("opening a session with the ElkFS master at {addr}"))?;
        Ok(NamespaceClient { runtime, client })
    }

    /// The root directory of the session.
    pub fn root(&self) -> InodeId {
        self.client.root()
    }

    /// Creates directory `name` in `parent` and returns its inode.
    pub fn mkdir(&self, parent: InodeId, name: &str) -> anyhow::Result<InodeId> {
        self.runtime.block_on(mkdir(&self.client, parent, name))
    }

    /// Creates the directories of `tree` in `parent`, [`IN_FLIGHT`] at a time; returns their
    /// inodes in order.
    pub fn mkdir_tree(&self, parent: InodeId, tree: &Tree) -> anyhow::Result<Vec<InodeId>> {
        let client = &self.client;
        self.runtime.block_on(
            stream::iter(0..tree.dirs())
                .map(|d| async move { mkdir(client, parent, &Tree::dir_name(d)).await })
                .buffered(IN_FLIGHT)
                .try_collect(),
        )
    }

    /// Creates files `range` of `tree` (empty regular files), [`IN_FLIGHT`] at a time; `dirs`
    /// are the tree's directories from [`NamespaceClient::mkdir_tree`].
    pub fn create_files(
        &self,
        tree: &Tree,
        dirs: &[InodeId],
        range: Range<usize>,
    ) -> anyhow::Result<()> {
        let client = &self.client;
        self.runtime.block_on(
            stream::iter(range)
                .map(|i| async move {
                    let parent = *dirs
                        .get(tree.dir_of(i))
                        .with_context(|| format!("no directory for file {i}"))?;
                    let name = tree.file_name(i);
                    client
                        .mknod(
                            parent,
                            name.as_bytes(),
                            FileKind::File,
                            0o644,
                            0o022,
                            0,
                            ROOT,
                        )
                        .await
                        .with_context(|| format!("creating {name} in {parent:?}"))?;
                    Ok(())
                })
                .buffer_unordered(IN_FLIGHT)
                .try_collect::<()>(),
        )
    }

    /// Looks up every `(directory, name)`, [`IN_FLIGHT`] at a time.
    pub fn lookup_all(&self, targets: &[(InodeId, String)]) -> anyhow::Result<Lookups> {
        let client = &self.client;
        let answers: Vec<bool> = self.runtime.block_on(
            stream::iter(targets)
                .map(|(parent, name)| async move {
                    match lookup(client, *parent, name).await {
                        Ok(()) => Ok(true),
                        Err(Status::NotFound) => Ok(false),
                        Err(status) => Err(anyhow::anyhow!("looking up {name}: {status}")),
                    }
                })
                .buffer_unordered(IN_FLIGHT)
                .try_collect(),
        )?;
        let found = answers.iter().filter(|f| **f).count();
        Ok(Lookups {
            found,
            missing: answers.len() - found,
        })
    }
}

/// Looks `name` up in `parent` on a new session with the master at `addr`: one attempt, for
/// timing how soon a restarted master answers (a session's own retries would back off).
pub fn probe_lookup(
    runtime: &tokio::runtime::Runtime,
    addr: &str,
    parent: InodeId,
    name: &str,
) -> Probe {
    runtime.block_on(async {
        let attempt = async {
            let client = connect(addr, PROBE_TIMEOUT)
                .await
                .map_err(|e| e.to_string())?;
            Ok::<_, String>(lookup(&client, parent, name).await)
        };
        match tokio::time::timeout(PROBE_TIMEOUT, attempt).await {
            Ok(Ok(Ok(()))) => Probe::Found,
            Ok(Ok(Err(Status::NotFound))) => Probe::Missing,
            Ok(Ok(Err(status))) => Probe::NotYet(status.to_string()),
            Ok(Err(reason)) => Probe::NotYet(reason),
            Err(_) => Probe::NotYet(format!("no answer within {PROBE_TIMEOUT:?}")),
        }
    })
}

/// The runtime the client runs on: one thread, so the master keeps the other cores.
pub fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")
}

/// A session rooted at `/` with the master at `addr`, whose requests wait out an unreachable
/// master for `timeout`.
async fn connect(
    addr: &str,
    timeout: Duration,
) -> Result<Arc<Client>, elkfs_client::master::ConnectError> {
    let config = ClientConfig {
        master_timeout: timeout,
        ..ClientConfig::default()
    };
    Client::connect(addr, "/", SESSION_NAME, config).await
}

async fn mkdir(client: &Client, parent: InodeId, name: &str) -> anyhow::Result<InodeId> {
    let attr = client
        .mkdir(parent, name.as_bytes(), 0o755, 0o022, ROOT)
        .await
        .with_context(|| format!("creating directory {name}"))?;
    Ok(attr.inode)
}

async fn lookup(client: &Client, parent: InodeId, name: &str) -> Result<(), Status> {
    client.lookup(parent, name.as_bytes()).await.map(|_| ())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn files_fill_directories_in_turn() {
        let tree = Tree {
            files: 2_500,
            per_dir: 1_000,
        };
        assert_eq!(tree.dirs(), 3);
        assert_eq!(tree.dir_of(999), 0);
        assert_eq!(tree.dir_of(1_000), 1);
        assert_eq!(tree.dir_of(2_499), 2);
        assert_eq!(tree.file_name(1_234), "f00234");
        assert_eq!(Tree::dir_name(42), "d00042");
        let exact = Tree {
            files: 1_000_000,
            per_dir: 1_000,
        };
        assert_eq!(exact.dirs(), 1_000);
    }
}
