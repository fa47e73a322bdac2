//! The lottery protocol: the messages agencies and the central exchange, and their encoding.
//!
//! Every message is a variant of [`ClientMessage`] (agency → central) or [`ServerMessage`]
//! (central → agency), sent as one length-prefixed frame (see [`codec`] for the frame layout).
//! bincode writes enum variants by their index, so **new variants go at the end**.
//!
//! bincode's options are set in one place, `payload.rs`, whose `encode_into` and `decode` are
//! the single pair of helpers both directions use, so the two sides cannot drift apart. The two
//! hot paths write and read a `Batch` by hand, byte for byte what bincode writes and reads with
//! those options (property tests hold each to bincode): the agency's encoder (`encode.rs`) and
//! the central's in-place reader (`received.rs`).
//!
//! # Layout
//! - `message.rs`: [`ClientMessage`], [`ServerMessage`] and their fields, [`WireBet`] (a bet as
//!   sent), [`PROTOCOL_VERSION`];
//! - `limits.rs`: the limits both sides share (frame and batch sizes, batches in flight);
//! - `payload.rs`: bincode's options and the one pair of helpers, message ⇄ frame payload;
//! - `encode.rs`: the agency's encoder: [`WireBetRef`] (a bet's wire bytes and frame size) into
//!   an [`EncodedBatch`], sent as an [`EncodedBatchMessage`] without encoding again;
//! - `received.rs`: the central's reader: a `Batch` frame read in place ([`ReceivedBatch`],
//!   [`ReceivedBet`]), anything else through bincode ([`Inbound`]);
//! - [`codec`]: [`MessageCodec`], frames on a socket ⇄ messages, and [`CodecError`].

pub mod codec;
mod encode;
mod limits;
mod message;
mod payload;
mod received;

pub use codec::{CentralCodec, ClientCodec, CodecError, MessageCodec, ServerCodec};
pub use encode::{EncodedBatch, EncodedBatchMessage, WireBetRef};
pub use limits::{
    FRAME_HEADER_LEN, FRAME_LEN_CAP, MAX_BATCH_BYTES, MAX_BATCHES_IN_FLIGHT, MAX_FRAME_LEN,
    WINNERS_PER_FRAME, batch_end_frame_max_len,
};
pub use message::{
    ClientMessage, ErrorCode, PROTOCOL_VERSION, RejectReason, ServerMessage, WireBet, WireDate,
};
#[cfg(test)]
pub(crate) use payload::encoded_len;
pub(crate) use payload::{decode, encode_into};
pub use received::{Inbound, ReceivedBatch, ReceivedBet};
