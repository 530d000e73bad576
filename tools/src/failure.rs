//! What went wrong with one path: a short sentence for the user and, when there is one, the
//! errno behind it (the JSON output carries both).

use std::fmt;

use elkfs_proto::Status;

/// Why one path (or one request) failed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Failure {
    /// What the user reads after `elkfs: PATH: `.
    pub reason: String,
    /// The matching errno, when the failure has one.
    pub errno: Option<i32>,
}

impl Failure {
    /// A failure with no errno behind it.
    pub fn new(reason: impl Into<String>) -> Failure {
        Failure {
            reason: reason.into(),
            errno: None,
        }
    }

    /// A failure described by an errno, worded as `strerror` words it.
    pub fn from_errno(errno: i32) -> Failure {
        Failure {
            reason: errno_message(errno),
            errno: Some(errno),
        }
    }

    /// The path is not inside an ElkFS mount.
    pub fn not_elkfs() -> Failure {
        Failure::new("not on an ElkFS mount")
    }

    /// The master answered with a reply that does not fit the request.
    pub fn unexpected() -> Failure {
        Failure {
            reason: "unexpected answer from the master".into(),
            errno: Some(libc::EIO),
        }
    }
}

impl From<Status> for Failure {
    fn from(status: Status) -> Failure {
        Failure {
            reason: status.to_string(),
            errno: Some(elkfs_client::errno::errno_of(status)),
        }
    }
}

impl From<std::io::Error> for Failure {
    fn from(e: std::io::Error) -> Failure {
        match e.raw_os_error() {
            Some(errno) => Failure::from_errno(errno),
            None => Failure::new(e.to_string()),
        }
    }
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.reason)
    }
}

/// `strerror` in lower case without Rust's "(os error N)" suffix, to read like the master's
/// status messages ("no such file or directory").
pub fn errno_message(errno: i32) -> String {
    let text = std::io::Error::from_raw_os_error(errno).to_string();
    let text = match text.find(" (os error") {
        Some(cut) => &text[..cut],
        None => &text,
    };
    let mut chars = text.chars();
    match chars.next() {
        Some(first) => first.to_lowercase().chain(chars).collect(),
        None => text.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errno_messages_read_like_status_messages() {
        assert_eq!(errno_message(libc::ENOENT), "no such file or directory");
        assert_eq!(
            Failure::from(Status::NotPermitted).reason,
            "operation not permitted"
        );
        assert_eq!(Failure::from(Status::NotFound).errno, Some(libc::ENOENT));
    }
}
