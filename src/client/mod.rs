//! The agency side: connect, upload bets in batches, declare readiness, receive winners.
//!
//! [`Connection`] speaks the protocol on one socket; [`run`] is the whole agency session the
//! `lottery-client` binary performs. The agency file is read on a blocking thread and handed over
//! in ready-made batches through a small channel, so reading overlaps sending and memory holds a
//! few batches, never the file (see `reader.rs`).
//!
//! Every wait on the central has a deadline (`CLI_READ_TIMEOUT`): the TCP connection, `Welcome`,
//! each acknowledgement, each send and flush, and — while the agency waits for the draw — the
//! `Pong` to the `Ping` it sends every [`PING_EVERY`]. A missed deadline is a broken connection:
//! reconnect with jittered backoff, to the next central of the list when there are several, and
//! resume from the new `Welcome`.
//!
//! # Layout
//! - `connection.rs`: [`Connection`] (the session with the central, its deadlines, connecting
//!   with retries) and [`ping`];
//! - `failover.rs`: which of `CLI_SERVER_ADDRESS`'s centrals the next attempt goes to (round
//!   robin after a transient failure) and the backoff between attempts;
//! - `upload.rs`: [`run`], reading and batching the file, the pipelined upload, resuming;
//! - `reader.rs`: the agency-file reader and `--check`; `pacer.rs`: `loop.period`;
//!   `progress.rs`: the upload's progress lines and bar.

mod pacer;
mod progress;
mod reader;

pub use reader::{CHECK_REPORTED_ROWS, CheckReport, check_file, read_batches};

mod connection;
mod failover;
mod upload;

use std::io;
use std::path::PathBuf;
use std::time::Duration;

use crate::protocol::{CodecError, ErrorCode, RejectReason};

pub use connection::{Connection, ping};
pub use upload::{Outcome, run, run_with_progress};

/// How often an agency waiting for the draw checks the central is alive.
pub const PING_EVERY: Duration = Duration::from_secs(5);

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
}

impl ClientError {
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
