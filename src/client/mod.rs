//! The agency side: connect, upload bets in batches, declare readiness, receive winners.
//!
//! [`Connection`] speaks the protocol on one socket; [`run`] is the whole agency session the
//! `lottery-client` binary performs. The agency file is read on a blocking thread and handed over
//! in ready-made batches through a small channel, so reading overlaps sending and memory holds a
//! few batches, never the file (see [`reader`]).
//!
//! Every wait on the central has a deadline (`CLI_READ_TIMEOUT`): the TCP connection, `Welcome`,
//! each acknowledgement, each send and flush, and — while the agency waits for the draw — the
//! `Pong` to the `Ping` it sends every [`PING_EVERY`]. A missed deadline is a broken connection:
//! reconnect with jittered backoff and resume from the new `Welcome`.

mod pacer;
mod progress;
mod reader;

use pacer::Pacer;
use progress::UploadProgress;
pub use reader::{CHECK_REPORTED_ROWS, CheckReport, check_file, read_batches};
use reader::{Read, spawn_reader};

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

use crate::config::{BetSource, ClientConfig, DEFAULT_CLIENT_READ_TIMEOUT};
use crate::domain::AgencyId;
use crate::protocol::{
    ClientCodec, ClientMessage, CodecError, ErrorCode, PROTOCOL_VERSION, RejectReason,
    ServerMessage, WireBet,
};

/// First pause between connection attempts; it doubles up to `MAX_RETRY_DELAY`.
const FIRST_RETRY_DELAY: Duration = Duration::from_millis(10);
const MAX_RETRY_DELAY: Duration = Duration::from_secs(2);
/// How often an agency waiting for the draw checks the central is alive.
pub const PING_EVERY: Duration = Duration::from_secs(5);

/// Why an agency session failed.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("cannot connect to the central at {address}: {source}")]
    Connect { address: String, source: io::Error },
    #[error("cannot reach the central at {address} (tried for {waited:.1?}): {last}")]
    Unreachable { address: String, waited: Duration, last: Box<ClientError> },
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

/// `future`'s output, or `Timeout` naming `what` the central did not do within `limit`.
async fn within<T, E: Into<ClientError>>(
    limit: Duration,
    what: impl FnOnce() -> String,
    future: impl Future<Output = Result<T, E>>,
) -> Result<T, ClientError> {
    match tokio::time::timeout(limit, future).await {
        Ok(result) => result.map_err(Into::into),
        Err(_) => Err(ClientError::Timeout { what: what(), waited: limit }),
    }
}

/// One protocol session with the central, past its `Hello`. Every wait on the central (a send,
/// a flush, a reply) is bounded by the connection's read timeout.
#[derive(Debug)]
pub struct Connection {
    frames: Framed<TcpStream, ClientCodec>,
    next_seq: u64,
    stored_bets: u64,
    timeout: Duration,
    /// The central answered a `Ping` after this connection's `ReadyForLottery`: it holds the
    /// agency's readiness, and the agency is only waiting for the draw.
    ready_confirmed: bool,
}

impl Connection {
    /// Connects to `address` (`host:port`) once and introduces itself as `agency`, with its
    /// `token` when the central requires one; waits at most the default `CLI_READ_TIMEOUT` for
    /// each step.
    ///
    /// # Errors
    /// As [`Connection::open`].
    pub async fn connect(
        address: &str,
        agency: AgencyId,
        token: Option<&str>,
    ) -> Result<Self, ClientError> {
        Self::open(address, agency, token, DEFAULT_CLIENT_READ_TIMEOUT).await
    }

    /// Connects to `address` once and introduces itself as `agency` (with its `token`), giving
    /// the central at most `timeout` for each step: the TCP connection, taking the `Hello`, and
    /// its `Welcome`. The connection keeps `timeout` for every later wait.
    ///
    /// # Errors
    /// `Connect` when the central cannot be reached; `Timeout` when a step takes too long;
    /// `Server` when it refuses the agency.
    pub async fn open(
        address: &str,
        agency: AgencyId,
        token: Option<&str>,
        timeout: Duration,
    ) -> Result<Self, ClientError> {
        let connect = async {
            TcpStream::connect(address)
                .await
                .map_err(|source| ClientError::Connect { address: address.to_owned(), source })
        };
        let stream = within(timeout, || "accept the TCP connection".into(), connect).await?;
        stream.set_nodelay(true).map_err(CodecError::Io)?;
        let mut frames = Framed::new(stream, ClientCodec::new());
        let hello = ClientMessage::Hello {
            version: PROTOCOL_VERSION,
            agency: agency.get(),
            token: token.map(str::to_owned),
        };
        within(timeout, || "take the Hello".into(), frames.send(hello)).await?;
        let welcome = within(timeout, || "answer Hello".into(), async {
            Ok::<_, ClientError>(frames.next().await)
        });
        match welcome.await? {
            Some(Ok(ServerMessage::Welcome { next_seq, stored_bets, .. })) => {
                Ok(Self { frames, next_seq, stored_bets, timeout, ready_confirmed: false })
            }
            Some(Ok(ServerMessage::Error { code, message })) => {
                Err(ClientError::Server { code, message })
            }
            Some(Ok(other)) => Err(unexpected("Welcome", &other)),
            Some(Err(e)) => Err(e.into()),
            None => Err(ClientError::Closed),
        }
    }

    /// Like [`Connection::open`] to `config`'s central as its agency, retrying with backoff
    /// while the central is unreachable, busy, slow to answer, or drops the connection before
    /// its `Welcome`, for at most `config.connect_timeout`.
    ///
    /// # Errors
    /// `Unreachable` once `timeout` has passed; a non-transient error at once.
    pub async fn connect_with_retry(
        config: &ClientConfig,
        cancel: &CancellationToken,
    ) -> Result<Self, ClientError> {
        Self::connect_until(config, cancel, Instant::now()).await
    }

    /// [`Connection::connect_with_retry`], giving up `config.connect_timeout` after `since`
    /// (the last progress). No attempt outlives that deadline.
    async fn connect_until(
        config: &ClientConfig,
        cancel: &CancellationToken,
        since: Instant,
    ) -> Result<Self, ClientError> {
        let address = config.server_address.as_str();
        let deadline = since + config.connect_timeout;
        let mut delay = FIRST_RETRY_DELAY;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let limit = config.read_timeout.min(left).max(Duration::from_millis(1));
            let connect = Self::open(address, config.id, config.token.as_deref(), limit);
            let attempt = cancel.run_until_cancelled(connect).await;
            match attempt.ok_or(ClientError::Cancelled)? {
                Ok(mut connection) => {
                    connection.timeout = config.read_timeout;
                    return Ok(connection);
                }
                Err(e) if e.is_transient() && Instant::now() + delay < deadline => {
                    let pause_for = jittered(delay);
                    let retry_in_ms = pause_for.as_millis() as u64;
                    warn!(action = "connect", result = "in_progress", address, retry_in_ms, error = %e);
                    pause(pause_for, cancel).await?;
                    delay = (delay * 2).min(MAX_RETRY_DELAY);
                }
                Err(e) if e.is_transient() => {
                    let waited = since.elapsed();
                    return Err(ClientError::Unreachable {
                        address: address.to_owned(),
                        waited,
                        last: Box::new(e),
                    });
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// Whether the central answered a `Ping` after this connection's `ReadyForLottery`.
    pub fn ready_confirmed(&self) -> bool {
        self.ready_confirmed
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
    /// `Rejected` when the central refuses the batch (nothing of it is stored); `Timeout` when
    /// the central does not take it or answer in time.
    pub async fn send_batch(&mut self, seq: u64, bets: &[WireBet]) -> Result<u32, ClientError> {
        let frames = &mut self.frames;
        let send = async move {
            for bet in bets {
                frames.feed(ClientMessage::Bet(bet.clone())).await?;
            }
            frames.send(ClientMessage::BetBatchEnd { seq }).await
        };
        within(self.timeout, || format!("take batch {seq}"), send).await?;
        self.receive_ack(seq).await
    }

    /// Queues batch `seq` as one `Batch` frame, to go out with the next [`Connection::flush`].
    ///
    /// # Errors
    /// When the frame cannot be written; `Timeout` when earlier frames must go out first and the
    /// central does not read them in time.
    pub async fn feed_batch(&mut self, seq: u64, bets: Vec<WireBet>) -> Result<(), ClientError> {
        let feed = self.frames.feed(ClientMessage::Batch { seq, bets });
        within(self.timeout, || format!("take batch {seq}"), feed).await
    }

    /// Sends whatever was queued.
    ///
    /// # Errors
    /// When the socket fails; `Timeout` when the central does not read it in time.
    pub async fn flush(&mut self) -> Result<(), ClientError> {
        within(self.timeout, || "read what the agency sent".into(), self.frames.flush()).await
    }

    /// Waits for the acknowledgement of batch `seq` (the oldest in flight); returns its count.
    ///
    /// # Errors
    /// `Rejected` when the central refuses the batch; `Unexpected` for any other reply;
    /// `Timeout` when no reply comes in time.
    pub async fn receive_ack(&mut self, seq: u64) -> Result<u32, ClientError> {
        match self.receive(|| format!("acknowledge batch {seq}")).await? {
            ServerMessage::BatchAccepted { seq: acked, count } if acked == seq => Ok(count),
            ServerMessage::BatchRejected { seq, reason, message } => {
                Err(ClientError::Rejected { seq, reason, message })
            }
            other => Err(unexpected("BatchAccepted", &other)),
        }
    }

    /// Declares every bet sent and waits for this agency's winners (after the draw), however
    /// long that takes, checking the central is alive meanwhile (see [`Connection::wait_for_draw`]).
    ///
    /// # Errors
    /// As [`Connection::wait_for_draw`].
    pub async fn winners(&mut self) -> Result<Vec<String>, ClientError> {
        self.wait_for_draw(usize::MAX).await
    }

    /// Declares every bet sent (`ReadyForLottery`) and waits for this agency's winners. While
    /// it waits it sends a `Ping` at once and every [`PING_EVERY`], expecting each `Pong` within
    /// the read timeout; the first `Pong` sets [`Connection::ready_confirmed`]: the central holds the agency's
    /// readiness and is alive. More than `most` winners (the agency's own winning bets) is an
    /// error as soon as it arrives, so a central cannot make the agency hold an endless list.
    ///
    /// # Errors
    /// `Server` when the central refuses or cannot run the draw; `Timeout` when a `Pong` does
    /// not come in time (the central is frozen or the network dropped); `WrongWinners` past `most`.
    pub async fn wait_for_draw(&mut self, most: usize) -> Result<Vec<String>, ClientError> {
        let limit = self.timeout;
        let frames = &mut self.frames;
        let declare = async {
            frames.feed(ClientMessage::ReadyForLottery).await?;
            frames.send(ClientMessage::Ping).await
        };
        within(limit, || "take ReadyForLottery".into(), declare).await?;
        let mut pong_due = Some(Instant::now() + limit);
        let mut next_ping = Instant::now() + PING_EVERY;
        let mut winners = Vec::new();
        loop {
            let message = tokio::select! {
                message = self.frames.next() => message,
                () = tokio::time::sleep_until(pong_due.unwrap_or(next_ping)) => {
                    if pong_due.is_some() {
                        let what = "answer Ping while the agency waits for the draw".into();
                        return Err(ClientError::Timeout { what, waited: limit });
                    }
                    let ping = self.frames.send(ClientMessage::Ping);
                    within(limit, || "take a Ping".into(), ping).await?;
                    pong_due = Some(Instant::now() + limit);
                    next_ping = Instant::now() + PING_EVERY;
                    continue;
                }
            };
            match interpret(message)? {
                ServerMessage::Pong => {
                    pong_due = None;
                    self.ready_confirmed = true;
                }
                ServerMessage::Winners { documents, last } => {
                    winners.extend(documents);
                    if winners.len() > most {
                        let (got, example) = (winners.len(), winners.pop().unwrap_or_default());
                        return Err(ClientError::WrongWinners {
                            expected: most,
                            got,
                            unknown: got - most,
                            example,
                        });
                    }
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
    /// Any failure to get a `Pong` within the read timeout.
    pub async fn ping(&mut self) -> Result<(), ClientError> {
        within(self.timeout, || "take a Ping".into(), self.frames.send(ClientMessage::Ping))
            .await?;
        match self.receive(|| "answer Ping".into()).await? {
            ServerMessage::Pong => Ok(()),
            other => Err(unexpected("Pong", &other)),
        }
    }

    async fn receive(
        &mut self,
        what: impl FnOnce() -> String,
    ) -> Result<ServerMessage, ClientError> {
        let next = async { Ok::<_, ClientError>(self.frames.next().await) };
        interpret(within(self.timeout, what, next).await?)
    }
}

/// A frame from the central as a message, or the error it means.
fn interpret(
    next: Option<Result<ServerMessage, CodecError>>,
) -> Result<ServerMessage, ClientError> {
    match next {
        None => Err(ClientError::Closed),
        Some(Err(e)) => Err(e.into()),
        Some(Ok(ServerMessage::Error { code, message })) => {
            Err(ClientError::Server { code, message })
        }
        Some(Ok(message)) => Ok(message),
    }
}

/// A pause of between half and all of `step` ("equal jitter"), so agencies that lost the central
/// together do not all come back in the same millisecond.
fn jittered(step: Duration) -> Duration {
    use std::hash::{BuildHasher, Hasher};
    // A randomly keyed hasher is a random number source without another dependency.
    let random = std::collections::hash_map::RandomState::new().build_hasher().finish();
    let half = step / 2;
    let nanos = u64::try_from(half.as_nanos()).unwrap_or(u64::MAX);
    half + Duration::from_nanos(random % nanos.saturating_add(1))
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
/// central restarts, the network drops, the central cannot write for a moment, or it leaves a
/// wait unanswered for `config.read_timeout`) it reconnects with backoff and resumes after the
/// bets the central's `Welcome` says it holds, re-reading its file from there. While uploading
/// it gives up when nothing was acknowledged for `config.connect_timeout`; waiting for the draw
/// never counts, only the time the central then stays unreachable after a break does.
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
    let mut progress = UploadProgress::new(total);
    let mut last_progress = Instant::now();
    let mut delay = FIRST_RETRY_DELAY;
    let mut pacer = Pacer::new(config.loop_period);
    loop {
        pacer.step(token).await?;
        let mut connection = Connection::connect_until(config, token, last_progress).await?;
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
        // Once the central confirmed the agency is ready, waiting for the draw is progress.
        if outcome.ack_latencies.len() > acked_before || connection.ready_confirmed() {
            last_progress = Instant::now();
            delay = FIRST_RETRY_DELAY;
        }
        let waited = last_progress.elapsed();
        if waited >= config.connect_timeout {
            return Err(ClientError::Stalled { waited, last: Box::new(error) });
        }
        outcome.reconnects += 1;
        let pause_for = jittered(delay);
        warn!(action = "reconnect", result = "in_progress", retry_in_ms = pause_for.as_millis() as u64, error = %error);
        pause(pause_for, token).await?;
        delay = (delay * 2).min(MAX_RETRY_DELAY);
    }
}

/// Checks that `received` are exactly the agency's own winning documents (`own`, from its file):
/// never another agency's, none left out.
fn check_winners(received: &[String], mut own: Vec<String>) -> Result<(), ClientError> {
    let mut got = received.to_vec();
    got.sort_unstable();
    own.sort_unstable();
    if got == own {
        return Ok(());
    }
    let unknown: Vec<&String> = got.iter().filter(|d| own.binary_search(d).is_err()).collect();
    let example = unknown.first().map_or_else(
        || format!("{} of its own winners left out", own.len().saturating_sub(got.len())),
        |d| (*d).clone(),
    );
    Err(ClientError::WrongWinners {
        expected: own.len(),
        got: got.len(),
        unknown: unknown.len(),
        example,
    })
}

/// One connection's share of the work: the bets the central does not hold yet, with up to
/// `batch_window` batches in flight, then the winners.
async fn session(
    connection: &mut Connection,
    config: &ClientConfig,
    token: &CancellationToken,
    acked_bets: &AtomicU64,
    outcome: &mut Outcome,
    progress: &mut UploadProgress,
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
    let mut own_winners = None;
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
                Some(Ok(Read::Batch(batch))) => batch,
                Some(Ok(Read::End { winners })) => {
                    own_winners = Some(winners);
                    reading = false;
                    break;
                }
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
    // The reader ends every source it reads whole with its winning documents.
    let own_winners = own_winners.ok_or(ClientError::ReadIncomplete)?;
    pacer.step(token).await?;
    let wait = connection.wait_for_draw(own_winners.len());
    outcome.winners = cancellable(token, wait).await??;
    check_winners(&outcome.winners, own_winners)?;
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_pauses_are_jittered_between_half_and_all_of_the_step() {
        for step in [FIRST_RETRY_DELAY, Duration::from_millis(640), MAX_RETRY_DELAY] {
            let pauses: Vec<Duration> = (0..200).map(|_| jittered(step)).collect();
            assert!(pauses.iter().all(|p| *p >= step / 2 && *p <= step), "{step:?}: {pauses:?}");
            let first = pauses[0];
            assert!(pauses.iter().any(|p| *p != first), "{step:?}: every pause the same");
        }
        assert_eq!(jittered(Duration::ZERO), Duration::ZERO);
    }
}
