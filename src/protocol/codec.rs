//! `MessageCodec`: bytes on a socket ⇄ typed lottery messages.
//!
//! ```text
//! +----------------------+--------------------------------------------+
//! | length: u32, BE      | payload: bincode (varint ints, LE), length |
//! | (4 bytes)            | bytes, at most MAX_FRAME_LEN (8 KiB)       |
//! +----------------------+--------------------------------------------+
//! ```
//!
//! Decoding goes through `LengthDelimitedCodec`, which checks the announced length against
//! [`MAX_FRAME_LEN`] *before* buffering the payload: a peer announcing 4 GiB gets
//! `CodecError::FrameTooLarge` and no allocation. Partial reads are its job too: `Ok(None)` means
//! "read more".

use std::io;
use std::marker::PhantomData;

use bytes::{BufMut, BytesMut};
use serde::Serialize;
use tokio_util::codec::{Decoder, Encoder, LengthDelimitedCodec, LengthDelimitedCodecError};

use super::{
    ClientMessage, EncodedBatchMessage, FRAME_HEADER_LEN, FRAME_LEN_CAP, Inbound, MAX_FRAME_LEN,
    ReceivedBatch, ServerMessage,
};

/// What goes wrong turning bytes into messages and back. Any of these ends the connection.
#[derive(Debug, thiserror::Error)]
pub enum CodecError {
    #[error("i/o error: {0}")]
    Io(#[from] io::Error),
    #[error("frame of {len} bytes exceeds the limit of {max} bytes")]
    FrameTooLarge { len: u64, max: usize },
    #[error("undecodable frame: {0}")]
    Decode(bincode::Error),
    #[error("unencodable message: {0}")]
    Encode(bincode::Error),
    #[error("connection closed in the middle of a frame ({buffered} bytes buffered)")]
    Truncated { buffered: usize },
}

/// Decodes `In` frames and encodes `Out` frames. Use [`ServerCodec`] or [`ClientCodec`].
#[derive(Debug)]
pub struct MessageCodec<In, Out> {
    frames: LengthDelimitedCodec,
    max_frame_len: usize,
    /// A header was consumed and its payload is still incomplete.
    mid_frame: bool,
    _types: PhantomData<fn(Out) -> In>,
}

/// The central's side as tools and tests speak it: reads every `ClientMessage` through bincode,
/// writes `ServerMessage`.
pub type ServerCodec = MessageCodec<ClientMessage, ServerMessage>;
/// The central's own side: reads the same messages, a `Batch` in place ([`Inbound`]), and
/// writes `ServerMessage`.
pub type CentralCodec = MessageCodec<Inbound, ServerMessage>;
/// The agency's side: reads `ServerMessage`, writes `ClientMessage`.
pub type ClientCodec = MessageCodec<ServerMessage, ClientMessage>;

impl<In, Out> MessageCodec<In, Out> {
    /// A codec with the default [`MAX_FRAME_LEN`].
    pub fn new() -> Self {
        Self::with_max_frame_len(MAX_FRAME_LEN)
    }

    /// A codec refusing frames over `max_frame_len` bytes (capped at [`FRAME_LEN_CAP`]).
    pub fn with_max_frame_len(max_frame_len: usize) -> Self {
        let max_frame_len = max_frame_len.min(FRAME_LEN_CAP);
        let frames = LengthDelimitedCodec::builder()
            .length_field_type::<u32>()
            .max_frame_length(max_frame_len)
            .new_codec();
        Self { frames, max_frame_len, mid_frame: false, _types: PhantomData }
    }
}

impl<In, Out> Default for MessageCodec<In, Out> {
    fn default() -> Self {
        Self::new()
    }
}

/// What a codec makes of a whole frame's payload.
pub trait FromPayload: Sized {
    /// # Errors
    /// bincode's error for a payload that is not one whole `Self`.
    fn from_payload(payload: BytesMut) -> Result<Self, bincode::Error>;
}

impl FromPayload for ClientMessage {
    fn from_payload(payload: BytesMut) -> Result<Self, bincode::Error> {
        super::decode(&payload)
    }
}

impl FromPayload for ServerMessage {
    fn from_payload(payload: BytesMut) -> Result<Self, bincode::Error> {
        super::decode(&payload)
    }
}

/// A `Batch` is read in place; anything else, or a payload that reader gives back, goes
/// through bincode, so every refusal is bincode's.
impl FromPayload for Inbound {
    fn from_payload(payload: BytesMut) -> Result<Self, bincode::Error> {
        match ReceivedBatch::parse(payload) {
            Ok(batch) => Ok(Self::Batch(batch)),
            Err(payload) => super::decode::<ClientMessage>(&payload).map(Self::from),
        }
    }
}

impl<In: FromPayload, Out> Decoder for MessageCodec<In, Out> {
    type Item = In;
    type Error = CodecError;

    fn decode(&mut self, src: &mut BytesMut) -> Result<Option<In>, CodecError> {
        // Peek at the header for the error message; LengthDelimitedCodec does the real check.
        let announced = src.get(..FRAME_HEADER_LEN).map(|h| {
            let mut len = [0; FRAME_HEADER_LEN];
            len.copy_from_slice(h);
            u64::from(u32::from_be_bytes(len))
        });
        let frame = match self.frames.decode(src) {
            Ok(Some(frame)) => {
                self.mid_frame = false;
                frame
            }
            Ok(None) => {
                // LengthDelimitedCodec consumes the header as soon as it has all 4 bytes.
                self.mid_frame |= announced.is_some();
                return Ok(None);
            }
            Err(e) if e.get_ref().is_some_and(|e| e.is::<LengthDelimitedCodecError>()) => {
                return Err(CodecError::FrameTooLarge {
                    len: announced.unwrap_or_default(),
                    max: self.max_frame_len,
                });
            }
            Err(e) => return Err(e.into()),
        };
        In::from_payload(frame).map(Some).map_err(CodecError::Decode)
    }

    fn decode_eof(&mut self, src: &mut BytesMut) -> Result<Option<In>, CodecError> {
        match self.decode(src)? {
            Some(message) => Ok(Some(message)),
            None if src.is_empty() && !self.mid_frame => Ok(None),
            None => Err(CodecError::Truncated { buffered: src.len() }),
        }
    }
}

impl<In, Out: Serialize> Encoder<Out> for MessageCodec<In, Out> {
    type Error = CodecError;

    fn encode(&mut self, message: Out, dst: &mut BytesMut) -> Result<(), CodecError> {
        let start = dst.len();
        dst.put_u32(0);
        let written = super::encode_into((&mut *dst).writer(), &message);
        let len = dst.len() - start - FRAME_HEADER_LEN;
        let too_large = CodecError::FrameTooLarge { len: len as u64, max: self.max_frame_len };
        if let Err(e) = written {
            dst.truncate(start);
            return Err(match *e {
                bincode::ErrorKind::SizeLimit => too_large,
                _ => CodecError::Encode(e),
            });
        }
        if len > self.max_frame_len {
            dst.truncate(start);
            return Err(too_large);
        }
        // len <= max_frame_len <= FRAME_LEN_CAP (64 KiB), so it fits the u32 header.
        let header = (len as u32).to_be_bytes();
        dst[start..start + FRAME_HEADER_LEN].copy_from_slice(&header);
        Ok(())
    }
}

/// The agency's batches, already encoded by its reader: the frame is written from their bytes,
/// exactly as for the same `ClientMessage::Batch`, with the same limit.
impl<In> Encoder<EncodedBatchMessage> for MessageCodec<In, ClientMessage> {
    type Error = CodecError;

    fn encode(
        &mut self,
        message: EncodedBatchMessage,
        dst: &mut BytesMut,
    ) -> Result<(), CodecError> {
        let len = message.payload_len();
        if len > self.max_frame_len {
            return Err(CodecError::FrameTooLarge { len: len as u64, max: self.max_frame_len });
        }
        // len <= max_frame_len <= FRAME_LEN_CAP (64 KiB), so it fits the u32 header.
        dst.reserve(FRAME_HEADER_LEN + len);
        dst.put_u32(len as u32);
        message.write_payload(dst);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fixtures::wire_bet;
    use crate::protocol::{
        ErrorCode, MAX_BATCH_BYTES, RejectReason, WINNERS_PER_FRAME, WireBet,
        batch_end_frame_max_len,
    };
    use proptest::prelude::*;

    fn bet(first_name: &str) -> WireBet {
        wire_bet(first_name, "Núñez, \"el\" O'Brien", "30904465", 7574)
    }

    fn every_client_message() -> Vec<ClientMessage> {
        vec![
            ClientMessage::Hello { version: 1, agency: 5, token: Some("s3cret".into()) },
            ClientMessage::Hello { version: 1, agency: 5, token: None },
            ClientMessage::Bet(bet("Santiago Lionel")),
            ClientMessage::BetBatchEnd { seq: u64::MAX },
            ClientMessage::ReadyForLottery,
            ClientMessage::Ping,
            ClientMessage::Batch { seq: 9, bets: vec![bet("Ana"), bet("José")] },
        ]
    }

    fn every_server_message() -> Vec<ServerMessage> {
        vec![
            ServerMessage::Welcome { version: 2, next_seq: 7, stored_bets: 900 },
            ServerMessage::BatchAccepted { seq: 3, count: 120 },
            ServerMessage::BatchRejected {
                seq: 4,
                reason: RejectReason::InvalidBet,
                message: "bet 3: invalid number \"10000\"".into(),
            },
            ServerMessage::Winners { documents: vec!["1".into(), "0123456789".into()], last: true },
            ServerMessage::Error { code: ErrorCode::SequenceGap, message: "expected 2".into() },
            ServerMessage::Pong,
        ]
    }

    fn encode_all<M: Serialize + Clone>(messages: &[M]) -> BytesMut {
        let mut codec = MessageCodec::<(), M>::new();
        let mut buf = BytesMut::new();
        for m in messages {
            codec.encode(m.clone(), &mut buf).unwrap();
        }
        buf
    }

    fn decode_all(codec: &mut ServerCodec, buf: &mut BytesMut) -> Vec<ClientMessage> {
        std::iter::from_fn(|| codec.decode(buf).unwrap()).collect()
    }

    #[test]
    fn every_message_round_trips() {
        let sent = every_client_message();
        let mut buf = encode_all(&sent);
        assert_eq!(decode_all(&mut ServerCodec::new(), &mut buf), sent);
        assert!(buf.is_empty());

        let sent = every_server_message();
        let mut buf = encode_all(&sent);
        let mut codec = ClientCodec::new();
        let got: Vec<_> = std::iter::from_fn(|| codec.decode(&mut buf).unwrap()).collect();
        assert_eq!(got, sent);
    }

    #[test]
    fn a_stream_split_at_every_offset_decodes_the_same() {
        let sent = every_client_message();
        let whole = encode_all(&sent);
        for cut in 0..=whole.len() {
            assert_eq!(decode_split(&whole, cut), sent, "cut at {cut}");
        }
    }

    /// What the central decodes from `whole` arriving in two reads, split at byte `cut`.
    fn decode_split(whole: &[u8], cut: usize) -> Vec<ClientMessage> {
        let mut codec = ServerCodec::new();
        let mut buf = BytesMut::from(&whole[..cut]);
        let mut got = decode_all(&mut codec, &mut buf);
        buf.extend_from_slice(&whole[cut..]);
        got.extend(decode_all(&mut codec, &mut buf));
        got
    }

    #[test]
    fn a_stream_fed_one_byte_at_a_time_decodes_the_same() {
        let sent = every_client_message();
        let whole = encode_all(&sent);
        let mut codec = ServerCodec::new();
        let mut buf = BytesMut::new();
        let mut got = Vec::new();
        for byte in whole.iter() {
            buf.put_u8(*byte);
            got.extend(decode_all(&mut codec, &mut buf));
        }
        assert_eq!(got, sent);
    }

    #[test]
    fn an_oversized_length_is_refused_before_buffering() {
        let mut buf = BytesMut::from(&u32::MAX.to_be_bytes()[..]);
        buf.extend_from_slice(b"abc");
        let err = ServerCodec::new().decode(&mut buf).unwrap_err();
        assert!(
            matches!(err, CodecError::FrameTooLarge { len, max } if len == u64::from(u32::MAX) && max == MAX_FRAME_LEN),
            "{err}"
        );
        assert!(buf.capacity() < 1024, "no room was reserved for the announced payload");
    }

    #[test]
    fn a_frame_at_the_limit_is_read_and_one_past_it_is_not() {
        let mut ok = BytesMut::new();
        ok.put_u32(MAX_FRAME_LEN as u32);
        ok.put_bytes(0xff, MAX_FRAME_LEN);
        assert!(matches!(ServerCodec::new().decode(&mut ok), Err(CodecError::Decode(_))));
        let mut too_big = BytesMut::new();
        too_big.put_u32(MAX_FRAME_LEN as u32 + 1);
        assert!(matches!(
            ServerCodec::new().decode(&mut too_big),
            Err(CodecError::FrameTooLarge { .. })
        ));
    }

    #[test]
    fn a_configured_limit_applies_both_ways() {
        let mut small = ServerCodec::with_max_frame_len(1024);
        let mut buf = BytesMut::new();
        buf.put_u32(1025);
        assert!(matches!(small.decode(&mut buf), Err(CodecError::FrameTooLarge { max: 1024, .. })));
        let mut encoder = ClientCodec::with_max_frame_len(1024);
        let mut out = BytesMut::new();
        let err = encoder.encode(ClientMessage::Bet(bet(&"x".repeat(1100))), &mut out).unwrap_err();
        assert!(matches!(err, CodecError::FrameTooLarge { .. }), "{err}");
        assert!(out.is_empty());
    }

    #[test]
    fn garbage_and_trailing_bytes_are_decode_errors() {
        for payload in [&[0xff, 0xff, 0xff][..], &[3, 1][..], &[], &[4, 0]] {
            let mut buf = BytesMut::new();
            buf.put_u32(payload.len() as u32);
            buf.extend_from_slice(payload);
            let got = ServerCodec::new().decode(&mut buf);
            assert!(matches!(got, Err(CodecError::Decode(_))), "{payload:?}: {got:?}");
        }
    }

    #[test]
    fn clean_eof_is_the_end_and_eof_mid_frame_is_an_error() {
        let mut codec = ServerCodec::new();
        assert!(codec.decode_eof(&mut BytesMut::new()).unwrap().is_none());
        let whole = encode_all(&[ClientMessage::Ping]);
        for cut in 1..whole.len() {
            let mut codec = ServerCodec::new();
            let mut buf = BytesMut::from(&whole[..cut]);
            let err = codec.decode_eof(&mut buf).unwrap_err();
            assert!(matches!(err, CodecError::Truncated { .. }), "cut at {cut}: {err}");
        }
    }

    #[test]
    fn an_oversized_message_is_not_encoded() {
        let mut codec = ClientCodec::new();
        let mut buf = BytesMut::from(&b"kept"[..]);
        let huge = bet(&"x".repeat(MAX_FRAME_LEN));
        let err = codec.encode(ClientMessage::Bet(huge), &mut buf).unwrap_err();
        assert!(matches!(err, CodecError::FrameTooLarge { .. }), "{err}");
        assert_eq!(&buf[..], b"kept", "nothing half-written");
    }

    #[test]
    fn frame_len_matches_the_encoding() {
        for name in ["A", "José María", &"ñ".repeat(100)] {
            let b = bet(name);
            let buf = encode_all(&[ClientMessage::Bet(b.clone())]);
            assert_eq!(b.frame_len(), buf.len(), "{name}");
        }
        let end = encode_all(&[ClientMessage::BetBatchEnd { seq: u64::MAX }]);
        assert_eq!(batch_end_frame_max_len(), end.len());
    }

    #[test]
    fn a_full_winners_chunk_fits_a_frame() {
        let documents = vec!["9".repeat(10); WINNERS_PER_FRAME];
        let buf = encode_all(&[ServerMessage::Winners { documents, last: false }]);
        assert!(buf.len() <= MAX_FRAME_LEN + FRAME_HEADER_LEN);
        const { assert!(MAX_BATCH_BYTES <= MAX_FRAME_LEN + FRAME_HEADER_LEN) };
    }

    fn arb_bet() -> impl Strategy<Value = WireBet> {
        crate::fixtures::wire_bets(|| ".{0,40}", "[0-9]{0,12}", any::<i32>(), any::<u16>())
    }

    fn arb_client_message() -> impl Strategy<Value = ClientMessage> {
        prop_oneof![
            (any::<u16>(), any::<u32>(), proptest::option::of("[a-z0-9]{0,20}")).prop_map(
                |(version, agency, token)| ClientMessage::Hello { version, agency, token }
            ),
            arb_bet().prop_map(ClientMessage::Bet),
            any::<u64>().prop_map(|seq| ClientMessage::BetBatchEnd { seq }),
            Just(ClientMessage::ReadyForLottery),
            Just(ClientMessage::Ping),
            (any::<u64>(), proptest::collection::vec(arb_bet(), 0..4))
                .prop_map(|(seq, bets)| ClientMessage::Batch { seq, bets }),
        ]
    }

    proptest! {
        #[test]
        fn any_messages_round_trip_across_any_split(
            sent in proptest::collection::vec(arb_client_message(), 1..8),
            cut in any::<prop::sample::Index>(),
        ) {
            let whole = encode_all(&sent);
            let cut = cut.index(whole.len() + 1);
            prop_assert_eq!(decode_split(&whole, cut), sent);
        }

        #[test]
        fn random_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
            let mut codec = ServerCodec::new();
            let mut buf = BytesMut::from(&bytes[..]);
            while let Ok(Some(_)) = codec.decode(&mut buf) {}
            let _ = ClientCodec::new().decode_eof(&mut BytesMut::from(&bytes[..]));
        }

        #[test]
        fn random_payloads_in_a_valid_frame_never_panic(
            payload in proptest::collection::vec(any::<u8>(), 0..256),
        ) {
            let mut buf = BytesMut::new();
            buf.put_u32(payload.len() as u32);
            buf.extend_from_slice(&payload);
            let _ = ServerCodec::new().decode(&mut buf);
        }
    }
}
