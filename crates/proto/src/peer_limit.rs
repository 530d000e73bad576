//! A bound on the connections one address may hold open to a daemon at once, so a single peer
//! (broken or hostile) cannot use up its tasks and file descriptors.

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
