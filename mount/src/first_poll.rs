//! Starting a request's work on the kernel's thread. The work runs there until it first waits
//! (typically right after sending its request to the master or a chunkserver, which the sender
//! writes to the socket itself) and moves to the runtime only when what it waits for arrives.
//! Handing every request to the runtime at once instead costs a thread wake-up per request, on a
//! small machine as much as the rest of the mount's work on a metadata request. The kernel's
//! thread never waits on the network: work that is not done at its first wait is simply left for
//! the runtime.

use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Wake, Waker};

use tokio::runtime::Handle;

type Work = Pin<Box<dyn Future<Output = ()> + Send>>;

/// Work that waits, until something wakes it and it goes to the runtime.
struct Parked {
    slot: Mutex<Slot>,
    runtime: Handle,
}

enum Slot {
    /// Still being polled on the kernel's thread.
    Polling,
    /// Woken while still being polled: it goes to the runtime as soon as that poll ends.
    WokenWhilePolling,
    /// Waiting here.
    Waiting(Work),
    /// On the runtime.
    Moved,
}

impl Wake for Parked {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        let mut slot = self.slot.lock().unwrap_or_else(|p| p.into_inner());
        match std::mem::replace(&mut *slot, Slot::Moved) {
            Slot::Polling => *slot = Slot::WokenWhilePolling,
            Slot::Waiting(work) => {
                drop(slot);
                self.runtime.spawn(work);
            }
            other => *slot = other,
        }
    }
}

/// Polls `work` once here (inside the runtime's context), then leaves it to the runtime.
pub fn run(runtime: &Handle, work: impl Future<Output = ()> + Send + 'static) {
    let _context = runtime.enter();
    let parked = Arc::new(Parked {
        slot: Mutex::new(Slot::Polling),
        runtime: runtime.clone(),
    });
    let waker = Waker::from(parked.clone());
    let mut work: Work = Box::pin(work);
    let polled = std::panic::catch_unwind(AssertUnwindSafe(|| {
        work.as_mut().poll(&mut Context::from_waker(&waker))
    }));
    match polled {
        Ok(Poll::Ready(())) => return,
        Ok(Poll::Pending) => {}
        Err(_) => {
            // As a panicking task on the runtime would: the request fails (its reply, dropped
            // with the work, answers EIO) and the kernel's thread goes on.
            tracing::error!("a request's work panicked; it fails with EIO");
            return;
        }
    }
    let mut slot = parked.slot.lock().unwrap_or_else(|p| p.into_inner());
    match std::mem::replace(&mut *slot, Slot::Moved) {
        Slot::WokenWhilePolling => {
            drop(slot);
            runtime.spawn(work);
        }
        _ => *slot = Slot::Waiting(work),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::Duration;

    fn runtime() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap()
    }

    #[test]
    fn work_that_never_waits_is_done_before_run_returns() {
        let rt = runtime();
        let done = Arc::new(AtomicUsize::new(0));
        let d = done.clone();
        run(rt.handle(), async move {
            d.fetch_add(1, Ordering::SeqCst);
        });
        assert_eq!(done.load(Ordering::SeqCst), 1);
    }

    #[test]
    fn work_that_waits_finishes_on_the_runtime() {
        let rt = runtime();
        let (tx, rx) = std::sync::mpsc::channel();
        let (go, wait) = tokio::sync::oneshot::channel::<u32>();
        run(rt.handle(), async move {
            let n = wait.await.unwrap();
            tokio::time::sleep(Duration::from_millis(5)).await;
            tx.send((n, std::thread::current().name().map(str::to_owned)))
                .unwrap();
        });
        go.send(7).unwrap();
        let (n, thread) = rx.recv_timeout(Duration::from_secs(5)).unwrap();
        assert_eq!(n, 7);
        assert_ne!(thread.as_deref(), std::thread::current().name());
    }

    #[test]
    fn a_panic_in_the_first_poll_fails_that_work_only() {
        struct Guard(Arc<AtomicUsize>);
        impl Drop for Guard {
            fn drop(&mut self) {
                self.0.fetch_add(1, Ordering::SeqCst);
            }
        }
        let rt = runtime();
        let dropped = Arc::new(AtomicUsize::new(0));
        let guard = Guard(dropped.clone());
        run(rt.handle(), async move {
            let _guard = guard;
            panic!("deliberately");
        });
        assert_eq!(dropped.load(Ordering::SeqCst), 1);
        let (tx, rx) = std::sync::mpsc::channel();
        run(rt.handle(), async move { tx.send(()).unwrap() });
        rx.recv_timeout(Duration::from_secs(5)).unwrap();
    }

    #[test]
    fn a_wake_during_the_first_poll_is_not_lost() {
        let rt = runtime();
        let (tx, rx) = std::sync::mpsc::channel();
        run(rt.handle(), async move {
            tokio::task::yield_now().await;
            tx.send(()).unwrap();
        });
        rx.recv_timeout(Duration::from_secs(5)).unwrap();
    }
}
