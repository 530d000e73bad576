//! The directory leases this client holds (see the master's `dir_leases.rs`): for a directory
//! it made, the master lets it answer "no such name" itself until the lease is recalled or
//! runs out. Each lease keeps every name this client may have put in the directory since, so a
//! name not among them is known to be absent: a create there needs no lookup at the master.
//!
//! Names are added before the request that may make them is sent, and taken out only once an
//! unlink or rmdir has succeeded; so the set never misses a name that exists, whatever becomes
//! of a request. A lease counts only on the session it was granted to, and ends a little before
//! the master's, which starts later (when the master made the directory).

use std::collections::{HashMap, HashSet};
use std::sync::Mutex;
use std::time::Duration;

use elkfs_proto::master::{DIR_LEASE, MasterReply, MasterRequest, NameChanges};
use elkfs_proto::{InodeId, SessionId, Status};
use tokio::time::Instant;

/// How much earlier than the master a lease is taken to end here (clocks run at slightly
/// different rates).
const MARGIN: Duration = Duration::from_secs(1);

/// Most leases held; directories made past this are given back at once.
const MAX_LEASES: usize = 4096;

/// Most names kept for one directory; past this its lease is given back.
const MAX_NAMES: usize = 100_000;

struct Lease {
    session: SessionId,
    until: Instant,
    names: HashSet<Vec<u8>>,
}

#[derive(Default)]
struct Table {
    leases: HashMap<InodeId, Lease>,
    /// Leases to give back with the next wait for recalls.
    returned: Vec<InodeId>,
}

/// The directory leases held by this client.
#[derive(Default)]
pub struct DirLeases {
    table: Mutex<Table>,
}

impl DirLeases {
    fn lock(&self) -> std::sync::MutexGuard<'_, Table> {
        self.table.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Whether `name` is known not to exist in `dir`: a lease on it granted to `session`
    /// still runs, and this client has not put the name there.
    pub fn knows_absent(&self, session: SessionId, dir: InodeId, name: &[u8]) -> bool {
        self.lock().leases.get(&dir).is_some_and(|l| {
            l.session == session && l.until > Instant::now() && !l.names.contains(name)
        })
    }

    /// Notes the names `request` may make, before it is sent.
    pub fn before(&self, request: &MasterRequest) {
        let (dir, name) = match request {
            MasterRequest::Mknod { parent, name, .. }
            | MasterRequest::Mkdir { parent, name, .. }
            | MasterRequest::Symlink { parent, name, .. }
            | MasterRequest::Link { parent, name, .. } => (parent, name),
            MasterRequest::Rename {
                new_parent,
                new_name,
                ..
            } => (new_parent, new_name),
            _ => return,
        };
        let mut table = self.lock();
        let Some(lease) = table.leases.get_mut(dir) else {
            return;
        };
        lease.names.insert(name.clone());
        if lease.names.len() > MAX_NAMES {
            table.leases.remove(dir);
            table.returned.push(*dir);
        }
    }

    /// Takes in the answer to `request`, sent at `sent` on `session`: a lease granted with a
    /// new directory, a name removed, and leases the master renewed.
    pub fn after(
        &self,
        request: &MasterRequest,
        session: Option<SessionId>,
        sent: Instant,
        reply: &Result<MasterReply, Status>,
    ) {
        let (Ok(reply), Some(session)) = (reply, session) else {
            return;
        };
        let mut table = self.lock();
        let until = sent + DIR_LEASE - MARGIN;
        if let MasterReply::LeasedDir { attr, .. } = reply {
            if table.leases.len() < MAX_LEASES {
                let names = HashSet::new();
                let lease = Lease {
                    session,
                    until,
                    names,
                };
                table.leases.insert(attr.inode, lease);
            } else {
                table.returned.push(attr.inode);
            }
        }
        if let MasterRequest::Unlink { parent, name } | MasterRequest::Rmdir { parent, name } =
            request
            && let Some(lease) = table.leases.get_mut(parent)
        {
            lease.names.remove(name);
        }
        if let NameChanges::In(dirs) = request.name_changes() {
            let now = Instant::now();
            for dir in dirs {
                if let Some(lease) = table.leases.get_mut(&dir)
                    && lease.session == session
                    && lease.until > now
                {
                    lease.until = lease.until.max(until);
                }
            }
        }
    }

    /// Stops using leases the master recalled; they are given back with the next wait.
    pub fn recalled(&self, dirs: Vec<InodeId>) {
        let mut table = self.lock();
        for dir in &dirs {
            table.leases.remove(dir);
        }
        table.returned.extend(dirs);
    }

    /// The leases to give back now.
    pub fn take_returned(&self) -> Vec<InodeId> {
        std::mem::take(&mut self.lock().returned)
    }

    /// Puts back leases that could not be given back (the request failed).
    pub fn return_later(&self, dirs: Vec<InodeId>) {
        self.lock().returned.extend(dirs);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use elkfs_proto::types::{Attr, Caller, FileKind, Timestamp};

    const SESSION: SessionId = SessionId(7);
    const PARENT: InodeId = InodeId(1);
    const DIR: InodeId = InodeId(20);

    fn dir_attr(inode: InodeId) -> Attr {
        let t = Timestamp { secs: 1, nanos: 0 };
        Attr {
            inode,
            kind: FileKind::Dir,
            mode: 0o755,
            nlink: 2,
            uid: 0,
            gid: 0,
            size: 0,
            atime: t,
            mtime: t,
            ctime: t,
            rdev: 0,
            goal: 2,
            trash_time: 0,
            eattrs: 0,
        }
    }

    fn mkdir(parent: InodeId, name: &[u8]) -> MasterRequest {
        MasterRequest::Mkdir {
            parent,
            name: name.to_vec(),
            mode: 0o755,
            umask: 0,
            caller: Caller { uid: 0, gid: 0 },
        }
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

    fn leased() -> DirLeases {
        let leases = DirLeases::default();
        let reply = Ok(MasterReply::LeasedDir {
            attr: dir_attr(DIR),
            parent: dir_attr(PARENT),
        });
        leases.after(&mkdir(PARENT, b"d"), Some(SESSION), Instant::now(), &reply);
        leases
    }

    #[test]
    fn a_made_directory_with_a_lease_knows_its_names_absent() {
        let leases = leased();
        assert!(leases.knows_absent(SESSION, DIR, b"x"));
        assert!(
            !leases.knows_absent(SessionId(8), DIR, b"x"),
            "another session"
        );
        assert!(
            !leases.knows_absent(SESSION, PARENT, b"x"),
            "a directory without lease"
        );
    }

    #[test]
    fn a_directory_made_without_a_lease_knows_nothing() {
        let leases = DirLeases::default();
        let reply = Ok(MasterReply::Entry {
            attr: dir_attr(DIR),
            parent: dir_attr(PARENT),
        });
        leases.after(&mkdir(PARENT, b"d"), Some(SESSION), Instant::now(), &reply);
        assert!(!leases.knows_absent(SESSION, DIR, b"x"));
    }

    #[test]
    fn a_name_being_made_is_no_longer_known_absent_whatever_the_answer() {
        let leases = leased();
        leases.before(&create(b"x"));
        assert!(!leases.knows_absent(SESSION, DIR, b"x"));
        leases.after(
            &create(b"x"),
            Some(SESSION),
            Instant::now(),
            &Err(Status::Io),
        );
        assert!(!leases.knows_absent(SESSION, DIR, b"x"));
        assert!(leases.knows_absent(SESSION, DIR, b"y"));
    }

    #[test]
    fn a_name_is_absent_again_only_after_its_unlink_succeeded() {
        let leases = leased();
        leases.before(&create(b"x"));
        let unlink = MasterRequest::Unlink {
            parent: DIR,
            name: b"x".to_vec(),
        };
        leases.after(&unlink, Some(SESSION), Instant::now(), &Err(Status::Io));
        assert!(!leases.knows_absent(SESSION, DIR, b"x"));
        let removed = Ok(MasterReply::Removed {
            parent: dir_attr(DIR),
        });
        leases.after(&unlink, Some(SESSION), Instant::now(), &removed);
        assert!(leases.knows_absent(SESSION, DIR, b"x"));
    }

    #[test]
    fn a_rename_into_the_directory_makes_its_new_name_unknown() {
        let leases = leased();
        leases.before(&MasterRequest::Rename {
            parent: PARENT,
            name: b"a".to_vec(),
            new_parent: DIR,
            new_name: b"b".to_vec(),
            flags: 0,
        });
        assert!(!leases.knows_absent(SESSION, DIR, b"b"));
    }

    #[test]
    fn a_recalled_lease_knows_nothing_and_is_given_back_once() {
        let leases = leased();
        leases.recalled(vec![DIR]);
        assert!(!leases.knows_absent(SESSION, DIR, b"x"));
        assert_eq!(leases.take_returned(), vec![DIR]);
        assert!(leases.take_returned().is_empty());
    }

    #[tokio::test(start_paused = true)]
    async fn a_lease_ends_before_the_masters_unless_renewed_by_a_change_in_it() {
        let leases = leased();
        tokio::time::sleep(DIR_LEASE - MARGIN - Duration::from_millis(10)).await;
        assert!(leases.knows_absent(SESSION, DIR, b"x"));
        let sent = Instant::now();
        leases.before(&create(b"y"));
        let made = Ok(MasterReply::Entry {
            attr: dir_attr(InodeId(30)),
            parent: dir_attr(DIR),
        });
        leases.after(&create(b"y"), Some(SESSION), sent, &made);
        tokio::time::sleep(Duration::from_secs(5)).await;
        assert!(leases.knows_absent(SESSION, DIR, b"x"), "not renewed");
        tokio::time::sleep(DIR_LEASE).await;
        assert!(
            !leases.knows_absent(SESSION, DIR, b"x"),
            "outlived the master's lease"
        );
    }

    #[test]
    fn a_directory_with_too_many_names_gives_its_lease_back() {
        let leases = leased();
        for i in 0..=MAX_NAMES {
            leases.before(&create(format!("f{i}").as_bytes()));
        }
        assert!(!leases.knows_absent(SESSION, DIR, b"x"));
        assert_eq!(leases.take_returned(), vec![DIR]);
    }
}
