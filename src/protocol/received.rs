//! The central's side of a `Batch` frame: its bets read in place ([`ReceivedBatch`]), each text
//! field checked once where it lies in the frame, and no `String` per bet.
//!
//! The frame's layout is in `batch.rs`. [`ReceivedBatch::parse`] reads a payload exactly as
//! bincode reads a `ClientMessage::Batch`, and accepts it only when bincode would: every field
//! whole, every string UTF-8, no byte left over. For anything else it gives the payload back and
//! the codec asks bincode, whose error (or, for an encoding this reader leaves to it, whose
//! `ClientMessage`) is the answer, so a hostile frame meets the same refusal, word for word, as
//! before. Tests hold the two readers side by side over valid and broken frames.

use std::ops::Range;

use bytes::BytesMut;

use super::batch::WireBetRef;
use super::{ClientMessage, WireBet, WireDate};
use crate::domain::{WireText, wire_text_is_valid};

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
        // The ranges were read from these bytes: never the default.
        self.text.clone().map(|r| bytes.get(r.start as usize..r.end as usize).unwrap_or_default())
    }

    /// Where its text fields are in the bytes of its batch.
    pub fn text_ranges(&self) -> &[Range<u32>; 3] {
        &self.text
    }

    /// Whether its text passed every rule on it when it was read.
    pub fn text_passed(&self) -> bool {
        self.text_passed
    }

    pub fn birthdate(&self) -> WireDate {
        self.birthdate
    }

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
    let fields =
        text.clone().map(|r| bytes.get(r.start as usize..r.end as usize).unwrap_or_default());
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
