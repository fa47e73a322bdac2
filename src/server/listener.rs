//! The accept loop: connection budgets (`LOTTERY_MAX_CONNECTIONS` and the [`Newcomers`] without
//! `Hello`), refusals, and one task per connection, spawned on the central's `TaskTracker`.

use std::collections::VecDeque;
use std::io;
use std::panic::AssertUnwindSafe;
use std::sync::{Arc, Mutex as StdMutex, PoisonError};
use std::time::Duration;

use futures::FutureExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{debug, error, warn};

use super::Shared;
use super::handler::Handler;
use crate::protocol::{ErrorCode, ServerCodec, ServerMessage};

/// Pause after an accept error that is not about one connection (e.g. out of file descriptors).
const ACCEPT_ERROR_PAUSE: Duration = Duration::from_secs(1);
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
                    tracker.spawn(refuse(stream));
                    continue;
                };
                let (newcomer, evicted_one) = shared.newcomers.admit();
                if evicted_one && let Some(closed) = evicted.due() {
                    let limit = shared.config.max_pending_hellos.get();
                    warn!(action = "connection", result = "fail", ip = %peer, error = "too many connections without Hello: the oldest closed with Busy", limit, closed);
                }
                let handler = Handler::new(shared.clone(), stream, peer, token, newcomer);
                ::metrics::gauge!("lottery_connections_open").increment(1.0);
                tracker.spawn(async move {
                    // A panic is a bug, but it must cost one connection, not the central: the
                    // store's locks do not poison, and the permit is released on unwind.
                    if AssertUnwindSafe(handler.run()).catch_unwind().await.is_err() {
                        error!(action = "connection", result = "fail", ip = %peer, error = "panic in the connection task");
                    }
                    ::metrics::gauge!("lottery_connections_open").decrement(1.0);
                    drop(permit);
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

/// Keeps a kind of event that anyone can cause (refused, evicted or failed connections of peers
/// that never said `Hello`) to one log line a second, so a flood cannot flood the log.
#[derive(Debug, Default)]
pub(crate) struct Throttle {
    since_log: u64,
    last_log: Option<tokio::time::Instant>,
}

impl Throttle {
    /// Counts one more event. When a line is due (the first, then at most one a second),
    /// returns how many events it stands for.
    pub(crate) fn due(&mut self) -> Option<u64> {
        self.since_log += 1;
        let due = self.last_log.is_none_or(|at| at.elapsed() >= Duration::from_secs(1));
        due.then(|| {
            self.last_log = Some(tokio::time::Instant::now());
            std::mem::take(&mut self.since_log)
        })
    }
}

/// Connections that have not completed `Hello`, oldest first. Their number is bounded by
/// `LOTTERY_MAX_PENDING_HELLOS`: a new connection beyond it closes the oldest one (with `Busy`)
/// rather than being refused, so however fast a flood of connections that never say `Hello`
/// comes, an agency that says it right away gets through. Once `Hello` is accepted the connection
/// leaves (one session per agency bounds the rest).
#[derive(Debug)]
pub(crate) struct Newcomers {
    limit: usize,
    queue: StdMutex<NewcomerQueue>,
}

#[derive(Debug, Default)]
struct NewcomerQueue {
    next_id: u64,
    waiting: VecDeque<(u64, CancellationToken)>,
}

/// One connection's place among the [`Newcomers`]; dropping it leaves.
#[derive(Debug)]
pub(crate) struct Newcomer {
    id: u64,
    /// Cancelled when a newer connection took this place.
    pub(crate) evicted: CancellationToken,
    newcomers: Arc<Newcomers>,
}

impl Newcomers {
    pub(super) fn new(limit: usize) -> Arc<Self> {
        Arc::new(Self { limit, queue: StdMutex::default() })
    }

    /// A place for a new connection, and whether the oldest one was evicted to make it.
    pub(super) fn admit(self: &Arc<Self>) -> (Newcomer, bool) {
        let evicted = CancellationToken::new();
        let mut queue = self.queue.lock().unwrap_or_else(PoisonError::into_inner);
        let oldest =
            if queue.waiting.len() >= self.limit { queue.waiting.pop_front() } else { None };
        let evicted_one = oldest.map(|(_, token)| token.cancel()).is_some();
        let id = queue.next_id;
        queue.next_id += 1;
        queue.waiting.push_back((id, evicted.clone()));
        (Newcomer { id, evicted, newcomers: self.clone() }, evicted_one)
    }
}

impl Drop for Newcomer {
    fn drop(&mut self) {
        let mut queue = self.newcomers.queue.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(i) = queue.waiting.iter().position(|(id, _)| *id == self.id) {
            queue.waiting.remove(i);
        }
    }
}

/// What an accept loop does after an accept error: goes on at once when the error was about one
/// connection (reset, aborted, refused); otherwise (e.g. out of file descriptors) pauses for
/// `ACCEPT_ERROR_PAUSE` rather than spin a core. False when `token` was cancelled meanwhile.
pub(super) async fn pause_after_accept_error(e: &io::Error, token: &CancellationToken) -> bool {
    is_connection_error(e)
        || token.run_until_cancelled(tokio::time::sleep(ACCEPT_ERROR_PAUSE)).await.is_some()
}

fn is_connection_error(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::ConnectionRefused
            | io::ErrorKind::ConnectionAborted
            | io::ErrorKind::ConnectionReset
    )
}
