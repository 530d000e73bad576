//! `elkfs dirinfo`: inodes, directories, files, chunks and space over a tree, printed as
//! `mfsdirinfo` prints them.

use std::path::PathBuf;

use elkfs_proto::info::DirStats;
use elkfs_proto::master::{MasterReply, MasterRequest};
use serde_json::json;

use crate::failure::Failure;
use crate::locate::mount_info;
use crate::output::Report;
use crate::session::Session;

/// `elkfs dirinfo`.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// Directories (or files) inside an ElkFS mount.
    #[arg(required = true)]
    pub paths: Vec<PathBuf>,
}

/// Runs `elkfs dirinfo`.
pub fn run(args: &Args, session: &mut Session, report: &mut Report) {
    report.each_path(&args.paths, |shown, path| {
        let info = mount_info(path)?;
        let request = MasterRequest::DirInfo { inode: info.inode };
        let stats = match session.ask(&info.master, &request, Some(shown))? {
            MasterReply::DirStats(stats) => stats,
            _ => return Err(Failure::unexpected()),
        };
        let doc = json!({
            "path": shown,
            "inodes": stats.inodes,
            "directories": stats.dirs,
            "files": stats.files,
            "chunks": stats.chunks,
            "length": stats.length,
            "size": stats.size,
            "realsize": stats.realsize,
        });
        Ok((text(shown, &stats), doc))
    });
}

fn text(shown: &str, s: &DirStats) -> String {
    format!(
        "{shown}:\n \
         inodes:       {:>20}\n  \
         directories: {:>20}\n  \
         files:       {:>20}\n \
         chunks:       {:>20}\n \
         length:       {:>20}\n \
         size:         {:>20}\n \
         realsize:     {:>20}\n",
        s.inodes, s.dirs, s.files, s.chunks, s.length, s.size, s.realsize
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dirinfo_matches_mfsdirinfo() {
        let stats = DirStats {
            inodes: 5,
            dirs: 2,
            files: 3,
            chunks: 3,
            length: 73_400_326,
            size: 73_490_432,
            realsize: 146_980_864,
        };
        assert_eq!(
            text("d", &stats),
            "d:\n\
             \x20inodes:                          5\n\
             \x20\x20directories:                    2\n\
             \x20\x20files:                          3\n\
             \x20chunks:                          3\n\
             \x20length:                   73400326\n\
             \x20size:                     73490432\n\
             \x20realsize:                146980864\n"
        );
    }
}
