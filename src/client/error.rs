//! [`ClientError`]: why an agency session failed, and whether reconnecting may help.

use std::io;
use std::path::PathBuf;
use std::time::Duration;

use crate::domain::Receipt;
use crate::protocol::{CodecError, ErrorCode, RejectReason};

/// Why an agency session failed.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("cannot connect to the central at {address}: {source}")]
    Connect { address: String, source: io::Error },
    #[error("cannot reach the central at {} (tried for {waited:.1?}): {last}", addresses.join(", "))]
    Unreachable { addresses: Vec<String>, waited: Duration, last: Box<ClientError> },
    #[error("no progress for {waited:.1?}, giving up: {last}")]
    Stalled { waited: Duration, last: Box<ClientError> },
    #[error("the central did not {what} within {waited:.1?}")]
    Timeout { what: String, waited: Duration },
    #[error(transparent)]
    Codec(#[from] CodecError),
    #[error("the central closed the connection")]
    Closed,
    #[error("the central ended the session ({code:?}): {message}")]
    Server { code: ErrorCode, message: String },
    #[error("the central rejected batch {seq} ({reason:?}): {message}")]
    Rejected { seq: u64, reason: RejectReason, message: String },
    #[error(
        "the central sent winners that are not this agency's: {got} documents, of which {unknown} \
         are not among this agency's {expected} winning bets (for example {example:?})"
    )]
    WrongWinners { expected: usize, got: usize, unknown: usize, example: String },
    #[error("the agency's bets were not read to their end (the reader stopped)")]
    ReadIncomplete,
    #[error("unexpected reply from the central: expected {expected}, got {got}")]
    Unexpected { expected: &'static str, got: String },
    #[error("cannot read agency file {path}: {source}")]
    DataFile { path: PathBuf, source: io::Error },
    #[error("{path}, line {line}: {reason}")]
    BadRow { path: PathBuf, line: u64, reason: String },
    #[error("the central holds {stored} bets of this agency, but {path} has only {rows} rows")]
    FileShorter { path: PathBuf, stored: u64, rows: u64 },
    #[error("stopped by a shutdown signal")]
    Cancelled,
    #[error("the central refused this agency's protocol version {ours}: {message}")]
    VersionRefused { ours: u16, message: String },
    #[error(
        "the central's receipt does not match this agency's rows: the central holds {} bets \
         (sha256 {}), this agency sent {} (sha256 {}); the central does not hold exactly what \
         this agency's file says it sent",
        central.bets, central.hex(), ours.bets, ours.hex()
    )]
    ReceiptMismatch { ours: Receipt, central: Receipt },
}

impl ClientError {
    /// Whether the central refused the connection because every place was taken (it answers,
    /// so it is alive).
    pub fn is_busy(&self) -> bool {
        matches!(self, Self::Server { code: ErrorCode::Busy, .. })
    }

    /// Whether reconnecting may help: the connection broke or stalled, the central restarted or
    /// is shutting down, or it could not write to disk for a moment.
    pub fn is_transient(&self) -> bool {
        match self {
            Self::Connect { .. } | Self::Closed | Self::Timeout { .. } => true,
            Self::Codec(e) => matches!(e, CodecError::Io(_) | CodecError::Truncated { .. }),
            Self::Server { code, .. } => matches!(
                code,
                ErrorCode::ShuttingDown
                    | ErrorCode::StorageFailed
                    | ErrorCode::Busy
                    | ErrorCode::Timeout
            ),
            Self::Rejected { reason, .. } => *reason == RejectReason::Storage,
            _ => false,
        }
    }
}
