//! The chunk file header: a 64 KiB region before the data holding the chunk's id, version, data
//! length and one BLAKE3 hash per 64 KiB block (layout in docs/FORMAT.md, "Chunk files").

use std::sync::OnceLock;

use elkfs_proto::geometry::{BLOCK_SIZE, CHUNK_SIZE};
use elkfs_proto::{ChunkId, ChunkVersion};

/// Bytes before the data: data byte `i` is at file offset `HEADER_SIZE + i`.
pub const HEADER_SIZE: u64 = 64 * 1024;

/// First bytes of every chunk file.
pub const MAGIC: [u8; 8] = *b"ELKCHNK1";

/// Version of this layout, stored in the header so a later layout can be recognised.
pub const FORMAT_VERSION: u32 = 1;

/// Bytes of the fixed fields at the start of the header, checksum included.
pub const FIELDS_LEN: usize = 64;

/// Bytes covered by the header checksum (everything before it).
const CHECKED_LEN: usize = 32;

/// File offset of the block hash table.
pub const HASHES_OFFSET: u64 = 4096;

/// Bytes of one block hash.
pub const HASH_LEN: usize = 32;

/// A block's BLAKE3 hash as stored in the header.
pub type BlockHash = [u8; HASH_LEN];

/// The fixed fields of a chunk header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Header {
    /// The chunk the file holds (must match the file name).
    pub id: ChunkId,
    /// Its version (the file name wins if they disagree).
    pub version: ChunkVersion,
    /// Bytes of data after the header.
    pub length: u32,
}

impl Header {
    /// The 64 bytes written at the start of the file.
    pub fn encode(&self) -> [u8; FIELDS_LEN] {
        let mut bytes = [0u8; FIELDS_LEN];
        bytes[0..8].copy_from_slice(&MAGIC);
        bytes[8..12].copy_from_slice(&FORMAT_VERSION.to_le_bytes());
        bytes[16..24].copy_from_slice(&self.id.0.to_le_bytes());
        bytes[24..28].copy_from_slice(&self.version.0.to_le_bytes());
        bytes[28..32].copy_from_slice(&self.length.to_le_bytes());
        let checksum = blake3::hash(&bytes[..CHECKED_LEN]);
        bytes[CHECKED_LEN..FIELDS_LEN].copy_from_slice(checksum.as_bytes());
        bytes
    }

    /// Checks and reads the first 64 bytes of a file; the error says what is wrong.
    pub fn decode(bytes: &[u8; FIELDS_LEN]) -> Result<Header, String> {
        if bytes[0..8] != MAGIC {
            return Err("not a chunk file (wrong magic)".into());
        }
        let checksum = blake3::hash(&bytes[..CHECKED_LEN]);
        if bytes[CHECKED_LEN..FIELDS_LEN] != *checksum.as_bytes() {
            return Err("header checksum does not match".into());
        }
        let format = u32::from_le_bytes(le_field(bytes, 8));
        if format != FORMAT_VERSION {
            return Err(format!(
                "format version {format} is not supported (this build reads {FORMAT_VERSION})"
            ));
        }
        let length = u32::from_le_bytes(le_field(bytes, 28));
        if u64::from(length) > CHUNK_SIZE {
            return Err(format!("data length {length} is larger than a chunk"));
        }
        Ok(Header {
            id: ChunkId(u64::from_le_bytes(le_field(bytes, 16))),
            version: ChunkVersion(u32::from_le_bytes(le_field(bytes, 24))),
            length,
        })
    }
}

fn le_field<const N: usize>(bytes: &[u8; FIELDS_LEN], at: usize) -> [u8; N] {
    let mut field = [0u8; N];
    field.copy_from_slice(&bytes[at..at + N]);
    field
}

/// File offset of block `block`'s hash.
pub fn hash_offset(block: u32) -> u64 {
    HASHES_OFFSET + u64::from(block) * HASH_LEN as u64
}

/// The hash stored for a block of data.
pub fn block_hash(data: &[u8]) -> BlockHash {
    *blake3::hash(data).as_bytes()
}

/// `len` zero bytes (at most one block), for hashing the zeros a gap or a grown chunk reads as.
pub fn zeros(len: usize) -> &'static [u8] {
    static ZEROS: [u8; BLOCK_SIZE as usize] = [0; BLOCK_SIZE as usize];
    &ZEROS[..len]
}

/// Hash of a whole block of zeros, computed once: growing a chunk by a lot stores it many times.
pub fn zero_block_hash() -> BlockHash {
    static HASH: OnceLock<BlockHash> = OnceLock::new();
    *HASH.get_or_init(|| block_hash(zeros(BLOCK_SIZE as usize)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn sample() -> Header {
        Header {
            id: ChunkId(0x0102_0304_0506_0708),
            version: ChunkVersion(9),
            length: 12345,
        }
    }

    #[test]
    fn header_round_trips_and_has_the_documented_layout() {
        let bytes = sample().encode();
        assert_eq!(&bytes[0..8], b"ELKCHNK1");
        assert_eq!(bytes[8..12], [1, 0, 0, 0]);
        assert_eq!(bytes[12..16], [0, 0, 0, 0]);
        assert_eq!(bytes[16..24], [8, 7, 6, 5, 4, 3, 2, 1]);
        assert_eq!(bytes[24..28], [9, 0, 0, 0]);
        assert_eq!(bytes[28..32], 12345u32.to_le_bytes());
        assert_eq!(&bytes[32..64], blake3::hash(&bytes[..32]).as_bytes());
        assert_eq!(Header::decode(&bytes), Ok(sample()));
    }

    #[test]
    fn any_flipped_bit_is_rejected() {
        let good = sample().encode();
        for byte in 0..FIELDS_LEN {
            for bit in 0..8 {
                let mut bad = good;
                bad[byte] ^= 1 << bit;
                assert!(Header::decode(&bad).is_err(), "byte {byte} bit {bit}");
            }
        }
    }

    #[test]
    fn length_past_a_chunk_is_rejected_even_with_a_valid_checksum() {
        let mut header = sample();
        header.length = CHUNK_SIZE as u32 + 1;
        let err = Header::decode(&header.encode()).unwrap_err();
        assert!(err.contains("larger than a chunk"), "{err}");
        header.length = CHUNK_SIZE as u32;
        assert!(Header::decode(&header.encode()).is_ok());
    }

    #[test]
    fn zero_hash_matches_hashing_zeros() {
        assert_eq!(
            zero_block_hash(),
            block_hash(&vec![0u8; BLOCK_SIZE as usize])
        );
        assert_eq!(hash_offset(0), 4096);
        assert_eq!(hash_offset(1023) + HASH_LEN as u64, 4096 + 32768);
    }

    proptest! {
        #[test]
        fn decoding_garbage_never_panics(fields in proptest::collection::vec(any::<u8>(), 56)) {
            // Past the magic, so the other checks are reached too.
            let mut all = [0u8; FIELDS_LEN];
            all[..8].copy_from_slice(&MAGIC);
            all[8..].copy_from_slice(&fields);
            let _ = Header::decode(&all);
        }
    }
}
