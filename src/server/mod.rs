//! The central: `run` accepts agencies on a bound listener until its token is cancelled.
//!
//! # Layout
//! - `mod.rs`: [`bind`], [`run`] (start-up, shutdown order) and `Shared`, the state every
//!   connection task shares: the configuration, the [`Store`], the sessions, the lottery;
//! - `listener.rs`: the accept loop, refusals and the connection budgets (`Newcomers`);
//! - `handler.rs`: one connection's I/O loop under deadlines;
//! - [`session`]: the connection's protocol state machine, without I/O;
//! - `replies.rs`: the replies owed to an agency, and each batch's acknowledgement;
//! - `sessions.rs`: one session per agency (a newer connection fences the older one);
//! - `lottery.rs`: ready → barrier → draw → winners;
//! - `metrics.rs`: the Prometheus endpoint.
//!
//! Shutdown order: stop accepting, cancel every connection, wait for them (up to
//! [`SHUTDOWN_GRACE`]), then close the store, whose committer stores the last batches first.

mod handler;
mod listener;
mod lottery;
mod metrics;
mod replies;
pub mod session;
mod sessions;

use std::io::{self, Write as _};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex as StdMutex};
use std::time::Duration;

use tokio::net::{TcpListener, TcpSocket};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{info, warn};

use crate::config::ServerConfig;
use crate::domain::AgencyId;
use crate::storage::postgres::PgStore;
use crate::storage::{BetStore, StorageError, Store, StoreOptions};
use listener::{Newcomers, Throttle, accept_loop};
use lottery::Lottery;
use session::Rules;
use sessions::Sessions;

/// How long shutdown waits for open connections to close before giving up on them.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

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
    let (store, ready) = open_store(&config, options).await?;
    let tracker = TaskTracker::new();
    let lottery = Lottery::new(config.agencies.get() as usize);
    let shared = Arc::new(Shared::new(config, store, lottery, tracker.clone(), token.clone()));
    // Agencies that were ready before a restart keep their barrier party.
    ::metrics::gauge!("lottery_agencies_ready").set(ready.len() as f64);
    for agency in ready {
        if shared.config.expects(agency.get()) {
            shared.join_barrier(agency);
        } else {
            warn!(action = "recovery", result = "fail", agency = %agency, error = "ready agency outside LOTTERY_AGENCIES: ignored");
        }
    }
    shared.watch_ready();

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
        step = if shared.store.is_shared() { "database closed" } else { "bets file closed" },
        commits = stats.groups,
        fsyncs = stats.syncs
    );
    info!(action = "shutdown", result = "success");
    Ok(())
}

/// Opens the store the configuration names (PostgreSQL when `LOTTERY_DATABASE_URL` is set,
/// else the bets file), logs what it found, and returns it with the agencies already ready.
async fn open_store(
    config: &ServerConfig,
    options: StoreOptions,
) -> Result<(Store, Vec<AgencyId>), ServerError> {
    if let Some(url) = &config.database_url {
        let central = format!("{}:{} (pid {})", hostname(), config.port, std::process::id());
        let (store, opened) = PgStore::open(url, options, central).await?;
        store.claim_agencies(config.agencies.get()).await?;
        info!(
            action = "database",
            result = "success",
            target = %store.target(),
            schema_version = opened.schema_version,
            schema_found = opened.schema_found,
            batches = opened.batches,
            ready = opened.ready.len(),
            drawn = opened.drawn,
        );
        return Ok((store.into(), opened.ready));
    }
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
    Ok((store.into(), recovery.ready))
}

/// Writes the stored bets to `out` as the original bets file (`lottery-server export`): with
/// PostgreSQL, every stored bet in the order stored, encoded as the file store encodes them;
/// with the file store, the committed part of the bets file (after the same recovery a start
/// runs, under the same lock: a central running on the file must be stopped first). Returns the
/// bytes written.
///
/// # Errors
/// The store's: it cannot be opened or read, or `out` cannot be written.
pub async fn export(
    config: &ServerConfig,
    out: &mut impl std::io::Write,
) -> Result<u64, ServerError> {
    let options = StoreOptions {
        sync: config.fsync,
        max_bets_per_agency: config.max_bets_per_agency,
        min_free_bytes: 0,
    };
    let mut counted = CountingWriter { out, bytes: 0 };
    let write_error = |source| StorageError::Write { path: "the export's output".into(), source };
    if let Some(url) = &config.database_url {
        let (store, _) = PgStore::open(url, options, format!("{} export", hostname())).await?;
        let exported = store.export(&mut counted).await;
        store.close().await;
        exported?;
    } else {
        let (store, recovery) = BetStore::open_with(&config.bets_file, options).await?;
        let path = store.path().to_owned();
        let copied = (|| -> Result<(), StorageError> {
            let file = std::fs::File::open(&path)
                .map_err(|source| StorageError::Open { path: path.clone(), source })?;
            let mut committed = std::io::Read::take(file, recovery.bets_len);
            std::io::copy(&mut committed, &mut counted).map_err(write_error)?;
            Ok(())
        })();
        store.close().await;
        copied?;
    }
    counted.flush().map_err(write_error)?;
    Ok(counted.bytes)
}

/// A writer that counts what goes through it.
struct CountingWriter<'a, W> {
    out: &'a mut W,
    bytes: u64,
}

impl<W: std::io::Write> std::io::Write for CountingWriter<'_, W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let written = self.out.write(buf)?;
        self.bytes += written as u64;
        Ok(written)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.out.flush()
    }
}

/// This machine's name, for the `draw` row (which central recorded it).
fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|name| name.trim().to_owned())
        .unwrap_or_else(|_| "unknown".to_owned())
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
    lottery: Lottery,
    /// Where the barrier parties run, and what stops them.
    tasks: TaskTracker,
    token: CancellationToken,
}

impl Shared {
    fn new(
        config: ServerConfig,
        store: Store,
        lottery: Lottery,
        tasks: TaskTracker,
        token: CancellationToken,
    ) -> Self {
        let rules = Rules::from_config(&config);
        let newcomers = Newcomers::new(config.max_pending_hellos.get());
        Self {
            config,
            rules,
            store,
            sessions: Sessions::default(),
            newcomers,
            stranger_failures: StdMutex::default(),
            lottery,
            tasks,
            token,
        }
    }
}
