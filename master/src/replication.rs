//! Keeping every chunk at its goal: the replication worker walks the chunk table a page at a
//! time and compares each chunk's valid copies with its goal. Missing copies are copied
//! chunkserver to chunkserver (the data never passes through the master), surplus and stale ones
//! deleted, and copies moved from fuller to emptier servers until used space is about even.
//!
//! A copy is only ever deleted when enough valid copies remain, and a chunk being written (its
//! write lease is held) is left alone until the write ends.
//!
//! A pass runs at full speed after anything that may have left chunks short (a server left or
//! came, damage, a goal changed, a copy finished) and while the last pass found work. Otherwise
//! it walks the table slowly, [`ReplicationSettings::quiet_page_pause`] between pages (the way
//! MooseFS spreads its chunk loop over minutes), so a large, healthy filesystem costs the master
//! little CPU between events.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use elkfs_common::worker::{Worker, WorkerState};
use elkfs_metastore::ChunkRecord;
use elkfs_proto::chunkserver::CsCommand;
use elkfs_proto::{ChunkId, ChunkVersion, ServerId, Status};
use tokio::sync::Notify;

use crate::chunk_ops::{CommandError, run_command, run_command_within};
use crate::cluster::{Copy, ServerEntry, Target, target_of, used_fraction};
use crate::state::MasterState;

/// Chunk records examined per step.
const PAGE: usize = 1024;

/// How long one chunk copy may take before the master gives up on it.
const REPLICATION_TIMEOUT: Duration = Duration::from_secs(600);

/// Balancing moves started per round; a round ends when they are all done.
const BALANCE_MOVES_PER_ROUND: usize = 16;

/// Pause after a balancing round, so every server's space report reflects the moves before
/// the next round decides (reports come every 2 s).
const BALANCE_SETTLE: Duration = Duration::from_secs(3);

/// Balancing moves in rounds: a few moves, then wait for fresh space reports. Deciding from
/// reports that do not show the moves yet would send every chunk the same way.
#[derive(Default)]
struct BalanceRounds {
    in_flight: usize,
    started: usize,
    quiet_until: Option<Instant>,
}

impl BalanceRounds {
    fn may_start(&self) -> bool {
        self.started < BALANCE_MOVES_PER_ROUND
            && self.quiet_until.is_none_or(|t| Instant::now() >= t)
            && (self.in_flight == 0 || self.started > 0)
    }
}

/// When and how much the worker may copy.
#[derive(Clone, Debug)]
pub struct ReplicationSettings {
    /// After a chunkserver is lost (no goodbye), copies with another copy left wait this long
    /// for it to come back.
    pub lost_delay: Duration,
    /// After a chunkserver stopped on purpose, the same wait (long enough for an upgrade).
    pub planned_delay: Duration,
    /// Nothing is copied this long after the master starts, while chunkservers re-register.
    pub startup_delay: Duration,
    /// Copies a chunkserver takes part in at once (as source or destination).
    pub per_server: usize,
    /// Servers whose used space differs from the average by more than half of this (a
    /// fraction, 0.04 = 4 points) get chunks moved.
    pub balance_threshold: f64,
    /// Pause between passes over all chunks when nothing wakes the worker.
    pub pass_pause: Duration,
    /// Pause between pages of a pass when nothing needs doing (1 024 chunks a page).
    pub quiet_page_pause: Duration,
    /// The longest a quiet pass may take: with many chunks the pause between pages shrinks, so
    /// a chunk left short without an event is still found within about this long.
    pub quiet_pass_longest: Duration,
}

/// Wakes the replication worker early (a server joined or left, a copy was damaged), and
/// holds what its last complete pass found.
#[derive(Default)]
pub struct ReplicationTrigger {
    notify: Notify,
    last_pass: std::sync::Mutex<Option<PassStats>>,
}

impl ReplicationTrigger {
    /// Asks for a new look at the chunks soon.
    pub fn wake(&self) {
        self.notify.notify_one();
    }

    /// What the last complete pass over all chunks found.
    pub fn last_pass(&self) -> Option<PassStats> {
        *self.last_pass.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// What one pass over all chunks found.
#[derive(Clone, Copy, Debug, Default)]
pub struct PassStats {
    /// Chunks looked at.
    pub chunks: u64,
    /// Chunks with fewer valid copies than their goal.
    pub under_goal: u64,
    /// Chunks with more.
    pub over_goal: u64,
    /// Chunks without a single valid copy.
    pub without_copy: u64,
    /// The first of those, for the log.
    pub first_without_copy: Option<ChunkId>,
    /// Copies started.
    pub copies_started: u64,
    /// Copies deleted.
    pub deletions: u64,
}

#[derive(Default)]
struct InFlight {
    chunks: HashMap<ChunkId, ()>,
    per_server: HashMap<ServerId, usize>,
    /// Chunks whose last copy failed, with when: left alone for [`AFTER_FAILED_COPY`], so a
    /// copy that fails at once (a source that cannot read it) is not ordered again in a loop.
    failed: HashMap<ChunkId, Instant>,
}

/// Says when a pass finds more chunks without a valid copy than the one before (their files
/// cannot be read: every server holding a good copy is gone, or every copy is damaged or lost
/// writes), and when none is left.
fn log_chunks_without_copy(before: u64, pass: &PassStats) {
    if pass.without_copy > before {
        tracing::warn!(
            chunks = pass.without_copy,
            first = ?pass.first_without_copy,
            "chunks without a valid copy: files using them cannot be read until a server with a good copy comes back"
        );
    } else if pass.without_copy == 0 && before > 0 {
        tracing::info!("every chunk has a valid copy again");
    }
}

/// How long a chunk whose copy failed waits before another is tried.
const AFTER_FAILED_COPY: Duration = Duration::from_secs(5);

/// The replication and balancing worker.
pub struct ReplicationWorker {
    state: Arc<MasterState>,
    settings: ReplicationSettings,
    started: Instant,
    cursor: Option<ChunkId>,
    current: PassStats,
    last: Option<PassStats>,
    in_flight: Arc<Mutex<InFlight>>,
    rounds: Arc<Mutex<BalanceRounds>>,
    pace: Pace,
}

impl ReplicationWorker {
    /// A worker for this master's state.
    pub fn new(state: Arc<MasterState>, settings: ReplicationSettings) -> ReplicationWorker {
        ReplicationWorker {
            state,
            settings,
            started: Instant::now(),
            cursor: None,
            current: PassStats::default(),
            last: None,
            in_flight: Arc::default(),
            rounds: Arc::default(),
            pace: Pace::default(),
        }
    }

    fn lock_in_flight(&self) -> std::sync::MutexGuard<'_, InFlight> {
        self.in_flight.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl Worker for ReplicationWorker {
    fn name(&self) -> &'static str {
        "replication"
    }

    async fn work(&mut self) -> WorkerState {
        if self.started.elapsed() < self.settings.startup_delay {
            return WorkerState::Idle;
        }
        let cursor = self.cursor;
        let page = match self
            .state
            .meta
            .read(move |s| s.chunks_after(cursor, PAGE).map_err(Into::into))
            .await
        {
            Ok(p) => p,
            Err(status) => {
                tracing::warn!(%status, "replication cannot read the chunk table");
                return WorkerState::Idle;
            }
        };
        let Some((last, _)) = page.last() else {
            self.cursor = None;
            self.pace.after_pass(
                !self.lock_in_flight().chunks.is_empty()
                    || self.current.under_goal > 0
                    || self.current.over_goal > 0,
            );
            let pass = std::mem::take(&mut self.current);
            log_chunks_without_copy(self.last.map_or(0, |p| p.without_copy), &pass);
            self.last = Some(pass);
            *self
                .state
                .replication
                .last_pass
                .lock()
                .unwrap_or_else(|p| p.into_inner()) = Some(pass);
            return WorkerState::Idle;
        };
        self.cursor = Some(*last);
        let view = ClusterView::new(&self.state, &self.settings);
        let before = self.current;
        for (chunk, record) in page {
            self.current.chunks += 1;
            self.check(chunk, record, &view);
        }
        let found_work = self.current.under_goal > before.under_goal
            || self.current.over_goal > before.over_goal
            || self.current.copies_started > before.copies_started
            || self.current.deletions > before.deletions;
        let unsettled = view.awaiting_return || view.used_spread > view.balance_threshold;
        self.pace.after_page(found_work || unsettled)
    }

    async fn wait_for_work(&mut self) {
        let pause = if self.started.elapsed() < self.settings.startup_delay {
            self.settings.startup_delay - self.started.elapsed()
        } else {
            let chunks = self.last.map_or(0, |p| p.chunks);
            self.pace.pause(&self.settings, chunks)
        };
        tokio::select! {
            _ = self.state.replication.notify.notified() => {
                if self.pace.woken() {
                    self.cursor = None;
                    self.current = PassStats::default();
                }
            }
            _ = tokio::time::sleep(pause) => {}
        }
    }

    fn status(&self) -> String {
        let p = self.last.unwrap_or(self.current);
        let copying = self.lock_in_flight().chunks.len();
        format!(
            "{} chunks: {} under goal, {} over goal, {} without a valid copy; {} copies in progress",
            p.chunks, p.under_goal, p.over_goal, p.without_copy, copying
        )
    }
}

/// How fast the worker walks the chunk table: at full speed after an event and while there is
/// work, else a page at a time with pauses between.
#[derive(Debug)]
struct Pace {
    /// Walk at full speed: something happened, or the pass so far found work.
    hurry: bool,
    /// A slow pass is part-way through the table, waiting before its next page.
    mid_pass: bool,
}

impl Default for Pace {
    /// The first pass after a start hurries: nothing is known yet.
    fn default() -> Pace {
        Pace {
            hurry: true,
            mid_pass: false,
        }
    }
}

impl Pace {
    /// A page was checked (`found_work`: it had chunks off goal, servers to wait for or to
    /// balance); says whether the next page follows at once or after a pause.
    fn after_page(&mut self, found_work: bool) -> WorkerState {
        self.hurry |= found_work;
        self.mid_pass = !self.hurry;
        if self.hurry {
            WorkerState::Busy
        } else {
            WorkerState::Idle
        }
    }

    /// The pass reached the end of the table; the next one hurries only if this one
    /// `left_work` (copies in flight, chunks still off goal) or an event wakes it.
    fn after_pass(&mut self, left_work: bool) {
        self.mid_pass = false;
        self.hurry = left_work;
    }

    /// Something may have left chunks off goal; returns whether the pass must start again
    /// from the first chunk (a slow pass has gone past chunks the event may concern).
    fn woken(&mut self) -> bool {
        let restart = self.mid_pass;
        self.mid_pass = false;
        self.hurry = true;
        restart
    }

    /// How long to wait when idle and not woken; `chunks` is how many the last pass looked at.
    fn pause(&self, settings: &ReplicationSettings, chunks: u64) -> Duration {
        if !self.mid_pass {
            return settings.pass_pause;
        }
        let pages = chunks.div_ceil(PAGE as u64).max(1);
        let spread = settings.quiet_pass_longest / u32::try_from(pages).unwrap_or(u32::MAX);
        settings.quiet_page_pause.min(spread)
    }
}

/// What one page of decisions needs to know about the servers.
struct ClusterView {
    servers: HashMap<ServerId, ServerEntry>,
    average_used: f64,
    /// Used fraction of the fullest server minus that of the emptiest.
    used_spread: f64,
    awaiting_return: bool,
    balance_threshold: f64,
}

impl ClusterView {
    fn new(state: &MasterState, settings: &ReplicationSettings) -> ClusterView {
        let servers: HashMap<ServerId, ServerEntry> = state
            .cluster
            .servers()
            .into_iter()
            .map(|s| (s.id, s))
            .collect();
        let average_used = if servers.is_empty() {
            0.0
        } else {
            servers
                .values()
                .map(|s| used_fraction(s.space))
                .sum::<f64>()
                / servers.len() as f64
        };
        let (least, most) = servers
            .values()
            .map(|s| used_fraction(s.space))
            .fold((f64::MAX, f64::MIN), |(lo, hi), u| (lo.min(u), hi.max(u)));
        let used_spread = if servers.is_empty() {
            0.0
        } else {
            most - least
        };
        ClusterView {
            servers,
            average_used,
            used_spread,
            awaiting_return: state
                .cluster
                .awaiting_return(settings.lost_delay, settings.planned_delay),
            balance_threshold: settings.balance_threshold,
        }
    }

    fn used(&self, server: ServerId) -> f64 {
        self.servers
            .get(&server)
            .map(|s| used_fraction(s.space))
            .unwrap_or(1.0)
    }
}

impl ReplicationWorker {
    fn check(&mut self, chunk: ChunkId, record: ChunkRecord, view: &ClusterView) {
        {
            let mut flight = self.lock_in_flight();
            if flight.chunks.contains_key(&chunk) {
                return;
            }
            match flight.failed.get(&chunk) {
                Some(at) if at.elapsed() < AFTER_FAILED_COPY => return,
                Some(_) => {
                    flight.failed.remove(&chunk);
                }
                None => {}
            }
        }
        if self.state.leases.chunk_busy(chunk) {
            return;
        }
        let copies = self.state.cluster.copies(chunk);
        let valid: Vec<Copy> = copies
            .iter()
            .copied()
            .filter(|c| c.is_valid(record.version))
            .collect();
        if valid.is_empty() {
            // Stale copies are kept: they may be all that is left of the data.
            self.current.without_copy += 1;
            self.current.first_without_copy.get_or_insert(chunk);
            return;
        }
        for stale in copies.iter().filter(|c| !c.is_valid(record.version)) {
            self.delete(chunk, *stale);
        }
        let goal = (record.goal.max(1) as usize).min(elkfs_proto::geometry::MAX_COPIES);
        let counted = valid.iter().filter(|c| !c.marked).count();
        if counted < goal {
            self.current.under_goal += 1;
            let endangered = valid.len() <= 1;
            if endangered || !view.awaiting_return {
                self.copy_somewhere(chunk, record.version, &valid, &copies, view, None);
            }
        } else {
            for marked in valid.iter().filter(|c| c.marked) {
                self.delete(chunk, *marked);
            }
            if counted > goal {
                self.current.over_goal += 1;
                let mut surplus: Vec<Copy> = valid.iter().copied().filter(|c| !c.marked).collect();
                // The fullest servers give up their copies first.
                surplus.sort_by(|a, b| view.used(b.server).total_cmp(&view.used(a.server)));
                for c in surplus.into_iter().take(counted - goal) {
                    self.delete(chunk, c);
                }
            } else {
                self.balance(chunk, record.version, &valid, &copies, view);
            }
        }
    }

    /// While the fullest and the emptiest server differ by more than the threshold, moves a
    /// copy off a server above the average used space onto one below it; each move narrows
    /// the spread, and moving stops once it is within the threshold.
    fn balance(
        &mut self,
        chunk: ChunkId,
        version: ChunkVersion,
        valid: &[Copy],
        copies: &[Copy],
        view: &ClusterView,
    ) {
        if view.used_spread <= view.balance_threshold {
            return;
        }
        let half = view.balance_threshold / 2.0;
        // The fuller servers give first: those well above the average, or, when no server is
        // (one nearly empty server pulls the average down), every server above it.
        let well_above = view
            .servers
            .keys()
            .any(|&s| view.used(s) > view.average_used + half);
        let margin = if well_above { half } else { 0.0 };
        let on_full = valid
            .iter()
            .any(|c| view.used(c.server) > view.average_used + margin);
        if !on_full {
            return;
        }
        if !self
            .rounds
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .may_start()
        {
            return;
        }
        let ceiling = view.average_used - margin;
        if self.copy_somewhere(chunk, version, valid, copies, view, Some(ceiling)) {
            let mut rounds = self.rounds.lock().unwrap_or_else(|p| p.into_inner());
            rounds.started += 1;
            rounds.in_flight += 1;
        }
    }

    /// Starts copying `chunk` to a server that has no copy yet (with used space below
    /// `ceiling`, when given: a balancing move). Returns whether a copy started.
    fn copy_somewhere(
        &mut self,
        chunk: ChunkId,
        version: ChunkVersion,
        valid: &[Copy],
        copies: &[Copy],
        view: &ClusterView,
        ceiling: Option<f64>,
    ) -> bool {
        let limit = self.state.replication_per_server;
        let busy = |s: ServerId, flight: &InFlight| {
            flight.per_server.get(&s).copied().unwrap_or(0) >= limit
        };
        let mut flight = self.lock_in_flight();
        let exclude: Vec<std::net::SocketAddr> = copies
            .iter()
            .filter_map(|c| view.servers.get(&c.server).map(|s| s.data_addr))
            .collect();
        let destination = self
            .state
            .cluster
            .choose_for_new_chunk(view.servers.len(), &exclude)
            .into_iter()
            .filter(|t| !busy(t.server, &flight) && !self.state.cluster.is_passed_over(t.server))
            .find(|t| ceiling.is_none_or(|c| view.used(t.server) < c));
        let Some(destination) = destination else {
            return false;
        };
        let mut sources: Vec<&Copy> = valid.iter().filter(|c| !busy(c.server, &flight)).collect();
        sources.sort_by_key(|c| c.marked);
        let Some(source) = sources
            .first()
            .and_then(|c| view.servers.get(&c.server))
            .map(target_of)
        else {
            return false;
        };
        flight.chunks.insert(chunk, ());
        *flight.per_server.entry(source.server).or_default() += 1;
        *flight.per_server.entry(destination.server).or_default() += 1;
        drop(flight);
        self.current.copies_started += 1;
        let state = self.state.clone();
        let in_flight = self.in_flight.clone();
        let rounds = ceiling.map(|_| self.rounds.clone());
        tokio::spawn(async move {
            let copied = copy_chunk(&state, chunk, version, &source, &destination).await;
            let mut flight = in_flight.lock().unwrap_or_else(|p| p.into_inner());
            flight.chunks.remove(&chunk);
            if !copied {
                flight.failed.insert(chunk, Instant::now());
            }
            for s in [source.server, destination.server] {
                if let Some(n) = flight.per_server.get_mut(&s) {
                    *n = n.saturating_sub(1);
                }
            }
            drop(flight);
            if let Some(rounds) = rounds {
                let mut rounds = rounds.lock().unwrap_or_else(|p| p.into_inner());
                rounds.in_flight = rounds.in_flight.saturating_sub(1);
                if rounds.in_flight == 0 {
                    rounds.started = 0;
                    rounds.quiet_until = Some(Instant::now() + BALANCE_SETTLE);
                }
            }
            state.replication.wake();
        });
        true
    }

    /// Deletes one copy (in the background); the copy is forgotten once it is gone.
    fn delete(&mut self, chunk: ChunkId, copy: Copy) {
        let Some(target) = self.state.cluster.target(copy.server) else {
            return;
        };
        self.current.deletions += 1;
        self.lock_in_flight().chunks.insert(chunk, ());
        let state = self.state.clone();
        let in_flight = self.in_flight.clone();
        tokio::spawn(async move {
            let cmd = CsCommand::Delete {
                chunk,
                version: copy.version,
            };
            match run_command(&target, &cmd).await {
                Ok(()) => state.cluster.remove_copy(chunk, copy.server),
                Err(CommandError::Refused(Status::NotFound)) => {
                    state.cluster.remove_copy(chunk, copy.server)
                }
                Err(e) => {
                    tracing::debug!(%chunk, server = %target.data_addr, error = %e, "could not delete a copy");
                }
            }
            in_flight
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .chunks
                .remove(&chunk);
        });
    }
}

/// Has `destination` copy the chunk from `source`, then counts the new copy if the chunk still
/// has that version (a write may have started meanwhile; then the copy is stale and goes).
/// Returns whether the copy was made.
async fn copy_chunk(
    state: &MasterState,
    chunk: ChunkId,
    version: ChunkVersion,
    source: &Target,
    destination: &Target,
) -> bool {
    let cmd = CsCommand::Replicate {
        chunk,
        version,
        source: source.data_addr,
    };
    if let Err(e) = run_command_within(destination, &cmd, REPLICATION_TIMEOUT).await {
        match e {
            CommandError::Refused(Status::NoSpace) => state.cluster.note_full(destination.server),
            // Its own disk or network (a failed source answers otherwise), or no answer.
            CommandError::Refused(Status::Io) | CommandError::NoAnswer(_) => {
                state.cluster.pass_over(destination.server)
            }
            CommandError::Refused(_) => {}
        }
        tracing::warn!(%chunk, from = %source.data_addr, to = %destination.data_addr, error = %e, "chunk copy failed");
        return false;
    }
    let current = state
        .meta
        .read(move |s| s.chunk(chunk).map_err(Into::into))
        .await;
    match current {
        Ok(Some(record)) if record.version == version => {
            state
                .cluster
                .set_replicated_copy(chunk, destination.server, version);
            tracing::debug!(%chunk, from = %source.data_addr, to = %destination.data_addr, "chunk copied");
        }
        _ => {
            let cmd = CsCommand::Delete { chunk, version };
            if let Err(e) = run_command(destination, &cmd).await {
                tracing::debug!(%chunk, error = %e, "could not delete an outdated copy");
            }
        }
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings() -> ReplicationSettings {
        ReplicationSettings {
            lost_delay: Duration::from_secs(15),
            planned_delay: Duration::from_secs(300),
            startup_delay: Duration::ZERO,
            per_server: 2,
            balance_threshold: 0.04,
            pass_pause: Duration::from_secs(1),
            quiet_page_pause: Duration::from_millis(200),
            quiet_pass_longest: Duration::from_secs(60),
        }
    }

    #[test]
    fn a_quiet_pass_over_many_chunks_still_ends_within_the_longest_time() {
        let mut pace = Pace::default();
        pace.after_pass(false);
        assert_eq!(pace.after_page(false), WorkerState::Idle);
        let chunks = 10_000_000;
        let pause = pace.pause(&settings(), chunks);
        let pages = chunks.div_ceil(PAGE as u64) as u32;
        assert!(
            pause * pages <= Duration::from_secs(60),
            "{pause:?} per page"
        );
        assert!(pause > Duration::ZERO);
        assert_eq!(pace.pause(&settings(), 2048), Duration::from_millis(200));
    }

    #[test]
    fn a_quiet_pass_pauses_between_pages_and_the_next_one_is_quiet_too() {
        let mut pace = Pace::default();
        assert_eq!(
            pace.after_page(false),
            WorkerState::Busy,
            "the first pass hurries"
        );
        pace.after_pass(false);
        assert_eq!(pace.pause(&settings(), 10_000), Duration::from_secs(1));
        assert_eq!(pace.after_page(false), WorkerState::Idle);
        assert_eq!(pace.pause(&settings(), 10_000), Duration::from_millis(200));
        assert_eq!(pace.after_page(false), WorkerState::Idle);
        pace.after_pass(false);
        assert_eq!(pace.pause(&settings(), 10_000), Duration::from_secs(1));
        assert_eq!(pace.after_page(false), WorkerState::Idle);
    }

    #[test]
    fn work_found_hurries_the_rest_of_the_pass_and_the_next_while_work_is_left() {
        let mut pace = Pace::default();
        pace.after_pass(false);
        assert_eq!(pace.after_page(false), WorkerState::Idle);
        assert_eq!(pace.after_page(true), WorkerState::Busy);
        assert_eq!(pace.after_page(false), WorkerState::Busy);
        pace.after_pass(true);
        assert_eq!(pace.after_page(false), WorkerState::Busy);
        pace.after_pass(false);
        assert_eq!(pace.after_page(false), WorkerState::Idle);
    }

    #[test]
    fn a_wake_during_a_slow_pass_starts_it_again_at_full_speed() {
        let mut pace = Pace::default();
        pace.after_pass(false);
        assert_eq!(pace.after_page(false), WorkerState::Idle);
        assert!(pace.woken(), "chunks already passed may be off goal now");
        assert_eq!(pace.after_page(false), WorkerState::Busy);
        // Between passes there is nothing to start again.
        pace.after_pass(false);
        assert!(!pace.woken());
        assert_eq!(pace.after_page(false), WorkerState::Busy);
    }
}
