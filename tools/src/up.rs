//! `elkfs up`: a whole cluster on loopback under one directory, in the foreground. Children run
//! in their own process group so Ctrl-C reaches only us, and we stop them in order: the mount
//! first (its buffered writes drain), then chunkservers, then the metalogger, then the master.

use std::fs::{File, OpenOptions};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use elkfs_proto::cluster_key::KEY_FILE;
use elkfs_proto::tls::CA_FILE;

/// What `elkfs up` was asked for.
pub struct UpOptions {
    /// Directory holding everything.
    pub dir: PathBuf,
    /// Number of chunkservers.
    pub chunkservers: usize,
    /// Mount point (default `dir/mnt`).
    pub mountpoint: Option<PathBuf>,
    /// Master port; chunkservers take the following ones.
    pub port: u16,
    /// Encrypt every connection with TLS.
    pub tls: bool,
}

/// How long a daemon may take to become ready.
const READY_TIMEOUT: Duration = Duration::from_secs(60);

/// How long a daemon may take to stop after SIGTERM before it is killed.
const STOP_TIMEOUT: Duration = Duration::from_secs(20);

static STOP: AtomicBool = AtomicBool::new(false);

/// Prints a line for the user; a closed stdout must not stop the cluster from running.
macro_rules! say {
    ($($arg:tt)*) => {{
        use std::io::Write;
        let _ = writeln!(std::io::stdout(), $($arg)*);
    }};
}

extern "C" fn on_signal(_: libc::c_int) {
    STOP.store(true, Ordering::SeqCst);
}

struct Daemon {
    name: String,
    child: Child,
    log: PathBuf,
    /// The cluster cannot go on without it (the master, the mount); a chunkserver or the
    /// metalogger can stop, as on a real cluster, and the rest keeps serving.
    essential: bool,
    /// It stopped and was reported.
    gone: bool,
}

/// Runs the cluster until SIGINT/SIGTERM.
pub fn run(opts: UpOptions) -> anyhow::Result<()> {
    if opts.chunkservers == 0 {
        bail!("--chunkservers must be at least 1");
    }
    check_fuse()?;
    std::fs::create_dir_all(&opts.dir)
        .with_context(|| format!("cannot create {}", opts.dir.display()))?;
    let dir = opts.dir.canonicalize()?;
    let mountpoint = match &opts.mountpoint {
        Some(m) => m.clone(),
        None => dir.join("mnt"),
    };
    prepare_mountpoint(&mountpoint)?;
    let mountpoint = mountpoint.canonicalize()?;
    let bin = binaries_dir()?;
    for d in ["logs", "run", "master", "metalogger"] {
        std::fs::create_dir_all(dir.join(d))?;
    }
    // SAFETY: installing a handler that only stores to an atomic.
    unsafe {
        libc::signal(libc::SIGINT, on_signal as *const () as libc::sighandler_t);
        libc::signal(libc::SIGTERM, on_signal as *const () as libc::sighandler_t);
    }

    let mut daemons: Vec<Daemon> = Vec::new();
    let result = start_all(&opts, &dir, &mountpoint, &bin, &mut daemons);
    match result {
        Ok(master) => {
            say!(
                "ElkFS is up: master {master}, a metalogger, {} chunkservers{}.",
                opts.chunkservers,
                if opts.tls {
                    ", TLS on every connection"
                } else {
                    ""
                }
            );
            say!("Mounted at {}", mountpoint.display());
            say!(
                "Logs in {}. Press Ctrl-C to unmount and stop everything.",
                dir.join("logs").display()
            );
            let died = watch(&mut daemons);
            say!("Stopping...");
            stop_all(&mut daemons);
            match died {
                Some(name) => bail!(
                    "{name} stopped unexpectedly; see its log in {}",
                    dir.join("logs").display()
                ),
                None => {
                    say!(
                        "Stopped. Run `elkfs up --dir {}{}` again to bring the same files back.",
                        opts.dir.display(),
                        if opts.tls { " --tls" } else { "" }
                    );
                    Ok(())
                }
            }
        }
        Err(e) => {
            stop_all(&mut daemons);
            Err(e)
        }
    }
}

fn start_all(
    opts: &UpOptions,
    dir: &Path,
    mountpoint: &Path,
    bin: &Path,
    daemons: &mut Vec<Daemon>,
) -> anyhow::Result<String> {
    let listen = format!("127.0.0.1:{}", opts.port);
    let tls: &[&std::ffi::OsStr] = if opts.tls { &["--tls".as_ref()] } else { &[] };
    let master = spawn(
        bin,
        "elkfs-master",
        "master",
        dir,
        &[
            &[
                "--data-dir".as_ref(),
                dir.join("master").as_os_str(),
                "--listen".as_ref(),
                listen.as_ref(),
            ],
            tls,
        ]
        .concat(),
        daemons,
    )?;
    let master_addr = wait_ready(&master, daemons)?;
    // Made by the master on its first start; every other daemon joins with it.
    let cluster_key = dir.join("master").join(KEY_FILE);
    let metalogger = spawn(
        bin,
        "elkfs-metalogger",
        "metalogger",
        dir,
        &[
            &[
                "--master".as_ref(),
                master_addr.as_ref(),
                "--data-dir".as_ref(),
                dir.join("metalogger").as_os_str(),
                "--cluster-key".as_ref(),
                cluster_key.as_os_str(),
            ],
            tls,
        ]
        .concat(),
        daemons,
    )?;
    let mut ready = vec![metalogger];
    for i in 0..opts.chunkservers {
        let data = dir.join(format!("cs{i}"));
        std::fs::create_dir_all(&data)?;
        // Port 0 means any free ports, for the master and chunkservers alike.
        let port = match opts.port {
            0 => 0,
            base => base as usize + 1 + i,
        };
        let cs_listen = format!("127.0.0.1:{port}");
        ready.push(spawn(
            bin,
            "elkfs-chunkserver",
            &format!("cs{i}"),
            dir,
            &[
                &[
                    "--master".as_ref(),
                    master_addr.as_ref(),
                    "--data".as_ref(),
                    data.as_os_str(),
                    "--listen".as_ref(),
                    cs_listen.as_ref(),
                    "--cluster-key".as_ref(),
                    cluster_key.as_os_str(),
                ],
                tls,
            ]
            .concat(),
            daemons,
        )?);
    }
    for r in &ready {
        wait_ready(r, daemons)?;
    }
    let source = format!("{master_addr}:/");
    // The master writes the cluster's certificate next to its key.
    let mount_tls = format!("tls,tlsca={}", dir.join("master").join(CA_FILE).display());
    let mount_options: &[&std::ffi::OsStr] = if opts.tls {
        &["-o".as_ref(), mount_tls.as_ref()]
    } else {
        &[]
    };
    let mount = spawn(
        bin,
        "elkfs-mount",
        "mount",
        dir,
        &[
            &[source.as_ref(), mountpoint.as_os_str(), "-f".as_ref()],
            mount_options,
        ]
        .concat(),
        daemons,
    )?;
    wait_ready(&mount, daemons)?;
    Ok(master_addr)
}

/// Starts a daemon with a ready file; returns the path to wait on.
fn spawn(
    bin: &Path,
    program: &str,
    name: &str,
    dir: &Path,
    args: &[&std::ffi::OsStr],
    daemons: &mut Vec<Daemon>,
) -> anyhow::Result<PathBuf> {
    use std::os::unix::process::CommandExt;
    let ready = dir.join("run").join(format!("{name}.ready"));
    let _ = std::fs::remove_file(&ready);
    let log = dir.join("logs").join(format!("{name}.log"));
    let out: File = OpenOptions::new().create(true).append(true).open(&log)?;
    let mut command = Command::new(bin.join(program));
    command
        .args(args)
        .arg("--ready-file")
        .arg(&ready)
        .stdin(Stdio::null())
        .stdout(out.try_clone()?)
        .stderr(out)
        .process_group(0);
    // SAFETY: the closure only calls prctl, which is async-signal-safe, between fork and exec.
    // If `elkfs up` itself dies, its children are told to stop instead of running on unseen.
    unsafe {
        command.pre_exec(|| {
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM);
            Ok(())
        });
    }
    let child = command
        .spawn()
        .with_context(|| format!("cannot start {}", bin.join(program).display()))?;
    daemons.push(Daemon {
        name: name.to_string(),
        child,
        log,
        essential: !matches!(program, "elkfs-chunkserver" | "elkfs-metalogger"),
        gone: false,
    });
    Ok(ready)
}

fn wait_ready(path: &Path, daemons: &mut [Daemon]) -> anyhow::Result<String> {
    let deadline = Instant::now() + READY_TIMEOUT;
    loop {
        if let Ok(text) = std::fs::read_to_string(path) {
            return Ok(text.trim().to_string());
        }
        for d in daemons.iter_mut() {
            if let Ok(Some(status)) = d.child.try_wait() {
                bail!(
                    "{} exited ({status}) before it was ready:\n{}",
                    d.name,
                    tail(&d.log, 10)
                );
            }
        }
        if STOP.load(Ordering::SeqCst) {
            bail!("interrupted");
        }
        if Instant::now() > deadline {
            bail!(
                "{} did not become ready in {READY_TIMEOUT:?}",
                path.display()
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Waits for a signal or for a daemon to die; returns the name of one that died.
/// Waits for Ctrl-C (`None`) or for an essential daemon to stop (its name). A chunkserver or
/// the metalogger that stops is reported and the cluster goes on without it, so that killing
/// one shows what a real cluster does.
fn watch(daemons: &mut [Daemon]) -> Option<String> {
    while !STOP.load(Ordering::SeqCst) {
        for d in daemons.iter_mut().filter(|d| !d.gone) {
            if let Ok(Some(status)) = d.child.try_wait() {
                if d.essential {
                    return Some(d.name.clone());
                }
                d.gone = true;
                say!(
                    "{} stopped ({status}); the cluster goes on without it (its log: {}).",
                    d.name,
                    d.log.display()
                );
            }
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    None
}

/// Stops daemons newest first (mount, chunkservers, metalogger, master).
fn stop_all(daemons: &mut Vec<Daemon>) {
    while let Some(mut d) = daemons.pop() {
        if let Ok(Some(_)) = d.child.try_wait() {
            continue;
        }
        // SAFETY: signalling our own child by its pid.
        unsafe { libc::kill(d.child.id() as libc::pid_t, libc::SIGTERM) };
        let deadline = Instant::now() + STOP_TIMEOUT;
        loop {
            match d.child.try_wait() {
                Ok(Some(_)) => break,
                Ok(None) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(20))
                }
                _ => {
                    eprintln!(
                        "elkfs: {} did not stop in {STOP_TIMEOUT:?}; killing it",
                        d.name
                    );
                    let _ = d.child.kill();
                    let _ = d.child.wait();
                    break;
                }
            }
        }
    }
}

fn tail(path: &Path, lines: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// The directory holding the ElkFS programs: the one this `elkfs` binary is in.
fn binaries_dir() -> anyhow::Result<PathBuf> {
    let exe = std::env::current_exe().context("cannot find this program's path")?;
    let dir = exe
        .parent()
        .context("program has no directory")?
        .to_path_buf();
    for program in [
        "elkfs-master",
        "elkfs-metalogger",
        "elkfs-chunkserver",
        "elkfs-mount",
    ] {
        if !dir.join(program).exists() {
            bail!(
                "{} not found next to {}; build everything with `cargo build --release`",
                program,
                exe.display()
            );
        }
    }
    Ok(dir)
}

fn check_fuse() -> anyhow::Result<()> {
    if !Path::new("/dev/fuse").exists() {
        bail!("/dev/fuse is missing: load the kernel module with `modprobe fuse` (as root)");
    }
    // SAFETY: geteuid has no preconditions.
    let root = unsafe { libc::geteuid() } == 0;
    if !root
        && !["/usr/bin/fusermount3", "/bin/fusermount3"]
            .iter()
            .any(|p| Path::new(p).exists())
    {
        bail!(
            "mounting as a non-root user needs fusermount3: install it with `apt-get install fuse3`, or run as root"
        );
    }
    Ok(())
}

/// Creates the mount point, clearing a dead mount left by a killed mount process.
fn prepare_mountpoint(path: &Path) -> anyhow::Result<()> {
    match std::fs::metadata(path) {
        Ok(m) if m.is_dir() => Ok(()),
        Ok(_) => bail!("mount point {} is not a directory", path.display()),
        Err(e) if e.raw_os_error() == Some(libc::ENOTCONN) => {
            let c = std::ffi::CString::new(path.as_os_str().as_encoded_bytes())?;
            // SAFETY: a valid NUL-terminated path.
            if unsafe { libc::umount2(c.as_ptr(), libc::MNT_DETACH) } != 0 {
                bail!(
                    "{} is a dead mount from an earlier run; unmount it with `umount -l {}`",
                    path.display(),
                    path.display()
                );
            }
            Ok(())
        }
        Err(_) => std::fs::create_dir_all(path)
            .with_context(|| format!("cannot create mount point {}", path.display())),
    }
}
