//! The central's side of a `Batch` frame: its bets read in place ([`ReceivedBatch`]), each text
//! field checked once where it lies in the frame, and no `String` per bet.
//!
//! The frame's layout is in `encode.rs`. [`ReceivedBatch::parse`] reads a payload exactly as
//! bincode reads a `ClientMessage::Batch`, and accepts it only when bincode would: every field
//! whole, every string UTF-8, no byte left over. For anything else it gives the payload back and
//! the codec asks bincode, whose error (or, for an encoding this reader leaves to it, whose
//! `ClientMessage`) is the answer, so a hostile frame meets the same refusal, word for word, as
//! before. Tests hold the two readers side by side over valid and broken frames.

use std::ops::Range;

use bytes::BytesMut;

use super::encode::WireBetRef;
use super::message::{ClientMessage, WireBet, WireDate};
use crate::domain::{WireText, text_at, wire_text_is_valid};

/// bincode's index of `ClientMessage::Batch` as the one byte it is written as.
const BATCH_VARIANT_BYTE: u8 = 5;
/// The fewest bytes a bet takes: three empty strings, a year, a month, a day and a number.
const MIN_BET_LEN: usize = 7;

/// What the central reads from an agency: a `Batch` read in place, or any other message.
#[derive(Debug, PartialEq, Eq)]
pub enum Inbound {
    /// Any message but `Batch`.
    Message(ClientMessage),
    /// A `Batch`.
    Batch(ReceivedBatch),
}

impl From<ClientMessage> for Inbound {
    /// A `Batch` becomes a [`ReceivedBatch`] (its bets written in wire form), so the central
    /// checks batches one way whichever way they came.
    fn from(message: ClientMessage) -> Self {
        match message {
            ClientMessage::Batch { seq, bets } => Self::Batch(ReceivedBatch::from_bets(seq, &bets)),
            other => Self::Message(other),
        }
    }
}

/// A `Batch` frame's bets, unvalidated, in the frame's own bytes.
#[derive(Debug, PartialEq, Eq)]
pub struct ReceivedBatch {
    seq: u64,
    bytes: BytesMut,
    bets: Vec<ReceivedBet>,
}

/// Where one received bet is in its batch's bytes, and its values.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReceivedBet {
    /// `first_name`, `last_name`, `document`: byte ranges, each UTF-8.
    text: [Range<u32>; 3],
    /// Whether the text passed every rule on it already (`wire_text_is_valid`).
    text_passed: bool,
    birthdate: WireDate,
    number: u16,
}

impl ReceivedBatch {
    /// Reads a frame's payload as a `ClientMessage::Batch`, or gives it back when it is not one
    /// bincode reads (or one written in a way this reader leaves to bincode).
    ///
    /// # Errors
    /// The payload itself, for the codec to decode with bincode.
    pub fn parse(payload: BytesMut) -> Result<Self, BytesMut> {
        match read_batch(&payload) {
            Some((seq, bets)) => Ok(Self { seq, bytes: payload, bets }),
            None => Err(payload),
        }
    }

    /// The batch `ClientMessage::Batch { seq, bets }` carries.
    pub fn from_bets(seq: u64, bets: &[WireBet]) -> Self {
        let mut bytes = BytesMut::new();
        let received = bets.iter().map(|bet| ReceivedBet::append(&mut bytes, bet)).collect();
        Self { seq, bytes, bets: received }
    }

    /// The batch's number.
    pub fn seq(&self) -> u64 {
        self.seq
    }

    /// How many bets it holds.
    pub fn len(&self) -> usize {
        self.bets.len()
    }

    /// Whether it holds no bet.
    pub fn is_empty(&self) -> bool {
        self.bets.is_empty()
    }

    /// Its number, bytes and bets.
    pub fn into_parts(self) -> (u64, BytesMut, Vec<ReceivedBet>) {
        (self.seq, self.bytes, self.bets)
    }

    /// The `ClientMessage::Batch` it was read from (for tests and tools; the central never
    /// needs it).
    pub fn to_message(&self) -> ClientMessage {
        let bets = self.bets.iter().map(|bet| bet.to_wire_bet(&self.bytes)).collect();
        ClientMessage::Batch { seq: self.seq, bets }
    }
}

impl ReceivedBet {
    /// Its text fields, from the bytes of its batch.
    pub fn text<'a>(&self, bytes: &'a [u8]) -> WireText<'a> {
        text_at(bytes, &self.text)
    }

    /// Where its text fields are in the bytes of its batch.
    pub fn text_ranges(&self) -> &[Range<u32>; 3] {
        &self.text
    }

    /// Whether its text passed every rule on it when it was read.
    pub fn text_passed(&self) -> bool {
        self.text_passed
    }

    /// Its birthdate as sent (not yet known to be a real date).
    pub fn birthdate(&self) -> WireDate {
        self.birthdate
    }

    /// Its number as sent (not yet known to be 0..=9999).
    pub fn number(&self) -> u16 {
        self.number
    }

    /// Bytes it takes as a `ClientMessage::Bet` frame (the 8 kB rule's measure).
    pub fn frame_len(&self, bytes: &[u8]) -> usize {
        WireBetRef::new(self.text(bytes), self.birthdate, self.number).frame_len()
    }

    fn to_wire_bet(&self, bytes: &[u8]) -> WireBet {
        let [first_name, last_name, document] =
            self.text(bytes).map(|t| String::from_utf8_lossy(t).into_owned());
        WireBet { first_name, last_name, document, birthdate: self.birthdate, number: self.number }
    }
}

impl ReceivedBet {
    /// Writes `bet` in wire form at the end of `bytes` and says where its fields are.
    pub fn append(bytes: &mut BytesMut, bet: &WireBet) -> ReceivedBet {
        let wire = WireBetRef::from(bet);
        let start = bytes.len();
        wire.write(bytes);
        // A bet is far smaller than 4 GiB, and so is a batch of them.
        let at = |offset: usize| u32::try_from(start + offset).unwrap_or(u32::MAX);
        let text = wire.text_offsets().map(|r| at(r.start)..at(r.end));
        let fields = [&bet.first_name, &bet.last_name, &bet.document].map(|t| t.as_bytes());
        let text_passed = wire_text_is_valid(fields);
        ReceivedBet { text, text_passed, birthdate: bet.birthdate, number: bet.number }
    }
}

/// A reader over a payload: each step takes bytes off the front, `None` past the end.
struct Cursor<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl<'a> Cursor<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        let taken = self.bytes.get(self.at..self.at.checked_add(n)?)?;
        self.at += n;
        Some(taken)
    }

    fn byte(&mut self) -> Option<u8> {
        Some(self.take(1)?[0])
    }

    /// A varint as bincode reads one: below 251 the byte itself, 251, 252 and 253 announce a
    /// little-endian `u16`, `u32` and `u64` (written shortest or not); 254 and 255 are errors.
    fn varint(&mut self) -> Option<u64> {
        let le = |bytes: &[u8]| bytes.iter().rev().fold(0u64, |n, &b| n << 8 | u64::from(b));
        match self.byte()? {
            n @ 0..=250 => Some(n.into()),
            251 => self.take(2).map(le),
            252 => self.take(4).map(le),
            253 => self.take(8).map(le),
            _ => None,
        }
    }

    /// A string: its varint length, then that many bytes. The range it takes; UTF-8 is the
    /// caller's check.
    fn text(&mut self) -> Option<Range<u32>> {
        let len = usize::try_from(self.varint()?).ok()?;
        let start = self.at;
        self.take(len)?;
        Some(u32::try_from(start).ok()?..u32::try_from(self.at).ok()?)
    }
}

/// The `seq` and bets of a `ClientMessage::Batch` payload, or `None` for anything bincode would
/// not read as exactly that.
fn read_batch(payload: &[u8]) -> Option<(u64, Vec<ReceivedBet>)> {
    let mut cursor = Cursor { bytes: payload, at: 0 };
    if cursor.byte()? != BATCH_VARIANT_BYTE {
        return None;
    }
    let seq = cursor.varint()?;
    let count = usize::try_from(cursor.varint()?).ok()?;
    // The count is the peer's word: room for no more bets than the payload can hold.
    let mut bets = Vec::with_capacity(count.min(payload.len() / MIN_BET_LEN));
    for _ in 0..count {
        bets.push(read_bet(payload, &mut cursor.at)?);
    }
    (cursor.at == payload.len()).then_some((seq, bets))
}

/// The bet at `*at` in `bytes`, moving `*at` past it; `None` if bincode would not read one there.
fn read_bet(bytes: &[u8], at: &mut usize) -> Option<ReceivedBet> {
    let mut cursor = Cursor { bytes, at: *at };
    let text = [cursor.text()?, cursor.text()?, cursor.text()?];
    let year = zigzag_decode(cursor.varint()?)?;
    let (month, day) = (cursor.byte()?, cursor.byte()?);
    let number = u16::try_from(cursor.varint()?).ok()?;
    let fields = text_at(bytes, &text);
    // UTF-8 is checked once: the rules' pass checks it for a valid bet; only a bet that fails
    // them is checked again for UTF-8 alone, to tell a bad frame from a bad bet.
    let text_passed = wire_text_is_valid(fields);
    if !text_passed && fields.iter().any(|t| std::str::from_utf8(t).is_err()) {
        return None;
    }
    *at = cursor.at;
    Some(ReceivedBet { text, text_passed, birthdate: WireDate { year, month, day }, number })
}

/// bincode's signed varint back to an `i32`; `None` outside its range, as bincode refuses.
fn zigzag_decode(n: u64) -> Option<i32> {
    let n = if n % 2 == 0 { (n / 2) as i64 } else { !(n / 2) as i64 };
    i32::try_from(n).ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::codec::FromPayload;
    use crate::protocol::{CentralCodec, ClientCodec, ServerCodec};
    use bytes::BufMut;
    use proptest::prelude::*;
    use tokio_util::codec::{Decoder, Encoder};

    /// What the central makes of `payload`, as the message it stands for, or the error's text.
    fn central(payload: &[u8]) -> Result<ClientMessage, String> {
        match Inbound::from_payload(BytesMut::from(payload)) {
            Ok(Inbound::Batch(batch)) => Ok(batch.to_message()),
            Ok(Inbound::Message(message)) => Ok(message),
            Err(e) => Err(e.to_string()),
        }
    }

    /// What bincode makes of `payload`.
    fn bincode(payload: &[u8]) -> Result<ClientMessage, String> {
        crate::protocol::decode::<ClientMessage>(payload).map_err(|e| e.to_string())
    }

    /// The payload of `message`'s frame.
    fn payload_of(message: ClientMessage) -> Vec<u8> {
        let mut frame = BytesMut::new();
        ClientCodec::with_max_frame_len(crate::protocol::FRAME_LEN_CAP)
            .encode(message, &mut frame)
            .unwrap();
        frame.split_off(crate::protocol::FRAME_HEADER_LEN).to_vec()
    }

    fn bet(first_name: &str, document: &str) -> WireBet {
        crate::fixtures::wire_bet(first_name, "Núñez, \"el\" O'Brien", document, 7574)
    }

    fn batch(bets: Vec<WireBet>) -> Vec<u8> {
        payload_of(ClientMessage::Batch { seq: 300, bets })
    }

    #[test]
    fn a_batch_frame_is_read_in_place_as_bincode_reads_it() {
        let bets =
            vec![bet("Ana", "1"), bet("José María", "0123456789"), bet(&"😀".repeat(70), "7")];
        let payload = batch(bets.clone());
        let read = ReceivedBatch::parse(BytesMut::from(&payload[..])).expect("read in place");
        assert_eq!((read.seq(), read.len()), (300, 3));
        assert_eq!(read.to_message(), ClientMessage::Batch { seq: 300, bets });
        assert!(read.bets.iter().all(|b| b.text_passed), "valid text passes once read");
    }

    #[test]
    fn a_batch_cut_short_at_every_byte_is_bincodes_error() {
        let payload = batch(vec![bet("Ana", "1"), bet(&"x".repeat(300), "22")]);
        for cut in 0..payload.len() {
            let got = central(&payload[..cut]);
            assert!(got.is_err(), "cut at {cut}: {got:?}");
            assert_eq!(got, bincode(&payload[..cut]), "cut at {cut}");
        }
    }

    #[test]
    fn trailing_bytes_are_bincodes_error() {
        let mut payload = batch(vec![bet("Ana", "1")]);
        payload.push(0);
        let got = central(&payload);
        assert!(got.is_err());
        assert_eq!(got, bincode(&payload));
    }

    #[test]
    fn lengths_past_the_end_are_bincodes_errors() {
        let payload = batch(vec![bet("Ana", "1")]);
        // variant, seq (251 + u16), count, then the first name's length.
        let first_len_at = 1 + 3 + 1;
        assert_eq!(payload[first_len_at], 3);
        for len in [
            &[4][..],
            &[250],
            &[251, 0xff, 0xff],
            &[252, 0, 0, 0, 1],
            &[253, 0, 0, 0, 0, 0, 0, 0, 0x80],
        ] {
            let mut broken = payload[..first_len_at].to_vec();
            broken.extend_from_slice(len);
            broken.extend_from_slice(&payload[first_len_at + 1..]);
            let got = central(&broken);
            assert!(got.is_err(), "{len:?}: {got:?}");
            assert_eq!(got, bincode(&broken), "{len:?}");
        }
        // A count of more bets than the frame holds reserves no room for them.
        let mut huge_count = payload[..4].to_vec();
        huge_count.extend_from_slice(&[253, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x7f]);
        huge_count.extend_from_slice(&payload[5..]);
        assert_eq!(central(&huge_count), bincode(&huge_count));
        assert!(central(&huge_count).is_err());
    }

    #[test]
    fn bad_utf8_in_any_text_field_is_bincodes_error() {
        let valid = bet("Ana", "12");
        for field in 0..3 {
            for bad in [&[0xff][..], &[0xc3], &[0xed, 0xa0, 0x80], &[b'A', 0xc0, 0x80]] {
                let mut payload = batch(vec![valid.clone(), valid.clone()]);
                // The second bet's text: after the header (5 bytes) and the first bet.
                let first_bet_len = WireBetRef::from(&valid).frame_len() - 5;
                let mut at = 5 + first_bet_len;
                for _ in 0..field {
                    at += 1 + usize::from(payload[at]);
                }
                let len = usize::from(payload[at]);
                payload.splice(
                    at..at + 1 + len,
                    [bad.len() as u8].into_iter().chain(bad.iter().copied()),
                );
                let got = central(&payload);
                assert!(got.is_err(), "field {field}, {bad:?}: {got:?}");
                assert_eq!(got, bincode(&payload), "field {field}, {bad:?}");
            }
        }
    }

    #[test]
    fn text_that_fails_the_rules_is_read_and_left_to_them() {
        for (first_name, document) in
            [("", "1"), ("\u{85}", "1"), ("Ana", ""), ("Ana", "12345678901"), ("Ana", "١٢")]
        {
            let payload = batch(vec![bet(first_name, document)]);
            let read = ReceivedBatch::parse(BytesMut::from(&payload[..])).expect("UTF-8: read");
            assert!(!read.bets[0].text_passed, "{first_name:?} {document:?}");
            assert_eq!(central(&payload), bincode(&payload));
        }
    }

    #[test]
    fn varints_written_long_are_read_as_bincode_reads_them() {
        // seq 5 as 251 + u16, count 1 as 252 + u32, the number as 253 + u64.
        let mut payload = vec![5, 251, 5, 0, 252, 1, 0, 0, 0];
        payload.extend_from_slice(&[1, b'A', 1, b'B', 1, b'1', 2, 1, 1]);
        payload.extend_from_slice(&[253, 7, 0, 0, 0, 0, 0, 0, 0]);
        let got = central(&payload);
        assert!(got.is_ok(), "{got:?}");
        assert_eq!(got, bincode(&payload));
        // 254 and 255 are never varints.
        for marker in [254, 255] {
            let mut bad = payload.clone();
            bad[1] = marker;
            assert!(central(&bad).is_err());
            assert_eq!(central(&bad), bincode(&bad));
        }
    }

    #[test]
    fn the_central_codec_refuses_what_the_server_codec_refuses_in_the_same_words() {
        let payload = batch(vec![bet("Ana", "1"), bet("Paz", "2")]);
        for cut in 0..payload.len() {
            let mut frame = BytesMut::new();
            frame.put_u32(cut as u32);
            frame.extend_from_slice(&payload[..cut]);
            let central = CentralCodec::new().decode(&mut frame.clone()).unwrap_err().to_string();
            let server = ServerCodec::new().decode(&mut frame).unwrap_err().to_string();
            assert_eq!(central, server, "cut at {cut}");
        }
    }

    fn arb_text() -> impl Strategy<Value = String> {
        prop_oneof![
            3 => ".{0,20}",
            1 => "[A-Za-zñ ,\"']{0,8}",
            1 => (".{1,3}", 80..140usize).prop_map(|(s, n)| s.repeat(n)),
        ]
    }

    fn arb_bet() -> impl Strategy<Value = WireBet> {
        let year = prop_oneof![any::<i32>(), 1900..2030i32];
        let number = prop_oneof![any::<u16>(), 0..10_000u16];
        crate::fixtures::wire_bets(arb_text, "[0-9]{0,11}", year, number)
    }

    proptest! {
        #[test]
        fn any_batch_is_read_in_place_as_bincode_reads_it(
            seq in any::<u64>(),
            bets in proptest::collection::vec(arb_bet(), 0..5),
        ) {
            let message = ClientMessage::Batch { seq, bets };
            let payload = payload_of(message.clone());
            let read = ReceivedBatch::parse(BytesMut::from(&payload[..]));
            prop_assert!(read.is_ok(), "every valid Batch is read in place");
            prop_assert_eq!(read.unwrap().to_message(), message.clone());
            let by_hand = ReceivedBatch::from_bets(seq, match &message {
                ClientMessage::Batch { bets, .. } => bets,
                _ => unreachable!(),
            });
            prop_assert_eq!(by_hand.to_message(), message);
        }

        #[test]
        fn any_broken_batch_meets_bincodes_answer(
            bets in proptest::collection::vec(arb_bet(), 1..4),
            edits in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..4),
            cut in any::<prop::sample::Index>(),
        ) {
            let mut payload = batch(bets);
            for (at, byte) in edits {
                let at = at.index(payload.len());
                payload[at] = byte;
            }
            payload.truncate(cut.index(payload.len() + 1).max(1));
            payload[0] = 5;
            prop_assert_eq!(central(&payload), bincode(&payload));
        }

        #[test]
        fn random_bytes_after_the_batch_tag_meet_bincodes_answer(
            bytes in proptest::collection::vec(any::<u8>(), 0..64),
        ) {
            let payload: Vec<u8> = std::iter::once(5).chain(bytes).collect();
            prop_assert_eq!(central(&payload), bincode(&payload));
        }
    }
}
