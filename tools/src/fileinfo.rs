//! `elkfs fileinfo` and `elkfs checkfile`: a file's chunks with every copy and its state, and
//! how many chunks have how many copies, printed as `mfsfileinfo`/`mfscheckfile` print them.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use elkfs_proto::info::{ChunkCopies, CopyState};
use elkfs_proto::master::{MasterReply, MasterRequest};
use elkfs_proto::types::FileKind;
use serde_json::{Value, json};

use crate::failure::Failure;
use crate::output::Report;
use crate::session::Session;
use crate::tree;

/// `elkfs fileinfo` and `elkfs checkfile`.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// Files inside an ElkFS mount.
    #[arg(required = true)]
    pub paths: Vec<PathBuf>,
}

/// Runs `elkfs fileinfo`.
pub fn fileinfo(args: &Args, session: &mut Session, report: &mut Report) {
    report.each_path(&args.paths, |shown, path| {
        let chunks = chunks_of(session, path)?;
        Ok((fileinfo_text(shown, &chunks), fileinfo_json(shown, &chunks)))
    });
}

/// Runs `elkfs checkfile`.
pub fn checkfile(args: &Args, session: &mut Session, report: &mut Report) {
    report.each_path(&args.paths, |shown, path| {
        let chunks = chunks_of(session, path)?;
        let tally = Tally::of(&chunks);
        Ok((tally.text(shown), tally.json(shown)))
    });
}

/// The chunks of the file at `path`, by index.
fn chunks_of(session: &mut Session, path: &Path) -> Result<Vec<ChunkCopies>, Failure> {
    let (info, attr) = tree::attributes(session, path)?;
    if attr.kind != FileKind::File {
        return Err(Failure {
            reason: "not a file".into(),
            errno: Some(if attr.kind == FileKind::Dir {
                libc::EISDIR
            } else {
                libc::EINVAL
            }),
        });
    }
    let request = MasterRequest::FileInfo { inode: info.inode };
    match session.ask(&info.master, &request, None)? {
        MasterReply::FileChunks(mut chunks) => {
            chunks.sort_by_key(|c| c.index);
            Ok(chunks)
        }
        _ => Err(Failure::unexpected()),
    }
}

/// MooseFS's name for a copy's state.
fn state_name(state: CopyState) -> &'static str {
    match state {
        CopyState::Valid => "VALID",
        CopyState::Marked => "MARKED FOR REMOVAL",
        CopyState::Stale => "WRONG VERSION",
        CopyState::Damaged => "INVALID",
    }
}

/// Whether a copy is current (counts for `checkfile`).
fn is_current(state: CopyState) -> bool {
    matches!(state, CopyState::Valid | CopyState::Marked)
}

/// The chunk slots up to the last chunk: `None` for a hole.
fn slots(chunks: &[ChunkCopies]) -> Vec<Option<&ChunkCopies>> {
    let Some(last) = chunks.last() else {
        return Vec::new();
    };
    let mut out = vec![None; last.index as usize + 1];
    for c in chunks {
        out[c.index as usize] = Some(c);
    }
    out
}

fn fileinfo_text(shown: &str, chunks: &[ChunkCopies]) -> String {
    let mut text = format!("{shown}:\n");
    let slots = slots(chunks);
    if slots.is_empty() {
        text.push_str("\tno chunks - empty file\n");
    }
    for (index, slot) in slots.iter().enumerate() {
        let Some(c) = slot else {
            text.push_str(&format!("\tchunk {index}: empty\n"));
            continue;
        };
        text.push_str(&format!(
            "\tchunk {index}: {:016X}_{:08X} / (id:{} ver:{})\n",
            c.chunk.0, c.version.0, c.chunk.0, c.version.0
        ));
        if c.copies.is_empty() {
            text.push_str("\t\tno valid copies !!!\n");
        }
        for (i, copy) in c.copies.iter().enumerate() {
            text.push_str(&format!(
                "\t\tcopy {}: {} (status:{})\n",
                i + 1,
                copy.server,
                state_name(copy.state)
            ));
        }
    }
    text
}

fn fileinfo_json(shown: &str, chunks: &[ChunkCopies]) -> Value {
    let chunks: Vec<Value> = chunks
        .iter()
        .map(|c| {
            let copies: Vec<Value> = c
                .copies
                .iter()
                .map(|copy| {
                    json!({
                        "server": copy.server.to_string(),
                        "version": copy.version.0,
                        "status": state_name(copy.state),
                    })
                })
                .collect();
            json!({
                "index": c.index,
                "id": c.chunk.0,
                "name": format!("{:016X}_{:08X}", c.chunk.0, c.version.0),
                "version": c.version.0,
                "refs": c.refs,
                "copies": copies,
            })
        })
        .collect();
    json!({ "path": shown, "chunks": chunks })
}

/// How many chunks have how many current copies, and how many slots are holes.
struct Tally {
    by_copies: BTreeMap<usize, u64>,
    holes: u64,
}

impl Tally {
    fn of(chunks: &[ChunkCopies]) -> Tally {
        let mut by_copies = BTreeMap::new();
        let mut holes = 0;
        for slot in slots(chunks) {
            match slot {
                Some(c) => {
                    let n = c.copies.iter().filter(|cp| is_current(cp.state)).count();
                    *by_copies.entry(n).or_default() += 1;
                }
                None => holes += 1,
            }
        }
        Tally { by_copies, holes }
    }

    fn text(&self, shown: &str) -> String {
        let mut text = format!("{shown}:\n");
        let mut ten_plus = 0;
        for (&copies, &count) in &self.by_copies {
            match copies {
                1 => text.push_str(&format!(" chunks with 1 copy:     {count:>10}\n")),
                n if n >= 10 => ten_plus += count,
                n => text.push_str(&format!(" chunks with {n} copies:   {count:>10}\n")),
            }
        }
        if ten_plus > 0 {
            text.push_str(&format!(" chunks with 10+ copies: {ten_plus:>10}\n"));
        }
        if self.holes > 0 {
            text.push_str(&format!(" empty (zero) chunks:    {:>10}\n", self.holes));
        }
        text
    }

    fn json(&self, shown: &str) -> Value {
        let by_copies: Vec<Value> = self
            .by_copies
            .iter()
            .map(|(copies, chunks)| json!({ "copies": copies, "chunks": chunks }))
            .collect();
        json!({ "path": shown, "chunks": by_copies, "empty_chunks": self.holes })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use elkfs_proto::info::CopyInfo;
    use elkfs_proto::{ChunkId, ChunkVersion};

    fn chunk(index: u32, id: u64, states: &[CopyState]) -> ChunkCopies {
        ChunkCopies {
            index,
            chunk: ChunkId(id),
            version: ChunkVersion(1),
            refs: 1,
            copies: states
                .iter()
                .enumerate()
                .map(|(i, s)| CopyInfo {
                    server: format!("127.0.0.1:{}", 9422 + i).parse().expect("address"),
                    version: ChunkVersion(1),
                    state: *s,
                })
                .collect(),
        }
    }

    #[test]
    fn fileinfo_matches_mfsfileinfo() {
        let chunks = [
            chunk(1, 203, &[CopyState::Valid, CopyState::Stale]),
            chunk(2, 204, &[]),
        ];
        assert_eq!(
            fileinfo_text("f", &chunks),
            "f:\n\
             \tchunk 0: empty\n\
             \tchunk 1: 00000000000000CB_00000001 / (id:203 ver:1)\n\
             \t\tcopy 1: 127.0.0.1:9422 (status:VALID)\n\
             \t\tcopy 2: 127.0.0.1:9423 (status:WRONG VERSION)\n\
             \tchunk 2: 00000000000000CC_00000001 / (id:204 ver:1)\n\
             \t\tno valid copies !!!\n"
        );
        assert_eq!(fileinfo_text("e", &[]), "e:\n\tno chunks - empty file\n");
    }

    #[test]
    fn checkfile_matches_mfscheckfile() {
        let chunks = [
            chunk(1, 1, &[CopyState::Valid]),
            chunk(2, 2, &[CopyState::Valid, CopyState::Marked]),
            chunk(3, 3, &[CopyState::Stale]),
        ];
        assert_eq!(
            Tally::of(&chunks).text("f"),
            "f:\n\
             \x20chunks with 0 copies:            1\n\
             \x20chunks with 1 copy:              1\n\
             \x20chunks with 2 copies:            1\n\
             \x20empty (zero) chunks:             1\n"
        );
    }
}
