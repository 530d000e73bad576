//! The ElkFS FUSE client: mounts a cluster (or a subdirectory of it) on a local directory.

pub mod absent_xattrs;
pub mod access_notes;
pub mod attr;
pub mod daemon;
pub mod early_read;
pub mod first_poll;
pub mod fs;
pub mod handles;
pub mod kernel_mount;
pub mod open_dirs;
pub mod ops;
pub mod options;
pub mod read_around;
pub mod readahead;
pub mod view;

use std::path::PathBuf;
use std::sync::{Arc, OnceLock};

use anyhow::Context;
use elkfs_client::{Client, ClientConfig};
use elkfs_common::defaults;
use elkfs_proto::tls::ClusterTrust;
use fuser::{Config, MountOption, SessionACL};

use crate::daemon::Verdict;
use crate::fs::ElkFs;
use crate::handles::Handles;
use crate::ops::Ops;
use crate::options::MountSpec;

/// How long a stopping mount spends giving its directory leases back, and again releasing its
/// locks.
const LEASE_GIVE_BACK: std::time::Duration = std::time::Duration::from_millis(500);

/// How this mount is undone on SIGTERM.
enum Unmount {
    /// Mounted by us through `/dev/fuse`.
    Kernel(PathBuf),
    /// Mounted by fuser (through `fusermount3`).
    Fuser(fuser::SessionUnmounter),
}

impl Unmount {
    fn run(self) -> std::io::Result<()> {
        match self {
            Unmount::Kernel(path) => kernel_mount::unmount(&path),
            Unmount::Fuser(mut u) => u.unmount(),
        }
    }
}

/// Mounts and serves until unmounted (by `umount`, SIGTERM or SIGINT).
pub fn run(spec: MountSpec, ready_file: Option<PathBuf>) -> anyhow::Result<()> {
    check_mount_point(&spec)?;
    let mut verdict = if spec.foreground {
        Verdict::foreground()
    } else {
        daemon::fork_and_wait().context("cannot fork into the background")?
    };
    match serve(&spec, ready_file, &mut verdict) {
        Ok(()) => Ok(()),
        Err(e) if verdict.has_parent() => {
            // The waiting parent prints the reason and exits with it.
            verdict.failed(&format!("{e:#}"));
            std::process::exit(1);
        }
        Err(e) => Err(e),
    }
}

/// The password from `-o password` or `-o passwordfile` (first line, which only its owner may
/// read).
fn password(spec: &MountSpec) -> anyhow::Result<Option<String>> {
    use std::os::unix::fs::PermissionsExt;
    if let Some(password) = &spec.password {
        return Ok(Some(password.clone()));
    }
    let Some(file) = &spec.password_file else {
        return Ok(None);
    };
    let meta = std::fs::metadata(file)
        .with_context(|| format!("cannot read the password file {}", file.display()))?;
    if meta.permissions().mode() & 0o077 != 0 {
        anyhow::bail!(
            "the password file {} can be read by others than its owner; chmod 600 it",
            file.display()
        );
    }
    let text = std::fs::read_to_string(file)
        .with_context(|| format!("cannot read the password file {}", file.display()))?;
    match text.lines().next().map(str::trim_end) {
        Some(line) if !line.is_empty() => Ok(Some(line.to_string())),
        _ => anyhow::bail!("the password file {} is empty", file.display()),
    }
}

fn check_mount_point(spec: &MountSpec) -> anyhow::Result<()> {
    let meta = std::fs::metadata(&spec.mount_point)
        .with_context(|| format!("mount point {} is not usable", spec.mount_point.display()))?;
    if !meta.is_dir() {
        anyhow::bail!(
            "mount point {} is not a directory",
            spec.mount_point.display()
        );
    }
    Ok(())
}

fn serve(
    spec: &MountSpec,
    ready_file: Option<PathBuf>,
    verdict: &mut Verdict,
) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(spec.workers)
        .enable_all()
        .thread_name("elkfs-mount")
        .build()
        .context("cannot start the async runtime")?;
    let mount_point = spec.mount_point.display().to_string();
    let session = elkfs_client::master::SessionOptions {
        password: password(spec)?,
        bind: spec.bind,
        tls: spec
            .tls_ca
            .as_deref()
            .map(|file| {
                ClusterTrust::from_pem_file(file).with_context(|| {
                    format!(
                        "with -o tls the mount needs the cluster's certificate: copy ca.crt from \
                         the master's data directory to {} or name it with -o tlsca=FILE",
                        file.display()
                    )
                })
            })
            .transpose()?,
    };
    let client = runtime
        .block_on(Client::connect(
            &spec.master,
            &spec.subdir,
            &mount_point,
            ClientConfig {
                master_timeout: spec.master_timeout,
                session,
                ..ClientConfig::default()
            },
        ))
        .with_context(|| format!("cannot mount {}:{}", spec.master, spec.subdir))?;
    // A read-only export mounts read-only, so the kernel answers EROFS itself.
    let read_only = spec.read_only || client.master.read_only();
    let ops = Arc::new(Ops {
        client,
        handles: Handles::default(),
        read_only,
        in_flight: Default::default(),
        access_notes: Default::default(),
        atime: spec.atime,
        absent_xattrs: crate::absent_xattrs::AbsentXattrs::new(defaults::ATTR_CACHE),
        open_dirs: crate::open_dirs::OpenDirs::new(defaults::ATTR_CACHE),
        tls_ca: spec.tls_ca.clone(),
        store_gate: Default::default(),
        early_reads: Default::default(),
        changes_here: Default::default(),
    });
    {
        let ops = ops.clone();
        runtime.spawn(async move { ops.client.master.serve_closes().await });
    }
    if !read_only {
        // Directory leases from the first mkdir on: the master answers the first wait at once
        // (and the wait gives up after the master timeout, like any request).
        if !runtime.block_on(ops.client.master.poll_recalls()) {
            tracing::warn!("the master did not answer the first wait for lease recalls");
        }
        let ops = ops.clone();
        runtime.spawn(async move { ops.client.master.serve_recalls().await });
    } else {
        // The wait for recalls above reconnects a writable mount at once; this does it here.
        let ops = ops.clone();
        runtime.spawn(async move { ops.client.master.keep_connected().await });
    }
    // Canonical now: once mounted, resolving the path would ask this very process.
    let canonical_mount_point = spec
        .mount_point
        .canonicalize()
        .with_context(|| format!("mount point {} is not usable", spec.mount_point.display()))?;
    if elkfs_common::mount_table::is_mount_point(&canonical_mount_point).unwrap_or(false) {
        anyhow::bail!(
            "{} is already a mount point (busy); unmount it first",
            spec.mount_point.display()
        );
    }
    let source = format!("{}:{}", spec.master, spec.subdir);
    let mut config = Config::default();
    config.acl = if spec.allow_other {
        SessionACL::All
    } else {
        SessionACL::Owner
    };
    // One thread reads the kernel's requests: it only starts each one's work and leaves the
    // rest to the runtime when it first waits (`first_poll.rs`), so a second thread added no
    // parallelism, only a second sleeper for the kernel to wake (about a tenth of the time of
    // a create or an unlink on a two-core machine).
    config.n_threads = Some(1);
    let notifier = Arc::new(OnceLock::new());
    let fs = ElkFs::new(
        ops.clone(),
        runtime.handle().clone(),
        defaults::ATTR_CACHE,
        notifier.clone(),
    );
    // SAFETY: geteuid has no preconditions.
    let as_root = unsafe { libc::geteuid() } == 0;
    let (session, unmount) = if as_root {
        let fd = kernel_mount::mount(&kernel_mount::KernelMount {
            source: &source,
            mount_point: &spec.mount_point,
            read_only,
            allow_other: spec.allow_other,
        })
        .with_context(|| format!("cannot mount on {}", spec.mount_point.display()))?;
        let session = fuser::Session::from_fd(fs, fd, config.acl, config)
            .context("the kernel refused the FUSE session")?;
        (session, Unmount::Kernel(spec.mount_point.clone()))
    } else {
        let mut options = vec![
            MountOption::FSName(source.clone()),
            MountOption::Subtype("elkfs".to_string()),
            MountOption::DefaultPermissions,
        ];
        if read_only {
            options.push(MountOption::RO);
        }
        config.mount_options = options;
        let mut session = match fuser::Session::new(fs, &spec.mount_point, &config) {
            Ok(session) => session,
            Err(e) if !fusermount_installed() => anyhow::bail!(
                "cannot mount on {}: {e}; mounting as a user other than root needs \
                 `fusermount3` (Debian package fuse3: apt-get install fuse3)",
                spec.mount_point.display()
            ),
            Err(e) => {
                return Err(e)
                    .with_context(|| format!("cannot mount on {}", spec.mount_point.display()));
            }
        };
        let unmounter = session.unmount_callable();
        (session, Unmount::Fuser(unmounter))
    };
    if spec.readahead_kb > 0 {
        set_readahead(&canonical_mount_point, spec.readahead_kb, as_root);
    }
    let _ = notifier.set(session.notifier());
    let stop = runtime.block_on(async { elkfs_common::daemon::stop_on_signals() })?;
    let flusher = ops.clone();
    runtime.spawn(async move {
        stop.cancelled().await;
        flusher.flush_all().await;
        // Replies to requests still being worked on would find the kernel connection gone.
        flusher.in_flight.wait_idle(defaults::SHUTDOWN_GRACE).await;
        if let Err(e) = unmount.run() {
            tracing::error!(error = %e, "cannot unmount");
        }
        flusher.client.master.leave(LEASE_GIVE_BACK).await;
        // A lazily detached mount lives on while programs hold files open in it; this process
        // has done its part (everything is flushed) and goes.
        tokio::time::sleep(std::time::Duration::from_secs(2)).await;
        tracing::info!("files are still open in the detached mount; exiting");
        std::process::exit(0);
    });
    tracing::info!(master = %spec.master, subdir = %spec.subdir, mount_point = %mount_point, "mounted");
    if let Some(path) = &ready_file {
        elkfs_common::daemon::write_ready_file(path, &mount_point)?;
    }
    verdict.ready();
    session.run().context("the FUSE session failed")?;
    runtime.block_on(async {
        ops.flush_all().await;
        ops.client.master.leave(LEASE_GIVE_BACK).await;
    });
    tracing::info!(mount_point = %mount_point, "unmounted");
    Ok(())
}

/// Sets the kernel's read-ahead for the new mount; a mount that cannot (only root may) reads
/// with the kernel's default.
fn set_readahead(mount_point: &std::path::Path, kib: u32, as_root: bool) {
    match readahead::set(mount_point, kib) {
        Ok(()) => tracing::debug!(kib, "read-ahead set"),
        Err(e) if as_root => {
            tracing::warn!(kib, error = %e, "cannot set the read-ahead; sequential reads will be slower")
        }
        Err(e) => tracing::info!(
            kib,
            error = %e,
            "only root can set the read-ahead; sequential reads will be slower"
        ),
    }
}

/// Whether the setuid helper through which a user other than root mounts is there, where fuser
/// looks for it: `$FUSERMOUNT_PATH`, `fusermount3` or libfuse 2's `fusermount` on `$PATH` or in
/// `/sbin` and `/bin`.
fn fusermount_installed() -> bool {
    use std::os::unix::fs::PermissionsExt;
    if std::env::var_os("FUSERMOUNT_PATH").is_some() {
        return true;
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    let dirs = std::env::split_paths(&path).chain(["/sbin".into(), "/bin".into()]);
    dirs.flat_map(|dir| [dir.join("fusermount3"), dir.join("fusermount")])
        .any(|helper| {
            std::fs::metadata(helper)
                .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        })
}
