//! Proving a mount password without sending it: the master sends a random nonce, the client
//! answers with a keyed hash of it under a key derived from the password.

/// Context string of the key derivation (BLAKE3 `derive_key`), fixed for the protocol.
const PASSWORD_CONTEXT: &str = "elkfs 2026-11-25 mount password";

/// The answer to a challenge `nonce` for `password`: what the client sends and the master
/// compares with its own computation.
pub fn password_proof(password: &str, nonce: &[u8; 32]) -> [u8; 32] {
    let key = blake3::derive_key(PASSWORD_CONTEXT, password.as_bytes());
    *blake3::keyed_hash(&key, nonce).as_bytes()
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
}
