//! The clients that hold locks, remembered on disk so that a restarted master gives them time
//! to take their locks back before anybody else can take a conflicting one.
//!
//! A restarted master knows no lock. Its clients claim theirs when they reconnect
//! (`ReclaimLocks`), but a mount that reconnected first could meanwhile take a lock that
//! conflicts with one still held by a process on a mount not back yet, which would then go on
//! as if it held it. So the master writes down (`lock-holders` in its data directory) every
//! client that was granted a lock, before answering the grant, and crosses a client off once
//! its last session is gone. After a restart, for as long as a client of that list has not
//! made its last claim, and at most `lock_grace_secs` ([`DEFAULT_LOCK_GRACE`]), new locks and
//! lock tests wait (the "grace period" of NFS). A master that finds no list, or an empty one, has
//! no grace period.

use std::collections::HashSet;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Duration;

use tokio::sync::watch;

/// Longest time new locks wait after a restart for the clients that held locks to claim them,
/// unless the master's `lock_grace_secs` says otherwise.
pub const DEFAULT_LOCK_GRACE: Duration = Duration::from_secs(20);

/// Name of the list in the master's data directory.
pub const FILE_NAME: &str = "lock-holders";

/// The list of clients holding locks, and the grace period after a restart.
pub struct LockHolders {
    path: PathBuf,
    /// The clients whose line is on disk (one being taken off leaves this set first).
    listed: Mutex<HashSet<u64>>,
    /// Serializes writes of the list, so the file always ends up as the last change left it.
    writing: tokio::sync::Mutex<()>,
    /// Clients on the list found at the start that have not made their last claim yet.
    awaited: Mutex<HashSet<u64>>,
    /// Whether the grace period is over.
    over: watch::Sender<bool>,
}

impl LockHolders {
    /// Reads the list left in `data_dir`. The grace period starts now: it is over at once if
    /// nobody held locks, and in any case after `grace` (the caller then calls
    /// [`LockHolders::end_grace`]). An unreadable list keeps the grace period for its whole length.
    pub fn load(data_dir: &Path, grace: Duration) -> LockHolders {
        let path = data_dir.join(FILE_NAME);
        let (listed, known) = match std::fs::read_to_string(&path) {
            Ok(text) => match parse(&text) {
                Some(clients) => (clients, true),
                None => {
                    tracing::warn!(path = %path.display(), "the list of clients holding locks is damaged; new locks wait the whole grace period after this start");
                    (HashSet::new(), false)
                }
            },
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => (HashSet::new(), true),
            Err(e) => {
                tracing::warn!(path = %path.display(), error = %e, "cannot read the list of clients holding locks; new locks wait the whole grace period after this start");
                (HashSet::new(), false)
            }
        };
        let over = known && listed.is_empty();
        if !over {
            tracing::info!(
                clients = listed.len(),
                grace_secs = grace.as_secs(),
                "clients held locks before this start: new locks wait until they have claimed them"
            );
        }
        LockHolders {
            path,
            awaited: Mutex::new(listed.clone()),
            listed: Mutex::new(listed),
            writing: tokio::sync::Mutex::new(()),
            over: watch::Sender::new(over),
        }
    }

    /// Waits for the end of the grace period (returns at once outside it).
    pub async fn grace_over(&self) {
        let mut over = self.over.subscribe();
        // The sender lives as long as `self`, which outlives this wait.
        let _ = over.wait_for(|&o| o).await;
    }

    /// Whether the grace period is over.
    pub fn is_grace_over(&self) -> bool {
        *self.over.borrow()
    }

    /// Notes that `client` made its last claim after reconnecting; the grace period ends when
    /// no client of the list is awaited any more.
    pub fn claimed(&self, client: u64) {
        let mut awaited = lock(&self.awaited);
        if awaited.remove(&client) && awaited.is_empty() {
            drop(awaited);
            self.over.send_replace(true);
            tracing::info!("every client that held locks has claimed them: new locks go ahead");
        }
    }

    /// Ends the grace period (`lock_grace_secs` after the start): clients still awaited are taken
    /// off the list, as they may never come back, unless `has_session` says they are back.
    pub async fn end_grace(&self, has_session: impl Fn(u64) -> bool) {
        let gone: HashSet<u64> = lock(&self.awaited).drain().collect();
        // Over already: every client claimed (then none is left awaited).
        if self.over.send_replace(true) {
            return;
        }
        tracing::warn!(
            clients = gone.len(),
            "the grace period for locks ended before every client that held locks came back"
        );
        self.remove(|listed| {
            listed
                .intersection(&gone)
                .copied()
                .filter(|&c| !has_session(c))
                .collect()
        })
        .await;
    }

    /// Puts `client` on the list (on disk before returning), if it is not there yet. Called
    /// before a granted lock is answered.
    pub async fn note(&self, client: u64) -> std::io::Result<()> {
        // Only a client whose line is on disk is in `listed`; one being taken off is not.
        if lock(&self.listed).contains(&client) {
            return Ok(());
        }
        let _writing = self.writing.lock().await;
        let mut next = lock(&self.listed).clone();
        if !next.insert(client) {
            return Ok(());
        }
        self.write(&next).await?;
        lock(&self.listed).insert(client);
        Ok(())
    }

    /// Takes `client` off the list once it has no session left, which `has_session` tells (asked
    /// again here, as a new session of the client may have been granted a lock meanwhile).
    pub async fn forget(&self, client: u64, has_session: impl Fn(u64) -> bool) {
        if !lock(&self.listed).contains(&client) {
            return;
        }
        self.remove(|listed| {
            if listed.contains(&client) && !has_session(client) {
                HashSet::from([client])
            } else {
                HashSet::new()
            }
        })
        .await;
    }

    /// Keeps on the list only the clients `holding` gives (at a clean stop, those holding locks
    /// then: only they have anything to claim after the next start).
    pub async fn keep_only(&self, holding: impl FnOnce() -> HashSet<u64>) {
        self.remove(|listed| listed.difference(&holding()).copied().collect())
            .await;
    }

    /// Takes off the list the clients `which` picks from it. `which` runs while no lock can be
    /// noted as held, so a client it leaves out of the list is noted again if it is granted a
    /// lock afterwards.
    async fn remove(&self, which: impl FnOnce(&HashSet<u64>) -> HashSet<u64>) {
        let _writing = self.writing.lock().await;
        let next = {
            let mut listed = lock(&self.listed);
            let gone = which(&listed);
            if gone.is_empty() {
                return;
            }
            listed.retain(|c| !gone.contains(c));
            listed.clone()
        };
        if let Err(e) = self.write(&next).await {
            // Harmless: at worst a later start waits for a client that does not come back.
            tracing::warn!(path = %self.path.display(), error = %e, "cannot update the list of clients holding locks");
        }
    }

    /// Writes `clients` as the list: a new file, synced, then renamed over the old one.
    async fn write(&self, clients: &HashSet<u64>) -> std::io::Result<()> {
        let text = format_list(clients);
        let path = self.path.clone();
        tokio::task::spawn_blocking(move || replace_file(&path, &text))
            .await
            .map_err(std::io::Error::other)?
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// One client id per line, in hex; `None` if a line is not one.
fn parse(text: &str) -> Option<HashSet<u64>> {
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .map(|l| u64::from_str_radix(l, 16).ok())
        .collect()
}

fn format_list(clients: &HashSet<u64>) -> String {
    let mut ids: Vec<u64> = clients.iter().copied().collect();
    ids.sort_unstable();
    ids.iter().map(|id| format!("{id:016x}\n")).collect()
}

fn replace_file(path: &Path, text: &str) -> std::io::Result<()> {
    let tmp = path.with_extension("tmp");
    let mut file = std::fs::File::create(&tmp)?;
    file.write_all(text.as_bytes())?;
    file.sync_all()?;
    std::fs::rename(&tmp, path)?;
    if let Some(dir) = path.parent() {
        std::fs::File::open(dir)?.sync_all()?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_start_without_a_list_has_no_grace_period() {
        let dir = tempfile::tempdir().unwrap();
        let holders = LockHolders::load(dir.path(), DEFAULT_LOCK_GRACE);
        assert!(holders.is_grace_over());
        holders.grace_over().await;
    }

    #[tokio::test]
    async fn clients_listed_before_a_restart_hold_new_locks_back_until_they_have_claimed() {
        let dir = tempfile::tempdir().unwrap();
        let before = LockHolders::load(dir.path(), DEFAULT_LOCK_GRACE);
        before.note(7).await.unwrap();
        before.note(9).await.unwrap();
        before.note(7).await.unwrap();
        before.forget(9, |_| false).await;
        before.note(11).await.unwrap();
        drop(before);

        let after = LockHolders::load(dir.path(), DEFAULT_LOCK_GRACE);
        assert!(!after.is_grace_over());
        after.claimed(9);
        after.claimed(7);
        assert!(!after.is_grace_over(), "client 11 has not claimed yet");
        after.claimed(11);
        assert!(after.is_grace_over());
        tokio::time::timeout(Duration::from_secs(1), after.grace_over())
            .await
            .expect("the wait ends with the grace period");
    }

    #[tokio::test]
    async fn the_end_of_the_grace_period_takes_the_clients_not_back_off_the_list() {
        let dir = tempfile::tempdir().unwrap();
        let before = LockHolders::load(dir.path(), DEFAULT_LOCK_GRACE);
        before.note(1).await.unwrap();
        before.note(2).await.unwrap();
        drop(before);

        let after = LockHolders::load(dir.path(), DEFAULT_LOCK_GRACE);
        after.claimed(1);
        after.end_grace(|_| false).await;
        assert!(after.is_grace_over());
        drop(after);

        let again = LockHolders::load(dir.path(), DEFAULT_LOCK_GRACE);
        assert!(
            !again.is_grace_over(),
            "client 1 came back and is still listed"
        );
        again.claimed(1);
        assert!(again.is_grace_over(), "client 2 was taken off the list");
    }

    #[tokio::test]
    async fn a_damaged_list_keeps_the_whole_grace_period() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(FILE_NAME), "not a client\n").unwrap();
        let holders = LockHolders::load(dir.path(), DEFAULT_LOCK_GRACE);
        assert!(!holders.is_grace_over());
        holders.claimed(1);
        assert!(!holders.is_grace_over());
        holders.end_grace(|_| false).await;
        assert!(holders.is_grace_over());
    }

    #[tokio::test]
    async fn a_clean_stop_keeps_only_the_clients_holding_locks() {
        let dir = tempfile::tempdir().unwrap();
        let before = LockHolders::load(dir.path(), DEFAULT_LOCK_GRACE);
        before.note(1).await.unwrap();
        before.note(2).await.unwrap();
        before.keep_only(|| HashSet::from([2])).await;
        drop(before);

        let after = LockHolders::load(dir.path(), DEFAULT_LOCK_GRACE);
        assert!(!after.is_grace_over());
        after.claimed(2);
        assert!(after.is_grace_over(), "client 1 held nothing at the stop");
    }

    #[tokio::test]
    async fn a_client_with_a_session_is_not_taken_off() {
        let dir = tempfile::tempdir().unwrap();
        let before = LockHolders::load(dir.path(), DEFAULT_LOCK_GRACE);
        before.note(1).await.unwrap();
        before.note(2).await.unwrap();
        before.forget(1, |c| c == 1).await;
        drop(before);

        let after = LockHolders::load(dir.path(), DEFAULT_LOCK_GRACE);
        after.end_grace(|c| c == 2).await;
        drop(after);
        let again = LockHolders::load(dir.path(), DEFAULT_LOCK_GRACE);
        again.claimed(1);
        assert!(
            !again.is_grace_over(),
            "client 2, back at the end of the grace period, stays"
        );
        again.claimed(2);
        assert!(again.is_grace_over());
    }
}
