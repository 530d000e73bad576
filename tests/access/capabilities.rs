//! Chunk capabilities and the cluster key, tested from outside the daemons: a program talking
//! to a chunkserver's data port directly gets data only with a capability the master signed
//! for that chunk, version and access, before it expires; a program posing as a chunkserver or
//! a metalogger without the cluster key is refused by the master.

use std::fs;
use std::net::SocketAddr;

use bytes::Bytes;
use elkfs_e2e::{ask_data, chunk_files, pseudo_random};
use elkfs_proto::auth::{Prover, cluster_proof, proofs_match};
use elkfs_proto::capability::{Access, Capability, CapabilityKey, unix_now};
use elkfs_proto::chunkserver::{CsCommand, CsCommandResult, CsReply, CsRequest, CsResponse, Space};
use elkfs_proto::cluster_key::ClusterKey;
use elkfs_proto::connection::{self, NoMessage, NoRequests};
use elkfs_proto::data::{DataReply, DataRequest, DataResponse};
use elkfs_proto::metalogger::{MlReply, MlRequest, MlResponse};
use elkfs_proto::{
    ChunkId, ChunkVersion, Connection, Handler, Hello, MASTER_CHUNKSERVER_LIMITS,
    MASTER_METALOGGER_LIMITS, Responder, Role, Status,
};
use elkfs_testkit::Cluster;

/// Log lines the refusals below cause on purpose.
const EXPECTED_WARNINGS: &[&str] = &["refused a data request", "without this cluster's key"];

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a tokio runtime")
}

fn cluster_key(cluster: &Cluster) -> ClusterKey {
    ClusterKey::read_file(cluster.cluster_key_file()).expect("reading the cluster key")
}

fn read_request(chunk: ChunkId, version: ChunkVersion, capability: Capability) -> DataRequest {
    DataRequest::Read {
        chunk,
        version,
        offset: 0,
        length: 4096,
        capability,
    }
}

fn is_refused(response: &DataResponse) -> bool {
    matches!(response, Err(e) if e.status == Status::BadCapability)
}

#[test]
fn a_chunkserver_serves_and_changes_chunks_only_with_a_valid_capability() {
    let mut builder = Cluster::builder()
        .chunkservers(1)
        .allow_log_errors("write failed")
        .allow_log_errors("this master never created");
    for pattern in EXPECTED_WARNINGS {
        builder = builder.allow_log_errors(pattern);
    }
    let cluster = builder.start();
    let file = cluster.mount_path(0).join("data");
    let contents = pseudo_random(100_000, 7);
    fs::write(&file, &contents).expect("writing through the mount");
    let copy = chunk_files(0, &cluster.chunkserver_data_dirs(0)[0])
        .into_iter()
        .next()
        .expect("the file's chunk on the chunkserver");
    let (chunk, version) = (ChunkId(copy.id), ChunkVersion(copy.version));
    let server = cluster.chunkserver(0).addr();
    let key = CapabilityKey::new(&cluster_key(&cluster));
    let now = unix_now();
    let valid = key.sign(chunk, version, Access::Read, now);

    runtime().block_on(async {
        // The master's capability reads the chunk.
        let (answer, data) = ask_data(server, &read_request(chunk, version, valid), &[]).await;
        assert_eq!(answer, Ok(DataReply::Read));
        assert_eq!(&data[..], &contents[..4096]);

        // What a program without the cluster key can send, and what it can make of a genuine
        // capability: each is refused.
        let foreign = ClusterKey::from_bytes([0x5A; 32]);
        let refused = [
            (
                "no signature",
                Capability {
                    mac: [0; 32],
                    ..valid
                },
            ),
            (
                "a capability for another chunk",
                key.sign(ChunkId(chunk.0 + 1), version, Access::Read, now),
            ),
            (
                "a later deadline written into a genuine capability",
                Capability {
                    expires: valid.expires + 3600,
                    ..valid
                },
            ),
            (
                "a capability signed with another cluster's key",
                CapabilityKey::new(&foreign).sign(chunk, version, Access::Read, now),
            ),
            (
                "an expired capability",
                key.sign(chunk, version, Access::Read, now - 3600),
            ),
        ];
        for (what, capability) in refused {
            let (answer, data) =
                ask_data(server, &read_request(chunk, version, capability), &[]).await;
            assert!(is_refused(&answer), "{what}: {answer:?}");
            assert!(data.is_empty(), "{what}: data came back");
        }

        // Writing needs a write capability: a read capability does not do, also not for a sync.
        let write = |capability| DataRequest::Write {
            chunk,
            version,
            offset: 0,
            chain: Vec::new(),
            capability,
            create: false,
        };
        let (answer, _) = ask_data(server, &write(valid), b"overwritten").await;
        assert!(
            is_refused(&answer),
            "a write with a read capability: {answer:?}"
        );
        let (answer, _) = ask_data(
            server,
            &write(Capability {
                mac: [0; 32],
                ..valid
            }),
            b"overwritten",
        )
        .await;
        assert!(is_refused(&answer), "an unsigned write: {answer:?}");
        let sync = DataRequest::Sync {
            chunk,
            chain: Vec::new(),
            capability: Capability {
                mac: [1; 32],
                ..valid
            },
        };
        let (answer, _) = ask_data(server, &sync, &[]).await;
        assert!(is_refused(&answer), "an unsigned sync: {answer:?}");
    });
    assert_eq!(
        fs::read(&file).expect("reading through the mount"),
        contents,
        "the refused writes changed the file"
    );

    // A genuine write capability is taken (this is what the master's write lease carries).
    runtime().block_on(async {
        let capability = key.sign(chunk, version, Access::Write, unix_now());
        let request = DataRequest::Write {
            chunk,
            version,
            offset: 0,
            chain: Vec::new(),
            capability,
            create: false,
        };
        let (answer, _) = ask_data(server, &request, b"changed").await;
        assert_eq!(answer, Ok(DataReply::Written));
        let (answer, data) = ask_data(server, &read_request(chunk, version, capability), &[]).await;
        assert_eq!(answer, Ok(DataReply::Read));
        assert_eq!(&data[..7], b"changed");
    });

    // A chunk this server does not hold: only a write under `Create` access that asks for it
    // creates the chunk (what a new chunk's first frames carry); a write under `Write` access,
    // or one that does not ask, finds nothing. The server reports the chunk it made, and the
    // master, which never handed out that id, says so and leaves it in place.
    let absent = runtime().block_on(async {
        let absent = ChunkId(chunk.0 + 1_000_000);
        let v1 = ChunkVersion(1);
        let write = |access, create| DataRequest::Write {
            chunk: absent,
            version: v1,
            offset: 0,
            chain: Vec::new(),
            capability: key.sign(absent, v1, access, unix_now()),
            create,
        };
        let not_found =
            |answer: &DataResponse| matches!(answer, Err(e) if e.status == Status::NotFound);
        for (access, create) in [(Access::Write, true), (Access::Create, false)] {
            let (answer, _) = ask_data(server, &write(access, create), b"new").await;
            assert!(
                not_found(&answer),
                "{access:?} access, create {create}: {answer:?}"
            );
        }
        let (answer, _) = ask_data(server, &write(Access::Create, true), b"new").await;
        assert_eq!(answer, Ok(DataReply::Written));
        let read = read_request(absent, v1, key.sign(absent, v1, Access::Read, unix_now()));
        let (answer, data) = ask_data(server, &read, &[]).await;
        assert_eq!(answer, Ok(DataReply::Read));
        assert_eq!(&data[..], b"new");
        absent
    });
    let reported = format!("chunk={absent}");
    elkfs_testkit::wait_until(
        std::time::Duration::from_secs(10),
        "the master hearing of the chunk the write made",
        || {
            cluster
                .log_of(elkfs_testkit::Process::Master)
                .lines()
                .any(|l| {
                    l.contains("made a chunk this master never created") && l.contains(&reported)
                })
        },
    );
}

/// A handler for commands sent to a fake chunkserver: it records that one came.
struct Commands(std::sync::Arc<std::sync::atomic::AtomicBool>);

impl Handler<CsCommand, CsCommandResult> for Commands {
    async fn handle(
        &mut self,
        _command: CsCommand,
        _data: Bytes,
        responder: Responder<CsCommandResult>,
    ) {
        self.0.store(true, std::sync::atomic::Ordering::SeqCst);
        responder.send(&Err(Status::Io), Bytes::new()).await;
    }
}

async fn as_chunkserver(master: SocketAddr) -> Connection<CsRequest, CsResponse> {
    connection::connect::<CsRequest, CsResponse, CsCommand, CsCommandResult, _>(
        master,
        &Hello::new(Role::Chunkserver, "elkfs-capability-test"),
        MASTER_CHUNKSERVER_LIMITS,
        "master",
        Commands(Default::default()),
    )
    .await
    .expect("connecting to the master")
}

fn register(proof: [u8; 32]) -> CsRequest {
    CsRequest::Register {
        server_id: 0x7E57,
        data_addr: "127.0.0.1:9".parse().expect("address"),
        space: Space {
            total: 1 << 40,
            available: 1 << 40,
        },
        chunk_count: 0,
        proof,
    }
}

#[test]
fn chunkservers_and_metaloggers_join_only_with_the_cluster_key() {
    let mut builder = Cluster::builder().chunkservers(1).mounts(0);
    for pattern in EXPECTED_WARNINGS {
        builder = builder.allow_log_errors(pattern);
    }
    let cluster = builder.start();
    let master = cluster.master_addr();
    let key = cluster_key(&cluster);
    let wrong = ClusterKey::from_bytes([0xA5; 32]);

    runtime().block_on(async {
        // The master proves the key first, so a chunkserver can tell a real master.
        let link = as_chunkserver(master).await;
        let ours = [9u8; 32];
        let reply = link.ask(&CsRequest::Challenge { nonce: ours }).await;
        let Ok(Ok(CsReply::Challenge { proof, .. })) = reply else {
            panic!("no challenge answer: {reply:?}");
        };
        assert!(proofs_match(
            &proof,
            &cluster_proof(&key, Prover::Master, &ours)
        ));
        assert!(!proofs_match(
            &proof,
            &cluster_proof(&wrong, Prover::Master, &ours)
        ));
        // A proof under another key, or the master's own proof sent back, is refused and the
        // connection closed.
        for (signer, prover) in [(&wrong, Prover::Member), (&key, Prover::Master)] {
            let link = as_chunkserver(master).await;
            let Ok(Ok(CsReply::Challenge { nonce, .. })) =
                link.ask(&CsRequest::Challenge { nonce: ours }).await
            else {
                panic!("no challenge answer");
            };
            let reply = link
                .ask(&register(cluster_proof(signer, prover, &nonce)))
                .await;
            assert!(
                matches!(reply, Ok(Err(Status::AccessDenied))),
                "a registration proved as {prover:?} with the {} key: {reply:?}",
                if signer == &key { "cluster's" } else { "wrong" }
            );
            link.closed().await;
        }
        // Registering without a challenge first proves nothing either.
        let link = as_chunkserver(master).await;
        let reply = link.ask(&register([0; 32])).await;
        assert!(
            matches!(reply, Ok(Err(Status::AccessDenied))),
            "a registration without a challenge: {reply:?}"
        );
        // With the key, the same fake server is let in.
        let link = as_chunkserver(master).await;
        let Ok(Ok(CsReply::Challenge { nonce, .. })) =
            link.ask(&CsRequest::Challenge { nonce: ours }).await
        else {
            panic!("no challenge answer");
        };
        let reply = link
            .ask(&register(cluster_proof(&key, Prover::Member, &nonce)))
            .await;
        assert!(
            matches!(reply, Ok(Ok(CsReply::Registered { .. }))),
            "a registration with the right proof: {reply:?}"
        );
        link.close("done");

        // A metalogger gets no changelog before it proves the key.
        let hello = Hello::new(Role::Metalogger, "elkfs-capability-test");
        let ml = || {
            connection::connect::<MlRequest, MlResponse, NoMessage, NoMessage, _>(
                master,
                &hello,
                MASTER_METALOGGER_LIMITS,
                "master",
                NoRequests,
            )
        };
        let link = ml().await.expect("connecting as a metalogger");
        let fetch = MlRequest::Fetch {
            after: 0,
            max_bytes: 1 << 20,
        };
        let reply = link.call(&fetch, Bytes::new()).await;
        assert!(
            matches!(&reply, Ok((Err(Status::AccessDenied), data)) if data.is_empty()),
            "a fetch without joining: {reply:?}"
        );
        // A metalogger connection joining with a proof under `signer`'s key: the answer.
        let ml = &ml;
        let join = |signer: ClusterKey| async move {
            let link = ml().await.expect("connecting as a metalogger");
            let Ok(Ok(MlReply::Challenge { nonce, .. })) =
                link.ask(&MlRequest::Challenge { nonce: ours }).await
            else {
                panic!("no challenge answer");
            };
            let proof = cluster_proof(&signer, Prover::Member, &nonce);
            let reply = link.ask(&MlRequest::Join { proof }).await;
            (link, reply)
        };
        let (_, reply) = join(wrong.clone()).await;
        assert!(
            matches!(reply, Ok(Err(Status::AccessDenied))),
            "joining with another key: {reply:?}"
        );
        let (link, reply) = join(key.clone()).await;
        assert!(matches!(reply, Ok(Ok(MlReply::Joined))), "{reply:?}");
        let reply = link.call(&fetch, Bytes::new()).await;
        assert!(
            matches!(&reply, Ok((Ok(MlReply::Records { .. }), data)) if !data.is_empty()),
            "a fetch after joining: {reply:?}"
        );
    });
    let log = cluster.log_of(elkfs_testkit::Process::Master);
    assert!(
        log.contains("refused a chunkserver without this cluster's key"),
        "the master's log does not say why it refused: {log}"
    );
}
