//! Framing: `u32 header length | u32 data length | header | data`, both lengths checked against
//! the connection kind's limits before anything is allocated.
//!
//! The header is a bincode message; the data is raw bytes (chunk contents), never touched by serde,
//! read straight into its own buffer.

use bytes::{Buf, Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// Size of the two length fields in front of every frame.
pub const PREFIX_LEN: usize = 8;

/// The largest header and data a connection kind accepts in one frame.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FrameLimits {
    /// Largest encoded message, in bytes.
    pub max_header: u32,
    /// Largest raw data payload, in bytes (0 where a connection never carries chunk data).
    pub max_data: u32,
}

/// One frame as read from the wire.
#[derive(Debug)]
pub struct Frame {
    /// The encoded message.
    pub header: Bytes,
    /// The raw data that follows it (empty for most messages).
    pub data: Bytes,
}

/// Why a frame could not be read.
#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    /// The socket failed or closed in the middle of a frame.
    #[error("connection failed: {0}")]
    Io(#[from] std::io::Error),
    /// A length field is past the connection's limit; the connection must be closed.
    #[error("frame too large: {what} of {len} bytes exceeds the limit of {limit}")]
    TooLarge {
        /// Which part of the frame was too large ("header" or "data").
        what: &'static str,
        /// The length the peer announced.
        len: u32,
        /// The limit for this connection kind.
        limit: u32,
    },
    /// A frame with an empty header, which no message encodes to.
    #[error("empty frame header")]
    EmptyHeader,
}

/// Reads one frame; `Ok(None)` on a clean end of stream between frames.
pub async fn read_frame<R: AsyncRead + Unpin>(
    reader: &mut R,
    limits: FrameLimits,
) -> Result<Option<Frame>, FrameError> {
    let mut prefix = [0u8; PREFIX_LEN];
    let mut filled = 0;
    while filled < PREFIX_LEN {
        let n = reader.read(&mut prefix[filled..]).await?;
        if n == 0 {
            if filled == 0 {
                return Ok(None);
            }
            return Err(FrameError::Io(std::io::ErrorKind::UnexpectedEof.into()));
        }
        filled += n;
    }
    let header_len = u32::from_le_bytes([prefix[0], prefix[1], prefix[2], prefix[3]]);
    let data_len = u32::from_le_bytes([prefix[4], prefix[5], prefix[6], prefix[7]]);
    if header_len > limits.max_header {
        return Err(FrameError::TooLarge {
            what: "header",
            len: header_len,
            limit: limits.max_header,
        });
    }
    if data_len > limits.max_data {
        return Err(FrameError::TooLarge {
            what: "data",
            len: data_len,
            limit: limits.max_data,
        });
    }
    if header_len == 0 {
        return Err(FrameError::EmptyHeader);
    }
    let header = read_exact_bytes(reader, header_len as usize, 1).await?;
    let data = read_exact_bytes(reader, data_len as usize, data_alignment(data_len)).await?;
    Ok(Some(Frame { header, data }))
}

/// Where a frame's data starts in memory: a large payload at a page boundary, so that a
/// chunkserver can write it to disk directly (`O_DIRECT` wants aligned memory) without first
/// copying it into an aligned buffer. Small payloads are not worth the up to 4 KiB of padding.
fn data_alignment(len: u32) -> usize {
    if len >= DATA_ALIGN_FROM {
        DATA_ALIGN
    } else {
        1
    }
}

/// The alignment of large payloads: the page size.
pub const DATA_ALIGN: usize = 4096;

/// The smallest payload given [`DATA_ALIGN`].
const DATA_ALIGN_FROM: u32 = 64 * 1024;

/// Reads exactly `len` bytes into a fresh buffer starting at a multiple of `align`, without
/// zero-filling it first.
async fn read_exact_bytes<R: AsyncRead + Unpin>(
    reader: &mut R,
    len: usize,
    align: usize,
) -> Result<Bytes, FrameError> {
    if len == 0 {
        return Ok(Bytes::new());
    }
    let mut buf = BytesMut::with_capacity(len + align - 1);
    let skip = (align - buf.as_ptr() as usize % align) % align;
    buf.resize(skip, 0);
    buf.advance(skip);
    while buf.len() < len {
        let want = (len - buf.len()) as u64;
        let n = (&mut *reader).take(want).read_buf(&mut buf).await?;
        if n == 0 {
            return Err(FrameError::Io(std::io::ErrorKind::UnexpectedEof.into()));
        }
    }
    Ok(buf.freeze())
}

/// The two length fields in front of a frame with this header and data.
pub fn prefix(header_len: usize, data_len: usize) -> [u8; PREFIX_LEN] {
    let mut prefix = [0u8; PREFIX_LEN];
    prefix[..4].copy_from_slice(&(header_len as u32).to_le_bytes());
    prefix[4..].copy_from_slice(&(data_len as u32).to_le_bytes());
    prefix
}

/// Writes one frame (without flushing, so small frames can share a syscall).
pub async fn write_frame<W: AsyncWrite + Unpin>(
    writer: &mut W,
    header: &[u8],
    data: &[u8],
) -> std::io::Result<()> {
    writer.write_all(&prefix(header.len(), data.len())).await?;
    writer.write_all(header).await?;
    if !data.is_empty() {
        writer.write_all(data).await?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMITS: FrameLimits = FrameLimits {
        max_header: 64,
        max_data: 128,
    };

    #[tokio::test]
    async fn frames_round_trip() {
        let mut wire = Vec::new();
        write_frame(&mut wire, b"hello", b"data").await.unwrap();
        write_frame(&mut wire, b"x", b"").await.unwrap();
        let mut reader = &wire[..];
        let first = read_frame(&mut reader, LIMITS).await.unwrap().unwrap();
        assert_eq!(&first.header[..], b"hello");
        assert_eq!(&first.data[..], b"data");
        let second = read_frame(&mut reader, LIMITS).await.unwrap().unwrap();
        assert_eq!(&second.header[..], b"x");
        assert!(second.data.is_empty());
        assert!(read_frame(&mut reader, LIMITS).await.unwrap().is_none());
    }

    #[tokio::test]
    async fn large_payloads_start_at_a_page_boundary() {
        let limits = FrameLimits {
            max_header: 64,
            max_data: 1 << 20,
        };
        for len in [64 * 1024, 100_000, 1 << 20] {
            let payload: Vec<u8> = (0..len).map(|i| (i % 253) as u8).collect();
            let mut wire = Vec::new();
            write_frame(&mut wire, b"h", &payload).await.unwrap();
            let frame = read_frame(&mut &wire[..], limits).await.unwrap().unwrap();
            assert_eq!(frame.data.as_ptr() as usize % DATA_ALIGN, 0, "{len} bytes");
            assert_eq!(&frame.data[..], &payload[..]);
        }
    }

    #[tokio::test]
    async fn oversized_lengths_are_refused_before_reading_the_body() {
        let mut wire = Vec::new();
        wire.extend_from_slice(&u32::MAX.to_le_bytes());
        wire.extend_from_slice(&0u32.to_le_bytes());
        let err = read_frame(&mut &wire[..], LIMITS).await.unwrap_err();
        assert!(matches!(err, FrameError::TooLarge { what: "header", .. }));

        let mut wire = Vec::new();
        wire.extend_from_slice(&1u32.to_le_bytes());
        wire.extend_from_slice(&129u32.to_le_bytes());
        let err = read_frame(&mut &wire[..], LIMITS).await.unwrap_err();
        assert!(matches!(err, FrameError::TooLarge { what: "data", .. }));
    }

    #[tokio::test]
    async fn a_torn_frame_is_an_error_not_a_clean_end() {
        let mut wire = Vec::new();
        write_frame(&mut wire, b"hello", b"data").await.unwrap();
        wire.truncate(wire.len() - 1);
        assert!(read_frame(&mut &wire[..], LIMITS).await.is_err());
        assert!(read_frame(&mut &wire[..3], LIMITS).await.is_err());
    }
}
