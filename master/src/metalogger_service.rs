//! Serving metaloggers: the changelog as it grows (long-polled), and metadata images for those
//! that fell behind what the changelog still holds.

use std::io::{Read, Seek, SeekFrom};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use elkfs_metastore::follow::{FollowError, Follower};
use elkfs_proto::auth::{Prover, cluster_proof, member_proved};
use elkfs_proto::metalogger::{MlReply, MlRequest, MlResponse};
use elkfs_proto::{Handler, Responder, Status};

use crate::state::MasterState;

/// How long a fetch waits for new records before answering with none.
const LONG_POLL: Duration = Duration::from_secs(1);

/// Largest batch of records sent at once.
const MAX_BATCH: u32 = 4 * 1024 * 1024;

/// Per-connection state of a metalogger.
pub struct MetaloggerHandler {
    state: Arc<MasterState>,
    peer: SocketAddr,
    follower: Option<Follower>,
    /// The nonce the metalogger must prove the cluster key for.
    nonce: Option<[u8; 32]>,
    /// It proved the key: changelog and images are served.
    joined: bool,
}

impl MetaloggerHandler {
    /// A handler for a metalogger connected from `peer`.
    pub fn new(state: Arc<MasterState>, peer: SocketAddr) -> MetaloggerHandler {
        MetaloggerHandler {
            state,
            peer,
            follower: None,
            nonce: None,
            joined: false,
        }
    }

    /// Answers a challenge, or lets the metalogger in if it proved the key.
    fn join(&mut self, request: MlRequest) -> MlResponse {
        match request {
            MlRequest::Challenge { nonce } => {
                let ours: [u8; 32] = rand::random();
                self.nonce = Some(ours);
                Ok(MlReply::Challenge {
                    proof: cluster_proof(&self.state.cluster_key, Prover::Master, &nonce),
                    nonce: ours,
                })
            }
            MlRequest::Join { proof } => {
                if !member_proved(&self.state.cluster_key, self.nonce.take(), &proof) {
                    tracing::warn!(peer = %self.peer, "refused a metalogger without this cluster's key; give it a copy of the master's cluster.key (--cluster-key)");
                    return Err(Status::AccessDenied);
                }
                self.joined = true;
                self.state.metaloggers.add(self.peer);
                tracing::info!(peer = %self.peer, "metalogger connected");
                Ok(MlReply::Joined)
            }
            _ => Err(Status::AccessDenied),
        }
    }
}

impl Drop for MetaloggerHandler {
    fn drop(&mut self) {
        if self.joined {
            self.state.metaloggers.remove(self.peer);
            tracing::info!(peer = %self.peer, "metalogger disconnected");
        }
    }
}

impl Handler<MlRequest, MlResponse> for MetaloggerHandler {
    async fn handle(&mut self, request: MlRequest, _data: Bytes, responder: Responder<MlResponse>) {
        if !self.joined {
            let reply = self.join(request);
            if reply.is_err() {
                responder.send_then_close(&reply).await;
            } else {
                responder.send(&reply, Bytes::new()).await;
            }
            return;
        }
        let (reply, data) = match request {
            MlRequest::Challenge { .. } | MlRequest::Join { .. } => {
                (Err(Status::Protocol), Bytes::new())
            }
            MlRequest::Fetch { after, max_bytes } => {
                // A metalogger asks for more only once what it has is fsynced.
                self.state.metaloggers.holds(self.peer, after);
                self.fetch(after, max_bytes).await
            }
            MlRequest::LatestImage => (latest_image(&self.state).await, Bytes::new()),
            MlRequest::FetchImage {
                version,
                offset,
                length,
            } => image_part(&self.state, version, offset, length).await,
        };
        responder.send(&reply, data).await;
    }
}

impl MetaloggerHandler {
    async fn fetch(&mut self, after: u64, max_bytes: u32) -> (MlResponse, Bytes) {
        let dir = self.state.meta.store().dir().join("changelog");
        let mut follower = match self.follower.take() {
            Some(f) if f.last() == after => f,
            _ => Follower::new(&dir, after),
        };
        let mut committed = self.state.meta.committed();
        let max = max_bytes.min(MAX_BATCH) as usize;
        let mut waited = false;
        loop {
            let result = tokio::task::spawn_blocking(move || {
                let read = follower.read(max);
                (follower, read)
            })
            .await;
            let (f, read) = match result {
                Ok(r) => r,
                Err(_) => return (Err(Status::Io), Bytes::new()),
            };
            follower = f;
            match read {
                Ok(bytes) if bytes.is_empty() && !waited => {
                    // Nothing new: wait for the next commit, briefly.
                    waited = true;
                    committed.borrow_and_update();
                    let _ = tokio::time::timeout(LONG_POLL, committed.changed()).await;
                }
                Ok(bytes) => {
                    let last = follower.last();
                    self.follower = Some(follower);
                    // Only what is on the master's disk: records a power cut could still take
                    // back would leave a metalogger ahead of the master, on another history.
                    // They go with the next periodic fsync (every `commit_interval`), so that a
                    // busy master does not fsync once per change for its metaloggers.
                    if !bytes.is_empty()
                        && let Err(e) = self.state.meta.durable_through(last, LONG_POLL).await
                    {
                        tracing::error!(error = %e, "cannot fsync the changelog");
                        return (Err(Status::Io), Bytes::new());
                    }
                    return (Ok(MlReply::Records { last }), Bytes::from(bytes));
                }
                Err(FollowError::Gone(_)) => return (Ok(MlReply::Gone), Bytes::new()),
                Err(FollowError::Store(e)) => {
                    tracing::error!(peer = %self.peer, error = %e, "cannot read the changelog for a metalogger");
                    return (Err(Status::Io), Bytes::new());
                }
            }
        }
    }
}

fn newest_image(state: &MasterState) -> Result<Option<(u64, PathBuf)>, Status> {
    match elkfs_metastore::image::list(state.meta.store().dir()) {
        Ok(images) => Ok(images.into_iter().next()),
        Err(e) => {
            tracing::error!(error = %e, "cannot list metadata images");
            Err(Status::Io)
        }
    }
}

async fn latest_image(state: &MasterState) -> MlResponse {
    let Some((version, path)) = newest_image(state)? else {
        return Ok(MlReply::Image {
            version: 0,
            size: 0,
        });
    };
    let size = tokio::fs::metadata(&path)
        .await
        .map_err(|_| Status::Io)?
        .len();
    Ok(MlReply::Image { version, size })
}

async fn image_part(
    state: &MasterState,
    version: u64,
    offset: u64,
    length: u32,
) -> (MlResponse, Bytes) {
    let path = state
        .meta
        .store()
        .dir()
        .join(elkfs_metastore::image::file_name(version));
    let length = length.min(MAX_BATCH);
    let read = tokio::task::spawn_blocking(move || -> std::io::Result<Vec<u8>> {
        let mut file = std::fs::File::open(&path)?;
        file.seek(SeekFrom::Start(offset))?;
        let mut buf = Vec::with_capacity(length as usize);
        file.take(length as u64).read_to_end(&mut buf)?;
        Ok(buf)
    })
    .await;
    match read {
        Ok(Ok(bytes)) => (Ok(MlReply::ImagePart), Bytes::from(bytes)),
        // The image was replaced by a newer one meanwhile: start over with that.
        Ok(Err(e)) if e.kind() == std::io::ErrorKind::NotFound => {
            (Err(Status::NotFound), Bytes::new())
        }
        _ => (Err(Status::Io), Bytes::new()),
    }
}
