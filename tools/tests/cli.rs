//! The `elkfs` command line.

use std::process::Command;

#[test]
fn help_lists_the_up_command() {
    let out = Command::new(env!("CARGO_BIN_EXE_elkfs"))
        .arg("--help")
        .output()
        .unwrap();
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).contains("up"));
}

#[test]
fn up_refuses_zero_chunkservers() {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_elkfs"))
        .args(["up", "--chunkservers", "0", "--dir"])
        .arg(dir.path())
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--chunkservers"));
}

mod up {
    use std::io::{BufRead, BufReader};
    use std::path::{Path, PathBuf};
    use std::process::{Child, Command, Stdio};
    use std::time::{Duration, Instant};

    /// `elkfs up` running in the background; stopped with SIGINT (like Ctrl-C) when dropped.
    struct Up {
        child: Child,
        mountpoint: PathBuf,
    }

    impl Up {
        fn start(dir: &Path) -> Up {
            let mut child = Command::new(env!("CARGO_BIN_EXE_elkfs"))
                .args(["up", "--port", "0", "--dir"])
                .arg(dir)
                .stdout(Stdio::piped())
                .spawn()
                .unwrap();
            let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
            let mut mountpoint = None;
            for line in lines.by_ref() {
                let line = line.unwrap();
                if let Some(path) = line.strip_prefix("Mounted at ") {
                    mountpoint = Some(PathBuf::from(path));
                    break;
                }
            }
            let mountpoint = mountpoint.expect("elkfs up never said where it mounted");
            std::thread::spawn(move || lines.for_each(drop));
            Up { child, mountpoint }
        }

        fn interrupt(&mut self) -> std::process::ExitStatus {
            // SAFETY: signalling our own child.
            unsafe { libc::kill(self.child.id() as i32, libc::SIGINT) };
            let deadline = Instant::now() + Duration::from_secs(60);
            loop {
                if let Some(status) = self.child.try_wait().unwrap() {
                    return status;
                }
                assert!(
                    Instant::now() < deadline,
                    "elkfs up did not stop after SIGINT"
                );
                std::thread::sleep(Duration::from_millis(50));
            }
        }
    }

    impl Drop for Up {
        fn drop(&mut self) {
            if self.child.try_wait().ok().flatten().is_none() {
                self.interrupt();
            }
        }
    }

    fn is_mounted(path: &Path) -> bool {
        let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
        let path = path.to_string_lossy();
        mountinfo
            .lines()
            .any(|l| l.split(' ').nth(4) == Some(path.as_ref()))
    }

    /// The pid of the process `elkfs up` started with `marker` in its command line.
    fn daemon_of(up: &Up, marker: &str) -> i32 {
        let pid = up.child.id();
        let children = std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children")).unwrap();
        children
            .split_whitespace()
            .find(|child| {
                std::fs::read(format!("/proc/{child}/cmdline"))
                    .map(|c| {
                        String::from_utf8_lossy(&c)
                            .replace('\0', " ")
                            .contains(marker)
                    })
                    .unwrap_or(false)
            })
            .unwrap_or_else(|| panic!("no daemon of elkfs up runs with {marker}: {children}"))
            .parse()
            .unwrap()
    }

    #[test]
    fn up_goes_on_serving_when_a_chunkserver_is_killed() {
        let dir = tempfile::tempdir().unwrap();
        let mut up = Up::start(dir.path());
        let victim = daemon_of(&up, "cs0");
        // SAFETY: signalling a process this test started (through `elkfs up`), by its pid.
        unsafe { libc::kill(victim, libc::SIGKILL) };
        std::thread::sleep(Duration::from_secs(1));
        assert!(
            up.child.try_wait().unwrap().is_none(),
            "elkfs up stopped when a chunkserver died"
        );
        let data = vec![7u8; 3 * 1024 * 1024];
        std::fs::write(up.mountpoint.join("after"), &data).unwrap();
        assert!(std::fs::read(up.mountpoint.join("after")).unwrap() == data);
        let status = up.interrupt();
        assert!(status.success(), "elkfs up exited with {status}");
        assert!(!is_mounted(&up.mountpoint), "still mounted after Ctrl-C");
    }

    #[test]
    fn up_mounts_a_cluster_stops_on_ctrl_c_and_brings_the_files_back() {
        let dir = tempfile::tempdir().unwrap();
        let mut up = Up::start(dir.path());
        assert!(is_mounted(&up.mountpoint));
        std::fs::write(up.mountpoint.join("kept"), b"across restarts").unwrap();
        let status = up.interrupt();
        assert!(status.success(), "elkfs up exited with {status}");
        assert!(!is_mounted(&up.mountpoint), "still mounted after Ctrl-C");
        drop(up);

        let up = Up::start(dir.path());
        assert_eq!(
            std::fs::read(up.mountpoint.join("kept")).unwrap(),
            b"across restarts"
        );
    }
}
