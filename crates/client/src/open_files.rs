//! The files this client has open, as the master must know them: one open counted per file
//! for the session (the client counts its handles itself), registered by the first open's
//! `Open` or by a create-and-open, and told again to each new session with `Reopen` (see
//! `MasterClient::opened`).

use std::collections::HashMap;

use elkfs_proto::InodeId;
use elkfs_proto::Status;
use elkfs_proto::master::{MasterReply, MasterRequest};
use tokio::sync::watch;

use crate::dir_leases::Generation;
use crate::master::MasterClient;

/// The files this client has open, with how many handles each.
pub(crate) struct OpenFiles {
    pub(crate) counts: HashMap<InodeId, u32>,
    /// Files whose first open's `Open` has not been answered yet; later opens wait until the
    /// sender is dropped.
    pub(crate) opening: HashMap<InodeId, watch::Sender<()>>,
    /// The connection whose session the master knows these opens in (the last one told of
    /// them).
    pub(crate) generation: Generation,
}

impl OpenFiles {
    /// Drops one open count; the generation of the connection whose session the master knows
    /// the file open in when it was the last.
    pub(crate) fn forget(&mut self, inode: InodeId) -> Option<Generation> {
        match self.counts.get_mut(&inode) {
            Some(count) if *count > 1 => {
                *count -= 1;
                None
            }
            Some(_) => {
                self.counts.remove(&inode);
                Some(self.generation)
            }
            None => None,
        }
    }
}

/// The first open of a file, telling the master of it. Dropped before it is done (its caller
/// stopped waiting), it takes its count back, and later opens of the file stop waiting for it.
pub(crate) struct FirstOpen<'a> {
    client: &'a MasterClient,
    inode: InodeId,
    done: bool,
}

impl<'a> FirstOpen<'a> {
    /// The first open of `inode`, already noted in `OpenFiles::opening`.
    pub(crate) fn new(client: &'a MasterClient, inode: InodeId) -> FirstOpen<'a> {
        FirstOpen {
            client,
            inode,
            done: false,
        }
    }

    /// Sends `Open` until a session the last `Reopen` went to has answered it. On an error the
    /// count is taken back if `forget_on_error`; either way, later opens of the file stop
    /// waiting only once the count is right.
    pub(crate) async fn register(mut self, forget_on_error: bool) -> Result<MasterReply, Status> {
        loop {
            let (reply, answered_in) = self
                .client
                .request_answered_in(&MasterRequest::Open { inode: self.inode })
                .await;
            let mut open = self.client.lock_open_files();
            if reply.is_ok() && answered_in != Some(open.generation) {
                tracing::debug!(inode = %self.inode, "reconnected while opening a file; opening it again in the new session");
                continue;
            }
            if reply.is_err() && forget_on_error {
                open.forget(self.inode);
            }
            open.opening.remove(&self.inode);
            self.done = true;
            return reply;
        }
    }
}

impl Drop for FirstOpen<'_> {
    fn drop(&mut self) {
        if !self.done {
            let mut open = self.client.lock_open_files();
            open.forget(self.inode);
            open.opening.remove(&self.inode);
        }
    }
}
