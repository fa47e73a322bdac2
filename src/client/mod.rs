//! The agency side: connect, upload bets in batches, declare readiness, receive winners.
//!
//! [`Connection`] speaks the protocol on one socket; [`run`] is the whole agency session the
//! `lottery-client` binary performs. The agency file is read on a blocking thread and handed over
//! in ready-made batches through a small channel, so reading overlaps sending and memory holds a
//! few batches, never the file (see [`reader`]).

mod pacer;
mod progress;
mod reader;

use pacer::Pacer;
use progress::Progress;
use reader::spawn_reader;
pub use reader::{CHECK_REPORTED_ROWS, CheckReport, check_file, read_batches};

use std::collections::VecDeque;
use std::io;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use futures::{SinkExt, StreamExt};
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_util::codec::Framed;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use crate::config::{BetSource, ClientConfig};
use crate::domain::AgencyId;
use crate::protocol::{
    ClientCodec, ClientMessage, CodecError, ErrorCode, PROTOCOL_VERSION, RejectReason,
    ServerMessage, WireBet,
};

/// First pause between connection attempts; it doubles up to `MAX_RETRY_DELAY`.
const FIRST_RETRY_DELAY: Duration = Duration::from_millis(10);
const MAX_RETRY_DELAY: Duration = Duration::from_secs(2);

/// Why an agency session failed.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("cannot connect to the central at {address}: {source}")]
    Connect { address: String, source: io::Error },
    #[error("cannot reach the central at {address} (tried for {waited:.1?}): {last}")]
    Unreachable { address: String, waited: Duration, last: Box<ClientError> },
    #[error("no progress for {waited:.1?}, giving up: {last}")]
    Stalled { waited: Duration, last: Box<ClientError> },
    #[error(transparent)]
    Codec(#[from] CodecError),
    #[error("the central closed the connection")]
    Closed,
    #[error("the central ended the session ({code:?}): {message}")]
    Server { code: ErrorCode, message: String },
    #[error("the central rejected batch {seq} ({reason:?}): {message}")]
    Rejected { seq: u64, reason: RejectReason, message: String },
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
    /// Whether reconnecting may help: the connection broke, the central restarted or is
    /// shutting down, or it could not write to disk for a moment.
    pub fn is_transient(&self) -> bool {
        match self {
            Self::Connect { .. } | Self::Closed => true,
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

/// One protocol session with the central, past its `Hello`.
#[derive(Debug)]
pub struct Connection {
    frames: Framed<TcpStream, ClientCodec>,
    next_seq: u64,
    stored_bets: u64,
}

impl Connection {
    /// Connects to `address` (`host:port`) once and introduces itself as `agency`, with its
    /// `token` when the central requires one.
    ///
    /// # Errors
    /// `Connect` when the central cannot be reached; `Server` when it refuses the agency.
    pub async fn connect(
        address: &str,
        agency: AgencyId,
        token: Option<&str>,
    ) -> Result<Self, ClientError> {
        let stream = TcpStream::connect(address)
            .await
            .map_err(|source| ClientError::Connect { address: address.to_owned(), source })?;
        stream.set_nodelay(true).map_err(CodecError::Io)?;
        let mut frames = Framed::new(stream, ClientCodec::new());
        frames
            .send(ClientMessage::Hello {
                version: PROTOCOL_VERSION,
                agency: agency.get(),
                token: token.map(str::to_owned),
            })
            .await?;
        match frames.next().await {
            Some(Ok(ServerMessage::Welcome { next_seq, stored_bets, .. })) => {
                Ok(Self { frames, next_seq, stored_bets })
            }
            Some(Ok(ServerMessage::Error { code, message })) => {
                Err(ClientError::Server { code, message })
            }
            Some(Ok(other)) => Err(unexpected("Welcome", &other)),
            Some(Err(e)) => Err(e.into()),
            None => Err(ClientError::Closed),
        }
    }

    /// Like [`Connection::connect`] to `config`'s central as its agency, retrying with backoff
    /// while the central is unreachable, busy, or drops the connection before its `Welcome`,
    /// for at most `config.connect_timeout`.
    ///
    /// # Errors
    /// `Unreachable` once `timeout` has passed; a non-transient error at once.
    pub async fn connect_with_retry(
        config: &ClientConfig,
        cancel: &CancellationToken,
    ) -> Result<Self, ClientError> {
        let (address, timeout) = (config.server_address.as_str(), config.connect_timeout);
        let started = Instant::now();
        let mut delay = FIRST_RETRY_DELAY;
        loop {
            let connect = Self::connect(address, config.id, config.token.as_deref());
            let attempt = cancel.run_until_cancelled(connect).await;
            match attempt.ok_or(ClientError::Cancelled)? {
                Err(e) if e.is_transient() && started.elapsed() + delay < timeout => {
                    warn!(action = "connect", result = "in_progress", address, retry_in_ms = delay.as_millis() as u64, error = %e);
                    pause(delay, cancel).await?;
                    delay = (delay * 2).min(MAX_RETRY_DELAY);
                }
                Err(e) if e.is_transient() => {
                    let waited = started.elapsed();
                    return Err(ClientError::Unreachable {
                        address: address.to_owned(),
                        waited,
                        last: Box::new(e),
                    });
                }
                other => return other,
            }
        }
    }

    /// The first batch sequence number the central has not stored for this agency.
    pub fn next_seq(&self) -> u64 {
        self.next_seq
    }

    /// How many of this agency's bets the central holds.
    pub fn stored_bets(&self) -> u64 {
        self.stored_bets
    }

    /// Sends batch `seq` and waits for its acknowledgement; returns the count the central stored.
    ///
    /// # Errors
    /// `Rejected` when the central refuses the batch (nothing of it is stored).
    pub async fn send_batch(&mut self, seq: u64, bets: &[WireBet]) -> Result<u32, ClientError> {
        for bet in bets {
            self.frames.feed(ClientMessage::Bet(bet.clone())).await?;
        }
        self.frames.send(ClientMessage::BetBatchEnd { seq }).await?;
        self.receive_ack(seq).await
    }

    /// Queues batch `seq` as one `Batch` frame, to go out with the next [`Connection::flush`].
    ///
    /// # Errors
    /// When the frame cannot be written.
    pub async fn feed_batch(&mut self, seq: u64, bets: Vec<WireBet>) -> Result<(), ClientError> {
        Ok(self.frames.feed(ClientMessage::Batch { seq, bets }).await?)
    }

    /// Sends whatever was queued.
    ///
    /// # Errors
    /// When the socket fails.
    pub async fn flush(&mut self) -> Result<(), ClientError> {
        Ok(self.frames.flush().await?)
    }

    /// Waits for the acknowledgement of batch `seq` (the oldest in flight); returns its count.
    ///
    /// # Errors
    /// `Rejected` when the central refuses the batch; `Unexpected` for any other reply.
    pub async fn receive_ack(&mut self, seq: u64) -> Result<u32, ClientError> {
        match self.receive().await? {
            ServerMessage::BatchAccepted { seq: acked, count } if acked == seq => Ok(count),
            ServerMessage::BatchRejected { seq, reason, message } => {
                Err(ClientError::Rejected { seq, reason, message })
            }
            other => Err(unexpected("BatchAccepted", &other)),
        }
    }

    /// Declares every bet sent and waits for this agency's winners (after the draw).
    ///
    /// # Errors
    /// `Server` when the central refuses or cannot run the draw.
    pub async fn winners(&mut self) -> Result<Vec<String>, ClientError> {
        self.frames.send(ClientMessage::ReadyForLottery).await?;
        let mut winners = Vec::new();
        loop {
            match self.receive().await? {
                ServerMessage::Winners { documents, last } => {
                    winners.extend(documents);
                    if last {
                        return Ok(winners);
                    }
                }
                other => return Err(unexpected("Winners", &other)),
            }
        }
    }

    /// Checks that the central answers.
    ///
    /// # Errors
    /// Any failure to get a `Pong`.
    pub async fn ping(&mut self) -> Result<(), ClientError> {
        self.frames.send(ClientMessage::Ping).await?;
        match self.receive().await? {
            ServerMessage::Pong => Ok(()),
            other => Err(unexpected("Pong", &other)),
        }
    }

    async fn receive(&mut self) -> Result<ServerMessage, ClientError> {
        match self.frames.next().await {
            None => Err(ClientError::Closed),
            Some(Err(e)) => Err(e.into()),
            Some(Ok(ServerMessage::Error { code, message })) => {
                Err(ClientError::Server { code, message })
            }
            Some(Ok(message)) => Ok(message),
        }
    }
}

/// Checks that a central listens at `address` and answers the protocol (`Ping` → `Pong`, no
/// `Hello`): the container health check.
///
/// # Errors
/// `Connect` when nothing listens there; any other error when the answer is not `Pong`.
pub async fn ping(address: &str) -> Result<(), ClientError> {
    let stream = TcpStream::connect(address)
        .await
        .map_err(|source| ClientError::Connect { address: address.to_owned(), source })?;
    let mut frames = Framed::new(stream, ClientCodec::new());
    frames.send(ClientMessage::Ping).await?;
    match frames.next().await {
        Some(Ok(ServerMessage::Pong)) => Ok(()),
        Some(Ok(other)) => Err(unexpected("Pong", &other)),
        Some(Err(e)) => Err(e.into()),
        None => Err(ClientError::Closed),
    }
}

fn unexpected(expected: &'static str, got: &ServerMessage) -> ClientError {
    ClientError::Unexpected { expected, got: format!("{got:?}") }
}

/// `future`'s output, or `Cancelled` if `token` is cancelled first.
async fn cancellable<F: Future>(
    token: &CancellationToken,
    future: F,
) -> Result<F::Output, ClientError> {
    token.run_until_cancelled(future).await.ok_or(ClientError::Cancelled)
}

async fn pause(delay: Duration, token: &CancellationToken) -> Result<(), ClientError> {
    token.run_until_cancelled(tokio::time::sleep(delay)).await.ok_or(ClientError::Cancelled)
}

/// What an agency's run did.
#[derive(Debug, Default)]
pub struct Outcome {
    /// The agency's winning documents.
    pub winners: Vec<String>,
    /// Bets acknowledged during this run (bets stored by an earlier run are not counted).
    pub sent_bets: u64,
    /// Each batch's time from being sent to being acknowledged.
    pub ack_latencies: Vec<Duration>,
    /// When the last batch was acknowledged and `ReadyForLottery` went out.
    pub uploaded_at: Option<std::time::Instant>,
    /// Connections that broke and were resumed.
    pub reconnects: u32,
}

/// Runs the agency: uploads every bet of `config.source`, then waits for and returns its winners.
/// Stops early, with `ClientError::Cancelled`, when `token` is cancelled.
///
/// Up to `config.batch_window` batches are in flight at once. When the connection breaks (the
/// central restarts, the network drops, the central cannot write for a moment) it reconnects
/// with backoff and resumes after the bets the central's `Welcome` says it holds, re-reading its
/// file from there. It gives up when nothing was acknowledged for `config.connect_timeout`.
///
/// # Errors
/// Any `ClientError`; batches acknowledged before it stay stored at the central.
pub async fn run(config: &ClientConfig, token: &CancellationToken) -> Result<Outcome, ClientError> {
    run_with_progress(config, token, &AtomicU64::new(0)).await
}

/// [`run`], adding every acknowledged bet to `acked_bets` as it goes (for progress displays).
///
/// # Errors
/// As [`run`].
pub async fn run_with_progress(
    config: &ClientConfig,
    token: &CancellationToken,
    acked_bets: &AtomicU64,
) -> Result<Outcome, ClientError> {
    let mut outcome = Outcome::default();
    let total = match &config.source {
        BetSource::File(path) => {
            let path = path.clone();
            tokio::task::spawn_blocking(move || progress::count_rows(&path)).await.unwrap_or(0)
        }
        BetSource::Single(_) => 1,
    };
    let mut progress = Progress::new(total);
    let mut last_progress = Instant::now();
    let mut delay = FIRST_RETRY_DELAY;
    let mut pacer = Pacer::new(config.loop_period);
    loop {
        pacer.step(token).await?;
        let mut connection = Connection::connect_with_retry(config, token).await?;
        let acked_before = outcome.ack_latencies.len();
        let session = session(
            &mut connection,
            config,
            token,
            acked_bets,
            &mut outcome,
            &mut progress,
            &mut pacer,
        );
        let error = match session.await {
            Ok(()) => {
                // The pause before exiting; a signal during it ends it early, nothing is lost.
                let _ = pacer.step(token).await;
                return Ok(outcome);
            }
            Err(e) if e.is_transient() => e,
            Err(e) => return Err(e),
        };
        if outcome.ack_latencies.len() > acked_before {
            last_progress = Instant::now();
            delay = FIRST_RETRY_DELAY;
        }
        let waited = last_progress.elapsed();
        if waited >= config.connect_timeout {
            return Err(ClientError::Stalled { waited, last: Box::new(error) });
        }
        outcome.reconnects += 1;
        warn!(action = "reconnect", result = "in_progress", retry_in_ms = delay.as_millis() as u64, error = %error);
        pause(delay, token).await?;
        delay = (delay * 2).min(MAX_RETRY_DELAY);
    }
}

/// One connection's share of the work: the bets the central does not hold yet, with up to
/// `batch_window` batches in flight, then the winners.
async fn session(
    connection: &mut Connection,
    config: &ClientConfig,
    token: &CancellationToken,
    acked_bets: &AtomicU64,
    outcome: &mut Outcome,
    progress: &mut Progress,
    pacer: &mut Pacer,
) -> Result<(), ClientError> {
    let mut seq = connection.next_seq();
    let skip = connection.stored_bets();
    let mut batches = spawn_reader(config, skip);
    let window = config.batch_window.get();
    let mut in_flight: VecDeque<(u64, Instant)> = VecDeque::with_capacity(window);
    let mut in_flight_bets = 0u64;
    let mut reading = true;
    // A bad row stops the reading, but the batches before it are still acknowledged first.
    let mut failed = None;
    let first_ack = outcome.ack_latencies.len();
    let mut sent = 0u64;
    loop {
        while reading && in_flight.len() < window {
            let next = if in_flight.is_empty() {
                cancellable(token, batches.recv()).await?
            } else {
                match batches.try_recv() {
                    Ok(batch) => Some(batch),
                    Err(mpsc::error::TryRecvError::Empty) => break,
                    Err(mpsc::error::TryRecvError::Disconnected) => None,
                }
            };
            let batch = match next {
                Some(Ok(batch)) => batch,
                Some(Err(e)) => {
                    failed = Some(e);
                    reading = false;
                    break;
                }
                None => {
                    reading = false;
                    break;
                }
            };
            in_flight_bets += batch.len() as u64;
            pacer.step(token).await?;
            connection.feed_batch(seq, batch).await?;
            if pacer.is_on() {
                cancellable(token, connection.flush()).await??;
            }
            in_flight.push_back((seq, Instant::now()));
            seq += 1;
        }
        cancellable(token, connection.flush()).await??;
        let Some(&(expected, sent_at)) = in_flight.front() else { break };
        let count = cancellable(token, connection.receive_ack(expected)).await??;
        in_flight.pop_front();
        outcome.ack_latencies.push(sent_at.elapsed());
        acked_bets.fetch_add(u64::from(count), Ordering::Relaxed);
        sent += u64::from(count);
        outcome.sent_bets += u64::from(count);
        in_flight_bets = in_flight_bets.saturating_sub(u64::from(count));
        progress.update(skip + sent + in_flight_bets, skip + sent);
        debug!(action = "batch_enviado", result = "success", seq = expected, cantidad = count);
        if let BetSource::Single(bet) = &config.source {
            info!(action = "apuesta_enviada", result = "success", dni = %bet.document, numero = %bet.number);
        }
    }
    progress.finish();
    if let Some(e) = failed {
        return Err(e);
    }
    // This session's latencies, sorted for the percentiles in its upload line.
    let mut latencies = outcome.ack_latencies[first_ack..].to_vec();
    latencies.sort();
    let percentile = |p: usize| {
        let at = (latencies.len() * p / 100).min(latencies.len().saturating_sub(1));
        latencies.get(at).map_or(0.0, |d| d.as_secs_f64() * 1000.0)
    };
    info!(
        action = "upload",
        result = "success",
        batches = seq - 1,
        bets = skip + sent,
        resumed_after = skip,
        ack_p50_ms = format_args!("{:.2}", percentile(50)),
        ack_p99_ms = format_args!("{:.2}", percentile(99)),
        ack_max_ms = format_args!("{:.2}", percentile(100)),
    );
    outcome.uploaded_at = Some(std::time::Instant::now());
    pacer.step(token).await?;
    outcome.winners = cancellable(token, connection.winners()).await??;
    // A whole period from the answer, however long the draw took to come.
    pacer.restart();
    pacer.step(token).await?;
    info!(
        action = "consulta_ganadores",
        result = "success",
        cant_ganadores = outcome.winners.len()
    );
    Ok(())
}
