//! Validated domain types (`Bet`, `AgencyId`, …) and the winner rule.
//!
//! Everything that crosses a trust boundary (an agency file, a network message, the bets file) is
//! turned into these types by a checking constructor; code past that point never re-validates.

mod batch;
mod bet;
mod lottery;
mod rules;

pub use batch::{BetBatch, Bets, CheckedBet, text_at};
pub use bet::{
    AgencyId, Bet, BetError, BetNumber, BetText, Document, NAME_MAX_CHARS, WireText,
    check_wire_bet, wire_text_is_valid,
};
pub use lottery::{Draw, WINNING_NUMBER, has_won, is_winning};
pub(crate) use rules::write_date;
pub use rules::{Checker, latest_birthdate, latest_birthdate_on, parse_date, parse_digits};
