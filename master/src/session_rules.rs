//! What a session's export allows, applied to each request before it is served: a read-only
//! export refuses every change, user ids are mapped (`maproot`, `mapall`), and goals and trash
//! times are kept within the export's range.

use elkfs_proto::Status;
use elkfs_proto::master::{Change, MasterRequest, TreeAttr};
use elkfs_proto::types::Caller;

use crate::exports::ExportOptions;

/// The request as the session may make it, or why it may not.
pub fn apply(options: &ExportOptions, request: MasterRequest) -> Result<MasterRequest, Status> {
    // A directory lease holds back other sessions' changes, so a read-only session gets none.
    let leases = matches!(request, MasterRequest::LeaseDir { .. });
    if options.read_only && (changes_something(&request) || leases) {
        return Err(Status::ReadOnly);
    }
    let mut request = match request {
        MasterRequest::Tagged {
            client,
            slot,
            seq,
            retry,
            request,
        } => {
            return Ok(MasterRequest::Tagged {
                client,
                slot,
                seq,
                retry,
                request: Box::new(apply(options, *request)?),
            });
        }
        request => request,
    };
    if let Some(caller) = caller_of(&mut request) {
        let (uid, gid) = options.map_ids(caller.uid, caller.gid);
        *caller = Caller { uid, gid };
    }
    if let MasterRequest::ChangeTree { attr, change, .. } = &request {
        check_range(options, *attr, *change)?;
    }
    Ok(request)
}

/// Whether serving the request changes the namespace or a file's data.
fn changes_something(request: &MasterRequest) -> bool {
    match request {
        MasterRequest::Tagged { request, .. } => changes_something(request),
        MasterRequest::SetAttr { .. }
        | MasterRequest::Mknod { .. }
        | MasterRequest::Mkdir { .. }
        | MasterRequest::Symlink { .. }
        | MasterRequest::Link { .. }
        | MasterRequest::Unlink { .. }
        | MasterRequest::Rmdir { .. }
        | MasterRequest::Rename { .. }
        | MasterRequest::WriteChunk { .. }
        | MasterRequest::RetryWriteChunk { .. }
        | MasterRequest::WriteEnd { .. }
        | MasterRequest::SetXattr { .. }
        | MasterRequest::RemoveXattr { .. }
        | MasterRequest::ChangeTree { .. }
        | MasterRequest::AppendBegin { .. }
        | MasterRequest::AppendEnd { .. }
        | MasterRequest::ClearChunks { .. }
        | MasterRequest::TrashRestore { .. }
        | MasterRequest::TrashPurge { .. }
        | MasterRequest::Snapshot { .. } => true,
        _ => false,
    }
}

/// The user a request acts as, where it says.
fn caller_of(request: &mut MasterRequest) -> Option<&mut Caller> {
    match request {
        MasterRequest::SetAttr { caller, .. }
        | MasterRequest::Mknod { caller, .. }
        | MasterRequest::Mkdir { caller, .. }
        | MasterRequest::Symlink { caller, .. }
        | MasterRequest::ChangeTree { caller, .. }
        | MasterRequest::TrashList { caller, .. }
        | MasterRequest::TrashRestore { caller, .. }
        | MasterRequest::TrashPurge { caller, .. }
        | MasterRequest::Snapshot { caller, .. } => Some(caller),
        _ => None,
    }
}

/// `mingoal`/`maxgoal` and `mintrashtime`/`maxtrashtime`: a value outside is refused (EPERM),
/// as MooseFS does.
fn check_range(options: &ExportOptions, attr: TreeAttr, change: Change) -> Result<(), Status> {
    let value = match change {
        Change::Set(v) | Change::Raise(v) | Change::Lower(v) => v,
        Change::AddFlags(_) | Change::RemoveFlags(_) => return Ok(()),
    };
    let (min, max) = match attr {
        TreeAttr::Goal => (u64::from(options.min_goal), u64::from(options.max_goal)),
        TreeAttr::TrashTime => (options.min_trash_time, options.max_trash_time),
        TreeAttr::Eattr => return Ok(()),
    };
    if (min..=max).contains(&value) {
        Ok(())
    } else {
        Err(Status::NotPermitted)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use elkfs_proto::InodeId;

    fn options() -> ExportOptions {
        crate::exports::Exports::loopback_only()
            .admit("127.0.0.1".parse().expect("ip"), "/")
            .expect("loopback is admitted")
            .options
    }

    fn mkdir(uid: u32) -> MasterRequest {
        MasterRequest::Mkdir {
            parent: InodeId(1),
            name: b"d".to_vec(),
            mode: 0o755,
            umask: 0o022,
            caller: Caller { uid, gid: uid },
        }
    }

    fn set_goal(goal: u64) -> MasterRequest {
        MasterRequest::ChangeTree {
            inode: InodeId(1),
            attr: TreeAttr::Goal,
            change: Change::Set(goal),
            recursive: false,
            caller: Caller { uid: 0, gid: 0 },
        }
    }

    fn caller(request: &MasterRequest) -> Caller {
        match request {
            MasterRequest::Mkdir { caller, .. } => *caller,
            MasterRequest::Tagged { request, .. } => caller(request),
            other => panic!("not a mkdir: {other:?}"),
        }
    }

    #[test]
    fn read_only_exports_refuse_changes_even_when_tagged() {
        let mut ro = options();
        ro.read_only = true;
        assert_eq!(apply(&ro, mkdir(5)).unwrap_err(), Status::ReadOnly);
        let tagged = MasterRequest::Tagged {
            client: 1,
            slot: 0,
            seq: 1,
            retry: false,
            request: Box::new(mkdir(5)),
        };
        assert_eq!(apply(&ro, tagged).unwrap_err(), Status::ReadOnly);
        assert!(apply(&ro, MasterRequest::GetAttr { inode: InodeId(1) }).is_ok());
    }

    #[test]
    fn callers_are_mapped_inside_tagged_requests_too() {
        let mut mapped = options();
        mapped.maproot = Some((999, Some(998)));
        assert_eq!(
            caller(&apply(&mapped, mkdir(0)).unwrap()),
            Caller { uid: 999, gid: 998 }
        );
        assert_eq!(
            caller(&apply(&mapped, mkdir(5)).unwrap()),
            Caller { uid: 5, gid: 5 }
        );
        mapped.mapall = Some((1000, None));
        let tagged = MasterRequest::Tagged {
            client: 1,
            slot: 0,
            seq: 1,
            retry: false,
            request: Box::new(mkdir(5)),
        };
        assert_eq!(
            caller(&apply(&mapped, tagged).unwrap()),
            Caller { uid: 1000, gid: 5 }
        );
    }

    #[test]
    fn goals_outside_the_export_range_are_refused() {
        let mut limited = options();
        limited.min_goal = 2;
        limited.max_goal = 3;
        assert!(apply(&limited, set_goal(2)).is_ok());
        assert!(apply(&limited, set_goal(3)).is_ok());
        assert_eq!(
            apply(&limited, set_goal(1)).unwrap_err(),
            Status::NotPermitted
        );
        assert_eq!(
            apply(&limited, set_goal(4)).unwrap_err(),
            Status::NotPermitted
        );
    }
}
