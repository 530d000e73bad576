//! Forgetting the records of numbered client requests once no retry can still come for them.

use std::sync::Arc;
use std::time::Duration;

use elkfs_common::worker::{Worker, WorkerState};
use elkfs_metastore::MetaOp;
use elkfs_proto::types::Timestamp;

use crate::state::MasterState;

/// How long a request's record is kept (a client retries within its master timeout, 60 s).
const KEEP: Duration = Duration::from_secs(600);

/// How often old records are dropped.
const EVERY: Duration = Duration::from_secs(60);

/// Drops request records older than [`KEEP`].
pub struct RequestJanitor {
    state: Arc<MasterState>,
    runs: u64,
}

impl RequestJanitor {
    /// A janitor for this master.
    pub fn new(state: Arc<MasterState>) -> RequestJanitor {
        RequestJanitor { state, runs: 0 }
    }
}

impl Worker for RequestJanitor {
    fn name(&self) -> &'static str {
        "request-records"
    }

    async fn work(&mut self) -> WorkerState {
        let now = Timestamp::now();
        let before = Timestamp {
            secs: now.secs - KEEP.as_secs() as i64,
            nanos: now.nanos,
        };
        if let Err(status) = self
            .state
            .meta
            .commit(MetaOp::ForgetRequests { before })
            .await
        {
            tracing::warn!(%status, "cannot forget old request records");
        }
        self.runs += 1;
        WorkerState::Idle
    }

    async fn wait_for_work(&mut self) {
        tokio::time::sleep(EVERY).await;
    }

    fn status(&self) -> String {
        format!("dropped old request records {} times", self.runs)
    }
}
