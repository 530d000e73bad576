//! Starts the cluster's processes from a shell that holds no file of any mount.
//!
//! A process started straight from a test inherits, between fork and exec, every file the test's
//! threads have open at that instant, and exec then closes them. On a FUSE mount each close is a
//! FLUSH, which the mount answers only once the master knows the file's new length: a master
//! restarted by a test that is writing to the mount waited for itself (until the mount's
//! master timeout). The launcher shell is started before the cluster's first process, so it and
//! its children close nothing of the cluster's mounts at exec.

use std::ffi::OsString;
use std::io::{self, BufRead, BufReader, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::process::{Child, ChildStdin, ChildStdout, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};

/// The launcher's loop: reads NUL-terminated requests, starts commands in the background with
/// their output appended to a log, runs commands to their end, and reports how its children ended (bash reaps them and
/// keeps their statuses for `wait`).
const SCRIPT: &str = r#"
read_argv() {
  IFS= read -r -d '' count
  argv=()
  for ((i = 0; i < count; i++)); do
    IFS= read -r -d '' arg
    argv+=("$arg")
  done
}
while IFS= read -r -d '' op; do
  case "$op" in
    spawn)
      IFS= read -r -d '' log
      read_argv
      "${argv[@]}" </dev/null >>"$log" 2>&1 &
      echo "$!"
      ;;
    run)
      read_argv
      out=$("${argv[@]}" </dev/null 2>&1)
      code=$?
      echo "exited $code ${out//$'\n'/ }"
      ;;
    status)
      IFS= read -r -d '' pid
      if kill -0 "$pid" 2>/dev/null; then
        echo running
      else
        wait "$pid"
        echo "exited $?"
      fi
      ;;
    *)
      echo "unknown request $op"
      ;;
  esac
done
"#;

/// The shell every process of one cluster is started from; cheap to clone, started on first
/// use.
#[derive(Clone, Default)]
pub(crate) struct Launcher {
    shell: Arc<Mutex<Option<Shell>>>,
    /// The user and group the processes run as (`setpriv`), when not root.
    run_as: Option<(u32, u32)>,
}

struct Shell {
    child: Child,
    requests: ChildStdin,
    replies: BufReader<ChildStdout>,
}

impl Shell {
    fn start() -> io::Result<Shell> {
        let mut child = Command::new("bash")
            .args(["--noprofile", "--norc", "-c", SCRIPT])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            // bash reports each killed child there ("Killed"); the children's own output goes
            // to their logs.
            .stderr(Stdio::null())
            .spawn()?;
        let requests = child
            .stdin
            .take()
            .ok_or_else(|| io::Error::other("no stdin"))?;
        let replies = child
            .stdout
            .take()
            .ok_or_else(|| io::Error::other("no stdout"))?;
        Ok(Shell {
            child,
            requests,
            replies: BufReader::new(replies),
        })
    }

    fn ask(&mut self, fields: &[&[u8]]) -> io::Result<String> {
        let mut request = Vec::new();
        for field in fields {
            if field.contains(&0) {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidInput,
                    "an argument holds a NUL byte",
                ));
            }
            request.extend_from_slice(field);
            request.push(0);
        }
        self.requests.write_all(&request)?;
        self.requests.flush()?;
        let mut reply = String::new();
        if self.replies.read_line(&mut reply)? == 0 {
            return Err(io::Error::other("the launcher shell exited"));
        }
        Ok(reply.trim_end().to_owned())
    }
}

impl Drop for Shell {
    fn drop(&mut self) {
        // Closing its stdin ends the loop; the shell's children are stopped by their owners.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Launcher {
    /// A launcher whose processes run as `run_as` (uid, gid) when given.
    pub(crate) fn new(run_as: Option<(u32, u32)>) -> Launcher {
        Launcher {
            shell: Arc::default(),
            run_as,
        }
    }

    /// The user and group processes run as, when not root.
    pub(crate) fn run_as(&self) -> Option<(u32, u32)> {
        self.run_as
    }

    fn with_shell<T>(&self, f: impl FnOnce(&mut Shell) -> io::Result<T>) -> io::Result<T> {
        let mut guard = self.shell.lock().unwrap_or_else(|p| p.into_inner());
        if guard.is_none() {
            *guard = Some(Shell::start()?);
        }
        let shell = guard
            .as_mut()
            .ok_or_else(|| io::Error::other("no launcher"))?;
        let result = f(shell);
        if result.is_err() {
            // A broken launcher is replaced at the next request.
            *guard = None;
        }
        result
    }

    /// Starts `program` with `args` and `env` added to the test's environment, output appended
    /// to `log`, in network namespace `netns` if given; returns its pid.
    pub(crate) fn spawn(
        &self,
        program: &Path,
        args: &[OsString],
        env: &[(OsString, OsString)],
        log: &Path,
        netns: Option<&Path>,
    ) -> io::Result<u32> {
        let mut argv: Vec<Vec<u8>> = Vec::new();
        if let Some(netns) = netns {
            // Only the network namespace: its mounts stay the machine's.
            let mut net = b"--net=".to_vec();
            net.extend_from_slice(netns.as_os_str().as_bytes());
            argv.extend([b"nsenter".to_vec(), net, b"--".to_vec()]);
        }
        if let Some((uid, gid)) = self.run_as {
            argv.extend(
                [
                    "setpriv".to_string(),
                    format!("--reuid={uid}"),
                    format!("--regid={gid}"),
                    "--clear-groups".to_string(),
                    "--".to_string(),
                ]
                .map(String::into_bytes),
            );
        }
        argv.push(b"env".to_vec());
        for (key, value) in env {
            let mut pair = key.as_bytes().to_vec();
            pair.push(b'=');
            pair.extend_from_slice(value.as_bytes());
            argv.push(pair);
        }
        argv.push(program.as_os_str().as_bytes().to_vec());
        argv.extend(args.iter().map(|a| a.as_bytes().to_vec()));
        let count = argv.len().to_string();
        let mut fields: Vec<&[u8]> = vec![b"spawn", log.as_os_str().as_bytes(), count.as_bytes()];
        fields.extend(argv.iter().map(Vec::as_slice));
        let reply = self.with_shell(|shell| shell.ask(&fields))?;
        reply
            .parse()
            .map_err(|_| io::Error::other(format!("the launcher answered {reply:?}")))
    }

    /// Runs `argv` to its end (as the test's user), for commands a test needs while files of a
    /// mount are open (see the module's doc); returns its exit code and its output on one line.
    pub(crate) fn run(&self, argv: &[&str]) -> io::Result<(i32, String)> {
        let count = argv.len().to_string();
        let mut fields: Vec<&[u8]> = vec![b"run", count.as_bytes()];
        fields.extend(argv.iter().map(|a| a.as_bytes()));
        let reply = self.with_shell(|shell| shell.ask(&fields))?;
        let rest = reply
            .strip_prefix("exited ")
            .ok_or_else(|| io::Error::other(format!("the launcher answered {reply:?}")))?;
        let (code, output) = rest.split_once(' ').unwrap_or((rest, ""));
        let code = code
            .parse()
            .map_err(|_| io::Error::other(format!("the launcher answered {reply:?}")))?;
        Ok((code, output.to_owned()))
    }

    /// How the process `pid` started by [`Launcher::spawn`] ended, or `None` while it runs.
    pub(crate) fn exit_status(&self, pid: u32) -> io::Result<Option<ExitStatus>> {
        let pid = pid.to_string();
        let reply = self.with_shell(|shell| shell.ask(&[b"status", pid.as_bytes()]))?;
        if reply == "running" {
            return Ok(None);
        }
        let code: i32 = reply
            .strip_prefix("exited ")
            .and_then(|c| c.parse().ok())
            .ok_or_else(|| io::Error::other(format!("the launcher answered {reply:?}")))?;
        // bash reports death by signal N as 128 + N.
        Ok(Some(if code > 128 {
            ExitStatus::from_raw(code - 128)
        } else {
            ExitStatus::from_raw(code << 8)
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, Instant};

    fn wait_for_exit(launcher: &Launcher, pid: u32) -> ExitStatus {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(status) = launcher.exit_status(pid).expect("status") {
                return status;
            }
            assert!(Instant::now() < deadline, "pid {pid} did not exit");
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    #[test]
    fn a_command_run_to_its_end_gives_its_exit_code_and_output_on_one_line() {
        let launcher = Launcher::default();
        let (code, output) = launcher
            .run(&["sh", "-c", "echo one; echo two >&2; exit 3"])
            .expect("run");
        assert_eq!((code, output.as_str()), (3, "one two"));
        assert_eq!(launcher.run(&["true"]).expect("run"), (0, String::new()));
    }

    #[test]
    fn processes_start_with_their_arguments_and_environment_and_report_how_they_ended() {
        let dir = tempfile::tempdir().expect("tempdir");
        let log = dir.path().join("log");
        let launcher = Launcher::default();
        let args: Vec<OsString> = vec![
            "-c".into(),
            "echo \"$1|$ELKFS_X\"; exit 3".into(),
            "sh".into(),
            "two words\nand a line".into(),
        ];
        let env = [(OsString::from("ELKFS_X"), OsString::from("y=z"))];
        let pid = launcher
            .spawn(Path::new("/bin/sh"), &args, &env, &log, None)
            .expect("spawn");
        assert_eq!(wait_for_exit(&launcher, pid).code(), Some(3));
        let out = std::fs::read_to_string(&log).expect("log");
        assert_eq!(out, "two words\nand a line|y=z\n");

        let pid = launcher
            .spawn(Path::new("/bin/sleep"), &["60".into()], &[], &log, None)
            .expect("spawn");
        assert!(launcher.exit_status(pid).expect("status").is_none());
        // SAFETY: kill(2) on the process just started.
        unsafe { libc::kill(pid as libc::pid_t, libc::SIGKILL) };
        assert_eq!(wait_for_exit(&launcher, pid).signal(), Some(libc::SIGKILL));
    }
}
