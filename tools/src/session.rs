//! Talking to masters: one session per master address (paths may be on several clusters), each
//! request sent with the client library and turned into a [`Failure`] when refused.

use std::collections::HashMap;
use std::future::Future;
use std::time::Duration;

use elkfs_client::master::{MasterClient, SessionOptions};
use elkfs_proto::master::{MasterReply, MasterRequest};
use elkfs_proto::tls::ClusterTrust;
use elkfs_proto::types::Caller;

use crate::failure::Failure;
use crate::progress::with_progress;

/// How long a request waits for an unreachable master before giving up.
const MASTER_TIMEOUT: Duration = Duration::from_secs(15);

/// What sessions show as their mount point in the master's session list.
const SESSION_NAME: &str = "elkfs-cli";

/// Sessions with the masters a command talks to.
pub struct Session {
    runtime: tokio::runtime::Runtime,
    clients: HashMap<String, MasterClient>,
}

impl Session {
    /// A session with no master connected yet.
    pub fn new() -> anyhow::Result<Session> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        Ok(Session {
            runtime,
            clients: HashMap::new(),
        })
    }

    /// Sends `request` to the master at `master`; with `progress`, a spinner naming it shows
    /// on a terminal while the request takes more than a second.
    pub fn ask(
        &mut self,
        master: &str,
        request: &MasterRequest,
        progress: Option<&str>,
    ) -> Result<MasterReply, Failure> {
        if !self.clients.contains_key(master) {
            let tls = match crate::locate::tls_ca_for(master) {
                None => None,
                Some(ca) => Some(
                    ClusterTrust::from_pem_file(&ca).map_err(|e| Failure::new(e.to_string()))?,
                ),
            };
            let options = SessionOptions {
                tls,
                ..SessionOptions::default()
            };
            let client = self
                .runtime
                .block_on(MasterClient::connect_with(
                    master,
                    "/",
                    SESSION_NAME,
                    MASTER_TIMEOUT,
                    options,
                ))
                .map_err(|e| Failure::new(e.to_string()))?;
            self.clients.insert(master.to_string(), client);
        }
        let client = self.clients.get(master).ok_or_else(Failure::unexpected)?;
        let reply = match progress {
            Some(what) => self
                .runtime
                .block_on(with_progress(what, client.request(request))),
            None => self.runtime.block_on(client.request(request)),
        };
        reply.map_err(Failure::from)
    }

    /// Runs a future on the session's runtime (for waiting between `status --watch` rounds).
    pub fn block_on<F: Future>(&self, work: F) -> F::Output {
        self.runtime.block_on(work)
    }
}

/// The user running the command, as the master checks ownership.
pub fn caller() -> Caller {
    // SAFETY: geteuid and getegid have no preconditions and cannot fail.
    unsafe {
        Caller {
            uid: libc::geteuid(),
            gid: libc::getegid(),
        }
    }
}
