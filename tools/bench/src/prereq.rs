//! What a run needs before it starts: root, MooseFS and fio from Debian's packages (installed with
//! apt-get when missing), and ElkFS's release binaries (built with cargo unless a directory of
//! them is given).

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::{Context, bail};

use crate::cluster_elkfs::ElkBinaries;
use crate::process;
use crate::progress;

/// Debian packages the run uses, and a program each one installs.
const PACKAGES: [(&str, &str); 6] = [
    ("moosefs-master", "mfsmaster"),
    ("moosefs-chunkserver", "mfschunkserver"),
    ("moosefs-metalogger", "mfsmetalogger"),
    ("moosefs-client", "mfsmount"),
    ("moosefs-cli", "mfscli"),
    ("fio", "fio"),
];

/// Fails unless the harness runs as root (mounts, dropping the page cache).
pub fn require_root() -> anyhow::Result<()> {
    // SAFETY: geteuid(2) has no preconditions and cannot fail.
    if unsafe { libc::geteuid() } != 0 {
        bail!("elkfs-bench must run as root: it mounts filesystems and drops the page cache");
    }
    if !Path::new("/dev/fuse").exists() {
        bail!("/dev/fuse is missing: load the fuse module (modprobe fuse)");
    }
    Ok(())
}

/// Installs the MooseFS and fio packages whose programs are missing.
pub fn install_packages() -> anyhow::Result<()> {
    let missing: Vec<&str> = PACKAGES
        .iter()
        .filter(|(_, program)| !process::on_path(program) && !sbin_has(program))
        .map(|(package, _)| *package)
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    progress::step(&format!("installing {} with apt-get", missing.join(" ")));
    if apt_install(&missing).is_err() {
        // The package lists may be missing or stale on a fresh machine.
        progress::step("apt-get install failed; running apt-get update and trying again");
        apt(&["update"])?;
        apt_install(&missing)?;
    }
    Ok(())
}

fn sbin_has(program: &str) -> bool {
    ["/usr/sbin", "/sbin", "/usr/bin"]
        .iter()
        .any(|dir| Path::new(dir).join(program).is_file())
}

fn apt_install(packages: &[&str]) -> anyhow::Result<()> {
    let mut args = vec!["install", "-y", "--no-install-recommends"];
    args.extend_from_slice(packages);
    apt(&args)
}

fn apt(args: &[&str]) -> anyhow::Result<()> {
    let status = Command::new("apt-get")
        .args(args)
        .env("DEBIAN_FRONTEND", "noninteractive")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .status()
        .with_context(|| format!("running apt-get {}", args.join(" ")))?;
    if !status.success() {
        bail!("apt-get {} failed ({status})", args.join(" "));
    }
    Ok(())
}

/// The workspace this harness was built from (where `cargo build` runs and `docs/` is).
pub fn workspace_root() -> PathBuf {
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
    let root = manifest.join("../..");
    root.canonicalize().unwrap_or(root)
}

/// The ElkFS binaries: those in `dir` if given, otherwise built now with
/// `cargo build --release` (a no-op when they are up to date) from the workspace.
pub fn elk_binaries(dir: Option<PathBuf>) -> anyhow::Result<ElkBinaries> {
    let dir = match dir {
        Some(dir) => dir,
        None => {
            let root = workspace_root();
            progress::step("building the ElkFS release binaries (cargo build --release)");
            let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
            let mut command = Command::new(cargo);
            command.current_dir(&root).args(["build", "--release"]);
            for package in [
                "elkfs-master",
                "elkfs-chunkserver",
                "elkfs-mount",
                "elkfs-tools",
            ] {
                command.args(["-p", package]);
            }
            let status = command
                .stdin(Stdio::null())
                .status()
                .context("running cargo build")?;
            if !status.success() {
                bail!("cargo build --release of the ElkFS binaries failed ({status})");
            }
            let target = std::env::var_os("CARGO_TARGET_DIR")
                .map(PathBuf::from)
                .unwrap_or_else(|| root.join("target"));
            target.join("release")
        }
    };
    for name in ElkBinaries::NAMES {
        if !dir.join(name).is_file() {
            bail!("{} is missing", dir.join(name).display());
        }
    }
    Ok(ElkBinaries { dir })
}
