//! The sending side of a connection. A frame is written by the thread that sends it, straight to
//! the socket, when nothing waits before it and the socket takes it whole; otherwise it waits in
//! a queue that the connection's writer task empties, many frames per syscall. Writing from the
//! sender saves waking the writer task for each frame: on a small machine that wake-up (a
//! thread switch, often) costs as much as the rest of a small request. TLS connections always go
//! through the writer task.

use std::collections::VecDeque;
use std::io::IoSlice;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use tokio::io::{AsyncWrite, AsyncWriteExt, BufWriter};
use tokio::net::tcp::OwnedWriteHalf;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::frame;

/// Frames queued before senders wait for the writer task to take them.
const QUEUED_FRAMES: usize = 64;

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
        let mut head = Vec::with_capacity(frame::PREFIX_LEN + header.len());
        head.extend_from_slice(&frame::prefix(header.len(), data.len()));
        head.extend_from_slice(header);
        let mut head = Bytes::from(head);
        let mut data = data;
        loop {
            let room = self.room.notified();
            tokio::pin!(room);
            {
                let mut state = self.lock();
                if state.closed || state.last_queued {
                    return Err(Closed);
                }
                if state.frames < QUEUED_FRAMES {
                    if !last && !state.writing && state.queue.is_empty() {
                        let written = write_now(state.direct.as_deref(), &head, &data);
                        if written == head.len() + data.len() {
                            return Ok(());
                        }
                        skip(&mut head, &mut data, written);
                    }
                    for part in [head, data] {
                        if !part.is_empty() {
                            state.queue.push_back(part);
                        }
                    }
                    state.frames += 1;
                    state.last_queued = last;
                    drop(state);
                    self.queued.notify_one();
                    return Ok(());
                }
                room.as_mut().enable();
            }
            room.await;
        }
    }

    /// Nothing more is sent; senders waiting for room give up.
    pub(crate) fn close(&self) {
        let mut state = self.lock();
        state.closed = true;
        state.direct = None;
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
                    sink.shutdown().await;
                    return Ok(());
                }
            }
            loop {
                let (batch, last) = {
                    let mut state = self.lock();
                    if state.queue.is_empty() {
                        state.writing = false;
                        break;
                    }
                    state.writing = true;
                    state.frames = 0;
                    (std::mem::take(&mut state.queue), state.last_queued)
                };
                self.room.notify_waiters();
                if let Err(e) = sink.write_all(batch).await {
                    self.close();
                    return Err(format!("write failed: {e}"));
                }
                if last {
                    sink.shutdown().await;
                    self.close();
                    return Ok(());
                }
            }
        }
    }
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

/// Drops the first `n` bytes of a frame's two parts.
fn skip(head: &mut Bytes, data: &mut Bytes, n: usize) {
    let from_head = n.min(head.len());
    let _ = head.split_to(from_head);
    let _ = data.split_to((n - from_head).min(data.len()));
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
            Sink::Tcp(socket) => {
                let _ = socket2::SockRef::from(socket.as_ref().as_ref())
                    .shutdown(std::net::Shutdown::Write);
            }
            Sink::Stream(writer) => {
                let _ = writer.shutdown().await;
            }
        }
    }
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

    #[test]
    fn skipping_crosses_from_the_head_into_the_data() {
        let mut head = Bytes::from_static(b"abcd");
        let mut data = Bytes::from_static(b"efgh");
        skip(&mut head, &mut data, 2);
        assert_eq!((&head[..], &data[..]), (&b"cd"[..], &b"efgh"[..]));
        skip(&mut head, &mut data, 3);
        assert_eq!((&head[..], &data[..]), (&b""[..], &b"fgh"[..]));
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
    }
}
