//! The directory leases this client holds (see the master's `dir_leases.rs`): for a directory
//! it made, the master lets it answer "no such name" itself until the lease is recalled or
//! runs out. Each lease keeps every name this client may have put in the directory since, so a
//! name not among them is known to be absent: a create there needs no lookup at the master.
//!
//! Names are added before the request that may make them is sent, and taken out only once an
//! unlink or rmdir has succeeded; so the set never misses a name that exists, whatever becomes
//! of a request. Names sent while a `Mkdir` is in flight are kept aside and go into the lease
//! if it comes back with one (a request may reach the directory before its grant reaches us).
//!
//! After a few names looked up in a directory turned out not to exist, the client also asks for
//! the lease on that directory ([`MasterRequest::LeaseDir`], sent in the background); the grant
//! comes with every name in it. The master does not refuse it for this client's own requests
//! still under way, so the names of those sent before the request are kept aside too, with
//! those sent while it is in flight, as for a `Mkdir`. A
//! directory whose lease was recalled or refused is not asked for again for a while, so two
//! clients working in one directory do not take the lease from each other on every change.
//!
//! A lease counts only on the connection it was granted on, and until a little before the
//! master's: both count from a grant or renewal, the client from when it sent the request, the
//! master from when it received it. The monotonic clock stands still while the machine is
//! suspended, so a lease also ends when the machine has been suspended since its term began. A
//! recall that arrives before the grant it recalls is kept, so the grant is refused when it
//! comes.

use std::collections::{HashMap, HashSet};
use std::sync::Mutex;
use std::time::Duration;

use elkfs_proto::InodeId;
use elkfs_proto::master::{DIR_LEASE, LEASE_HOLD_OFF, MasterReply, MasterRequest};
use tokio::sync::Notify;
use tokio::time::Instant;

/// How much earlier than the master a lease is taken to end here (clocks run at slightly
/// different rates).
const MARGIN: Duration = Duration::from_secs(1);

/// Most leases held; directories made past this are given back at once.
const MAX_LEASES: usize = 4096;

/// Most names kept for one directory; past this its lease is given back.
const MAX_NAMES: usize = 100_000;

/// Most names kept aside while directories are being made; past this, those get no lease.
const MAX_ASIDE: usize = 10_000;

/// Names found absent by the master in one directory before its lease is asked for.
const ABSENT_BEFORE_ASKING: u32 = 2;

/// Most leases asked for with `LeaseDir` held at once (each may hold thousands of names).
const MAX_LISTED: usize = 256;

/// Most directories whose absent names are counted, or that are waiting to be asked for.
const MAX_WATCHED: usize = 1024;

/// More time suspended than this since a lease's term began ends the lease (the two clocks are
/// read one after the other, so they never quite agree).
const SUSPEND_TOLERANCE: Duration = Duration::from_millis(100);

/// Which connection to the master a lease was granted on (a new one counts up).
pub type Generation = u64;

/// Names in a directory, each with the number of the last request of this client that may have
/// made it (for names the master listed, the number current when its list came).
type Names = HashMap<Vec<u8>, u64>;

struct Lease {
    generation: Generation,
    until: Instant,
    /// How long the machine had been suspended when the term began.
    suspended: Duration,
    /// Names this client may have made, or the master listed.
    names: Names,
    /// Used since the last renewal was asked for.
    used: bool,
    /// Asked for with `LeaseDir` (not brought by a `Mkdir`).
    listed: bool,
}

impl Lease {
    /// Whether its term still runs: not over, and not cut by a suspend.
    fn runs(&self, now: Instant, suspended: Duration) -> bool {
        self.until > now && suspended <= self.suspended + SUSPEND_TOLERANCE
    }

    fn current(&self, generation: Generation, now: Instant, suspended: Duration) -> bool {
        self.generation == generation && self.runs(now, suspended)
    }
}

/// How long this machine has been suspended since it started: the boot-time clock counts
/// suspended time, the monotonic clock does not.
pub fn suspended() -> Duration {
    fn read(clock: libc::clockid_t) -> Duration {
        let mut ts = libc::timespec {
            tv_sec: 0,
            tv_nsec: 0,
        };
        // SAFETY: `ts` is a valid timespec to write to; both clocks exist on every Linux.
        unsafe { libc::clock_gettime(clock, &mut ts) };
        Duration::new(
            ts.tv_sec.max(0) as u64,
            ts.tv_nsec.clamp(0, 999_999_999) as u32,
        )
    }
    read(libc::CLOCK_BOOTTIME).saturating_sub(read(libc::CLOCK_MONOTONIC))
}

#[derive(Default)]
struct Table {
    leases: HashMap<InodeId, Lease>,
    /// Numbers the requests that may make or remove names.
    next_request: u64,
    /// Leases to give back with the next wait for recalls.
    returned: Vec<InodeId>,
    /// Leases whose give-back is on its way (the wait that carries it is not answered yet).
    returning: HashSet<InodeId>,
    /// Requests in flight that may bring a lease (`Mkdir`, `LeaseDir`).
    grants_in_flight: usize,
    /// Names sent while such a request was in flight (or, for a `LeaseDir`, before it and not
    /// answered yet), for the lease it may bring.
    aside: Vec<(InodeId, Vec<u8>)>,
    /// The names of requests sent and not answered yet, by request number.
    in_flight: HashMap<u64, (InodeId, Vec<u8>)>,
    aside_overflowed: bool,
    /// Recalls of leases not (yet) known here, and when they came.
    early_recalls: HashMap<InodeId, Instant>,
    /// Directories without a lease where the master found names absent: how many, since when.
    absent: HashMap<InodeId, (u32, Instant)>,
    /// Directories whose lease is to be asked for.
    wanted: Vec<InodeId>,
    /// Directories whose lease is being asked for.
    asking: HashSet<InodeId>,
    /// Directories not to ask for until then.
    held_off: HashMap<InodeId, Instant>,
    /// The client is going away: no lease is taken any more.
    closed: bool,
}

/// The directory leases held by this client.
#[derive(Default)]
pub struct DirLeases {
    table: Mutex<Table>,
    /// Wakes [`DirLeases::wanted`] when a directory's lease is to be asked for.
    wants: Notify,
}

/// What to send with the next wait for recalls.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Poll {
    /// Leases given back.
    pub returned: Vec<InodeId>,
    /// Leases used since the last renewal.
    pub renew: Vec<InodeId>,
}

impl DirLeases {
    fn lock(&self) -> std::sync::MutexGuard<'_, Table> {
        self.table.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Whether `name` is known not to exist in `dir`: a lease on it granted on connection
    /// `generation` still runs, and this client has not put the name there.
    pub fn knows_absent(&self, generation: Generation, dir: InodeId, name: &[u8]) -> bool {
        let mut table = self.lock();
        let Some(lease) = table.leases.get_mut(&dir) else {
            return false;
        };
        let absent = lease.current(generation, Instant::now(), suspended())
            && !lease.names.contains_key(name);
        lease.used |= absent;
        absent
    }

    /// Notes the names `request` may make, before it is sent; returns the request's number,
    /// for [`DirLeases::after`].
    pub fn before(&self, request: &MasterRequest) -> u64 {
        // A lease given back here (with up to `MAX_NAMES` names) is dropped after the lock.
        let mut dropped = None;
        let mut table = self.lock();
        table.next_request += 1;
        let number = table.next_request;
        if let MasterRequest::Mkdir { .. } | MasterRequest::LeaseDir { .. } = request {
            table.grants_in_flight += 1;
        }
        if let MasterRequest::LeaseDir { dir } = request {
            let sent: Vec<(InodeId, Vec<u8>)> = table
                .in_flight
                .values()
                .filter(|(parent, _)| parent == dir)
                .cloned()
                .collect();
            for made in sent {
                table.put_aside(made);
            }
        }
        let Some((dir, name)) = made_name(request) else {
            return number;
        };
        table.in_flight.insert(number, (dir, name.to_vec()));
        if table.grants_in_flight > 0 {
            table.put_aside((dir, name.to_vec()));
        }
        let Some(lease) = table.leases.get_mut(&dir) else {
            return number;
        };
        lease.names.insert(name.to_vec(), number);
        lease.used = true;
        if lease.names.len() > MAX_NAMES {
            dropped = table.leases.remove(&dir);
            table.give_back(dir);
        }
        drop(table);
        drop(dropped);
        number
    }

    /// Takes in the answer to `request`, numbered `number` by [`DirLeases::before`] and sent
    /// at `sent` (when the machine had been `suspended` that long) on connection `generation`:
    /// a lease granted, a name removed, or a name found absent.
    pub fn after(
        &self,
        request: &MasterRequest,
        number: u64,
        generation: Option<Generation>,
        (sent, suspended): (Instant, Duration),
        reply: &Result<MasterReply, elkfs_proto::Status>,
    ) {
        // A listing may hold up to `MAX_NAMES` names: copied and hashed here, and dropped below
        // if unused, while other requests go on (every one takes the lock below).
        let listing: Option<Names> = match (request, reply, generation) {
            (MasterRequest::LeaseDir { .. }, Ok(MasterReply::LeasedNames(names)), Some(_))
                if names.len() <= MAX_NAMES =>
            {
                Some(names.iter().map(|name| (name.clone(), 0)).collect())
            }
            _ => None,
        };
        let mut unused = None;
        let mut table = self.lock();
        table.in_flight.remove(&number);
        match (request, reply, generation) {
            (MasterRequest::Mkdir { .. }, Ok(MasterReply::LeasedDir { attr, .. }), Some(g)) => {
                unused = table.take_lease(attr.inode, g, sent, suspended, None);
            }
            (MasterRequest::LeaseDir { dir }, Ok(MasterReply::LeasedNames(_)), Some(g)) => {
                match listing {
                    Some(listed) => {
                        unused = table.take_lease(*dir, g, sent, suspended, Some(listed));
                    }
                    None => {
                        // Too many names: refused, as `take_lease` would after merging them.
                        table.early_recalls.remove(dir);
                        unused = table.leases.remove(dir).map(|lease| lease.names);
                        table.give_back(*dir);
                    }
                }
            }
            (MasterRequest::LeaseDir { dir }, ..) => table.hold_off(*dir),
            _ => {}
        }
        table.grant_settled(request);
        if let Some(dir) = found_absent(request, reply)
            && table.absent_in(dir)
        {
            self.wants.notify_one();
        }
        if let (
            MasterRequest::Unlink { parent, name } | MasterRequest::Rmdir { parent, name },
            Ok(_),
        ) = (request, reply)
            && let Some(lease) = table.leases.get_mut(parent)
            && lease.names.get(name).is_some_and(|made| *made < number)
        {
            // No request that may have made the name again was sent after this one. (A make
            // sent earlier is taken to have been carried out earlier: the kernel holds the
            // directory's lock across each change of a name, so the two never overlap.)
            lease.names.remove(name);
        }
        drop(table);
        drop(unused);
    }

    /// Takes in a request whose caller stopped waiting for its answer: as a failure, except
    /// that the name it may still make stays among those sent and not answered (a `LeaseDir`
    /// keeps it aside).
    pub fn abandoned(&self, request: &MasterRequest) {
        let mut table = self.lock();
        if let MasterRequest::LeaseDir { dir } = request {
            table.hold_off(*dir);
        }
        table.grant_settled(request);
    }

    /// Stops using leases the master recalled; they are given back with the next wait.
    pub fn recalled(&self, dirs: Vec<InodeId>) {
        let mut dropped = Vec::new();
        let mut table = self.lock();
        let now = Instant::now();
        table
            .early_recalls
            .retain(|_, at| now.duration_since(*at) < DIR_LEASE);
        for &dir in &dirs {
            match table.leases.remove(&dir) {
                Some(lease) => dropped.push(lease),
                None => {
                    table.early_recalls.insert(dir, now);
                }
            }
            table.give_back(dir);
        }
        drop(table);
        drop(dropped);
    }

    /// Waits until a directory's lease is to be asked for (see [`DirLeases::next_wanted`]).
    pub async fn wanted(&self) {
        self.wants.notified().await;
    }

    /// The next directory whose lease to ask for, noted as being asked for; `None` when there
    /// is none.
    pub fn next_wanted(&self) -> Option<InodeId> {
        let mut table = self.lock();
        if table.closed {
            return None;
        }
        let dir = table.wanted.pop()?;
        table.asking.insert(dir);
        Some(dir)
    }

    /// Extends the leases the master renewed for a wait sent at `sent` on `generation` (a
    /// lease whose term a suspend cut is not current, so it is not extended).
    pub fn renewed(&self, dirs: &[InodeId], generation: Generation, sent: Instant) {
        let mut table = self.lock();
        let now = Instant::now();
        let suspended = self::suspended();
        for dir in dirs {
            if let Some(lease) = table.leases.get_mut(dir)
                && lease.current(generation, now, suspended)
            {
                lease.until = lease.until.max(sent + DIR_LEASE - MARGIN);
            }
        }
    }

    /// What the next wait for recalls gives back and renews; leases that ran out here (or
    /// whose term a suspend interrupted) are dropped and given back.
    pub fn next_poll(&self) -> Poll {
        let mut dropped = Vec::new();
        let mut table = self.lock();
        let now = Instant::now();
        let suspended = self::suspended();
        let over: Vec<InodeId> = table
            .leases
            .iter()
            .filter(|(_, l)| !l.runs(now, suspended))
            .map(|(dir, _)| *dir)
            .collect();
        for dir in over {
            dropped.extend(table.leases.remove(&dir));
            table.give_back(dir);
        }
        let renew = table
            .leases
            .iter_mut()
            .filter_map(|(dir, l)| std::mem::take(&mut l.used).then_some(*dir))
            .collect();
        let returned = std::mem::take(&mut table.returned);
        table.returning.extend(returned.iter().copied());
        drop(table);
        drop(dropped);
        Poll { returned, renew }
    }

    /// The wait that carried `dirs` back was answered: the master has them.
    pub fn gave_back(&self, dirs: &[InodeId]) {
        let mut table = self.lock();
        for dir in dirs {
            table.returning.remove(dir);
        }
    }

    /// Puts back leases that could not be given back (the request failed).
    pub fn return_later(&self, dirs: Vec<InodeId>) {
        let mut table = self.lock();
        for dir in dirs {
            table.returning.remove(&dir);
            table.give_back(dir);
        }
    }

    /// Stops using every lease for good (the client is going away), and takes no new one; they
    /// are given back with the next wait for recalls.
    pub fn close(&self) {
        self.lock().closed = true;
        self.forget_all();
    }

    /// Stops using every lease (the connection they were granted on is gone); they are given
    /// back with the next wait for recalls.
    pub fn forget_all(&self) {
        let mut table = self.lock();
        let dropped = std::mem::take(&mut table.leases);
        for dir in dropped.keys() {
            table.give_back(*dir);
        }
        drop(table);
        drop(dropped);
    }
}

impl Table {
    /// Ends the bookkeeping of a request that may have brought a lease.
    fn grant_settled(&mut self, request: &MasterRequest) {
        if let MasterRequest::LeaseDir { dir } = request {
            self.asking.remove(dir);
        }
        if let MasterRequest::Mkdir { .. } | MasterRequest::LeaseDir { .. } = request {
            self.grants_in_flight -= 1;
            if self.grants_in_flight == 0 {
                self.aside.clear();
                self.aside_overflowed = false;
            }
        }
    }

    /// Queues a lease no longer used to be given back, and does not ask for it again for a
    /// while: a new grant must not meet the give-back of the old one at the master.
    fn give_back(&mut self, dir: InodeId) {
        if !self.returned.contains(&dir) {
            self.returned.push(dir);
        }
        self.hold_off(dir);
    }

    fn hold_off(&mut self, dir: InodeId) {
        let now = Instant::now();
        if self.held_off.len() >= MAX_WATCHED {
            self.held_off.retain(|_, until| *until > now);
        }
        self.held_off.insert(dir, now + LEASE_HOLD_OFF);
    }

    /// Whether a give-back of a lease on `dir` is queued or on its way.
    fn giving_back(&self, dir: InodeId) -> bool {
        self.returned.contains(&dir) || self.returning.contains(&dir)
    }

    /// Whether this client holds as many leases asked for with `LeaseDir` as it may.
    fn listed_in_full(&self) -> bool {
        self.leases.values().filter(|l| l.listed).count() >= MAX_LISTED
    }

    fn put_aside(&mut self, made: (InodeId, Vec<u8>)) {
        if self.aside.len() < MAX_ASIDE {
            self.aside.push(made);
        } else {
            self.aside_overflowed = true;
        }
    }

    /// Counts a name the master found absent from `dir`; true when the directory's lease is
    /// now to be asked for.
    fn absent_in(&mut self, dir: InodeId) -> bool {
        let now = Instant::now();
        let busy = self.closed
            || self.leases.contains_key(&dir)
            || self.asking.contains(&dir)
            || self.wanted.contains(&dir)
            || self.giving_back(dir)
            || self.held_off.get(&dir).is_some_and(|until| *until > now)
            || self.listed_in_full();
        if busy {
            return false;
        }
        if self.absent.len() >= MAX_WATCHED {
            self.absent
                .retain(|_, (_, since)| now.duration_since(*since) < DIR_LEASE);
            if self.absent.len() >= MAX_WATCHED {
                self.absent.clear();
            }
        }
        let seen = self.absent.entry(dir).or_insert((0, now));
        if now.duration_since(seen.1) >= DIR_LEASE {
            *seen = (0, now);
        }
        seen.0 += 1;
        if seen.0 < ABSENT_BEFORE_ASKING || self.wanted.len() >= MAX_WATCHED {
            return false;
        }
        self.absent.remove(&dir);
        self.wanted.push(dir);
        true
    }

    /// Takes the lease granted on `dir`, with the names the master `listed` (values unset) if
    /// it was asked for with `LeaseDir`. Returns the names left unused, for the caller to drop
    /// once the lock is released.
    fn take_lease(
        &mut self,
        dir: InodeId,
        generation: Generation,
        sent: Instant,
        suspended: Duration,
        listed: Option<Names>,
    ) -> Option<Names> {
        let now = Instant::now();
        if self.leases.len() >= MAX_LEASES {
            self.leases.retain(|_, l| l.until > now);
        }
        // A give-back of an earlier lease on it may still reach the master after this grant (an
        // inode number a crashed master handed out again).
        let recalled = self.early_recalls.remove(&dir).is_some() || self.giving_back(dir);
        let asked = listed.is_some();
        if recalled
            || self.closed
            || self.aside_overflowed
            || self.leases.len() >= MAX_LEASES
            || (asked && self.listed_in_full())
        {
            self.give_back(dir);
            return listed;
        }
        let number = self.next_request;
        let mut names = listed.unwrap_or_default();
        names.values_mut().for_each(|made| *made = number);
        for (_, name) in self.aside.iter().filter(|(parent, _)| *parent == dir) {
            names.insert(name.clone(), number);
        }
        if let Some(held) = self.leases.get_mut(&dir) {
            names = keep_held(std::mem::take(&mut held.names), names);
        }
        if names.len() > MAX_NAMES {
            self.leases.remove(&dir);
            self.give_back(dir);
            return Some(names);
        }
        let lease = Lease {
            generation,
            until: sent + DIR_LEASE - MARGIN,
            suspended,
            names,
            used: true,
            listed: asked,
        };
        self.leases.insert(dir, lease);
        None
    }
}

/// `held` and `new` names together, with `held`'s number where both have a name; the larger
/// map is kept and the smaller one moved into it.
fn keep_held(mut held: Names, mut new: Names) -> Names {
    if held.len() >= new.len() {
        for (name, made) in new {
            held.entry(name).or_insert(made);
        }
        held
    } else {
        new.extend(held);
        new
    }
}

/// The directory where the master found the name `request` looked up absent.
fn found_absent(
    request: &MasterRequest,
    reply: &Result<MasterReply, elkfs_proto::Status>,
) -> Option<InodeId> {
    match (request, reply) {
        (MasterRequest::Lookup { parent, .. }, Err(elkfs_proto::Status::NotFound)) => Some(*parent),
        (MasterRequest::LookupAhead { parent, name, .. }, Ok(MasterReply::EntriesPlus(found)))
            if found.first().is_none_or(|e| e.entry.name != *name) =>
        {
            Some(*parent)
        }
        _ => None,
    }
}

/// The directory and name a request may add.
fn made_name(request: &MasterRequest) -> Option<(InodeId, &[u8])> {
    match request {
        MasterRequest::Mknod { parent, name, .. }
        | MasterRequest::Mkdir { parent, name, .. }
        | MasterRequest::Symlink { parent, name, .. }
        | MasterRequest::Link { parent, name, .. }
        | MasterRequest::Snapshot { parent, name, .. }
        | MasterRequest::Rename {
            new_parent: parent,
            new_name: name,
            ..
        } => Some((*parent, name)),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use elkfs_proto::Status;
    use elkfs_proto::types::{Attr, Caller, FileKind};

    const GENERATION: Generation = 7;
    const PARENT: InodeId = InodeId(1);
    const DIR: InodeId = InodeId(20);

    fn dir_attr(inode: InodeId) -> Attr {
        crate::test_attrs::dir(inode.0, 0)
    }

    fn now() -> (Instant, Duration) {
        (Instant::now(), suspended())
    }

    fn mkdir() -> MasterRequest {
        MasterRequest::Mkdir {
            parent: PARENT,
            name: b"d".to_vec(),
            mode: 0o755,
            umask: 0,
            caller: Caller { uid: 0, gid: 0 },
        }
    }

    fn leased_dir() -> Result<MasterReply, Status> {
        Ok(MasterReply::LeasedDir {
            attr: dir_attr(DIR),
            parent: dir_attr(PARENT),
        })
    }

    fn create(name: &[u8]) -> MasterRequest {
        MasterRequest::Mknod {
            parent: DIR,
            name: name.to_vec(),
            kind: FileKind::File,
            mode: 0o644,
            umask: 0,
            rdev: 0,
            caller: Caller { uid: 0, gid: 0 },
            open: true,
        }
    }

    fn unlink(name: &[u8]) -> MasterRequest {
        MasterRequest::Unlink {
            parent: DIR,
            name: name.to_vec(),
        }
    }

    fn made(inode: u64) -> Result<MasterReply, Status> {
        Ok(MasterReply::Entry {
            attr: dir_attr(InodeId(inode)),
            parent: dir_attr(DIR),
        })
    }

    fn removed() -> Result<MasterReply, Status> {
        Ok(MasterReply::Removed {
            parent: dir_attr(DIR),
        })
    }

    /// Sends `request` and takes in `reply` at once.
    fn answered(leases: &DirLeases, request: &MasterRequest, reply: Result<MasterReply, Status>) {
        let number = leases.before(request);
        leases.after(request, number, Some(GENERATION), now(), &reply);
    }

    fn leased() -> DirLeases {
        let leases = DirLeases::default();
        answered(&leases, &mkdir(), leased_dir());
        leases
    }

    fn lookup(name: &[u8]) -> MasterRequest {
        MasterRequest::Lookup {
            parent: DIR,
            name: name.to_vec(),
        }
    }

    fn lease_dir() -> MasterRequest {
        MasterRequest::LeaseDir { dir: DIR }
    }

    fn listed(names: &[&[u8]]) -> Result<MasterReply, Status> {
        Ok(MasterReply::LeasedNames(
            names.iter().map(|n| n.to_vec()).collect(),
        ))
    }

    /// Two names looked up in `DIR` found absent by the master.
    fn two_absent(leases: &DirLeases) {
        answered(leases, &lookup(b"a"), Err(Status::NotFound));
        answered(leases, &lookup(b"b"), Err(Status::NotFound));
    }

    #[test]
    fn names_found_absent_make_a_directorys_lease_wanted_once() {
        let leases = DirLeases::default();
        answered(&leases, &lookup(b"a"), Err(Status::NotFound));
        answered(&leases, &lookup(b"here"), made(30));
        assert_eq!(leases.next_wanted(), None, "one absent name is not enough");
        answered(&leases, &lookup(b"b"), Err(Status::NotFound));
        assert_eq!(leases.next_wanted(), Some(DIR));
        two_absent(&leases);
        assert_eq!(leases.next_wanted(), None, "already being asked for");
    }

    #[test]
    fn a_listed_lease_holds_the_names_listed_and_those_this_client_sent() {
        let leases = DirLeases::default();
        let before = leases.before(&create(b"sent before"));
        let number = leases.before(&lease_dir());
        let during = leases.before(&create(b"sent during"));
        leases.after(
            &lease_dir(),
            number,
            Some(GENERATION),
            now(),
            &listed(&[b"listed"]),
        );
        for name in [&b"listed"[..], b"sent before", b"sent during"] {
            assert!(
                !leases.knows_absent(GENERATION, DIR, name),
                "{}",
                String::from_utf8_lossy(name)
            );
        }
        assert!(leases.knows_absent(GENERATION, DIR, b"other"));
        leases.after(&create(b"sent before"), before, None, now(), &made(31));
        leases.after(&create(b"sent during"), during, None, now(), &made(32));
        assert!(!leases.knows_absent(GENERATION, DIR, b"sent before"));
    }

    #[test]
    fn a_name_answered_before_the_lease_was_asked_for_is_not_kept_aside() {
        let leases = DirLeases::default();
        answered(&leases, &create(b"done"), made(31));
        answered(&leases, &lease_dir(), listed(&[]));
        assert!(
            leases.knows_absent(GENERATION, DIR, b"done"),
            "the master's list is the whole truth for answered requests"
        );
    }

    #[test]
    fn a_refused_or_recalled_directory_is_not_asked_for_again_for_a_while() {
        let leases = DirLeases::default();
        answered(&leases, &lease_dir(), Ok(MasterReply::Done));
        two_absent(&leases);
        assert_eq!(leases.next_wanted(), None, "refused");

        let leases = DirLeases::default();
        answered(&leases, &lease_dir(), listed(&[]));
        leases.recalled(vec![DIR]);
        two_absent(&leases);
        assert_eq!(leases.next_wanted(), None, "recalled");
    }

    #[test]
    fn a_lease_is_not_asked_for_again_before_its_give_back_reached_the_master() {
        let leases = DirLeases::default();
        answered(&leases, &lease_dir(), listed(&[]));
        leases.forget_all();
        let poll = leases.next_poll();
        assert_eq!(poll.returned, vec![DIR]);
        leases.lock().held_off.clear();
        two_absent(&leases);
        assert_eq!(leases.next_wanted(), None, "its give-back is on its way");
        leases.gave_back(&poll.returned);
        two_absent(&leases);
        assert_eq!(leases.next_wanted(), Some(DIR));
    }

    #[test]
    fn the_name_of_an_abandoned_request_is_kept_aside_for_a_later_lease() {
        let leases = DirLeases::default();
        leases.before(&create(b"maybe"));
        leases.abandoned(&create(b"maybe"));
        answered(&leases, &lease_dir(), listed(&[]));
        assert!(!leases.knows_absent(GENERATION, DIR, b"maybe"));
        assert!(leases.knows_absent(GENERATION, DIR, b"other"));
    }

    #[test]
    fn a_closed_client_gives_back_every_lease_and_takes_no_new_one() {
        let leases = leased();
        let number = leases.before(&lease_dir());
        leases.close();
        leases.after(&lease_dir(), number, Some(GENERATION), now(), &listed(&[]));
        answered(&leases, &mkdir(), leased_dir());
        assert!(!leases.knows_absent(GENERATION, DIR, b"x"));
        assert_eq!(leases.next_poll().returned, vec![DIR]);
        let elsewhere = InodeId(30);
        for name in [&b"a"[..], b"b"] {
            let lookup = MasterRequest::Lookup {
                parent: elsewhere,
                name: name.to_vec(),
            };
            answered(&leases, &lookup, Err(Status::NotFound));
        }
        assert_eq!(leases.next_wanted(), None);
    }

    #[test]
    fn a_lease_granted_while_a_give_back_of_the_same_directory_is_queued_is_not_taken() {
        let leases = leased();
        leases.forget_all();
        answered(&leases, &mkdir(), leased_dir());
        assert!(
            !leases.knows_absent(GENERATION, DIR, b"x"),
            "the queued give-back would end it at the master"
        );
    }

    #[test]
    fn a_lease_request_that_failed_leaves_nothing_counted() {
        let leases = DirLeases::default();
        let number = leases.before(&lease_dir());
        let made = leases.before(&create(b"x"));
        leases.after(&lease_dir(), number, None, now(), &Err(Status::Io));
        leases.after(&create(b"x"), made, None, now(), &Err(Status::Io));
        let table = leases.lock();
        assert_eq!(table.grants_in_flight, 0);
        assert!(table.aside.is_empty() && table.in_flight.is_empty() && table.asking.is_empty());
    }

    #[test]
    fn a_made_directory_with_a_lease_knows_its_names_absent() {
        let leases = leased();
        assert!(leases.knows_absent(GENERATION, DIR, b"x"));
        assert!(
            !leases.knows_absent(GENERATION + 1, DIR, b"x"),
            "another connection"
        );
        assert!(
            !leases.knows_absent(GENERATION, PARENT, b"x"),
            "no lease there"
        );
    }

    #[test]
    fn a_directory_made_without_a_lease_knows_nothing() {
        let leases = DirLeases::default();
        answered(&leases, &mkdir(), made(20));
        assert!(!leases.knows_absent(GENERATION, DIR, b"x"));
    }

    #[test]
    fn a_name_being_made_is_no_longer_known_absent_whatever_the_answer() {
        let leases = leased();
        let number = leases.before(&create(b"x"));
        assert!(!leases.knows_absent(GENERATION, DIR, b"x"));
        leases.after(&create(b"x"), number, None, now(), &Err(Status::Io));
        assert!(!leases.knows_absent(GENERATION, DIR, b"x"));
        assert!(leases.knows_absent(GENERATION, DIR, b"y"));
    }

    #[test]
    fn a_name_sent_while_its_directory_was_being_made_goes_into_the_lease() {
        let leases = DirLeases::default();
        let number = leases.before(&mkdir());
        leases.before(&create(b"early"));
        leases.after(&mkdir(), number, Some(GENERATION), now(), &leased_dir());
        assert!(!leases.knows_absent(GENERATION, DIR, b"early"));
        assert!(leases.knows_absent(GENERATION, DIR, b"other"));
    }

    #[test]
    fn a_name_is_absent_again_only_after_its_unlink_succeeded() {
        let leases = leased();
        answered(&leases, &create(b"x"), made(30));
        answered(&leases, &unlink(b"x"), Err(Status::Io));
        assert!(!leases.knows_absent(GENERATION, DIR, b"x"));
        answered(&leases, &unlink(b"x"), removed());
        assert!(leases.knows_absent(GENERATION, DIR, b"x"));
    }

    #[test]
    fn an_unlink_answered_after_the_name_was_made_again_keeps_it() {
        let leases = leased();
        answered(&leases, &create(b"x"), made(30));
        let unlinking = leases.before(&unlink(b"x"));
        answered(&leases, &create(b"x"), made(31));
        leases.after(
            &unlink(b"x"),
            unlinking,
            Some(GENERATION),
            now(),
            &removed(),
        );
        assert!(!leases.knows_absent(GENERATION, DIR, b"x"));
    }

    #[test]
    fn a_rename_or_snapshot_into_the_directory_makes_its_new_name_unknown() {
        let leases = leased();
        leases.before(&MasterRequest::Rename {
            parent: PARENT,
            name: b"a".to_vec(),
            new_parent: DIR,
            new_name: b"b".to_vec(),
            flags: 0,
        });
        leases.before(&MasterRequest::Snapshot {
            source: PARENT,
            parent: DIR,
            name: b"copy".to_vec(),
            caller: Caller { uid: 0, gid: 0 },
        });
        assert!(!leases.knows_absent(GENERATION, DIR, b"b"));
        assert!(!leases.knows_absent(GENERATION, DIR, b"copy"));
    }

    #[tokio::test(start_paused = true)]
    async fn a_lease_that_ran_out_is_given_back() {
        let leases = leased();
        tokio::time::sleep(DIR_LEASE).await;
        let poll = leases.next_poll();
        assert_eq!(poll.returned, vec![DIR]);
        assert!(poll.renew.is_empty());
    }

    #[test]
    fn a_recalled_lease_knows_nothing_and_is_given_back_once() {
        let leases = leased();
        leases.recalled(vec![DIR]);
        assert!(!leases.knows_absent(GENERATION, DIR, b"x"));
        assert_eq!(leases.next_poll().returned, vec![DIR]);
        assert!(leases.next_poll().returned.is_empty());
    }

    #[test]
    fn a_recall_that_comes_before_its_grant_refuses_the_grant() {
        let leases = DirLeases::default();
        let number = leases.before(&mkdir());
        leases.recalled(vec![DIR]);
        leases.after(&mkdir(), number, Some(GENERATION), now(), &leased_dir());
        assert!(!leases.knows_absent(GENERATION, DIR, b"x"));
    }

    #[test]
    fn a_new_connection_gives_every_lease_back() {
        let leases = leased();
        leases.forget_all();
        assert!(!leases.knows_absent(GENERATION, DIR, b"x"));
        assert_eq!(leases.next_poll().returned, vec![DIR]);
    }

    #[test]
    fn a_lease_whose_term_began_before_a_suspend_is_over() {
        let sent = Instant::now();
        let lease = Lease {
            generation: GENERATION,
            until: sent + DIR_LEASE,
            suspended: Duration::from_secs(5),
            names: HashMap::new(),
            used: false,
            listed: false,
        };
        assert!(lease.current(GENERATION, sent, Duration::from_secs(5)));
        assert!(
            !lease.current(GENERATION, sent, Duration::from_secs(6)),
            "suspended 1 s since"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_lease_ends_before_the_masters_unless_the_master_renewed_it() {
        let leases = leased();
        assert_eq!(leases.next_poll().renew, vec![DIR], "just made, so in use");
        assert!(leases.next_poll().renew.is_empty(), "not used since");
        tokio::time::sleep(DIR_LEASE - MARGIN - Duration::from_millis(10)).await;
        assert!(leases.knows_absent(GENERATION, DIR, b"x"));
        let sent = Instant::now();
        assert_eq!(leases.next_poll().renew, vec![DIR]);
        leases.renewed(&[DIR], GENERATION, sent);
        tokio::time::sleep(Duration::from_secs(5)).await;
        assert!(leases.knows_absent(GENERATION, DIR, b"x"), "not renewed");
        tokio::time::sleep(DIR_LEASE).await;
        assert!(
            !leases.knows_absent(GENERATION, DIR, b"x"),
            "outlived the master's lease"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn changes_in_the_directory_alone_do_not_renew_its_lease() {
        let leases = leased();
        tokio::time::sleep(DIR_LEASE / 2).await;
        answered(&leases, &create(b"y"), made(30));
        tokio::time::sleep(DIR_LEASE / 2).await;
        assert!(!leases.knows_absent(GENERATION, DIR, b"x"));
    }

    #[test]
    fn a_directory_with_too_many_names_gives_its_lease_back() {
        let leases = leased();
        for i in 0..=MAX_NAMES {
            leases.before(&create(format!("f{i}").as_bytes()));
        }
        assert!(!leases.knows_absent(GENERATION, DIR, b"x"));
        assert_eq!(leases.next_poll().returned, vec![DIR]);
    }

    #[test]
    fn a_listing_of_too_many_names_is_given_back_and_ends_a_lease_held() {
        let leases = leased();
        let names: Vec<Vec<u8>> = (0..=MAX_NAMES)
            .map(|i| format!("f{i}").into_bytes())
            .collect();
        answered(&leases, &lease_dir(), Ok(MasterReply::LeasedNames(names)));
        assert!(!leases.knows_absent(GENERATION, DIR, b"x"));
        assert_eq!(leases.next_poll().returned, vec![DIR]);
    }

    #[test]
    fn names_held_keep_their_numbers_whichever_map_is_larger() {
        let names = |pairs: &[(&[u8], u64)]| -> Names {
            pairs.iter().map(|(n, made)| (n.to_vec(), *made)).collect()
        };
        let held = names(&[(b"a", 5), (b"b", 6), (b"c", 7)]);
        let new = names(&[(b"a", 9), (b"d", 9)]);
        let want = names(&[(b"a", 5), (b"b", 6), (b"c", 7), (b"d", 9)]);
        assert_eq!(keep_held(held.clone(), new.clone()), want);
        let held = names(&[(b"a", 5)]);
        let want = names(&[(b"a", 5), (b"d", 9)]);
        assert_eq!(keep_held(held, new), want);
    }

    #[test]
    fn a_recall_before_a_grant_of_too_many_names_does_not_refuse_a_later_grant() {
        let leases = DirLeases::default();
        let number = leases.before(&lease_dir());
        leases.recalled(vec![DIR]);
        let names: Vec<Vec<u8>> = (0..=MAX_NAMES)
            .map(|i| format!("f{i}").into_bytes())
            .collect();
        let reply = Ok(MasterReply::LeasedNames(names));
        leases.after(&lease_dir(), number, Some(GENERATION), now(), &reply);
        // The give-back went through, and the hold-off is over.
        let poll = leases.next_poll();
        leases.gave_back(&poll.returned);
        leases.lock().held_off.clear();
        answered(&leases, &lease_dir(), listed(&[]));
        assert!(
            leases.knows_absent(GENERATION, DIR, b"x"),
            "the recall was spent"
        );
    }
}
