//! Accepting connections, with a bound on the connections one address may hold open to a
//! daemon at once, so a single peer (broken or hostile) cannot use up its tasks and file
//! descriptors.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};

/// Connections one address may have open to one daemon port: far above what mounts (one to the
/// master, one per chunkserver) and chunkservers (a few) use.
pub const MAX_CONNECTIONS_PER_PEER: usize = 256;

/// Open connections by peer address.
#[derive(Clone)]
pub struct PeerLimit {
    max: usize,
    open: Arc<Mutex<HashMap<IpAddr, usize>>>,
}

/// One admitted connection; dropping it frees its place.
pub struct PeerSlot {
    ip: IpAddr,
    open: Arc<Mutex<HashMap<IpAddr, usize>>>,
}

impl PeerLimit {
    /// At most `max` connections per address.
    pub fn new(max: usize) -> PeerLimit {
        PeerLimit {
            max,
            open: Arc::default(),
        }
    }

    /// A place for one more connection from `ip`, or `None` when it has `max` open.
    pub fn admit(&self, ip: IpAddr) -> Option<PeerSlot> {
        let mut open = self.open.lock().unwrap_or_else(|p| p.into_inner());
        let count = open.entry(ip).or_insert(0);
        if *count >= self.max {
            return None;
        }
        *count += 1;
        Some(PeerSlot {
            ip,
            open: self.open.clone(),
        })
    }
}

impl Default for PeerLimit {
    fn default() -> Self {
        PeerLimit::new(MAX_CONNECTIONS_PER_PEER)
    }
}

impl Drop for PeerSlot {
    fn drop(&mut self) {
        let mut open = self.open.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(count) = open.get_mut(&self.ip) {
            *count -= 1;
            if *count == 0 {
                open.remove(&self.ip);
            }
        }
    }
}

/// Accepts connections on `listener` until `stop`, each served by `serve` in its own task with
/// a child of `stop`; an address past [`MAX_CONNECTIONS_PER_PEER`] has its newest connection
/// closed at once.
pub async fn accept_loop<F, Fut>(
    listener: tokio::net::TcpListener,
    stop: tokio_util::sync::CancellationToken,
    serve: F,
) where
    F: Fn(tokio::net::TcpStream, tokio_util::sync::CancellationToken) -> Fut,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let limit = PeerLimit::default();
    loop {
        let accepted = tokio::select! {
            a = listener.accept() => a,
            _ = stop.cancelled() => return,
        };
        match accepted {
            Ok((stream, peer)) => {
                let Some(slot) = limit.admit(peer.ip()) else {
                    tracing::warn!(%peer, "too many connections from one address; closing the newest");
                    continue;
                };
                let served = serve(stream, stop.child_token());
                tokio::spawn(async move {
                    served.await;
                    drop(slot);
                });
            }
            Err(e) => {
                tracing::warn!(error = %e, "accept failed");
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_address_gets_its_own_bound_and_places_come_back() {
        let limit = PeerLimit::new(2);
        let a: IpAddr = "10.0.0.1".parse().unwrap();
        let b: IpAddr = "10.0.0.2".parse().unwrap();
        let first = limit.admit(a).unwrap();
        let _second = limit.admit(a).unwrap();
        assert!(limit.admit(a).is_none());
        assert!(limit.admit(b).is_some());
        drop(first);
        assert!(limit.admit(a).is_some());
    }
}
