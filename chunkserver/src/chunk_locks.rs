//! Per-chunk locks taken in arrival order, so writes to one chunk apply in the order they were
//! sent while writes to different chunks run in parallel.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use elkfs_proto::ChunkId;
use tokio::sync::OwnedMutexGuard;

type Slot = Arc<tokio::sync::Mutex<()>>;

/// The lock table.
#[derive(Default)]
pub struct ChunkLocks {
    slots: Mutex<HashMap<ChunkId, Slot>>,
}

/// Holds one chunk's lock; the table entry goes away with the last holder or waiter.
pub struct ChunkGuard {
    guard: Option<OwnedMutexGuard<()>>,
    slot: Option<Slot>,
    chunk: ChunkId,
    locks: Arc<ChunkLocks>,
}

impl ChunkLocks {
    /// Waits for the chunk's lock; waiters are served first come, first served.
    pub async fn lock(self: &Arc<Self>, chunk: ChunkId) -> ChunkGuard {
        let slot = {
            let mut slots = self.slots.lock().unwrap_or_else(|p| p.into_inner());
            slots.entry(chunk).or_default().clone()
        };
        let guard = slot.clone().lock_owned().await;
        ChunkGuard {
            guard: Some(guard),
            slot: Some(slot),
            chunk,
            locks: self.clone(),
        }
    }
}

impl Drop for ChunkGuard {
    fn drop(&mut self) {
        self.guard.take();
        let Some(slot) = self.slot.take() else {
            return;
        };
        let mut slots = self.locks.slots.lock().unwrap_or_else(|p| p.into_inner());
        // The table's reference plus ours: nobody else holds or waits for this chunk.
        if Arc::strong_count(&slot) == 2 {
            slots.remove(&self.chunk);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn waiters_get_the_lock_in_arrival_order_and_the_table_empties() {
        let locks = Arc::new(ChunkLocks::default());
        let first = locks.lock(ChunkId(1)).await;
        let order = Arc::new(Mutex::new(Vec::new()));
        let mut tasks = Vec::new();
        for i in 0..5 {
            let (locks, order) = (locks.clone(), order.clone());
            tasks.push(tokio::spawn(async move {
                let _g = locks.lock(ChunkId(1)).await;
                order.lock().unwrap().push(i);
            }));
            tokio::task::yield_now().await;
        }
        drop(first);
        for t in tasks {
            t.await.unwrap();
        }
        assert_eq!(*order.lock().unwrap(), vec![0, 1, 2, 3, 4]);
        assert!(locks.slots.lock().unwrap().is_empty());
    }
}
