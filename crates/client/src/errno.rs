//! The one place where a wire status becomes the errno a program sees.

use elkfs_proto::Status;

/// The errno for a status.
pub fn errno_of(status: Status) -> i32 {
    match status {
        Status::NotFound => libc::ENOENT,
        Status::Exists => libc::EEXIST,
        Status::NotEmpty => libc::ENOTEMPTY,
        Status::NotDir => libc::ENOTDIR,
        Status::IsDir => libc::EISDIR,
        Status::AccessDenied | Status::BadCapability => libc::EACCES,
        Status::NotPermitted => libc::EPERM,
        Status::ReadOnly => libc::EROFS,
        Status::NoSpace => libc::ENOSPC,
        Status::Invalid | Status::Loop => libc::EINVAL,
        Status::NameTooLong => libc::ENAMETOOLONG,
        Status::Again => libc::EAGAIN,
        Status::TooBig => libc::EFBIG,
        Status::NotSupported => libc::EOPNOTSUPP,
        Status::NoAttribute => libc::ENODATA,
        Status::TooLarge => libc::E2BIG,
        Status::Locked => libc::EAGAIN,
        Status::WrongVersion
        | Status::Corrupt
        | Status::NoValidCopy
        | Status::Protocol
        | Status::Io => libc::EIO,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_files_are_enoent_not_eio() {
        assert_eq!(errno_of(Status::NotFound), libc::ENOENT);
        assert_eq!(errno_of(Status::NotEmpty), libc::ENOTEMPTY);
        assert_eq!(errno_of(Status::Corrupt), libc::EIO);
    }
}
