//! Proofs without sending the secret: the side that checks sends a random nonce, the other
//! answers with a keyed hash of it under a key derived from the secret. Mounts prove an export's
//! password this way; chunkservers and metaloggers prove the cluster key, and the master proves
//! it back to them.

use crate::cluster_key::ClusterKey;

/// Context string of the key derivation (BLAKE3 `derive_key`), fixed for the protocol.
const PASSWORD_CONTEXT: &str = "elkfs 2026-11-25 mount password";

/// The answer to a challenge `nonce` for `password`: what the client sends and the master
/// compares with its own computation.
pub fn password_proof(password: &str, nonce: &[u8; 32]) -> [u8; 32] {
    let key = blake3::derive_key(PASSWORD_CONTEXT, password.as_bytes());
    *blake3::keyed_hash(&key, nonce).as_bytes()
}

/// Context string of the derivation of cluster-membership proofs, fixed for the protocol.
const MEMBER_CONTEXT: &str = "elkfs 2026-12-04 cluster member";

/// Who proves membership of a cluster: the master answering a member's challenge, or a member
/// (chunkserver, metalogger) answering the master's. Each side's proof differs, so one side's
/// answer can never be replayed as the other's.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Prover {
    /// The master.
    Master,
    /// A chunkserver or metalogger.
    Member,
}

/// The answer to a challenge `nonce` by `prover`, holding `key`.
pub fn cluster_proof(key: &ClusterKey, prover: Prover, nonce: &[u8; 32]) -> [u8; 32] {
    let derived = blake3::derive_key(MEMBER_CONTEXT, key.as_bytes());
    let mut message = [0u8; 33];
    message[0] = match prover {
        Prover::Master => 1,
        Prover::Member => 2,
    };
    message[1..].copy_from_slice(nonce);
    *blake3::keyed_hash(&derived, &message).as_bytes()
}

/// Whether `proof` answers the challenge `nonce` this side sent (none sent: nothing proved) as a
/// member holding `key`.
pub fn member_proved(key: &ClusterKey, nonce: Option<[u8; 32]>, proof: &[u8; 32]) -> bool {
    nonce.is_some_and(|nonce| proofs_match(proof, &cluster_proof(key, Prover::Member, &nonce)))
}

/// Compares two proofs in time independent of where they differ.
pub fn proofs_match(a: &[u8; 32], b: &[u8; 32]) -> bool {
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proofs_depend_on_password_and_nonce() {
        let nonce = [7u8; 32];
        let proof = password_proof("secret", &nonce);
        assert!(proofs_match(&proof, &password_proof("secret", &nonce)));
        assert!(!proofs_match(&proof, &password_proof("Secret", &nonce)));
        assert!(!proofs_match(&proof, &password_proof("secret", &[8u8; 32])));
        assert_ne!(&proof[..], b"secret".as_slice());
    }

    #[test]
    fn cluster_proofs_depend_on_key_prover_and_nonce() {
        let key = ClusterKey::from_bytes([1; 32]);
        let nonce = [7u8; 32];
        let proof = cluster_proof(&key, Prover::Member, &nonce);
        assert!(proofs_match(
            &proof,
            &cluster_proof(&key, Prover::Member, &nonce)
        ));
        assert!(!proofs_match(
            &proof,
            &cluster_proof(&key, Prover::Master, &nonce)
        ));
        assert!(!proofs_match(
            &proof,
            &cluster_proof(&key, Prover::Member, &[8; 32])
        ));
        let other = ClusterKey::from_bytes([2; 32]);
        assert!(!proofs_match(
            &proof,
            &cluster_proof(&other, Prover::Member, &nonce)
        ));
    }
}
