//! Chunk capabilities: the master's signed permission to read or write one version of one chunk
//! until a deadline. Chunkservers serve or change a chunk only for a request carrying one, so a
//! client the master refused (or a read-only session) gets nothing from a chunkserver even when
//! it talks to it directly.
//!
//! The signature is a BLAKE3 keyed hash under a key derived from the cluster key, which the
//! master and every chunkserver hold and clients never see.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use crate::auth::proofs_match;
use crate::cluster_key::ClusterKey;
use crate::ids::{ChunkId, ChunkVersion};

/// How long a capability is valid after the master signs it. Clients renew well before.
pub const CAPABILITY_LIFETIME: Duration = Duration::from_secs(600);

/// Context string of the signing key's derivation, fixed for the protocol.
const SIGNING_CONTEXT: &str = "elkfs 2026-12-04 chunk capability";

/// What a capability allows.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Access {
    /// Reading the chunk's data.
    Read,
    /// Writing (and reading) the chunk's data.
    Write,
    /// Writing (and reading) the chunk's data, creating the chunk first on a server that does
    /// not hold it yet. The master hands it out with the first lease on a new chunk: it tells the
    /// servers to create the chunk without waiting for them, so the client's first write may
    /// reach a server before the master's command does.
    Create,
}

impl Access {
    /// Whether this access includes writing.
    pub fn writes(self) -> bool {
        matches!(self, Access::Write | Access::Create)
    }
}

/// Permission to access one version of one chunk until `expires`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Capability {
    /// The chunk.
    pub chunk: ChunkId,
    /// The version it allows (a copy of another version is not served under it).
    pub version: ChunkVersion,
    /// What it allows.
    pub access: Access,
    /// Seconds since the Unix epoch on the master's clock after which it is void.
    pub expires: u64,
    /// The master's signature over everything above.
    pub mac: [u8; 32],
}

/// Why a chunkserver refused a capability.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum CapabilityError {
    /// Its signature is not the cluster's: forged, altered, or from another cluster.
    #[error("the capability's signature is not valid")]
    Forged,
    /// It is for another chunk or version than the request.
    #[error("the capability is for another chunk or version")]
    OtherChunk,
    /// It allows reading and the request writes.
    #[error("the capability allows reading only")]
    ReadOnly,
    /// Its deadline has passed.
    #[error("the capability has expired")]
    Expired,
}

/// Signs and checks capabilities with the key derived from the cluster key.
#[derive(Clone)]
pub struct CapabilityKey {
    key: [u8; 32],
}

impl std::fmt::Debug for CapabilityKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("CapabilityKey(..)")
    }
}

impl CapabilityKey {
    /// The capability key of the cluster whose key is `cluster`.
    pub fn new(cluster: &ClusterKey) -> CapabilityKey {
        CapabilityKey {
            key: blake3::derive_key(SIGNING_CONTEXT, cluster.as_bytes()),
        }
    }

    fn mac(&self, chunk: ChunkId, version: ChunkVersion, access: Access, expires: u64) -> [u8; 32] {
        let mut fields = [0u8; 21];
        fields[..8].copy_from_slice(&chunk.0.to_le_bytes());
        fields[8..12].copy_from_slice(&version.0.to_le_bytes());
        fields[12] = match access {
            Access::Read => 1,
            Access::Write => 2,
            Access::Create => 3,
        };
        fields[13..].copy_from_slice(&expires.to_le_bytes());
        *blake3::keyed_hash(&self.key, &fields).as_bytes()
    }

    /// A capability for `access` to `chunk` at `version`, valid for [`CAPABILITY_LIFETIME`] from
    /// `now` (seconds since the epoch).
    pub fn sign(
        &self,
        chunk: ChunkId,
        version: ChunkVersion,
        access: Access,
        now: u64,
    ) -> Capability {
        let expires = now.saturating_add(CAPABILITY_LIFETIME.as_secs());
        Capability {
            chunk,
            version,
            access,
            expires,
            mac: self.mac(chunk, version, access, expires),
        }
    }

    /// Checks that `cap` is genuine, for `chunk` (and `version` when the request names one),
    /// allows `access`, and has not expired at `now` (seconds since the epoch, master's clock).
    pub fn check(
        &self,
        cap: &Capability,
        chunk: ChunkId,
        version: Option<ChunkVersion>,
        access: Access,
        now: u64,
    ) -> Result<(), CapabilityError> {
        let expected = self.mac(cap.chunk, cap.version, cap.access, cap.expires);
        if !proofs_match(&expected, &cap.mac) {
            return Err(CapabilityError::Forged);
        }
        if cap.chunk != chunk || version.is_some_and(|v| v != cap.version) {
            return Err(CapabilityError::OtherChunk);
        }
        if access.writes() && !cap.access.writes() {
            return Err(CapabilityError::ReadOnly);
        }
        if now > cap.expires {
            return Err(CapabilityError::Expired);
        }
        Ok(())
    }
}

/// Seconds since the Unix epoch on this machine's clock.
pub fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    const CHUNK: ChunkId = ChunkId(42);
    const V: ChunkVersion = ChunkVersion(3);
    const NOW: u64 = 1_800_000_000;

    fn key(byte: u8) -> CapabilityKey {
        CapabilityKey::new(&ClusterKey::from_bytes([byte; 32]))
    }

    #[test]
    fn a_signed_capability_allows_what_it_says_until_it_expires() {
        let k = key(1);
        let read = k.sign(CHUNK, V, Access::Read, NOW);
        assert_eq!(k.check(&read, CHUNK, Some(V), Access::Read, NOW), Ok(()));
        assert_eq!(k.check(&read, CHUNK, None, Access::Read, NOW), Ok(()));
        let last = NOW + CAPABILITY_LIFETIME.as_secs();
        assert_eq!(k.check(&read, CHUNK, Some(V), Access::Read, last), Ok(()));
        assert_eq!(
            k.check(&read, CHUNK, Some(V), Access::Read, last + 1),
            Err(CapabilityError::Expired)
        );
        let write = k.sign(CHUNK, V, Access::Write, NOW);
        assert_eq!(k.check(&write, CHUNK, Some(V), Access::Write, NOW), Ok(()));
        assert_eq!(k.check(&write, CHUNK, Some(V), Access::Read, NOW), Ok(()));
        let create = k.sign(CHUNK, V, Access::Create, NOW);
        assert_eq!(k.check(&create, CHUNK, Some(V), Access::Write, NOW), Ok(()));
        assert_eq!(k.check(&create, CHUNK, Some(V), Access::Read, NOW), Ok(()));
    }

    #[test]
    fn a_read_capability_does_not_allow_writing() {
        let k = key(1);
        let read = k.sign(CHUNK, V, Access::Read, NOW);
        assert_eq!(
            k.check(&read, CHUNK, Some(V), Access::Write, NOW),
            Err(CapabilityError::ReadOnly)
        );
        assert_eq!(
            k.check(&read, CHUNK, Some(V), Access::Create, NOW),
            Err(CapabilityError::ReadOnly)
        );
    }

    #[test]
    fn a_capability_is_for_its_chunk_and_version_only() {
        let k = key(1);
        let cap = k.sign(CHUNK, V, Access::Write, NOW);
        assert_eq!(
            k.check(&cap, ChunkId(43), Some(V), Access::Read, NOW),
            Err(CapabilityError::OtherChunk)
        );
        assert_eq!(
            k.check(&cap, CHUNK, Some(V.next()), Access::Read, NOW),
            Err(CapabilityError::OtherChunk)
        );
    }

    #[test]
    fn altered_or_foreign_capabilities_are_refused() {
        let k = key(1);
        let cap = k.sign(CHUNK, V, Access::Read, NOW);
        let altered = [
            Capability {
                chunk: ChunkId(43),
                ..cap
            },
            Capability {
                version: V.next(),
                ..cap
            },
            Capability {
                access: Access::Write,
                ..cap
            },
            Capability {
                expires: cap.expires + 1,
                ..cap
            },
            Capability {
                mac: [0; 32],
                ..cap
            },
        ];
        for forged in altered {
            assert_eq!(
                k.check(&forged, forged.chunk, None, Access::Read, NOW),
                Err(CapabilityError::Forged),
                "{forged:?}"
            );
        }
        let foreign = key(2).sign(CHUNK, V, Access::Read, NOW);
        assert_eq!(
            k.check(&foreign, CHUNK, Some(V), Access::Read, NOW),
            Err(CapabilityError::Forged)
        );
    }
}
