//! `elkfs getgoal` and `elkfs setgoal`: how many copies of each chunk to keep, printed as
//! MooseFS's `mfsgetgoal`/`mfssetgoal` print it.

use std::path::PathBuf;

use elkfs_proto::geometry::MAX_COPIES;
use elkfs_proto::master::{Change, TreeAttr};

use crate::output::Report;
use crate::session::Session;
use crate::tree::{self, Flavour};

/// `elkfs getgoal`.
#[derive(clap::Args, Debug)]
pub struct GetArgs {
    /// Show how the goals of the whole tree are spread.
    #[arg(short, long)]
    pub recursive: bool,
    /// Files or directories inside an ElkFS mount.
    #[arg(required = true)]
    pub paths: Vec<PathBuf>,
}

/// `elkfs setgoal`.
#[derive(clap::Args, Debug)]
pub struct SetArgs {
    /// Change the whole tree below each directory.
    #[arg(short, long)]
    pub recursive: bool,
    /// The goal (1-9); `N+` or `+N` only raises goals to N, `N-` or `-N` only lowers them.
    #[arg(value_parser = parse_goal, allow_hyphen_values = true)]
    pub goal: Change,
    /// Files or directories inside an ElkFS mount.
    #[arg(required = true)]
    pub paths: Vec<PathBuf>,
}

/// Labels of `setgoal -r`'s three lines, padded as `mfssetgoal` pads them.
pub const CHANGED_LABELS: [&str; 3] = [
    " inodes with goal changed:              ",
    " inodes with goal not changed:          ",
    " inodes with permission denied:         ",
];

const FLAVOUR: Flavour = Flavour {
    attr: TreeAttr::Goal,
    key: "goal",
    set_line: |path, goal| format!("{path}: goal: {goal}\n"),
    files_line: |goal, count| format!(" files with goal                {goal} : {count:>10}"),
    dirs_line: |goal, count| format!(" directories with goal          {goal} : {count:>10}"),
    changed_labels: CHANGED_LABELS,
};

/// Runs `elkfs getgoal`.
pub fn get(args: &GetArgs, session: &mut Session, report: &mut Report) {
    tree::get(session, report, &FLAVOUR, args.recursive, &args.paths);
}

/// Runs `elkfs setgoal`.
pub fn set(args: &SetArgs, session: &mut Session, report: &mut Report) {
    tree::set(
        session,
        report,
        &FLAVOUR,
        args.goal,
        args.recursive,
        &args.paths,
    );
}

fn parse_goal(text: &str) -> Result<Change, String> {
    tree::parse_change(text, |digits| match digits.parse::<u64>() {
        Ok(n) if (1..=MAX_COPIES as u64).contains(&n) => Ok(n),
        _ => Err(format!(
            "a goal is a number of copies from 1 to {MAX_COPIES}, optionally with + or -"
        )),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn goals_outside_1_to_9_are_refused() {
        assert_eq!(parse_goal("9"), Ok(Change::Set(9)));
        assert!(parse_goal("0").is_err());
        assert!(parse_goal("10+").is_err());
    }

    #[test]
    fn summary_lines_match_mfsgetgoal() {
        assert_eq!(
            (FLAVOUR.files_line)(2, 3),
            " files with goal                2 :          3"
        );
        assert_eq!(
            (FLAVOUR.dirs_line)(2, 2),
            " directories with goal          2 :          2"
        );
    }
}
