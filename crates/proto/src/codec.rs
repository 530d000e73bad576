//! The one place that knows how messages turn into bytes (bincode 2 through serde).

use serde::Serialize;
use serde::de::DeserializeOwned;

/// Why a message could not be encoded or decoded.
#[derive(Debug, thiserror::Error)]
pub enum CodecError {
    /// The bytes are not a valid message of the expected type.
    #[error("cannot decode message: {0}")]
    Decode(#[from] bincode::error::DecodeError),
    /// The value could not be serialised (a bug, or an unsupported type).
    #[error("cannot encode message: {0}")]
    Encode(#[from] bincode::error::EncodeError),
    /// Bytes were left over after the message.
    #[error("{0} trailing bytes after message")]
    Trailing(usize),
}

/// Largest value bincode may allocate while decoding one message; frames are capped well below it.
const DECODE_LIMIT: usize = 64 * 1024 * 1024;

fn config() -> impl bincode::config::Config {
    bincode::config::standard()
        .with_little_endian()
        .with_variable_int_encoding()
        .with_limit::<DECODE_LIMIT>()
}

/// Serialises a message body.
pub fn encode<T: Serialize>(value: &T) -> Result<Vec<u8>, CodecError> {
    Ok(bincode::serde::encode_to_vec(value, config())?)
}

/// Serialises a message body, appending to `out`.
pub fn encode_into<T: Serialize>(value: &T, out: &mut Vec<u8>) -> Result<(), CodecError> {
    bincode::serde::encode_into_std_write(value, out, config())?;
    Ok(())
}

/// Deserialises a message body that must use every byte.
pub fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, CodecError> {
    let (value, used) = bincode::serde::decode_from_slice(bytes, config())?;
    if used != bytes.len() {
        return Err(CodecError::Trailing(bytes.len() - used));
    }
    Ok(value)
}

/// Deserialises a message from the front of `bytes`, returning it and how many bytes it used.
pub fn decode_prefix<T: DeserializeOwned>(bytes: &[u8]) -> Result<(T, usize), CodecError> {
    Ok(bincode::serde::decode_from_slice(bytes, config())?)
}
