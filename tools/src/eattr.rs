//! `elkfs geteattr`, `seteattr` and `deleattr`: MooseFS's extra attributes (`noowner`,
//! `noattrcache`, `noentrycache`, `nodatacache`), printed as `mfsgeteattr` and friends print them.

use std::path::PathBuf;

use elkfs_proto::master::{Change, TreeAttr};
use elkfs_proto::types::eattr::NAMES;
use serde_json::{Map, Value, json};

use crate::failure::Failure;
use crate::locate::mount_info;
use crate::output::Report;
use crate::session::Session;
use crate::tree::{self, Spread};

/// `elkfs geteattr`.
#[derive(clap::Args, Debug)]
pub struct GetArgs {
    /// Count, for each attribute, the files and directories of the whole tree that have it.
    #[arg(short, long)]
    pub recursive: bool,
    /// Files or directories inside an ElkFS mount.
    #[arg(required = true)]
    pub paths: Vec<PathBuf>,
}

/// `elkfs seteattr` and `elkfs deleattr`.
#[derive(clap::Args, Debug)]
pub struct ChangeArgs {
    /// Change the whole tree below each directory.
    #[arg(short, long)]
    pub recursive: bool,
    /// An attribute: noowner, noattrcache, noentrycache or nodatacache (repeat, or separate
    /// with commas, for several).
    #[arg(short = 'f', long = "attr", value_name = "NAME", required = true, value_parser = parse_flags)]
    pub flags: Vec<u8>,
    /// Files or directories inside an ElkFS mount.
    #[arg(required = true)]
    pub paths: Vec<PathBuf>,
}

const CHANGED_LABELS: [&str; 3] = [
    " inodes with attributes changed:     ",
    " inodes with attributes not changed: ",
    " inodes with permission denied:      ",
];

/// Runs `elkfs geteattr`.
pub fn get(args: &GetArgs, session: &mut Session, report: &mut Report) {
    report.each_path(&args.paths, |shown, path| {
        if args.recursive {
            let info = mount_info(path)?;
            let spread = tree::spread(session, &info, TreeAttr::Eattr, shown)?;
            Ok(summary(shown, &spread))
        } else {
            let (_, attr) = tree::attributes(session, path)?;
            let names = names_of(attr.eattrs);
            let shown_names = if names.is_empty() {
                "-".to_string()
            } else {
                names.join(",")
            };
            Ok((
                format!("{shown}: {shown_names}\n"),
                json!({ "path": shown, "eattrs": names }),
            ))
        }
    });
}

/// Runs `elkfs seteattr` (`add`) or `elkfs deleattr`.
pub fn change(args: &ChangeArgs, add: bool, session: &mut Session, report: &mut Report) {
    let flags = args.flags.iter().fold(0u8, |all, f| all | f) as u64;
    let how = if add {
        Change::AddFlags(flags)
    } else {
        Change::RemoveFlags(flags)
    };
    report.each_path(&args.paths, |shown, path| {
        let info = mount_info(path)?;
        let counts = tree::change(session, &info, TreeAttr::Eattr, how, args.recursive, shown)?;
        let mut doc = counts.to_json();
        doc["path"] = json!(shown);
        if args.recursive {
            return Ok((format!("{shown}:\n{}", counts.lines(CHANGED_LABELS)), doc));
        }
        if counts.denied > 0 {
            return Err(Failure::from_errno(libc::EPERM));
        }
        let what = if counts.changed > 0 {
            "changed"
        } else {
            "not changed"
        };
        Ok((format!("{shown}: attribute(s) {what}\n"), doc))
    });
}

/// `geteattr -r`: for each attribute, how many non-directories and directories have it.
fn summary(shown: &str, spread: &Spread) -> (String, Value) {
    let count = |pairs: &[(u64, u64)], flag: u8| -> u64 {
        pairs
            .iter()
            .filter(|(value, _)| value & flag as u64 != 0)
            .map(|(_, n)| n)
            .sum()
    };
    let mut text = format!("{shown}:\n");
    let mut files = Map::new();
    let mut dirs = Map::new();
    for (flag, name) in NAMES {
        let (f, d) = (count(&spread.files, flag), count(&spread.dirs, flag));
        text.push_str(&format!(
            " not directory nodes with attribute {name:>16} : {f:>10}\n"
        ));
        text.push_str(&format!(
            " directories with attribute         {name:>16} : {d:>10}\n"
        ));
        files.insert(name.to_string(), json!(f));
        dirs.insert(name.to_string(), json!(d));
    }
    let doc = json!({ "path": shown, "files": files, "directories": dirs });
    (text, doc)
}

/// The names of the flags set in `eattrs`, in MooseFS's order.
fn names_of(eattrs: u8) -> Vec<&'static str> {
    NAMES
        .iter()
        .filter(|(flag, _)| eattrs & flag != 0)
        .map(|(_, name)| *name)
        .collect()
}

/// Reads `noowner` or `noowner,nodatacache` as flags.
fn parse_flags(text: &str) -> Result<u8, String> {
    let mut flags = 0;
    for name in text.split(',').map(str::trim).filter(|n| !n.is_empty()) {
        let known = NAMES.iter().find(|(_, n)| n.eq_ignore_ascii_case(name));
        match known {
            Some((flag, _)) => flags |= flag,
            None => {
                let all: Vec<&str> = NAMES.iter().map(|(_, n)| *n).collect();
                return Err(format!(
                    "unknown attribute {name:?} (known: {})",
                    all.join(", ")
                ));
            }
        }
    }
    if flags == 0 {
        return Err("no attribute given".into());
    }
    Ok(flags)
}

#[cfg(test)]
mod tests {
    use super::*;
    use elkfs_proto::types::eattr;

    #[test]
    fn attribute_names_parse_alone_or_with_commas() {
        assert_eq!(parse_flags("noowner"), Ok(eattr::NOOWNER));
        assert_eq!(
            parse_flags("noowner,nodatacache"),
            Ok(eattr::NOOWNER | eattr::NODATACACHE)
        );
        assert!(parse_flags("undeletable").is_err());
        assert_eq!(
            names_of(eattr::NOOWNER | eattr::NODATACACHE),
            ["noowner", "nodatacache"]
        );
    }

    #[test]
    fn tree_summary_matches_mfsgeteattr() {
        let spread = Spread {
            files: vec![(0, 2), (eattr::NOOWNER as u64, 1)],
            dirs: vec![(eattr::NOATTRCACHE as u64, 2)],
        };
        let (text, _) = summary("d", &spread);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines[0], "d:");
        assert_eq!(
            lines[1],
            " not directory nodes with attribute          noowner :          1"
        );
        assert_eq!(
            lines[4],
            " directories with attribute              noattrcache :          2"
        );
        assert_eq!(lines.len(), 9);
    }
}
