//! The chunks this server deleted lately. A write allowed to create its chunk (a new chunk's
//! first lease) must not make one of them again: it would be a write still under way when its
//! file was cut or removed, and the copy it left would belong to no file.

use std::collections::{HashSet, VecDeque};
use std::sync::Mutex;

use elkfs_proto::ChunkId;

/// Deletions remembered at most (the oldest are forgotten first). A write capability lasts
/// 10 minutes; a server does not delete more than this many chunks in that time unless whole
/// trees go, and then their files are gone too, so nobody writes to them.
const REMEMBERED: usize = 1 << 16;

/// The ids of the chunks deleted lately, oldest first.
#[derive(Default)]
pub(crate) struct RecentlyDeleted {
    inner: Mutex<Inner>,
}

#[derive(Default)]
struct Inner {
    order: VecDeque<ChunkId>,
    ids: HashSet<ChunkId>,
}

impl RecentlyDeleted {
    /// Remembers that `id` was deleted.
    pub(crate) fn note(&self, id: ChunkId) {
        let mut inner = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        if !inner.ids.insert(id) {
            return;
        }
        inner.order.push_back(id);
        if inner.order.len() > REMEMBERED
            && let Some(old) = inner.order.pop_front()
        {
            inner.ids.remove(&old);
        }
    }

    /// Whether `id` was deleted lately.
    pub(crate) fn lately(&self, id: ChunkId) -> bool {
        let inner = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        inner.ids.contains(&id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_oldest_deletions_are_forgotten_first() {
        let deleted = RecentlyDeleted::default();
        for i in 0..REMEMBERED as u64 + 2 {
            deleted.note(ChunkId(i));
        }
        deleted.note(ChunkId(5));
        assert!(!deleted.lately(ChunkId(0)));
        assert!(!deleted.lately(ChunkId(1)));
        assert!(deleted.lately(ChunkId(2)));
        assert!(deleted.lately(ChunkId(REMEMBERED as u64 + 1)));
        assert!(!deleted.lately(ChunkId(REMEMBERED as u64 + 2)));
    }
}
