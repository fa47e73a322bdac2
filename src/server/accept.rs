//! What an accept loop (the agencies', the metrics endpoint's) does after an accept error.

use std::io;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

/// Pause after an accept error that is not about one connection (e.g. out of file descriptors).
const ACCEPT_ERROR_PAUSE: Duration = Duration::from_secs(1);

/// What an accept loop does after an accept error: goes on at once when the error was about one
/// connection (reset, aborted, refused); otherwise (e.g. out of file descriptors) pauses for
/// `ACCEPT_ERROR_PAUSE` rather than spin a core. False when `token` was cancelled meanwhile.
pub(super) async fn pause_after_accept_error(e: &io::Error, token: &CancellationToken) -> bool {
    is_connection_error(e)
        || token.run_until_cancelled(tokio::time::sleep(ACCEPT_ERROR_PAUSE)).await.is_some()
}

pub(super) fn is_connection_error(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::ConnectionRefused
            | io::ErrorKind::ConnectionAborted
            | io::ErrorKind::ConnectionReset
    )
}
