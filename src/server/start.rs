//! Start-up and shutdown: [`bind`], [`run`] (open the store, serve, and stop in order), and the
//! operator's commands [`export`] and [`verify`].
//!
//! Shutdown order: stop accepting, cancel every connection, wait for them (up to
//! [`SHUTDOWN_GRACE`]), then close the store, whose committer stores the last batches first.

use std::io::{self, Write as _};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::{TcpListener, TcpSocket};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{info, warn};

use super::activity::Activity;
use super::http::{self, Board, Sources};
use super::listener::accept_loop;
use super::lottery::Lottery;
use super::metrics;
use super::shared::Shared;
use crate::config::ServerConfig;
use crate::domain::AgencyId;
use crate::storage::{self, Location, StorageError, Store, StoreOptions, Verified};

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
/// flushes the store and returns.
///
/// # Errors
/// `ServerError::Storage` when the store cannot be opened.
pub async fn run(
    listener: TcpListener,
    config: ServerConfig,
    token: CancellationToken,
) -> Result<(), ServerError> {
    let http = match config.http_addr {
        Some(addr) => Some(bind_http(addr).await?),
        None => None,
    };
    run_with_http(listener, http, config, token).await
}

/// Binds the HTTP listener (`HTTP_ADDR`).
///
/// # Errors
/// `ServerError::Bind` when the address is taken or not local.
pub async fn bind_http(addr: SocketAddr) -> Result<TcpListener, ServerError> {
    TcpListener::bind(addr).await.map_err(|source| ServerError::Bind { addr, source })
}

/// [`run`], with the HTTP listener (the status page, health, metrics) already bound, or none:
/// it answers from the start, `/readyz` saying 503 until the store is open.
///
/// # Errors
/// `ServerError::Storage` when the store cannot be opened.
pub async fn run_with_http(
    listener: TcpListener,
    http: Option<TcpListener>,
    config: ServerConfig,
    token: CancellationToken,
) -> Result<(), ServerError> {
    let tracker = TaskTracker::new();
    let port = listener.local_addr().map_or(config.port, |a| a.port());
    let central = format!("{}:{port} (pid {})", hostname(), std::process::id());
    let board = Board::new(central.clone(), config.agencies.get());
    let serving_http = http.is_some();
    // The HTTP listener stops with the central, and also when it returns early (a store that
    // cannot be opened).
    let http_stop = token.child_token();
    let _http_stop = http_stop.clone().drop_guard();
    if let Some(http) = http {
        let addr = http.local_addr().map_err(|source| {
            let addr = config.http_addr.unwrap_or_else(|| SocketAddr::new(config.ip, 0));
            ServerError::Bind { addr, source }
        })?;
        info!(action = "http", result = "success", address = %addr, paths = "/ /status.json /healthz /readyz /metrics");
        // The line operators and scripts knew from METRICS_ADDR's time.
        info!(action = "metrics", result = "success", address = %addr, path = "/metrics");
        let recorder = metrics::recorder();
        metrics::start(&config);
        tracker.spawn(http::serve(
            http,
            board.clone(),
            recorder,
            tracker.clone(),
            http_stop.clone(),
        ));
    }
    // Opening may wait a minute for a database that is not up yet: a signal ends the wait.
    let opening = async {
        let (store, opened) = Store::open(location(&config, central), options(&config)).await?;
        store.claim_agencies(config.agencies.get()).await?;
        Ok::<_, StorageError>((store, opened))
    };
    let Some(opening) = token.run_until_cancelled(opening).await else {
        info!(action = "shutdown", result = "success", step = "stopped before the store opened");
        return Ok(());
    };
    let (store, opened) = opening?;
    opened.log(&store);
    let store = Arc::new(store);
    if serving_http {
        metrics::refresh(&store);
    }
    let lottery =
        Arc::new(Lottery::new(store.clone(), config.agencies, tracker.clone(), token.clone()));
    // Agencies that were ready before a restart keep their barrier party.
    lottery.restore(opened.ready());
    lottery.watch_ready();
    let activity = Arc::new(Activity::default());
    if serving_http {
        let sources =
            Sources { store: store.clone(), lottery: lottery.clone(), activity: activity.clone() };
        tracker.spawn(board.run(sources, token.clone()));
    }
    let shared = Arc::new(Shared::new(config, store, lottery, activity));

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

/// The store the configuration names: PostgreSQL when `LOTTERY_DATABASE_URL` is set, else the
/// bets file. `central` names this central in the database.
fn location(config: &ServerConfig, central: String) -> Location {
    match &config.database_url {
        Some(url) => Location::Database { url: url.clone(), central },
        None => Location::File(config.bets_file.clone()),
    }
}

fn options(config: &ServerConfig) -> StoreOptions {
    StoreOptions {
        sync: config.fsync,
        max_bets_per_agency: config.max_bets_per_agency,
        min_free_bytes: config.min_free_bytes,
        journal_compact_bytes: config.journal_compact_bytes,
    }
}

/// Writes the stored bets to `out` as the original bets file (`lottery-server export`): with
/// PostgreSQL, every stored bet in the order stored, encoded as the file store encodes them;
/// with the file store, the committed part of the bets file, checked as a start checks it and
/// changing nothing (a central running on the file must be stopped first). With `agency`, only
/// its rows, in the order stored (`export --agency K`: their SHA-256 is the agency's receipt).
/// Returns the bytes written.
///
/// # Errors
/// The store's: it cannot be opened, read or checked, or `out` cannot be written.
pub async fn export(
    config: &ServerConfig,
    agency: Option<AgencyId>,
    out: &mut impl std::io::Write,
) -> Result<u64, ServerError> {
    let options = StoreOptions { min_free_bytes: 0, ..options(config) };
    let location = location(config, format!("{} export", hostname()));
    let mut counted = CountingWriter { out, bytes: 0 };
    Store::export(location, options, agency, &mut counted).await?;
    let write_error = |source| StorageError::Write { path: "the export's output".into(), source };
    counted.flush().map_err(write_error)?;
    Ok(counted.bytes)
}

/// Checks the bets file `BETS_FILE` and its journal as a start would, changing nothing
/// (`lottery-server verify`).
///
/// # Errors
/// What a start would refuse with, naming the damage; `Locked` while a central runs on it.
pub async fn verify(config: &ServerConfig) -> Result<Verified, ServerError> {
    Ok(storage::verify(config.bets_file.clone()).await?)
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
