//! [`BetBatch`]: a batch of validated bets as the central received them, their text left where
//! it arrived; and [`Bets`], what the stores take: a `BetBatch` or plain [`Bet`]s.
//!
//! A batch's bets are read in place from the frame they came in (see
//! `protocol::ReceivedBatch`): the batch keeps the frame's bytes and, per bet, where its three
//! text fields are in them, with its birthdate and number. No `String` per bet on the way from
//! the socket to the bets file.

use std::ops::Range;

use bytes::Bytes;
use jiff::civil::Date;

use super::{AgencyId, Bet, BetNumber, BetText, WireText};

/// Bets in the order they are to be stored: what `Store::submit` takes.
pub trait Bets {
    /// How many bets.
    fn bet_count(&self) -> usize;

    /// Each bet's agency and fields.
    fn bet_texts(&self) -> impl Iterator<Item = (AgencyId, BetText<'_>)>;
}

impl Bets for [Bet] {
    fn bet_count(&self) -> usize {
        self.len()
    }

    fn bet_texts(&self) -> impl Iterator<Item = (AgencyId, BetText<'_>)> {
        self.iter().map(|bet| (bet.agency, bet.as_text()))
    }
}

impl<const N: usize> Bets for [Bet; N] {
    fn bet_count(&self) -> usize {
        N
    }

    fn bet_texts(&self) -> impl Iterator<Item = (AgencyId, BetText<'_>)> {
        self[..].bet_texts()
    }
}

impl Bets for Vec<Bet> {
    fn bet_count(&self) -> usize {
        self.len()
    }

    fn bet_texts(&self) -> impl Iterator<Item = (AgencyId, BetText<'_>)> {
        self[..].bet_texts()
    }
}

/// One bet of a [`BetBatch`]: where its text fields are in the batch's bytes, and its values.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckedBet {
    /// `first_name`, `last_name`, `document`: byte ranges of UTF-8 text that passed the checks.
    pub(crate) text: [Range<u32>; 3],
    pub(crate) birthdate: Date,
    pub(crate) number: BetNumber,
}

/// Validated bets of one agency, their text in the bytes they arrived in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BetBatch {
    agency: AgencyId,
    bytes: Bytes,
    bets: Vec<CheckedBet>,
}

impl BetBatch {
    /// The batch of `agency`'s `bets`, whose text is in `bytes`. Each bet passed
    /// `check_wire_bet` (the session's job), its ranges inside `bytes`.
    pub(crate) fn new(agency: AgencyId, bytes: Bytes, bets: Vec<CheckedBet>) -> Self {
        Self { agency, bytes, bets }
    }

    /// How many bets.
    pub fn len(&self) -> usize {
        self.bets.len()
    }

    /// Whether the batch has no bet.
    pub fn is_empty(&self) -> bool {
        self.bets.is_empty()
    }

    /// The agency whose bets these are.
    pub fn agency(&self) -> AgencyId {
        self.agency
    }

    /// The bets, in order.
    pub fn iter(&self) -> impl Iterator<Item = BetText<'_>> {
        self.bets.iter().map(|bet| {
            BetText::from_checked(text_at(&self.bytes, &bet.text), bet.birthdate, bet.number)
        })
    }
}

/// A bet's three text fields, from the bytes its `ranges` were read from.
pub fn text_at<'a>(bytes: &'a [u8], ranges: &[Range<u32>; 3]) -> WireText<'a> {
    // The ranges are always taken from these bytes: never the default.
    ranges.clone().map(|r| bytes.get(r.start as usize..r.end as usize).unwrap_or_default())
}

impl Bets for BetBatch {
    fn bet_count(&self) -> usize {
        self.len()
    }

    fn bet_texts(&self) -> impl Iterator<Item = (AgencyId, BetText<'_>)> {
        self.iter().map(|bet| (self.agency, bet))
    }
}
