//! A `Batch` message's bets already in their wire form: the agency writes each bet once,
//! straight from its file's row ([`WireBetRef::from_text`]) into one buffer per batch
//! ([`EncodedBatch`]), and the codec sends that buffer as a `ClientMessage::Batch` frame
//! ([`EncodedBatchMessage`]) without encoding anything again. No `String` per bet. The same
//! writer counts a bet's size as a `Bet` frame, the 8 kB rule's measure on both sides
//! ([`WireBetRef::frame_len`], [`WireBet::frame_len`]).
//!
//! The bytes are exactly bincode's for the same `ClientMessage::Batch { seq, bets }` with the
//! protocol's options (varint integers, little-endian; a test holds the two equal):
//!
//! ```text
//! +---------+--------+----------+-----------------------------------------------------+
//! | variant | seq    | count    | bets, each:                                         |
//! | varint  | varint | varint   | first_name, last_name, document: varint len + UTF-8 |
//! | (5)     |        | (of bets)| year: zigzag varint | month: u8 | day: u8           |
//! |         |        |          | number: varint                                      |
//! +---------+--------+----------+-----------------------------------------------------+
//! ```
//!
//! A varint below 251 is that one byte; up to `u16::MAX` it is 251 then two bytes little-endian,
//! up to `u32::MAX` 252 then four, above that 253 then eight. The count is known only when the
//! batch is complete, so it is written with the frame; the bets are written as they are read.

use std::ops::Range;

use bytes::BufMut;

use super::limits::FRAME_HEADER_LEN;
use super::message::{WireBet, WireDate};
use crate::domain::BetText;

/// bincode's index of `ClientMessage::Batch` (the sixth variant), written as a varint.
const BATCH_VARIANT_INDEX: u64 = 5;
/// bincode's index of `ClientMessage::Bet`: the 8 kB rule counts a batch as its `Bet` frames.
const BET_VARIANT_INDEX: u64 = 1;

/// A bet about to be written in wire form, its text borrowed (from a file row or a [`WireBet`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WireBetRef<'a> {
    first_name: &'a [u8],
    last_name: &'a [u8],
    document: &'a [u8],
    birthdate: WireDate,
    number: u16,
}

impl<'a> WireBetRef<'a> {
    /// The wire form of a checked CSV row, its text still in the row (known to be UTF-8).
    pub fn from_text(bet: &BetText<'a>) -> Self {
        let [first_name, last_name, document] = bet.text_bytes();
        let (birthdate, number) = (WireDate::from(bet.birthdate), bet.number.get());
        Self { first_name, last_name, document, birthdate, number }
    }

    /// Bytes this bet takes on the wire as a `ClientMessage::Bet` frame, header included: the
    /// same as [`WireBet::frame_len`], the measure of [`MAX_BATCH_BYTES`](super::MAX_BATCH_BYTES).
    pub fn frame_len(&self) -> usize {
        FRAME_HEADER_LEN + varint_len(BET_VARIANT_INDEX) + self.encoded_len()
    }

    /// Bytes of the bet itself, as [`WireBetRef::write`] writes it.
    fn encoded_len(&self) -> usize {
        let text = [self.first_name, self.last_name, self.document];
        let text: usize = text.iter().map(|t| varint_len(t.len() as u64) + t.len()).sum();
        let date = varint_len(zigzag(self.birthdate.year)) + 2;
        text + date + varint_len(self.number.into())
    }

    /// A bet with these fields (the text known to be UTF-8).
    pub(super) fn new(text: [&'a [u8]; 3], birthdate: WireDate, number: u16) -> Self {
        let [first_name, last_name, document] = text;
        Self { first_name, last_name, document, birthdate, number }
    }

    /// Where [`WireBetRef::write`] puts the three text fields, from the bet's first byte.
    pub(super) fn text_offsets(&self) -> [Range<usize>; 3] {
        let mut at = 0;
        [self.first_name, self.last_name, self.document].map(|text| {
            at += varint_len(text.len() as u64);
            let range = at..at + text.len();
            at = range.end;
            range
        })
    }

    /// Writes the bet as bincode writes a `WireBet`: its fields in declaration order.
    pub(super) fn write(&self, out: &mut impl BufMut) {
        for text in [self.first_name, self.last_name, self.document] {
            put_varint(out, text.len() as u64);
            out.put_slice(text);
        }
        put_varint(out, zigzag(self.birthdate.year));
        out.put_u8(self.birthdate.month);
        out.put_u8(self.birthdate.day);
        put_varint(out, self.number.into());
    }
}

impl WireBet {
    /// Bytes this bet takes on the wire as a `ClientMessage::Bet` frame, header included:
    /// counted, not encoded (tests hold it equal to bincode's size).
    pub fn frame_len(&self) -> usize {
        WireBetRef::from(self).frame_len()
    }
}

impl<'a> From<&'a WireBet> for WireBetRef<'a> {
    fn from(bet: &'a WireBet) -> Self {
        Self {
            first_name: bet.first_name.as_bytes(),
            last_name: bet.last_name.as_bytes(),
            document: bet.document.as_bytes(),
            birthdate: bet.birthdate,
            number: bet.number,
        }
    }
}

/// A batch of bets in wire form: the bytes bincode writes for its `Vec<WireBet>` after the
/// length, and how many bets they are.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EncodedBatch {
    bets: Vec<u8>,
    count: usize,
}

impl EncodedBatch {
    /// An empty batch with room for `bytes` of encoded bets.
    pub fn with_capacity(bytes: usize) -> Self {
        Self { bets: Vec::with_capacity(bytes), count: 0 }
    }

    /// Appends `bet`.
    pub fn push(&mut self, bet: &WireBetRef<'_>) {
        bet.write(&mut self.bets);
        self.count += 1;
    }

    /// How many bets the batch holds.
    pub fn len(&self) -> usize {
        self.count
    }

    /// Whether the batch holds no bet.
    pub fn is_empty(&self) -> bool {
        self.count == 0
    }
}

impl From<&[WireBet]> for EncodedBatch {
    fn from(bets: &[WireBet]) -> Self {
        let mut batch = Self::default();
        for bet in bets {
            batch.push(&bet.into());
        }
        batch
    }
}

impl From<Vec<WireBet>> for EncodedBatch {
    fn from(bets: Vec<WireBet>) -> Self {
        Self::from(&bets[..])
    }
}

/// `ClientMessage::Batch { seq, bets }` with its bets already encoded: what the agency's codec
/// writes for it is exactly what it writes for that `ClientMessage`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EncodedBatchMessage {
    pub seq: u64,
    pub bets: EncodedBatch,
}

impl EncodedBatchMessage {
    /// Bytes of the frame's payload (the header not included).
    pub(super) fn payload_len(&self) -> usize {
        let count = self.bets.count as u64;
        varint_len(BATCH_VARIANT_INDEX)
            + varint_len(self.seq)
            + varint_len(count)
            + self.bets.bets.len()
    }

    /// Writes the frame's payload.
    pub(super) fn write_payload(&self, out: &mut impl BufMut) {
        put_varint(out, BATCH_VARIANT_INDEX);
        put_varint(out, self.seq);
        put_varint(out, self.bets.count as u64);
        out.put_slice(&self.bets.bets);
    }
}

/// bincode's varint: one byte below 251, else a marker byte and the value little-endian.
fn put_varint(out: &mut impl BufMut, n: u64) {
    if n <= 250 {
        out.put_u8(n as u8);
    } else if let Ok(n) = u16::try_from(n) {
        out.put_u8(251);
        out.put_u16_le(n);
    } else if let Ok(n) = u32::try_from(n) {
        out.put_u8(252);
        out.put_u32_le(n);
    } else {
        out.put_u8(253);
        out.put_u64_le(n);
    }
}

fn varint_len(n: u64) -> usize {
    match n {
        0..=250 => 1,
        251..=0xffff => 3,
        0x1_0000..=0xffff_ffff => 5,
        _ => 9,
    }
}

/// bincode's signed integers as varints: 0, -1, 1, -2, 2, … ↦ 0, 1, 2, 3, 4, …
fn zigzag(n: i32) -> u64 {
    let n = i64::from(n);
    ((n << 1) ^ (n >> 63)) as u64
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::{
        ClientCodec, ClientMessage, FRAME_LEN_CAP, MAX_FRAME_LEN, codec::CodecError,
    };
    use bytes::BytesMut;
    use proptest::prelude::*;
    use tokio_util::codec::Encoder;

    /// The frame the codec writes for `message`.
    fn frame_of<M>(message: M) -> Result<BytesMut, CodecError>
    where
        ClientCodec: Encoder<M, Error = CodecError>,
    {
        let mut buf = BytesMut::from(&b"before"[..]);
        ClientCodec::new().encode(message, &mut buf)?;
        Ok(buf.split_off(6))
    }

    /// The hand-written frame and bincode's for the same batch, each as the codec writes it.
    fn both_frames(seq: u64, bets: &[WireBet]) -> (BytesMut, BytesMut) {
        let encoded = EncodedBatchMessage { seq, bets: EncodedBatch::from(bets) };
        let by_hand = frame_of(encoded).unwrap();
        let by_bincode = frame_of(ClientMessage::Batch { seq, bets: bets.to_vec() }).unwrap();
        (by_hand, by_bincode)
    }

    /// Sequence numbers at and around every varint width's edges.
    const SEQ_EDGES: &[u64] =
        &[0, 1, 250, 251, 0xffff, 0x1_0000, 0xffff_ffff, 0x1_0000_0000, u64::MAX - 1, u64::MAX];

    fn arb_text() -> impl Strategy<Value = String> {
        let awkward = proptest::sample::select(
            &[
                "",
                ",",
                "\"",
                "\"\"",
                "a,\"b\"",
                "Ñandú",
                "José María",
                "O'Brien",
                "\u{85}",
                "\u{feff}",
                "\r\n",
                "😀",
                "ñ",
            ][..],
        );
        prop_oneof![
            2 => ".{0,40}",
            2 => proptest::collection::vec(awkward, 0..6).prop_map(|p| p.concat()),
            // Long enough for two- and three-byte length varints.
            1 => (".{0,4}", 240..300usize).prop_map(|(s, n)| s.repeat(n / s.len().max(1))),
        ]
    }

    fn arb_bet() -> impl Strategy<Value = WireBet> {
        let year = prop_oneof![any::<i32>(), -200..200i32, Just(i32::MIN), Just(i32::MAX)];
        let number = prop_oneof![any::<u16>(), 240..260u16, Just(u16::MAX)];
        crate::fixtures::wire_bets(arb_text, "[0-9]{0,12}", year, number)
    }

    fn arb_seq() -> impl Strategy<Value = u64> {
        prop_oneof![proptest::sample::select(SEQ_EDGES), any::<u64>(), 0..70_000u64]
    }

    proptest! {
        #[test]
        fn a_hand_written_batch_frame_is_bincodes_byte_for_byte(
            seq in arb_seq(),
            bets in proptest::collection::vec(arb_bet(), 0..6),
        ) {
            let (by_hand, by_bincode) = both_frames(seq, &bets);
            prop_assert_eq!(by_hand, by_bincode);
        }

        #[test]
        fn a_bets_frame_len_is_bincodes(bet in arb_bet()) {
            let by_hand = WireBetRef::from(&bet);
            // A varint enum tag below 251 is one byte, so `(tag, bet)` encodes exactly like
            // `ClientMessage::Bet(bet)`.
            let by_bincode = FRAME_HEADER_LEN + crate::protocol::encoded_len(&(1u32, &bet));
            prop_assert_eq!(by_hand.frame_len(), by_bincode);
            prop_assert_eq!(bet.frame_len(), by_bincode);
            let mut written = Vec::new();
            by_hand.write(&mut written);
            prop_assert_eq!(written.len(), by_hand.encoded_len());
        }
    }

    #[test]
    fn every_varint_width_of_seq_and_count_is_bincodes() {
        let tiny = WireBet {
            first_name: String::new(),
            last_name: "Ñ".into(),
            document: "1".into(),
            birthdate: WireDate { year: -1, month: 0, day: 255 },
            number: 0,
        };
        for count in [0, 1, 250, 251, 300] {
            for &seq in SEQ_EDGES {
                let (by_hand, by_bincode) = both_frames(seq, &vec![tiny.clone(); count]);
                assert_eq!(by_hand, by_bincode, "{count} bets, seq {seq}");
            }
        }
    }

    #[test]
    fn the_frame_limit_applies_as_to_any_message() {
        let one = |name_len: usize| {
            let bet = crate::fixtures::wire_bet(&"x".repeat(name_len), "Paz", "1", 1);
            (
                EncodedBatchMessage { seq: 1, bets: EncodedBatch::from(&[bet.clone()][..]) },
                vec![bet],
            )
        };
        // The payload without the name's bytes; from 251 bytes on, its length takes 3 bytes.
        let overhead = frame_of(one(0).0).unwrap().len() - FRAME_HEADER_LEN + 2;
        let fits = MAX_FRAME_LEN - overhead;
        let (by_hand, by_bincode) = both_frames(1, &one(fits).1);
        assert_eq!(by_hand, by_bincode);
        assert_eq!(by_hand.len(), FRAME_HEADER_LEN + MAX_FRAME_LEN, "the largest frame");
        let (encoded, bets) = one(fits + 1);
        let by_hand = frame_of(encoded).unwrap_err();
        let by_bincode = frame_of(ClientMessage::Batch { seq: 1, bets }).unwrap_err();
        assert_eq!(by_hand.to_string(), by_bincode.to_string(), "one byte past the limit");
        assert!(matches!(by_hand, CodecError::FrameTooLarge { .. }), "{by_hand}");

        let mut buf = BytesMut::from(&b"kept"[..]);
        let err = ClientCodec::new().encode(one(FRAME_LEN_CAP).0, &mut buf).unwrap_err();
        assert!(matches!(err, CodecError::FrameTooLarge { .. }), "{err}");
        assert_eq!(&buf[..], b"kept", "nothing half-written");
    }
}
