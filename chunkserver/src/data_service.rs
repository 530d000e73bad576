//! The data port: reads (hash-checked by the store), chained writes (stored here and forwarded
//! to the next server of the chain in the order they arrived), and syncs.

use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use elkfs_proto::capability::{Access, Capability, CapabilityError};
use elkfs_proto::connection::{self, Dialer, NoMessage};
use elkfs_proto::data::{DataError, DataReply, DataRequest, DataResponse};
use elkfs_proto::geometry::{CHUNK_SIZE, MAX_COPIES};
use elkfs_proto::tls::TlsServer;
use elkfs_proto::{
    ChunkId, ChunkVersion, DATA_LIMITS, DataPool, Handler, Hello, Responder, Role, Status,
};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::capabilities::Capabilities;
use crate::master_link::CopyReport;
use crate::sequencer::Sequencer;
use crate::storage::{Store, blocking, status_of, unpanicked};

/// Requests one data connection may have in flight before it stops reading more.
const CONNECTION_IN_FLIGHT: usize = 64;

/// What every data connection shares.
pub struct DataService {
    /// The chunk store.
    pub store: Store,
    /// Per-chunk ordering of writes and commands.
    pub sequencer: Arc<Sequencer>,
    /// Connections to the next servers of chains.
    pub peers: Arc<DataPool>,
    /// Where damaged copies and copies writes created are reported (to the master).
    pub reports: mpsc::Sender<CopyReport>,
    /// Checks that each request carries the master's permission.
    pub capabilities: Arc<Capabilities>,
}

impl DataService {
    /// Builds the service; peers get connected on first forward, as `peer_dialer` says.
    pub fn new(
        store: Store,
        sequencer: Arc<Sequencer>,
        reports: mpsc::Sender<CopyReport>,
        capabilities: Arc<Capabilities>,
        peer_dialer: Dialer,
    ) -> Self {
        DataService {
            capabilities,
            store,
            sequencer,
            peers: Arc::new(DataPool::new(
                peer_dialer,
                Hello::new(Role::DataPeer, "elkfs-chunkserver"),
                DATA_LIMITS,
                "chunkserver",
            )),
            reports,
        }
    }
}

/// Accepts data connections until `stop`; with `tls`, only TLS connections.
pub async fn accept_loop(
    listener: TcpListener,
    service: Arc<DataService>,
    tls: Option<TlsServer>,
    stop: CancellationToken,
) {
    elkfs_proto::peer_limit::accept_loop(listener, stop, |stream, stop| {
        serve_connection(stream, service.clone(), tls.clone(), stop)
    })
    .await;
}

async fn serve_connection(
    stream: TcpStream,
    service: Arc<DataService>,
    tls: Option<TlsServer>,
    stop: CancellationToken,
) {
    let admit = |hello: &Hello, _peer: SocketAddr| match hello.role {
        Role::DataClient | Role::DataPeer => Ok(()),
        other => Err(format!(
            "the data port does not accept {other:?} connections"
        )),
    };
    let accepted = match connection::accept(stream, "elkfs-chunkserver", tls.as_ref(), admit).await
    {
        Ok(a) => a,
        Err(reason) => {
            tracing::warn!(%reason, "refused a data connection");
            return;
        }
    };
    let peer = accepted.peer;
    let handler = DataHandler {
        service,
        local: accepted.local,
        peer,
        in_flight: Arc::new(tokio::sync::Semaphore::new(CONNECTION_IN_FLIGHT)),
    };
    let result = accepted
        .serve::<NoMessage, NoMessage, DataRequest, DataResponse, _>(
            DATA_LIMITS,
            "data client",
            stop,
            |_| handler,
        )
        .await;
    if let Err(reason) = result {
        tracing::warn!(%peer, %reason, "closed a data connection");
    }
}

struct DataHandler {
    service: Arc<DataService>,
    local: SocketAddr,
    peer: SocketAddr,
    in_flight: Arc<tokio::sync::Semaphore>,
}

impl DataHandler {
    fn error(&self, status: Status) -> DataResponse {
        Err(DataError {
            status,
            server: self.local,
        })
    }

    /// Whether the request's capability allows it; the refusal to send when not.
    fn permitted(&self, request: &DataRequest) -> Result<(), DataResponse> {
        let (capability, chunk, version, access) = match request {
            DataRequest::Read {
                chunk,
                version,
                capability,
                ..
            } => (capability, *chunk, Some(*version), Access::Read),
            DataRequest::Write {
                chunk,
                version,
                capability,
                ..
            } => (capability, *chunk, Some(*version), Access::Write),
            DataRequest::Sync {
                chunk, capability, ..
            } => (capability, *chunk, None, Access::Read),
        };
        self.service
            .capabilities
            .check(capability, chunk, version, access)
            .map_err(|reason| {
                match reason {
                    CapabilityError::Expired => {
                        tracing::debug!(peer = %self.peer, %chunk, %reason, "refused a data request")
                    }
                    _ => {
                        tracing::warn!(peer = %self.peer, %chunk, %reason, "refused a data request")
                    }
                }
                self.error(Status::BadCapability)
            })
    }
}

impl Handler<DataRequest, DataResponse> for DataHandler {
    async fn handle(
        &mut self,
        request: DataRequest,
        data: Bytes,
        responder: Responder<DataResponse>,
    ) {
        // Bounds the memory one peer can tie up; waiting here pauses only this connection.
        let Ok(permit) = self.in_flight.clone().acquire_owned().await else {
            return;
        };
        if let Err(refusal) = self.permitted(&request) {
            responder.send(&refusal, Bytes::new()).await;
            return;
        }
        let service = self.service.clone();
        let local = self.local;
        match request {
            DataRequest::Read {
                chunk,
                version,
                offset,
                length,
                capability: _,
            } => {
                let length = length.min(DATA_LIMITS.max_data);
                fetch_ahead(&service, chunk, offset, length);
                tokio::spawn(async move {
                    if let Some(bytes) = service.store.read_cached(chunk, version, offset, length) {
                        responder.send(&Ok(DataReply::Read), bytes).await;
                        drop(permit);
                        return;
                    }
                    // From the disk: the blocking thread that read the bytes sends them too,
                    // sparing a hand-off back to the runtime, unless that would mean waiting for
                    // room in the connection's queue (a peer that does not read its answers
                    // must not hold blocking threads).
                    let runtime = tokio::runtime::Handle::current();
                    tokio::task::spawn_blocking(move || {
                        let (reply, data) = read(&service, local, chunk, version, offset, length);
                        if let Err(responder) = responder.try_send(&reply, data.clone()) {
                            runtime.spawn(async move {
                                responder.send(&reply, data).await;
                                drop(permit);
                            });
                        }
                    });
                });
            }
            DataRequest::Write {
                chunk,
                version,
                offset,
                chain,
                capability,
                create,
            } => {
                if offset as u64 + data.len() as u64 > CHUNK_SIZE || !valid_chain(local, &chain) {
                    responder
                        .send(&self.error(Status::Invalid), Bytes::new())
                        .await;
                    return;
                }
                let job = write(
                    service.clone(),
                    Placement {
                        local,
                        chunk,
                        version,
                        offset,
                        chain,
                        capability,
                        create,
                    },
                    data,
                    responder,
                    permit,
                );
                service.sequencer.submit(chunk, Box::pin(job));
            }
            DataRequest::Sync {
                chunk,
                chain,
                capability,
            } => {
                tokio::spawn(async move {
                    let reply = sync(&service, local, chunk, chain, capability).await;
                    responder.send(&reply, Bytes::new()).await;
                    drop(permit);
                });
            }
        }
    }
}

/// Starts fetching the chunks after `chunk` from the disk in the background, if small reads go
/// forward through neighbouring chunks (`ChunkStore::chunks_to_fetch_ahead`).
fn fetch_ahead(service: &Arc<DataService>, chunk: ChunkId, offset: u32, length: u32) {
    if let Some(ids) = service.store.chunks_to_fetch_ahead(chunk, offset, length) {
        let service = service.clone();
        tokio::task::spawn_blocking(move || service.store.fetch_ahead(ids));
    }
}

/// Reads from the disk (on a blocking thread); damage is reported to the master.
fn read(
    service: &DataService,
    local: SocketAddr,
    chunk: ChunkId,
    version: ChunkVersion,
    offset: u32,
    length: u32,
) -> (DataResponse, Bytes) {
    match unpanicked(chunk, || service.store.read(chunk, version, offset, length)) {
        Ok(bytes) => (Ok(DataReply::Read), bytes),
        Err(e) => {
            if e.is_damage() {
                tracing::warn!(error = %e, "damaged chunk copy");
                let _ =
                    service
                        .reports
                        .try_send(CopyReport::damaged(&service.store, chunk, version));
            } else {
                tracing::debug!(error = %e, "read refused");
            }
            let status = status_of(&e);
            (
                Err(DataError {
                    status,
                    server: local,
                }),
                Bytes::new(),
            )
        }
    }
}

/// Where a chained write goes: this server, the chunk and offset, the servers after this one,
/// and the permission it carries along the chain.
struct Placement {
    local: SocketAddr,
    chunk: ChunkId,
    version: ChunkVersion,
    offset: u32,
    chain: Vec<SocketAddr>,
    capability: Capability,
    /// The chunk may be created here if missing (see `DataRequest::Write`).
    create: bool,
}

/// One chained write, run in its chunk's turn: queue the forward to the next server (so the
/// chain sees writes in this same order), store locally, then let the next job of the chunk
/// start while the answer is gathered.
async fn write(
    service: Arc<DataService>,
    placement: Placement,
    data: Bytes,
    responder: Responder<DataResponse>,
    permit: tokio::sync::OwnedSemaphorePermit,
) {
    let Placement {
        local,
        chunk,
        version,
        offset,
        chain,
        capability,
        create,
    } = placement;
    let forward = match chain.split_first() {
        None => None,
        Some((next, rest)) => {
            let request = DataRequest::Write {
                chunk,
                version,
                offset,
                chain: rest.to_vec(),
                capability,
                create,
            };
            Some((
                *next,
                send_to(&service.peers, *next, &request, data.clone()).await,
            ))
        }
    };
    let creates = create && capability.access == Access::Create;
    let stored = blocking(&service.store, move |s| {
        if creates {
            s.write_creating(chunk, version, offset, &data)
        } else {
            s.write(chunk, version, offset, &data).map(|()| false)
        }
    })
    .await;
    if let Ok(true) = stored {
        let _ = service
            .reports
            .try_send(CopyReport::created(&service.store, chunk, version));
    }
    tokio::spawn(async move {
        let reply = match stored {
            Err(e) => {
                tracing::warn!(error = %e, "write failed");
                Err(DataError {
                    status: status_of(&e),
                    server: local,
                })
            }
            Ok(_) => match forward {
                None => Ok(DataReply::Written),
                Some((next, pending)) => finish_forward(&service.peers, next, pending).await,
            },
        };
        responder.send(&reply, Bytes::new()).await;
        drop(permit);
    });
}

type Pending = Result<elkfs_proto::PendingReply<DataResponse>, elkfs_proto::ConnError>;

async fn send_to(
    peers: &DataPool,
    next: SocketAddr,
    request: &DataRequest,
    data: Bytes,
) -> Pending {
    let conn = peers.get(next).await?;
    conn.send(request, data).await
}

/// The downstream answer, or an I/O error naming the downstream server.
async fn finish_forward(peers: &DataPool, next: SocketAddr, pending: Pending) -> DataResponse {
    let answer = match pending {
        Ok(p) => p.wait().await,
        Err(e) => Err(e),
    };
    match answer {
        Ok((reply, _)) => reply,
        Err(e) => {
            tracing::warn!(server = %next, error = %e, "forwarding to the next chunkserver failed");
            peers.forget(next);
            Err(DataError {
                status: Status::Io,
                server: next,
            })
        }
    }
}

/// A chain never comes back: at most [`MAX_COPIES`] - 1 further servers, none twice and not
/// this one. A chain through a server twice would have the connection between two servers
/// wait on itself once its in-flight places are all taken, forwarding nothing ever again.
fn valid_chain(local: SocketAddr, chain: &[SocketAddr]) -> bool {
    chain.len() < MAX_COPIES
        && !chain.contains(&local)
        && chain
            .iter()
            .enumerate()
            .all(|(i, addr)| !chain[..i].contains(addr))
}

async fn sync(
    service: &DataService,
    local: SocketAddr,
    chunk: ChunkId,
    chain: Vec<SocketAddr>,
    capability: Capability,
) -> DataResponse {
    if !valid_chain(local, &chain) {
        return Err(DataError {
            status: Status::Invalid,
            server: local,
        });
    }
    let forward = match chain.split_first() {
        None => None,
        Some((next, rest)) => {
            let request = DataRequest::Sync {
                chunk,
                chain: rest.to_vec(),
                capability,
            };
            Some((
                *next,
                send_to(&service.peers, *next, &request, Bytes::new()).await,
            ))
        }
    };
    if let Err(e) = blocking(&service.store, move |s| s.sync(chunk)).await {
        tracing::warn!(error = %e, "sync failed");
        // The sync pass reports it too, until it is gone; this is only sooner.
        if let (elkfs_chunkstore::ChunkError::WriteLost { .. }, Some(info)) =
            (&e, service.store.info(chunk))
        {
            let _ =
                service
                    .reports
                    .try_send(CopyReport::damaged(&service.store, chunk, info.version));
        }
        return Err(DataError {
            status: status_of(&e),
            server: local,
        });
    }
    match forward {
        None => Ok(DataReply::Synced),
        Some((next, pending)) => finish_forward(&service.peers, next, pending).await,
    }
}
