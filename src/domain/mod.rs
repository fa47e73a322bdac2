//! Validated domain types (`Bet`, `AgencyId`, …) and the winner rule.
//!
//! Everything that crosses a trust boundary (an agency file, a network message, the bets file) is
//! turned into these types by a checking constructor; code past that point never re-validates.
//!
//! # Layout
//! - `bet.rs`: [`Bet`] and its parts ([`AgencyId`], [`Document`], [`BetNumber`]), [`BetText`]
//!   (a checked CSV row, borrowed) and the check of a bet as received; its `//!` says why a bet
//!   has each of its seven types;
//! - `bet_batch.rs`: [`BetBatch`], a received batch's validated bets in the frame's bytes, and
//!   [`Bets`], what the stores take;
//! - `rules.rs`: the rules on a bet's fields both sides apply (birthdate, dates, names, digits);
//! - `draw.rs`: the winner rule and [`Draw`], the outcome of the draw;
//! - `receipt.rs`: [`Receipt`], an agency's count of bets and the SHA-256 of their rows, and
//!   [`Receipts`], every agency's with the draw's digest;
//! - `error.rs`: [`BetError`].

mod bet;
mod bet_batch;
mod draw;
mod error;
mod receipt;
mod rules;

pub use bet::{
    AgencyId, Bet, BetNumber, BetText, Document, WireText, check_wire_bet, wire_text_is_valid,
};
pub use bet_batch::{BetBatch, Bets, CheckedBet, text_at};
pub use draw::{Draw, WINNING_NUMBER, has_won, is_winning};
pub use error::BetError;
pub use receipt::{Receipt, ReceiptHasher, Receipts, hex};
#[cfg(test)]
pub(crate) use rules::check_wire_day;
pub(crate) use rules::write_date;
pub use rules::{
    Checker, NAME_MAX_CHARS, WireDay, latest_birthdate, latest_birthdate_on, parse_date,
    parse_digits, wire_day,
};
