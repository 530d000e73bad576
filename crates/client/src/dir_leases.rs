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
//! A lease counts only on the connection it was granted on, and until a little before the
//! master's: both count from a grant or renewal, the client from when it sent the request, the
//! master from when it received it. The monotonic clock stands still while the machine is
//! suspended, so a lease also ends when the machine has been suspended since its term began. A
//! recall that arrives before the grant it recalls is kept, so the grant is refused when it
//! comes.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use elkfs_proto::InodeId;
use elkfs_proto::master::{DIR_LEASE, MasterReply, MasterRequest};
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

/// More time suspended than this since a lease's term began ends the lease (the two clocks are
/// read one after the other, so they never quite agree).
const SUSPEND_TOLERANCE: Duration = Duration::from_millis(100);

/// Which connection to the master a lease was granted on (a new one counts up).
pub type Generation = u64;

struct Lease {
    generation: Generation,
    until: Instant,
    /// How long the machine had been suspended when the term began.
    suspended: Duration,
    /// Names this client may have made, with the number of the last request that may have.
    names: HashMap<Vec<u8>, u64>,
    /// Used since the last renewal was asked for.
    used: bool,
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
    mkdirs_in_flight: usize,
    /// Names sent while a `Mkdir` was in flight, for the lease it may bring.
    aside: Vec<(InodeId, Vec<u8>)>,
    aside_overflowed: bool,
    /// Recalls of leases not (yet) known here, and when they came.
    early_recalls: HashMap<InodeId, Instant>,
}

/// The directory leases held by this client.
#[derive(Default)]
pub struct DirLeases {
    table: Mutex<Table>,
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
        let mut table = self.lock();
        table.next_request += 1;
        let number = table.next_request;
        if let MasterRequest::Mkdir { .. } = request {
            table.mkdirs_in_flight += 1;
        }
        let Some((dir, name)) = made_name(request) else {
            return number;
        };
        if table.mkdirs_in_flight > 0 {
            if table.aside.len() < MAX_ASIDE {
                table.aside.push((dir, name.to_vec()));
            } else {
                table.aside_overflowed = true;
            }
        }
        let Some(lease) = table.leases.get_mut(&dir) else {
            return number;
        };
        lease.names.insert(name.to_vec(), number);
        lease.used = true;
        if lease.names.len() > MAX_NAMES {
            table.leases.remove(&dir);
            table.returned.push(dir);
        }
        number
    }

    /// Takes in the answer to `request`, numbered `number` by [`DirLeases::before`] and sent
    /// at `sent` (when the machine had been `suspended` that long) on connection `generation`:
    /// a lease granted with a new directory, or a name removed.
    pub fn after(
        &self,
        request: &MasterRequest,
        number: u64,
        generation: Option<Generation>,
        (sent, suspended): (Instant, Duration),
        reply: &Result<MasterReply, elkfs_proto::Status>,
    ) {
        let mut table = self.lock();
        if let MasterRequest::Mkdir { .. } = request {
            if let (Ok(MasterReply::LeasedDir { attr, .. }), Some(generation)) = (reply, generation)
            {
                table.take_lease(attr.inode, generation, sent, suspended);
            }
            table.mkdirs_in_flight -= 1;
            if table.mkdirs_in_flight == 0 {
                table.aside.clear();
                table.aside_overflowed = false;
            }
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
    }

    /// Stops using leases the master recalled; they are given back with the next wait.
    pub fn recalled(&self, dirs: Vec<InodeId>) {
        let mut table = self.lock();
        let now = Instant::now();
        table
            .early_recalls
            .retain(|_, at| now.duration_since(*at) < DIR_LEASE);
        for &dir in &dirs {
            if table.leases.remove(&dir).is_none() {
                table.early_recalls.insert(dir, now);
            }
        }
        table.returned.extend(dirs);
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
        let mut table = self.lock();
        let now = Instant::now();
        let suspended = self::suspended();
        let over: Vec<InodeId> = table
            .leases
            .iter()
            .filter(|(_, l)| !l.runs(now, suspended))
            .map(|(dir, _)| *dir)
            .collect();
        for dir in &over {
            table.leases.remove(dir);
        }
        table.returned.extend(over);
        let renew = table
            .leases
            .iter_mut()
            .filter_map(|(dir, l)| std::mem::take(&mut l.used).then_some(*dir))
            .collect();
        Poll {
            returned: std::mem::take(&mut table.returned),
            renew,
        }
    }

    /// Puts back leases that could not be given back (the request failed).
    pub fn return_later(&self, dirs: Vec<InodeId>) {
        self.lock().returned.extend(dirs);
    }

    /// Stops using every lease (the connection they were granted on is gone); they are given
    /// back on the next one.
    pub fn forget_all(&self) {
        let mut table = self.lock();
        let dirs: Vec<InodeId> = table.leases.drain().map(|(dir, _)| dir).collect();
        table.returned.extend(dirs);
    }
}

impl Table {
    fn take_lease(
        &mut self,
        dir: InodeId,
        generation: Generation,
        sent: Instant,
        suspended: Duration,
    ) {
        let now = Instant::now();
        if self.leases.len() >= MAX_LEASES {
            self.leases.retain(|_, l| l.until > now);
        }
        let recalled = self.early_recalls.remove(&dir).is_some();
        if recalled || self.aside_overflowed || self.leases.len() >= MAX_LEASES {
            self.returned.push(dir);
            return;
        }
        let number = self.next_request;
        let names: HashMap<Vec<u8>, u64> = self
            .aside
            .iter()
            .filter(|(parent, _)| *parent == dir)
            .map(|(_, name)| (name.clone(), number))
            .collect();
        let lease = Lease {
            generation,
            until: sent + DIR_LEASE - MARGIN,
            suspended,
            names,
            used: true,
        };
        self.leases.insert(dir, lease);
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
}
