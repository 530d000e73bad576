//! Processes of a test's cluster stopped with SIGSTOP and let go again.

use std::io;

/// A process stopped with SIGSTOP: alive, its connections open, answering nothing, as a machine
/// cut off by the network (or hung) looks to its peers. SIGCONT when dropped, so the cluster can
/// stop it; declare it after the cluster.
pub struct Frozen {
    pid: libc::pid_t,
}

impl Frozen {
    /// Stops `pid` (a process the harness started).
    pub fn freeze(pid: u32) -> Frozen {
        let pid = libc::pid_t::try_from(pid).expect("a pid");
        signal(pid, libc::SIGSTOP);
        Frozen { pid }
    }

    /// Lets it run again.
    pub fn thaw(self) {}
}

impl Drop for Frozen {
    fn drop(&mut self) {
        signal(self.pid, libc::SIGCONT);
    }
}

fn signal(pid: libc::pid_t, sig: libc::c_int) {
    // SAFETY: kill(2) has no memory-safety preconditions; `pid` is an unreaped child of the
    // harness in this process, so it cannot have been reused.
    if unsafe { libc::kill(pid, sig) } != 0 {
        panic!("kill({pid}, {sig}): {}", io::Error::last_os_error());
    }
}
