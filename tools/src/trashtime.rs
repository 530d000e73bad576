//! `elkfs gettrashtime` and `elkfs settrashtime`: how long deleted files wait in the trash,
//! printed as MooseFS's `mfsgettrashtime`/`mfssettrashtime` print it.

use std::path::PathBuf;

use elkfs_proto::master::{Change, TreeAttr};

use crate::output::Report;
use crate::session::Session;
use crate::tree::{self, Flavour};

/// `elkfs gettrashtime`.
#[derive(clap::Args, Debug)]
pub struct GetArgs {
    /// Show how the trash times of the whole tree are spread.
    #[arg(short, long)]
    pub recursive: bool,
    /// Files or directories inside an ElkFS mount.
    #[arg(required = true)]
    pub paths: Vec<PathBuf>,
}

/// `elkfs settrashtime`.
#[derive(clap::Args, Debug)]
pub struct SetArgs {
    /// Change the whole tree below each directory.
    #[arg(short, long)]
    pub recursive: bool,
    /// Seconds (or with units, largest first: 30m, 12h, 2h30m, 1w2d; 0 deletes at once);
    /// `N+`/`+N` only raises, `N-`/`-N` only lowers.
    #[arg(value_parser = parse_trash_time, allow_hyphen_values = true)]
    pub seconds: Change,
    /// Files or directories inside an ElkFS mount.
    #[arg(required = true)]
    pub paths: Vec<PathBuf>,
}

/// Labels of `settrashtime -r`'s three lines, padded as `mfssettrashtime` pads them.
pub const CHANGED_LABELS: [&str; 3] = [
    " inodes with trashtime changed:     ",
    " inodes with trashtime not changed: ",
    " inodes with permission denied:     ",
];

const FLAVOUR: Flavour = Flavour {
    attr: TreeAttr::TrashTime,
    key: "trashtime",
    set_line: |path, seconds| format!("{path}: {seconds}\n"),
    files_line: |secs, count| format!(" files with trashtime        {secs:>10} : {count:>10}"),
    dirs_line: |secs, count| format!(" directories with trashtime  {secs:>10} : {count:>10}"),
    changed_labels: CHANGED_LABELS,
};

/// Runs `elkfs gettrashtime`.
pub fn get(args: &GetArgs, session: &mut Session, report: &mut Report) {
    tree::get(session, report, &FLAVOUR, args.recursive, &args.paths);
}

/// Runs `elkfs settrashtime`.
pub fn set(args: &SetArgs, session: &mut Session, report: &mut Report) {
    tree::set(
        session,
        report,
        &FLAVOUR,
        args.seconds,
        args.recursive,
        &args.paths,
    );
}

fn parse_trash_time(text: &str) -> Result<Change, String> {
    tree::parse_change(text, seconds)
}

/// Reads a MooseFS time (`86400`, `30m`, `12h`, `2h30m`, `7d`, `1w2d`) as seconds.
fn seconds(text: &str) -> Result<u64, String> {
    let seconds = elkfs_common::duration::parse_seconds(text).ok_or_else(|| {
        format!(
            "{text:?} is not a trash time: seconds, or numbers with w, d, h, m or s (largest first)"
        )
    })?;
    Some(seconds)
        .filter(|s| *s <= u32::MAX as u64)
        .ok_or_else(|| format!("{text:?} is longer than a trash time can be"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trash_times_take_units() {
        assert_eq!(parse_trash_time("86400"), Ok(Change::Set(86_400)));
        assert_eq!(parse_trash_time("1d"), Ok(Change::Set(86_400)));
        assert_eq!(parse_trash_time("2h30m"), Ok(Change::Set(9000)));
        assert_eq!(parse_trash_time("2h+"), Ok(Change::Raise(7200)));
        assert_eq!(parse_trash_time("-30m"), Ok(Change::Lower(1800)));
        assert!(parse_trash_time("1y").is_err());
        assert!(parse_trash_time("99999999w").is_err());
    }

    #[test]
    fn summary_lines_match_mfsgettrashtime() {
        assert_eq!(
            (FLAVOUR.files_line)(86_400, 3),
            " files with trashtime             86400 :          3"
        );
        assert_eq!(
            (FLAVOUR.dirs_line)(0, 2),
            " directories with trashtime           0 :          2"
        );
    }
}
