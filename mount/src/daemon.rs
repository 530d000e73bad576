//! Going to the background only once the mount works, as `mount(8)` and fstab expect: the
//! parent waits for the child's verdict on a pipe and exits with it.

use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::{FromRawFd, OwnedFd};

/// The child's end of the pipe: report the outcome through it.
pub struct Verdict {
    pipe: Option<File>,
}

impl Verdict {
    /// For a foreground mount: nobody is waiting.
    pub fn foreground() -> Verdict {
        Verdict { pipe: None }
    }

    /// Whether a parent process is waiting for the verdict.
    pub fn has_parent(&self) -> bool {
        self.pipe.is_some()
    }

    /// Tells the waiting parent the mount is ready, and detaches from its terminal.
    pub fn ready(&mut self) {
        if let Some(mut pipe) = self.pipe.take() {
            let _ = pipe.write_all(b"ok\n");
            detach_stdio();
        }
    }

    /// Tells the waiting parent why mounting failed.
    pub fn failed(&mut self, reason: &str) {
        if let Some(mut pipe) = self.pipe.take() {
            let _ = pipe.write_all(reason.as_bytes());
        }
    }
}

/// Forks. The parent waits for the child's verdict and exits (0 once mounted, 1 with the
/// child's reason otherwise); the child returns its end of the pipe. Call before any thread
/// is started.
pub fn fork_and_wait() -> std::io::Result<Verdict> {
    let mut fds = [0; 2];
    // SAFETY: `fds` is a valid array of two ints for pipe(2) to fill.
    if unsafe { libc::pipe(fds.as_mut_ptr()) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: both descriptors were just returned by pipe(2) and are owned by nobody else.
    let (read_end, write_end) =
        unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
    // SAFETY: no other thread exists yet, so the child inherits a consistent process.
    match unsafe { libc::fork() } {
        -1 => Err(std::io::Error::last_os_error()),
        0 => {
            drop(read_end);
            // SAFETY: setsid has no memory-safety preconditions.
            unsafe { libc::setsid() };
            Ok(Verdict {
                pipe: Some(File::from(write_end)),
            })
        }
        _child => {
            drop(write_end);
            let mut answer = String::new();
            let _ = File::from(read_end).read_to_string(&mut answer);
            if answer.starts_with("ok") {
                std::process::exit(0);
            }
            if answer.is_empty() {
                answer = "the mount process died before the mount was ready".to_string();
            }
            eprintln!("elkfs-mount: {}", answer.trim_end());
            std::process::exit(1);
        }
    }
}

fn detach_stdio() {
    if let Ok(null) = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/null")
    {
        use std::os::fd::AsRawFd;
        for fd in 0..3 {
            // SAFETY: dup2 onto the standard descriptors of our own process.
            unsafe { libc::dup2(null.as_raw_fd(), fd) };
        }
    }
}
