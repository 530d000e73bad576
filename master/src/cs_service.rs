//! Serving chunkservers: registration with their chunk lists, space reports, damage reports.
//! The same connection carries the master's commands the other way.

use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use elkfs_metastore::MetaOp;
use elkfs_proto::auth::{Prover, cluster_proof, member_proved};
use elkfs_proto::capability::unix_now;
use elkfs_proto::chunkserver::{ChunkReport, CsReply, CsRequest, CsResponse};
use elkfs_proto::{Handler, Responder, ServerId, Status};

use crate::cluster::CsLink;
use crate::state::MasterState;

/// Per-connection state of a chunkserver.
pub struct CsHandler {
    state: Arc<MasterState>,
    link: CsLink,
    peer: SocketAddr,
    server: Option<(ServerId, SocketAddr)>,
    /// The nonce this connection's chunkserver must prove the cluster key for.
    nonce: Option<[u8; 32]>,
    /// It failed to prove the key: the connection closes once it has been told.
    refused: bool,
    reported: u64,
    /// It has reported every copy it holds (`RegisterDone`).
    registered: bool,
    stopping: bool,
    heard: Arc<std::sync::Mutex<tokio::time::Instant>>,
}

impl CsHandler {
    /// A handler for a chunkserver connected from `peer`; `link` sends it commands.
    pub fn new(state: Arc<MasterState>, link: CsLink, peer: SocketAddr) -> CsHandler {
        let heard = Arc::new(std::sync::Mutex::new(tokio::time::Instant::now()));
        tokio::spawn(watch_silence(link.clone(), heard.clone(), peer));
        CsHandler {
            state,
            link,
            peer,
            server: None,
            nonce: None,
            refused: false,
            reported: 0,
            registered: false,
            stopping: false,
            heard,
        }
    }
}

/// Cuts the connection of a chunkserver that stopped talking (hung, or cut off by the network
/// with the connection left open): it is then lost, like one whose connection broke.
async fn watch_silence(
    link: CsLink,
    heard: Arc<std::sync::Mutex<tokio::time::Instant>>,
    peer: SocketAddr,
) {
    let limit = elkfs_common::defaults::CHUNKSERVER_SILENCE;
    loop {
        tokio::select! {
            _ = link.closed() => return,
            _ = tokio::time::sleep(limit / 3) => {}
        }
        let last = *heard.lock().unwrap_or_else(|p| p.into_inner());
        if last.elapsed() > limit {
            tracing::warn!(%peer, silent_for = ?last.elapsed(), "chunkserver went silent; treating it as lost");
            link.close("silent for too long");
            return;
        }
    }
}

impl Drop for CsHandler {
    fn drop(&mut self) {
        if let Some((id, addr)) = self.server {
            let held = self.state.cluster.remove_server(id, self.stopping);
            if self.stopping {
                tracing::info!(server = %id, addr = %addr, chunks = held, "chunkserver stopped for maintenance");
            } else {
                tracing::warn!(server = %id, addr = %addr, chunks = held, "chunkserver disconnected");
            }
            self.state.replication.wake();
        }
    }
}

/// What sorting a batch of reported chunks found.
#[derive(Default)]
struct Sorted {
    valid: Vec<ChunkReport>,
    newer: Vec<ChunkReport>,
    stale: Vec<ChunkReport>,
    orphans: Vec<ChunkReport>,
    unknown: usize,
}

impl Handler<CsRequest, CsResponse> for CsHandler {
    async fn handle(&mut self, request: CsRequest, _data: Bytes, responder: Responder<CsResponse>) {
        let reply = self.serve(request).await;
        if self.refused {
            responder.send_then_close(&reply).await;
        } else {
            responder.send(&reply, Bytes::new()).await;
        }
    }
}

impl CsHandler {
    async fn serve(&mut self, request: CsRequest) -> CsResponse {
        *self.heard.lock().unwrap_or_else(|p| p.into_inner()) = tokio::time::Instant::now();
        match request {
            CsRequest::Challenge { nonce } => {
                let ours: [u8; 32] = rand::random();
                self.nonce = Some(ours);
                Ok(CsReply::Challenge {
                    proof: cluster_proof(&self.state.cluster_key, Prover::Master, &nonce),
                    nonce: ours,
                })
            }
            CsRequest::Register {
                server_id,
                data_addr,
                space,
                chunk_count,
                proof,
            } => {
                if self.server.is_some() {
                    return Err(Status::Protocol);
                }
                if !member_proved(&self.state.cluster_key, self.nonce.take(), &proof) {
                    tracing::warn!(peer = %self.peer, "refused a chunkserver without this cluster's key; give it a copy of the master's cluster.key (--cluster-key)");
                    self.refused = true;
                    return Err(Status::AccessDenied);
                }
                // A server listening on 0.0.0.0 is reached at the address it connected from.
                let data_addr = if data_addr.ip().is_unspecified() {
                    SocketAddr::new(self.peer.ip(), data_addr.port())
                } else {
                    data_addr
                };
                let id =
                    self.state
                        .cluster
                        .add_server(server_id, data_addr, space, self.link.clone());
                self.server = Some((id, data_addr));
                tracing::info!(server = %id, addr = %data_addr, chunks = chunk_count, total = space.total, available = space.available, "chunkserver registering");
                Ok(CsReply::Registered {
                    server: id,
                    clock: unix_now(),
                })
            }
            CsRequest::Chunks(batch) => {
                let (id, _) = self.server.ok_or(Status::Protocol)?;
                self.reported += batch.len() as u64;
                self.take_chunks(id, batch).await?;
                Ok(CsReply::Done)
            }
            CsRequest::RegisterDone => {
                let (id, addr) = self.server.ok_or(Status::Protocol)?;
                tracing::info!(server = %id, addr = %addr, chunks = self.reported, "chunkserver registered");
                self.registered = true;
                self.state.cluster.forget_unlisted_damage(id);
                self.state.replication.wake();
                Ok(CsReply::Done)
            }
            CsRequest::Stopping => {
                self.server.ok_or(Status::Protocol)?;
                self.stopping = true;
                Ok(CsReply::Done)
            }
            CsRequest::Heartbeat { space } => {
                let (id, _) = self.server.ok_or(Status::Protocol)?;
                self.state.cluster.update_space(id, space);
                Ok(CsReply::Done)
            }
            CsRequest::ChunkCreated { chunk } => {
                let (id, _) = self.server.ok_or(Status::Protocol)?;
                self.take_created(id, chunk).await?;
                Ok(CsReply::Done)
            }
            CsRequest::ChunkDamaged { chunk } => {
                let (id, addr) = self.server.ok_or(Status::Protocol)?;
                self.take_damaged(id, addr, chunk);
                Ok(CsReply::Done)
            }
        }
    }

    /// A copy its server found damaged or to have lost writes: never served again; the
    /// replication worker deletes it once a good copy exists elsewhere (with none left it stays,
    /// as the last trace of the data) and meanwhile copies the chunk to another server.
    fn take_damaged(&self, server: ServerId, addr: SocketAddr, chunk: ChunkReport) {
        let cluster = &self.state.cluster;
        // A server repeats its reports of copies whose writes were lost until they are gone (a
        // report may be lost with the link): each copy is taken once.
        if cluster.is_damaged(chunk.chunk, server, chunk.version) {
            return;
        }
        let intact_left = match self.registered {
            true => match cluster.mark_damaged(chunk.chunk, server) {
                Some(intact_left) => intact_left,
                None => {
                    tracing::debug!(chunk = %chunk.chunk, server = %addr, "damage reported for a copy the master does not know there; ignored");
                    return;
                }
            },
            false => {
                // Sent before its chunk list: copies that lost writes before the server or the
                // master restarted, taken as damaged as soon as they are listed. The intact
                // copies may be on servers not back yet, so none is missed here.
                cluster.note_damage_before_listing(chunk.chunk, server, chunk.version);
                true
            }
        };
        tracing::warn!(chunk = %chunk.chunk, version = %chunk.version, server = %addr, "chunkserver reports a damaged copy");
        if !intact_left {
            tracing::error!(chunk = %chunk.chunk, version = %chunk.version, "no intact copy of a chunk is left");
        }
        // A disk that damaged a copy may well damage the next ones.
        cluster.pass_over(server);
        self.state.replication.wake();
    }

    /// A copy a write created: counted if the chunk is at that version and no copy of it is
    /// known on this server; deleted if no file has the chunk (its file was cut or removed
    /// meanwhile); otherwise left to the commands that changed it since.
    async fn take_created(&self, server: ServerId, report: ChunkReport) -> Result<(), Status> {
        let chunk = report.chunk;
        let known = self
            .state
            .meta
            .read(move |s| Ok((s.chunk(chunk)?, s.chunk_ids_reserved()?)))
            .await?;
        match known {
            (Some(rec), _) if rec.version == report.version => {
                self.state
                    .cluster
                    .add_copy_if_unknown(chunk, server, report.version);
            }
            (Some(_), _) => {}
            (None, reserved) if chunk.0 < reserved => self.delete_orphan(server, report),
            (None, _) => {
                tracing::warn!(%server, %chunk, "chunkserver made a chunk this master never created; left in place");
            }
        }
        Ok(())
    }

    /// Deletes a copy no file refers to, in the background.
    fn delete_orphan(&self, server: ServerId, report: ChunkReport) {
        if let Some(target) = self.state.cluster.target(server) {
            self.state
                .chunks
                .delete_copies(report.chunk, report.version, &[target]);
        }
    }

    async fn take_chunks(&self, server: ServerId, batch: Vec<ChunkReport>) -> Result<(), Status> {
        let sorted = self
            .state
            .meta
            .read(move |s| {
                let reserved = s.chunk_ids_reserved()?;
                let mut sorted = Sorted::default();
                for &report in &batch {
                    match s.chunk(report.chunk)? {
                        Some(rec) if rec.version == report.version => sorted.valid.push(report),
                        Some(rec) if report.version > rec.version => sorted.newer.push(report),
                        Some(_) => sorted.stale.push(report),
                        None if report.chunk.0 < reserved => sorted.orphans.push(report),
                        None => sorted.unknown += 1,
                    }
                }
                Ok(sorted)
            })
            .await?;
        let cluster = &self.state.cluster;
        for r in &sorted.valid {
            cluster.set_copy_marked(r.chunk, server, r.version, r.marked_for_removal);
        }
        for r in &sorted.newer {
            if cluster.is_damaged(r.chunk, server, r.version) {
                // Never adopted: it would make the good copies stale. Deleted as a stale one.
                cluster.set_copy_marked(r.chunk, server, r.version, r.marked_for_removal);
                continue;
            }
            // Only a master that died between bumping a version and logging it leaves these.
            tracing::warn!(chunk = %r.chunk, version = %r.version, "adopting a copy newer than the metadata");
            let op = MetaOp::SetChunkVersion {
                chunk: r.chunk,
                version: r.version,
            };
            if self.state.meta.commit(op).await.is_ok() {
                cluster.set_copy_marked(r.chunk, server, r.version, r.marked_for_removal);
            }
        }
        if !sorted.stale.is_empty() {
            tracing::info!(server = %server, count = sorted.stale.len(), "chunkserver holds stale copies; they are not served");
        }
        for r in &sorted.stale {
            // Known, so the replication worker deletes them once current copies are safe.
            cluster.set_copy_marked(r.chunk, server, r.version, r.marked_for_removal);
        }
        if sorted.unknown > 0 {
            tracing::warn!(server = %server, count = sorted.unknown, "chunkserver holds chunks this master never created; left in place");
        }
        if let Some(target) = cluster.target(server) {
            let orphans = sorted.orphans.iter().map(|r| (r.chunk, r.version));
            self.state.chunks.delete_orphans(&target, orphans);
        }
        Ok(())
    }
}
