//! The sizes every component agrees on: how files split into chunks and chunks into blocks.

/// Bytes in a chunk: files are split into chunks of this size.
pub const CHUNK_SIZE: u64 = 64 * 1024 * 1024;

/// Bytes covered by one BLAKE3 hash inside a chunk; the unit of verification on every read.
pub const BLOCK_SIZE: u32 = 64 * 1024;

/// Blocks in a full chunk.
pub const BLOCKS_PER_CHUNK: u32 = (CHUNK_SIZE / BLOCK_SIZE as u64) as u32;

/// Largest data payload in one frame; reads and writes are split into pieces of at most this.
pub const MAX_DATA_PAYLOAD: u32 = 1024 * 1024;

/// Largest file length: chunk indexes are 32-bit.
pub const MAX_FILE_SIZE: u64 = CHUNK_SIZE * u32::MAX as u64;

/// Most copies of a chunk (the largest goal), and so the longest write chain.
pub const MAX_COPIES: usize = 9;

/// Index of the chunk that holds byte `offset` of a file.
pub fn chunk_index_of(offset: u64) -> u32 {
    (offset / CHUNK_SIZE) as u32
}

/// Offset of byte `offset` of a file inside its chunk.
pub fn offset_in_chunk(offset: u64) -> u32 {
    (offset % CHUNK_SIZE) as u32
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn offsets_map_to_chunks_and_back() {
        assert_eq!(chunk_index_of(0), 0);
        assert_eq!(chunk_index_of(CHUNK_SIZE - 1), 0);
        assert_eq!(chunk_index_of(CHUNK_SIZE), 1);
        assert_eq!(offset_in_chunk(CHUNK_SIZE + 5), 5);
        assert_eq!(BLOCKS_PER_CHUNK, 1024);
    }
}
