//! The accept loop: the connection budgets (`LOTTERY_MAX_CONNECTIONS`, and the newcomers without
//! `Hello`: `newcomers.rs`), refusals, and one task per connection, spawned on the central's
//! `TaskTracker`.

use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::Duration;

use futures::FutureExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{debug, error, warn};

use super::accept::{is_connection_error, pause_after_accept_error};
use super::handler::Handler;
use super::metrics::{self, Refusal};
use super::newcomers::Throttle;
use super::shared::Shared;
use crate::protocol::{ErrorCode, ServerCodec, ServerMessage};

/// How long a refusal (`Busy`) may take to write before the connection is dropped anyway.
const REFUSAL_TIMEOUT: Duration = Duration::from_secs(1);

/// Accepts connections until `token` is cancelled.
pub(super) async fn accept_loop(
    listener: &TcpListener,
    shared: &Arc<Shared>,
    tracker: &TaskTracker,
    token: &CancellationToken,
) {
    let permits = Arc::new(Semaphore::new(shared.config.max_connections.get()));
    let mut refused = Throttle::default();
    let mut evicted = Throttle::default();
    loop {
        let accepted = tokio::select! {
            () = token.cancelled() => return,
            accepted = listener.accept() => accepted,
        };
        match accepted {
            Ok((stream, peer)) => {
                // Replies are small frames written while the agency keeps sending: without
                // TCP_NODELAY, Nagle holds them for the peer's delayed ACK (about 40 ms).
                if let Err(e) = stream.set_nodelay(true) {
                    debug!(action = "connection", result = "fail", ip = %peer, error = %e);
                    continue;
                }
                let Ok(permit) = permits.clone().try_acquire_owned() else {
                    if let Some(refused) = refused.due() {
                        let limit = shared.config.max_connections.get();
                        warn!(action = "connection", result = "fail", ip = %peer, error = "too many connections: refused with Busy", limit, refused);
                    }
                    metrics::refused(Refusal::ConnectionBudget);
                    tracker.spawn(refuse(stream));
                    continue;
                };
                // The connection it evicts is counted when its handler tells it (`Busy`).
                let (newcomer, evicted_one) = shared.newcomers.admit();
                if evicted_one && let Some(closed) = evicted.due() {
                    let limit = shared.config.max_pending_hellos.get();
                    warn!(action = "connection", result = "fail", ip = %peer, error = "too many connections without Hello: the oldest closed with Busy", limit, closed);
                }
                let handler = Handler::new(shared.clone(), stream, peer, token, newcomer, permit);
                metrics::connections_open(1.0);
                tracker.spawn(async move {
                    // A panic is a bug, but it must cost one connection, not the central: the
                    // store's locks do not poison, and the handler's slot is released on unwind.
                    if AssertUnwindSafe(handler.run()).catch_unwind().await.is_err() {
                        error!(action = "connection", result = "fail", ip = %peer, error = "panic in the connection task");
                    }
                    metrics::connections_open(-1.0);
                });
            }
            Err(e) => {
                if !is_connection_error(&e) {
                    error!(action = "accept", result = "fail", error = %e);
                }
                if !pause_after_accept_error(&e, token).await {
                    return;
                }
            }
        }
    }
}

/// Tells a connection over `LOTTERY_MAX_CONNECTIONS` to come back later, and closes it.
async fn refuse(stream: TcpStream) {
    use futures::SinkExt;
    let mut frames = tokio_util::codec::Framed::new(stream, ServerCodec::new());
    let busy = ServerMessage::Error {
        code: ErrorCode::Busy,
        message: "the central is serving as many connections as it may; try again".into(),
    };
    let _ = tokio::time::timeout(REFUSAL_TIMEOUT, frames.send(busy)).await;
}
