//! The ElkFS client library, shared by the mount and the CLI: a session with the master for
//! metadata, and data read from and written to chunkservers directly.

pub mod closes;
pub mod dir_leases;
pub mod errno;
pub mod fresh_attrs;
pub mod held_locks;
pub mod locations;
pub mod lookahead;
pub mod master;
pub mod mount_info;
pub mod namespace;
mod open_files;
pub mod ranges;
pub mod reader;
pub mod recent_changes;
pub mod request_slots;
#[cfg(test)]
mod test_attrs;
pub mod writer;

use std::collections::HashMap;
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use elkfs_common::defaults;
use elkfs_proto::connection::Dialer;
use elkfs_proto::tls::ServerRole;
use elkfs_proto::{DATA_LIMITS, DataPool, Hello, InodeId, Role};

use crate::fresh_attrs::FreshAttrs;
use crate::locations::LocationCache;
use crate::lookahead::Lookahead;
use crate::master::{ConnectError, MasterClient};
use crate::writer::FileWriter;

/// Tunables of a client.
#[derive(Clone, Debug)]
pub struct ClientConfig {
    /// How long requests wait for an unreachable master before failing with EIO.
    pub master_timeout: Duration,
    /// Bytes of written data buffered per open file.
    pub write_buffer: usize,
    /// Data frames in flight per file being written.
    pub write_window: usize,
    /// How long chunk locations are reused without asking the master.
    pub location_ttl: Duration,
    /// How long attributes may be reused without asking the master (the kernel's attribute
    /// cache time): a directory's attributes sent with a change answer the next getattr
    /// within it.
    pub attr_ttl: Duration,
    /// Password and local address for the session.
    pub session: master::SessionOptions,
}

impl Default for ClientConfig {
    fn default() -> Self {
        ClientConfig {
            master_timeout: defaults::MASTER_TIMEOUT,
            write_buffer: defaults::WRITE_BUFFER_BYTES,
            write_window: defaults::WRITE_WINDOW,
            location_ttl: defaults::ATTR_CACHE,
            attr_ttl: defaults::ATTR_CACHE,
            session: master::SessionOptions::default(),
        }
    }
}

/// A connected client.
pub struct Client {
    /// The session with the master.
    pub master: MasterClient,
    data: DataPool,
    locations: LocationCache,
    /// Directories' attributes as the master sent them with a change made in them.
    fresh: FreshAttrs,
    /// Names fetched ahead of lookups made in sorted order.
    lookahead: Lookahead,
    writers: Mutex<HashMap<InodeId, Weak<FileWriter>>>,
    config: ClientConfig,
}

impl Client {
    /// Connects to the master at `target` and opens a session rooted at `subdir`.
    pub async fn connect(
        target: &str,
        subdir: &str,
        mount_point: &str,
        config: ClientConfig,
    ) -> Result<Arc<Client>, ConnectError> {
        let master = MasterClient::connect_with(
            target,
            subdir,
            mount_point,
            config.master_timeout,
            config.session.clone(),
        )
        .await?;
        let data_tls = match &config.session.tls {
            None => None,
            Some(trust) => Some(trust.client(ServerRole::Chunkserver).map_err(|e| {
                ConnectError::Unreachable {
                    addr: target.to_string(),
                    reason: e.to_string(),
                }
            })?),
        };
        Ok(Arc::new(Client {
            master,
            data: DataPool::new(
                Dialer {
                    bind: None,
                    tls: data_tls,
                },
                Hello::new(Role::DataClient, "elkfs-client"),
                DATA_LIMITS,
                "chunkserver",
            ),
            locations: LocationCache::new(config.location_ttl),
            fresh: FreshAttrs::new(config.attr_ttl),
            lookahead: Lookahead::new(config.attr_ttl),
            writers: Mutex::new(HashMap::new()),
            config,
        }))
    }

    /// The inode of this session's root directory.
    pub fn root(&self) -> InodeId {
        self.master.root()
    }

    /// The write-behind buffer of `inode`, shared by every handle that writes it.
    pub fn writer(self: &Arc<Self>, inode: InodeId) -> Arc<FileWriter> {
        // Its writes will change the attributes the master last sent.
        self.fresh.forget(inode);
        let mut writers = self.writers.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(w) = writers.get(&inode).and_then(Weak::upgrade) {
            return w;
        }
        writers.retain(|_, w| w.strong_count() > 0);
        let w = Arc::new(FileWriter::new(
            self.clone(),
            inode,
            self.config.write_buffer,
        ));
        writers.insert(inode, Arc::downgrade(&w));
        w
    }

    /// The write-behind buffer of `inode` if some handle has one.
    pub fn writer_if_open(&self, inode: InodeId) -> Option<Arc<FileWriter>> {
        let writers = self.writers.lock().unwrap_or_else(|p| p.into_inner());
        writers.get(&inode).and_then(Weak::upgrade)
    }

    /// Forgets cached chunk locations of a file (it was opened anew, or changed).
    pub fn forget_locations(&self, inode: InodeId) {
        self.locations.forget_file(inode);
    }
}
