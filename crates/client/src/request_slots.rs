//! The request slots of a client: a numbered request holds one from its first send until it is
//! answered (or given up on), so no two requests in flight ever share one. The master keeps one
//! record per slot, so it remembers as many requests per client as the client ever had in flight
//! at once, however many it made.

use std::sync::Mutex;

use tokio::sync::{Semaphore, SemaphorePermit};

/// Slots per client: more requests than this in flight at once wait for one to be answered.
pub const REQUEST_SLOTS: u16 = 1024;

/// The free slots of one client.
pub struct RequestSlots {
    free: Mutex<Vec<u16>>,
    available: Semaphore,
}

/// A slot held by one request; it is free again when this is dropped.
pub struct Slot<'a> {
    slots: &'a RequestSlots,
    number: u16,
    _permit: SemaphorePermit<'a>,
}

impl RequestSlots {
    /// `count` free slots, numbered from 0.
    pub fn new(count: u16) -> Self {
        RequestSlots {
            // Popped from the end: the lowest numbers are used first, so a client with few
            // requests in flight keeps reusing the same few records on the master.
            free: Mutex::new((0..count).rev().collect()),
            available: Semaphore::new(usize::from(count)),
        }
    }

    /// A free slot, waiting for one when all are taken.
    pub async fn take(&self) -> Slot<'_> {
        let permit = self
            .available
            .acquire()
            .await
            .expect("the semaphore is never closed");
        let number = self
            .lock()
            .pop()
            .expect("a permit is held for every slot taken");
        Slot {
            slots: self,
            number,
            _permit: permit,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<u16>> {
        self.free.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl Slot<'_> {
    /// The slot's number, sent with the request.
    pub fn number(&self) -> u16 {
        self.number
    }
}

impl Drop for Slot<'_> {
    fn drop(&mut self) {
        // Back in the list before the permit is released (fields drop after this body), so a
        // permit always finds a slot.
        self.slots.lock().push(self.number);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn slots_in_use_are_never_handed_out_twice() {
        let slots = RequestSlots::new(3);
        let a = slots.take().await;
        let b = slots.take().await;
        assert_eq!((a.number(), b.number()), (0, 1));
        drop(a);
        let c = slots.take().await;
        let d = slots.take().await;
        assert_eq!((c.number(), d.number()), (0, 2));
        let waiting = tokio::time::timeout(std::time::Duration::from_millis(50), slots.take());
        assert!(waiting.await.is_err(), "a fourth slot was handed out");
        drop(b);
        assert_eq!(slots.take().await.number(), 1);
    }
}
