//! The requests shared by the goal, trash time and eattr commands: read one inode's value, see
//! how a tree's values are spread, change one inode or a whole tree. A whole tree is one request
//! that the master works through, with a spinner on a terminal while it takes.

use std::path::Path;

use elkfs_client::mount_info::MountInfo;
use elkfs_proto::master::{Change, MasterReply, MasterRequest, TreeAttr};
use elkfs_proto::types::Attr;
use serde_json::{Value, json};

use crate::failure::Failure;
use crate::locate::mount_info;
use crate::session::{Session, caller};

/// How a tree change went, as the master counts it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counts {
    /// Inodes changed.
    pub changed: u64,
    /// Inodes that already had the value.
    pub unchanged: u64,
    /// Inodes the caller may not change.
    pub denied: u64,
}

impl Counts {
    /// The counts as JSON fields.
    pub fn to_json(self) -> Value {
        json!({
            "changed": self.changed,
            "not_changed": self.unchanged,
            "permission_denied": self.denied,
        })
    }

    /// The three MooseFS summary lines, each label already padded to its column.
    pub fn lines(self, labels: [&str; 3]) -> String {
        let [changed, unchanged, denied] = labels;
        format!(
            "{changed}{:>10}\n{unchanged}{:>10}\n{denied}{:>10}\n",
            self.changed, self.unchanged, self.denied
        )
    }
}

/// How many files and directories of a tree have each value: `(value, count)`, by value.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Spread {
    /// Everything but directories.
    pub files: Vec<(u64, u64)>,
    /// Directories.
    pub dirs: Vec<(u64, u64)>,
}

/// An inode's value of `which`.
pub fn value_of(attr: &Attr, which: TreeAttr) -> u64 {
    match which {
        TreeAttr::Goal => attr.goal as u64,
        TreeAttr::TrashTime => attr.trash_time as u64,
        TreeAttr::Eattr => attr.eattrs as u64,
    }
}

/// The mount's description of `path` and the inode's attributes.
pub fn attributes(session: &mut Session, path: &Path) -> Result<(MountInfo, Attr), Failure> {
    let info = mount_info(path)?;
    let attr = attr_of(session, &info)?;
    Ok((info, attr))
}

/// The attributes of the inode `info` names.
pub fn attr_of(session: &mut Session, info: &MountInfo) -> Result<Attr, Failure> {
    match session.ask(
        &info.master,
        &MasterRequest::GetAttr { inode: info.inode },
        None,
    )? {
        MasterReply::Attr(attr) => Ok(attr),
        _ => Err(Failure::unexpected()),
    }
}

/// Changes `which` on the inode, or on the whole tree below it when `recursive`.
pub fn change(
    session: &mut Session,
    info: &MountInfo,
    which: TreeAttr,
    change: Change,
    recursive: bool,
    shown: &str,
) -> Result<Counts, Failure> {
    let request = MasterRequest::ChangeTree {
        inode: info.inode,
        attr: which,
        change,
        recursive,
        caller: caller(),
    };
    match session.ask(&info.master, &request, Some(shown))? {
        MasterReply::TreeChanged {
            changed,
            unchanged,
            denied,
        } => Ok(Counts {
            changed,
            unchanged,
            denied,
        }),
        _ => Err(Failure::unexpected()),
    }
}

/// How the values of `which` are spread over the tree below the inode.
pub fn spread(
    session: &mut Session,
    info: &MountInfo,
    which: TreeAttr,
    shown: &str,
) -> Result<Spread, Failure> {
    let request = MasterRequest::SummarizeTree {
        inode: info.inode,
        attr: which,
    };
    match session.ask(&info.master, &request, Some(shown))? {
        MasterReply::TreeSummary { files, dirs } => Ok(Spread { files, dirs }),
        _ => Err(Failure::unexpected()),
    }
}

/// How a one-number attribute (goal, trash time) is read, changed and printed.
pub struct Flavour {
    /// The attribute.
    pub attr: TreeAttr,
    /// Its name in JSON output.
    pub key: &'static str,
    /// The line `setgoal`/`settrashtime` prints for one inode: `PATH: goal: 3`, `PATH: 100`.
    pub set_line: fn(&str, u64) -> String,
    /// A summary line for files with a value: `(value, count)`.
    pub files_line: fn(u64, u64) -> String,
    /// A summary line for directories with a value: `(value, count)`.
    pub dirs_line: fn(u64, u64) -> String,
    /// The labels of the changed / not changed / permission denied lines.
    pub changed_labels: [&'static str; 3],
}

/// `getgoal`/`gettrashtime`: the value of each path, or with `recursive` how it is spread.
pub fn get(
    session: &mut Session,
    report: &mut crate::output::Report,
    flavour: &Flavour,
    recursive: bool,
    paths: &[std::path::PathBuf],
) {
    report.each_path(paths, |shown, path| {
        if recursive {
            let info = mount_info(path)?;
            let spread = spread(session, &info, flavour.attr, shown)?;
            let mut text = format!("{shown}:\n");
            for &(value, count) in &spread.files {
                text.push_str(&(flavour.files_line)(value, count));
                text.push('\n');
            }
            for &(value, count) in &spread.dirs {
                text.push_str(&(flavour.dirs_line)(value, count));
                text.push('\n');
            }
            let list = |pairs: &[(u64, u64)]| -> Vec<Value> {
                pairs
                    .iter()
                    .map(|&(value, count)| json!({ flavour.key: value, "count": count }))
                    .collect()
            };
            let doc = json!({
                "path": shown,
                "files": list(&spread.files),
                "directories": list(&spread.dirs),
            });
            Ok((text, doc))
        } else {
            let (_, attr) = attributes(session, path)?;
            let value = value_of(&attr, flavour.attr);
            Ok((
                format!("{shown}: {value}\n"),
                json!({ "path": shown, flavour.key: value }),
            ))
        }
    });
}

/// `setgoal`/`settrashtime`: changes each path (or tree) and prints the new value or the counts.
pub fn set(
    session: &mut Session,
    report: &mut crate::output::Report,
    flavour: &Flavour,
    how: Change,
    recursive: bool,
    paths: &[std::path::PathBuf],
) {
    report.each_path(paths, |shown, path| {
        let info = mount_info(path)?;
        let counts = change(session, &info, flavour.attr, how, recursive, shown)?;
        if recursive {
            let text = format!("{shown}:\n{}", counts.lines(flavour.changed_labels));
            let mut doc = counts.to_json();
            doc["path"] = json!(shown);
            return Ok((text, doc));
        }
        if counts.denied > 0 {
            return Err(Failure::from_errno(libc::EPERM));
        }
        let value = value_of(&attr_of(session, &info)?, flavour.attr);
        let mut doc = counts.to_json();
        doc["path"] = json!(shown);
        doc[flavour.key] = json!(value);
        Ok(((flavour.set_line)(shown, value), doc))
    });
}

/// Parses `N`, `N+`/`+N` (raise to N) and `N-`/`-N` (lower to N); `number` reads N.
pub fn parse_change(
    text: &str,
    number: impl Fn(&str) -> Result<u64, String>,
) -> Result<Change, String> {
    let (digits, make): (&str, fn(u64) -> Change) = if let Some(n) = text.strip_suffix('+') {
        (n, Change::Raise)
    } else if let Some(n) = text.strip_prefix('+') {
        (n, Change::Raise)
    } else if let Some(n) = text.strip_suffix('-') {
        (n, Change::Lower)
    } else if let Some(n) = text.strip_prefix('-') {
        (n, Change::Lower)
    } else {
        (text, Change::Set)
    };
    Ok(make(number(digits)?))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plain(s: &str) -> Result<u64, String> {
        s.parse().map_err(|_| format!("bad number {s:?}"))
    }

    #[test]
    fn changes_parse_like_moosefs_and_with_a_leading_sign() {
        assert_eq!(parse_change("3", plain), Ok(Change::Set(3)));
        assert_eq!(parse_change("3+", plain), Ok(Change::Raise(3)));
        assert_eq!(parse_change("+3", plain), Ok(Change::Raise(3)));
        assert_eq!(parse_change("2-", plain), Ok(Change::Lower(2)));
        assert_eq!(parse_change("-2", plain), Ok(Change::Lower(2)));
        assert!(parse_change("x", plain).is_err());
        assert!(parse_change("+", plain).is_err());
    }

    #[test]
    fn summary_counts_line_up_in_their_column() {
        let c = Counts {
            changed: 4,
            unchanged: 1,
            denied: 0,
        };
        assert_eq!(
            c.lines(crate::goal::CHANGED_LABELS),
            " inodes with goal changed:                       4\n\
             \x20inodes with goal not changed:                   1\n\
             \x20inodes with permission denied:                  0\n"
        );
    }
}
