//! A disk that takes writes it cannot store: an ext4 file system on a loop device whose backing
//! file lives on a small tmpfs. Writes land in the page cache; once the tmpfs is full, writing
//! them back fails, and the kernel reports the loss to one fsync only, as a thin or
//! overcommitted volume out of backing space does.

use std::path::Path;
use std::process::Command;

use crate::Tmpfs;

/// An ext4 file system of `claimed_mib` on a loop device whose backing file lives on a tmpfs of
/// `backing_mib`: it takes writes until its dirty pages go to the loop device and the tmpfs is
/// full. Unmounted and detached when dropped.
pub struct ThinDisk {
    device: String,
    mount: tempfile::TempDir,
    backing: Tmpfs,
}

fn run(program: &str, args: &[&str]) -> String {
    let out = Command::new(program)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("running {program} (util-linux, e2fsprogs): {e}"));
    assert!(
        out.status.success(),
        "{program} {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

impl ThinDisk {
    /// Makes, formats and mounts it (root, util-linux and e2fsprogs needed).
    pub fn new(backing_mib: u64, claimed_mib: u64) -> ThinDisk {
        let backing = Tmpfs::mount(backing_mib);
        let image = backing.path().join("disk.img");
        std::fs::File::create(&image)
            .and_then(|f| f.set_len(claimed_mib << 20))
            .expect("making the sparse disk image");
        let image = image.to_str().expect("utf-8 path");
        let device = run("losetup", &["--find", "--show", image]);
        let mount = tempfile::Builder::new()
            .prefix("elkfs-thin-")
            .tempdir()
            .expect("a mount point");
        let disk = ThinDisk {
            device,
            mount,
            backing,
        };
        // Every block of its own metadata written now (no discard, no lazy init), so the file
        // system can still work when the data no longer fits behind it.
        run(
            "mkfs.ext4",
            &[
                "-q",
                "-F",
                "-E",
                "nodiscard,lazy_itable_init=0,lazy_journal_init=0",
                &disk.device,
            ],
        );
        run(
            "mount",
            &[&disk.device, disk.path().to_str().expect("utf-8 path")],
        );
        disk
    }

    /// Gives the disk `backing_mib` MiB of backing store: writes that reach it from now on are
    /// stored again (those lost before stay lost).
    pub fn give_room(&self, backing_mib: u64) {
        self.backing.resize(backing_mib);
    }

    /// Where it is mounted.
    pub fn path(&self) -> &Path {
        self.mount.path()
    }
}

impl Drop for ThinDisk {
    fn drop(&mut self) {
        let mounted = self.mount.path().to_string_lossy().to_string();
        for (program, args) in [
            ("umount", vec!["--lazy", mounted.as_str()]),
            ("losetup", vec!["--detach", self.device.as_str()]),
        ] {
            match Command::new(program).args(&args).output() {
                Ok(out) if out.status.success() => {}
                Ok(out) => eprintln!(
                    "{program} {args:?}: {}",
                    String::from_utf8_lossy(&out.stderr)
                ),
                Err(e) => eprintln!("{program} {args:?}: {e}"),
            }
        }
    }
}
