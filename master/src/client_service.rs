//! Serving clients (mounts and the CLI): each request is decoded on the connection and carried
//! out in its own task, so a slow one never holds up the others.

use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use elkfs_metastore::{FileChunk, MetaOp};
use elkfs_proto::capability::Access;
use elkfs_proto::geometry::CHUNK_SIZE;
use elkfs_proto::master::{LockKind, MasterReply, MasterRequest, MasterResponse, ReadLocation};
use elkfs_proto::types::{Caller, FileKind, FsStats, SetAttr, Timestamp};
use elkfs_proto::{Handler, InodeId, Responder, SessionId, Status};
use tokio_util::sync::CancellationToken;

use crate::chunk_ops::PastEnd;
use crate::cluster::Target;
use crate::exports::{Admission, Exports};
use crate::leases::{APPEND_SLOT, LeaseKey};
use crate::past_end::GrownBy;
use crate::state::{LOCK_RECLAIM_GRACE, MasterState};

/// Most entries returned in one directory page.
pub(crate) const MAX_DIR_PAGE: usize = 4096;

/// Most names one [`MasterRequest::LookupAhead`] returns.
const MAX_LOOKAHEAD: usize = 1024;

/// Per-connection state of a client.
pub struct ClientHandler {
    state: Arc<MasterState>,
    peer: SocketAddr,
    session: Option<SessionId>,
    /// The export the session was let in by (its options apply to every request).
    admission: Option<Arc<Admission>>,
    /// The nonce of the last challenge on this connection, for a password proof.
    nonce: Option<[u8; 32]>,
    /// Cancelled to close this connection (when the exports file no longer lets it in).
    close: tokio_util::sync::CancellationToken,
    /// Cancelled when this connection has ended: requests still waiting give up.
    ended: CancellationToken,
}

impl ClientHandler {
    /// A handler for a client that connected from `peer`; cancelling `close` ends the
    /// connection.
    pub fn new(
        state: Arc<MasterState>,
        peer: SocketAddr,
        close: tokio_util::sync::CancellationToken,
    ) -> ClientHandler {
        ClientHandler {
            state,
            peer,
            session: None,
            admission: None,
            nonce: None,
            close,
            ended: CancellationToken::new(),
        }
    }
}

impl Drop for ClientHandler {
    fn drop(&mut self) {
        self.ended.cancel();
        let Some(session) = self.session else {
            return;
        };
        self.state.leases.release_session(session);
        self.state.dir_leases.release_session(session);
        tracing::info!(%session, peer = %self.peer, "client session ended");
        // Its locks, if it holds any, stay a little longer for its client to claim when it
        // reconnects; a client left with no session is taken off the list of lock holders.
        let state = self.state.clone();
        tokio::spawn(async move {
            let last_of_client = match state.locks.end_session(session) {
                (true, _) => {
                    tokio::time::sleep(LOCK_RECLAIM_GRACE).await;
                    state.locks.release_session(session)
                }
                (false, last_of_client) => last_of_client,
            };
            if let Some(client) = last_of_client {
                state
                    .lock_holders
                    .forget(client, |c| state.locks.has_client(c))
                    .await;
            }
        });
        // Its open files keep unlinked files alive a little longer, in case it reconnects.
        let state = self.state.clone();
        tokio::spawn(async move {
            tokio::time::sleep(state.reopen_grace).await;
            for inode in state.open_files.drop_session(session) {
                state.purge_if_unused(inode).await;
            }
        });
    }
}

impl Handler<MasterRequest, MasterResponse> for ClientHandler {
    async fn handle(
        &mut self,
        request: MasterRequest,
        _data: Bytes,
        responder: Responder<MasterResponse>,
    ) {
        if let MasterRequest::Challenge = request {
            let nonce: [u8; 32] = rand::random();
            self.nonce = Some(nonce);
            responder
                .send(&Ok(MasterReply::Challenge { nonce }), Bytes::new())
                .await;
            return;
        }
        if let MasterRequest::OpenSession {
            subdir,
            mount_point,
            proof,
            client,
        } = &request
        {
            let reply = self
                .open_session(subdir, mount_point, *proof, *client)
                .await;
            responder.send(&reply, Bytes::new()).await;
            return;
        }
        let (Some(session), Some(admission)) = (self.session, self.admission.clone()) else {
            responder.send(&Err(Status::Protocol), Bytes::new()).await;
            return;
        };
        let request = match crate::session_rules::apply(&admission.options, request) {
            Ok(request) => request,
            Err(status) => {
                responder.send(&Err(status), Bytes::new()).await;
                return;
            }
        };
        let state = self.state.clone();
        let peer = self.peer;
        let ended = self.ended.clone();
        tokio::spawn(async move {
            let changes = request.name_changes();
            let leases = &state.dir_leases;
            let _leases_recalled = tokio::select! {
                // A request that changes no name has its guard at once.
                biased;
                guard = leases.before_change(session, &changes) => guard,
                // A retry of the request may already be on its way over another connection.
                () = ended.cancelled() => return,
            };
            let reply = match request {
                MasterRequest::Tagged {
                    client,
                    slot,
                    seq,
                    retry,
                    request,
                } => {
                    let tag = RequestTag { client, slot, seq };
                    serve_tagged(&state, session, &ended, peer, tag, retry, *request).await
                }
                request => serve(&state, session, &ended, peer, request).await,
            };
            responder.send(&reply, Bytes::new()).await;
        });
    }
}

impl ClientHandler {
    async fn open_session(
        &mut self,
        subdir: &str,
        mount_point: &str,
        proof: Option<[u8; 32]>,
        client: u64,
    ) -> MasterResponse {
        let exports = self.state.exports();
        let admission = match admit(&exports, self.peer, subdir, proof, self.nonce) {
            Ok(a) => Arc::new(a),
            Err(reason) => {
                tracing::warn!(peer = %self.peer, subdir, %reason, "mount refused");
                return Ok(MasterReply::Refused { reason });
            }
        };
        let root = resolve_subdir(&self.state, subdir).await?;
        let session = match self.session {
            Some(s) => s,
            None => self.state.new_session(),
        };
        if self.session.is_none() {
            self.watch_exports(subdir.to_string(), proof);
            self.state.dir_leases.open(session);
            self.state.locks.open_session(session, client);
        }
        self.session = Some(session);
        let read_only = admission.options.read_only;
        tracing::info!(%session, peer = %self.peer, subdir, mount_point, export_line = admission.line, read_only, "client session opened");
        self.admission = Some(admission);
        Ok(MasterReply::Session {
            session,
            root,
            read_only,
        })
    }

    /// Closes the connection when a reloaded exports file no longer lets it in; sessions that
    /// stay allowed go on untouched (with the options they were opened with).
    fn watch_exports(&self, subdir: String, proof: Option<[u8; 32]>) {
        let mut changes = self.state.exports_changes();
        let close = self.close.clone();
        let (peer, nonce) = (self.peer, self.nonce);
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    changed = changes.changed() => {
                        if changed.is_err() {
                            return;
                        }
                    }
                    _ = close.cancelled() => return,
                }
                let exports = changes.borrow_and_update().clone();
                if let Err(reason) = admit(&exports, peer, &subdir, proof, nonce) {
                    tracing::warn!(%peer, subdir, %reason, "the reloaded exports file no longer lets a session in; closing it");
                    close.cancel();
                    return;
                }
            }
        });
    }
}

/// Whether the exports let `peer` mount `subdir`, with the password proved when the export has
/// one; the refusal is worded for the user and names the file to edit.
fn admit(
    exports: &Exports,
    peer: SocketAddr,
    subdir: &str,
    proof: Option<[u8; 32]>,
    nonce: Option<[u8; 32]>,
) -> Result<Admission, String> {
    let where_to_fix = match exports.file() {
        Some(file) => format!("edit {} on the master", file.display()),
        None => "the master has no exports file (see --exports)".to_string(),
    };
    let admission = exports
        .admit(peer.ip(), subdir)
        .map_err(|refusal| format!("{refusal}; {where_to_fix}"))?;
    if let Some(password) = &admission.options.password {
        let proved = match (proof, nonce) {
            (Some(proof), Some(nonce)) => elkfs_proto::auth::proofs_match(
                &proof,
                &elkfs_proto::auth::password_proof(password, &nonce),
            ),
            _ => {
                return Err(format!(
                    "line {} of the exports file asks for a password (-o password=... or \
                     -o passwordfile=FILE)",
                    admission.line
                ));
            }
        };
        if !proved {
            return Err("wrong password".to_string());
        }
    }
    Ok(admission)
}

async fn resolve_subdir(state: &MasterState, subdir: &str) -> Result<InodeId, Status> {
    let mut inode = InodeId::ROOT;
    for part in subdir.split('/').filter(|p| !p.is_empty() && *p != ".") {
        if part == ".." {
            return Err(Status::Invalid);
        }
        let name = part.as_bytes().to_vec();
        let attr = state.meta.read(move |s| s.lookup(inode, &name)).await?;
        if attr.kind != elkfs_proto::types::FileKind::Dir {
            return Err(Status::NotDir);
        }
        inode = attr.inode;
    }
    Ok(inode)
}

tokio::task_local! {
    /// The client, request slot and sequence number of the request being served, when it is a
    /// tagged one: its change is logged with them, so a retry is recognised.
    static REQUEST_TAG: RequestTag;
}

/// Serves a change that must not happen twice: a retry of one already made is answered from
/// the record of it, without making it again.
async fn serve_tagged(
    state: &MasterState,
    session: SessionId,
    ended: &CancellationToken,
    peer: SocketAddr,
    tag: RequestTag,
    retry: bool,
    request: MasterRequest,
) -> MasterResponse {
    let RequestTag { client, slot, seq } = tag;
    if matches!(request, MasterRequest::Tagged { .. }) {
        return Err(Status::Invalid);
    }
    let done = match retry {
        true => {
            state
                .meta
                .read(move |s| s.request(client, slot, seq).map_err(Into::into))
                .await?
        }
        false => None,
    };
    if let Some(record) = done {
        tracing::debug!(
            client,
            slot,
            seq,
            "answering a retried request from its record"
        );
        return match (&request, record.inode) {
            // Only a file's snapshot, one commit, is logged with its number (see `snapshot`).
            (MasterRequest::Snapshot { .. }, _) => Ok(MasterReply::TreeChanged {
                changed: 1,
                unchanged: 0,
                denied: 0,
            }),
            (MasterRequest::TrashRestore { .. }, _) => Ok(MasterReply::Done),
            (_, Some(inode)) => {
                // A create that opened the file did so for the session that lost the answer:
                // the client counts it open, so this session has it open now.
                if let MasterRequest::Mknod { open: true, .. } = &request {
                    state.register_open(session, &[inode]).await;
                }
                Ok(MasterReply::Attr(
                    state.meta.read(move |s| s.attr(inode)).await?,
                ))
            }
            (_, None) => Ok(MasterReply::Done),
        };
    }
    REQUEST_TAG
        .scope(tag, serve(state, session, ended, peer, request))
        .await
}

/// Who sent a numbered request, in which of its slots, and its number.
#[derive(Clone, Copy, Debug)]
struct RequestTag {
    client: u64,
    slot: u16,
    seq: u64,
}

async fn serve(
    state: &MasterState,
    session: SessionId,
    ended: &CancellationToken,
    peer: SocketAddr,
    request: MasterRequest,
) -> MasterResponse {
    let now = Timestamp::now();
    let meta = &state.meta;
    match request {
        MasterRequest::OpenSession { .. }
        | MasterRequest::Tagged { .. }
        | MasterRequest::Challenge => Err(Status::Protocol),
        MasterRequest::Lookup { parent, name } => {
            let attr = meta.read(move |s| s.lookup(parent, &name)).await?;
            Ok(MasterReply::Attr(attr))
        }
        MasterRequest::GetAttr { inode } => {
            Ok(MasterReply::Attr(meta.read(move |s| s.attr(inode)).await?))
        }
        MasterRequest::SetAttr {
            inode,
            changes,
            caller,
        } => set_attr(state, ended, inode, changes, caller, now).await,
        MasterRequest::Mknod {
            parent,
            name,
            kind,
            mode,
            umask,
            rdev,
            caller,
            open,
        } => {
            let op = MetaOp::Mknod {
                parent,
                name,
                kind,
                mode,
                umask,
                uid: caller.uid,
                gid: caller.gid,
                rdev,
                time: now,
            };
            let reply = commit_attr(state, op).await?;
            if let (true, MasterReply::Attr(attr)) = (open, &reply) {
                state.register_open(session, &[attr.inode]).await;
            }
            with_parent(state, parent, reply).await
        }
        MasterRequest::Mkdir {
            parent,
            name,
            mode,
            umask,
            caller,
        } => {
            let op = MetaOp::Mkdir {
                parent,
                name,
                mode,
                umask,
                uid: caller.uid,
                gid: caller.gid,
                time: now,
            };
            let pending = state.dir_leases.begin_grant();
            match with_parent(state, parent, commit_attr(state, op).await?).await? {
                MasterReply::Entry { attr, parent }
                    if state.dir_leases.grant(pending, session, attr.inode) =>
                {
                    Ok(MasterReply::LeasedDir { attr, parent })
                }
                reply => Ok(reply),
            }
        }
        MasterRequest::AwaitRecalls {
            returned,
            renew,
            client,
        } => {
            let (recalled, renewed) = state
                .dir_leases
                .await_recalls(
                    session,
                    client,
                    &returned,
                    &renew,
                    crate::dir_leases::RECALL_POLL,
                )
                .await;
            Ok(MasterReply::Recalled { recalled, renewed })
        }
        MasterRequest::LeaseDir { dir } => {
            state.dir_leases.returned(session, dir).await;
            if !state.dir_leases.may_lease(session, dir) {
                return Ok(MasterReply::Done);
            }
            let pending = state.dir_leases.begin_grant();
            let most = crate::dir_leases::MAX_LEASED_NAMES;
            let entries = meta.read(move |s| s.read_dir(dir, 0, most + 1)).await?;
            if entries.len() <= most && state.dir_leases.grant(pending, session, dir) {
                Ok(MasterReply::LeasedNames(
                    entries.into_iter().map(|e| e.name).collect(),
                ))
            } else {
                Ok(MasterReply::Done)
            }
        }
        MasterRequest::Symlink {
            parent,
            name,
            target,
            caller,
        } => {
            let op = MetaOp::Symlink {
                parent,
                name,
                target,
                uid: caller.uid,
                gid: caller.gid,
                time: now,
            };
            with_parent(state, parent, commit_attr(state, op).await?).await
        }
        MasterRequest::Link {
            inode,
            parent,
            name,
        } => {
            let op = MetaOp::Link {
                inode,
                parent,
                name,
                time: now,
            };
            with_parent(state, parent, commit_attr(state, op).await?).await
        }
        MasterRequest::ReadLink { inode } => Ok(MasterReply::Target(
            meta.read(move |s| s.read_link(inode)).await?,
        )),
        MasterRequest::Unlink { parent, name } => {
            let op = MetaOp::Unlink {
                parent,
                name,
                time: now,
            };
            with_parent(state, parent, commit_done(state, op).await?).await
        }
        MasterRequest::Rmdir { parent, name } => {
            let op = MetaOp::Rmdir {
                parent,
                name,
                time: now,
            };
            with_parent(state, parent, commit_done(state, op).await?).await
        }
        MasterRequest::Rename {
            parent,
            name,
            new_parent,
            new_name,
            flags,
        } => {
            let op = MetaOp::Rename {
                parent,
                name,
                new_parent,
                new_name,
                flags,
                time: now,
            };
            commit_done(state, op).await
        }
        MasterRequest::ReadDir {
            inode,
            after,
            limit,
        } => {
            let limit = (limit as usize).clamp(1, MAX_DIR_PAGE);
            let entries = meta.read(move |s| s.read_dir(inode, after, limit)).await?;
            Ok(MasterReply::Entries(entries))
        }
        MasterRequest::ReadDirPlus {
            inode,
            after,
            limit,
        } => {
            let limit = (limit as usize).clamp(1, MAX_DIR_PAGE);
            let entries = meta
                .read(move |s| s.read_dir_plus(inode, after, limit))
                .await?;
            Ok(MasterReply::EntriesPlus(entries))
        }
        MasterRequest::LookupAhead {
            parent,
            name,
            limit,
        } => {
            let limit = (limit as usize).clamp(1, MAX_LOOKAHEAD);
            let entries = meta
                .read(move |s| s.lookup_ahead(parent, &name, limit))
                .await?;
            Ok(MasterReply::EntriesPlus(entries))
        }
        MasterRequest::StatFs => {
            let totals = state.cluster.totals();
            let inodes = meta.read(|s| s.inode_count().map_err(Into::into)).await?;
            Ok(MasterReply::Stats(FsStats {
                total_bytes: totals.space.total,
                available_bytes: totals.space.available,
                inodes,
            }))
        }
        MasterRequest::ReadChunk { inode, index } => {
            let (attr, chunk) = meta
                .read(move |s| Ok((s.attr(inode)?, s.file_chunk(inode, index)?)))
                .await?;
            let copies = match chunk {
                Some(fc) => Some(state.chunks.valid_copies(fc, Some(peer.ip())).await?),
                None => None,
            };
            Ok(MasterReply::ReadLocation(read_location(
                state, attr.size, copies,
            )))
        }
        MasterRequest::WriteChunk {
            inode,
            index,
            carried,
        } => {
            let fresh = WriteStart::Fresh { carried };
            write_chunk(state, session, ended, peer, (inode, index), fresh).await
        }
        MasterRequest::RetryWriteChunk {
            inode,
            index,
            failed,
        } => {
            let retry = WriteStart::Retry { failed: &failed };
            write_chunk(state, session, ended, peer, (inode, index), retry).await
        }
        MasterRequest::WriteEnd {
            inode,
            index,
            chunk,
            length,
        } => {
            let op = MetaOp::ExtendLengthIn {
                inode,
                index,
                chunk,
                length,
                time: now,
            };
            let result = meta.commit(op).await;
            if state.leases.release((inode, index), session) {
                // Written on fewer servers than it had: the worker sees it now it is free.
                state.replication.wake();
            }
            result.map(|(_, o)| match o.attr {
                Some(attr) => MasterReply::Attr(attr),
                None => MasterReply::Done,
            })
        }
        MasterRequest::Fsync => {
            // Once one failed every one does: the first says so, the sync loop repeats it.
            let failed_before = meta.store().sync_failed();
            match meta.sync().await {
                Ok(()) => Ok(MasterReply::Done),
                Err(e) => {
                    if !failed_before {
                        tracing::error!(error = %e, "cannot fsync the changelog");
                    }
                    Err(Status::Io)
                }
            }
        }
        MasterRequest::GetXattr { inode, name } => Ok(MasterReply::Xattr(
            meta.read(move |s| s.xattr(inode, &name)).await?,
        )),
        MasterRequest::ListXattr { inode } => Ok(MasterReply::XattrNames(
            meta.read(move |s| s.xattr_names(inode)).await?,
        )),
        MasterRequest::SetXattr {
            inode,
            name,
            value,
            flags,
        } => {
            let op = MetaOp::SetXattr {
                inode,
                name,
                value,
                flags,
                time: now,
            };
            commit_done(state, op).await
        }
        MasterRequest::RemoveXattr { inode, name } => {
            commit_done(
                state,
                MetaOp::RemoveXattr {
                    inode,
                    name,
                    time: now,
                },
            )
            .await
        }
        MasterRequest::Open { inode } => {
            let (attr, chunk) = meta
                .read(move |s| {
                    let attr = s.attr(inode)?;
                    let chunk = match attr.kind {
                        FileKind::File => s.file_chunk(inode, 0)?,
                        _ => None,
                    };
                    Ok((attr, chunk))
                })
                .await?;
            state.register_open(session, &[inode]).await;
            // Only where the copies are known now: an open does not wait for chunkservers to
            // register (a read that needs them asks with `ReadChunk`, which does).
            let first_chunk = match (attr.kind, chunk) {
                (FileKind::File, None) => Some(read_location(state, attr.size, None)),
                (FileKind::File, Some(fc)) => {
                    let valid = state
                        .cluster
                        .valid_copies(fc.chunk, fc.version, Some(peer.ip()));
                    (!valid.is_empty()).then(|| read_location(state, attr.size, Some((fc, valid))))
                }
                _ => None,
            };
            Ok(MasterReply::Opened { attr, first_chunk })
        }
        MasterRequest::Close { inodes } => {
            let unused: Vec<InodeId> = inodes
                .into_iter()
                .filter(|&inode| state.open_files.close(inode, session))
                .collect();
            if !unused.is_empty() {
                state.purge_all_if_unused(unused).await;
            }
            Ok(MasterReply::Done)
        }
        MasterRequest::Reopen { inodes } => {
            state.register_open(session, &inodes).await;
            Ok(MasterReply::Done)
        }
        MasterRequest::SetLock { inode, lock, wait } => {
            let takes = lock.kind != LockKind::Unlock;
            // A wait given up with its connection: the client asks again on its next session.
            tokio::select! {
                set = async {
                    if takes {
                        state.lock_holders.grace_over().await;
                    }
                    state.locks.set(inode, session, lock, wait).await
                } => set?,
                _ = ended.cancelled() => return Err(Status::Io),
            }
            if takes {
                note_lock_holder(state, session).await;
            }
            Ok(MasterReply::Done)
        }
        MasterRequest::TestLock { inode, lock } => {
            tokio::select! {
                () = state.lock_holders.grace_over() => {}
                _ = ended.cancelled() => return Err(Status::Io),
            }
            Ok(MasterReply::Conflict(
                state.locks.test(inode, session, &lock),
            ))
        }
        MasterRequest::ReleaseLocks { inode, owner } => {
            state.locks.release_owner(inode, session, owner);
            Ok(MasterReply::Done)
        }
        MasterRequest::ReclaimLocks { locks, last } => {
            let claimed = locks.len();
            let refused = state.locks.reclaim(session, locks, last);
            if !refused.is_empty() {
                tracing::warn!(%session, refused = refused.len(), "a client could not take back locks it held before it reconnected");
            }
            if refused.len() < claimed {
                note_lock_holder(state, session).await;
            }
            if last && let Some(client) = state.locks.client_of(session) {
                state.lock_holders.claimed(client);
            }
            Ok(MasterReply::Reclaimed(refused))
        }
        MasterRequest::Access { inode } => {
            let attr = meta.read(move |s| s.attr(inode)).await?;
            if attr.read_moves_atime(now) {
                meta.commit(MetaOp::SetAtime { inode, time: now }).await?;
            }
            Ok(MasterReply::Done)
        }
        MasterRequest::AppendBegin { inode } => {
            if !state
                .leases
                .acquire_unless((inode, APPEND_SLOT), session, ended)
                .await
            {
                return Err(Status::Io);
            }
            match meta.read(move |s| s.attr(inode)).await {
                Ok(attr) => Ok(MasterReply::AppendAt(attr.size)),
                Err(status) => {
                    state.leases.release((inode, APPEND_SLOT), session);
                    Err(status)
                }
            }
        }
        MasterRequest::AppendEnd { inode } => {
            state.leases.release((inode, APPEND_SLOT), session);
            Ok(MasterReply::Done)
        }
        MasterRequest::ClearChunks { inode, first, end } => {
            commit_done(
                state,
                MetaOp::ClearChunks {
                    inode,
                    first,
                    end,
                    time: now,
                },
            )
            .await
        }
        MasterRequest::FileInfo { inode } => crate::info::file_info(state, inode).await,
        MasterRequest::DirInfo { inode } => crate::info::dir_info(state, inode).await,
        MasterRequest::SummarizeTree { inode, attr } => {
            crate::info::summarize(state, inode, attr).await
        }
        MasterRequest::TrashList { caller } => {
            Ok(MasterReply::Trash(crate::trash::list(state, caller).await?))
        }
        MasterRequest::TrashRestore { inode, caller } => {
            crate::trash::restore(state, inode, caller).await
        }
        MasterRequest::TrashPurge { inode, caller } => {
            crate::trash::purge(state, inode, caller).await
        }
        MasterRequest::Snapshot {
            source,
            parent,
            name,
            caller,
        } => crate::snapshot::snapshot(state, source, parent, name, caller).await,
        MasterRequest::Status => crate::info::status(state).await,
        MasterRequest::ChangeTree {
            inode,
            attr,
            change,
            recursive,
            caller,
        } => crate::tree::change_tree(state, inode, attr, change, recursive, caller).await,
    }
}

/// Where a chunk of a file `file_length` long can be read: its valid copies, nearest to the
/// client first, and the permission to read them (nothing for a hole).
fn read_location(
    state: &MasterState,
    file_length: u64,
    copies: Option<(FileChunk, Vec<Target>)>,
) -> ReadLocation {
    let chunk = copies.as_ref().map(|(fc, _)| *fc);
    ReadLocation {
        file_length,
        chunk: chunk.map(|fc| (fc.chunk, fc.version)),
        servers: copies
            .map(|(_, valid)| valid.into_iter().map(|t| t.data_addr).collect())
            .unwrap_or_default(),
        capability: chunk.map(|fc| state.chunks.capability(fc.chunk, fc.version, Access::Read)),
    }
}

/// Adds the directory's attributes after a change to the reply of a request that made
/// (`Attr`) or removed (`Done`) a name in it. The kernel drops its copy of a directory's
/// attributes after every such change and asks again before the next permission check; with
/// these the client answers that from what it was just told instead of asking the master.
async fn with_parent(state: &MasterState, parent: InodeId, reply: MasterReply) -> MasterResponse {
    let Ok(parent) = state.meta.read(move |s| s.attr(parent)).await else {
        return Ok(reply);
    };
    Ok(match reply {
        MasterReply::Attr(attr) => MasterReply::Entry { attr, parent },
        MasterReply::Done => MasterReply::Removed { parent },
        other => other,
    })
}

/// How a write lease is asked for.
enum WriteStart<'a> {
    /// A write's first lease on the slot, or a new one after the last ended: what the chunk
    /// holds past the file's end and `carried` is cut off, and chunks lying wholly between the
    /// file's end and the slot are dropped (see [`crate::past_end`]).
    Fresh { carried: u64 },
    /// After a chain failed: the `failed` servers are left out, and nothing is cut.
    Retry { failed: &'a [SocketAddr] },
}

/// Grants this session the write lease on the chunk slot `key`.
async fn write_chunk(
    state: &MasterState,
    session: SessionId,
    ended: &CancellationToken,
    peer: SocketAddr,
    key: LeaseKey,
    start: WriteStart<'_>,
) -> MasterResponse {
    let (inode, index) = key;
    if index == APPEND_SLOT {
        return Err(Status::Invalid);
    }
    // A clear held up by a chunkserver may outlast the lease, which another writer may take
    // meanwhile: the lease is then waited for again, and the clear made again under it.
    for attempt in 0.. {
        if !state.leases.acquire_unless(key, session, ended).await {
            return Err(Status::Io);
        }
        let WriteStart::Fresh { .. } = start else {
            break;
        };
        clear_before_slot(state, ended, inode, index).await;
        if ended.is_cancelled() {
            // As in `acquire_unless`: the lease may have been renewed for a writer under way.
            state.leases.release_unreported(key, session);
            return Err(Status::Io);
        }
        if state.leases.renew(key, session) {
            break;
        }
        if attempt == 2 {
            tracing::warn!(%inode, index, "a write lease lapsed three times while what lay past the file's end was cleared");
            return Err(Status::Io);
        }
    }
    let (failed, past_end) = match start {
        WriteStart::Fresh { carried } if !crate::past_end::unreported(state, inode, index) => {
            (&[][..], PastEnd::CutBeyond(carried))
        }
        WriteStart::Fresh { .. } => (&[][..], PastEnd::Keep),
        WriteStart::Retry { failed } => (failed, PastEnd::Keep),
    };
    match state
        .chunks
        .grant_write(inode, index, Some(peer.ip()), failed, past_end, &|| {
            state.leases.renew(key, session)
        })
        .await
    {
        Ok(lease) => {
            state.leases.set_chunk(key, session, lease.chunk);
            if !failed.is_empty() {
                state.leases.mark_short(key, session);
            }
            Ok(MasterReply::WriteLease(lease))
        }
        Err(status) => {
            // A retry refused: the writer may hold data stored under its earlier lease.
            state.leases.release_unreported(key, session);
            Err(status)
        }
    }
}

/// Under a write's lease on slot `index` of `inode`: clears what writers left without
/// reporting between the file's end and the slot, where the write would make it part of the
/// file ([`GrownBy::Write`]). Never waits for another lease, so holding this one meanwhile
/// cannot deadlock; a failure is logged and the write goes ahead.
async fn clear_before_slot(
    state: &MasterState,
    ended: &CancellationToken,
    inode: InodeId,
    index: u32,
) {
    if index == 0 {
        return;
    }
    let cleared = async {
        let end = crate::past_end::file_size(state, inode).await?;
        let start = u64::from(index) * CHUNK_SIZE;
        if end >= start {
            return Ok(());
        }
        crate::past_end::clear(state, ended, inode, end, start, GrownBy::Write).await
    };
    if let Err(status) = cleared.await {
        tracing::warn!(%inode, index, %status, "cannot clear what lies past a file's end before a write further on");
    }
}

/// `op` logged with the number of the request being served, if it is a numbered one, so that
/// a retry of the request is answered from the record instead of making the change again. For
/// a request that commits once: one made of several commits must tag none, or its last.
pub(crate) fn tagged(op: MetaOp) -> MetaOp {
    match REQUEST_TAG.try_with(|tag| *tag) {
        Ok(RequestTag { client, slot, seq }) => MetaOp::TaggedInSlot {
            client,
            slot,
            seq,
            time: Timestamp::now(),
            op: Box::new(op),
        },
        Err(_) => op,
    }
}

/// Commits a change and does what it leaves to do: delete freed chunks, queue unlinked files
/// for their purge.
async fn commit(state: &MasterState, op: MetaOp) -> Result<elkfs_metastore::Outcome, Status> {
    let (_, mut outcome) = state.meta.commit(tagged(op)).await?;
    state
        .chunks
        .delete_freed(std::mem::take(&mut outcome.freed_chunks));
    // In the background: the answer need not wait for a second commit.
    state.purges.push(std::mem::take(&mut outcome.unlinked));
    Ok(outcome)
}

async fn commit_attr(state: &MasterState, op: MetaOp) -> MasterResponse {
    commit(state, op)
        .await?
        .attr
        .map(MasterReply::Attr)
        .ok_or(Status::Io)
}

/// Puts the client of `session`, just granted a lock, on the list of clients holding locks. A
/// list that cannot be written costs only the grace period after a restart, so the lock stands.
async fn note_lock_holder(state: &MasterState, session: SessionId) {
    let Some(client) = state.locks.client_of(session) else {
        return;
    };
    if let Err(e) = state.lock_holders.note(client).await {
        tracing::error!(%session, error = %e, "cannot write down that a client holds locks; after a restart, another client may take a conflicting lock before it claims its own");
    }
}

async fn commit_done(state: &MasterState, op: MetaOp) -> MasterResponse {
    commit(state, op).await?;
    Ok(MasterReply::Done)
}

async fn set_attr(
    state: &MasterState,
    ended: &CancellationToken,
    inode: InodeId,
    changes: SetAttr,
    _caller: Caller,
    now: Timestamp,
) -> MasterResponse {
    // Held until the new size is committed.
    let _change = match changes.size {
        Some(size) => Some(crate::truncate::prepare(state, ended, inode, size).await?),
        None => None,
    };
    commit_attr(
        state,
        MetaOp::SetAttr {
            inode,
            changes,
            time: now,
        },
    )
    .await
}
