//! Malformed, oversized and mismatched frames close that one connection; the daemon keeps serving.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use elkfs_proto::codec;
use elkfs_proto::hello::{Hello, HelloReply, PROTOCOL_VERSION, Role};
use elkfs_testkit::Cluster;

fn frame(header: &[u8], data: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    out.extend_from_slice(&(header.len() as u32).to_le_bytes());
    out.extend_from_slice(&(data.len() as u32).to_le_bytes());
    out.extend_from_slice(header);
    out.extend_from_slice(data);
    out
}

fn connect(addr: SocketAddr) -> TcpStream {
    let s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s
}

/// Reads until the peer closes; panics if it keeps the connection open.
fn assert_closed(mut s: TcpStream, what: &str) {
    let mut buf = [0u8; 4096];
    loop {
        match s.read(&mut buf) {
            Ok(0) => return,
            Ok(_) => continue,
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return,
            Err(e) => panic!("{what}: connection not closed: {e}"),
        }
    }
}

fn hello(role: Role, version: u32) -> Vec<u8> {
    let mut h = Hello::new(role, "frame-test");
    h.protocol_version = version;
    frame(&codec::encode(&h).unwrap(), &[])
}

/// Says hello properly and returns the open connection.
fn greeted(addr: SocketAddr, role: Role) -> TcpStream {
    let mut s = connect(addr);
    s.write_all(&hello(role, PROTOCOL_VERSION)).unwrap();
    let mut prefix = [0u8; 8];
    s.read_exact(&mut prefix).unwrap();
    let len = u32::from_le_bytes(prefix[..4].try_into().unwrap()) as usize;
    let mut body = vec![0u8; len];
    s.read_exact(&mut body).unwrap();
    let reply: HelloReply = codec::decode(&body).unwrap();
    assert!(matches!(reply, HelloReply::Accepted { .. }), "{reply:?}");
    s
}

fn abuse(addr: SocketAddr, role: Role) {
    // A length prefix far past any limit, before the hello.
    let mut s = connect(addr);
    s.write_all(&u32::MAX.to_le_bytes()).unwrap();
    s.write_all(&u32::MAX.to_le_bytes()).unwrap();
    assert_closed(s, "oversized hello");

    // Garbage instead of a hello.
    let mut s = connect(addr);
    s.write_all(&frame(b"\xff\xfe\xfd\xfc garbage", &[]))
        .unwrap();
    assert_closed(s, "garbage hello");

    // Another protocol version is refused with a message naming both versions.
    let mut s = connect(addr);
    s.write_all(&hello(role, PROTOCOL_VERSION + 41)).unwrap();
    let mut reply = Vec::new();
    let _ = s.read_to_end(&mut reply);
    let text = String::from_utf8_lossy(&reply);
    assert!(
        text.contains(&format!("version {}", PROTOCOL_VERSION + 41))
            && text.contains(&format!("version {PROTOCOL_VERSION}")),
        "refusal should name both versions: {text}"
    );

    // After a good hello: an oversized frame, then a frame that does not decode.
    let mut s = greeted(addr, role);
    s.write_all(&(64u32 << 20).to_le_bytes()).unwrap();
    s.write_all(&(64u32 << 20).to_le_bytes()).unwrap();
    assert_closed(s, "oversized frame");
    let mut s = greeted(addr, role);
    s.write_all(&frame(&[0, 1, 0xff, 0xff, 0xff, 0xff, 0xff], &[]))
        .unwrap();
    assert_closed(s, "undecodable frame");

    // Half a frame, then the peer goes away.
    let mut s = greeted(addr, role);
    s.write_all(&100u32.to_le_bytes()).unwrap();
    drop(s);
}

#[test]
fn malformed_or_oversized_frames_close_only_that_connection() {
    let mut cluster = Cluster::builder().chunkservers(2).start();
    let m = cluster.mount_path(0).to_path_buf();
    std::fs::write(m.join("before"), b"still here").unwrap();
    abuse(cluster.master_addr(), Role::Client);
    abuse(cluster.chunkserver(0).addr(), Role::DataClient);
    // Both daemons still serve: the mount reads old data and writes new data.
    assert_eq!(std::fs::read(m.join("before")).unwrap(), b"still here");
    std::fs::write(m.join("after"), vec![5u8; 3 << 20]).unwrap();
    assert_eq!(std::fs::read(m.join("after")).unwrap(), vec![5u8; 3 << 20]);
    cluster.allow_log_errors("frame");
}
