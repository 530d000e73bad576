//! How namespace records are laid out as keys in one ordered tree (documented in docs/FORMAT.md).
//!
//! Integers are big-endian so keys sort numerically; each kind of record has a one-byte prefix.

use elkfs_proto::{ChunkId, InodeId};

/// Counters and markers: `m` + name.
pub const META: u8 = b'm';
/// Inodes: `i` + inode.
pub const INODE: u8 = b'i';
/// Directory entries by name: `d` + parent + name.
pub const DIRENT: u8 = b'd';
/// Directory entries by position: `o` + parent + cookie.
pub const ORDER: u8 = b'o';
/// Symbolic link targets: `l` + inode.
pub const LINK_TARGET: u8 = b'l';
/// A file's chunks: `c` + inode + chunk index.
pub const FILE_CHUNK: u8 = b'c';
/// Chunk records: `k` + chunk id.
pub const CHUNK: u8 = b'k';
/// Extended attributes: `x` + inode + name.
pub const XATTR: u8 = b'x';
/// Files whose last name is gone but which may still be open: `u` + inode.
pub const UNLINKED: u8 = b'u';
/// Deleted files in the trash: `t` + inode.
pub const TRASH: u8 = b't';
/// Changes already made for a client's numbered request: `r` + client + sequence number
/// (written only by changelog records from before request slots).
pub const REQUEST: u8 = b'r';
/// The last numbered request a client made in one of its request slots: `s` + client + slot.
pub const REQUEST_SLOT: u8 = b's';
/// The highest version the master may have handed out for a chunk: `v` + chunk id.
pub const CHUNK_ISSUED: u8 = b'v';

/// Version of the last changelog record applied.
pub const APPLIED: &[u8] = b"mapplied";
/// Next inode number to hand out.
pub const NEXT_INODE: &[u8] = b"mnext_inode";
/// Chunk ids below this may have been handed out; the master allocates from here on.
pub const CHUNK_IDS_RESERVED: &[u8] = b"mchunk_ids_reserved";
/// Number of inodes in use.
pub const INODE_COUNT: &[u8] = b"minodes";

fn with_u64(prefix: u8, n: u64) -> Vec<u8> {
    let mut k = Vec::with_capacity(9);
    k.push(prefix);
    k.extend_from_slice(&n.to_be_bytes());
    k
}

/// Key of an inode record.
pub fn inode(id: InodeId) -> Vec<u8> {
    with_u64(INODE, id.0)
}

/// Key of the entry `name` in directory `parent`.
pub fn dirent(parent: InodeId, name: &[u8]) -> Vec<u8> {
    let mut k = with_u64(DIRENT, parent.0);
    k.extend_from_slice(name);
    k
}

/// Prefix of every entry of directory `parent`, by name.
pub fn dirent_prefix(parent: InodeId) -> Vec<u8> {
    with_u64(DIRENT, parent.0)
}

/// Key of the entry at position `cookie` in directory `parent`.
pub fn order(parent: InodeId, cookie: u64) -> Vec<u8> {
    let mut k = with_u64(ORDER, parent.0);
    k.extend_from_slice(&cookie.to_be_bytes());
    k
}

/// Prefix of every entry of directory `parent`, by position.
pub fn order_prefix(parent: InodeId) -> Vec<u8> {
    with_u64(ORDER, parent.0)
}

/// Key of a symbolic link's target.
pub fn link_target(id: InodeId) -> Vec<u8> {
    with_u64(LINK_TARGET, id.0)
}

/// Key of chunk `index` of file `inode`.
pub fn file_chunk(inode: InodeId, index: u32) -> Vec<u8> {
    let mut k = with_u64(FILE_CHUNK, inode.0);
    k.extend_from_slice(&index.to_be_bytes());
    k
}

/// Prefix of every chunk of file `inode`.
pub fn file_chunk_prefix(inode: InodeId) -> Vec<u8> {
    with_u64(FILE_CHUNK, inode.0)
}

/// The chunk index at the end of a [`file_chunk`] key.
pub fn file_chunk_index(key: &[u8]) -> Option<u32> {
    let tail: [u8; 4] = key.get(9..13)?.try_into().ok()?;
    Some(u32::from_be_bytes(tail))
}

/// Key of an extended attribute.
pub fn xattr(inode: InodeId, name: &[u8]) -> Vec<u8> {
    let mut k = with_u64(XATTR, inode.0);
    k.extend_from_slice(name);
    k
}

/// Prefix of every extended attribute of `inode`.
pub fn xattr_prefix(inode: InodeId) -> Vec<u8> {
    with_u64(XATTR, inode.0)
}

/// Key marking an unlinked inode that awaits its last close.
pub fn unlinked(inode: InodeId) -> Vec<u8> {
    with_u64(UNLINKED, inode.0)
}

/// Key recording that a client's request `seq` was carried out.
pub fn request(client: u64, seq: u64) -> Vec<u8> {
    let mut k = with_u64(REQUEST, client);
    k.extend_from_slice(&seq.to_be_bytes());
    k
}

/// Key recording the last request a client carried out in request slot `slot`.
pub fn request_slot(client: u64, slot: u16) -> Vec<u8> {
    let mut k = with_u64(REQUEST_SLOT, client);
    k.extend_from_slice(&slot.to_be_bytes());
    k
}

/// The last key a request record of the same client as `key` can have: a scan after it goes on
/// with the next client's records.
pub fn request_client_end(key: &[u8]) -> Vec<u8> {
    let mut k = key.get(..9).unwrap_or(key).to_vec();
    k.extend_from_slice(&[0xff; 8]);
    k
}

/// Key of a trashed file.
pub fn trash(inode: InodeId) -> Vec<u8> {
    with_u64(TRASH, inode.0)
}

/// The inode of a key made of a prefix byte and an inode number.
pub fn inode_of_key(key: &[u8]) -> Option<InodeId> {
    let tail: [u8; 8] = key.get(1..9)?.try_into().ok()?;
    Some(InodeId(u64::from_be_bytes(tail)))
}

/// Key of a chunk record.
pub fn chunk(id: ChunkId) -> Vec<u8> {
    with_u64(CHUNK, id.0)
}

/// Key of the highest version handed out for a chunk (`IssueChunkVersion`).
pub fn chunk_issued(id: ChunkId) -> Vec<u8> {
    with_u64(CHUNK_ISSUED, id.0)
}

/// The chunk id at the end of a [`chunk`] key.
pub fn chunk_id_of(key: &[u8]) -> Option<ChunkId> {
    let tail: [u8; 8] = key.get(1..9)?.try_into().ok()?;
    Some(ChunkId(u64::from_be_bytes(tail)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_sort_numerically_and_parse_back() {
        assert!(inode(InodeId(2)) < inode(InodeId(256)));
        assert!(order(InodeId(1), 9) < order(InodeId(1), 10));
        assert!(file_chunk(InodeId(1), 255) < file_chunk(InodeId(1), 256));
        assert_eq!(file_chunk_index(&file_chunk(InodeId(7), 300)), Some(300));
        assert_eq!(chunk_id_of(&chunk(ChunkId(0xABCD))), Some(ChunkId(0xABCD)));
        assert!(dirent(InodeId(1), b"zzz") < dirent_prefix(InodeId(2)));
    }
}
