//! Which sessions have which files open: an unlinked file is purged only once nobody has it open.

use std::collections::HashMap;
use std::sync::Mutex;

use elkfs_proto::{InodeId, SessionId};

/// Open files by inode, with a count per session.
#[derive(Default)]
pub struct OpenFiles {
    open: Mutex<HashMap<InodeId, HashMap<SessionId, u32>>>,
}

impl OpenFiles {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<InodeId, HashMap<SessionId, u32>>> {
        self.open.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Records that `session` opened `inode`.
    pub fn open(&self, inode: InodeId, session: SessionId) {
        *self
            .lock()
            .entry(inode)
            .or_default()
            .entry(session)
            .or_default() += 1;
    }

    /// Records that `session` closed `inode`; returns whether nobody has it open any more.
    pub fn close(&self, inode: InodeId, session: SessionId) -> bool {
        let mut open = self.lock();
        let Some(sessions) = open.get_mut(&inode) else {
            return true;
        };
        if let Some(count) = sessions.get_mut(&session) {
            *count = count.saturating_sub(1);
            if *count == 0 {
                sessions.remove(&session);
            }
        }
        if sessions.is_empty() {
            open.remove(&inode);
            return true;
        }
        false
    }

    /// Whether any session has `inode` open.
    pub fn is_open(&self, inode: InodeId) -> bool {
        self.lock().contains_key(&inode)
    }

    /// Forgets every open file of a session that went away; returns the files nobody has open now.
    pub fn drop_session(&self, session: SessionId) -> Vec<InodeId> {
        let mut open = self.lock();
        let mut closed = Vec::new();
        open.retain(|inode, sessions| {
            if sessions.remove(&session).is_some() && sessions.is_empty() {
                closed.push(*inode);
                return false;
            }
            !sessions.is_empty()
        });
        closed
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_file_is_closed_when_every_session_closed_it() {
        let files = OpenFiles::default();
        let f = InodeId(9);
        files.open(f, SessionId(1));
        files.open(f, SessionId(1));
        files.open(f, SessionId(2));
        assert!(!files.close(f, SessionId(1)));
        assert!(!files.close(f, SessionId(1)));
        assert!(files.is_open(f));
        assert_eq!(files.drop_session(SessionId(2)), vec![f]);
        assert!(!files.is_open(f));
    }
}
