//! The server's side of opening a connection: telling TLS from plain, the TLS handshake, and
//! the hello, which is admitted or refused with a reason the peer can show.

use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio_util::sync::CancellationToken;

use crate::codec;
use crate::connection::{
    Connection, HELLO_LIMITS, Handler, Message, ReadSide, WriteSide, buffered_halves,
    set_keepalive, start_with, tcp_halves,
};
use crate::frame::{self, FrameLimits};
use crate::hello::{Hello, HelloReply, PROTOCOL_VERSION};
use crate::tls::{self, TlsServer};

/// A connection accepted by a server, after a successful hello.
pub struct Accepted {
    /// What the peer said it is.
    pub hello: Hello,
    /// Where it connects from.
    pub peer: SocketAddr,
    /// The local address it connected to.
    pub local: SocketAddr,
    reader: ReadSide,
    writer: WriteSide,
}

/// How long an accepted connection may take to say hello (and finish its TLS handshake) before
/// it is closed.
const HELLO_TIMEOUT: Duration = Duration::from_secs(10);

/// Reads the peer's hello and accepts it if its protocol version matches and `admit` agrees
/// (it checks the role and the peer's address); otherwise tells the peer why not and returns the
/// reason. With `tls`, the peer must start with a TLS handshake; without it, one that does is
/// refused.
pub async fn accept(
    stream: TcpStream,
    server: &str,
    tls: Option<&TlsServer>,
    admit: impl FnOnce(&Hello, SocketAddr) -> Result<(), String>,
) -> Result<Accepted, String> {
    let peer = stream
        .peer_addr()
        .map_err(|e| format!("no peer address: {e}"))?;
    let local = stream
        .local_addr()
        .map_err(|e| format!("no local address: {e}"))?;
    let _ = stream.set_nodelay(true);
    set_keepalive(&stream);
    let opening = tokio::time::timeout(HELLO_TIMEOUT, read_hello(stream, server, tls));
    let (hello, reader, mut writer) = match opening.await {
        Ok(result) => result?,
        Err(_) => return Err(format!("no hello within {HELLO_TIMEOUT:?}")),
    };
    let refusal = if hello.protocol_version != PROTOCOL_VERSION {
        Some(format!(
            "protocol version mismatch: {} speaks version {}, {server} speaks version {PROTOCOL_VERSION}",
            hello.software, hello.protocol_version
        ))
    } else {
        admit(&hello, peer).err()
    };
    match refusal {
        Some(reason) => {
            refuse(&mut writer, &reason).await;
            Err(reason)
        }
        None => {
            let reply = HelloReply::Accepted {
                protocol_version: PROTOCOL_VERSION,
            };
            send_hello_reply(&mut writer, &reply).await?;
            Ok(Accepted {
                hello,
                peer,
                local,
                reader,
                writer,
            })
        }
    }
}

/// Tells whether the peer speaks TLS, runs the handshake if it does and may, and reads the hello.
async fn read_hello(
    stream: TcpStream,
    server: &str,
    tls: Option<&TlsServer>,
) -> Result<(Hello, ReadSide, WriteSide), String> {
    let speaks_tls = starts_with_tls(&stream)
        .await
        .map_err(|e| format!("bad hello: {e}"))?;
    let (mut reader, mut writer) = match (tls, speaks_tls) {
        (Some(tls), true) => {
            let secured = tls
                .handshake(stream)
                .await
                .map_err(|e| format!("TLS handshake failed: {e}"))?;
            buffered_halves(secured)
        }
        (None, false) => tcp_halves(stream),
        (Some(_), false) => {
            let (_, mut writer) = tcp_halves(stream);
            let reason = format!(
                "{server} takes TLS connections only (tls = true): mount with -o tls and the \
                 master's ca.crt, and set tls = true on chunkservers and metaloggers"
            );
            refuse(&mut writer, &reason).await;
            return Err(reason);
        }
        (None, true) => {
            return Err(format!(
                "the peer started a TLS handshake but {server} runs without TLS; set tls = true \
                 here or connect without TLS"
            ));
        }
    };
    let hello = match frame::read_frame(&mut reader, HELLO_LIMITS).await {
        Ok(Some(f)) => codec::decode(&f.header).map_err(|e| format!("bad hello: {e}"))?,
        Ok(None) => return Err("closed before hello".to_string()),
        Err(e) => {
            let reason = format!("bad hello: {e}");
            refuse(&mut writer, &reason).await;
            return Err(reason);
        }
    };
    Ok((hello, reader, writer))
}

/// Whether the peer's first bytes start a TLS handshake; waits until enough of them came (a
/// hello frame or a TLS record is sent in one piece, so this rarely waits twice).
async fn starts_with_tls(stream: &TcpStream) -> std::io::Result<bool> {
    let mut first = [0u8; 3];
    loop {
        let n = stream.peek(&mut first).await?;
        if n == 0 || first[0] != 0x16 {
            return Ok(false);
        }
        if n == first.len() {
            return Ok(tls::starts_tls_handshake(&first));
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// Sends a refusal as the hello's reply (best effort: the connection is closed next anyway).
async fn refuse(writer: &mut WriteSide, reason: &str) {
    let reply = HelloReply::Refused {
        reason: reason.to_string(),
    };
    let _ = send_hello_reply(writer, &reply).await;
}

async fn send_hello_reply(writer: &mut WriteSide, reply: &HelloReply) -> Result<(), String> {
    let header = codec::encode(reply).map_err(|e| e.to_string())?;
    frame::write_frame(writer, &header, &[])
        .await
        .map_err(|e| e.to_string())?;
    writer.flush().await.map_err(|e| e.to_string())
}

impl Accepted {
    /// Serves the connection until it closes: requests go to the handler that `make_handler`
    /// builds (it gets a handle for sending requests the other way). Returns why it closed:
    /// `Ok` for a clean close by the peer or by `stop`, `Err` with one sentence otherwise.
    pub async fn serve<Req, Resp, PeerReq, PeerReply, H>(
        self,
        limits: FrameLimits,
        label: &'static str,
        stop: CancellationToken,
        make_handler: impl FnOnce(Connection<Req, Resp>) -> H,
    ) -> Result<(), String>
    where
        Req: Message,
        Resp: Message,
        PeerReq: Message,
        PeerReply: Message,
        H: Handler<PeerReq, PeerReply>,
    {
        let (conn, run) = start_with::<Req, Resp, PeerReq, PeerReply, H>(
            self.reader,
            self.writer,
            self.peer,
            limits,
            label,
            make_handler,
        );
        tokio::select! {
            result = run => result,
            _ = stop.cancelled() => {
                conn.close("the server is stopping");
                Ok(())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::connection::{ConnError, Dialer, NoMessage, NoRequests, connect, connect_with};

    #[tokio::test(start_paused = true)]
    async fn a_peer_that_never_says_hello_is_closed() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let _silent = TcpStream::connect(addr).await.unwrap();
        let (stream, _) = listener.accept().await.unwrap();
        let outcome = accept(stream, "test", None, |_, _| Ok(())).await;
        match outcome {
            Err(reason) => assert!(reason.contains("no hello"), "{reason}"),
            Ok(_) => panic!("a silent peer was accepted"),
        }
    }

    #[tokio::test]
    async fn tls_and_plain_ends_refuse_each_other_with_a_reason() {
        use crate::cluster_key::ClusterKey;
        use crate::hello::Role;
        use crate::tls::{ClusterAuthority, ServerRole};
        let authority =
            ClusterAuthority::from_cluster_key(&ClusterKey::from_bytes([5; 32])).unwrap();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let server = authority.server(ServerRole::Master).unwrap();
        let serving = tokio::spawn(async move {
            let mut outcomes = Vec::new();
            for tls in [Some(&server), None, Some(&server)] {
                let (stream, _) = listener.accept().await.unwrap();
                outcomes.push(
                    accept(stream, "test", tls, |_, _| Ok(()))
                        .await
                        .map(|a| a.hello.role),
                );
            }
            outcomes
        });
        let hello = Hello::new(Role::Client, "test");
        let plain = connect::<NoMessage, NoMessage, NoMessage, NoMessage, _>(
            addr,
            &hello,
            HELLO_LIMITS,
            "test",
            NoRequests,
        )
        .await;
        let dialer = Dialer {
            bind: None,
            tls: Some(authority.trust().client(ServerRole::Master).unwrap()),
        };
        let dial = || {
            connect_with::<NoMessage, NoMessage, NoMessage, NoMessage, _>(
                &dialer,
                addr,
                &hello,
                HELLO_LIMITS,
                "test",
                NoRequests,
            )
        };
        let to_plain = dial().await;
        let secured = dial().await;
        match plain {
            Err(ConnError::Refused { reason, .. }) => {
                assert!(reason.contains("TLS connections only"), "{reason}")
            }
            other => panic!("a plain client was not refused: {:?}", other.err()),
        }
        assert!(
            matches!(to_plain, Err(ConnError::Tls { .. })),
            "{:?}",
            to_plain.err()
        );
        assert!(secured.is_ok(), "{:?}", secured.err());
        let outcomes = serving.await.unwrap();
        assert!(
            outcomes[0]
                .as_ref()
                .is_err_and(|e| e.contains("TLS connections only"))
        );
        assert!(
            outcomes[1]
                .as_ref()
                .is_err_and(|e| e.contains("runs without TLS"))
        );
        assert_eq!(outcomes[2], Ok(Role::Client));
    }
}
