//! Why a connection ends early ([`HandlerError`]), how that is logged, and the one mapping of
//! what went wrong below the connection (a frame that is not a message, a store's refusal) to
//! the protocol's codes.

use std::net::SocketAddr;
use std::sync::{Mutex as StdMutex, PoisonError};
use std::time::Duration;

use tracing::{debug, warn};

use super::metrics::Refusal;
use super::newcomers::Throttle;
use crate::domain::AgencyId;
use crate::protocol::{CodecError, ErrorCode};
use crate::storage::StorageError;

/// Why a connection ended early.
#[derive(Debug, thiserror::Error)]
pub(crate) enum HandlerError {
    #[error(transparent)]
    Codec(#[from] CodecError),
    #[error("{code:?}: {message}")]
    Protocol { code: ErrorCode, message: String },
    #[error("the peer did not read its replies for {0:?}")]
    WriteTimeout(Duration),
}

/// A protocol violation (or a refusal) that ends the connection with `Error { code, message }`.
pub(crate) fn protocol(code: ErrorCode, message: impl Into<String>) -> HandlerError {
    HandlerError::Protocol { code, message: message.into() }
}

/// Logs why the connection of `peer` (speaking for `agency`, once its `Hello` was accepted)
/// ended early: once, at the task boundary. Connections that never said `Hello`, which anyone
/// can open as fast as they can connect, share one WARN line a second (`strangers`).
pub(crate) fn log_end(
    e: &HandlerError,
    peer: SocketAddr,
    agency: Option<AgencyId>,
    strangers: &StdMutex<Throttle>,
) {
    match agency {
        Some(agency) => {
            warn!(action = "connection", result = "fail", ip = %peer, agency = %agency, error = %e);
        }
        None => {
            debug!(action = "connection", result = "fail", ip = %peer, error = %e);
            let due = strangers.lock().unwrap_or_else(PoisonError::into_inner).due();
            if let Some(failed_without_hello) = due {
                warn!(action = "connection", result = "fail", ip = %peer, error = %e, failed_without_hello);
            }
        }
    }
}

/// Why a connection that never had a session ended, as the refusals metric counts it; `None`
/// when it was not refused (the peer left, or broke the connection, or the central is
/// shutting down). The accept loop counts the connection budget's refusals itself.
pub(crate) fn refusal(e: &HandlerError) -> Option<Refusal> {
    match e {
        HandlerError::Protocol { code: ErrorCode::Timeout, .. } => Some(Refusal::HelloTimeout),
        HandlerError::Protocol { code: ErrorCode::Unauthorized, .. } => Some(Refusal::Token),
        // A connection's handler says `Busy` only to the oldest without `Hello`, closed for a
        // newer one; counted here, as it is told, so one that timed out meanwhile counts once.
        HandlerError::Protocol { code: ErrorCode::Busy, .. } => Some(Refusal::PendingHellos),
        HandlerError::Protocol { code: ErrorCode::ShuttingDown, .. } => None,
        HandlerError::Protocol { .. } => Some(Refusal::BadHello),
        HandlerError::Codec(_) | HandlerError::WriteTimeout(_) => None,
    }
}

/// What reading a frame failed with: the socket's error ends the connection as it is; a frame
/// that is not a message is answered `Malformed` first.
pub(crate) fn unreadable(e: CodecError) -> HandlerError {
    match e {
        CodecError::Io(e) => CodecError::Io(e).into(),
        e => protocol(ErrorCode::Malformed, e.to_string()),
    }
}

/// The code a store's error ends a session with. `StorageFailed` says the store could not do
/// it (the agency may retry, here or elsewhere); for a batch, that refuses the batch alone
/// (`BatchRejected`), and the session goes on.
pub(crate) fn storage_code(e: &StorageError) -> ErrorCode {
    match e {
        StorageError::SequenceGap { .. } => ErrorCode::SequenceGap,
        StorageError::BadBatch { .. } => ErrorCode::Malformed,
        StorageError::Fenced { .. } => ErrorCode::SessionReplaced,
        StorageError::AgencyClosed { .. } => ErrorCode::AgencyClosed,
        _ => ErrorCode::StorageFailed,
    }
}

/// [`storage_code`]'s protocol error.
pub(crate) fn storage_error(e: &StorageError) -> HandlerError {
    protocol(storage_code(e), e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::AgencyId;

    #[test]
    fn each_storage_error_has_its_code() {
        let agency = AgencyId::new(1).unwrap();
        let cases = [
            (StorageError::SequenceGap { agency, expected: 2, got: 3 }, ErrorCode::SequenceGap),
            (StorageError::BadBatch { agency, seq: 0, reason: "r" }, ErrorCode::Malformed),
            (StorageError::Fenced { agency }, ErrorCode::SessionReplaced),
            (StorageError::AgencyClosed { agency }, ErrorCode::AgencyClosed),
            (
                StorageError::AgencyLimit { agency, stored: 1, bets: 1, limit: 1 },
                ErrorCode::StorageFailed,
            ),
            (
                StorageError::Database { target: "db".into(), what: "w", reason: "r".into() },
                ErrorCode::StorageFailed,
            ),
        ];
        for (error, code) in cases {
            assert_eq!(storage_code(&error), code, "{error}");
        }
    }
}
