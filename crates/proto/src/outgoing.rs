//! The sending side of a connection. A frame is written by the thread that sends it, straight to
//! the socket, when nothing waits before it and the socket takes it whole; otherwise it waits in
//! a queue that the connection's writer task empties, many frames per syscall. Writing from the
//! sender saves waking the writer task for each frame: on a small machine that wake-up (a
//! thread switch, often) costs as much as the rest of a small request. TLS connections always go
//! through the writer task.

use std::collections::VecDeque;
use std::io::IoSlice;
use std::pin::Pin;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use tokio::io::{AsyncWrite, AsyncWriteExt, BufWriter};
use tokio::net::tcp::OwnedWriteHalf;
use tokio::sync::Notify;
use tokio::sync::futures::Notified;
use tokio_util::sync::CancellationToken;

use crate::frame;

/// Frames queued or being written by the writer task before senders wait.
const QUEUED_FRAMES: usize = 64;

/// Largest frame a sender writes itself. Larger ones (chunk data) go through the writer task:
/// the socket's lock is held while a sender writes, and copying a MiB into the socket would keep
/// other senders on the connection waiting on it; a wake-up is small beside such a frame anyway.
const DIRECT_MAX: usize = 128 * 1024;

/// Slices handed to one vectored write.
const SLICES_PER_WRITE: usize = 64;

/// Where a connection's bytes go.
pub(crate) enum Sink {
    /// A plain TCP socket, which senders may also write to directly.
    Tcp(Arc<OwnedWriteHalf>),
    /// Any other stream (TLS), written by the writer task only.
    Stream(BufWriter<Box<dyn AsyncWrite + Send + Unpin>>),
}

/// The connection is closed; nothing more is sent.
#[derive(Debug)]
pub(crate) struct Closed;

/// Frames on their way out of one connection.
pub(crate) struct Outgoing {
    state: Mutex<State>,
    /// Wakes the writer task: something was queued.
    queued: Notify,
    /// Wakes senders waiting for room in the queue.
    room: Notify,
}

#[derive(Default)]
struct State {
    /// The socket, for senders' own writes (plain TCP, until the connection closes).
    direct: Option<Arc<OwnedWriteHalf>>,
    /// Bytes to write, in order (the first may be the rest of a frame written in part).
    queue: VecDeque<Bytes>,
    /// Frames in `queue` or being written by the writer task.
    frames: usize,
    /// The writer task is writing bytes it took from the queue: later frames queue behind them.
    writing: bool,
    /// A frame after which the connection closes is queued: nothing more may follow it.
    last_queued: bool,
    closed: bool,
}

impl Outgoing {
    /// The sending side of a connection writing to `sink`.
    pub(crate) fn new(sink: &Sink) -> Outgoing {
        let direct = match sink {
            Sink::Tcp(socket) => Some(socket.clone()),
            Sink::Stream(_) => None,
        };
        Outgoing {
            state: Mutex::new(State {
                direct,
                ..State::default()
            }),
            queued: Notify::new(),
            room: Notify::new(),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Sends a frame: written at once when possible, queued otherwise (waiting while the queue
    /// is full). With `last`, the connection closes once the frame is written.
    pub(crate) async fn send(&self, header: &[u8], data: Bytes, last: bool) -> Result<(), Closed> {
        let mut frame = (framed_header(header, &data), data);
        loop {
            let room = self.room.notified();
            tokio::pin!(room);
            match self.offer(frame, last, Some(room.as_mut()))? {
                None => return Ok(()),
                Some(back) => frame = back,
            }
            room.await;
        }
    }

    /// Sends a frame as [`Outgoing::send`] does unless that would wait for room in the queue;
    /// false then, and nothing was sent. For threads that must not wait on a peer.
    pub(crate) fn try_send(&self, header: &[u8], data: Bytes) -> Result<bool, Closed> {
        let frame = (framed_header(header, &data), data);
        Ok(self.offer(frame, false, None)?.is_none())
    }

    /// Takes a frame (`head` with its prefix, then `data`), writing it at once when possible;
    /// gives it back when the queue is full, after enabling `room` (under the lock, so a
    /// notification cannot slip in between).
    fn offer(
        &self,
        (head, data): (Bytes, Bytes),
        last: bool,
        room: Option<Pin<&mut Notified<'_>>>,
    ) -> Result<Option<(Bytes, Bytes)>, Closed> {
        let mut state = self.lock();
        if state.closed || state.last_queued {
            return Err(Closed);
        }
        if state.frames >= QUEUED_FRAMES {
            if let Some(room) = room {
                room.enable();
            }
            return Ok(Some((head, data)));
        }
        let direct = !last && head.len() + data.len() <= DIRECT_MAX;
        let written = if direct && !state.writing && state.queue.is_empty() {
            write_now(state.direct.as_deref(), &head, &data)
        } else {
            0
        };
        if written == head.len() + data.len() {
            return Ok(None);
        }
        // The queue is empty when something was written: what is left of the frame goes first.
        state
            .queue
            .extend([head, data].into_iter().filter(|p| !p.is_empty()));
        advance(&mut state.queue, written);
        state.frames += 1;
        state.last_queued = last;
        drop(state);
        self.queued.notify_one();
        Ok(None)
    }

    /// Nothing more is sent: a plain TCP socket's sending side is shut down at once (the peer
    /// sees the end), queued frames are dropped, and senders waiting for room give up.
    pub(crate) fn close(&self) {
        let mut state = self.lock();
        state.closed = true;
        if let Some(socket) = state.direct.take() {
            shut_down(&socket);
        }
        state.queue.clear();
        state.frames = 0;
        drop(state);
        self.room.notify_waiters();
    }

    /// Writes what senders queue until the connection closes (`closed`), the frame marked last
    /// is written, or a write fails.
    pub(crate) async fn write_loop(
        &self,
        mut sink: Sink,
        closed: CancellationToken,
    ) -> Result<(), String> {
        loop {
            tokio::select! {
                _ = self.queued.notified() => {}
                _ = closed.cancelled() => {
                    self.close();
                    sink.shutdown().await;
                    return Ok(());
                }
            }
            loop {
                let (batch, frames, last) = {
                    let mut state = self.lock();
                    if state.queue.is_empty() {
                        state.writing = false;
                        break;
                    }
                    state.writing = true;
                    let frames = state.frames;
                    (std::mem::take(&mut state.queue), frames, state.last_queued)
                };
                if let Err(e) = sink.write_all(batch).await {
                    self.close();
                    return Err(format!("write failed: {e}"));
                }
                if last {
                    self.close();
                    sink.shutdown().await;
                    return Ok(());
                }
                let mut state = self.lock();
                state.frames = state.frames.saturating_sub(frames);
                drop(state);
                self.room.notify_waiters();
            }
        }
    }
}

/// A frame's header with the length prefix in front of it.
fn framed_header(header: &[u8], data: &[u8]) -> Bytes {
    let mut head = Vec::with_capacity(frame::PREFIX_LEN + header.len());
    head.extend_from_slice(&frame::prefix(header.len(), data.len()));
    head.extend_from_slice(header);
    Bytes::from(head)
}

/// Writes what `socket` takes now without waiting; how many bytes that was (0 when it would
/// block or failed: the writer task meets the failure and closes the connection).
fn write_now(socket: Option<&OwnedWriteHalf>, head: &[u8], data: &[u8]) -> usize {
    let Some(socket) = socket else {
        return 0;
    };
    socket
        .try_write_vectored(&[IoSlice::new(head), IoSlice::new(data)])
        .unwrap_or(0)
}

impl Sink {
    async fn write_all(&mut self, mut parts: VecDeque<Bytes>) -> std::io::Result<()> {
        match self {
            Sink::Tcp(socket) => {
                while !parts.is_empty() {
                    socket.writable().await?;
                    let slices: Vec<IoSlice<'_>> = parts
                        .iter()
                        .take(SLICES_PER_WRITE)
                        .map(|p| IoSlice::new(p))
                        .collect();
                    let written = match socket.try_write_vectored(&slices) {
                        Ok(0) => return Err(std::io::ErrorKind::WriteZero.into()),
                        Ok(n) => n,
                        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => continue,
                        Err(e) => return Err(e),
                    };
                    advance(&mut parts, written);
                }
                Ok(())
            }
            Sink::Stream(writer) => {
                for part in parts {
                    writer.write_all(&part).await?;
                }
                writer.flush().await
            }
        }
    }

    async fn shutdown(&mut self) {
        match self {
            Sink::Tcp(socket) => shut_down(socket),
            Sink::Stream(writer) => {
                let _ = writer.shutdown().await;
            }
        }
    }
}

/// Shuts down the sending side of a TCP socket (the peer reads the end of the stream); the
/// socket itself closes once both halves are dropped.
fn shut_down(socket: &OwnedWriteHalf) {
    let _ = socket2::SockRef::from(socket.as_ref()).shutdown(std::net::Shutdown::Write);
}

/// Drops the first `n` bytes of `parts`.
fn advance(parts: &mut VecDeque<Bytes>, mut n: usize) {
    while n > 0 {
        let Some(front) = parts.front_mut() else {
            return;
        };
        if front.len() <= n {
            n -= front.len();
            parts.pop_front();
        } else {
            let _ = front.split_to(n);
            n = 0;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::frame::{FrameLimits, read_frame};
    use tokio::net::{TcpListener, TcpStream};

    const LIMITS: FrameLimits = FrameLimits {
        max_header: 64,
        max_data: 1 << 20,
    };

    /// The data of frame `seq` from sender `who`: a length that crosses the direct-write limit
    /// now and then, and bytes that tell where they belong.
    fn payload(who: u8, seq: u32) -> Bytes {
        let len = (seq as usize * 7919 + who as usize * 104_729) % (DIRECT_MAX + DIRECT_MAX / 4);
        (0..len)
            .map(|i| (i as u32 ^ seq).wrapping_add(who as u32) as u8)
            .collect()
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn frames_from_many_senders_arrive_whole_and_each_senders_in_order() {
        const SENDERS: u8 = 6;
        const FRAMES: u32 = 150;
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let client = TcpStream::connect(listener.local_addr().unwrap())
            .await
            .unwrap();
        let (server, _) = listener.accept().await.unwrap();
        // A small send buffer, so that senders meet a full socket and the queue often (and no
        // Nagle delays, as on every connection of ElkFS).
        client.set_nodelay(true).unwrap();
        socket2::SockRef::from(&client)
            .set_send_buffer_size(64 * 1024)
            .unwrap();
        let (_read, write) = client.into_split();
        let sink = Sink::Tcp(Arc::new(write));
        let out = Arc::new(Outgoing::new(&sink));
        let closed = CancellationToken::new();
        let writer = {
            let out = out.clone();
            let closed = closed.clone();
            tokio::spawn(async move { out.write_loop(sink, closed).await })
        };
        let reader = tokio::spawn(async move {
            let mut server = server;
            let mut next = [0u32; SENDERS as usize];
            for _ in 0..SENDERS as u32 * FRAMES {
                let frame = read_frame(&mut server, LIMITS).await.unwrap().unwrap();
                let (who, seq) = (
                    frame.header[0],
                    u32::from_le_bytes(frame.header[1..5].try_into().unwrap()),
                );
                assert_eq!(
                    seq, next[who as usize],
                    "sender {who}'s frames out of order"
                );
                next[who as usize] += 1;
                assert!(
                    frame.data == payload(who, seq),
                    "frame {seq} of sender {who} garbled"
                );
            }
        });
        let senders: Vec<_> = (0..SENDERS)
            .map(|who| {
                let out = out.clone();
                let send_all = async move {
                    for seq in 0..FRAMES {
                        let mut header = vec![who];
                        header.extend_from_slice(&seq.to_le_bytes());
                        out.send(&header, payload(who, seq), false).await.unwrap();
                    }
                };
                if who % 2 == 0 {
                    tokio::spawn(send_all)
                } else {
                    // Half of them from threads outside the runtime, as the mount's kernel
                    // threads and the blocking pool send.
                    let handle = tokio::runtime::Handle::current();
                    tokio::task::spawn_blocking(move || handle.block_on(send_all))
                }
            })
            .collect();
        for s in senders {
            s.await.unwrap();
        }
        tokio::time::timeout(std::time::Duration::from_secs(60), reader)
            .await
            .expect("every frame arrives")
            .unwrap();
        closed.cancel();
        writer.await.unwrap().unwrap();
    }

    /// The peer's end of a loopback connection, and a sink writing to it.
    async fn connected() -> (TcpStream, Sink) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let client = TcpStream::connect(listener.local_addr().unwrap())
            .await
            .unwrap();
        let (server, _) = listener.accept().await.unwrap();
        let (_read, write) = client.into_split();
        (server, Sink::Tcp(Arc::new(write)))
    }

    #[tokio::test]
    async fn a_closed_connection_refuses_frames_and_the_peer_reads_its_end() {
        let (mut server, sink) = connected().await;
        let out = Outgoing::new(&sink);
        out.send(b"h", Bytes::from_static(b"d"), false)
            .await
            .unwrap();
        out.close();
        assert!(out.send(b"h", Bytes::new(), false).await.is_err());
        let first = read_frame(&mut server, LIMITS).await.unwrap().unwrap();
        assert_eq!((&first.header[..], &first.data[..]), (&b"h"[..], &b"d"[..]));
        assert!(read_frame(&mut server, LIMITS).await.unwrap().is_none());
        drop(sink);
    }

    #[tokio::test]
    async fn trying_to_send_into_a_full_queue_hands_the_frame_back_without_waiting() {
        let (mut server, sink) = connected().await;
        let out = Arc::new(Outgoing::new(&sink));
        // Frames over the direct-write limit are always queued; no writer task runs yet.
        let big = Bytes::from(vec![7u8; DIRECT_MAX + 1]);
        for _ in 0..QUEUED_FRAMES {
            assert!(out.try_send(b"q", big.clone()).unwrap());
        }
        let small = Bytes::from_static(b"small");
        assert!(
            !out.try_send(b"x", small.clone()).unwrap(),
            "a full queue took a frame"
        );
        let closed = CancellationToken::new();
        let writer = {
            let out = out.clone();
            let closed = closed.clone();
            tokio::spawn(async move { out.write_loop(sink, closed).await })
        };
        for _ in 0..QUEUED_FRAMES {
            let frame = read_frame(&mut server, LIMITS).await.unwrap().unwrap();
            assert_eq!(
                (&frame.header[..], frame.data.len()),
                (&b"q"[..], DIRECT_MAX + 1)
            );
        }
        // The writer task makes room once its writes are done.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while !out.try_send(b"y", small.clone()).unwrap() {
            assert!(
                std::time::Instant::now() < deadline,
                "no room after the queue drained"
            );
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        }
        let frame = read_frame(&mut server, LIMITS).await.unwrap().unwrap();
        assert_eq!(
            (&frame.header[..], &frame.data[..]),
            (&b"y"[..], &b"small"[..])
        );
        out.close();
        assert!(out.try_send(b"z", Bytes::new()).is_err());
        closed.cancel();
        writer.await.unwrap().unwrap();
    }

    #[test]
    fn advancing_drops_whole_parts_then_the_start_of_one() {
        let mut parts: VecDeque<Bytes> = [&b"ab"[..], b"cde", b"f"]
            .into_iter()
            .map(Bytes::from_static)
            .collect();
        advance(&mut parts, 3);
        assert_eq!(parts, [Bytes::from_static(b"de"), Bytes::from_static(b"f")]);
        advance(&mut parts, 3);
        assert!(parts.is_empty());

        // A frame written in part: what is left of its head, then its data.
        let mut frame: VecDeque<Bytes> = [&b"abcd"[..], b"efgh"]
            .into_iter()
            .map(Bytes::from_static)
            .collect();
        advance(&mut frame, 2);
        assert_eq!(
            frame,
            [Bytes::from_static(b"cd"), Bytes::from_static(b"efgh")]
        );
        advance(&mut frame, 3);
        assert_eq!(frame, [Bytes::from_static(b"fgh")]);
    }
}
