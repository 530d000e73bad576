//! The chunkserver's side of chunk capabilities: every data request must carry one that the
//! master signed for its chunk, version and kind of access, not yet expired by the master's
//! clock. Copies between chunkservers (replication) carry one this server signs itself, since
//! every member of the cluster holds the key.

use std::sync::atomic::{AtomicI64, Ordering};

use elkfs_proto::capability::{Access, Capability, CapabilityError, CapabilityKey, unix_now};
use elkfs_proto::cluster_key::ClusterKey;
use elkfs_proto::{ChunkId, ChunkVersion};

/// Checks and signs capabilities, keeping time by the master's clock.
#[derive(Debug)]
pub struct Capabilities {
    key: CapabilityKey,
    /// The master's clock minus this machine's, in seconds, as of the last registration.
    master_offset: AtomicI64,
}

impl Capabilities {
    /// Capabilities of the cluster whose key is `cluster`.
    pub fn new(cluster: &ClusterKey) -> Capabilities {
        Capabilities {
            key: CapabilityKey::new(cluster),
            master_offset: AtomicI64::new(0),
        }
    }

    /// Takes the master's clock (seconds since the epoch, just received) as the one that
    /// capabilities expire by, so clocks that differ between machines do not matter.
    pub fn set_master_clock(&self, master_now: u64) {
        let offset = master_now as i128 - unix_now() as i128;
        let offset = offset.clamp(i64::MIN as i128, i64::MAX as i128) as i64;
        self.master_offset.store(offset, Ordering::Relaxed);
    }

    /// Now on the master's clock.
    fn now(&self) -> u64 {
        let offset = self.master_offset.load(Ordering::Relaxed);
        unix_now().saturating_add_signed(offset)
    }

    /// Whether `cap` allows `access` to `chunk` (at `version` when the request names one).
    pub fn check(
        &self,
        cap: &Capability,
        chunk: ChunkId,
        version: Option<ChunkVersion>,
        access: Access,
    ) -> Result<(), CapabilityError> {
        self.key.check(cap, chunk, version, access, self.now())
    }

    /// A capability for this server to read `chunk` at `version` from a peer.
    pub fn for_copying(&self, chunk: ChunkId, version: ChunkVersion) -> Capability {
        self.key.sign(chunk, version, Access::Read, self.now())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use elkfs_proto::capability::CAPABILITY_LIFETIME;

    #[test]
    fn expiry_follows_the_master_clock() {
        let cluster = ClusterKey::from_bytes([3; 32]);
        let master = CapabilityKey::new(&cluster);
        let caps = Capabilities::new(&cluster);
        let (chunk, version) = (ChunkId(1), ChunkVersion(1));
        // A master whose clock is two lifetimes ahead signs a capability: by this machine's
        // clock it is far in the future, by the master's it is fresh.
        let ahead = unix_now() + 2 * CAPABILITY_LIFETIME.as_secs();
        let cap = master.sign(chunk, version, Access::Read, ahead);
        caps.set_master_clock(ahead);
        assert_eq!(caps.check(&cap, chunk, Some(version), Access::Read), Ok(()));
        // One that this machine's clock alone would still take has expired by the master's.
        let local_now = unix_now();
        let old = master.sign(chunk, version, Access::Read, local_now + 1);
        assert!(old.expires > local_now);
        assert_eq!(
            caps.check(&old, chunk, Some(version), Access::Read),
            Err(CapabilityError::Expired)
        );
    }

    #[test]
    fn copies_between_servers_carry_a_valid_read_capability() {
        let cluster = ClusterKey::from_bytes([4; 32]);
        let caps = Capabilities::new(&cluster);
        let cap = caps.for_copying(ChunkId(9), ChunkVersion(2));
        assert_eq!(
            caps.check(&cap, ChunkId(9), Some(ChunkVersion(2)), Access::Read),
            Ok(())
        );
        assert_eq!(
            caps.check(&cap, ChunkId(9), Some(ChunkVersion(2)), Access::Write),
            Err(CapabilityError::ReadOnly)
        );
    }
}
