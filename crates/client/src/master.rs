//! The client's session with the master: one multiplexed connection, reopened (with the session)
//! when it breaks; requests wait and retry until the master is back or the timeout passes.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use elkfs_common::defaults;

use crate::closes::{CLOSE_DELAY, CloseQueue, CloseTracker, PendingClose};
use crate::dir_leases::{self, DirLeases, Generation};
use crate::held_locks::HeldLocks;
use crate::recent_changes::RecentChanges;
use crate::request_slots::{REQUEST_SLOTS, RequestSlots};
use elkfs_proto::connection::Dialer;
use elkfs_proto::master::{MasterReply, MasterRequest};
use elkfs_proto::tls::{ClusterTrust, ServerRole, TlsError};
use elkfs_proto::{
    ConnError, Hello, InodeId, MASTER_CLIENT_LIMITS, MasterConnection, NoRequests, Role, SessionId,
    Status, connection,
};
use tokio::sync::watch;

use crate::open_files::{FirstOpen, OpenFiles};
use tokio::time::Instant;

/// Most locks claimed in one `ReclaimLocks` (the master refuses more).
const RECLAIM_BATCH: usize = elkfs_proto::master::MAX_RECLAIM;
/// Why the first connection to the master failed (later failures are retried).
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    /// The address does not resolve.
    #[error("{0}")]
    Address(#[from] elkfs_common::address::AddressError),
    /// Nothing answers at the address, or the connection broke.
    #[error("cannot reach the master at {addr}: {reason}")]
    Unreachable {
        /// Where we tried.
        addr: String,
        /// What happened.
        reason: String,
    },
    /// The master answered but refused us.
    #[error("the master at {addr} refused the connection: {reason}")]
    Refused {
        /// Where.
        addr: String,
        /// What it said.
        reason: String,
    },
    /// The master refused to open the session (for example, the subdirectory does not exist).
    #[error("the master at {addr} refused to open a session for '{subdir}': {status}")]
    Session {
        /// Where.
        addr: String,
        /// The subdirectory asked for.
        subdir: String,
        /// Why.
        status: Status,
    },
}

/// How a session is opened, beyond the master and the subdirectory.
#[derive(Clone, Debug, Default)]
pub struct SessionOptions {
    /// The export's password, if it has one (proved, never sent).
    pub password: Option<String>,
    /// The local address to connect from (the master's exports file matches on it).
    pub bind: Option<IpAddr>,
    /// Encrypt the traffic, trusting servers certified by this cluster authority.
    pub tls: Option<ClusterTrust>,
}

impl SessionOptions {
    /// How to reach the master.
    fn master_dialer(&self) -> Result<Dialer, TlsError> {
        Ok(Dialer {
            bind: self.bind,
            tls: self
                .tls
                .as_ref()
                .map(|trust| trust.client(ServerRole::Master))
                .transpose()?,
        })
    }
}

#[derive(Clone)]
struct Session {
    conn: MasterConnection,
    id: SessionId,
    /// Counts the connections this client has had, from 1.
    generation: Generation,
}

/// A session with the master that survives master restarts.
pub struct MasterClient {
    target: String,
    subdir: String,
    mount_point: String,
    timeout: Duration,
    options: SessionOptions,
    root: InodeId,
    read_only: bool,
    session: Mutex<Option<Session>>,
    reconnecting: tokio::sync::Mutex<()>,
    /// Held while the leases are given back for good, so that a second caller waits for it.
    giving_back: tokio::sync::Mutex<()>,
    open_files: Mutex<OpenFiles>,
    /// Byte-range locks held through this client, claimed again after a reconnect.
    pub locks: HeldLocks,
    closes: Arc<CloseTracker>,
    /// Closes waiting to go to the master together.
    close_queue: CloseQueue,
    /// This client's random id (for numbered requests, lease give-backs and lock claims), the
    /// next number, and the slots numbered requests hold.
    client_id: u64,
    next_seq: std::sync::atomic::AtomicU64,
    slots: RequestSlots,
    /// Requests that may have changed something, counted when answered.
    changes: std::sync::atomic::AtomicU64,
    /// What those requests may have changed, for what is kept from earlier answers.
    recent: RecentChanges,
    /// Directories whose absent names this client may answer for itself.
    dir_leases: DirLeases,
    /// The generation of the last connection opened.
    generations: std::sync::atomic::AtomicU64,
}

impl MasterClient {
    /// Connects to the master at `target` (`HOST[:PORT]`) and opens a session rooted at `subdir`;
    /// fails at once with the reason if that is not possible.
    pub async fn connect(
        target: &str,
        subdir: &str,
        mount_point: &str,
        timeout: Duration,
    ) -> Result<MasterClient, ConnectError> {
        Self::connect_with(
            target,
            subdir,
            mount_point,
            timeout,
            SessionOptions::default(),
        )
        .await
    }

    /// Like [`MasterClient::connect`], with a password or a local address to connect from.
    pub async fn connect_with(
        target: &str,
        subdir: &str,
        mount_point: &str,
        timeout: Duration,
        options: SessionOptions,
    ) -> Result<MasterClient, ConnectError> {
        let client_id = client_id();
        let (session, root, read_only) =
            open_session(target, subdir, mount_point, &options, client_id).await?;
        tracing::debug!(session = %session.id, %root, "session opened");
        Ok(MasterClient {
            target: target.to_string(),
            subdir: subdir.to_string(),
            mount_point: mount_point.to_string(),
            timeout,
            options,
            root,
            read_only,
            session: Mutex::new(Some(session)),
            reconnecting: tokio::sync::Mutex::new(()),
            giving_back: tokio::sync::Mutex::new(()),
            open_files: Mutex::new(OpenFiles {
                counts: HashMap::new(),
                opening: HashMap::new(),
                generation: 1,
            }),
            locks: HeldLocks::default(),
            closes: Arc::default(),
            close_queue: CloseQueue::default(),
            client_id,
            next_seq: std::sync::atomic::AtomicU64::new(1),
            slots: RequestSlots::new(REQUEST_SLOTS),
            changes: std::sync::atomic::AtomicU64::new(0),
            recent: RecentChanges::default(),
            dir_leases: DirLeases::default(),
            generations: std::sync::atomic::AtomicU64::new(1),
        })
    }

    /// The inode that is this session's root directory.
    pub fn root(&self) -> InodeId {
        self.root
    }

    /// Whether the export this session uses is read-only.
    pub fn read_only(&self) -> bool {
        self.read_only
    }

    /// The master's address as given.
    pub fn target(&self) -> &str {
        &self.target
    }

    /// The subdirectory this session is rooted at.
    pub fn subdir(&self) -> &str {
        &self.subdir
    }

    /// Sends a request, waiting out master restarts up to the timeout (then EIO). Changes that
    /// must not happen twice are numbered, so a retry after a lost reply is answered, not
    /// repeated.
    pub async fn request(&self, request: &MasterRequest) -> Result<MasterReply, Status> {
        self.request_answered_in(request).await.0
    }

    /// [`MasterClient::request`], also saying which connection answered.
    pub(crate) async fn request_answered_in(
        &self,
        request: &MasterRequest,
    ) -> (Result<MasterReply, Status>, Option<Generation>) {
        let number = self.dir_leases.before(request);
        let sent = (Instant::now(), dir_leases::suspended());
        let mut noted = NotedRequest {
            leases: &self.dir_leases,
            request,
            answered: false,
        };
        let (reply, generation) = self.send(request).await;
        noted.answered = true;
        self.dir_leases
            .after(request, number, generation, sent, &reply);
        self.recent.record(request);
        if !reads_only(request) {
            self.changes
                .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        }
        (reply, generation)
    }

    /// How many requests that may have changed metadata this client has had answered (or
    /// given up on). Something fetched while this stayed the same reflects every change this
    /// client made before it.
    pub fn changes(&self) -> u64 {
        self.changes.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// What this client's answered requests may have changed, most recent last.
    pub fn recent_changes(&self) -> &RecentChanges {
        &self.recent
    }

    /// Whether `name` is known not to exist in `dir` without asking the master: this client
    /// made the directory and still holds its lease (see `dir_leases.rs`).
    pub fn knows_absent(&self, dir: InodeId, name: &[u8]) -> bool {
        self.current()
            .is_some_and(|s| self.dir_leases.knows_absent(s.generation, dir, name))
    }

    /// Keeps a request for lease recalls waiting at the master, and lets go of the leases it
    /// recalls; asks for the leases of directories where names looked up were absent. Runs for
    /// as long as the client lives. Without it the master grants no lease.
    pub async fn serve_recalls(&self) {
        let recalls = async {
            loop {
                if !self.poll_recalls().await {
                    tokio::time::sleep(defaults::RECONNECT_MAX).await;
                }
            }
        };
        let wants = async {
            loop {
                self.dir_leases.wanted().await;
                while let Some(dir) = self.dir_leases.next_wanted() {
                    // A refusal or failure only holds the directory off for a while.
                    let reply = self.request(&MasterRequest::LeaseDir { dir }).await;
                    let granted = matches!(reply, Ok(MasterReply::LeasedNames(_)));
                    tracing::debug!(%dir, granted, "asked for a directory lease");
                }
            }
        };
        tokio::join!(recalls, wants);
    }

    /// Reconnects soon after the connection breaks if this client was ever granted a lock or has
    /// files open, so that the master hears of them within its grace periods even when nothing else
    /// asks it anything (a read-only mount keeps no wait for lease recalls going). Runs for as
    /// long as the client lives.
    pub async fn keep_connected(&self) {
        loop {
            tokio::time::sleep(defaults::RECONNECT_MAX).await;
            // A client ever granted a lock is one a restarted master waits for.
            let needed = self.locks.ever_granted() || !self.lock_open_files().counts.is_empty();
            if needed && self.current().is_none() {
                // Failures are retried inside, then again on the next round.
                let _ = self.session(Instant::now() + self.timeout).await;
            }
        }
    }

    /// Stops using directory leases for good and gives back those held, so that other mounts'
    /// changes in those directories need not wait for them to run out (for a client that is
    /// going away). The master answers a wait that gave back a session's last leases at once;
    /// this waits at most `patience` (and not at all when the master cannot be reached).
    async fn give_back_leases(&self, patience: std::time::Duration) {
        let _one_at_a_time = self.giving_back.lock().await;
        self.dir_leases.close();
        let poll = self.dir_leases.next_poll();
        if poll.returned.is_empty() || self.current().is_none() {
            return;
        }
        let request = MasterRequest::AwaitRecalls {
            returned: poll.returned,
            renew: Vec::new(),
            client: self.client_id,
        };
        let _ = tokio::time::timeout(patience, self.send(&request)).await;
    }

    /// Waits once for lease recalls (the master answers a session's first wait at once, and
    /// grants leases from then on); false when the master could not be asked.
    pub async fn poll_recalls(&self) -> bool {
        let poll = self.dir_leases.next_poll();
        let returned = poll.returned.clone();
        let request = MasterRequest::AwaitRecalls {
            returned: poll.returned,
            renew: poll.renew,
            client: self.client_id,
        };
        let sent = Instant::now();
        match self.send(&request).await {
            (Ok(MasterReply::Recalled { recalled, renewed }), Some(generation)) => {
                self.dir_leases.gave_back(&returned);
                self.dir_leases.renewed(&renewed, generation, sent);
                self.dir_leases.recalled(recalled);
                true
            }
            (other, _) => {
                tracing::debug!(?other, "waiting for lease recalls failed; trying again");
                self.dir_leases.return_later(returned);
                false
            }
        }
    }

    /// Sends a request; returns the answer and the connection that answered it.
    async fn send(
        &self,
        request: &MasterRequest,
    ) -> (Result<MasterReply, Status>, Option<Generation>) {
        // Held until the answer or the give-up, through every retry.
        let slot = match must_not_repeat(request) {
            true => Some(self.slots.take().await),
            false => None,
        };
        let mut tagged = slot.as_ref().map(|slot| MasterRequest::Tagged {
            client: self.client_id,
            slot: slot.number(),
            seq: self
                .next_seq
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed),
            retry: false,
            request: Box::new(request.clone()),
        });
        let deadline = Instant::now() + self.timeout;
        loop {
            let session = match self.session(deadline).await {
                Ok(session) => session,
                Err(status) => return (Err(status), None),
            };
            match session.conn.ask(tagged.as_ref().unwrap_or(request)).await {
                Ok(reply) => return (reply, Some(session.generation)),
                Err(e) => {
                    tracing::debug!(error = %e, "master request failed; will reconnect");
                    session.conn.close("request failed");
                    if Instant::now() >= deadline {
                        tracing::warn!(master = %self.target, error = %e, "giving up on the master");
                        return (Err(Status::Io), None);
                    }
                    // The master may have carried it out before the connection failed.
                    if let Some(MasterRequest::Tagged { retry, .. }) = &mut tagged {
                        *retry = true;
                    }
                }
            }
        }
    }

    /// Tells a new session which files this client has open, so they live on as before. Files
    /// closed from here on are closed in that session.
    async fn reopen_files(&self, session: &Session) -> Result<(), String> {
        let inodes: Vec<InodeId> = {
            let mut open = self.lock_open_files();
            open.generation = session.generation;
            // An open still on its way is registered by its own request (see `opened`).
            open.counts
                .keys()
                .filter(|inode| !open.opening.contains_key(inode))
                .copied()
                .collect()
        };
        if inodes.is_empty() {
            return Ok(());
        }
        match session.conn.ask(&MasterRequest::Reopen { inodes }).await {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(status)) => Err(format!("reopening files: {status}")),
            Err(e) => Err(format!("reopening files: {e}")),
        }
    }

    /// Claims the locks this client held for a new session (see [`HeldLocks`]), in batches of
    /// at most [`RECLAIM_BATCH`]. Sent even with none: the master then drops what the earlier
    /// sessions still hold (a lock whose grant or release was cut off with the connection).
    async fn reclaim_locks(&self, session: &Session) -> Result<(), String> {
        let locks = self.locks.all();
        let count = locks.len();
        let mut lost = Vec::new();
        let mut batches: Vec<Vec<_>> = locks.chunks(RECLAIM_BATCH).map(<[_]>::to_vec).collect();
        if batches.is_empty() {
            batches.push(Vec::new());
        }
        let n = batches.len();
        for (i, locks) in batches.into_iter().enumerate() {
            let last = i + 1 == n;
            match session
                .conn
                .ask(&MasterRequest::ReclaimLocks { locks, last })
                .await
            {
                Ok(Ok(MasterReply::Reclaimed(refused))) => lost.extend(refused),
                Ok(Ok(_)) => return Err("claiming locks: unexpected answer".to_string()),
                Ok(Err(status)) => return Err(format!("claiming locks: {status}")),
                Err(e) => return Err(format!("claiming locks: {e}")),
            }
        }
        if count > 0 {
            tracing::info!(
                locks = count,
                lost = lost.len(),
                "locks claimed again after a reconnect"
            );
        }
        self.locks.lost(&lost);
        Ok(())
    }

    /// Leaves the master for good (an unmount): gives back the directory leases and releases
    /// the locks, which it would otherwise keep from other mounts for a while; each step gives
    /// up after `patience`.
    pub async fn leave(&self, patience: std::time::Duration) {
        self.give_back_leases(patience).await;
        self.release_all_locks(patience).await;
    }

    /// Releases every lock held through this client, giving up after `patience`.
    async fn release_all_locks(&self, patience: std::time::Duration) {
        let owners = self.locks.owners();
        if owners.is_empty() || self.current().is_none() {
            return;
        }
        let release = async {
            for (inode, owner) in owners {
                self.locks.release(inode, owner);
                let _ = self
                    .send(&MasterRequest::ReleaseLocks { inode, owner })
                    .await;
            }
        };
        let _ = tokio::time::timeout(patience, release).await;
    }

    pub(crate) fn lock_open_files(&self) -> std::sync::MutexGuard<'_, OpenFiles> {
        self.open_files.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Counts an open of `inode`; the master hears of the first one, so an unlinked file lives
    /// on. Returns the master's answer when it was asked.
    ///
    /// While the first open's `Open` is on its way, later opens of the file wait for its answer
    /// (and make their own if it failed), and a reconnect leaves the file out of its `Reopen`,
    /// so that the new session does not count it twice (once from the `Reopen`, once from the
    /// `Open` sent again over the new connection), which would keep it past its last close. An
    /// `Open` answered by an older session than the one the last `Reopen` went to is sent again.
    pub async fn opened(&self, inode: InodeId) -> Result<Option<MasterReply>, Status> {
        loop {
            let mut first = {
                let mut open = self.lock_open_files();
                match open.opening.get(&inode) {
                    Some(first) => first.subscribe(),
                    None => {
                        let count = open.counts.entry(inode).or_default();
                        *count += 1;
                        if *count > 1 {
                            return Ok(None);
                        }
                        open.opening.insert(inode, watch::channel(()).0);
                        break;
                    }
                }
            };
            // Ends when the first open has its answer.
            let _ = first.changed().await;
        }
        let first = FirstOpen::new(self, inode);
        first.register(true).await.map(Some)
    }

    /// Counts the open a create-and-open request registered in the master already, in the
    /// session of the connection that answered it (`answered_in`). If the client has
    /// reconnected since, the new session did not hear of it in the `Reopen`: it is told with an
    /// `Open`.
    pub(crate) async fn opened_by_create(&self, inode: InodeId, answered_in: Option<Generation>) {
        {
            let mut open = self.lock_open_files();
            let generation = open.generation;
            let count = open.counts.entry(inode).or_default();
            *count += 1;
            if *count > 1 || answered_in == Some(generation) {
                return;
            }
            open.opening.insert(inode, watch::channel(()).0);
        }
        let first = FirstOpen::new(self, inode);
        if let Err(status) = first.register(false).await {
            // Still counted open: the next reconnect's `Reopen` lists it.
            tracing::warn!(%inode, %status, "cannot tell the master of a file created and opened across a reconnect");
        }
    }

    /// The part of a close done at once: counts it, and when it was this client's last open of
    /// `inode`, returns the close the master must hear of; requests that drop names wait for it.
    pub fn start_close(&self, inode: InodeId) -> Option<PendingClose> {
        let generation = self.forget_open(inode)?;
        Some(self.closes.start(inode, generation))
    }

    /// Queues a close started with [`MasterClient::start_close`] for the master, which hears
    /// of it within [`CLOSE_DELAY`] (while [`MasterClient::serve_closes`] runs) or before the
    /// next request that drops a name.
    pub fn queue_close(&self, close: PendingClose) {
        self.close_queue.push(close);
    }

    /// Sends queued closes to the master, together, [`CLOSE_DELAY`] after the first one is
    /// queued. Runs for as long as the client lives; without it, closes reach the master only
    /// before a request that drops a name, or with the end of the session.
    pub async fn serve_closes(&self) {
        loop {
            self.close_queue.filled().await;
            loop {
                tokio::time::sleep(CLOSE_DELAY).await;
                self.send_closes().await;
                if self.close_queue.is_empty() {
                    break;
                }
            }
        }
    }

    /// Waits until every close started so far has reached the master (before an unlink or a
    /// rename, which may drop the last name of a file being closed): sends them as soon as
    /// they are queued (a close is queued once its handle's writes are flushed), not waiting
    /// for [`CLOSE_DELAY`]. Closes started later do not hold it up.
    pub async fn closes_settled(&self) {
        self.close_queue
            .settle(&self.closes, || self.send_closes())
            .await;
    }

    /// Sends the queued closes, in requests of up to `MAX_BATCH`. Closes are not retried on
    /// another connection: their files were open in the session of the connection they were
    /// made in, whose opens the master drops when that session's grace time after its
    /// connection ended runs out; a later session may have the same files open again.
    async fn send_closes(&self) {
        let deadline = Instant::now() + self.timeout;
        loop {
            let Ok(session) = self.session(deadline).await else {
                self.close_queue.drop_all();
                return;
            };
            let batch = self.close_queue.take(session.generation);
            if batch.is_empty() {
                return;
            }
            let request = MasterRequest::Close {
                inodes: batch.iter().map(|c| c.inode).collect(),
            };
            match session.conn.ask(&request).await {
                Ok(reply) => {
                    if let Err(status) = reply {
                        tracing::debug!(%status, closes = batch.len(), "the master refused closes");
                    }
                    self.recent.record(&request);
                }
                Err(e) => {
                    tracing::debug!(error = %e, "cannot tell the master of closes; will reconnect");
                    session.conn.close("request failed");
                }
            }
        }
    }

    /// Drops one open count; the generation of the connection whose session the master knows
    /// the file open in when it was the last.
    fn forget_open(&self, inode: InodeId) -> Option<Generation> {
        self.lock_open_files().forget(inode)
    }

    fn current(&self) -> Option<Session> {
        let guard = self.session.lock().unwrap_or_else(|p| p.into_inner());
        guard.as_ref().filter(|s| !s.conn.is_closed()).cloned()
    }

    async fn session(&self, deadline: Instant) -> Result<Session, Status> {
        if let Some(s) = self.current() {
            return Ok(s);
        }
        let _one_at_a_time = self.reconnecting.lock().await;
        let mut delay = defaults::RECONNECT_MIN;
        loop {
            if let Some(s) = self.current() {
                return Ok(s);
            }
            let opened = open_session(
                &self.target,
                &self.subdir,
                &self.mount_point,
                &self.options,
                self.client_id,
            )
            .await;
            let attempt = match opened {
                Ok((mut session, _, _)) => {
                    session.generation = self
                        .generations
                        .fetch_add(1, std::sync::atomic::Ordering::SeqCst)
                        + 1;
                    match self.reopen_files(&session).await {
                        Ok(()) => self.reclaim_locks(&session).await.map(|()| session),
                        Err(e) => Err(e),
                    }
                }
                Err(e) => Err(e.to_string()),
            };
            match attempt {
                Ok(session) => {
                    // Leases of the last connection may have ended with it at the master.
                    self.dir_leases.forget_all();
                    tracing::info!(master = %self.target, session = %session.id, "reconnected to the master");
                    *self.session.lock().unwrap_or_else(|p| p.into_inner()) = Some(session.clone());
                    return Ok(session);
                }
                Err(e) => {
                    if Instant::now() + delay >= deadline {
                        tracing::warn!(master = %self.target, error = %e, "master unreachable");
                        return Err(Status::Io);
                    }
                    tracing::debug!(error = %e, "master not reachable yet");
                    tokio::time::sleep(delay).await;
                    delay = (delay * 2).min(defaults::RECONNECT_MAX);
                }
            }
        }
    }
}

/// A request noted in the directory leases before it was sent: if the caller stops waiting for
/// its answer, the leases take it as abandoned (it may still be carried out).
struct NotedRequest<'a> {
    leases: &'a DirLeases,
    request: &'a MasterRequest,
    answered: bool,
}

impl Drop for NotedRequest<'_> {
    fn drop(&mut self) {
        if !self.answered {
            self.leases.abandoned(self.request);
        }
    }
}

/// Whether a request changes no attribute, name or extended attribute in the namespace.
fn reads_only(request: &MasterRequest) -> bool {
    matches!(
        request,
        MasterRequest::OpenSession { .. }
            | MasterRequest::Lookup { .. }
            | MasterRequest::GetAttr { .. }
            | MasterRequest::ReadLink { .. }
            | MasterRequest::ReadDir { .. }
            | MasterRequest::ReadDirPlus { .. }
            | MasterRequest::LookupAhead { .. }
            | MasterRequest::StatFs
            | MasterRequest::ReadChunk { .. }
            | MasterRequest::Fsync
            | MasterRequest::GetXattr { .. }
            | MasterRequest::ListXattr { .. }
            | MasterRequest::Open { .. }
            | MasterRequest::Close { .. }
            | MasterRequest::Reopen { .. }
            | MasterRequest::SetLock { .. }
            | MasterRequest::TestLock { .. }
            | MasterRequest::ReleaseLocks { .. }
            | MasterRequest::ReclaimLocks { .. }
            | MasterRequest::Access { .. }
            | MasterRequest::FileInfo { .. }
            | MasterRequest::DirInfo { .. }
            | MasterRequest::SummarizeTree { .. }
            | MasterRequest::TrashList { .. }
            | MasterRequest::AwaitRecalls { .. }
            | MasterRequest::LeaseDir { .. }
            | MasterRequest::Status
            | MasterRequest::Challenge
    )
}

/// Whether repeating a request after a lost reply would fail or change something twice.
fn must_not_repeat(request: &MasterRequest) -> bool {
    matches!(
        request,
        MasterRequest::Mknod { .. }
            | MasterRequest::Mkdir { .. }
            | MasterRequest::Symlink { .. }
            | MasterRequest::Link { .. }
            | MasterRequest::Unlink { .. }
            | MasterRequest::Rmdir { .. }
            | MasterRequest::Rename { .. }
            | MasterRequest::Snapshot { .. }
            | MasterRequest::TrashRestore { .. }
            | MasterRequest::RemoveXattr { .. }
    )
}

/// A random id for a new client. It names the client's sessions to the master, which lets a
/// later session take over their locks, so it must not be guessable.
fn client_id() -> u64 {
    rand::random::<u64>() | 1
}

async fn open_session(
    target: &str,
    subdir: &str,
    mount_point: &str,
    options: &SessionOptions,
    client: u64,
) -> Result<(Session, InodeId, bool), ConnectError> {
    let addr: SocketAddr =
        elkfs_common::address::resolve_async(target, defaults::MASTER_PORT).await?;
    let dialer = options
        .master_dialer()
        .map_err(|e| ConnectError::Unreachable {
            addr: addr.to_string(),
            reason: e.to_string(),
        })?;
    let conn: MasterConnection = connection::connect_with(
        &dialer,
        addr,
        &Hello::new(Role::Client, "elkfs-client"),
        MASTER_CLIENT_LIMITS,
        "master",
        NoRequests,
    )
    .await
    .map_err(|e| match e {
        ConnError::Refused { reason, .. } => ConnectError::Refused {
            addr: addr.to_string(),
            reason,
        },
        other => ConnectError::Unreachable {
            addr: addr.to_string(),
            reason: other.to_string(),
        },
    })?;
    let unreachable = |e: ConnError| ConnectError::Unreachable {
        addr: addr.to_string(),
        reason: e.to_string(),
    };
    let proof = match &options.password {
        None => None,
        Some(password) => match conn.ask(&MasterRequest::Challenge).await {
            Ok(Ok(MasterReply::Challenge { nonce })) => {
                Some(elkfs_proto::auth::password_proof(password, &nonce))
            }
            Ok(_) => {
                return Err(ConnectError::Refused {
                    addr: addr.to_string(),
                    reason: "it does not support passwords".to_string(),
                });
            }
            Err(e) => return Err(unreachable(e)),
        },
    };
    let reply = conn
        .ask(&MasterRequest::OpenSession {
            subdir: subdir.to_string(),
            mount_point: mount_point.to_string(),
            proof,
            client,
        })
        .await
        .map_err(unreachable)?;
    match reply {
        Ok(MasterReply::Session {
            session,
            root,
            read_only,
        }) => Ok((
            Session {
                conn,
                id: session,
                generation: 1,
            },
            root,
            read_only,
        )),
        Ok(MasterReply::Refused { reason }) => Err(ConnectError::Refused {
            addr: addr.to_string(),
            reason,
        }),
        Ok(_) => Err(ConnectError::Session {
            addr: addr.to_string(),
            subdir: subdir.to_string(),
            status: Status::Protocol,
        }),
        Err(status) => Err(ConnectError::Session {
            addr: addr.to_string(),
            subdir: subdir.to_string(),
            status,
        }),
    }
}
