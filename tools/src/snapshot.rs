//! `elkfs snapshot SRC... DST`: copy-on-write copies of files or whole trees, made by the master
//! in one request whatever the size: chunks are shared and copied on the first write to either
//! side. Like `mfsmakesnapshot`, it prints nothing when it succeeds.

use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use elkfs_client::mount_info::MountInfo;
use elkfs_proto::Status;
use elkfs_proto::master::{MasterReply, MasterRequest};
use serde_json::json;

use crate::failure::Failure;
use crate::locate::mount_info;
use crate::output::Report;
use crate::session::{Session, caller};

/// `elkfs snapshot`.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// What to snapshot, then where: a new name, or an existing directory to put it in (which
    /// several sources need).
    #[arg(required = true, num_args = 2.., value_name = "SRC... DST")]
    pub paths: Vec<PathBuf>,
}

/// Runs `elkfs snapshot`.
pub fn run(args: &Args, session: &mut Session, report: &mut Report) {
    let Some((dst, sources)) = args.paths.split_last() else {
        return;
    };
    let into_dir = std::fs::metadata(dst).is_ok_and(|m| m.is_dir());
    if sources.len() > 1 && !into_dir {
        let f = Failure {
            reason: "several sources can only be snapshot into an existing directory".into(),
            errno: Some(libc::ENOTDIR),
        };
        report.failure(&dst.display().to_string(), &f);
        return;
    }
    report.each_path(sources, |shown, src| {
        let (parent, name, target) = destination(src, dst, into_dir)?;
        let source = mount_info(src)?;
        let parent_info = mount_info(&parent).map_err(|f| in_destination(&target, f))?;
        if parent_info.master != source.master {
            return Err(Failure {
                reason: format!(
                    "{} is on another ElkFS cluster ({} and {})",
                    target.display(),
                    source.master,
                    parent_info.master
                ),
                errno: Some(libc::EXDEV),
            });
        }
        let made = snapshot(session, &source, &parent_info, name, shown)?;
        let doc = json!({
            "path": shown,
            "destination": target.display().to_string(),
            "inodes": made,
        });
        Ok((String::new(), doc))
    });
}

/// The directory and name the snapshot of `src` gets, and the full path it will have.
fn destination(
    src: &Path,
    dst: &Path,
    into_dir: bool,
) -> Result<(PathBuf, Vec<u8>, PathBuf), Failure> {
    if into_dir {
        let name = name_of(src)?;
        let target = dst.join(OsStr::from_bytes(&name));
        return Ok((dst.to_path_buf(), name, target));
    }
    let name = dst
        .file_name()
        .map(|n| n.as_bytes().to_vec())
        .ok_or_else(|| Failure::from_errno(libc::EINVAL))?;
    let parent = match dst.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    Ok((parent, name, dst.to_path_buf()))
}

/// The last component of `src`, resolving `.` and `..` first.
fn name_of(src: &Path) -> Result<Vec<u8>, Failure> {
    let real = src.canonicalize()?;
    real.file_name()
        .map(|n| n.as_bytes().to_vec())
        .ok_or_else(|| Failure::from_errno(libc::EINVAL))
}

fn in_destination(target: &Path, f: Failure) -> Failure {
    Failure {
        reason: format!("destination {}: {}", target.display(), f.reason),
        errno: f.errno,
    }
}

fn snapshot(
    session: &mut Session,
    source: &MountInfo,
    parent: &MountInfo,
    name: Vec<u8>,
    shown: &str,
) -> Result<u64, Failure> {
    let request = MasterRequest::Snapshot {
        source: source.inode,
        parent: parent.inode,
        name,
        caller: caller(),
    };
    match session.ask(&source.master, &request, Some(shown)) {
        Ok(MasterReply::TreeChanged { changed, .. }) => Ok(changed),
        Ok(_) => Err(Failure::unexpected()),
        Err(f) if f == Failure::from(Status::Loop) => Err(Failure {
            reason: "cannot snapshot a directory into itself".into(),
            errno: f.errno,
        }),
        Err(f) => Err(f),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_new_name_goes_in_its_parent() {
        let (parent, name, target) =
            destination(Path::new("a"), Path::new("x/b"), false).expect("destination");
        assert_eq!(parent, PathBuf::from("x"));
        assert_eq!(name, b"b");
        assert_eq!(target, PathBuf::from("x/b"));
        let (parent, _, _) = destination(Path::new("a"), Path::new("b"), false).expect("dest");
        assert_eq!(parent, PathBuf::from("."));
    }
}
