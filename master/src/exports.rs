//! The exports file: which client addresses may mount which directories, and with what options
//! (read-only, root mapping, goal and trash-time limits). It has the shape and option names of
//! MooseFS's `mfsexports.cfg`, so an existing file can be reused.
//!
//! One rule per line, `ADDRESS PATH [OPTIONS]`; `#` starts a comment. As in MooseFS, the first
//! rule in file order whose address and path both fit a mount decides its options.

use elkfs_common::duration::{parse_decimal, parse_seconds};
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::{Path, PathBuf};

/// Where root is mapped when a rule does not say: MooseFS's default, 999:999.
const DEFAULT_MAPROOT: (u32, Option<u32>) = (999, Some(999));
/// The highest goal a rule may allow (and allows by default).
const MAX_GOAL: u8 = 9;
/// The longest trash time a rule allows by default, in seconds (MooseFS's default).
const DEFAULT_MAX_TRASH_TIME: u64 = u32::MAX as u64;
/// What an address may look like, for error messages.
const ADDRESS_FORMS: &str =
    "expected *, A.B.C.D, A.B.C.D/BITS, A.B.C.D/M.M.M.M, A.B.C.D-E.F.G.H or an IPv6 address";

/// The parsed exports file: the rules in file order, and the file they came from.
#[derive(Clone, Debug)]
pub struct Exports {
    file: Option<PathBuf>,
    rules: Vec<Rule>,
}

/// The options of one rule: what a session admitted by it may do.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ExportOptions {
    /// No change to the filesystem is allowed (`ro`/`readonly`, the default; `rw`/`readwrite`).
    pub read_only: bool,
    /// Any directory below the rule's path may be mounted, not only the path itself (`alldirs`).
    pub alldirs: bool,
    /// uid (and gid) that root is mapped to (`maproot=UID[:GID]`, default 999:999); `None`
    /// when `maproot=0`, i.e. root stays root. A gid of `None` keeps the caller's gid.
    pub maproot: Option<(u32, Option<u32>)>,
    /// uid (and gid) every caller is mapped to (`mapall=UID[:GID]`, default none); a gid of
    /// `None` keeps the caller's gid.
    pub mapall: Option<(u32, Option<u32>)>,
    /// The password a client must give to mount (`password=PASS`, default none); it cannot
    /// hold `,`, `#` or whitespace, which end it in the file.
    pub password: Option<String>,
    /// Lowest goal the session may set (`mingoal=N`, 1 to 9, default 1).
    pub min_goal: u8,
    /// Highest goal the session may set (`maxgoal=N`, 1 to 9, default 9).
    pub max_goal: u8,
    /// Shortest trash time the session may set, in seconds (`mintrashtime=`, default 0).
    pub min_trash_time: u64,
    /// Longest trash time the session may set, in seconds (`maxtrashtime=`, default 2^32-1).
    pub max_trash_time: u64,
    /// Group permissions are not checked (`ignoregid`), as in MooseFS.
    pub ignore_gid: bool,
    /// The session may run administrative commands (`admin`).
    pub admin: bool,
    /// A session may reconnect from another address (`dynamicip`).
    pub dynamic_ip: bool,
}

/// What a session was admitted with: the options of the rule that matched, its line, and the
/// path it exported.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Admission {
    /// Line of the rule in the exports file (0 for the built-in loopback rules).
    pub line: usize,
    /// The path the rule exports (normalized), which is the mounted directory or above it.
    pub path: String,
    /// The rule's options.
    pub options: ExportOptions,
}

/// Why a client may not mount what it asked for; the message is meant for the user.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    /// No rule covers the client's address at all.
    #[error("no line of the exports file lets {ip} mount anything")]
    NoRuleForHost {
        /// The client's address.
        ip: IpAddr,
    },
    /// Rules cover the address, but none of them exports the directory asked for.
    #[error("no line of the exports file lets {ip} mount {path}")]
    NoRuleForPath {
        /// The client's address.
        ip: IpAddr,
        /// The directory asked for (normalized).
        path: String,
    },
    /// The directory asked for is not a valid path, so no rule can export it.
    #[error("cannot mount {path:?}: the path {reason}")]
    BadPath {
        /// The directory as asked for.
        path: String,
        /// What is wrong with it.
        reason: &'static str,
    },
}

/// Why the exports file could not be used.
#[derive(Debug, thiserror::Error)]
pub enum ExportsError {
    /// The file could not be read (missing, unreadable, not UTF-8).
    #[error("cannot read the exports file {}: {source}", file.display())]
    Read {
        /// The exports file.
        file: PathBuf,
        /// The error the OS returned.
        #[source]
        source: io::Error,
    },
    /// A line is not a valid rule.
    #[error("{} line {line}: {problem}", file.display())]
    Line {
        /// The exports file.
        file: PathBuf,
        /// The line number, from 1.
        line: usize,
        /// What is wrong with the line, naming the offending text.
        problem: LineProblem,
    },
}

/// What is wrong with one line of the exports file.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum LineProblem {
    /// The line has an address but no path.
    #[error("{0:?} has no path: expected ADDRESS PATH [OPTIONS]")]
    MissingPath(String),
    /// Something follows the options (a space inside the option list, most likely).
    #[error("unexpected {0:?} after the options (options are one comma-separated list, no spaces)")]
    ExtraField(String),
    /// The address is not one of the accepted forms.
    #[error("bad address {text:?}: {reason}")]
    BadAddress {
        /// The address as written.
        text: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// The path is not absolute or contains `.` or `..`.
    #[error("bad path {text:?}: the path {reason}")]
    BadPath {
        /// The path as written.
        text: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// Two commas in a row, or a comma at either end of the options.
    #[error("empty option in {0:?}")]
    EmptyOption(String),
    /// An option ElkFS does not know.
    #[error("unknown option {0:?}")]
    UnknownOption(String),
    /// An option that takes a value was given none.
    #[error("option {0:?} needs a value, like {0}=VALUE")]
    MissingValue(String),
    /// An option's value is malformed or out of range.
    #[error("bad value in option {option:?}: {reason}")]
    BadValue {
        /// The option as written.
        option: String,
        /// What the value should be.
        reason: &'static str,
    },
    /// An option repeats an earlier one on the line with another value (`ro,rw`).
    #[error("option {option:?} conflicts with {earlier:?} on the same line")]
    Conflict {
        /// The later option, as written.
        option: String,
        /// The earlier option, as written.
        earlier: String,
    },
    /// A lower limit is above the upper one (`mingoal=5,maxgoal=3`).
    #[error("min{what} ({min}) is above max{what} ({max})")]
    MinAboveMax {
        /// `goal` or `trashtime`.
        what: &'static str,
        /// The lower limit in effect.
        min: u64,
        /// The upper limit in effect.
        max: u64,
    },
}

/// One line of the file that is a rule.
#[derive(Clone, Debug)]
struct Rule {
    line: usize,
    hosts: Hosts,
    path: String,
    options: ExportOptions,
}

/// The client addresses one rule covers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Hosts {
    /// `*`: every IPv4 and IPv6 address.
    Any,
    /// An inclusive range of IPv4 addresses (a single address, network or range).
    V4 { first: u32, last: u32 },
    /// One IPv6 address.
    V6(Ipv6Addr),
}

/// What one non-blank line of the file holds.
enum Entry {
    Rule(Hosts, String, ExportOptions),
    /// A rule for MooseFS's meta filesystem (path `.`), which ElkFS does not have.
    Meta,
}

impl Exports {
    /// Reads and parses the exports file at `path`; also returns warnings (lines skipped).
    pub fn load(path: &Path) -> Result<(Exports, Vec<String>), ExportsError> {
        let text = std::fs::read_to_string(path).map_err(|source| ExportsError::Read {
            file: path.to_path_buf(),
            source,
        })?;
        Exports::parse(&text, path)
    }

    /// Parses the text of an exports file; `file` names it in errors and warnings.
    pub fn parse(text: &str, file: &Path) -> Result<(Exports, Vec<String>), ExportsError> {
        let mut rules = Vec::new();
        let mut warnings = Vec::new();
        for (index, raw) in text.lines().enumerate() {
            let line = index + 1;
            let content = raw.split_once('#').map_or(raw, |(before, _)| before);
            let fields: Vec<&str> = content.split_whitespace().collect();
            if fields.is_empty() {
                continue;
            }
            let entry = parse_entry(&fields).map_err(|problem| ExportsError::Line {
                file: file.to_path_buf(),
                line,
                problem,
            })?;
            match entry {
                Entry::Rule(hosts, path, options) => rules.push(Rule {
                    line,
                    hosts,
                    path,
                    options,
                }),
                Entry::Meta => warnings.push(format!(
                    "{} line {line}: the meta filesystem (path \".\") does not exist in ElkFS, \
                     so the line is skipped; `elkfs trash` lists and restores deleted files",
                    file.display()
                )),
            }
        }
        if rules.is_empty() {
            warnings.push(format!(
                "{} has no rules: no client may mount",
                file.display()
            ));
        }
        let exports = Exports {
            file: Some(file.to_path_buf()),
            rules,
        };
        Ok((exports, warnings))
    }

    /// The rules used without an exports file: loopback clients (127.0.0.0/8 and ::1) may mount
    /// any directory read-write, root stays root.
    pub fn loopback_only() -> Exports {
        let options = ExportOptions {
            read_only: false,
            alldirs: true,
            maproot: None,
            ..ExportOptions::default()
        };
        let rule = |hosts| Rule {
            line: 0,
            hosts,
            path: "/".to_string(),
            options: options.clone(),
        };
        let loopback_v4 = Hosts::V4 {
            first: u32::from(Ipv4Addr::new(127, 0, 0, 0)),
            last: u32::from(Ipv4Addr::new(127, 255, 255, 255)),
        };
        Exports {
            file: None,
            rules: vec![rule(loopback_v4), rule(Hosts::V6(Ipv6Addr::LOCALHOST))],
        }
    }

    /// The exports file the rules came from; `None` for [`Exports::loopback_only`].
    pub fn file(&self) -> Option<&Path> {
        self.file.as_deref()
    }

    /// Whether some rule covers the address, whatever its path: checked when a client connects,
    /// so unknown hosts are turned away before they ask for anything.
    pub fn admits_host(&self, ip: IpAddr) -> bool {
        self.rules.iter().any(|rule| rule.hosts.contains(ip))
    }

    /// The first rule (file order) that matches the address and lets it mount `subdir`
    /// (normalized like a rule's path; a missing leading `/` is added): the rule's path equals
    /// `subdir`, or the rule has `alldirs` and `subdir` is below its path ("/" is above
    /// everything). Rules whose address matches but whose path does not are skipped.
    pub fn admit(&self, ip: IpAddr, subdir: &str) -> Result<Admission, Refusal> {
        let absolute = if subdir.starts_with('/') {
            normalize_path(subdir)
        } else {
            normalize_path(&format!("/{subdir}"))
        };
        let wanted = absolute.map_err(|reason| Refusal::BadPath {
            path: subdir.to_string(),
            reason,
        })?;
        let mut host_known = false;
        for rule in self.rules.iter().filter(|rule| rule.hosts.contains(ip)) {
            host_known = true;
            if rule.exports(&wanted) {
                return Ok(Admission {
                    line: rule.line,
                    path: rule.path.clone(),
                    options: rule.options.clone(),
                });
            }
        }
        let ip = ip.to_canonical();
        Err(if host_known {
            Refusal::NoRuleForPath { ip, path: wanted }
        } else {
            Refusal::NoRuleForHost { ip }
        })
    }
}

impl Default for ExportOptions {
    /// The options of a rule that lists none (MooseFS's defaults): read-only, root mapped to
    /// 999:999, goals 1 to 9, any trash time up to 2^32-1 seconds.
    fn default() -> Self {
        ExportOptions {
            read_only: true,
            alldirs: false,
            maproot: Some(DEFAULT_MAPROOT),
            mapall: None,
            password: None,
            min_goal: 1,
            max_goal: MAX_GOAL,
            min_trash_time: 0,
            max_trash_time: DEFAULT_MAX_TRASH_TIME,
            ignore_gid: false,
            admin: false,
            dynamic_ip: false,
        }
    }
}

impl ExportOptions {
    /// Maps a caller's uid/gid as MooseFS does: root (uid 0) follows `maproot`, every other
    /// user `mapall`. A gid of `None` keeps the caller's gid, since the master does not know
    /// users' primary groups. Returns (uid, gid).
    pub fn map_ids(&self, uid: u32, gid: u32) -> (u32, u32) {
        let mapping = if uid == 0 { self.maproot } else { self.mapall };
        match mapping {
            Some((to_uid, to_gid)) => (to_uid, to_gid.unwrap_or(gid)),
            None => (uid, gid),
        }
    }
}

impl Rule {
    /// Whether this rule lets a client mount `wanted` (a normalized path).
    fn exports(&self, wanted: &str) -> bool {
        if wanted == self.path {
            return true;
        }
        self.options.alldirs
            && (self.path == "/"
                || wanted
                    .strip_prefix(self.path.as_str())
                    .is_some_and(|rest| rest.starts_with('/')))
    }
}

impl Hosts {
    /// Parses an address field; an IPv4-mapped IPv6 address is taken as its IPv4 address.
    fn parse(text: &str) -> Result<Hosts, LineProblem> {
        let bad = |reason| LineProblem::BadAddress {
            text: text.to_string(),
            reason,
        };
        if text == "*" {
            return Ok(Hosts::Any);
        }
        if let Some((first, last)) = text.split_once('-') {
            let (Some(first), Some(last)) = (parse_v4(first), parse_v4(last)) else {
                return Err(bad("a range is two IPv4 addresses, A.B.C.D-E.F.G.H"));
            };
            if first > last {
                return Err(bad("the first address of the range is above the last"));
            }
            return Ok(Hosts::V4 { first, last });
        }
        if let Some((address, mask)) = text.split_once('/') {
            let address = parse_v4(address)
                .ok_or_else(|| bad("a network is an IPv4 address with /BITS or /M.M.M.M"))?;
            let mask = parse_mask(mask).map_err(bad)?;
            let first = address & mask;
            return Ok(Hosts::V4 {
                first,
                last: first | !mask,
            });
        }
        match text.parse::<IpAddr>().map(|ip| ip.to_canonical()) {
            Ok(IpAddr::V4(v4)) => Ok(Hosts::V4 {
                first: u32::from(v4),
                last: u32::from(v4),
            }),
            Ok(IpAddr::V6(v6)) => Ok(Hosts::V6(v6)),
            Err(_) => Err(bad(ADDRESS_FORMS)),
        }
    }

    /// Whether a client at `ip` is covered; an IPv4-mapped IPv6 peer counts as its IPv4 address.
    fn contains(self, ip: IpAddr) -> bool {
        match (self, ip.to_canonical()) {
            (Hosts::Any, _) => true,
            (Hosts::V4 { first, last }, IpAddr::V4(v4)) => (first..=last).contains(&u32::from(v4)),
            (Hosts::V6(own), IpAddr::V6(v6)) => own == v6,
            _ => false,
        }
    }
}

/// Parses the whitespace-separated fields of one non-blank line.
fn parse_entry(fields: &[&str]) -> Result<Entry, LineProblem> {
    let (address, path, options) = match fields {
        [address, path] => (*address, *path, None),
        [address, path, options] => (*address, *path, Some(*options)),
        [_, _, _, extra, ..] => return Err(LineProblem::ExtraField(extra.to_string())),
        [only] => return Err(LineProblem::MissingPath(only.to_string())),
        [] => return Err(LineProblem::MissingPath(String::new())),
    };
    let hosts = Hosts::parse(address)?;
    let options = match options {
        Some(text) => parse_options(text)?,
        None => ExportOptions::default(),
    };
    if path == "." {
        return Ok(Entry::Meta);
    }
    let path = normalize_path(path).map_err(|reason| LineProblem::BadPath {
        text: path.to_string(),
        reason,
    })?;
    Ok(Entry::Rule(hosts, path, options))
}

/// Collapses repeated slashes and drops a trailing one; refuses relative paths, `.` and `..`.
fn normalize_path(text: &str) -> Result<String, &'static str> {
    if !text.starts_with('/') {
        return Err("must be absolute (start with /)");
    }
    let mut normalized = String::with_capacity(text.len());
    for part in text.split('/').filter(|part| !part.is_empty()) {
        if part == "." || part == ".." {
            return Err("must not contain . or .. components");
        }
        normalized.push('/');
        normalized.push_str(part);
    }
    if normalized.is_empty() {
        normalized.push('/');
    }
    Ok(normalized)
}

/// Parses a dotted IPv4 address (or an IPv4-mapped IPv6 one) into its number.
fn parse_v4(text: &str) -> Option<u32> {
    match text.parse::<IpAddr>().ok()?.to_canonical() {
        IpAddr::V4(v4) => Some(u32::from(v4)),
        IpAddr::V6(_) => None,
    }
}

/// Parses what follows the `/` of a network: a prefix length or a contiguous netmask.
fn parse_mask(text: &str) -> Result<u32, &'static str> {
    if text.contains('.') {
        let mask = text
            .parse::<Ipv4Addr>()
            .map(u32::from)
            .map_err(|_| "the netmask is not an IPv4 address")?;
        if mask.leading_ones() + mask.trailing_zeros() != 32 {
            return Err("the netmask is not contiguous (ones, then zeros)");
        }
        return Ok(mask);
    }
    let bits = parse_decimal(text)
        .filter(|bits| *bits <= 32)
        .ok_or("the prefix length must be a number from 0 to 32")?;
    // A shift by 32 overflows; /0 is the empty mask.
    Ok(u32::MAX.checked_shl(32 - bits as u32).unwrap_or(0))
}

/// Options as they are read, each remembering the text that set it so a conflicting repeat
/// can name both.
#[derive(Default)]
struct OptionsBuilder {
    read_only: Setting<bool>,
    maproot: Setting<(u32, Option<u32>)>,
    mapall: Setting<(u32, Option<u32>)>,
    password: Setting<String>,
    min_goal: Setting<u8>,
    max_goal: Setting<u8>,
    min_trash_time: Setting<u64>,
    max_trash_time: Setting<u64>,
    alldirs: bool,
    ignore_gid: bool,
    admin: bool,
    dynamic_ip: bool,
}

/// A value set by an option, with the option's text.
type Setting<T> = Option<(T, String)>;

/// Parses a comma-separated option list.
fn parse_options(text: &str) -> Result<ExportOptions, LineProblem> {
    let mut builder = OptionsBuilder::default();
    for option in text.split(',') {
        let b = &mut builder;
        match option.split_once('=') {
            None => match option {
                "" => return Err(LineProblem::EmptyOption(text.to_string())),
                "ro" | "readonly" => set(&mut b.read_only, true, option)?,
                "rw" | "readwrite" => set(&mut b.read_only, false, option)?,
                "alldirs" => b.alldirs = true,
                "ignoregid" => b.ignore_gid = true,
                "admin" => b.admin = true,
                "dynamicip" => b.dynamic_ip = true,
                "maproot" | "mapall" | "password" | "mingoal" | "maxgoal" | "mintrashtime"
                | "maxtrashtime" => return Err(LineProblem::MissingValue(option.to_string())),
                _ => return Err(LineProblem::UnknownOption(option.to_string())),
            },
            Some((name, value)) => match name {
                "maproot" => set(&mut b.maproot, parse_ids(option, value)?, option)?,
                "mapall" => set(&mut b.mapall, parse_ids(option, value)?, option)?,
                "password" if value.is_empty() => {
                    return Err(bad_value(option, "the password is empty"));
                }
                "password" => set(&mut b.password, value.to_string(), option)?,
                "mingoal" => set(&mut b.min_goal, parse_goal(option, value)?, option)?,
                "maxgoal" => set(&mut b.max_goal, parse_goal(option, value)?, option)?,
                "mintrashtime" => set(&mut b.min_trash_time, parse_trash(option, value)?, option)?,
                "maxtrashtime" => set(&mut b.max_trash_time, parse_trash(option, value)?, option)?,
                _ => return Err(LineProblem::UnknownOption(option.to_string())),
            },
        }
    }
    builder.finish()
}

impl OptionsBuilder {
    /// Fills in defaults and checks that the lower limits are not above the upper ones.
    fn finish(self) -> Result<ExportOptions, LineProblem> {
        let defaults = ExportOptions::default();
        let options = ExportOptions {
            read_only: value_or(self.read_only, defaults.read_only),
            alldirs: self.alldirs,
            maproot: match self.maproot {
                // `maproot=0`: root is not mapped.
                Some(((0, None), _)) => None,
                Some((ids, _)) => Some(ids),
                None => defaults.maproot,
            },
            mapall: self.mapall.map(|(ids, _)| ids),
            password: self.password.map(|(password, _)| password),
            min_goal: value_or(self.min_goal, defaults.min_goal),
            max_goal: value_or(self.max_goal, defaults.max_goal),
            min_trash_time: value_or(self.min_trash_time, defaults.min_trash_time),
            max_trash_time: value_or(self.max_trash_time, defaults.max_trash_time),
            ignore_gid: self.ignore_gid,
            admin: self.admin,
            dynamic_ip: self.dynamic_ip,
        };
        if options.min_goal > options.max_goal {
            return Err(LineProblem::MinAboveMax {
                what: "goal",
                min: options.min_goal.into(),
                max: options.max_goal.into(),
            });
        }
        if options.min_trash_time > options.max_trash_time {
            return Err(LineProblem::MinAboveMax {
                what: "trashtime",
                min: options.min_trash_time,
                max: options.max_trash_time,
            });
        }
        Ok(options)
    }
}

/// Records a setting; a repeat with the same value is fine, another value is a conflict.
fn set<T: PartialEq>(slot: &mut Setting<T>, value: T, option: &str) -> Result<(), LineProblem> {
    match slot {
        Some((earlier, earlier_text)) if *earlier != value => Err(LineProblem::Conflict {
            option: option.to_string(),
            earlier: earlier_text.clone(),
        }),
        Some(_) => Ok(()),
        None => {
            *slot = Some((value, option.to_string()));
            Ok(())
        }
    }
}

/// The value of a setting, or the default when the line did not set it.
fn value_or<T>(setting: Setting<T>, default: T) -> T {
    setting.map_or(default, |(value, _)| value)
}

/// A [`LineProblem::BadValue`] for `option`.
fn bad_value(option: &str, reason: &'static str) -> LineProblem {
    LineProblem::BadValue {
        option: option.to_string(),
        reason,
    }
}

/// Parses `UID[:GID]` (numbers only: the master does not look up user names).
fn parse_ids(option: &str, value: &str) -> Result<(u32, Option<u32>), LineProblem> {
    let bad = || {
        bad_value(
            option,
            "expected UID or UID:GID as numbers (names are not looked up)",
        )
    };
    let (uid, gid) = match value.split_once(':') {
        Some((uid, gid)) => (uid, Some(gid)),
        None => (value, None),
    };
    let uid = parse_u32(uid).ok_or_else(bad)?;
    let gid = match gid {
        Some(gid) => Some(parse_u32(gid).ok_or_else(bad)?),
        None => None,
    };
    Ok((uid, gid))
}

/// Parses a goal, 1 to 9.
fn parse_goal(option: &str, value: &str) -> Result<u8, LineProblem> {
    parse_decimal(value)
        .filter(|goal| (1..=u64::from(MAX_GOAL)).contains(goal))
        .and_then(|goal| u8::try_from(goal).ok())
        .ok_or_else(|| bad_value(option, "a goal is a number from 1 to 9"))
}

/// Parses a trash time, see [`parse_seconds`].
fn parse_trash(option: &str, value: &str) -> Result<u64, LineProblem> {
    parse_seconds(value).ok_or_else(|| {
        bad_value(
            option,
            "expected seconds, or a time like 2h, 1d or 1w2d (units w, d, h, m, s, largest first)",
        )
    })
}

/// [`parse_decimal`] for a `u32`.
fn parse_u32(text: &str) -> Option<u32> {
    parse_decimal(text).and_then(|n| u32::try_from(n).ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    const FILE: &str = "/etc/elkfs/exports.cfg";

    fn parse(text: &str) -> Exports {
        Exports::parse(text, Path::new(FILE)).expect("parses").0
    }

    fn problem(text: &str) -> LineProblem {
        match Exports::parse(text, Path::new(FILE)) {
            Err(ExportsError::Line { problem, .. }) => problem,
            other => panic!("expected a line error, got {other:?}"),
        }
    }

    fn options(list: &str) -> ExportOptions {
        parse(&format!("* / {list}")).rules[0].options.clone()
    }

    fn ip(text: &str) -> IpAddr {
        text.parse().expect("test address")
    }

    /// Which of `addresses` the single rule with `address` lets in.
    fn covered(address: &str, addresses: &[&str]) -> Vec<bool> {
        let exports = parse(&format!("{address} /"));
        addresses
            .iter()
            .map(|a| exports.admits_host(ip(a)))
            .collect()
    }

    #[test]
    fn star_covers_every_ipv4_and_ipv6_address() {
        assert_eq!(
            covered(
                "*",
                &[
                    "0.0.0.0",
                    "10.1.2.3",
                    "255.255.255.255",
                    "::1",
                    "2001:db8::7"
                ]
            ),
            [true; 5]
        );
    }

    #[test]
    fn single_ipv4_address_covers_only_itself() {
        assert_eq!(
            covered("10.0.0.5", &["10.0.0.5", "10.0.0.4", "10.0.0.6", "::1"]),
            [true, false, false, false]
        );
    }

    #[test]
    fn prefix_network_covers_its_edges_and_nothing_outside() {
        assert_eq!(
            covered(
                "192.168.1.0/24",
                &[
                    "192.168.1.0",
                    "192.168.1.255",
                    "192.168.0.255",
                    "192.168.2.0"
                ]
            ),
            [true, true, false, false]
        );
        // Host bits in the address are ignored, as in MooseFS.
        assert_eq!(
            covered("192.168.1.77/24", &["192.168.1.0", "192.168.1.255"]),
            [true, true]
        );
    }

    #[test]
    fn prefix_zero_covers_all_ipv4_and_prefix_32_one_address() {
        assert_eq!(
            covered("1.2.3.4/0", &["0.0.0.0", "255.255.255.255", "::1"]),
            [true, true, false]
        );
        assert_eq!(
            covered("1.2.3.4/32", &["1.2.3.4", "1.2.3.5", "1.2.3.3"]),
            [true, false, false]
        );
    }

    #[test]
    fn netmask_network_matches_its_prefix_form() {
        assert_eq!(
            covered(
                "10.20.0.0/255.255.0.0",
                &["10.20.0.0", "10.20.255.255", "10.21.0.0"]
            ),
            [true, true, false]
        );
        assert_eq!(covered("10.20.0.0/0.0.0.0", &["1.1.1.1"]), [true]);
        assert_eq!(
            covered("10.20.0.9/255.255.255.255", &["10.20.0.9", "10.20.0.8"]),
            [true, false]
        );
    }

    #[test]
    fn range_is_inclusive_at_both_ends() {
        assert_eq!(
            covered(
                "10.0.0.10-10.0.1.20",
                &[
                    "10.0.0.10",
                    "10.0.1.20",
                    "10.0.0.200",
                    "10.0.0.9",
                    "10.0.1.21"
                ]
            ),
            [true, true, true, false, false]
        );
        assert_eq!(covered("10.0.0.1-10.0.0.1", &["10.0.0.1"]), [true]);
    }

    #[test]
    fn ipv6_rule_covers_only_the_equal_ipv6_address() {
        assert_eq!(
            covered("2001:db8::1", &["2001:db8::1", "2001:db8::2", "0.0.0.1"]),
            [true, false, false]
        );
    }

    #[test]
    fn ipv4_mapped_ipv6_peer_matches_as_its_ipv4_address() {
        assert_eq!(
            covered("10.0.0.0/8", &["::ffff:10.1.2.3", "::ffff:11.1.2.3"]),
            [true, false]
        );
        // A mapped address written in a rule is its IPv4 address too.
        assert_eq!(covered("::ffff:10.0.0.1", &["10.0.0.1"]), [true]);
    }

    #[test]
    fn bad_addresses_are_refused() {
        for address in [
            "10.0.0.0/255.0.255.0",
            "10.0.0.0/255.255.255.1",
            "10.0.0.0/33",
            "10.0.0.0/",
            "10.0.0.0/x",
            "10.0.0.9-10.0.0.1",
            "10.0.0.1-",
            "10.0.0",
            "256.0.0.1",
            "host.example",
            "::1/128",
            "::1-::2",
        ] {
            let got = problem(&format!("{address} /"));
            let named = matches!(&got, LineProblem::BadAddress { text, .. } if text == address);
            assert!(named, "{address}: {got:?}");
        }
        let message = problem("10.0.0.0/255.0.255.0 /").to_string();
        assert!(message.contains("not contiguous"), "{message}");
    }

    #[test]
    fn paths_are_normalized() {
        let exports = parse("* //projects//music/ \n* / \n* /// \n* /a/b");
        let paths: Vec<&str> = exports.rules.iter().map(|r| r.path.as_str()).collect();
        assert_eq!(paths, ["/projects/music", "/", "/", "/a/b"]);
    }

    #[test]
    fn dot_and_dotdot_and_relative_paths_are_refused() {
        for path in ["/a/../b", "/..", "/a/./b", "/a/.", "projects", "./x"] {
            let got = problem(&format!("* {path}"));
            let named = matches!(&got, LineProblem::BadPath { text, .. } if text == path);
            assert!(named, "{path}: {got:?}");
        }
    }

    #[test]
    fn without_alldirs_only_the_exported_path_itself_is_admitted() {
        let exports = parse("* /projects rw");
        assert!(exports.admit(ip("10.0.0.1"), "/projects").is_ok());
        assert!(exports.admit(ip("10.0.0.1"), "/projects/").is_ok());
        assert!(exports.admit(ip("10.0.0.1"), "//projects").is_ok());
        assert_eq!(
            exports.admit(ip("10.0.0.1"), "/projects/music"),
            Err(Refusal::NoRuleForPath {
                ip: ip("10.0.0.1"),
                path: "/projects/music".into()
            })
        );
        assert!(exports.admit(ip("10.0.0.1"), "/").is_err());
    }

    #[test]
    fn alldirs_admits_subdirectories_but_not_siblings_with_a_common_prefix() {
        let exports = parse("* /projects alldirs");
        for subdir in ["/projects", "/projects/music", "/projects/music/old"] {
            assert!(exports.admit(ip("10.0.0.1"), subdir).is_ok(), "{subdir}");
        }
        for subdir in ["/projectsX", "/proj", "/"] {
            assert!(exports.admit(ip("10.0.0.1"), subdir).is_err(), "{subdir}");
        }
        let root = parse("* / alldirs");
        assert!(root.admit(ip("10.0.0.1"), "/anything/below").is_ok());
    }

    #[test]
    fn admit_normalizes_the_subdir_and_refuses_dotdot() {
        let exports = parse("* /projects alldirs");
        assert!(exports.admit(ip("10.0.0.1"), "projects/music").is_ok());
        assert!(matches!(
            exports.admit(ip("10.0.0.1"), "/projects/../etc"),
            Err(Refusal::BadPath { .. })
        ));
        let root = parse("* /");
        assert!(root.admit(ip("10.0.0.1"), "").is_ok());
    }

    #[test]
    fn first_matching_line_wins_over_a_later_more_permissive_one() {
        let exports = parse(
            "10.0.0.0/8 /data ro\n\
             10.0.0.0/8 / rw,alldirs,maproot=0\n",
        );
        let first = exports.admit(ip("10.1.1.1"), "/data").expect("admitted");
        assert_eq!(first.line, 1);
        assert_eq!(first.path, "/data");
        assert!(first.options.read_only);
        // The first line's address matches but its path does not: the next line is tried.
        let second = exports
            .admit(ip("10.1.1.1"), "/data/sub")
            .expect("admitted");
        assert_eq!(second.line, 2);
        assert_eq!(second.path, "/");
        assert!(!second.options.read_only);
    }

    #[test]
    fn refusals_tell_an_unknown_host_from_an_unexported_path() {
        let exports = parse("10.0.0.0/8 /x");
        assert_eq!(
            exports.admit(ip("192.168.0.1"), "/x"),
            Err(Refusal::NoRuleForHost {
                ip: ip("192.168.0.1")
            })
        );
        let refusal = exports.admit(ip("10.0.0.5"), "/y").expect_err("refused");
        assert_eq!(
            refusal.to_string(),
            "no line of the exports file lets 10.0.0.5 mount /y"
        );
        assert!(!exports.admits_host(ip("192.168.0.1")));
        assert!(exports.admits_host(ip("10.0.0.5")));
    }

    #[test]
    fn no_options_means_moosefs_defaults() {
        let expected = ExportOptions {
            read_only: true,
            alldirs: false,
            maproot: Some((999, Some(999))),
            mapall: None,
            password: None,
            min_goal: 1,
            max_goal: 9,
            min_trash_time: 0,
            max_trash_time: u64::from(u32::MAX),
            ignore_gid: false,
            admin: false,
            dynamic_ip: false,
        };
        assert_eq!(parse("* /").rules[0].options, expected);
        assert_eq!(ExportOptions::default(), expected);
    }

    #[test]
    fn every_option_is_recorded() {
        let all = options(
            "rw,alldirs,maproot=0,mapall=1000:100,password=s3cret=x,mingoal=2,maxgoal=3,\
             mintrashtime=60,maxtrashtime=86400,ignoregid,admin,dynamicip",
        );
        assert_eq!(
            all,
            ExportOptions {
                read_only: false,
                alldirs: true,
                maproot: None,
                mapall: Some((1000, Some(100))),
                password: Some("s3cret=x".into()),
                min_goal: 2,
                max_goal: 3,
                min_trash_time: 60,
                max_trash_time: 86400,
                ignore_gid: true,
                admin: true,
                dynamic_ip: true,
            }
        );
    }

    #[test]
    fn access_option_aliases() {
        assert!(options("ro").read_only);
        assert!(options("readonly").read_only);
        assert!(!options("rw").read_only);
        assert!(!options("readwrite").read_only);
        // A repeat that agrees is fine.
        assert!(!options("rw,readwrite").read_only);
    }

    #[test]
    fn maproot_and_mapall_forms() {
        assert_eq!(options("maproot=0").maproot, None);
        assert_eq!(options("maproot=0:5").maproot, Some((0, Some(5))));
        assert_eq!(options("maproot=500").maproot, Some((500, None)));
        assert_eq!(options("maproot=500:20").maproot, Some((500, Some(20))));
        assert_eq!(options("mapall=7").mapall, Some((7, None)));
        for bad in [
            "maproot=nobody",
            "maproot=1:",
            "maproot=:1",
            "maproot=-1",
            "maproot=+1",
            "mapall=4294967296",
            "mapall=1:2:3",
        ] {
            let got = problem(&format!("* / {bad}"));
            let named = matches!(&got, LineProblem::BadValue { option, .. } if option == bad);
            assert!(named, "{bad}: {got:?}");
        }
    }

    #[test]
    fn goals_must_be_1_to_9_and_min_at_most_max() {
        assert_eq!(options("mingoal=9").min_goal, 9);
        assert_eq!(options("maxgoal=1").max_goal, 1);
        for bad in [
            "mingoal=0",
            "maxgoal=10",
            "mingoal=x",
            "maxgoal=",
            "mingoal=300",
        ] {
            assert!(
                matches!(problem(&format!("* / {bad}")), LineProblem::BadValue { .. }),
                "{bad}"
            );
        }
        assert_eq!(
            problem("* / mingoal=5,maxgoal=3"),
            LineProblem::MinAboveMax {
                what: "goal",
                min: 5,
                max: 3
            }
        );
        assert!(matches!(
            problem("* / maxgoal=0"),
            LineProblem::BadValue { .. }
        ));
    }

    #[test]
    fn trash_times_accept_moosefs_units() {
        let cases = [
            ("0", 0),
            ("3600", 3600),
            ("90s", 90),
            ("5m", 300),
            ("2h", 7200),
            ("1d", 86400),
            ("1w", 604_800),
            ("1W2D", 777_600),
            ("2h30m", 9000),
            ("1d1s", 86401),
        ];
        for (text, seconds) in cases {
            assert_eq!(
                options(&format!("maxtrashtime={text}")).max_trash_time,
                seconds,
                "{text}"
            );
        }
        assert_eq!(options("mintrashtime=1h").min_trash_time, 3600);
        // Beyond the default maximum is allowed once the maximum is raised.
        assert_eq!(
            options("maxtrashtime=10000000000").max_trash_time,
            10_000_000_000
        );
    }

    #[test]
    fn malformed_trash_times_are_refused() {
        for bad in [
            "1x",
            "h",
            "1h30",
            "30m2h",
            "1h1h",
            "-5",
            "1.5h",
            "",
            "99999999999999999999w",
        ] {
            assert!(
                matches!(
                    problem(&format!("* / maxtrashtime={bad}")),
                    LineProblem::BadValue { .. }
                ),
                "{bad:?}"
            );
        }
        assert_eq!(
            problem("* / mintrashtime=2d,maxtrashtime=1d"),
            LineProblem::MinAboveMax {
                what: "trashtime",
                min: 172_800,
                max: 86400
            }
        );
        // A minimum above the default maximum needs a larger maximum.
        assert!(matches!(
            problem("* / mintrashtime=5000000000"),
            LineProblem::MinAboveMax { .. }
        ));
    }

    #[test]
    fn unknown_empty_valueless_and_conflicting_options_are_errors() {
        assert_eq!(problem("* / rwx"), LineProblem::UnknownOption("rwx".into()));
        assert_eq!(
            problem("* / rw=1"),
            LineProblem::UnknownOption("rw=1".into())
        );
        assert_eq!(
            problem("* / rw,,ro"),
            LineProblem::EmptyOption("rw,,ro".into())
        );
        assert_eq!(problem("* / rw,"), LineProblem::EmptyOption("rw,".into()));
        assert_eq!(
            problem("* / maproot"),
            LineProblem::MissingValue("maproot".into())
        );
        assert!(matches!(
            problem("* / password="),
            LineProblem::BadValue { .. }
        ));
        assert_eq!(
            problem("* / ro,rw"),
            LineProblem::Conflict {
                option: "rw".into(),
                earlier: "ro".into()
            }
        );
        assert!(matches!(
            problem("* / maproot=1,maproot=2"),
            LineProblem::Conflict { .. }
        ));
        assert!(matches!(
            problem("* / mingoal=2,mingoal=3"),
            LineProblem::Conflict { .. }
        ));
        // Agreeing repeats, even spelled differently, are not conflicts.
        assert_eq!(
            options("maxtrashtime=1h,maxtrashtime=60m").max_trash_time,
            3600
        );
        assert!(options("alldirs,alldirs").alldirs);
    }

    #[test]
    fn line_shape_errors() {
        assert_eq!(
            problem("10.0.0.1"),
            LineProblem::MissingPath("10.0.0.1".into())
        );
        assert_eq!(
            problem("* / rw, alldirs"),
            LineProblem::ExtraField("alldirs".into())
        );
    }

    #[test]
    fn errors_name_the_file_the_line_and_the_text() {
        let text = "# ElkFS exports\n\n* / rw\n  * /x rwx   # typo\n";
        let err = Exports::parse(text, Path::new(FILE)).expect_err("bad option");
        assert!(matches!(err, ExportsError::Line { line: 4, .. }));
        assert_eq!(
            err.to_string(),
            "/etc/elkfs/exports.cfg line 4: unknown option \"rwx\""
        );
    }

    #[test]
    fn comments_and_blank_lines_are_ignored() {
        let exports =
            parse("# all\n\n   \t\n*\t/a\t# trailing comment rw\n#* / rw\n10.0.0.1 /b ro#x\n");
        assert_eq!(exports.rules.len(), 2);
        assert_eq!(exports.rules[0].line, 4);
        assert!(exports.rules[0].options.read_only);
        assert_eq!(exports.rules[1].line, 6);
    }

    #[test]
    fn meta_line_is_skipped_with_a_warning() {
        let (exports, warnings) =
            Exports::parse("* . rw\n* / ro\n", Path::new(FILE)).expect("parses");
        assert_eq!(exports.rules.len(), 1);
        assert_eq!(exports.rules[0].line, 2);
        assert_eq!(warnings.len(), 1);
        assert!(
            warnings[0].starts_with("/etc/elkfs/exports.cfg line 1:"),
            "{}",
            warnings[0]
        );
        assert!(warnings[0].contains("elkfs trash"), "{}", warnings[0]);
        // Its address and options are still checked.
        assert!(matches!(problem("* . rwx"), LineProblem::UnknownOption(_)));
    }

    #[test]
    fn a_file_without_rules_warns_that_nobody_may_mount() {
        let (exports, warnings) = Exports::parse("# nothing\n", Path::new(FILE)).expect("parses");
        assert!(!exports.admits_host(ip("127.0.0.1")));
        assert_eq!(warnings.len(), 1);
    }

    #[test]
    fn map_ids_maps_root_by_maproot_and_others_by_mapall() {
        let neither = ExportOptions {
            maproot: None,
            ..ExportOptions::default()
        };
        assert_eq!(neither.map_ids(0, 0), (0, 0));
        assert_eq!(neither.map_ids(1000, 100), (1000, 100));

        let squash = ExportOptions::default();
        assert_eq!(squash.map_ids(0, 0), (999, 999));
        assert_eq!(squash.map_ids(1000, 100), (1000, 100));

        let root_uid_only = ExportOptions {
            maproot: Some((500, None)),
            ..ExportOptions::default()
        };
        assert_eq!(root_uid_only.map_ids(0, 7), (500, 7));

        let all = ExportOptions {
            mapall: Some((2000, Some(200))),
            ..ExportOptions::default()
        };
        assert_eq!(all.map_ids(1000, 100), (2000, 200));
        // Root follows maproot (the default 999:999), as in MooseFS.
        assert_eq!(all.map_ids(0, 0), (999, 999));

        let all_uid_only = ExportOptions {
            mapall: Some((2000, None)),
            ..ExportOptions::default()
        };
        assert_eq!(all_uid_only.map_ids(1000, 100), (2000, 100));
    }

    #[test]
    fn loopback_only_lets_loopback_mount_anything_read_write_as_root() {
        let exports = Exports::loopback_only();
        assert_eq!(exports.file(), None);
        for client in ["127.0.0.1", "127.0.0.2", "::1", "::ffff:127.0.0.1"] {
            for subdir in ["/", "/a/b"] {
                let admission = exports
                    .admit(ip(client), subdir)
                    .expect("loopback admitted");
                assert!(!admission.options.read_only, "{client}");
                assert_eq!(admission.options.map_ids(0, 0), (0, 0));
            }
        }
        assert!(!exports.admits_host(ip("10.0.0.1")));
        assert_eq!(
            exports.admit(ip("10.0.0.1"), "/"),
            Err(Refusal::NoRuleForHost { ip: ip("10.0.0.1") })
        );
    }

    #[test]
    fn load_reads_the_file_and_names_it_in_errors() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("exports.cfg");
        std::fs::write(&path, "10.0.0.0/8 / rw,alldirs\n").expect("write");
        let (exports, warnings) = Exports::load(&path).expect("loads");
        assert!(warnings.is_empty());
        assert_eq!(exports.file(), Some(path.as_path()));
        assert!(exports.admit(ip("10.9.9.9"), "/x").is_ok());

        std::fs::write(&path, "10.0.0.0/8 / rw\n* /y maxgoal=10\n").expect("write");
        let err = Exports::load(&path).expect_err("bad goal");
        assert!(
            err.to_string()
                .starts_with(&format!("{} line 2:", path.display())),
            "{err}"
        );

        let missing = dir.path().join("missing.cfg");
        let err = Exports::load(&missing).expect_err("missing");
        assert!(matches!(err, ExportsError::Read { .. }));
        assert!(
            err.to_string().contains(&missing.display().to_string()),
            "{err}"
        );
    }
}
