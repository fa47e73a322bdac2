//! The one pair of bincode helpers both directions use ([`encode_into`], [`decode`]), so the two
//! sides' options cannot drift apart: the only place that sets bincode's options.

use bincode::Options;
use serde::{Deserialize, Serialize};

use super::limits::FRAME_LEN_CAP;

fn options() -> impl Options {
    bincode::DefaultOptions::new()
        .with_varint_encoding()
        .with_little_endian()
        .reject_trailing_bytes()
        .with_limit(FRAME_LEN_CAP as u64)
}

/// bincode's size of `value`, for tests holding the hand-counted sizes to it.
#[cfg(test)]
pub(crate) fn encoded_len<T: Serialize + ?Sized>(value: &T) -> usize {
    options().serialized_size(value).map_or(usize::MAX, |n| n as usize)
}

/// Serialises `message` onto the end of `out`.
pub(crate) fn encode_into<T: Serialize>(
    out: impl std::io::Write,
    message: &T,
) -> Result<(), bincode::Error> {
    options().serialize_into(out, message)
}

/// Deserialises one whole payload; trailing bytes are an error.
pub(crate) fn decode<'a, T: Deserialize<'a>>(payload: &'a [u8]) -> Result<T, bincode::Error> {
    options().deserialize(payload)
}
