//! Everything the master's connection handlers share.

use crate::exports::Exports;
use std::collections::{BTreeSet, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use std::time::Duration;

use elkfs_common::worker::WorkerRegistry;
use elkfs_metastore::MetaOp;
use elkfs_proto::cluster_key::ClusterKey;
use elkfs_proto::types::Timestamp;
use elkfs_proto::{InodeId, SessionId, Status};

use crate::chunk_ops::ChunkOps;
use crate::cluster::Cluster;
use crate::dir_leases::DirLeases;
use crate::leases::Leases;
use crate::lock_holders::LockHolders;
use crate::locks::LockTable;
use crate::meta::Meta;
use crate::open_files::OpenFiles;
use crate::replication::ReplicationTrigger;

/// How long a vanished session's open files keep unlinked files alive, and how long after a
/// start no such file is purged: long enough for clients to reconnect (after a master restart or
/// a network blip) and say which files they have open. The master's `reopen_grace_secs`.
pub const DEFAULT_REOPEN_GRACE: Duration = Duration::from_secs(60);

/// Files put aside (during the reopen grace, or after a purge that failed) that one
/// [`MasterState::purge_put_aside`] looks at, with the purge gate (which holds off opens) held.
pub const PUT_ASIDE_PER_CALL: usize = 1000;

/// How long a vanished session's byte-range locks stay, still keeping others out, for its client
/// to reconnect and claim them (`MasterRequest::ReclaimLocks`).
pub const LOCK_RECLAIM_GRACE: Duration = Duration::from_secs(30);

/// The master's shared state.
pub struct MasterState {
    /// The namespace.
    pub meta: Meta,
    /// Connected chunkservers and their copies.
    pub cluster: Arc<Cluster>,
    /// Write leases.
    pub leases: Leases,
    /// Leases on the names of directories, held by the mounts that made them.
    pub dir_leases: DirLeases,
    /// Chunk creation, versions, deletion.
    pub chunks: ChunkOps,
    /// Files open in some session.
    pub open_files: OpenFiles,
    /// Byte-range locks.
    pub locks: LockTable,
    /// The clients holding locks, kept on disk for the grace period after a restart.
    pub lock_holders: LockHolders,
    /// Wakes the replication worker.
    pub replication: Arc<ReplicationTrigger>,
    /// Chunk copies a chunkserver takes part in at once.
    pub replication_per_server: usize,
    /// The background workers' statuses.
    pub workers: WorkerRegistry,
    /// Connected metaloggers.
    pub metaloggers: Metaloggers,
    /// Held while deciding a purge and while registering an open, so an open can never slip
    /// between a purge's "nobody has it open" and the purge itself.
    purge_gate: tokio::sync::Mutex<()>,
    /// Trashed files purged by hand while open, to purge at their last close although their
    /// trash time is not up. In memory only: after a restart they wait out their trash time.
    purge_at_close: std::sync::Mutex<HashSet<InodeId>>,
    /// Unlinked files the purge worker will purge.
    pub purges: crate::purges::PurgeQueue,
    /// How long mounts have to reconnect and say which files they have open.
    pub reopen_grace: Duration,
    /// Until then (`reopen_grace` after a start, but for a new filesystem's) no file is
    /// purged: a mount not back yet may have it open.
    reopen_grace_end: tokio::time::Instant,
    /// Files to look at again with a later purge: their purge came due before
    /// `reopen_grace_end`, or could not be made (a full disk under the master).
    purges_put_aside: std::sync::Mutex<BTreeSet<InodeId>>,
    next_session: AtomicU64,
    /// The cluster's secret: chunkservers and metaloggers prove they hold it.
    pub cluster_key: ClusterKey,
    /// Who may mount what; replaced when the exports file is reloaded.
    exports: tokio::sync::watch::Sender<Arc<Exports>>,
}

impl MasterState {
    /// Assembles the shared state.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        meta: Meta,
        cluster: Arc<Cluster>,
        leases: Leases,
        chunks: ChunkOps,
        replication_per_server: usize,
        exports: Exports,
        cluster_key: ClusterKey,
        lock_holders: LockHolders,
        reopen_grace: Duration,
        new_filesystem: bool,
    ) -> Self {
        // No mount can have a file of a new filesystem open from before its start.
        let start_grace = if new_filesystem {
            Duration::ZERO
        } else {
            reopen_grace
        };
        let replication = chunks.replication_trigger();
        MasterState {
            cluster_key,
            meta,
            cluster,
            leases,
            dir_leases: DirLeases::default(),
            chunks,
            open_files: OpenFiles::default(),
            locks: LockTable::default(),
            lock_holders,
            replication,
            replication_per_server,
            workers: WorkerRegistry::default(),
            metaloggers: Metaloggers::default(),
            purge_gate: tokio::sync::Mutex::new(()),
            purge_at_close: Default::default(),
            purges: Default::default(),
            reopen_grace,
            reopen_grace_end: tokio::time::Instant::now() + start_grace,
            purges_put_aside: Default::default(),
            next_session: AtomicU64::new(1),
            exports: tokio::sync::watch::Sender::new(Arc::new(exports)),
        }
    }

    /// The exports in force.
    pub fn exports(&self) -> Arc<Exports> {
        self.exports.borrow().clone()
    }

    /// Watches for reloads of the exports file.
    pub fn exports_changes(&self) -> tokio::sync::watch::Receiver<Arc<Exports>> {
        self.exports.subscribe()
    }

    /// Puts reloaded exports in force; sessions they no longer let in are closed.
    pub fn set_exports(&self, exports: Exports) {
        self.exports.send_replace(Arc::new(exports));
    }

    /// A holder of its own for a write lease the master takes for one operation (a truncate
    /// into a chunk): two such operations on one chunk wait for each other as clients do, where
    /// a single shared holder would let each take the lease the other holds.
    pub fn master_holder(&self) -> SessionId {
        self.new_session()
    }

    /// A fresh session id (ids are per master run, from 1).
    pub fn new_session(&self) -> SessionId {
        SessionId(self.next_session.fetch_add(1, Ordering::Relaxed))
    }
}

impl MasterState {
    /// Deletes a file for good if nothing needs it any more: no session has it open, it has no
    /// name left, and it is not waiting out its trash time (unless it was purged by hand).
    /// Called when one of these may have just become true (a close, an unlink, a trash time
    /// up); a file that still has a name is left alone. Returns whether it was purged.
    pub async fn purge_if_unused(&self, inode: InodeId) -> bool {
        self.purge_all_if_unused(vec![inode]).await > 0
    }

    /// [`MasterState::purge_if_unused`] for many files, purged in one pass on the blocking
    /// pool; returns how many were purged. Within the reopen grace after a start none is: each
    /// not open yet is put aside, as are files whose purge could not be checked or made (the
    /// master's disk full), for [`MasterState::purge_put_aside`].
    pub async fn purge_all_if_unused(&self, inodes: Vec<InodeId>) -> usize {
        let _gate = self.purge_gate.lock().await;
        if self.defers_purges(&inodes) {
            return 0;
        }
        self.purge_unused(inodes).await
    }

    /// Looks again at up to [`PUT_ASIDE_PER_CALL`] of the files put aside (the lowest inode
    /// numbers first), once the reopen grace is over; returns how many were purged. The
    /// end of the grace and then the purge worker, every few seconds, call it.
    pub async fn purge_put_aside(&self) -> usize {
        let _gate = self.purge_gate.lock().await;
        if tokio::time::Instant::now() < self.reopen_grace_end {
            return 0;
        }
        let taken: Vec<InodeId> = {
            let mut put_aside = self.lock_purges_put_aside();
            (0..PUT_ASIDE_PER_CALL)
                .map_while(|_| put_aside.pop_first())
                .collect()
        };
        self.purge_unused(taken).await
    }

    /// Purges those of `inodes` nobody has open and whose time has come (the caller holds the
    /// purge gate).
    async fn purge_unused(&self, inodes: Vec<InodeId>) -> usize {
        let now = Timestamp::now();
        let mut due = Vec::with_capacity(inodes.len());
        for inode in inodes {
            if self.open_files.is_open(inode) {
                continue;
            }
            if !self.lock_purge_at_close().contains(&inode) {
                match self.meta.read(move |s| s.purge_due(inode, now)).await {
                    Ok(true) => {}
                    Ok(false) | Err(Status::NotFound) => continue,
                    Err(status) => {
                        tracing::warn!(%inode, %status, "cannot check whether a file is to be purged; trying again later");
                        self.lock_purges_put_aside().insert(inode);
                        self.purges.nudge();
                        continue;
                    }
                }
            }
            due.push(inode);
        }
        self.purge(&due).await
    }

    /// Deletes a trashed file for good, as its owner asked: now, or at its last close while
    /// some session has it open.
    pub async fn purge_by_hand(&self, inode: InodeId) {
        let _gate = self.purge_gate.lock().await;
        self.lock_purge_at_close().insert(inode);
        if self.open_files.is_open(inode) || self.defers_purges(&[inode]) {
            return;
        }
        self.purge(&[inode]).await;
    }

    /// Within the reopen grace after a start, puts `inodes` aside for
    /// [`MasterState::purge_put_aside`] and says so: a mount that has not reconnected yet may
    /// have one of them open. The caller holds the purge gate.
    fn defers_purges(&self, inodes: &[InodeId]) -> bool {
        if tokio::time::Instant::now() >= self.reopen_grace_end {
            return false;
        }
        let mut after_grace = self.lock_purges_put_aside();
        for &inode in inodes {
            if !self.open_files.is_open(inode) {
                after_grace.insert(inode);
            }
        }
        true
    }

    /// How many files put aside (during the reopen grace, or after a failed purge) are still
    /// to be looked at.
    pub fn put_aside(&self) -> usize {
        self.lock_purges_put_aside().len()
    }

    fn lock_purges_put_aside(&self) -> std::sync::MutexGuard<'_, BTreeSet<InodeId>> {
        self.purges_put_aside
            .lock()
            .unwrap_or_else(|p| p.into_inner())
    }

    /// When the reopen grace after this start ends.
    pub fn reopen_grace_end(&self) -> tokio::time::Instant {
        self.reopen_grace_end
    }

    /// Forgets a purge by hand that waits for a close: the file came back from the trash.
    pub fn cancel_purge_at_close(&self, inode: InodeId) {
        self.lock_purge_at_close().remove(&inode);
    }

    fn lock_purge_at_close(&self) -> std::sync::MutexGuard<'_, HashSet<InodeId>> {
        self.purge_at_close
            .lock()
            .unwrap_or_else(|p| p.into_inner())
    }

    /// Purges files now (the caller holds the purge gate and has checked nobody has them
    /// open); returns how many were purged. One whose purge fails is put aside for the next
    /// purge (a purge by hand stays asked for).
    async fn purge(&self, inodes: &[InodeId]) -> usize {
        let ops = inodes
            .iter()
            .map(|&inode| MetaOp::Purge { inode })
            .collect();
        let mut purged = 0;
        let mut failed = None;
        for (inode, result) in inodes.iter().zip(self.meta.commit_all(ops).await) {
            match result {
                Ok((_, outcome)) => {
                    self.chunks.delete_purged(outcome.freed_chunks);
                    purged += 1;
                }
                Err(Status::NotFound) => {}
                Err(status) => {
                    self.lock_purges_put_aside().insert(*inode);
                    let (count, _) = failed.get_or_insert((0, status));
                    *count += 1;
                    continue;
                }
            }
            self.lock_purge_at_close().remove(inode);
        }
        if let Some((count, status)) = failed {
            tracing::warn!(count, %status, "cannot purge files; trying again in a few seconds");
            self.purges.nudge();
        }
        purged
    }
}

impl MasterState {
    /// Records that `session` opened these files (never in the middle of a purge decision).
    pub async fn register_open(&self, session: SessionId, inodes: &[InodeId]) {
        let _gate = self.purge_gate.lock().await;
        for inode in inodes {
            self.open_files.open(*inode, session);
        }
    }
}

/// The metaloggers connected now and how far each has got, for `elkfs status`.
#[derive(Default)]
pub struct Metaloggers {
    peers: std::sync::Mutex<Vec<elkfs_proto::info::MetaloggerStatus>>,
}

impl Metaloggers {
    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<elkfs_proto::info::MetaloggerStatus>> {
        self.peers.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Records a connected metalogger.
    pub fn add(&self, addr: std::net::SocketAddr) {
        self.lock()
            .push(elkfs_proto::info::MetaloggerStatus { addr, version: 0 });
    }

    /// Records that a metalogger holds everything up to `version`.
    pub fn holds(&self, addr: std::net::SocketAddr, version: u64) {
        for m in self.lock().iter_mut().filter(|m| m.addr == addr) {
            m.version = version;
        }
    }

    /// Forgets a metalogger that disconnected.
    pub fn remove(&self, addr: std::net::SocketAddr) {
        self.lock().retain(|m| m.addr != addr);
    }

    /// Every connected metalogger.
    pub fn list(&self) -> Vec<elkfs_proto::info::MetaloggerStatus> {
        self.lock().clone()
    }
}
