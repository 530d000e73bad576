//! A change sent again because its answer was lost must not be made twice: the master answers a
//! retry from the record it keeps in the client's request slot, also after a SIGKILL and
//! restart. A slot keeps only its latest request, so a client's records stay as few as the
//! requests it had in flight at once.

use std::net::SocketAddr;

use elkfs_proto::master::{Change, MasterReply, MasterRequest, TreeAttr};
use elkfs_proto::types::Caller;
use elkfs_proto::{
    Hello, InodeId, MASTER_CLIENT_LIMITS, MasterConnection, NoRequests, Role, Status, connection,
};
use elkfs_testkit::Cluster;

const CLIENT: u64 = 0x5eed_0001;
const ROOT: Caller = Caller { uid: 0, gid: 0 };

/// A fresh connection and session rooted at `/`, as a client opens after losing one.
async fn session(master: SocketAddr) -> MasterConnection {
    let conn: MasterConnection = connection::connect(
        master,
        &Hello::new(Role::Client, "numbered-requests-test"),
        MASTER_CLIENT_LIMITS,
        "master",
        NoRequests,
    )
    .await
    .expect("connecting to the master");
    let opened = conn
        .ask(&MasterRequest::OpenSession {
            subdir: "/".into(),
            mount_point: "test".into(),
            proof: None,
            client: 1,
        })
        .await
        .expect("asking for a session");
    assert!(
        matches!(opened, Ok(MasterReply::Session { .. })),
        "{opened:?}"
    );
    conn
}

/// `mkdir /NAME` as request `seq` in `slot`, sent for the first time or again.
fn mkdir(name: &str, slot: u16, seq: u64, retry: bool) -> MasterRequest {
    MasterRequest::Tagged {
        client: CLIENT,
        slot,
        seq,
        retry,
        request: Box::new(MasterRequest::Mkdir {
            parent: InodeId(1),
            name: name.as_bytes().to_vec(),
            mode: 0o755,
            umask: 0o022,
            caller: ROOT,
        }),
    }
}

/// The inode a reply names, or the error it carries.
fn inode_of(reply: Result<MasterReply, Status>) -> Result<InodeId, Status> {
    match reply? {
        MasterReply::Entry { attr, .. } | MasterReply::Attr(attr) => Ok(attr.inode),
        other => panic!("unexpected reply {other:?}"),
    }
}

async fn ask(master: SocketAddr, request: &MasterRequest) -> Result<InodeId, Status> {
    let reply = session(master)
        .await
        .ask(request)
        .await
        .expect("the master answers");
    inode_of(reply)
}

/// A cluster of a master alone, a runtime to talk to it on, and its config file (kept as long as
/// the cluster).
fn master_only() -> (Cluster, tokio::runtime::Runtime, tempfile::NamedTempFile) {
    // Purges happen at once after a restart too, so that a test can see one that should not.
    let config = tempfile::NamedTempFile::new().expect("a config file");
    std::fs::write(config.path(), "reopen_grace_secs = 0\n").expect("writing the config");
    let cluster = Cluster::builder()
        .chunkservers(0)
        .mounts(0)
        .master_args([std::ffi::OsStr::new("--config"), config.path().as_os_str()])
        .start();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    (cluster, runtime, config)
}

#[test]
fn a_retried_change_is_answered_from_its_slot_not_made_twice() {
    let _one = super::master_crash::one_cluster_at_a_time();
    let (mut cluster, runtime, _config) = master_only();
    let master = cluster.master_addr();
    let made = runtime
        .block_on(ask(master, &mkdir("a", 3, 10, false)))
        .expect("the first mkdir");
    assert_eq!(
        runtime.block_on(ask(master, &mkdir("a", 3, 10, true))),
        Ok(made),
        "a retry on a new session is answered as the first send was"
    );
    // Sent again without the retry mark, the same change is made again: the name is taken.
    assert_eq!(
        runtime.block_on(ask(master, &mkdir("a", 3, 10, false))),
        Err(Status::Exists)
    );

    cluster.kill_master();
    cluster.start_master();
    let master = cluster.master_addr();
    assert_eq!(
        runtime.block_on(ask(master, &mkdir("a", 3, 10, true))),
        Ok(made),
        "the record survived the SIGKILL"
    );

    // The slot's next request replaces the record: request 10, retried now, is made again.
    let b = runtime
        .block_on(ask(master, &mkdir("b", 3, 11, false)))
        .expect("mkdir b");
    assert_ne!(b, made);
    assert_eq!(
        runtime.block_on(ask(master, &mkdir("a", 3, 10, true))),
        Err(Status::Exists)
    );
    assert_eq!(
        runtime.block_on(ask(master, &mkdir("b", 3, 11, true))),
        Ok(b)
    );
    // Another slot of the same client holds no record of it.
    assert_eq!(
        runtime.block_on(ask(master, &mkdir("b", 4, 11, true))),
        Err(Status::Exists)
    );
}

/// `create /NAME` that also opens the file for the session, as request `seq` in slot 0.
fn create_open(name: &str, seq: u64, retry: bool) -> MasterRequest {
    MasterRequest::Tagged {
        client: CLIENT,
        slot: 0,
        seq,
        retry,
        request: Box::new(MasterRequest::Mknod {
            parent: InodeId(1),
            name: name.as_bytes().to_vec(),
            kind: elkfs_proto::types::FileKind::File,
            mode: 0o644,
            umask: 0o022,
            rdev: 0,
            caller: ROOT,
            open: true,
        }),
    }
}

/// A create that opens the file, answered after a master restart from its record on the
/// session that retried it, leaves the file open for that session: unlinked by someone else, it
/// lives on until the retrying session closes it.
#[test]
fn a_retried_create_keeps_the_file_open_for_the_session_that_retried() {
    let _one = super::master_crash::one_cluster_at_a_time();
    let (mut cluster, runtime, _config) = master_only();
    let master = cluster.master_addr();
    let made = runtime.block_on(async {
        let admin = session(master).await;
        let no_trash = MasterRequest::ChangeTree {
            inode: InodeId(1),
            attr: TreeAttr::TrashTime,
            change: Change::Set(0),
            recursive: true,
            caller: ROOT,
        };
        let answer = admin.ask(&no_trash).await.expect("the master answers");
        assert!(answer.is_ok(), "trash time 0: {answer:?}");
        let first = session(master).await;
        inode_of(
            first
                .ask(&create_open("f", 1, false))
                .await
                .expect("answer"),
        )
        .expect("the create")
    });
    // The answer is lost with the master, and with it every session's open files.
    cluster.kill_master();
    cluster.start_master();
    let master = cluster.master_addr();
    runtime.block_on(async {
        let retrying = session(master).await;
        let again = inode_of(
            retrying
                .ask(&create_open("f", 1, true))
                .await
                .expect("answer"),
        );
        assert_eq!(again, Ok(made), "the retry is answered from the record");

        let admin = session(master).await;
        let unlink = MasterRequest::Unlink {
            parent: InodeId(1),
            name: b"f".to_vec(),
        };
        let answer = admin.ask(&unlink).await.expect("the master answers");
        assert!(answer.is_ok(), "unlink: {answer:?}");
        // Purges run in the background: give one the time to happen.
        tokio::time::sleep(std::time::Duration::from_millis(500)).await;
        let attr = admin
            .ask(&MasterRequest::GetAttr { inode: made })
            .await
            .expect("the master answers");
        assert!(
            matches!(attr, Ok(MasterReply::Attr(_))),
            "the file open in the retrying session was purged: {attr:?}"
        );
        drop(retrying);
    });
}

/// `request` as request `seq` in slot 5, sent for the first time or again.
fn numbered(request: MasterRequest, seq: u64, retry: bool) -> MasterRequest {
    MasterRequest::Tagged {
        client: CLIENT,
        slot: 5,
        seq,
        retry,
        request: Box::new(request),
    }
}

/// A file's snapshot and a restore from the trash, each one commit, are answered from their
/// records when retried: neither fails for having worked the first time.
#[test]
fn a_retried_file_snapshot_or_trash_restore_is_answered_from_its_slot() {
    let _one = super::master_crash::one_cluster_at_a_time();
    let (cluster, runtime, _config) = master_only();
    let master = cluster.master_addr();
    runtime.block_on(async {
        let conn = session(master).await;
        let ask = |request: MasterRequest| {
            let conn = &conn;
            async move { conn.ask(&request).await.expect("the master answers") }
        };
        let trash_a_day = MasterRequest::ChangeTree {
            inode: InodeId(1),
            attr: TreeAttr::TrashTime,
            change: Change::Set(86_400),
            recursive: true,
            caller: ROOT,
        };
        assert!(ask(trash_a_day).await.is_ok());
        let file = inode_of(ask(create_open("f", 1, false)).await).expect("create f");

        let snapshot = MasterRequest::Snapshot {
            source: file,
            parent: InodeId(1),
            name: b"g".to_vec(),
            caller: ROOT,
        };
        for retry in [false, true] {
            let reply = ask(numbered(snapshot.clone(), 2, retry)).await;
            assert!(
                matches!(reply, Ok(MasterReply::TreeChanged { changed: 1, .. })),
                "snapshot (retry: {retry}): {reply:?}"
            );
        }

        let unlink = MasterRequest::Unlink {
            parent: InodeId(1),
            name: b"g".to_vec(),
        };
        assert!(ask(unlink).await.is_ok());
        let copy = match ask(MasterRequest::TrashList { caller: ROOT }).await {
            Ok(MasterReply::Trash(entries)) if entries.len() == 1 => entries[0].inode,
            other => panic!("the trash: {other:?}"),
        };
        let restore = MasterRequest::TrashRestore {
            inode: copy,
            caller: ROOT,
        };
        for retry in [false, true] {
            let reply = ask(numbered(restore.clone(), 3, retry)).await;
            assert!(
                matches!(reply, Ok(MasterReply::Done)),
                "restore (retry: {retry}): {reply:?}"
            );
        }
        let lookup = MasterRequest::Lookup {
            parent: InodeId(1),
            name: b"g".to_vec(),
        };
        assert_eq!(inode_of(ask(lookup).await), Ok(copy), "g is back");
    });
}
