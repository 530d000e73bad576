//! The chunkservers connected right now and which chunk copies each holds: soft state, rebuilt
//! from registrations after every master start and never persisted.

use std::collections::{HashMap, HashSet};
use std::net::{IpAddr, SocketAddr};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use elkfs_proto::chunkserver::{CsCommand, CsCommandResult, Space};
use elkfs_proto::{ChunkId, ChunkVersion, Connection, ServerId};
use rand::seq::SliceRandom;

/// The master's connection to a chunkserver, for sending it commands.
pub type CsLink = Connection<CsCommand, CsCommandResult>;

/// A server free space must exceed to receive new chunks (one full chunk and some margin).
const MIN_FREE_FOR_NEW_CHUNKS: u64 = 128 * 1024 * 1024;

/// How long a server whose disk failed a copy or lost data is passed over: choosing it again at
/// once would only fail again (for replication, in a loop).
const PASSED_OVER_FOR: std::time::Duration = std::time::Duration::from_secs(30);

/// A connected chunkserver.
#[derive(Clone)]
pub struct ServerEntry {
    /// Its id for this master run.
    pub id: ServerId,
    /// The id it keeps across restarts.
    pub server_id: u64,
    /// Where clients and peers reach its data port.
    pub data_addr: SocketAddr,
    /// Its disk space as last reported.
    pub space: Space,
    /// The connection commands go over.
    pub link: CsLink,
    /// Passed over until then (see [`Cluster::pass_over`]).
    pub passed_over_until: Option<std::time::Instant>,
}

impl ServerEntry {
    /// Whether it is being passed over at `now`.
    fn passed_over_at(&self, now: std::time::Instant) -> bool {
        self.passed_over_until.is_some_and(|until| now < until)
    }
}

/// One copy of a chunk on a server.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Copy {
    /// The server holding it.
    pub server: ServerId,
    /// Its version there.
    pub version: ChunkVersion,
    /// It sits in a directory marked for removal (serves reads, does not count to the goal).
    pub marked: bool,
    /// Its server found it damaged: never served, deleted once a good copy exists, and its
    /// server gets no other copy of the chunk until then.
    pub damaged: bool,
}

impl Copy {
    /// Whether this copy holds `version` intact.
    pub fn is_valid(&self, version: ChunkVersion) -> bool {
        self.version == version && !self.damaged
    }
}

/// A server chosen for some chunk operation.
#[derive(Clone)]
pub struct Target {
    /// The server.
    pub server: ServerId,
    /// Its data address.
    pub data_addr: SocketAddr,
    /// Its command connection.
    pub link: CsLink,
}

/// What recording a copy does with its "marked for removal" flag.
#[derive(Clone, Copy)]
enum Mark {
    /// As reported by its server.
    Set(bool),
    /// As known (unmarked for a copy not known yet).
    Keep,
    /// As known if the copy known there has the version recorded, else unmarked.
    KeepIfSameVersion,
}

/// A server that went away, remembered until it comes back or its grace period ends.
#[derive(Clone, Copy, Debug)]
struct Departure {
    at: Instant,
    announced: bool,
}

#[derive(Default)]
struct Inner {
    servers: HashMap<ServerId, ServerEntry>,
    next_server: u32,
    copies: HashMap<ChunkId, Vec<Copy>>,
    departures: HashMap<u64, Departure>,
    /// Copies found damaged, by chunk, the server's persistent id and version: still damaged
    /// when that server registers again (a restart does not re-check its chunks).
    damaged: HashSet<(ChunkId, u64, ChunkVersion)>,
}

/// Servers and copies, behind one lock held only for map operations.
#[derive(Default)]
pub struct Cluster {
    inner: Mutex<Inner>,
}

/// Totals for `statfs` and status output.
#[derive(Clone, Copy, Debug, Default)]
pub struct ClusterTotals {
    /// Connected servers.
    pub servers: usize,
    /// Their disk space summed.
    pub space: Space,
}

impl Cluster {
    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Adds a newly registered server and returns its id.
    pub fn add_server(
        &self,
        server_id: u64,
        data_addr: SocketAddr,
        space: Space,
        link: CsLink,
    ) -> ServerId {
        let mut inner = self.lock();
        inner.next_server += 1;
        let id = ServerId(inner.next_server);
        inner.departures.remove(&server_id);
        inner.servers.insert(
            id,
            ServerEntry {
                id,
                server_id,
                data_addr,
                space,
                link,
                passed_over_until: None,
            },
        );
        id
    }

    /// Removes a server that disconnected, with every copy it held; returns how many it held.
    /// `announced` says it stopped on purpose (and is expected back).
    pub fn remove_server(&self, id: ServerId, announced: bool) -> usize {
        let mut inner = self.lock();
        if let Some(entry) = inner.servers.remove(&id) {
            inner.departures.insert(
                entry.server_id,
                Departure {
                    at: Instant::now(),
                    announced,
                },
            );
        }
        let mut held = 0;
        inner.copies.retain(|_, copies| {
            let before = copies.len();
            copies.retain(|c| c.server != id);
            held += before - copies.len();
            !copies.is_empty()
        });
        held
    }

    /// Records a server's latest space report.
    pub fn update_space(&self, id: ServerId, space: Space) {
        if let Some(s) = self.lock().servers.get_mut(&id) {
            s.space = space;
        }
    }

    /// Takes `server` as full until its next space report: it refused a new chunk or copy for
    /// want of space, so choosing it again before then would only fail again (and, for
    /// replication, at once and in a loop).
    pub fn note_full(&self, server: ServerId) {
        if let Some(s) = self.lock().servers.get_mut(&server) {
            s.space.available = 0;
        }
    }

    /// Passes `server` over for a while: its disk failed a copy or lost data (an I/O error, a
    /// lost write), which choosing it again at once would most likely meet again. Copies go
    /// elsewhere meanwhile, and new chunks only when enough other servers have room.
    pub fn pass_over(&self, server: ServerId) {
        if let Some(s) = self.lock().servers.get_mut(&server) {
            s.passed_over_until = Some(std::time::Instant::now() + PASSED_OVER_FOR);
        }
    }

    /// Whether `server` is being passed over (see [`Cluster::pass_over`]).
    pub fn is_passed_over(&self, server: ServerId) -> bool {
        self.lock()
            .servers
            .get(&server)
            .is_some_and(|s| s.passed_over_at(std::time::Instant::now()))
    }

    /// Records (or updates) that `server` holds `chunk` at `version`. A copy already known
    /// there stays in a directory marked for removal if it was: a command that changes a copy's
    /// version (or cuts it) leaves the file in its directory.
    pub fn set_copy(&self, chunk: ChunkId, server: ServerId, version: ChunkVersion) {
        self.record_copy(chunk, server, version, Mark::Keep);
    }

    /// Records the copy a replication left on `server`: a new one, never in a directory marked
    /// for removal, unless `server` held `version` already. A server that registered just now
    /// may (its chunk list comes after its registration, so the master chose it without knowing
    /// of its copy); it answers at once, and its copy stays where it is, marked if it was.
    pub fn set_replicated_copy(&self, chunk: ChunkId, server: ServerId, version: ChunkVersion) {
        self.record_copy(chunk, server, version, Mark::KeepIfSameVersion);
    }

    /// Records a copy, saying whether it sits in a directory marked for removal.
    pub fn set_copy_marked(
        &self,
        chunk: ChunkId,
        server: ServerId,
        version: ChunkVersion,
        marked: bool,
    ) {
        self.record_copy(chunk, server, version, Mark::Set(marked));
    }

    fn record_copy(&self, chunk: ChunkId, server: ServerId, version: ChunkVersion, mark: Mark) {
        let mut inner = self.lock();
        let Some(server_id) = inner.servers.get(&server).map(|s| s.server_id) else {
            return;
        };
        let damaged = inner.damaged.contains(&(chunk, server_id, version));
        let copies = inner.copies.entry(chunk).or_default();
        match copies.iter_mut().find(|c| c.server == server) {
            Some(c) => {
                c.marked = match mark {
                    Mark::Set(marked) => marked,
                    Mark::Keep => c.marked,
                    Mark::KeepIfSameVersion => c.marked && c.version == version,
                };
                c.version = version;
                c.damaged = damaged;
            }
            None => copies.push(Copy {
                server,
                version,
                marked: matches!(mark, Mark::Set(true)),
                damaged,
            }),
        }
    }

    /// Records a copy unless one of `chunk` is known on `server` already, at whatever version:
    /// a report that may arrive late never overrides what commands since have set.
    pub fn add_copy_if_unknown(&self, chunk: ChunkId, server: ServerId, version: ChunkVersion) {
        let mut inner = self.lock();
        let Some(server_id) = inner.servers.get(&server).map(|s| s.server_id) else {
            return;
        };
        let damaged = inner.damaged.contains(&(chunk, server_id, version));
        let copies = inner.copies.entry(chunk).or_default();
        if !copies.iter().any(|c| c.server == server) {
            copies.push(Copy {
                server,
                version,
                marked: false,
                damaged,
            });
        }
    }

    /// Whether a server left recently enough that its copies may still come back: an
    /// announced stop waits `planned`, a lost connection `lost`.
    pub fn awaiting_return(&self, lost: Duration, planned: Duration) -> bool {
        let mut inner = self.lock();
        inner.departures.retain(|_, d| {
            let grace = if d.announced { planned } else { lost };
            d.at.elapsed() < grace
        });
        !inner.departures.is_empty()
    }

    /// How many copies each connected server holds.
    pub fn copies_per_server(&self) -> HashMap<ServerId, u64> {
        let inner = self.lock();
        let mut counts: HashMap<ServerId, u64> = inner.servers.keys().map(|s| (*s, 0)).collect();
        for copies in inner.copies.values() {
            for c in copies {
                if let Some(n) = counts.get_mut(&c.server) {
                    *n += 1;
                }
            }
        }
        counts
    }

    /// Every connected server.
    pub fn servers(&self) -> Vec<ServerEntry> {
        self.lock().servers.values().cloned().collect()
    }

    /// Records that `server` found its copy of `chunk` damaged; returns whether a valid copy is
    /// left elsewhere, or `None` when the master knows of no copy of it there.
    pub fn mark_damaged(&self, chunk: ChunkId, server: ServerId) -> Option<bool> {
        let mut inner = self.lock();
        let server_id = inner.servers.get(&server)?.server_id;
        let copies = inner.copies.get_mut(&chunk)?;
        let mut version = None;
        for c in copies.iter_mut().filter(|c| c.server == server) {
            c.damaged = true;
            version = Some(c.version);
        }
        let intact_left = copies
            .iter()
            .any(|c| version.is_some_and(|v| c.is_valid(v)));
        let version = version?;
        inner.damaged.insert((chunk, server_id, version));
        Some(intact_left)
    }

    /// Records that `server`, registering, reported its copy of `chunk` at `version` damaged
    /// before listing it (a copy that lost writes before a restart): the copy is taken as
    /// damaged from the moment it is listed, never as a good one.
    pub fn note_damage_before_listing(
        &self,
        chunk: ChunkId,
        server: ServerId,
        version: ChunkVersion,
    ) {
        let mut inner = self.lock();
        if let Some(server_id) = inner.servers.get(&server).map(|s| s.server_id) {
            inner.damaged.insert((chunk, server_id, version));
        }
    }

    /// Forgets damage `server` reported before listing its copies for copies it did not list
    /// (deleted meanwhile): a good copy made there later must not inherit it.
    pub fn forget_unlisted_damage(&self, server: ServerId) {
        let mut inner = self.lock();
        let Some(server_id) = inner.servers.get(&server).map(|s| s.server_id) else {
            return;
        };
        let Inner {
            damaged, copies, ..
        } = &mut *inner;
        damaged.retain(|&(chunk, s, version)| {
            s != server_id
                || copies.get(&chunk).is_some_and(|copies| {
                    copies
                        .iter()
                        .any(|c| c.server == server && c.version == version)
                })
        });
    }

    /// Whether the master knows `server`'s copy of `chunk` at `version` as damaged already.
    pub fn is_damaged(&self, chunk: ChunkId, server: ServerId, version: ChunkVersion) -> bool {
        let inner = self.lock();
        inner
            .servers
            .get(&server)
            .is_some_and(|s| inner.damaged.contains(&(chunk, s.server_id, version)))
    }

    /// Forgets one copy (deleted).
    pub fn remove_copy(&self, chunk: ChunkId, server: ServerId) {
        let mut inner = self.lock();
        if let Some(server_id) = inner.servers.get(&server).map(|s| s.server_id) {
            inner
                .damaged
                .retain(|&(c, s, _)| c != chunk || s != server_id);
        }
        if let Some(copies) = inner.copies.get_mut(&chunk) {
            copies.retain(|c| c.server != server);
            if copies.is_empty() {
                inner.copies.remove(&chunk);
            }
        }
    }

    /// Forgets `server`'s copy of `chunk` if it is still at `version` (a later version there
    /// came from a command that found the copy).
    pub fn remove_copy_at(&self, chunk: ChunkId, server: ServerId, version: ChunkVersion) {
        let mut inner = self.lock();
        if let Some(copies) = inner.copies.get_mut(&chunk) {
            copies.retain(|c| c.server != server || c.version != version);
            if copies.is_empty() {
                inner.copies.remove(&chunk);
            }
        }
    }

    /// Forgets a chunk entirely and returns where its copies were, to delete them.
    pub fn forget_chunk(&self, chunk: ChunkId) -> Vec<(Target, ChunkVersion)> {
        let mut inner = self.lock();
        inner.damaged.retain(|&(c, _, _)| c != chunk);
        let copies = inner.copies.remove(&chunk).unwrap_or_default();
        copies
            .into_iter()
            .filter_map(|c| {
                inner
                    .servers
                    .get(&c.server)
                    .map(|s| (target_of(s), c.version))
            })
            .collect()
    }

    /// Servers holding `chunk` at exactly `version`, those on `near` (the client's host) first,
    /// the rest in random order to spread the load.
    pub fn valid_copies(
        &self,
        chunk: ChunkId,
        version: ChunkVersion,
        near: Option<IpAddr>,
    ) -> Vec<Target> {
        let inner = self.lock();
        let mut out: Vec<Target> = inner
            .copies
            .get(&chunk)
            .into_iter()
            .flatten()
            .filter(|c| c.is_valid(version))
            .filter_map(|c| inner.servers.get(&c.server).map(target_of))
            .collect();
        out.shuffle(&mut rand::rng());
        if let Some(ip) = near {
            out.sort_by_key(|t| t.data_addr.ip() != ip);
        }
        out
    }

    /// Every copy the master knows of for `chunk`, whatever its version.
    pub fn copies(&self, chunk: ChunkId) -> Vec<Copy> {
        self.lock().copies.get(&chunk).cloned().unwrap_or_default()
    }

    /// Up to `count` servers for a new copy: the emptiest (by used fraction) first, ties broken
    /// at random, skipping servers without room and those in `exclude`.
    pub fn choose_for_new_chunk(&self, count: usize, exclude: &[SocketAddr]) -> Vec<Target> {
        let now = std::time::Instant::now();
        let inner = self.lock();
        let mut candidates: Vec<&ServerEntry> = inner
            .servers
            .values()
            .filter(|s| s.space.available >= MIN_FREE_FOR_NEW_CHUNKS && !s.link.is_closed())
            .filter(|s| !exclude.contains(&s.data_addr))
            .collect();
        // Servers within a point of each other count as equally full (on a shared disk they
        // are), so new copies spread evenly among them; those passed over come last.
        candidates.shuffle(&mut rand::rng());
        candidates.sort_by_key(|s| {
            (
                s.passed_over_at(now),
                (used_fraction(s.space) * 100.0) as u32,
            )
        });
        candidates.into_iter().take(count).map(target_of).collect()
    }

    /// The command connection of a server, if it is still connected.
    pub fn target(&self, server: ServerId) -> Option<Target> {
        self.lock().servers.get(&server).map(target_of)
    }

    /// Servers and space summed.
    pub fn totals(&self) -> ClusterTotals {
        let inner = self.lock();
        let mut totals = ClusterTotals {
            servers: inner.servers.len(),
            ..Default::default()
        };
        for s in inner.servers.values() {
            // Reported by the servers themselves: never trusted not to overflow.
            totals.space.total = totals.space.total.saturating_add(s.space.total);
            totals.space.available = totals.space.available.saturating_add(s.space.available);
        }
        totals
    }
}

/// The target for a server entry.
pub fn target_of(s: &ServerEntry) -> Target {
    Target {
        server: s.id,
        data_addr: s.data_addr,
        link: s.link.clone(),
    }
}

/// The share of a server's space in use, 0.0..=1.0 (1.0 when it reports no space).
pub fn used_fraction(space: Space) -> f64 {
    if space.total == 0 {
        return 1.0;
    }
    1.0 - space.available as f64 / space.total as f64
}

#[cfg(test)]
mod tests {
    use super::*;
    use elkfs_proto::connection::{self, NoMessage, NoRequests};
    use elkfs_proto::{Hello, MASTER_CHUNKSERVER_LIMITS, Role};

    /// Plenty of room, so space never decides anything in these tests.
    const SPACE: Space = Space {
        total: 1 << 40,
        available: 1 << 39,
    };

    /// A live connection to stand for the master's link to a chunkserver (never used to send).
    async fn link() -> (CsLink, tokio::task::JoinHandle<()>) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let peer = tokio::spawn(async move {
            let (stream, _) = listener.accept().await.unwrap();
            let accepted = connection::accept(stream, "test", None, |_, _| Ok(())).await;
            // Held open until the test ends.
            std::future::pending::<()>().await;
            drop(accepted);
        });
        let hello = Hello::new(Role::Chunkserver, "test");
        let link = connection::connect::<CsCommand, CsCommandResult, NoMessage, NoMessage, _>(
            addr,
            &hello,
            MASTER_CHUNKSERVER_LIMITS,
            "test",
            NoRequests,
        )
        .await
        .unwrap();
        (link, peer)
    }

    #[tokio::test]
    async fn damage_reported_before_the_list_marks_the_copy_from_the_start_and_no_later_one() {
        let (link, peer) = link().await;
        let cluster = Cluster::default();
        let (a, b): (SocketAddr, SocketAddr) = (
            "127.0.0.1:9001".parse().unwrap(),
            "127.0.0.1:9002".parse().unwrap(),
        );
        let other = cluster.add_server(22, b, SPACE, link.clone());
        let (chunk, version) = (ChunkId(5), ChunkVersion(3));
        cluster.set_copy(chunk, other, version);
        let server = cluster.add_server(11, a, SPACE, link.clone());
        cluster.note_damage_before_listing(chunk, server, version);
        cluster.note_damage_before_listing(ChunkId(6), server, version);
        assert!(cluster.is_damaged(chunk, server, version));
        cluster.set_copy_marked(chunk, server, version, false);
        cluster.forget_unlisted_damage(server);
        let valid: Vec<SocketAddr> = cluster
            .valid_copies(chunk, version, None)
            .iter()
            .map(|t| t.data_addr)
            .collect();
        assert_eq!(valid, vec![b], "the listed copy was damaged from the start");
        assert!(cluster.is_damaged(chunk, server, version));
        // Chunk 6 was not listed: a copy made there later is a good one.
        assert!(!cluster.is_damaged(ChunkId(6), server, version));
        cluster.set_copy(ChunkId(6), server, version);
        assert_eq!(cluster.valid_copies(ChunkId(6), version, None).len(), 1);
        peer.abort();
    }

    #[tokio::test]
    async fn a_damaged_copy_stays_damaged_when_its_server_registers_again() {
        let (link, peer) = link().await;
        let cluster = Cluster::default();
        let space = SPACE;
        let (a, b): (SocketAddr, SocketAddr) = (
            "127.0.0.1:9001".parse().unwrap(),
            "127.0.0.1:9002".parse().unwrap(),
        );
        let first = cluster.add_server(11, a, space, link.clone());
        let other = cluster.add_server(22, b, space, link.clone());
        let (chunk, version) = (ChunkId(5), ChunkVersion(3));
        cluster.set_copy(chunk, first, version);
        cluster.set_copy(chunk, other, version);
        assert_eq!(cluster.mark_damaged(chunk, first), Some(true));
        assert_eq!(
            cluster.mark_damaged(ChunkId(6), first),
            None,
            "no such copy"
        );

        // The server restarts and reports the same copy again.
        cluster.remove_server(first, true);
        let again = cluster.add_server(11, a, space, link.clone());
        cluster.set_copy_marked(chunk, again, version, false);
        let valid: Vec<SocketAddr> = cluster
            .valid_copies(chunk, version, None)
            .iter()
            .map(|t| t.data_addr)
            .collect();
        assert_eq!(valid, vec![b], "the damaged copy is still not served");

        // Once deleted there, a new copy on that server is a good one.
        cluster.remove_copy(chunk, again);
        cluster.set_copy(chunk, again, version);
        assert_eq!(cluster.valid_copies(chunk, version, None).len(), 2);
        peer.abort();
    }

    #[tokio::test]
    async fn a_server_that_ran_out_of_space_takes_no_new_chunk_until_it_reports_room() {
        let (link, peer) = link().await;
        let cluster = Cluster::default();
        let (a, b): (SocketAddr, SocketAddr) = (
            "127.0.0.1:9001".parse().unwrap(),
            "127.0.0.1:9002".parse().unwrap(),
        );
        let full = cluster.add_server(11, a, SPACE, link.clone());
        cluster.add_server(22, b, SPACE, link.clone());
        assert_eq!(cluster.choose_for_new_chunk(2, &[]).len(), 2);
        cluster.note_full(full);
        let chosen: Vec<SocketAddr> = cluster
            .choose_for_new_chunk(2, &[])
            .iter()
            .map(|t| t.data_addr)
            .collect();
        assert_eq!(chosen, vec![b]);
        cluster.update_space(full, SPACE);
        assert_eq!(cluster.choose_for_new_chunk(2, &[]).len(), 2);
        peer.abort();
    }

    #[tokio::test]
    async fn a_server_passed_over_comes_last_for_new_chunks_for_a_while_even_when_emptiest() {
        let (link, peer) = link().await;
        let cluster = Cluster::default();
        let (a, b): (SocketAddr, SocketAddr) = (
            "127.0.0.1:9001".parse().unwrap(),
            "127.0.0.1:9002".parse().unwrap(),
        );
        let empty = Space {
            total: SPACE.total,
            available: SPACE.total,
        };
        let failing = cluster.add_server(11, a, empty, link.clone());
        cluster.add_server(22, b, SPACE, link.clone());
        assert_eq!(cluster.choose_for_new_chunk(1, &[])[0].data_addr, a);
        cluster.pass_over(failing);
        assert!(cluster.is_passed_over(failing));
        let chosen: Vec<SocketAddr> = cluster
            .choose_for_new_chunk(2, &[])
            .iter()
            .map(|t| t.data_addr)
            .collect();
        assert_eq!(chosen, vec![b, a], "last, but still there when needed");
        cluster.update_space(failing, empty);
        assert_eq!(cluster.choose_for_new_chunk(1, &[])[0].data_addr, b);
        assert!(
            cluster.is_passed_over(failing),
            "a space report does not end it"
        );
        peer.abort();
    }

    #[tokio::test]
    async fn a_copy_in_a_directory_marked_for_removal_stays_marked_whatever_finds_it_in_place() {
        let (link, peer) = link().await;
        let cluster = Cluster::default();
        let server = cluster.add_server(11, "127.0.0.1:9001".parse().unwrap(), SPACE, link);
        let (v1, v2) = (ChunkVersion(1), ChunkVersion(2));
        let marked = |chunk| -> Vec<(u32, bool)> {
            cluster
                .copies(chunk)
                .iter()
                .map(|c| (c.version.0, c.marked))
                .collect()
        };

        // A server registering reports a copy in a marked directory; a replication the master
        // had sent it before the report came answers at once, the copy left where it is.
        let chunk = ChunkId(7);
        cluster.set_copy_marked(chunk, server, v1, true);
        cluster.set_replicated_copy(chunk, server, v1);
        assert_eq!(marked(chunk), vec![(1, true)], "still to be moved off");
        // A new version (or a cut) renames the file in its directory.
        cluster.set_copy(chunk, server, v2);
        assert_eq!(marked(chunk), vec![(2, true)]);
        // The report coming after the replication marks it too.
        let late = ChunkId(8);
        cluster.set_replicated_copy(late, server, v1);
        cluster.set_copy_marked(late, server, v1, true);
        assert_eq!(marked(late), vec![(1, true)]);

        // A stale copy is replaced by a new one, never in a marked directory.
        let stale = ChunkId(9);
        cluster.set_copy_marked(stale, server, v1, true);
        cluster.set_replicated_copy(stale, server, v2);
        assert_eq!(marked(stale), vec![(2, false)]);
        // As is a copy the server did not have.
        let new = ChunkId(10);
        cluster.set_replicated_copy(new, server, v1);
        cluster.set_copy(new, server, v2);
        assert_eq!(marked(new), vec![(2, false)]);
        peer.abort();
    }

    #[tokio::test]
    async fn reports_and_failed_creates_never_undo_a_version_set_since() {
        let (link, peer) = link().await;
        let cluster = Cluster::default();
        let space = SPACE;
        let server = cluster.add_server(11, "127.0.0.1:9001".parse().unwrap(), space, link);
        let chunk = ChunkId(7);
        let (v1, v2) = (ChunkVersion(1), ChunkVersion(2));
        let versions = |cluster: &Cluster| -> Vec<u32> {
            cluster.copies(chunk).iter().map(|c| c.version.0).collect()
        };

        // A late report of the copy a write made does not lower a bump made since.
        cluster.set_copy(chunk, server, v2);
        cluster.add_copy_if_unknown(chunk, server, v1);
        assert_eq!(versions(&cluster), vec![2]);
        // Nor does a refused create of the first version remove it.
        cluster.remove_copy_at(chunk, server, v1);
        assert_eq!(versions(&cluster), vec![2]);

        // A copy the master had not heard of is counted, and a refused create removes it.
        cluster.forget_chunk(chunk);
        cluster.add_copy_if_unknown(chunk, server, v1);
        assert_eq!(versions(&cluster), vec![1]);
        cluster.remove_copy_at(chunk, server, v1);
        assert!(versions(&cluster).is_empty());
        peer.abort();
    }
}
