//! A cluster with TLS on end to end: master, two chunkservers, a metalogger and a mount all
//! speak TLS under the cluster's certificate authority. Data written with goal 2 (so one
//! chunkserver forwards to the other) reads back, the CLI reaches the master through the
//! mount's settings, names sent to the master never cross the wire in the clear, and plain
//! connections, or TLS with another cluster's authority, are refused with a reason.

use std::fs;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::{Arc, Mutex};

use elkfs_e2e::pseudo_random;
use elkfs_proto::cluster_key::ClusterKey;
use elkfs_proto::connection::{self, ConnError, Dialer, NoMessage, NoRequests};
use elkfs_proto::data::{DataRequest, DataResponse};
use elkfs_proto::master::{MasterRequest, MasterResponse};
use elkfs_proto::tls::{ClusterAuthority, ServerRole};
use elkfs_proto::{DATA_LIMITS, Hello, MASTER_CLIENT_LIMITS, Role};
use elkfs_testkit::Cluster;

/// The refusals below are logged by the daemons as warnings; the mount that is given another
/// cluster's certificate fails on purpose.
const EXPECTED_ERRORS: &[&str] = &["TLS handshake failed", "certificate"];

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a tokio runtime")
}

/// Relays one connection at a time between its own port and `target`, keeping every byte that
/// went through in either direction.
struct RecordingRelay {
    addr: SocketAddr,
    seen: Arc<Mutex<Vec<u8>>>,
}

impl RecordingRelay {
    fn start(target: SocketAddr) -> RecordingRelay {
        let listener = TcpListener::bind("127.0.0.1:0").expect("binding the relay");
        let addr = listener.local_addr().expect("the relay's address");
        let seen = Arc::new(Mutex::new(Vec::new()));
        let kept = seen.clone();
        std::thread::spawn(move || {
            for client in listener.incoming() {
                let Ok(client) = client else { return };
                let Ok(server) = TcpStream::connect(target) else {
                    return;
                };
                pump(
                    client.try_clone().expect("clone"),
                    server.try_clone().expect("clone"),
                    kept.clone(),
                );
                pump(server, client, kept.clone());
            }
        });
        RecordingRelay { addr, seen }
    }

    fn contains(&self, needle: &[u8]) -> bool {
        let seen = self.seen.lock().unwrap_or_else(|p| p.into_inner());
        seen.windows(needle.len()).any(|w| w == needle)
    }

    fn bytes_seen(&self) -> usize {
        self.seen.lock().unwrap_or_else(|p| p.into_inner()).len()
    }
}

fn pump(mut from: TcpStream, mut to: TcpStream, seen: Arc<Mutex<Vec<u8>>>) {
    std::thread::spawn(move || {
        let mut buf = [0u8; 16 * 1024];
        loop {
            match from.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    seen.lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .extend_from_slice(&buf[..n]);
                    if to.write_all(&buf[..n]).is_err() {
                        break;
                    }
                }
            }
        }
        let _ = to.shutdown(std::net::Shutdown::Both);
    });
}

#[test]
fn a_cluster_with_tls_on_works_end_to_end_and_refuses_plain_connections() {
    let mut builder = Cluster::builder().tls().chunkservers(2).metaloggers(1);
    for pattern in EXPECTED_ERRORS {
        builder = builder.allow_log_errors(pattern);
    }
    let mut cluster = builder.start();
    assert!(cluster.tls_ca_file().is_some_and(|ca| ca.is_file()));

    // Data through the mount, goal 2: both chunkservers hold it, the first forwarded to the second.
    let root = cluster.mount_path(0).to_path_buf();
    cluster.run_cli_ok(&["setgoal", "2", root.to_str().expect("utf-8 path")]);
    let file = root.join("music.flac");
    let contents = pseudo_random(3 << 20, 11);
    fs::write(&file, &contents).expect("writing through the TLS mount");
    assert!(
        fs::read(&file).expect("reading back") == contents,
        "data changed on the way"
    );
    let info = cluster.run_cli_ok(&["fileinfo", file.to_str().expect("utf-8 path")]);
    assert_eq!(
        info.matches("copy ").count(),
        2,
        "two copies expected:\n{info}"
    );

    // A second mount through a relay that records the master's traffic: the names it creates
    // never cross in the clear.
    let relay = RecordingRelay::start(cluster.master_addr());
    let second = cluster.add_mount(None, &format!("master={}", relay.addr));
    let secret = "a-name-only-the-mount-and-master-know";
    fs::write(cluster.mount_path(second).join(secret), b"x").expect("creating through the relay");
    assert!(
        root.join(secret).exists(),
        "the first mount does not see the new file"
    );
    assert!(
        relay.bytes_seen() > 1000,
        "no traffic went through the relay"
    );
    assert!(
        !relay.contains(secret.as_bytes()),
        "a file name crossed the wire in the clear"
    );

    // Plain connections are refused with the reason, by the master and by a data port.
    let rt = runtime();
    let plain_master = rt.block_on(connection::connect::<
        MasterRequest,
        MasterResponse,
        NoMessage,
        NoMessage,
        _,
    >(
        cluster.master_addr(),
        &Hello::new(Role::Client, "plain-client"),
        MASTER_CLIENT_LIMITS,
        "master",
        NoRequests,
    ));
    match plain_master {
        Err(ConnError::Refused { reason, .. }) => {
            assert!(reason.contains("TLS connections only"), "{reason}")
        }
        Err(other) => panic!("the master refused a plain connection without a reason: {other}"),
        Ok(_) => panic!("the master took a plain connection"),
    }
    let data_port = cluster.chunkserver(0).addr();
    let plain_data = rt.block_on(connection::connect::<
        DataRequest,
        DataResponse,
        NoMessage,
        NoMessage,
        _,
    >(
        data_port,
        &Hello::new(Role::DataClient, "plain-client"),
        DATA_LIMITS,
        "chunkserver",
        NoRequests,
    ));
    assert!(
        matches!(&plain_data, Err(ConnError::Refused { reason, .. }) if reason.contains("TLS connections only")),
        "the data port took a plain connection or gave no reason: {:?}",
        plain_data.err()
    );

    // TLS trusting another cluster's authority does not get through the handshake.
    let stranger = ClusterAuthority::from_cluster_key(&ClusterKey::from_bytes([9; 32]))
        .expect("another authority");
    let dialer = Dialer {
        bind: None,
        tls: Some(stranger.trust().client(ServerRole::Master).expect("client")),
    };
    let other_cluster = rt.block_on(connection::connect_with::<
        MasterRequest,
        MasterResponse,
        NoMessage,
        NoMessage,
        _,
    >(
        &dialer,
        cluster.master_addr(),
        &Hello::new(Role::Client, "stranger"),
        MASTER_CLIENT_LIMITS,
        "master",
        NoRequests,
    ));
    assert!(
        matches!(&other_cluster, Err(ConnError::Tls { .. })),
        "a client trusting another cluster got through: {:?}",
        other_cluster.err()
    );
    let stranger_ca = cluster.dir().join("stranger-ca");
    fs::create_dir_all(&stranger_ca).expect("mkdir");
    let stranger_file = stranger.write_certificate(&stranger_ca).expect("writing");
    let refused = cluster
        .try_add_mount(None, &format!("tlsca={}", stranger_file.display()))
        .expect_err("a mount trusting another cluster's authority was let in");
    assert!(refused.to_string().contains("certificate"), "{refused}");
}
