//! Write-behind for one file: writes are buffered (up to a fixed budget) and streamed by a
//! background task to the chain of chunkservers the master leases, a window of frames in flight.
//! Errors surface at the next write, flush or fsync, as on NFS and MooseFS.
//!
//! Pieces never cross a chunk boundary and are sent in the order they were written, so a
//! chunkserver applies overlapping writes in the program's order. A piece is dropped (and its
//! share of the budget returned) only once every server of the chain has stored it; if the chain
//! fails, the unacknowledged pieces are sent again on a fresh lease.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use elkfs_common::defaults::WRITE_LEASE_RENEWAL;
use elkfs_proto::capability::{Access, CAPABILITY_LIFETIME, Capability};
use elkfs_proto::data::{DataReply, DataRequest, DataResponse};
use elkfs_proto::geometry::{CHUNK_SIZE, MAX_DATA_PAYLOAD, chunk_index_of, offset_in_chunk};
use elkfs_proto::master::{MasterReply, MasterRequest, WriteLease};
use elkfs_proto::{ChunkId, ConnError, DataConnection, InodeId, PendingReply, Status};
use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore};

use crate::Client;

/// Fresh leases tried for the same pieces before the write fails with the last error.
const CHAIN_ATTEMPTS: u32 = 4;

/// How long a writer whose buffer ran empty keeps its lease for more data, once the program
/// has shown that it writes in bursts (see `State::bursts`). A program that writes a little
/// slower than the chain empties the buffer after every write; ending the lease each time would
/// cost two master round trips and a version bump on every copy per write.
const LEASE_LINGER: Duration = Duration::from_millis(100);

/// How old a lease may get before the writer ends it the next time its buffer runs empty, so
/// that other mounts see the length of a file written slowly but steadily within about this
/// long.
const LEASE_REPORT_INTERVAL: Duration = Duration::from_secs(1);

/// Bytes written at one offset, waiting to be sent or acknowledged.
struct Piece {
    offset: u64,
    data: BytesMut,
    _budget: OwnedSemaphorePermit,
}

impl Piece {
    fn end(&self) -> u64 {
        self.offset + self.data.len() as u64
    }

    /// Whether `len` more bytes at `offset` can join this piece.
    fn can_extend(&self, offset: u64, len: usize) -> bool {
        offset == self.end()
            && self.data.len() + len <= MAX_DATA_PAYLOAD as usize
            && chunk_index_of(self.offset) == chunk_index_of(offset + len as u64 - 1)
    }
}

#[derive(Default)]
struct State {
    queue: VecDeque<Piece>,
    error: Option<Status>,
    running: bool,
    max_end: u64,
    unsynced: Vec<Unsynced>,
    /// A flush waits: the lease is ended as soon as the buffer runs empty, without lingering.
    end_wanted: bool,
    /// The last lease ended because the buffer ran empty, not because a flush asked.
    paused: bool,
    /// Data came again after such a pause: the program writes in bursts, so the lease is kept
    /// through its pauses. Until then a lease ends as soon as the buffer runs empty: most files
    /// are written in one go and closed, and their close should not wait for the lease's end.
    bursts: bool,
}

/// A chunk written since the last fsync, the chain that took the data and the permission that
/// came with it.
#[derive(Clone, Debug)]
struct Unsynced {
    chunk: ChunkId,
    index: u32,
    chain: Vec<SocketAddr>,
    capability: Capability,
}

/// The write-behind buffer of one open file (shared by all its open handles in this client).
pub struct FileWriter {
    inode: InodeId,
    client: Arc<Client>,
    state: Mutex<State>,
    budget: Arc<Semaphore>,
    idle: Notify,
    /// Wakes a lingering background task: more data, or a flush that wants the lease ended.
    wake: Notify,
}

struct ActiveLease {
    index: u32,
    lease: WriteLease,
    conn: DataConnection,
    /// When the master granted it: it is renewed well before its capability expires.
    granted: Instant,
    /// The end of what the whole chain stored under it (and under the failed leases it took
    /// over, see `open_lease`): the length its end reports. Only this lease's own
    /// writes: an end remembered from before would bring back a length that another client
    /// has cut since. Past 0 once a piece is stored, when the chunk exists on every server of
    /// the chain (see `create_missing`).
    stored_end: AtomicU64,
}

impl ActiveLease {
    /// How long to keep the lease once the buffer runs empty; zero when it is due to end.
    fn linger(&self) -> Duration {
        LEASE_LINGER.min(LEASE_REPORT_INTERVAL.saturating_sub(self.granted.elapsed()))
    }

    /// Whether it is old enough to be renewed before the next piece: before the master's lease
    /// can lapse and well before its capability expires.
    fn due_for_renewal(&self) -> bool {
        renewal_due(self.granted.elapsed())
    }

    /// Whether a piece sent now may create the chunk where it is missing: only under a new
    /// chunk's first lease (whose creation the master does not wait for), and only until the
    /// chain has acknowledged a piece. Later, a missing chunk was deleted (a truncate, an
    /// unlink) or lost with its server, and making it again would take the write for stored.
    fn create_missing(&self) -> bool {
        self.lease.capability.access == Access::Create
            && self.stored_end.load(Ordering::Relaxed) == 0
    }
}

/// Whether a lease held `age` must be given up for a new one before the next piece.
fn renewal_due(age: Duration) -> bool {
    age > WRITE_LEASE_RENEWAL.min(CAPABILITY_LIFETIME / 2)
}

/// A piece taken off the queue: its bytes are frozen so resending it costs no copy.
struct Outgoing {
    offset: u64,
    data: Bytes,
    _budget: OwnedSemaphorePermit,
}

impl From<Piece> for Outgoing {
    fn from(p: Piece) -> Outgoing {
        Outgoing {
            offset: p.offset,
            data: p.data.freeze(),
            _budget: p._budget,
        }
    }
}

struct InFlight {
    piece: Outgoing,
    reply: Result<PendingReply<DataResponse>, ConnError>,
}

impl FileWriter {
    pub(crate) fn new(client: Arc<Client>, inode: InodeId, budget_bytes: usize) -> FileWriter {
        FileWriter {
            inode,
            client,
            state: Mutex::new(State::default()),
            budget: Arc::new(Semaphore::new(budget_bytes)),
            idle: Notify::new(),
            wake: Notify::new(),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Buffers `data` for writing at `offset`; waits only while the buffer is full. Returns an
    /// error from an earlier write-behind failure (once).
    pub async fn write(self: &Arc<Self>, offset: u64, data: Bytes) -> Result<(), Status> {
        if let Some(e) = self.lock().error.take() {
            return Err(e);
        }
        if offset.checked_add(data.len() as u64).is_none() {
            return Err(Status::TooBig);
        }
        let mut rest = data;
        let mut at = offset;
        while !rest.is_empty() {
            let room_in_chunk = (CHUNK_SIZE - offset_in_chunk(at) as u64) as usize;
            let n = rest.len().min(room_in_chunk).min(MAX_DATA_PAYLOAD as usize);
            // The last (usually the only) piece takes the buffer itself, so that nothing else
            // shares it and it becomes the queued piece without a copy.
            let part = if n == rest.len() {
                std::mem::take(&mut rest)
            } else {
                rest.split_to(n)
            };
            let permit = self
                .budget
                .clone()
                .acquire_many_owned(n as u32)
                .await
                .map_err(|_| Status::Io)?;
            let start = {
                let mut st = self.lock();
                match st.queue.back_mut().filter(|p| p.can_extend(at, n)) {
                    Some(last) => {
                        last.data.extend_from_slice(&part);
                        last._budget.merge(permit);
                    }
                    None => {
                        // A write's last piece, unshared, becomes the queued piece without
                        // a copy; a part of a larger write is copied.
                        let bytes = part
                            .try_into_mut()
                            .unwrap_or_else(|shared| BytesMut::from(&shared[..]));
                        st.queue.push_back(Piece {
                            offset: at,
                            data: bytes,
                            _budget: permit,
                        });
                    }
                }
                st.max_end = st.max_end.max(at + n as u64);
                let start = !std::mem::replace(&mut st.running, true);
                if start && st.paused {
                    st.bursts = true;
                }
                start
            };
            if start {
                let me = self.clone();
                tokio::spawn(async move { me.run().await });
            } else {
                self.wake.notify_one();
            }
            at += n as u64;
        }
        Ok(())
    }

    /// The file length as this writer knows it (what it has written, buffered or not).
    pub fn written_end(&self) -> u64 {
        self.lock().max_end
    }

    /// Whether data is buffered or on its way.
    pub fn is_busy(&self) -> bool {
        let st = self.lock();
        st.running || !st.queue.is_empty()
    }

    /// What [`FileWriter::flush`] would return when nothing is buffered or on its way: the
    /// write-behind error, if one happened (once); `None` while data is still going out.
    pub fn flushed_now(&self) -> Option<Result<(), Status>> {
        let mut st = self.lock();
        if st.running || !st.queue.is_empty() {
            return None;
        }
        Some(match st.error.take() {
            Some(e) => Err(e),
            None => Ok(()),
        })
    }

    /// Sets the length this writer reports (after a truncate by this client).
    pub fn set_length(&self, length: u64) {
        self.lock().max_end = length;
    }

    /// Waits until everything written so far is stored on every server of its chain and the
    /// master knows the new length; returns (and clears) any write-behind error.
    pub async fn flush(&self) -> Result<(), Status> {
        loop {
            let idle = self.idle.notified();
            tokio::pin!(idle);
            idle.as_mut().enable();
            {
                let mut st = self.lock();
                if !st.running && st.queue.is_empty() {
                    return match st.error.take() {
                        Some(e) => Err(e),
                        None => Ok(()),
                    };
                }
                st.end_wanted = true;
            }
            self.wake.notify_one();
            idle.await;
        }
    }

    /// Flushes, then has every chunkserver that took data since the last sync fsync it.
    pub async fn sync_data(&self) -> Result<(), Status> {
        self.flush().await?;
        let unsynced = self.lock().unsynced.clone();
        let results = futures::future::join_all(unsynced.iter().map(|u| self.sync_chunk(u))).await;
        let mut outcome = Ok(());
        let mut st = self.lock();
        for (u, result) in unsynced.iter().zip(results) {
            match result {
                Ok(()) => st.unsynced.retain(|x| x.chunk != u.chunk),
                Err(status) => outcome = Err(status),
            }
        }
        outcome
    }

    /// fsyncs one chunk along the chain that took its data; if a server of that chain is gone,
    /// on every copy the master lists as valid now.
    async fn sync_chunk(&self, u: &Unsynced) -> Result<(), Status> {
        if self
            .sync_chain(u.chunk, &u.chain, u.capability)
            .await
            .is_ok()
        {
            return Ok(());
        }
        let request = MasterRequest::ReadChunk {
            inode: self.inode,
            index: u.index,
        };
        let location = match self.client.master.request(&request).await? {
            MasterReply::ReadLocation(l) => l,
            _ => return Err(Status::Protocol),
        };
        let capability = match (location.chunk, location.capability) {
            (Some((chunk, _)), Some(capability))
                if chunk == u.chunk && !location.servers.is_empty() =>
            {
                capability
            }
            // The chunk is gone from the file (truncated, or the file removed): nothing to sync.
            _ => return Ok(()),
        };
        for server in location.servers {
            self.sync_chain(u.chunk, &[server], capability).await?;
        }
        Ok(())
    }

    async fn sync_chain(
        &self,
        chunk: ChunkId,
        chain: &[SocketAddr],
        capability: Capability,
    ) -> Result<(), Status> {
        let Some((first, rest)) = chain.split_first() else {
            return Ok(());
        };
        let conn = self.client.data.get(*first).await.map_err(|_| Status::Io)?;
        let request = DataRequest::Sync {
            chunk,
            chain: rest.to_vec(),
            capability,
        };
        let call = conn.call(&request, Bytes::new());
        match tokio::time::timeout(elkfs_common::defaults::DATA_TIMEOUT, call).await {
            Ok(Ok((Ok(DataReply::Synced), _))) => Ok(()),
            Ok(Ok((Err(e), _))) => {
                tracing::debug!(%chunk, error = %e, "fsync of a chunk failed");
                Err(Status::Io)
            }
            _ => {
                self.client.data.forget(*first);
                Err(Status::Io)
            }
        }
    }

    fn record_error(&self, status: Status) {
        let mut st = self.lock();
        st.error.get_or_insert(status);
    }

    /// The background task: sends queued pieces until the queue is empty, then ends the lease
    /// (after a pause, see [`LEASE_LINGER`]).
    async fn run(self: Arc<Self>) {
        let mut lease: Option<ActiveLease> = None;
        let mut flight: VecDeque<InFlight> = VecDeque::new();
        loop {
            let next = self.lock().queue.pop_front().map(Outgoing::from);
            let Some(piece) = next else {
                self.drain(&mut flight, &mut lease).await;
                let (more, bursts) = {
                    let st = self.lock();
                    (!st.queue.is_empty(), st.bursts)
                };
                if more {
                    continue;
                }
                if let Some(active) = &lease
                    && bursts
                    && self.more_in_time(active.linger()).await
                {
                    continue;
                }
                let unasked = !self.lock().end_wanted;
                if let Some(active) = lease.take() {
                    self.end_lease(active).await;
                }
                let mut st = self.lock();
                if st.queue.is_empty() {
                    st.running = false;
                    st.end_wanted = false;
                    st.paused = unasked;
                    drop(st);
                    self.idle.notify_waiters();
                    return;
                }
                continue;
            };
            let index = chunk_index_of(piece.offset);
            if lease
                .as_ref()
                .is_some_and(|l| l.index != index || l.due_for_renewal())
            {
                self.drain(&mut flight, &mut lease).await;
                if let Some(active) = lease.take() {
                    self.end_lease(active).await;
                }
            }
            if lease.is_none() {
                match self.open_lease(index, &[], 0).await {
                    Ok(active) => lease = Some(active),
                    Err(failure) => {
                        self.record_error(failure.status);
                        continue;
                    }
                }
            }
            while flight.len() >= self.client.config.write_window {
                self.complete_oldest(&mut flight, &mut lease).await;
            }
            if let Some(active) = &lease {
                let reply = send_piece(active, &piece).await;
                flight.push_back(InFlight { piece, reply });
            }
        }
    }

    /// Keeps the lease through a pause of the program's writes: whether more data came within
    /// `linger`, before a flush asked for the lease to end.
    async fn more_in_time(&self, linger: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + linger;
        loop {
            {
                let st = self.lock();
                if !st.queue.is_empty() {
                    return true;
                }
                if st.end_wanted {
                    return false;
                }
            }
            if tokio::time::timeout_at(deadline, self.wake.notified())
                .await
                .is_err()
            {
                return !self.lock().queue.is_empty();
            }
        }
    }

    /// Takes the write lease on chunk `index` (leaving the `failed` servers out of its chain)
    /// and connects to its chain. `carried` is what an earlier lease on the slot stored and has
    /// not reported: the new lease reports it too when its chunk holds that data (the same
    /// chunk at a new version, or a snapshot's private copy of it), not when it is a new chunk
    /// (`Create`: the old one was dropped, by a truncate, with the data stored there). A lease
    /// granted but unusable is ended at once, reporting that.
    async fn open_lease(
        &self,
        index: u32,
        failed: &[SocketAddr],
        carried: u64,
    ) -> Result<ActiveLease, LeaseFailure> {
        let not_granted = |status| LeaseFailure {
            status,
            ended: false,
        };
        let request = if failed.is_empty() {
            MasterRequest::WriteChunk {
                inode: self.inode,
                index,
                carried,
            }
        } else {
            MasterRequest::RetryWriteChunk {
                inode: self.inode,
                index,
                failed: failed.to_vec(),
            }
        };
        let lease = match self.client.master.request(&request).await {
            Ok(MasterReply::WriteLease(l)) => l,
            Ok(_) => return Err(not_granted(Status::Protocol)),
            Err(status) => return Err(not_granted(status)),
        };
        let carried = if lease.capability.access == Access::Create {
            0
        } else {
            carried
        };
        let connected = match lease.chain.first() {
            Some(first) => self.client.data.get(*first).await.map_err(|e| {
                tracing::warn!(server = %first, error = %e, "cannot connect to the first chunkserver of a chain");
                Status::Io
            }),
            None => Err(Status::NoSpace),
        };
        match connected {
            Ok(conn) => Ok(ActiveLease {
                index,
                lease,
                conn,
                granted: Instant::now(),
                stored_end: AtomicU64::new(carried),
            }),
            Err(status) => {
                let end = MasterRequest::WriteEnd {
                    inode: self.inode,
                    index,
                    chunk: lease.chunk,
                    length: carried,
                };
                let _ = self.client.master.request(&end).await;
                Err(LeaseFailure {
                    status,
                    ended: true,
                })
            }
        }
    }

    /// Ends a lease, reporting the length that every server of a chain has stored.
    async fn end_lease(&self, active: ActiveLease) {
        let length = active.stored_end.load(Ordering::Relaxed);
        let request = MasterRequest::WriteEnd {
            inode: self.inode,
            index: active.index,
            chunk: active.lease.chunk,
            length,
        };
        if let Err(status) = self.client.master.request(&request).await {
            self.record_error(status);
        }
        self.client.locations.forget_file(self.inode);
    }

    /// Waits for every piece in flight.
    async fn drain(&self, flight: &mut VecDeque<InFlight>, lease: &mut Option<ActiveLease>) {
        while !flight.is_empty() {
            self.complete_oldest(flight, lease).await;
        }
    }

    /// Waits for the oldest piece in flight; on failure, sends everything unacknowledged again
    /// on a fresh lease (a few times), then gives up with an error.
    async fn complete_oldest(
        &self,
        flight: &mut VecDeque<InFlight>,
        lease: &mut Option<ActiveLease>,
    ) {
        let Some(oldest) = flight.pop_front() else {
            return;
        };
        let Some(head) = lease.as_ref().map(|l| l.conn.peer()) else {
            return;
        };
        let mut failure = match wait_reply(oldest.reply, head).await {
            Ok(()) => {
                if let Some(active) = lease.as_ref() {
                    self.note_stored(active, &oldest.piece);
                }
                return;
            }
            Err(f) => f,
        };
        let mut failed_servers: Vec<SocketAddr> = failure.server.into_iter().collect();
        // A server that ran out of space: if every server is dropped, the writer must hear
        // ENOSPC, not that no server holds the chunk.
        let mut out_of_space = failure.status == Status::NoSpace;
        let mut pieces = vec![oldest.piece];
        for f in flight.drain(..) {
            if let Err(f) = wait_reply(f.reply, head).await {
                out_of_space |= f.status == Status::NoSpace;
                if let Some(server) = f.server
                    && !failed_servers.contains(&server)
                {
                    failed_servers.push(server);
                }
            }
            pieces.push(f.piece);
        }
        let Some(index) = lease.as_ref().map(|l| l.index) else {
            self.record_error(failure.status);
            return;
        };
        for attempt in 1..CHAIN_ATTEMPTS {
            tracing::info!(inode = %self.inode, index, attempt, status = %failure.status, failed = ?failed_servers, "chunk write failed; retrying on a new chain");
            let carried = lease
                .as_ref()
                .map_or(0, |l| l.stored_end.load(Ordering::Relaxed));
            let granted = match self.open_lease(index, &failed_servers, carried).await {
                Ok(a) => a,
                Err(f) => {
                    if f.ended {
                        // That lease reported what the failed one had stored, and ended.
                        *lease = None;
                    }
                    failure = ChainFailure {
                        status: f.status,
                        server: None,
                    };
                    continue;
                }
            };
            // It takes the failed one's place at once, so that giving up ends the lease the
            // master granted last, on the chunk the slot holds now.
            let active = &*lease.insert(granted);
            let head = active.conn.peer();
            let mut all_ok = true;
            for piece in &pieces {
                match wait_reply(send_piece(active, piece).await, head).await {
                    Ok(()) => self.note_stored(active, piece),
                    Err(f) => {
                        out_of_space |= f.status == Status::NoSpace;
                        if let Some(server) = f.server
                            && !failed_servers.contains(&server)
                        {
                            failed_servers.push(server);
                        }
                        failure = f;
                        all_ok = false;
                        break;
                    }
                }
            }
            if all_ok {
                return;
            }
        }
        let status = match failure.status {
            Status::NoValidCopy if out_of_space => Status::NoSpace,
            status => status,
        };
        tracing::warn!(inode = %self.inode, index, %status, "giving up on a chunk write");
        self.record_error(status);
        // Ending the lease lets other writers in at once and records what did get stored.
        if let Some(active) = lease.take() {
            self.end_lease(active).await;
        }
    }

    /// Records that every server of the lease's chain holds `piece`.
    fn note_stored(&self, active: &ActiveLease, piece: &Outgoing) {
        active
            .stored_end
            .fetch_max(piece.offset + piece.data.len() as u64, Ordering::Relaxed);
        let mut st = self.lock();
        let chunk = active.lease.chunk;
        match st.unsynced.iter_mut().find(|u| u.chunk == chunk) {
            Some(entry) => {
                entry.chain = active.lease.chain.clone();
                entry.capability = active.lease.capability;
            }
            None => st.unsynced.push(Unsynced {
                chunk,
                index: active.index,
                chain: active.lease.chain.clone(),
                capability: active.lease.capability,
            }),
        }
    }
}

async fn send_piece(
    active: &ActiveLease,
    piece: &Outgoing,
) -> Result<PendingReply<DataResponse>, ConnError> {
    let request = DataRequest::Write {
        chunk: active.lease.chunk,
        version: active.lease.version,
        offset: offset_in_chunk(piece.offset),
        chain: active.lease.chain[1..].to_vec(),
        capability: active.lease.capability,
        create: active.create_missing(),
    };
    active.conn.send(&request, piece.data.clone()).await
}

/// Why no lease could be used, and whether one granted was ended already.
#[derive(Clone, Copy, Debug)]
struct LeaseFailure {
    status: Status,
    ended: bool,
}

/// Why a chained write failed, and which server failed when that is known.
#[derive(Clone, Copy, Debug)]
struct ChainFailure {
    status: Status,
    server: Option<SocketAddr>,
}

async fn wait_reply(
    reply: Result<PendingReply<DataResponse>, ConnError>,
    head: SocketAddr,
) -> Result<(), ChainFailure> {
    let failure = |status, server| Err(ChainFailure { status, server });
    match reply {
        Ok(pending) => {
            match tokio::time::timeout(elkfs_common::defaults::DATA_TIMEOUT, pending.wait())
                .await
                .unwrap_or_else(|_| {
                    Err(ConnError::Closed {
                        peer: head.to_string(),
                        reason: "no answer in time".to_string(),
                    })
                }) {
                Ok((Ok(DataReply::Written), _)) => Ok(()),
                Ok((Ok(_), _)) => failure(Status::Protocol, None),
                // An expired permission says nothing against the server: renew it only.
                // Nor does a chunk gone from it (a truncate or an unlink freed it meanwhile):
                // the next lease finds the slot as it is now.
                Ok((Err(e), _)) if matches!(e.status, Status::BadCapability | Status::NotFound) => {
                    tracing::debug!(error = %e, "chained write refused");
                    failure(e.status, None)
                }
                Ok((Err(e), _)) => {
                    tracing::debug!(error = %e, "chained write failed");
                    failure(e.status, Some(e.server))
                }
                Err(e) => {
                    tracing::debug!(error = %e, "chained write failed");
                    failure(Status::Io, Some(head))
                }
            }
        }
        Err(e) => {
            tracing::debug!(error = %e, "cannot send a chained write");
            failure(Status::Io, Some(head))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_lease_written_under_for_a_while_is_renewed_before_the_master_lets_it_lapse() {
        use elkfs_common::defaults::{WRITE_LEASE_TIMEOUT, WRITE_LEASE_TIMEOUT_MIN};
        assert!(!renewal_due(Duration::from_secs(5)));
        assert!(renewal_due(WRITE_LEASE_RENEWAL + Duration::from_millis(1)));
        // With room for a round trip and a slow piece before the master's shortest timeout.
        assert!(WRITE_LEASE_RENEWAL * 3 / 2 <= WRITE_LEASE_TIMEOUT_MIN);
        assert!(WRITE_LEASE_TIMEOUT_MIN <= WRITE_LEASE_TIMEOUT);
    }
}
