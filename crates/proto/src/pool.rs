//! Connections to many peers of one kind (chunkservers), opened on first use and reopened when
//! they close.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Mutex;
use std::time::Duration;

use crate::connection::{self, ConnError, Connection, Dialer, Message, NoRequests};
use crate::frame::FrameLimits;
use crate::hello::Hello;

/// How long opening a connection (TCP and hello) may take.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// Open connections by peer address.
pub struct Pool<Req, Resp> {
    conns: Mutex<HashMap<SocketAddr, Connection<Req, Resp>>>,
    dialer: Dialer,
    hello: Hello,
    limits: FrameLimits,
    label: &'static str,
}

impl<Req: Message, Resp: Message> Pool<Req, Resp> {
    /// An empty pool whose connections are opened as `dialer` says, say `hello` and use
    /// `limits`.
    pub fn new(dialer: Dialer, hello: Hello, limits: FrameLimits, label: &'static str) -> Self {
        Pool {
            conns: Mutex::new(HashMap::new()),
            dialer,
            hello,
            limits,
            label,
        }
    }

    /// The open connection to `addr`, opening one if there is none (or it closed).
    pub async fn get(&self, addr: SocketAddr) -> Result<Connection<Req, Resp>, ConnError> {
        if let Some(conn) = self.lock().get(&addr)
            && !conn.is_closed()
        {
            return Ok(conn.clone());
        }
        let opening =
            connection::connect_with::<Req, Resp, connection::NoMessage, connection::NoMessage, _>(
                &self.dialer,
                addr,
                &self.hello,
                self.limits,
                self.label,
                NoRequests,
            );
        let conn = match tokio::time::timeout(CONNECT_TIMEOUT, opening).await {
            Ok(result) => result?,
            Err(_) => {
                return Err(ConnError::Io {
                    peer: format!("{} {addr}", self.label),
                    source: std::io::ErrorKind::TimedOut.into(),
                });
            }
        };
        // Another caller may have connected meanwhile: keep one connection per peer, so requests
        // already sent on it are not cut off by replacing it.
        let mut conns = self.lock();
        match conns.get(&addr) {
            Some(existing) if !existing.is_closed() => Ok(existing.clone()),
            _ => {
                conns.insert(addr, conn.clone());
                Ok(conn)
            }
        }
    }

    /// Drops the connection to `addr` (after an error), so the next use opens a fresh one.
    pub fn forget(&self, addr: SocketAddr) {
        if let Some(conn) = self.lock().remove(&addr) {
            conn.close("dropped after an error");
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<SocketAddr, Connection<Req, Resp>>> {
        self.conns.lock().unwrap_or_else(|p| p.into_inner())
    }
}
