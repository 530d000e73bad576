//! `elkfs trash list|restore|purge`: deleted files wait in the trash for their trash time; they
//! can be listed with where they were and when they were deleted, put back where they were
//! (missing directories are made again), or purged before their time.
//!
//! A PATH names where files were, so it may no longer exist: `elkfs trash restore dir` after
//! `rm -r dir` puts back every file that was under `dir` (the newest deletion of each name).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use elkfs_proto::InodeId;
use elkfs_proto::info::TrashEntry;
use elkfs_proto::master::{MasterReply, MasterRequest};
use elkfs_proto::types::Timestamp;
use serde_json::{Value, json};

use crate::failure::Failure;
use crate::locate::{Place, cluster_master, place};
use crate::output::Report;
use crate::session::Session;

/// How errors and JSON name the trash as a whole (no path given).
const WHOLE_TRASH: &str = "(trash)";

/// `elkfs trash ...`.
#[derive(clap::Subcommand, Debug)]
pub enum TrashCommand {
    /// List the deleted files that were at or below PATH (default: the current directory; with
    /// no ElkFS path, the whole trash). A user sees only their own deleted files; root, all.
    List(ListArgs),
    /// Put deleted files back where they were.
    Restore(SelectArgs),
    /// Delete files in the trash for good, before their trash time is up.
    Purge(PurgeArgs),
}

/// `elkfs trash list`.
#[derive(clap::Args, Debug)]
pub struct ListArgs {
    /// Where the files were (it need not exist any more).
    pub path: Option<PathBuf>,
    /// The master to ask when not going by a path (default: $ELKFS_MASTER, or localhost:9421).
    #[arg(long, value_name = "HOST[:PORT]")]
    pub master: Option<String>,
}

/// `elkfs trash restore`.
#[derive(clap::Args, Debug)]
#[command(arg_required_else_help = true)]
pub struct SelectArgs {
    /// Where the files were: every file deleted at or below each PATH.
    pub paths: Vec<PathBuf>,
    /// A trashed file by the inode number `trash list` shows (repeatable).
    #[arg(long = "inode", value_name = "N")]
    pub inodes: Vec<u64>,
    /// The master for --inode (default: the current directory's, $ELKFS_MASTER, localhost:9421).
    #[arg(long, value_name = "HOST[:PORT]")]
    pub master: Option<String>,
}

/// `elkfs trash purge`.
#[derive(clap::Args, Debug)]
#[command(arg_required_else_help = true)]
pub struct PurgeArgs {
    #[command(flatten)]
    select: SelectArgs,
    /// Purge every deleted file of the user's (root: the whole trash).
    #[arg(long, conflicts_with_all = ["paths", "inodes"])]
    all: bool,
}

/// Runs `elkfs trash ...`.
pub fn run(command: &TrashCommand, session: &mut Session, report: &mut Report) {
    match command {
        TrashCommand::List(args) => list(args, session, report),
        TrashCommand::Restore(args) => restore(args, session, report),
        TrashCommand::Purge(args) => purge(args, session, report),
    }
}

fn list(args: &ListArgs, session: &mut Session, report: &mut Report) {
    // Without a path, the current directory when it is on ElkFS, else the whole trash.
    let by_path = args.path.clone().or_else(|| {
        (args.master.is_none() && on_elkfs(Path::new("."))).then(|| PathBuf::from("."))
    });
    let (shown, outcome) = match by_path {
        Some(path) => {
            let shown = path.display().to_string();
            let outcome = place(&path).and_then(|place| {
                let all = entries(session, &place.info.master)?;
                let under: Vec<TrashEntry> = all
                    .into_iter()
                    .filter(|e| place.contains(&e.path))
                    .collect();
                Ok((Some(place), under))
            });
            (shown, outcome)
        }
        None => {
            let outcome = cluster_master(args.master.as_deref(), None)
                .and_then(|master| entries(session, &master))
                .map(|all| (None, all));
            (WHOLE_TRASH.to_string(), outcome)
        }
    };
    let outcome = outcome.map(|(place, entries)| {
        let named = place.as_ref().map(|place| Named {
            place,
            given: &shown,
        });
        let rows: Vec<Row> = entries.iter().map(|e| Row::new(e, named)).collect();
        let docs: Vec<Value> = rows.iter().map(Row::json).collect();
        (table(&rows), json!({ "path": shown, "entries": docs }))
    });
    report.add(&shown, outcome);
}

fn restore(args: &SelectArgs, session: &mut Session, report: &mut Report) {
    for path in &args.paths {
        let shown = path.display().to_string();
        let chosen = trashed_under(session, path)
            .map(|(place, under)| (place, newest_per_path(under.into_iter())));
        let (place, chosen) = match chosen {
            Ok(c) => c,
            Err(f) => {
                report.failure(&shown, &f);
                continue;
            }
        };
        let master = place.info.master.clone();
        let named = Named {
            place: &place,
            given: &shown,
        };
        let done = restore_each(session, report, &master, Some(named), &chosen);
        if !done.is_empty() {
            let text = format!("{shown}: {} restored\n", files(done.len()));
            report.success(&text, json!({ "path": shown, "restored": done }));
        }
    }
    if !args.inodes.is_empty() {
        by_inode(args, session, report, |session, report, master, entries| {
            let done = restore_each(session, report, master, None, entries);
            for path in done {
                report.success(
                    &format!("{path}: restored\n"),
                    json!({ "path": path, "restored": [path] }),
                );
            }
        });
    }
}

fn purge(args: &PurgeArgs, session: &mut Session, report: &mut Report) {
    if args.all {
        let shown = WHOLE_TRASH;
        let outcome = cluster_master(args.select.master.as_deref(), None).and_then(|master| {
            // The master purges the files the caller owns and names them.
            let count = match session.ask(
                &master,
                &MasterRequest::TrashPurge {
                    inode: None,
                    caller: crate::session::caller(),
                },
                Some("the trash"),
            )? {
                MasterReply::Trash(purged) => purged.len(),
                _ => return Err(Failure::unexpected()),
            };
            Ok((
                format!("{} purged\n", files(count)),
                json!({ "path": shown, "purged": count }),
            ))
        });
        report.add(shown, outcome);
        return;
    }
    for path in &args.select.paths {
        let shown = path.display().to_string();
        let chosen = trashed_under(session, path);
        let (place, chosen) = match chosen {
            Ok(c) => c,
            Err(f) => {
                report.failure(&shown, &f);
                continue;
            }
        };
        let master = place.info.master.clone();
        let named = Named {
            place: &place,
            given: &shown,
        };
        let n = purge_each(session, report, &master, Some(named), &chosen);
        if n > 0 {
            report.success(
                &format!("{shown}: {} purged\n", files(n)),
                json!({ "path": shown, "purged": n }),
            );
        }
    }
    if !args.select.inodes.is_empty() {
        by_inode(
            &args.select,
            session,
            report,
            |session, report, master, entries| {
                for e in entries {
                    if purge_each(session, report, master, None, std::slice::from_ref(e)) > 0 {
                        report.success(
                            &format!("{}: purged\n", e.path),
                            json!({ "path": e.path, "purged": 1 }),
                        );
                    }
                }
            },
        );
    }
}

/// Finds the `--inode` entries in the trash and hands them to `work`.
fn by_inode(
    args: &SelectArgs,
    session: &mut Session,
    report: &mut Report,
    work: impl FnOnce(&mut Session, &mut Report, &str, &[TrashEntry]),
) {
    let master = match cluster_master(args.master.as_deref(), None) {
        Ok(m) => m,
        Err(f) => return report.failure(WHOLE_TRASH, &f),
    };
    let all = match entries(session, &master) {
        Ok(all) => all,
        Err(f) => return report.failure(WHOLE_TRASH, &f),
    };
    let mut found = Vec::new();
    for &inode in &args.inodes {
        match all.iter().find(|e| e.inode == InodeId(inode)) {
            Some(e) => found.push(e.clone()),
            None => report.failure(
                &format!("inode {inode}"),
                &Failure {
                    reason: "not in the trash".into(),
                    errno: Some(libc::ENOENT),
                },
            ),
        }
    }
    work(session, report, &master, &found);
}

/// Restores each entry; failures are reported under the file's path. Returns the paths restored.
fn restore_each(
    session: &mut Session,
    report: &mut Report,
    master: &str,
    named: Option<Named<'_>>,
    entries: &[TrashEntry],
) -> Vec<String> {
    let mut done = Vec::new();
    for e in entries {
        let path = shown_path(e, named);
        let request = MasterRequest::TrashRestore {
            inode: e.inode,
            caller: crate::session::caller(),
        };
        match done_reply(session.ask(master, &request, Some(&path))) {
            Ok(()) => done.push(path),
            Err(f) => report.failure(&path, &f),
        }
    }
    done
}

/// Purges each entry; failures are reported under the file's path. Returns how many went.
fn purge_each(
    session: &mut Session,
    report: &mut Report,
    master: &str,
    named: Option<Named<'_>>,
    entries: &[TrashEntry],
) -> usize {
    let mut n = 0;
    for e in entries {
        let request = MasterRequest::TrashPurge {
            inode: Some(e.inode),
            caller: crate::session::caller(),
        };
        match done_reply(session.ask(master, &request, None)) {
            Ok(()) => n += 1,
            Err(f) => report.failure(&shown_path(e, named), &f),
        }
    }
    n
}

fn done_reply(reply: Result<MasterReply, Failure>) -> Result<(), Failure> {
    done(reply).map(|_| ())
}

fn done(reply: Result<MasterReply, Failure>) -> Result<MasterReply, Failure> {
    match reply? {
        r @ MasterReply::Done => Ok(r),
        _ => Err(Failure::unexpected()),
    }
}

/// Everything in the trash of the cluster at `master`.
/// Where `path` is, and the trashed files that were at or below it (an error when none were).
fn trashed_under(session: &mut Session, path: &Path) -> Result<(Place, Vec<TrashEntry>), Failure> {
    let place = place(path)?;
    let under: Vec<TrashEntry> = entries(session, &place.info.master)?
        .into_iter()
        .filter(|e| place.contains(&e.path))
        .collect();
    if under.is_empty() {
        return Err(Failure {
            reason: "nothing in the trash was there".into(),
            errno: Some(libc::ENOENT),
        });
    }
    Ok((place, under))
}

fn entries(session: &mut Session, master: &str) -> Result<Vec<TrashEntry>, Failure> {
    match session.ask(
        master,
        &MasterRequest::TrashList {
            caller: crate::session::caller(),
        },
        None,
    )? {
        MasterReply::Trash(mut entries) => {
            entries.sort_by(|a, b| a.path.cmp(&b.path).then(a.deleted.cmp(&b.deleted)));
            Ok(entries)
        }
        _ => Err(Failure::unexpected()),
    }
}

/// For each original path, the file deleted last (only one can go back there).
fn newest_per_path(entries: impl Iterator<Item = TrashEntry>) -> Vec<TrashEntry> {
    let mut newest: BTreeMap<String, TrashEntry> = BTreeMap::new();
    for e in entries {
        match newest.get(&e.path) {
            Some(kept) if kept.deleted >= e.deleted => {}
            _ => {
                newest.insert(e.path.clone(), e);
            }
        }
    }
    newest.into_values().collect()
}

fn on_elkfs(path: &Path) -> bool {
    crate::locate::mount_info(path).is_ok()
}

/// A place in the namespace and how the user named it, to show trashed paths the same way.
#[derive(Clone, Copy)]
struct Named<'a> {
    place: &'a Place,
    given: &'a str,
}

/// The path to show for an entry: as the user named its place when there is one, else as the
/// master has it (from the root of the filesystem).
fn shown_path(e: &TrashEntry, named: Option<Named<'_>>) -> String {
    named
        .and_then(|n| n.place.shown(n.given, &e.path))
        .unwrap_or_else(|| e.path.clone())
}

fn files(n: usize) -> String {
    if n == 1 {
        "1 file".into()
    } else {
        format!("{n} files")
    }
}

/// One line of `trash list`.
struct Row {
    inode: u64,
    deleted: Timestamp,
    expires: Timestamp,
    length: u64,
    path: String,
    original: String,
}

impl Row {
    fn new(e: &TrashEntry, named: Option<Named<'_>>) -> Row {
        Row {
            inode: e.inode.0,
            deleted: e.deleted,
            expires: e.expires,
            length: e.length,
            path: shown_path(e, named),
            original: e.path.clone(),
        }
    }

    fn json(&self) -> Value {
        json!({
            "inode": self.inode,
            "path": self.path,
            "original_path": self.original,
            "deleted": self.deleted.secs,
            "expires": self.expires.secs,
            "length": self.length,
        })
    }
}

/// The rows as aligned columns under a header (nothing at all when the trash is empty).
fn table(rows: &[Row]) -> String {
    if rows.is_empty() {
        return String::new();
    }
    let inode_w = rows
        .iter()
        .map(|r| r.inode.to_string().len())
        .max()
        .unwrap_or(0)
        .max(5);
    let length_w = rows
        .iter()
        .map(|r| r.length.to_string().len())
        .max()
        .unwrap_or(0)
        .max(6);
    let mut text = format!(
        "{:>inode_w$}  {:<19}  {:<19}  {:>length_w$}  path\n",
        "inode", "deleted", "expires", "length"
    );
    for r in rows {
        text.push_str(&format!(
            "{:>inode_w$}  {:<19}  {:<19}  {:>length_w$}  {}\n",
            r.inode,
            local_time(r.deleted),
            local_time(r.expires),
            r.length,
            r.path
        ));
    }
    text
}

/// `YYYY-MM-DD HH:MM:SS` in local time.
pub fn local_time(t: Timestamp) -> String {
    let secs = t.secs as libc::time_t;
    // SAFETY: `tm` is plain data, and localtime_r only writes into it.
    let mut tm: libc::tm = unsafe { std::mem::zeroed() };
    // SAFETY: both pointers are valid for the call.
    if unsafe { libc::localtime_r(&secs, &mut tm) }.is_null() {
        return t.secs.to_string();
    }
    format!(
        "{:04}-{:02}-{:02} {:02}:{:02}:{:02}",
        tm.tm_year + 1900,
        tm.tm_mon + 1,
        tm.tm_mday,
        tm.tm_hour,
        tm.tm_min,
        tm.tm_sec
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(inode: u64, path: &str, deleted: i64) -> TrashEntry {
        TrashEntry {
            inode: InodeId(inode),
            path: path.into(),
            deleted: Timestamp {
                secs: deleted,
                nanos: 0,
            },
            expires: Timestamp {
                secs: deleted + 60,
                nanos: 0,
            },
            length: 5,
        }
    }

    #[test]
    fn only_the_newest_deletion_of_a_name_is_restored() {
        let chosen = newest_per_path(
            [
                entry(1, "/d/a", 10),
                entry(2, "/d/a", 20),
                entry(3, "/d/b", 5),
            ]
            .into_iter(),
        );
        let inodes: Vec<u64> = chosen.iter().map(|e| e.inode.0).collect();
        assert_eq!(inodes, [2, 3]);
    }

    #[test]
    fn the_list_is_a_table_with_a_header() {
        let rows = [Row::new(&entry(7, "/d/a", 0), None)];
        let text = table(&rows);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 2);
        assert!(lines[0].starts_with("inode  deleted"), "{text}");
        assert!(lines[1].starts_with("    7  "), "{text}");
        assert!(lines[1].ends_with("       5  /d/a"), "{text}");
        assert_eq!(table(&[]), "");
    }
}
