//! The reading half of a connection. Frame prefixes, headers and small data come out of a buffer
//! that one socket read fills with many of them; a large read that finds the buffer empty goes
//! straight into the caller's memory. Bulk data (a 1 MiB block on its way to a mount or a
//! chunkserver) then crosses user space once instead of twice: `tokio`'s `BufReader` reads
//! directly only when the read is at least as large as its whole buffer, so about half of each
//! 1 MiB frame's data was copied through it.
//!
//! Right after a direct read the next frame is likely bulk too, and a full fill for its prefix
//! would copy the start of its data through the buffer; so that fill asks only for what the
//! reader wants now (the rest of this frame) and a little more (the next one's prefix and
//! header).

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use tokio::io::{AsyncRead, ReadBuf};

/// Bytes of buffer; one read of the socket fetches up to this much.
const BUFFER: usize = 256 * 1024;

/// What the first fill after a direct read asks for beyond the read it serves: room for the next
/// frame's prefix and header.
const FILL_AFTER_DIRECT: usize = 4096;

/// Reads at least this large skip the buffer when it is empty. Below it, one more copy costs
/// less than the extra socket read that a direct read makes for what follows.
const DIRECT_READ: usize = 32 * 1024;

/// A buffered reader that lets large reads bypass its buffer.
pub(crate) struct ReadSide {
    inner: Box<dyn AsyncRead + Send + Unpin>,
    buf: Box<[u8]>,
    pos: usize,
    filled: usize,
    /// The last read went straight to the caller: the next fill asks for little.
    after_direct: bool,
}

impl ReadSide {
    /// Buffers reads from `inner`.
    pub(crate) fn new(inner: Box<dyn AsyncRead + Send + Unpin>) -> ReadSide {
        ReadSide {
            inner,
            buf: vec![0; BUFFER].into_boxed_slice(),
            pos: 0,
            filled: 0,
            after_direct: false,
        }
    }
}

impl AsyncRead for ReadSide {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        out: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let me = self.get_mut();
        if out.remaining() == 0 {
            return Poll::Ready(Ok(()));
        }
        if me.pos == me.filled {
            if out.remaining() >= DIRECT_READ {
                ready!(Pin::new(&mut me.inner).poll_read(cx, out))?;
                me.after_direct = true;
                return Poll::Ready(Ok(()));
            }
            let want = if me.after_direct {
                (out.remaining() + FILL_AFTER_DIRECT).min(BUFFER)
            } else {
                BUFFER
            };
            let mut fill = ReadBuf::new(&mut me.buf[..want]);
            ready!(Pin::new(&mut me.inner).poll_read(cx, &mut fill))?;
            me.pos = 0;
            me.filled = fill.filled().len();
            me.after_direct = false;
        }
        let n = (me.filled - me.pos).min(out.remaining());
        out.put_slice(&me.buf[me.pos..me.pos + n]);
        me.pos += n;
        Poll::Ready(Ok(()))
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use proptest::prelude::*;
    use tokio::io::AsyncReadExt;

    use super::*;

    /// Hands out `data` in pieces of the given sizes (cycled), recording how much room each
    /// read offered.
    struct Trickle {
        data: Vec<u8>,
        at: usize,
        pieces: Vec<usize>,
        next: usize,
        offered: Arc<Mutex<Vec<usize>>>,
    }

    impl AsyncRead for Trickle {
        fn poll_read(
            self: Pin<&mut Self>,
            _cx: &mut Context<'_>,
            out: &mut ReadBuf<'_>,
        ) -> Poll<io::Result<()>> {
            let me = self.get_mut();
            me.offered.lock().unwrap().push(out.remaining());
            let piece = me.pieces[me.next % me.pieces.len()].max(1);
            me.next += 1;
            let n = piece.min(out.remaining()).min(me.data.len() - me.at);
            out.put_slice(&me.data[me.at..me.at + n]);
            me.at += n;
            Poll::Ready(Ok(()))
        }
    }

    fn trickle(data: Vec<u8>, pieces: Vec<usize>) -> (ReadSide, Arc<Mutex<Vec<usize>>>) {
        let offered = Arc::new(Mutex::new(Vec::new()));
        let source = Trickle {
            data,
            at: 0,
            pieces,
            next: 0,
            offered: offered.clone(),
        };
        (ReadSide::new(Box::new(source)), offered)
    }

    fn run<T>(f: impl std::future::Future<Output = T>) -> T {
        tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap()
            .block_on(f)
    }

    #[test]
    fn a_large_read_into_an_empty_buffer_goes_straight_to_the_source() {
        let (mut reader, offered) = trickle(vec![7; 1 << 20], vec![usize::MAX]);
        let mut out = vec![0; 1 << 20];
        run(reader.read_exact(&mut out)).unwrap();
        assert_eq!(*offered.lock().unwrap(), vec![1 << 20]);
        assert!(out.iter().all(|&b| b == 7));
    }

    #[test]
    fn small_reads_share_one_read_of_the_source() {
        let (mut reader, offered) = trickle((0..=255).collect(), vec![usize::MAX]);
        let mut out = [0u8; 8];
        for i in 0..4u8 {
            run(reader.read_exact(&mut out)).unwrap();
            assert_eq!(out[0], i * 8);
        }
        assert_eq!(*offered.lock().unwrap(), vec![BUFFER]);
    }

    #[test]
    fn the_fill_after_a_direct_read_asks_for_little_and_the_next_asks_for_the_whole_buffer() {
        let (mut reader, offered) = trickle(vec![1; 300_000], vec![60_000]);
        let mut big = vec![0; 70_000];
        let mut small = [0u8; 8];
        // 60 000 bytes straight into `big`, then its last 10 000 through the buffer.
        run(reader.read_exact(&mut big)).unwrap();
        run(reader.read_exact(&mut small)).unwrap();
        let mut rest = vec![0; FILL_AFTER_DIRECT - small.len()];
        run(reader.read_exact(&mut rest)).unwrap();
        run(reader.read_exact(&mut small)).unwrap();
        assert_eq!(
            *offered.lock().unwrap(),
            vec![70_000, 10_000 + FILL_AFTER_DIRECT, BUFFER]
        );
    }

    proptest! {
        #[test]
        fn reads_of_any_sizes_return_the_stream_in_order(
            data in proptest::collection::vec(any::<u8>(), 0..300_000),
            pieces in proptest::collection::vec(1usize..100_000, 1..8),
            reads in proptest::collection::vec(1usize..80_000, 1..16),
        ) {
            let (mut reader, _) = trickle(data.clone(), pieces);
            let mut got = Vec::new();
            let mut i = 0;
            loop {
                let mut out = vec![0; reads[i % reads.len()]];
                i += 1;
                let n = run(reader.read(&mut out)).unwrap();
                if n == 0 {
                    break;
                }
                got.extend_from_slice(&out[..n]);
            }
            prop_assert_eq!(got, data);
        }
    }
}
