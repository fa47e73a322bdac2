//! The central: `run` accepts agencies on a bound listener until its token is cancelled.
//!
//! Each accepted connection is one task, spawned on a `TaskTracker` and handled by a
//! [`handler::Handler`]. Connections that have not said `Hello` yet are [`Newcomers`]: a small
//! budget of their own, so a flood of them never takes the places of agencies. Tasks share one [`Shared`]: the [`BetStore`] (the bets file behind a
//! `tokio::sync::Mutex`), a `tokio::sync::Barrier` with one party per agency, and a `watch`
//! channel that carries the draw's result to every task waiting for it.

mod handler;
mod metrics;
pub mod session;

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use std::collections::HashMap;
use std::panic::AssertUnwindSafe;
use std::sync::{Mutex as StdMutex, PoisonError};
use tokio::net::{TcpListener, TcpSocket};

use futures::FutureExt;
use tokio::sync::{Barrier, Mutex, OwnedMutexGuard, Semaphore, watch};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{debug, error, info, warn};

use crate::config::ServerConfig;
use crate::domain::{AgencyId, Draw};
use crate::protocol::{ErrorCode, ServerCodec, ServerMessage};
use crate::storage::{BetStore, StorageError, Store, StoreOptions};
use session::Rules;

/// How long shutdown waits for open connections to close before giving up on them.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);
/// Pause after an accept error that is not about one connection (e.g. out of file descriptors).
const ACCEPT_ERROR_PAUSE: Duration = Duration::from_secs(1);
/// How long a refusal (`Busy`) may take to write before the connection is dropped anyway.
const REFUSAL_TIMEOUT: Duration = Duration::from_secs(1);
/// How long a new session of an agency waits for the one it replaces to finish its batch.
const TAKEOVER_TIMEOUT: Duration = Duration::from_secs(10);

/// What stops the central.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error("cannot listen on {addr}: {source}")]
    Bind { addr: SocketAddr, source: io::Error },
    #[error(transparent)]
    Storage(#[from] StorageError),
}

/// Binds `SERVER_IP:SERVER_PORT` with `SERVER_LISTEN_BACKLOG`.
///
/// # Errors
/// `ServerError::Bind` when the address is taken or not local.
pub fn bind(config: &ServerConfig) -> Result<TcpListener, ServerError> {
    let addr = SocketAddr::new(config.ip, config.port);
    let bind = || -> io::Result<TcpListener> {
        let socket = if addr.is_ipv4() { TcpSocket::new_v4()? } else { TcpSocket::new_v6()? };
        socket.set_reuseaddr(true)?;
        socket.bind(addr)?;
        socket.listen(config.listen_backlog)
    };
    bind().map_err(|source| ServerError::Bind { addr, source })
}

/// Serves agencies on `listener` until `token` is cancelled, then closes every connection,
/// flushes the bets file and returns.
///
/// # Errors
/// `ServerError::Storage` when the bets file cannot be opened or flushed.
pub async fn run(
    listener: TcpListener,
    config: ServerConfig,
    token: CancellationToken,
) -> Result<(), ServerError> {
    let options = StoreOptions {
        sync: config.fsync,
        max_bets_per_agency: config.max_bets_per_agency,
        min_free_bytes: config.min_free_bytes,
    };
    let (store, recovery) = BetStore::open_with(&config.bets_file, options).await?;
    info!(
        action = "recovery",
        result = "success",
        path = %store.path().display(),
        bytes = recovery.bets_len,
        batches = recovery.batches,
        cut_bets_bytes = recovery.cut_bets_bytes,
        cut_journal_bytes = recovery.cut_journal_bytes,
        ready = recovery.ready.len(),
        drawn = recovery.drawn,
        adopted = recovery.adopted,
        journal_converted = recovery.journal_converted,
    );
    let tracker = TaskTracker::new();
    let mut shared = Shared::new(config, store.into(), tracker.clone(), token.clone());
    shared.draw_recorded = recovery.drawn;
    let shared = Arc::new(shared);
    // Agencies that were ready before a restart keep their barrier party.
    ::metrics::gauge!("lottery_agencies_ready").set(recovery.ready.len() as f64);
    for agency in recovery.ready {
        if shared.config.expects(agency.get()) {
            shared.join_barrier();
        } else {
            warn!(action = "recovery", result = "fail", agency = %agency, error = "ready agency outside LOTTERY_AGENCIES: ignored");
        }
    }

    if let Some(addr) = shared.config.metrics_addr
        && let Some(handle) = self::metrics::install()
    {
        let listener =
            TcpListener::bind(addr).await.map_err(|source| ServerError::Bind { addr, source })?;
        let bound = listener.local_addr().map_err(|source| ServerError::Bind { addr, source })?;
        info!(action = "metrics", result = "success", address = %bound, path = "/metrics");
        let serving = self::metrics::serve(listener, handle, tracker.clone(), token.clone());
        tracker.spawn(serving);
    }

    accept_loop(&listener, &shared, &tracker, &token).await;

    drop(listener);
    info!(action = "shutdown", result = "in_progress", step = "listener closed");
    tracker.close();
    if tokio::time::timeout(SHUTDOWN_GRACE, tracker.wait()).await.is_ok() {
        info!(action = "shutdown", result = "in_progress", step = "connections closed");
    } else {
        let open = tracker.len();
        warn!(action = "shutdown", result = "in_progress", step = "connections abandoned", open);
    }
    // The store's committer outlives the connections: their last batches commit before it stops.
    shared.store.close().await;
    let stats = shared.store.stats();
    info!(
        action = "shutdown",
        result = "in_progress",
        step = "bets file closed",
        commits = stats.groups,
        fsyncs = stats.syncs
    );
    info!(action = "shutdown", result = "success");
    Ok(())
}

async fn accept_loop(
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
                let handler = handler::Handler::new(shared.clone(), stream, peer, token, newcomer);
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
            Err(e) if is_connection_error(&e) => {}
            Err(e) => {
                error!(action = "accept", result = "fail", error = %e);
                if token.run_until_cancelled(tokio::time::sleep(ACCEPT_ERROR_PAUSE)).await.is_none()
                {
                    return;
                }
            }
        }
    }
}

/// Tells a connection over `LOTTERY_MAX_CONNECTIONS` to come back later, and closes it.
async fn refuse(stream: tokio::net::TcpStream) {
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
    waiting: std::collections::VecDeque<(u64, CancellationToken)>,
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
    fn new(limit: usize) -> Arc<Self> {
        Arc::new(Self { limit, queue: StdMutex::default() })
    }

    /// A place for a new connection, and whether the oldest one was evicted to make it.
    fn admit(self: &Arc<Self>) -> (Newcomer, bool) {
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

fn is_connection_error(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::ConnectionRefused
            | io::ErrorKind::ConnectionAborted
            | io::ErrorKind::ConnectionReset
    )
}

/// State every connection task shares.
#[derive(Debug)]
pub(crate) struct Shared {
    config: ServerConfig,
    rules: Rules,
    store: Store,
    sessions: Sessions,
    newcomers: Arc<Newcomers>,
    /// Connections without `Hello` that ended with an error: one WARN line a second for all.
    stranger_failures: StdMutex<Throttle>,
    /// One party per agency; each agency waits on it once, at its first `ReadyForLottery`.
    barrier: Barrier,
    /// Set once, by the barrier's leader, when the draw has run.
    draw: watch::Sender<DrawStatus>,
    /// Where the barrier parties run, and what stops them.
    tasks: TaskTracker,
    token: CancellationToken,
    /// The journal held the draw when this process started: running it again restores it.
    draw_recorded: bool,
}

#[derive(Debug, Clone)]
enum DrawStatus {
    Pending,
    Done(Arc<Draw>),
    Failed(Arc<str>),
}

impl Shared {
    fn new(
        config: ServerConfig,
        store: Store,
        tasks: TaskTracker,
        token: CancellationToken,
    ) -> Self {
        let barrier = Barrier::new(config.agencies.get() as usize);
        let (draw, _) = watch::channel(DrawStatus::Pending);
        let rules = Rules::from_config(&config);
        let sessions = Sessions::default();
        let newcomers = Newcomers::new(config.max_pending_hellos.get());
        Self {
            config,
            rules,
            store,
            sessions,
            newcomers,
            stranger_failures: StdMutex::default(),
            barrier,
            draw,
            tasks,
            token,
            draw_recorded: false,
        }
    }

    /// Adds an agency's party to the barrier, once it is durably ready (or was, before a
    /// restart). The party is a task of its own, not the agency's connection: a connection can
    /// end (closed, replaced by a newer one) at any moment, and the agency must still count,
    /// exactly once. When the last party arrives, it runs the draw.
    fn join_barrier(self: &Arc<Self>) {
        let shared = self.clone();
        self.tasks.spawn(async move {
            if let Some(arrival) = shared.token.run_until_cancelled(shared.barrier.wait()).await
                && arrival.is_leader()
            {
                shared.run_draw().await;
            }
        });
    }

    /// One line per agency (bets, batches, winners) and one with the totals and how long this
    /// process ingested for (first stored batch → draw).
    async fn log_summary(&self, draw: &Draw) {
        let agencies = self.store.agencies().await;
        let mut batches = 0;
        for (agency, progress) in &agencies {
            batches += progress.last_seq;
            let ganadores = draw.winners_for(*agency).len();
            info!(action = "resumen", result = "success", agency = %agency, apuestas = progress.stored_bets, lotes = progress.last_seq, ganadores);
        }
        let ingest = self.store.first_commit().map(|t| t.elapsed().as_millis());
        let ingesta_ms =
            ingest.map_or_else(|| "none (restarted after the upload)".into(), |ms| ms.to_string());
        info!(action = "resumen_total", result = "success", agencias = agencies.len(), apuestas = draw.bets(), lotes = batches, ganadores = draw.total_winners(), ingesta_ms = %ingesta_ms);
    }

    /// Runs the draw (the barrier's leader does, once per process) and publishes the result.
    /// `sorteo` is logged once per lottery: a draw the journal already held is restored, and
    /// logged as `sorteo_restaurado`.
    async fn run_draw(&self) {
        let status = match self.store.draw().await {
            Ok(draw) => {
                let action = if self.draw_recorded { "sorteo_restaurado" } else { "sorteo" };
                info!(
                    action,
                    result = "success",
                    apuestas = draw.bets(),
                    ganadores = draw.total_winners()
                );
                self.log_summary(&draw).await;
                ::metrics::gauge!("lottery_draw_done").set(1.0);
                DrawStatus::Done(Arc::new(draw))
            }
            Err(e) => {
                error!(action = "sorteo", result = "fail", error = %e);
                DrawStatus::Failed(e.to_string().into())
            }
        };
        self.draw.send_replace(status);
    }
}

/// Which connection is each agency's session. One agency has one live session: a newer
/// connection (after a network cut the old one may linger, half open) fences the older one,
/// whose batch in flight finishes first, so two connections never interleave batches.
#[derive(Debug, Default)]
pub(crate) struct Sessions(StdMutex<HashMap<AgencyId, Slot>>);

#[derive(Debug)]
struct Slot {
    /// Held by the live session for as long as it lives.
    lock: Arc<Mutex<()>>,
    holder: Option<CancellationToken>,
}

impl Sessions {
    /// Makes the connection with `token` the agency's session: cancels the current one and waits
    /// (up to `TAKEOVER_TIMEOUT`) for it to end. The guard is the session's; `None` when the old
    /// one did not end in time (e.g. stuck writing to a peer that never reads, which the write
    /// timeout ends soon): the store's own lock and sequence checks still keep its batches
    /// apart, so the new session goes ahead.
    async fn claim(
        &self,
        agency: AgencyId,
        token: &CancellationToken,
    ) -> Option<OwnedMutexGuard<()>> {
        let (lock, previous) = {
            let mut slots = self.0.lock().unwrap_or_else(PoisonError::into_inner);
            let slot = slots
                .entry(agency)
                .or_insert_with(|| Slot { lock: Arc::new(Mutex::new(())), holder: None });
            (slot.lock.clone(), slot.holder.replace(token.clone()))
        };
        if let Some(previous) = previous {
            previous.cancel();
        }
        let claimed = tokio::time::timeout(TAKEOVER_TIMEOUT, lock.lock_owned()).await.ok();
        if claimed.is_none() {
            warn!(action = "hello", result = "in_progress", agency = %agency, error = "the previous session did not end in time");
        }
        claimed
    }
}
