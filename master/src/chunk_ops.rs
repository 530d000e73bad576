//! Chunk operations that need the chunkservers: creating a chunk for a write, bumping its version
//! when a write starts, truncating it, and deleting copies nobody refers to.
//!
//! Order matters for crash safety: chunkservers change first, then the change is logged. A master
//! that dies in between finds copies newer than its record at the next registration and adopts
//! them; chunk ids come from a logged reservation, so an id is never handed out twice.
//!
//! A new chunk is the exception: it is logged first and the lease answered at once, while the
//! servers are told to create it in the background; the lease's `Create` access lets the client's
//! first frames create it on a server the command has not reached yet (chunkservers report such
//! copies, and refuse to make again a chunk they deleted lately). A chunk that ended up with no
//! copy anywhere (a master that died before telling anyone, servers that all lost it) holds no
//! data the file shows as long as it lies past the file's end, and the next fresh lease on it
//! replaces it with a new one.
//!
//! A new version is logged as issued (`IssueChunkVersion`) before any chunkserver hears of it,
//! and the next bump goes past every version issued, not just past the recorded one. Otherwise a
//! copy bumped by a master that died before logging the bump, and registering only after the
//! next master bumped the other copies to the same number and the client wrote to them, would
//! pass for current with the data from before the write.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use elkfs_metastore::{FileChunk, MetaOp};
use elkfs_proto::capability::{Access, Capability, CapabilityKey, unix_now};
use elkfs_proto::chunkserver::CsCommand;
use elkfs_proto::geometry::CHUNK_SIZE;
use elkfs_proto::master::WriteLease;
use elkfs_proto::types::{Attr, FileKind};
use elkfs_proto::{ChunkId, ChunkVersion, InodeId, Status};

use crate::cluster::{Cluster, Target};
use crate::freed_copies::FreedCopies;
use crate::meta::Meta;
use crate::replication::ReplicationTrigger;

/// How long the master waits for a chunkserver to carry out a command.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(30);

/// How often a request waiting for chunkservers to re-register looks again.
const REGISTRATION_POLL: Duration = Duration::from_millis(100);

/// Chunk ids reserved (and logged) at a time.
const ID_RESERVATION: u64 = 4096;

struct IdRange {
    next: u64,
    reserved: u64,
}

/// Chunk operations, shared by every client session.
pub struct ChunkOps {
    meta: Meta,
    cluster: Arc<Cluster>,
    ids: tokio::sync::Mutex<IdRange>,
    /// Until then, chunkservers may still be re-registering after a master start: a chunk
    /// without a known copy is waited for rather than reported lost.
    registration_window_end: Instant,
    /// Signs the capabilities that let clients at chunk data.
    capabilities: CapabilityKey,
    /// Woken when a server refuses a new chunk's copy: the chunk is short of copies.
    replication: Arc<ReplicationTrigger>,
    /// Copies of freed chunks waiting to be deleted together.
    freed_copies: Arc<FreedCopies>,
}

impl ChunkOps {
    /// Starts allocating chunk ids after everything the store says may have been handed out;
    /// for `registration_window` after now, chunkservers are given time to register.
    pub fn new(
        meta: Meta,
        cluster: Arc<Cluster>,
        reserved: u64,
        registration_window: Duration,
        capabilities: CapabilityKey,
    ) -> ChunkOps {
        ChunkOps {
            capabilities,
            replication: Arc::default(),
            freed_copies: Arc::default(),
            meta,
            cluster,
            ids: tokio::sync::Mutex::new(IdRange {
                next: reserved.max(1),
                reserved: reserved.max(1),
            }),
            registration_window_end: Instant::now() + registration_window,
        }
    }

    /// What wakes the replication worker (made here, shared by the master's state).
    pub fn replication_trigger(&self) -> Arc<ReplicationTrigger> {
        self.replication.clone()
    }

    /// The master's permission for `access` to `chunk` at `version`, valid for a while.
    pub fn capability(&self, chunk: ChunkId, version: ChunkVersion, access: Access) -> Capability {
        self.capabilities.sign(chunk, version, access, unix_now())
    }

    /// The servers holding a valid copy of `fc` (those near `near` first). Right after the
    /// master starts, a chunk with none yet is waited for until a holder registers or the
    /// registration window ends, so requests retried across a master restart do not fail
    /// just because they arrived before the chunkservers.
    /// The chunk's version is read again while waiting, since a registering server may bring a
    /// newer copy; the returned `FileChunk` carries the version the copies have.
    pub async fn valid_copies(
        &self,
        mut fc: FileChunk,
        near: Option<IpAddr>,
    ) -> Result<(FileChunk, Vec<Target>), Status> {
        loop {
            let valid = self.cluster.valid_copies(fc.chunk, fc.version, near);
            if !valid.is_empty() || Instant::now() >= self.registration_window_end {
                return Ok((fc, valid));
            }
            tokio::time::sleep(REGISTRATION_POLL).await;
            let chunk = fc.chunk;
            if let Some(rec) = self
                .meta
                .read(move |s| s.chunk(chunk).map_err(Into::into))
                .await?
            {
                fc.version = rec.version;
            }
        }
    }

    async fn allocate_id(&self) -> Result<ChunkId, Status> {
        let mut ids = self.ids.lock().await;
        if ids.next >= ids.reserved {
            let up_to = ids.next + ID_RESERVATION;
            self.meta.commit(MetaOp::ReserveChunkIds { up_to }).await?;
            // Durable before any id of it is used: after a power cut the reservation must not
            // come back lower than ids that chunkservers already hold.
            self.meta.sync().await.map_err(|e| {
                tracing::error!(error = %e, "cannot fsync the changelog");
                Status::Io
            })?;
            ids.reserved = up_to;
        }
        let id = ids.next;
        ids.next += 1;
        Ok(ChunkId(id))
    }

    /// Prepares chunk `index` of `inode` for a write by the caller, who holds the write lease:
    /// creates the chunk or bumps its version on every valid copy (cutting what lies past the
    /// end as `past_end` says), and returns the chain.
    pub async fn grant_write(
        &self,
        inode: InodeId,
        index: u32,
        near: Option<IpAddr>,
        exclude: &[SocketAddr],
        past_end: PastEnd,
        held: &(dyn Fn() -> bool + Sync),
    ) -> Result<WriteLease, Status> {
        // A truncate or purge may free the slot's chunk while this lease is being made (the
        // versions it bumps are gone then): the slot is read again, at most twice.
        let mut looks = 0;
        let (attr, (chunk, version, chain, access)) = loop {
            let attr = self.meta.read(move |s| s.attr(inode)).await?;
            let existing = self.meta.read(move |s| s.file_chunk(inode, index)).await?;
            let cut = past_end
                .cut_in(index, attr.size)
                .map(|length| Cut { length, held });
            match self
                .lease_slot(&attr, index, existing, near, exclude, cut)
                .await
            {
                Ok(granted) => break (attr, granted),
                Err(status @ (Status::NotFound | Status::Io | Status::NoValidCopy))
                    if looks < 2 && existing.is_some() =>
                {
                    let now = self.meta.read(move |s| s.file_chunk(inode, index)).await?;
                    if now.map(|f| f.chunk) == existing.map(|f| f.chunk) {
                        return Err(status);
                    }
                    tracing::debug!(%inode, index, %status, "the chunk was freed while its lease was made; trying again");
                    looks += 1;
                }
                Err(status) => return Err(status),
            }
        };
        Ok(WriteLease {
            chunk,
            version,
            chain: chain.iter().map(|t| t.data_addr).collect(),
            file_length: attr.size,
            capability: self.capability(chunk, version, access),
        })
    }

    /// Makes the lease for slot `index` of the file `attr` describes, whose chunk there is
    /// `existing`: a new chunk, a private copy of a shared one, or a version bump, the chunk cut
    /// to `cut` bytes if given.
    async fn lease_slot(
        &self,
        attr: &Attr,
        index: u32,
        existing: Option<FileChunk>,
        near: Option<IpAddr>,
        exclude: &[SocketAddr],
        cut: Option<Cut<'_>>,
    ) -> Result<(ChunkId, ChunkVersion, Vec<Target>, Access), Status> {
        match attr.kind {
            FileKind::File => {}
            FileKind::Dir => return Err(Status::IsDir),
            _ => return Err(Status::Invalid),
        }
        let inode = attr.inode;
        let new = NewChunk {
            inode,
            index,
            goal: attr.goal,
        };
        let granted = match existing {
            None => self.create_chunk(new, None, exclude).await?,
            Some(fc) if self.shared(fc.chunk).await? => {
                let (chunk, version, chain) = self.copy_private(inode, fc, near, exclude).await?;
                let (chunk, version, chain) = match cut {
                    // The copy came with the shared chunk's bytes past the end.
                    Some(_) => {
                        let copy = FileChunk {
                            index,
                            chunk,
                            version,
                        };
                        self.bump_version(copy, near, exclude, cut).await?
                    }
                    None => (chunk, version, chain),
                };
                (chunk, version, chain, Access::Write)
            }
            Some(fc) => match self.bump_version(fc, near, exclude, cut).await {
                Ok((chunk, version, chain)) => (chunk, version, chain, Access::Write),
                // Only when no server is known to hold any copy, stale ones included (so nothing
                // stored can be lost), and not for a retry, which may follow writes the servers
                // took while the master has not heard their length yet.
                Err(Status::NoValidCopy)
                    if exclude.is_empty()
                        && past_the_end(index, attr.size)
                        && self.cluster.copies(fc.chunk).is_empty() =>
                {
                    tracing::warn!(%inode, index, chunk = %fc.chunk, "no copy of a chunk past the end of its file; a new chunk takes its place");
                    self.create_chunk(new, Some(fc), exclude).await?
                }
                Err(status) => return Err(status),
            },
        };
        Ok(granted)
    }

    /// Makes a new chunk for slot `new.index` of `new.inode` (in place of `replacing`, if
    /// given): logged first, the servers told in the background (see the module's comment).
    async fn create_chunk(
        &self,
        new: NewChunk,
        replacing: Option<FileChunk>,
        exclude: &[SocketAddr],
    ) -> Result<(ChunkId, ChunkVersion, Vec<Target>, Access), Status> {
        let NewChunk { inode, index, goal } = new;
        let targets = loop {
            let targets = self
                .cluster
                .choose_for_new_chunk(goal.max(1) as usize, exclude);
            // Right after a start, no server may have registered yet.
            if !targets.is_empty() || Instant::now() >= self.registration_window_end {
                break targets;
            }
            tokio::time::sleep(REGISTRATION_POLL).await;
        };
        if targets.is_empty() {
            tracing::warn!(%inode, index, "no chunkserver with free space for a new chunk");
            return Err(Status::NoSpace);
        }
        let chunk = self.allocate_id().await?;
        let version = ChunkVersion(1);
        let op = match replacing {
            None => MetaOp::CreateChunk {
                inode,
                index,
                chunk,
                version,
            },
            Some(_) => MetaOp::ReplaceChunk {
                inode,
                index,
                chunk,
                version,
            },
        };
        let (_, outcome) = self.meta.commit(op).await?;
        self.delete_freed(outcome.freed_chunks);
        for t in &targets {
            self.cluster.set_copy(chunk, t.server, version);
        }
        self.create_copies(chunk, version, targets.clone());
        Ok((chunk, version, targets, Access::Create))
    }

    /// Tells `targets` to create `chunk` without waiting for them (a server the client's write
    /// reached first keeps what it has). One that refuses loses its place among the copies,
    /// unless a later version has taken that place meanwhile.
    fn create_copies(&self, chunk: ChunkId, version: ChunkVersion, targets: Vec<Target>) {
        let cluster = self.cluster.clone();
        let replication = self.replication.clone();
        tokio::spawn(async move {
            let create = CsCommand::Create { chunk, version };
            let calls = targets.iter().map(|t| {
                let create = &create;
                async move { (t, run_command(t, create).await) }
            });
            for (t, result) in futures::future::join_all(calls).await {
                match result {
                    Ok(()) => {}
                    Err(CommandError::Refused(status)) => {
                        if status == Status::NoSpace {
                            cluster.note_full(t.server);
                        }
                        tracing::warn!(server = %t.data_addr, %chunk, %status, "chunkserver could not create a new chunk");
                        cluster.remove_copy_at(chunk, t.server, version);
                        replication.wake();
                    }
                    // The command may still run (it waits its turn behind the chunk's writes);
                    // a server that is gone loses its copies when its link closes.
                    Err(e @ CommandError::NoAnswer(_)) => {
                        tracing::warn!(server = %t.data_addr, %chunk, error = %e, "chunkserver did not answer the creation of a new chunk");
                    }
                }
            }
        });
    }

    /// Whether a snapshot shares the chunk (it must be copied before it is changed).
    async fn shared(&self, chunk: ChunkId) -> Result<bool, Status> {
        let record = self
            .meta
            .read(move |s| s.chunk(chunk).map_err(Into::into))
            .await?;
        Ok(record.is_some_and(|r| r.refs > 1))
    }

    /// Gives a file its own copy of a chunk shared with a snapshot: every server holding a
    /// valid copy duplicates it locally under a new id, and the file's slot moves to it.
    async fn copy_private(
        &self,
        inode: InodeId,
        fc: FileChunk,
        near: Option<IpAddr>,
        exclude: &[SocketAddr],
    ) -> Result<(ChunkId, ChunkVersion, Vec<Target>), Status> {
        let (fc, mut valid) = self.valid_copies(fc, near).await?;
        valid.retain(|t| !exclude.contains(&t.data_addr));
        if valid.is_empty() {
            return Err(Status::NoValidCopy);
        }
        let new_chunk = self.allocate_id().await?;
        let new_version = ChunkVersion(1);
        let (chunk, version) = (fc.chunk, fc.version);
        let copied = command_all(&valid, |_| CsCommand::Duplicate {
            chunk,
            version,
            new_chunk,
            new_version,
        })
        .await;
        if copied.is_empty() {
            return Err(Status::Io);
        }
        // Each duplicate lies beside its source, in a directory marked for removal if that was
        // (read before the commit, which may free the source and forget its copies).
        let marked: Vec<_> = self
            .cluster
            .copies(chunk)
            .into_iter()
            .filter(|c| c.marked)
            .map(|c| c.server)
            .collect();
        let op = MetaOp::ReplaceChunk {
            inode,
            index: fc.index,
            chunk: new_chunk,
            version: new_version,
        };
        match self.meta.commit(op).await {
            Ok((_, outcome)) => self.delete_freed(outcome.freed_chunks),
            Err(status) => {
                self.delete_copies(new_chunk, new_version, &copied);
                return Err(status);
            }
        }
        for t in &copied {
            let beside_marked = marked.contains(&t.server);
            self.cluster
                .set_copy_marked(new_chunk, t.server, new_version, beside_marked);
        }
        Ok((new_chunk, new_version, copied))
    }

    /// Makes sure a file's chunk is its own before it is cut (copy-on-write), returning the
    /// chunk to cut.
    pub async fn private_chunk(&self, inode: InodeId, fc: FileChunk) -> Result<FileChunk, Status> {
        if !self.shared(fc.chunk).await? {
            return Ok(fc);
        }
        let (chunk, version, _) = self.copy_private(inode, fc, None, &[]).await?;
        Ok(FileChunk {
            index: fc.index,
            chunk,
            version,
        })
    }

    /// Moves the valid copies of `fc` (but those on `exclude`) to a new version, cutting them on
    /// the way if `cut` says so (`Io` if the lease was lost by then); returns the chunk, its new
    /// version and the copies moved.
    async fn bump_version(
        &self,
        fc: FileChunk,
        near: Option<IpAddr>,
        exclude: &[SocketAddr],
        cut: Option<Cut<'_>>,
    ) -> Result<(ChunkId, ChunkVersion, Vec<Target>), Status> {
        let (fc, mut valid) = self.valid_copies(fc, near).await?;
        valid.retain(|t| !exclude.contains(&t.data_addr));
        if valid.is_empty() {
            tracing::warn!(chunk = %fc.chunk, version = %fc.version, "no valid copy of a chunk to change");
            return Err(Status::NoValidCopy);
        }
        let to = self.issue_version(fc).await?;
        let (chunk, from) = (fc.chunk, fc.version);
        // Checked (and the lease renewed) last thing before the servers hear of the cut: a
        // renewed lease outlasts the commands' timeout.
        if cut.is_some_and(|c| !(c.held)()) {
            tracing::warn!(%chunk, "a write lease lapsed before its chunk was cut; nothing cut");
            return Err(Status::Io);
        }
        let bumped = command_all(&valid, |_| match cut.map(|c| c.length) {
            Some(length) => CsCommand::Truncate {
                chunk,
                from,
                to,
                length,
            },
            None => CsCommand::SetVersion { chunk, from, to },
        })
        .await;
        if bumped.is_empty() {
            return Err(Status::Io);
        }
        self.meta
            .commit(MetaOp::SetChunkVersion { chunk, version: to })
            .await?;
        for t in &bumped {
            self.cluster.set_copy(chunk, t.server, to);
        }
        Ok((chunk, to, bumped))
    }

    /// Cuts the copies of `fc` as `cut` says, under a new version (the caller holds the lease on
    /// its slot and commits the file's new length afterwards).
    pub async fn truncate_chunk(&self, fc: FileChunk, cut: Cut<'_>) -> Result<(), Status> {
        self.bump_version(fc, None, &[], Some(cut)).await.map(drop)
    }

    /// The version the next bump of `fc` goes to, logged (and fsynced) as issued before any
    /// chunkserver is told: one past both the recorded version and every version issued before (a master may
    /// have died after telling some copies of it and before logging the bump).
    async fn issue_version(&self, fc: FileChunk) -> Result<ChunkVersion, Status> {
        let chunk = fc.chunk;
        let issued = self
            .meta
            .read(move |s| s.chunk_issued(chunk).map_err(Into::into))
            .await?;
        let to = issued.map_or(fc.version, |v| v.max(fc.version)).next();
        self.meta
            .commit(MetaOp::IssueChunkVersion { chunk, version: to })
            .await?;
        // On disk before any chunkserver hears of it, or a power cut could hand it out again.
        self.meta.sync().await.map_err(|e| {
            tracing::error!(error = %e, "cannot fsync the changelog");
            Status::Io
        })?;
        Ok(to)
    }

    /// Deletes every copy of chunks no file refers to any more, at once (in the background).
    /// A chunk a truncate frees may still have a writer on another mount: deleting its copies
    /// at once makes that writer's next write fail and start again on a new chunk, instead of
    /// landing in a copy about to go.
    pub fn delete_freed(&self, freed: Vec<(ChunkId, ChunkVersion)>) {
        for (chunk, _) in freed {
            for (target, version) in self.cluster.forget_chunk(chunk) {
                self.delete_copies(chunk, version, std::slice::from_ref(&target));
            }
        }
    }

    /// Deletes every copy of the chunks a purge freed, gathered into batches (see
    /// `freed_copies.rs`): the file was open nowhere, so no write can still reach them.
    pub fn delete_purged(&self, freed: Vec<(ChunkId, ChunkVersion)>) {
        for (chunk, _) in freed {
            for (target, version) in self.cluster.forget_chunk(chunk) {
                self.freed_copies.queue(&target, chunk, version);
            }
        }
    }

    /// Deletes copies a registering chunkserver holds of chunks no file refers to, gathered into
    /// batches like those of purged files: copies freed while the server was away, or queued
    /// for deletion when a master stopped (`freed_copies.rs`), can be thousands.
    pub fn delete_orphans(
        &self,
        target: &Target,
        orphans: impl IntoIterator<Item = (ChunkId, ChunkVersion)>,
    ) {
        for (chunk, version) in orphans {
            self.freed_copies.queue(target, chunk, version);
        }
    }

    /// Deletes `chunk` at `version` on each of `targets`, in the background.
    pub fn delete_copies(&self, chunk: ChunkId, version: ChunkVersion, targets: &[Target]) {
        for t in targets.iter().cloned() {
            tokio::spawn(async move {
                let cmd = CsCommand::Delete { chunk, version };
                if let Err(e) = run_command(&t, &cmd).await {
                    tracing::debug!(%chunk, server = %t.data_addr, error = %e, "could not delete a chunk copy");
                }
            });
        }
    }
}

/// What a new chunk is for.
#[derive(Clone, Copy)]
struct NewChunk {
    inode: InodeId,
    index: u32,
    goal: u8,
}

/// A cut of a chunk's copies to `length` bytes, sent only while `held` says the caller still
/// holds the slot's lease (and renews it): a lease that lapsed during a long step may have
/// passed to a writer whose stored but unreported bytes the cut would destroy.
#[derive(Clone, Copy)]
pub struct Cut<'a> {
    /// Bytes of the chunk kept.
    pub length: u32,
    /// Whether the lease is still held, renewing it if so.
    pub held: &'a (dyn Fn() -> bool + Sync),
}

/// What a write lease does with the bytes its chunk holds past the file's end.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PastEnd {
    /// Keeps them: a writer whose lease ended lately without a report may still report them,
    /// or the caller may have stored them under an earlier lease (a retry on a new chain).
    Keep,
    /// Cuts everything past the larger of the file's end and this offset (what the caller
    /// stored under an earlier lease and reports under this one): a writer that died left it.
    CutBeyond(u64),
}

impl PastEnd {
    /// The length to cut chunk `index` to, for a file `size` bytes long; `None` when nothing
    /// of the chunk lies past what is kept.
    fn cut_in(self, index: u32, size: u64) -> Option<u32> {
        let PastEnd::CutBeyond(carried) = self else {
            return None;
        };
        let start = u64::from(index) * CHUNK_SIZE;
        let kept = size.max(carried).saturating_sub(start);
        (kept < CHUNK_SIZE).then_some(kept as u32)
    }
}

/// Whether chunk `index` of a file `size` bytes long lies wholly past its end.
fn past_the_end(index: u32, size: u64) -> bool {
    u64::from(index) * CHUNK_SIZE >= size
}

/// Why a chunkserver did not carry out a command.
#[derive(Debug, thiserror::Error)]
pub enum CommandError {
    /// It answered with an error.
    #[error("{0}")]
    Refused(Status),
    /// It did not answer (connection lost, timeout).
    #[error("{0}")]
    NoAnswer(String),
}

/// Sends one command and waits for it to be carried out.
pub async fn run_command(target: &Target, cmd: &CsCommand) -> Result<(), CommandError> {
    run_command_within(target, cmd, COMMAND_TIMEOUT).await
}

/// Sends one command and waits up to `timeout` for it to be carried out.
pub async fn run_command_within(
    target: &Target,
    cmd: &CsCommand,
    timeout: Duration,
) -> Result<(), CommandError> {
    match tokio::time::timeout(timeout, target.link.call(cmd, Bytes::new())).await {
        Ok(Ok((Ok(()), _))) => Ok(()),
        Ok(Ok((Err(status), _))) => Err(CommandError::Refused(status)),
        Ok(Err(e)) => Err(CommandError::NoAnswer(e.to_string())),
        Err(_) => Err(CommandError::NoAnswer("timed out".to_string())),
    }
}

/// Sends a command to every target at once; returns those that carried it out.
async fn command_all(targets: &[Target], cmd: impl Fn(&Target) -> CsCommand) -> Vec<Target> {
    let calls = targets.iter().map(|t| {
        let c = cmd(t);
        async move {
            match run_command(t, &c).await {
                Ok(()) => Some(t.clone()),
                Err(e) => {
                    tracing::warn!(server = %t.data_addr, command = ?c, error = %e, "chunkserver did not carry out a command");
                    None
                }
            }
        }
    });
    let results = futures::future::join_all(calls).await;
    results.into_iter().flatten().collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_lease_cuts_only_what_lies_past_both_the_end_and_what_its_writer_carries() {
        let chunk = CHUNK_SIZE;
        assert_eq!(PastEnd::Keep.cut_in(0, 100), None);
        // The end inside the slot, before it, past it.
        assert_eq!(PastEnd::CutBeyond(0).cut_in(0, 100), Some(100));
        assert_eq!(PastEnd::CutBeyond(0).cut_in(2, chunk + 5), Some(0));
        assert_eq!(PastEnd::CutBeyond(0).cut_in(1, 2 * chunk), None);
        assert_eq!(
            PastEnd::CutBeyond(0).cut_in(1, 2 * chunk - 1),
            Some(chunk as u32 - 1)
        );
        // What the writer carries counts when it lies further on than the end.
        assert_eq!(PastEnd::CutBeyond(chunk + 300).cut_in(1, 100), Some(300));
        assert_eq!(PastEnd::CutBeyond(50).cut_in(0, 100), Some(100));
        assert_eq!(PastEnd::CutBeyond(3 * chunk).cut_in(1, 0), None);
        assert_eq!(PastEnd::CutBeyond(0).cut_in(u32::MAX - 1, u64::MAX), None);
    }
}
