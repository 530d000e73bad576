//! A multiplexed connection: many requests in flight in both directions, answered in any order.
//!
//! Every frame's header starts with a kind (request or response) and a request id, then the body.
//! One task reads frames and hands requests to a [`Handler`] (in arrival order) and responses to
//! the callers waiting for them. Frames go out through `outgoing.rs`: written by the
//! sender itself when possible, by a writer task otherwise.

use std::collections::HashMap;
use std::fmt::Debug;
use std::future::Future;
use std::marker::PhantomData;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use serde::Serialize;
use serde::de::DeserializeOwned;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, BufWriter};
use tokio::net::TcpStream;
use tokio::net::tcp::OwnedWriteHalf;
use tokio::sync::oneshot;
use tokio_util::sync::CancellationToken;

use crate::codec::{self, CodecError};
use crate::frame::{self, FrameError, FrameLimits};
use crate::hello::{Hello, HelloReply};
use crate::outgoing::{Outgoing, Sink};
/// The reading side of a connection, plain TCP or TLS.
pub(crate) use crate::read_side::ReadSide;
use crate::tls::TlsClient;

pub use crate::accept::{Accepted, accept};

const KIND_REQUEST: u8 = 0;
const KIND_RESPONSE: u8 = 1;

/// Write buffer size in user space (the kernel's comes on top).
const IO_BUFFER: usize = 256 * 1024;
/// The writing side of a connection, plain TCP or TLS.
pub(crate) enum WriteSide {
    /// Plain TCP: once the connection runs, senders may write to the socket themselves.
    Tcp(BufWriter<OwnedWriteHalf>),
    /// TLS.
    Stream(BufWriter<Box<dyn AsyncWrite + Send + Unpin>>),
}

impl WriteSide {
    /// Where the running connection writes; anything written before must have been flushed.
    fn into_sink(self) -> Sink {
        match self {
            WriteSide::Tcp(writer) => Sink::Tcp(Arc::new(writer.into_inner())),
            WriteSide::Stream(writer) => Sink::Stream(writer),
        }
    }

    fn writer(self: std::pin::Pin<&mut Self>) -> std::pin::Pin<&mut (dyn AsyncWrite + Unpin)> {
        match self.get_mut() {
            WriteSide::Tcp(w) => std::pin::Pin::new(w),
            WriteSide::Stream(w) => std::pin::Pin::new(w),
        }
    }
}

/// The hello is written before the connection runs, through its buffer.
impl AsyncWrite for WriteSide {
    fn poll_write(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        self.writer().poll_write(cx, buf)
    }

    fn poll_flush(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        self.writer().poll_flush(cx)
    }

    fn poll_shutdown(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        self.writer().poll_shutdown(cx)
    }
}

/// Buffers the two directions of a stream separately, so reading and writing go on at once.
pub(crate) fn buffered_halves<S>(stream: S) -> (ReadSide, WriteSide)
where
    S: AsyncRead + AsyncWrite + Send + Unpin + 'static,
{
    let (read, write) = tokio::io::split(stream);
    (
        ReadSide::new(Box::new(read)),
        WriteSide::Stream(BufWriter::with_capacity(IO_BUFFER, Box::new(write))),
    )
}

/// Plain TCP halves, without the lock that [`tokio::io::split`] puts between them.
pub(crate) fn tcp_halves(stream: TcpStream) -> (ReadSide, WriteSide) {
    let (read, write) = stream.into_split();
    (
        ReadSide::new(Box::new(read)),
        WriteSide::Tcp(BufWriter::with_capacity(IO_BUFFER, write)),
    )
}

/// Limits for the hello exchange, before the connection kind is known.
pub(crate) const HELLO_LIMITS: FrameLimits = FrameLimits {
    max_header: 4096,
    max_data: 0,
};

/// Why a connection or a call on it failed.
#[derive(Debug, thiserror::Error)]
pub enum ConnError {
    /// Connecting or talking to the peer failed.
    #[error("{peer}: {source}")]
    Io {
        /// Who we talked to.
        peer: String,
        /// What the OS said.
        #[source]
        source: std::io::Error,
    },
    /// The TLS handshake failed: the other side does not speak TLS, or its certificate is not
    /// from this cluster's authority.
    #[error(
        "{peer}: TLS handshake failed: {source} (is TLS on at both ends, and is the certificate \
         authority file this cluster's ca.crt?)"
    )]
    Tls {
        /// Who we talked to.
        peer: String,
        /// What rustls said.
        #[source]
        source: std::io::Error,
    },
    /// The peer refused the hello.
    #[error("{peer} refused the connection: {reason}")]
    Refused {
        /// Who refused.
        peer: String,
        /// What it said.
        reason: String,
    },
    /// The connection is closed (the reason is what closed it).
    #[error("connection to {peer} closed: {reason}")]
    Closed {
        /// Who we talked to.
        peer: String,
        /// What closed it.
        reason: String,
    },
    /// A frame broke the framing rules.
    #[error("{peer}: {source}")]
    Frame {
        /// Who sent it.
        peer: String,
        /// What was wrong.
        #[source]
        source: FrameError,
    },
    /// A message could not be encoded or decoded.
    #[error("{peer}: {source}")]
    Codec {
        /// Who we talked to.
        peer: String,
        /// What was wrong.
        #[source]
        source: CodecError,
    },
    /// The peer sent something this connection kind does not carry.
    #[error("{peer}: {what}")]
    Protocol {
        /// Who sent it.
        peer: String,
        /// What was wrong.
        what: String,
    },
}

/// A message type that can cross a connection.
pub trait Message: Serialize + DeserializeOwned + Debug + Send + Sync + 'static {}
impl<T: Serialize + DeserializeOwned + Debug + Send + Sync + 'static> Message for T {}

/// A message type with no values, for a direction that carries no requests.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, serde::Deserialize)]
pub enum NoMessage {}

/// Receives the requests a peer sends, one at a time in arrival order.
///
/// `handle` should return quickly (spawn long work and answer through the [`Responder`] later), or
/// the connection stops reading while it runs; that is also how a handler applies backpressure.
pub trait Handler<Req, Reply>: Send + 'static {
    /// Handles one request; answer it through `responder`, now or later.
    fn handle(
        &mut self,
        request: Req,
        data: Bytes,
        responder: Responder<Reply>,
    ) -> impl Future<Output = ()> + Send;
}

/// A handler for connections on which the peer sends no requests: any request closes them.
pub struct NoRequests;

impl Handler<NoMessage, NoMessage> for NoRequests {
    async fn handle(&mut self, request: NoMessage, _data: Bytes, _responder: Responder<NoMessage>) {
        match request {}
    }
}

/// Answers one request; dropping it without answering leaves the caller waiting until the
/// connection closes, so always answer.
pub struct Responder<Reply> {
    id: u64,
    out: Arc<Outgoing>,
    _reply: PhantomData<fn(Reply)>,
}

impl<Reply: Serialize> Responder<Reply> {
    /// Sends the answer with optional raw data; a closed connection drops it silently.
    pub async fn send(self, reply: &Reply, data: Bytes) {
        self.enqueue(reply, data, false).await;
    }

    /// Sends the answer, then closes the connection once it is written (a refusal the peer
    /// must still get to read).
    pub async fn send_then_close(self, reply: &Reply) {
        self.enqueue(reply, Bytes::new(), true).await;
    }

    /// Sends the answer unless the connection's queue is full, in which case it is handed back
    /// (for a thread that must not wait on the peer: the caller sends it from a task instead).
    /// A closed connection drops it silently.
    pub fn try_send(self, reply: &Reply, data: Bytes) -> Result<(), Self> {
        let Some(header) = self.header(reply) else {
            return Ok(());
        };
        match self.out.try_send(&header, data) {
            Ok(false) => Err(self),
            Ok(true) | Err(_) => Ok(()),
        }
    }

    async fn enqueue(self, reply: &Reply, data: Bytes, last: bool) {
        if let Some(header) = self.header(reply) {
            let _ = self.out.send(&header, data, last).await;
        }
    }

    /// The frame header of the answer; `None` (logged) if it cannot be encoded.
    fn header(&self, reply: &Reply) -> Option<Vec<u8>> {
        codec::encode(&(KIND_RESPONSE, self.id, reply))
            .map_err(|e| tracing::error!(error = %e, "cannot encode a reply"))
            .ok()
    }
}

type Pending<Resp> = Mutex<Option<HashMap<u64, oneshot::Sender<Result<(Resp, Bytes), ConnError>>>>>;

struct Shared<Resp> {
    peer: SocketAddr,
    label: &'static str,
    pending: Pending<Resp>,
    next_id: AtomicU64,
    closed: CancellationToken,
    close_reason: Mutex<Option<String>>,
}

impl<Resp> Shared<Resp> {
    fn closed_error(&self) -> ConnError {
        let reason = self
            .close_reason
            .lock()
            .map(|r| r.clone())
            .ok()
            .flatten()
            .unwrap_or_else(|| "closed".to_string());
        ConnError::Closed {
            peer: self.peer_name(),
            reason,
        }
    }

    fn peer_name(&self) -> String {
        format!("{} {}", self.label, self.peer)
    }

    fn close(&self, reason: String) {
        if let Ok(mut r) = self.close_reason.lock() {
            r.get_or_insert(reason);
        }
        self.closed.cancel();
        let waiting = self.pending.lock().ok().and_then(|mut p| p.take());
        for (_, tx) in waiting.into_iter().flatten() {
            let _ = tx.send(Err(self.closed_error()));
        }
    }
}

/// The answer to a request queued with [`Connection::send`].
pub struct PendingReply<Resp> {
    rx: oneshot::Receiver<Result<(Resp, Bytes), ConnError>>,
    shared: Arc<Shared<Resp>>,
    /// Keeps a client-side connection open until the answer is in.
    _owner: Option<Arc<CancelOnDrop>>,
}

impl<Resp> PendingReply<Resp> {
    /// Waits for the answer (or for the connection to close).
    pub async fn wait(self) -> Result<(Resp, Bytes), ConnError> {
        match self.rx.await {
            Ok(result) => result,
            Err(_) => Err(self.shared.closed_error()),
        }
    }
}

/// Cancels the connection when the last client-side handle goes away.
struct CancelOnDrop(CancellationToken);

impl Drop for CancelOnDrop {
    fn drop(&mut self) {
        self.0.cancel();
    }
}

/// Closes the sending side when the connection's tasks end or are dropped.
struct CloseOnDrop(Arc<Outgoing>);

impl Drop for CloseOnDrop {
    fn drop(&mut self) {
        self.0.close();
    }
}

/// A handle for sending requests on a connection; cheap to clone.
pub struct Connection<Req, Resp> {
    shared: Arc<Shared<Resp>>,
    out: Arc<Outgoing>,
    _owner: Option<Arc<CancelOnDrop>>,
    _request: PhantomData<fn(Req)>,
}

impl<Req, Resp> Clone for Connection<Req, Resp> {
    fn clone(&self) -> Self {
        Connection {
            shared: self.shared.clone(),
            out: self.out.clone(),
            _owner: self._owner.clone(),
            _request: PhantomData,
        }
    }
}

impl<Req: Message, Resp: Message> Connection<Req, Resp> {
    /// Sends a request (with optional raw data) and waits for its answer.
    pub async fn call(&self, request: &Req, data: Bytes) -> Result<(Resp, Bytes), ConnError> {
        self.send(request, data).await?.wait().await
    }

    /// Queues a request for sending and returns once it is queued, so requests sent one after
    /// another leave in that order; the answer is awaited separately.
    pub async fn send(&self, request: &Req, data: Bytes) -> Result<PendingReply<Resp>, ConnError> {
        let id = self.shared.next_id.fetch_add(1, Ordering::Relaxed);
        let header =
            codec::encode(&(KIND_REQUEST, id, request)).map_err(|source| ConnError::Codec {
                peer: self.shared.peer_name(),
                source,
            })?;
        let (tx, rx) = oneshot::channel();
        match self.shared.pending.lock() {
            Ok(mut pending) => match pending.as_mut() {
                Some(map) => {
                    map.insert(id, tx);
                }
                None => return Err(self.shared.closed_error()),
            },
            Err(_) => return Err(self.shared.closed_error()),
        }
        if self.out.send(&header, data, false).await.is_err() {
            if let Ok(mut pending) = self.shared.pending.lock()
                && let Some(map) = pending.as_mut()
            {
                map.remove(&id);
            }
            return Err(self.shared.closed_error());
        }
        Ok(PendingReply {
            rx,
            shared: self.shared.clone(),
            _owner: self._owner.clone(),
        })
    }

    /// Sends a request and returns just the message of the answer.
    pub async fn ask(&self, request: &Req) -> Result<Resp, ConnError> {
        Ok(self.call(request, Bytes::new()).await?.0)
    }
}

impl<Req, Resp> Connection<Req, Resp> {
    /// The address of the other end.
    pub fn peer(&self) -> SocketAddr {
        self.shared.peer
    }

    /// Whether the connection has closed (calls on it fail at once).
    pub fn is_closed(&self) -> bool {
        self.shared.closed.is_cancelled()
    }

    /// Waits until the connection closes, and says why.
    pub async fn closed(&self) -> String {
        self.shared.closed.cancelled().await;
        self.shared
            .close_reason
            .lock()
            .ok()
            .and_then(|r| r.clone())
            .unwrap_or_else(|| "closed".to_string())
    }

    /// Closes the connection; calls in flight fail.
    pub fn close(&self, reason: &str) {
        self.shared.close(reason.to_string());
    }
}

/// How to reach a peer: from which local address, and whether over TLS.
#[derive(Clone, Debug, Default)]
pub struct Dialer {
    /// The local address to connect from (a host with several addresses choosing the one the
    /// peer's access rules know); any when `None`.
    pub bind: Option<std::net::IpAddr>,
    /// TLS, with the server role and authority to check; plain TCP when `None`.
    pub tls: Option<TlsClient>,
}

/// Connects to `addr` over plain TCP, says hello as `role`, and starts the connection's tasks.
/// Requests the peer sends go to `handler`. The connection closes when every handle to it is
/// dropped.
pub async fn connect<Req, Resp, PeerReq, PeerReply, H>(
    addr: SocketAddr,
    hello: &Hello,
    limits: FrameLimits,
    label: &'static str,
    handler: H,
) -> Result<Connection<Req, Resp>, ConnError>
where
    Req: Message,
    Resp: Message,
    PeerReq: Message,
    PeerReply: Message,
    H: Handler<PeerReq, PeerReply>,
{
    connect_with(&Dialer::default(), addr, hello, limits, label, handler).await
}

/// Like [`connect`], the way `dialer` says.
pub async fn connect_with<Req, Resp, PeerReq, PeerReply, H>(
    dialer: &Dialer,
    addr: SocketAddr,
    hello: &Hello,
    limits: FrameLimits,
    label: &'static str,
    handler: H,
) -> Result<Connection<Req, Resp>, ConnError>
where
    Req: Message,
    Resp: Message,
    PeerReq: Message,
    PeerReply: Message,
    H: Handler<PeerReq, PeerReply>,
{
    let peer = format!("{label} {addr}");
    let io_err = |source| ConnError::Io {
        peer: peer.clone(),
        source,
    };
    let stream = match dialer.bind {
        None => TcpStream::connect(addr).await.map_err(io_err)?,
        Some(ip) => {
            let socket = if ip.is_ipv4() {
                tokio::net::TcpSocket::new_v4()
            } else {
                tokio::net::TcpSocket::new_v6()
            }
            .map_err(io_err)?;
            socket.bind(SocketAddr::new(ip, 0)).map_err(io_err)?;
            socket.connect(addr).await.map_err(io_err)?
        }
    };
    stream.set_nodelay(true).map_err(io_err)?;
    set_keepalive(&stream);
    let (mut reader, mut writer) = match &dialer.tls {
        None => tcp_halves(stream),
        Some(tls) => {
            let secured = tls
                .handshake(stream)
                .await
                .map_err(|source| ConnError::Tls {
                    peer: peer.clone(),
                    source,
                })?;
            buffered_halves(secured)
        }
    };
    let header = codec::encode(hello).map_err(|source| ConnError::Codec {
        peer: peer.clone(),
        source,
    })?;
    frame::write_frame(&mut writer, &header, &[])
        .await
        .map_err(io_err)?;
    writer.flush().await.map_err(io_err)?;
    let reply: HelloReply = match frame::read_frame(&mut reader, HELLO_LIMITS).await {
        Ok(Some(f)) => codec::decode(&f.header).map_err(|source| ConnError::Codec {
            peer: peer.clone(),
            source,
        })?,
        Ok(None) => {
            return Err(ConnError::Closed {
                peer,
                reason: "closed during hello".into(),
            });
        }
        Err(source) => return Err(ConnError::Frame { peer, source }),
    };
    if let HelloReply::Refused { reason } = reply {
        return Err(ConnError::Refused { peer, reason });
    }
    let (conn, run) =
        start::<Req, Resp, PeerReq, PeerReply, H>(reader, writer, addr, limits, label, handler);
    let token = conn.shared.closed.clone();
    tokio::spawn(async move {
        if let Err(reason) = run.await {
            tracing::debug!(%reason, "connection closed");
        }
    });
    Ok(Connection {
        _owner: Some(Arc::new(CancelOnDrop(token))),
        ..conn
    })
}

/// TCP keepalive: a peer silent this long is probed, every [`KEEPALIVE_INTERVAL`], and given
/// up after [`KEEPALIVE_PROBES`] unanswered probes, so half-open connections (a peer that lost
/// power, a cut cable) end within about a minute instead of never.
const KEEPALIVE_IDLE: Duration = Duration::from_secs(30);
const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(10);
const KEEPALIVE_PROBES: u32 = 3;

pub(crate) fn set_keepalive(stream: &TcpStream) {
    let keepalive = socket2::TcpKeepalive::new()
        .with_time(KEEPALIVE_IDLE)
        .with_interval(KEEPALIVE_INTERVAL)
        .with_retries(KEEPALIVE_PROBES);
    if let Err(e) = socket2::SockRef::from(stream).set_tcp_keepalive(&keepalive) {
        tracing::debug!(error = %e, "cannot enable TCP keepalive");
    }
}

fn start<Req, Resp, PeerReq, PeerReply, H>(
    reader: ReadSide,
    writer: WriteSide,
    peer: SocketAddr,
    limits: FrameLimits,
    label: &'static str,
    handler: H,
) -> (
    Connection<Req, Resp>,
    impl Future<Output = Result<(), String>> + Send,
)
where
    Req: Message,
    Resp: Message,
    PeerReq: Message,
    PeerReply: Message,
    H: Handler<PeerReq, PeerReply>,
{
    start_with(reader, writer, peer, limits, label, |_| handler)
}

pub(crate) fn start_with<Req, Resp, PeerReq, PeerReply, H>(
    reader: ReadSide,
    writer: WriteSide,
    peer: SocketAddr,
    limits: FrameLimits,
    label: &'static str,
    make_handler: impl FnOnce(Connection<Req, Resp>) -> H,
) -> (
    Connection<Req, Resp>,
    impl Future<Output = Result<(), String>> + Send,
)
where
    Req: Message,
    Resp: Message,
    PeerReq: Message,
    PeerReply: Message,
    H: Handler<PeerReq, PeerReply>,
{
    let sink = writer.into_sink();
    let out = Arc::new(Outgoing::new(&sink));
    let shared = Arc::new(Shared {
        peer,
        label,
        pending: Mutex::new(Some(HashMap::new())),
        next_id: AtomicU64::new(1),
        closed: CancellationToken::new(),
        close_reason: Mutex::new(None),
    });
    let conn = Connection {
        shared: shared.clone(),
        out: out.clone(),
        _owner: None,
        _request: PhantomData,
    };
    let handler = make_handler(conn.clone());
    let run = async move {
        // However `run` ends, dropped included, nothing more is sent and the peer sees the end.
        let _closing = CloseOnDrop(out.clone());
        let writing = out.write_loop(sink, shared.closed.clone());
        let reading = read_loop::<Resp, PeerReq, PeerReply, H>(
            reader,
            out.clone(),
            shared.clone(),
            limits,
            handler,
        );
        let result = tokio::select! {
            r = reading => r,
            r = writing => r,
            _ = shared.closed.cancelled() => Ok(()),
        };
        let reason = match &result {
            Ok(()) => "closed".to_string(),
            Err(e) => e.clone(),
        };
        shared.close(reason);
        result
    };
    (conn, run)
}

async fn read_loop<Resp, PeerReq, PeerReply, H>(
    mut reader: ReadSide,
    out: Arc<Outgoing>,
    shared: Arc<Shared<Resp>>,
    limits: FrameLimits,
    mut handler: H,
) -> Result<(), String>
where
    Resp: Message,
    PeerReq: Message,
    PeerReply: Message,
    H: Handler<PeerReq, PeerReply>,
{
    loop {
        let frame = match frame::read_frame(&mut reader, limits).await {
            Ok(Some(f)) => f,
            Ok(None) => return Ok(()),
            Err(e) => return Err(e.to_string()),
        };
        let ((kind, id), used): ((u8, u64), usize) =
            codec::decode_prefix(&frame.header).map_err(|e| e.to_string())?;
        let body = &frame.header[used..];
        match kind {
            KIND_REQUEST => {
                let request: PeerReq = codec::decode(body).map_err(|e| e.to_string())?;
                let responder = Responder {
                    id,
                    out: out.clone(),
                    _reply: PhantomData,
                };
                handler.handle(request, frame.data, responder).await;
            }
            KIND_RESPONSE => {
                let response: Resp = codec::decode(body).map_err(|e| e.to_string())?;
                let waiter = shared
                    .pending
                    .lock()
                    .ok()
                    .and_then(|mut p| p.as_mut().and_then(|m| m.remove(&id)));
                match waiter {
                    Some(tx) => {
                        let _ = tx.send(Ok((response, frame.data)));
                    }
                    None => return Err(format!("response to unknown request {id}")),
                }
            }
            other => return Err(format!("unknown frame kind {other}")),
        }
    }
}
