//! The messages: [`ClientMessage`] (agency → central) and [`ServerMessage`] (central → agency),
//! their typed fields, and [`WireBet`], a bet as sent.
//!
//! bincode writes enum variants by their index, so **new variants go at the end** and existing
//! ones never change shape without bumping [`PROTOCOL_VERSION`].

use jiff::civil::Date;
use serde::{Deserialize, Serialize};

use crate::domain::{Bet, BetText};

/// Version spoken by this build; sent in [`ClientMessage::Hello`] and echoed in
/// [`ServerMessage::Welcome`].
pub const PROTOCOL_VERSION: u16 = 5;

/// Agency → central.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum ClientMessage {
    /// First message of every connection. `token` is the agency's secret, required when the
    /// central has agency tokens.
    Hello { version: u16, agency: u32, token: Option<String> },
    /// One bet of the batch being sent. The agency is the session's, never the message's.
    Bet(WireBet),
    /// Closes the batch made of the `Bet`s since the previous end. `seq` counts the agency's
    /// batches from 1; a batch the central already stored is acknowledged again, not stored twice.
    BetBatchEnd { seq: u64 },
    /// The agency has sent all its bets; the answer is `Winners`, after the draw.
    ReadyForLottery,
    /// Liveness check, answered with `Pong` at any point of a session (health checks).
    Ping,
    /// A whole batch in one frame: the same as its `Bet`s followed by `BetBatchEnd { seq }`, with
    /// the same limits, at a fraction of the per-message cost. What `lottery-client` sends.
    Batch { seq: u64, bets: Vec<WireBet> },
}

/// Central → agency.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum ServerMessage {
    /// Answer to `Hello`: where the central's durable state for this agency ends. `next_seq` is
    /// the next batch it expects; `stored_bets` how many of the agency's bets it holds, so an
    /// agency resumes after exactly that many bets of its file.
    Welcome { version: u16, next_seq: u64, stored_bets: u64 },
    /// The batch `seq` is stored (or was already stored); `count` bets.
    BatchAccepted { seq: u64, count: u32 },
    /// The batch `seq` was refused whole: nothing of it is stored.
    BatchRejected { seq: u64, reason: RejectReason, message: String },
    /// This agency's winning documents, after the draw; `last` marks the final chunk.
    Winners { documents: Vec<String>, last: bool },
    /// A protocol violation or a condition that ends the session; the central closes it next.
    Error { code: ErrorCode, message: String },
    /// Answer to `Ping`.
    Pong,
    /// Sent after the draw, before the agency's `Winners`: how many of the agency's bets the
    /// central holds, and the SHA-256 of exactly those rows in the bets file's encoding, in the
    /// order the agency sent them (`lottery-server export --agency K - | sha256sum`). Since
    /// version 5.
    Receipt { bets: u64, sha256: [u8; 32] },
}

/// Why a batch was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum RejectReason {
    /// A bet failed validation; the message names the bet, field and value.
    InvalidBet,
    /// More bets than the central accepts in one batch.
    TooManyBets,
    /// More than [`MAX_BATCH_BYTES`](super::MAX_BATCH_BYTES) on the wire.
    TooLarge,
    /// The bets could not be written; nothing of the batch is stored.
    Storage,
}

/// Why the central is ending a session.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum ErrorCode {
    /// The first message was not `Hello`, or `Hello` came twice.
    HelloRequired,
    /// `Hello` named a protocol version this central does not speak.
    UnsupportedVersion,
    /// `Hello` named an agency outside 1..=N.
    UnknownAgency,
    /// A frame could not be decoded or was too large.
    Malformed,
    /// A batch sequence number skipped ahead of the next expected one.
    SequenceGap,
    /// Bets after `ReadyForLottery`, or `ReadyForLottery` in the middle of a batch.
    AgencyClosed,
    /// The draw could not be run (the bets file could not be read).
    DrawFailed,
    /// The central is shutting down.
    ShuttingDown,
    /// The central could not write its journal; try again later.
    StorageFailed,
    /// The central serves as many connections as it may; try again later.
    Busy,
    /// `Hello`'s token is missing or is not this agency's.
    Unauthorized,
    /// A newer connection of the same agency took over this session.
    SessionReplaced,
    /// A whole message did not arrive in time (`Hello`, or the next one).
    Timeout,
}

/// A bet as sent: unvalidated fields, checked on arrival as a bet of its batch (through
/// [`ReceivedBet`](super::ReceivedBet), by [`check_wire_bet`](crate::domain::check_wire_bet)).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WireBet {
    pub first_name: String,
    pub last_name: String,
    pub document: String,
    pub birthdate: WireDate,
    pub number: u16,
}

/// A calendar date as sent; whether the day exists is checked on arrival.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct WireDate {
    pub year: i32,
    pub month: u8,
    pub day: u8,
}

impl From<Date> for WireDate {
    fn from(date: Date) -> Self {
        // jiff's month() is 1..=12 and day() 1..=31: both fit a u8.
        let (month, day) = (date.month().unsigned_abs(), date.day().unsigned_abs());
        Self { year: date.year().into(), month, day }
    }
}

impl WireBet {
    /// The wire form of a validated bet (its agency travels in `Hello`).
    pub fn from_bet(bet: &Bet) -> Self {
        Self::from_owned(bet.clone())
    }

    /// The wire form of a validated bet, moving its strings rather than copying them.
    pub fn from_owned(bet: Bet) -> Self {
        Self {
            birthdate: WireDate::from(bet.birthdate),
            first_name: bet.first_name,
            last_name: bet.last_name,
            document: bet.document.into_string(),
            number: bet.number.get(),
        }
    }

    /// The wire form of a checked CSV row, its text copied out of the row.
    pub fn from_text(bet: &BetText<'_>) -> Self {
        Self {
            first_name: bet.first_name().to_owned(),
            last_name: bet.last_name().to_owned(),
            document: bet.document().to_owned(),
            birthdate: WireDate::from(bet.birthdate),
            number: bet.number.get(),
        }
    }
}
