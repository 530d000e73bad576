//! Background loops as `Worker`s (the shape Garage uses): each does one step of work at a time,
//! says whether more is waiting, and reports a one-line status that `elkfs status` can show.

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::{Arc, Mutex};

use tokio_util::sync::CancellationToken;

/// What a worker's step found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WorkerState {
    /// There is more to do: call `work` again at once.
    Busy,
    /// Nothing to do now: call `wait_for_work`, then `work` again.
    Idle,
    /// Finished for good.
    Done,
}

/// A background loop.
pub trait Worker: Send + 'static {
    /// A short name (`replication`, `chunk-test`).
    fn name(&self) -> &'static str;

    /// Does one bounded step of work.
    fn work(&mut self) -> impl Future<Output = WorkerState> + Send;

    /// Waits until there may be work again (a timer, a notification).
    fn wait_for_work(&mut self) -> impl Future<Output = ()> + Send;

    /// One line about what it is doing, for operators.
    fn status(&self) -> String;
}

/// The statuses of a process's workers, by name.
#[derive(Clone, Default)]
pub struct WorkerRegistry {
    statuses: Arc<Mutex<BTreeMap<&'static str, String>>>,
}

impl WorkerRegistry {
    /// Every worker's latest status.
    pub fn snapshot(&self) -> Vec<(String, String)> {
        self.statuses
            .lock()
            .map(|s| s.iter().map(|(k, v)| (k.to_string(), v.clone())).collect())
            .unwrap_or_default()
    }

    fn set(&self, name: &'static str, status: String) {
        if let Ok(mut s) = self.statuses.lock() {
            s.insert(name, status);
        }
    }
}

/// Runs `worker` until it is done or `stop` is cancelled, keeping its status in `registry`.
pub fn spawn<W: Worker>(
    mut worker: W,
    registry: WorkerRegistry,
    stop: CancellationToken,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let name = worker.name();
        loop {
            let state = tokio::select! {
                s = worker.work() => s,
                _ = stop.cancelled() => break,
            };
            registry.set(name, worker.status());
            match state {
                WorkerState::Busy => tokio::task::yield_now().await,
                WorkerState::Idle => tokio::select! {
                    _ = worker.wait_for_work() => {}
                    _ = stop.cancelled() => break,
                },
                WorkerState::Done => break,
            }
        }
        registry.set(name, "stopped".to_string());
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Counter {
        left: u32,
    }

    impl Worker for Counter {
        fn name(&self) -> &'static str {
            "counter"
        }
        async fn work(&mut self) -> WorkerState {
            if self.left == 0 {
                return WorkerState::Done;
            }
            self.left -= 1;
            if self.left.is_multiple_of(2) {
                WorkerState::Idle
            } else {
                WorkerState::Busy
            }
        }
        async fn wait_for_work(&mut self) {}
        fn status(&self) -> String {
            format!("{} left", self.left)
        }
    }

    #[tokio::test]
    async fn a_worker_runs_to_done_and_reports_its_status() {
        let registry = WorkerRegistry::default();
        spawn(
            Counter { left: 5 },
            registry.clone(),
            CancellationToken::new(),
        )
        .await
        .unwrap();
        assert_eq!(
            registry.snapshot(),
            vec![("counter".to_string(), "stopped".to_string())]
        );
    }
}
