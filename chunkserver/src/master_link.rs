//! The chunkserver's connection to the master: register with every chunk held, report space and
//! damaged copies and copies writes created, carry out the master's commands; reconnect forever when the master goes away.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use bytes::Bytes;
use elkfs_chunkstore::{ChunkError, ChunkStore};
use elkfs_common::defaults;
use elkfs_proto::auth::{Prover, cluster_proof, proofs_match};
use elkfs_proto::chunkserver::{
    ChunkReport, CsCommand, CsCommandResult, CsReply, CsRequest, CsResponse, Space,
};
use elkfs_proto::cluster_key::ClusterKey;
use elkfs_proto::connection::Dialer;
use elkfs_proto::{
    CHUNK_REPORT_BATCH, ChunkId, ChunkVersion, Connection, DataPool, Handler, Hello,
    MASTER_CHUNKSERVER_LIMITS, Responder, Role, connection,
};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::capabilities::Capabilities;
use crate::replicate;
use crate::sequencer::Sequencer;
use crate::storage::{Store, blocking, status_of};

type MasterLink = Connection<CsRequest, CsResponse>;

/// What the link needs to know about this server.
pub struct LinkSetup {
    /// This server's persistent id.
    pub server_id: u64,
    /// How to reach the master, `HOST[:PORT]` (resolved at every attempt).
    pub master: String,
    /// This server's data address, as it tells the master.
    pub data_addr: SocketAddr,
    /// Where to announce readiness after the first registration.
    pub ready_file: Option<PathBuf>,
    /// The cluster's key, proved to the master (and by it).
    pub cluster_key: ClusterKey,
    /// Capability checks, which learn the master's clock at each registration.
    pub capabilities: Arc<Capabilities>,
    /// How to connect to the master (plain or TLS).
    pub dialer: Dialer,
}

/// Keeps a registered connection to the master until `stop`; what arrives on `reports` is
/// passed on.
pub async fn run(
    setup: LinkSetup,
    store: Store,
    sequencer: Arc<Sequencer>,
    peers: Arc<DataPool>,
    mut reports: mpsc::Receiver<CopyReport>,
    stop: CancellationToken,
) {
    let mut delay = defaults::RECONNECT_MIN;
    let mut announced = false;
    loop {
        let attempt = async {
            let addr = elkfs_common::address::resolve_async(&setup.master, defaults::MASTER_PORT)
                .await
                .map_err(|e| e.to_string())?;
            let trusted = Arc::new(AtomicBool::new(false));
            let handler = CommandHandler {
                store: store.clone(),
                sequencer: sequencer.clone(),
                peers: peers.clone(),
                capabilities: setup.capabilities.clone(),
                trusted: trusted.clone(),
            };
            let link: MasterLink = connection::connect_with(
                &setup.dialer,
                addr,
                &Hello::new(Role::Chunkserver, "elkfs-chunkserver"),
                MASTER_CHUNKSERVER_LIMITS,
                "master",
                handler,
            )
            .await
            .map_err(|e| e.to_string())?;
            register(&link, &store, &setup, &trusted).await?;
            Ok::<_, String>((addr, link))
        };
        let (addr, link) = tokio::select! {
            r = attempt => match r {
                Ok(ok) => ok,
                Err(e) => {
                    tracing::warn!(master = %setup.master, error = %e, retry_in = ?delay, "cannot register with the master");
                    tokio::select! {
                        _ = tokio::time::sleep(delay) => {}
                        _ = stop.cancelled() => return,
                    }
                    delay = (delay * 2).min(defaults::RECONNECT_MAX);
                    continue;
                }
            },
            _ = stop.cancelled() => return,
        };
        delay = defaults::RECONNECT_MIN;
        tracing::info!(master = %addr, "registered with the master");
        if !announced {
            announced = true;
            if let Some(path) = &setup.ready_file
                && let Err(e) =
                    elkfs_common::daemon::write_ready_file(path, &setup.data_addr.to_string())
            {
                tracing::error!(error = %e, "cannot write the ready file");
            }
        }
        let reason = serve_link(&link, &store, &mut reports, &stop).await;
        if stop.is_cancelled() {
            return;
        }
        tracing::warn!(master = %addr, %reason, "lost the master; reconnecting");
    }
}

/// Proves the cluster key to the master and has it prove the key back (only then are its
/// commands carried out), then reports every chunk held, and those whose writes were lost.
async fn register(
    link: &MasterLink,
    store: &Store,
    setup: &LinkSetup,
    trusted: &AtomicBool,
) -> Result<(), String> {
    let ours: [u8; 32] = rand::random();
    let theirs = match expect_ok(link.ask(&CsRequest::Challenge { nonce: ours }).await)? {
        CsReply::Challenge { proof, nonce } => {
            let expected = cluster_proof(&setup.cluster_key, Prover::Master, &ours);
            if !proofs_match(&proof, &expected) {
                return Err(
                    "the master does not hold this cluster's key (is --cluster-key the master's cluster.key?)"
                        .to_string(),
                );
            }
            nonce
        }
        other => return Err(format!("unexpected answer to a challenge: {other:?}")),
    };
    trusted.store(true, Ordering::Release);
    let space = space_of(store).await;
    let chunks: Vec<ChunkReport> = store
        .list()
        .into_iter()
        .map(|c| ChunkReport {
            chunk: c.id,
            version: c.version,
            marked_for_removal: store.is_marked_for_removal(c.id),
        })
        .collect();
    let registered = expect_ok(
        link.ask(&CsRequest::Register {
            server_id: setup.server_id,
            data_addr: setup.data_addr,
            space,
            chunk_count: chunks.len() as u64,
            proof: cluster_proof(&setup.cluster_key, Prover::Member, &theirs),
        })
        .await,
    )
    .map_err(|e| {
        if e.contains(&elkfs_proto::Status::AccessDenied.to_string()) {
            format!("{e}: this server's cluster key is not the master's (copy the master's cluster.key to --cluster-key)")
        } else {
            e
        }
    })?;
    if let CsReply::Registered { clock, .. } = registered {
        setup.capabilities.set_master_clock(clock);
    }
    // The master may have forgotten (a restart) or never heard (our restart) that these copies
    // lost writes: it hears it before the list, so it never takes them for good ones.
    for lost in store.lost_copies() {
        let chunk = report_of(store, lost.id, lost.version);
        expect_ok(link.ask(&CsRequest::ChunkDamaged { chunk }).await)?;
    }
    for batch in chunks.chunks(CHUNK_REPORT_BATCH) {
        expect_ok(link.ask(&CsRequest::Chunks(batch.to_vec())).await)?;
    }
    expect_ok(link.ask(&CsRequest::RegisterDone).await)?;
    Ok(())
}

fn expect_ok(r: Result<CsResponse, elkfs_proto::ConnError>) -> Result<CsReply, String> {
    match r {
        Ok(Ok(reply)) => Ok(reply),
        Ok(Err(status)) => Err(format!("master refused: {status}")),
        Err(e) => Err(e.to_string()),
    }
}

async fn space_of(store: &Store) -> Space {
    match blocking(store, |s| {
        s.space().map_err(|e| elkfs_chunkstore::ChunkError::Io {
            chunk: elkfs_proto::ChunkId(0),
            path: Default::default(),
            source: std::io::Error::other(e.to_string()),
        })
    })
    .await
    {
        Ok(s) => Space {
            total: s.total,
            available: s.available,
        },
        Err(e) => {
            tracing::warn!(error = %e, "cannot read disk space");
            Space::default()
        }
    }
}

/// What the chunkserver tells the master about one copy between heartbeats.
#[derive(Clone, Copy, Debug)]
pub enum CopyReport {
    /// The copy failed its hash check or could not be read: the master replaces it.
    Damaged(ChunkReport),
    /// A write created the copy (a new chunk's first write can come before the master's
    /// command): the master may not know the copy is here.
    Created(ChunkReport),
}

impl CopyReport {
    /// That `store`'s copy of `chunk` at `version` is damaged.
    pub fn damaged(store: &ChunkStore, chunk: ChunkId, version: ChunkVersion) -> CopyReport {
        CopyReport::Damaged(report_of(store, chunk, version))
    }

    /// That a write created `store`'s copy of `chunk` at `version`.
    pub fn created(store: &ChunkStore, chunk: ChunkId, version: ChunkVersion) -> CopyReport {
        CopyReport::Created(report_of(store, chunk, version))
    }
}

/// A copy as the master hears of it, saying whether it sits in a directory marked for removal.
fn report_of(store: &ChunkStore, chunk: ChunkId, version: ChunkVersion) -> ChunkReport {
    ChunkReport {
        chunk,
        version,
        marked_for_removal: store.is_marked_for_removal(chunk),
    }
}

/// Heartbeats and copy reports until the link closes; returns why it closed.
async fn serve_link(
    link: &MasterLink,
    store: &Store,
    reports: &mut mpsc::Receiver<CopyReport>,
    stop: &CancellationToken,
) -> String {
    let mut ticker = tokio::time::interval(defaults::HEARTBEAT_INTERVAL);
    loop {
        tokio::select! {
            reason = link.closed() => return reason,
            _ = stop.cancelled() => {
                // A planned stop: the master waits for us before copying our chunks elsewhere.
                let _ = tokio::time::timeout(
                    std::time::Duration::from_secs(2),
                    link.ask(&CsRequest::Stopping),
                )
                .await;
                link.close("chunkserver stopping");
                return "stopping".to_string();
            }
            _ = ticker.tick() => {
                let space = space_of(store).await;
                if let Err(e) = expect_ok(link.ask(&CsRequest::Heartbeat { space }).await) {
                    return e;
                }
            }
            Some(report) = reports.recv() => {
                let request = match report {
                    CopyReport::Damaged(chunk) => CsRequest::ChunkDamaged { chunk },
                    CopyReport::Created(chunk) => CsRequest::ChunkCreated { chunk },
                };
                if let Err(e) = expect_ok(link.ask(&request).await) {
                    return e;
                }
            }
        }
    }
}

/// Carries out the master's commands, once the master has proved the cluster key.
struct CommandHandler {
    store: Store,
    sequencer: Arc<Sequencer>,
    peers: Arc<DataPool>,
    capabilities: Arc<Capabilities>,
    trusted: Arc<AtomicBool>,
}

impl Handler<CsCommand, CsCommandResult> for CommandHandler {
    async fn handle(
        &mut self,
        command: CsCommand,
        _data: Bytes,
        responder: Responder<CsCommandResult>,
    ) {
        if !self.trusted.load(Ordering::Acquire) {
            tracing::warn!("a command came before the master proved the cluster key; refused");
            responder
                .send(&Err(elkfs_proto::Status::AccessDenied), Bytes::new())
                .await;
            return;
        }
        let store = self.store.clone();
        let peers = self.peers.clone();
        let capabilities = self.capabilities.clone();
        let chunk = match &command {
            CsCommand::Create { chunk, .. }
            | CsCommand::SetVersion { chunk, .. }
            | CsCommand::Truncate { chunk, .. }
            | CsCommand::Delete { chunk, .. }
            | CsCommand::Replicate { chunk, .. }
            | CsCommand::Duplicate { chunk, .. } => Some(*chunk),
            // Copies of chunks no file refers to: no write may still need them first.
            CsCommand::DeleteMany { .. } => None,
        };
        let job = Box::pin(async move {
            let result = execute(&store, &peers, &capabilities, command).await;
            tokio::spawn(async move { responder.send(&result, Bytes::new()).await });
        });
        match chunk {
            // In the chunk's turn, after the writes that arrived before the command.
            Some(chunk) => self.sequencer.submit(chunk, job),
            None => {
                tokio::spawn(job);
            }
        }
    }
}

async fn execute(
    store: &Store,
    peers: &DataPool,
    capabilities: &Capabilities,
    command: CsCommand,
) -> CsCommandResult {
    let result = match command {
        CsCommand::Create { chunk, version } => {
            blocking(store, move |s| s.ensure(chunk, version).map(drop)).await
        }
        CsCommand::SetVersion { chunk, from, to } => {
            blocking(store, move |s| s.set_version(chunk, from, to)).await
        }
        CsCommand::Truncate {
            chunk,
            from,
            to,
            length,
        } => blocking(store, move |s| s.truncate(chunk, from, to, length)).await,
        CsCommand::Duplicate {
            chunk,
            version,
            new_chunk,
            new_version,
        } => {
            blocking(store, move |s| {
                s.duplicate(chunk, version, new_chunk, new_version)
            })
            .await
        }
        CsCommand::Delete { chunk, version } => {
            blocking(store, move |s| s.delete(chunk, version)).await
        }
        CsCommand::DeleteMany { chunks } => blocking(store, move |s| delete_each(s, chunks)).await,
        CsCommand::Replicate {
            chunk,
            version,
            source,
        } => {
            let capability = capabilities.for_copying(chunk, version);
            return replicate::replicate(store, peers, chunk, version, source, capability)
                .await
                .inspect_err(|status| {
                    tracing::warn!(%chunk, %source, %status, "replication failed");
                });
        }
    };
    result.map_err(|e| {
        tracing::warn!(error = %e, "command failed");
        status_of(&e)
    })
}

/// Deletes every copy in `chunks` (`ChunkStore::delete_freed`), in one trip to the blocking
/// pool; the first failure is the answer (the others are logged here).
fn delete_each(store: &ChunkStore, chunks: Vec<(ChunkId, ChunkVersion)>) -> Result<(), ChunkError> {
    let mut first = Ok(());
    for (chunk, version) in chunks {
        match store.delete_freed(chunk, version) {
            Ok(()) => {}
            Err(e) if first.is_ok() => first = Err(e),
            Err(e) => tracing::warn!(error = %e, "could not delete a chunk copy"),
        }
    }
    first
}

#[cfg(test)]
mod tests {
    use super::*;
    use elkfs_chunkstore::DataDirSpec;

    #[test]
    fn a_batch_deletes_what_it_can_notes_what_is_not_here_and_answers_the_first_failure() {
        let dir = tempfile::tempdir().unwrap();
        let (store, _) = ChunkStore::open(&[DataDirSpec {
            path: dir.path().to_path_buf(),
            marked_for_removal: false,
        }])
        .unwrap();
        let (v1, v2) = (ChunkVersion(1), ChunkVersion(2));
        store.create(ChunkId(1), v1).unwrap();
        store.create(ChunkId(2), v2).unwrap();
        store.create(ChunkId(4), v1).unwrap();
        let result = delete_each(
            &store,
            vec![
                (ChunkId(1), v1),
                (ChunkId(3), v1),
                (ChunkId(2), v1),
                (ChunkId(4), v1),
            ],
        );
        assert!(
            matches!(result, Err(ChunkError::WrongVersion { .. })),
            "{result:?}"
        );
        assert!(store.info(ChunkId(1)).is_none());
        assert!(store.info(ChunkId(4)).is_none());
        assert_eq!(store.info(ChunkId(2)).map(|i| i.version), Some(v2));
        assert!(
            matches!(
                store.ensure(ChunkId(3), v1),
                Err(ChunkError::NotFound { .. })
            ),
            "a Create arriving after the batch does not make the chunk again"
        );
    }
}
