//! [`Connection`]: one protocol session with the central, past its `Hello`, every wait on the
//! central under the connection's deadline; connecting with retries across the centrals of
//! `CLI_SERVER_ADDRESS`; and [`ping`], the container health check.

use std::time::Duration;

use futures::{SinkExt, StreamExt};
use tokio::net::TcpStream;
use tokio::time::Instant;
use tokio_util::codec::Framed;
use tokio_util::sync::CancellationToken;
use tracing::warn;

use crate::config::{ClientConfig, DEFAULT_CLIENT_READ_TIMEOUT};
use crate::domain::{AgencyId, Receipt};
use crate::protocol::{
    ClientCodec, ClientMessage, CodecError, EncodedBatch, EncodedBatchMessage, ErrorCode,
    PROTOCOL_VERSION, ServerMessage, WireBet,
};

use super::ClientError;
use super::failover::{Backoff, Centrals, pause};

/// How often an agency waiting for the draw checks the central is alive.
pub const PING_EVERY: Duration = Duration::from_secs(5);

/// `future`'s output, or `Timeout` naming `what` the central did not do within `limit`.
pub(super) async fn within<T, E: Into<ClientError>>(
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
    /// The central's receipt, once it sent it (after the draw, before the winners).
    receipt: Option<Receipt>,
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
            Some(Ok(ServerMessage::Welcome { version, .. })) if version != PROTOCOL_VERSION => {
                let message = format!("it answered Hello with version {version}");
                Err(ClientError::VersionRefused { ours: PROTOCOL_VERSION, message })
            }
            Some(Ok(ServerMessage::Welcome { next_seq, stored_bets, .. })) => Ok(Self {
                frames,
                next_seq,
                stored_bets,
                timeout,
                ready_confirmed: false,
                receipt: None,
            }),
            Some(Ok(ServerMessage::Error { code: ErrorCode::UnsupportedVersion, message })) => {
                Err(ClientError::VersionRefused { ours: PROTOCOL_VERSION, message })
            }
            Some(Ok(ServerMessage::Error { code, message })) => {
                Err(ClientError::Server { code, message })
            }
            Some(Ok(other)) => Err(unexpected("Welcome", &other)),
            Some(Err(e)) => Err(e.into()),
            None => Err(ClientError::Closed),
        }
    }

    /// Like [`Connection::open`] to `config`'s centrals as its agency, retrying with backoff
    /// while they are unreachable, busy, slow to answer, or drop the connection before their
    /// `Welcome`, for at most `config.connect_timeout`. It starts at the first address and
    /// moves to the next after each failure (see `Connection::connect_until`).
    ///
    /// # Errors
    /// `Unreachable` once `timeout` has passed; a non-transient error at once.
    pub async fn connect_with_retry(
        config: &ClientConfig,
        cancel: &CancellationToken,
    ) -> Result<Self, ClientError> {
        let mut centrals = Centrals::new(&config.server_addresses);
        Self::connect_until(config, &mut centrals, cancel, &mut Instant::now()).await
    }

    /// [`Connection::connect_with_retry`] from `centrals`' current address, giving up
    /// `config.connect_timeout` after `since` (the last progress). No attempt outlives that
    /// deadline. A central that answers `Busy` is alive and serving other agencies (every place
    /// is taken by an agency uploading, and agencies that wait for the draw give theirs up):
    /// the time an attempt answered `Busy` takes, and its pause, move `since` on by as much, so
    /// an agency keeps trying for as long as the central stays full, and only the rest counts
    /// against it. After a transient failure the next attempt goes to the next address (round
    /// robin); the pauses follow [`Backoff`], whose step doubles only after every address failed
    /// once at it. A connection made stays on its address: `centrals` is left there.
    ///
    /// # Errors
    /// `Unreachable`, naming every address tried, once the deadline has passed; a non-transient
    /// error at once.
    pub(super) async fn connect_until(
        config: &ClientConfig,
        centrals: &mut Centrals<'_>,
        cancel: &CancellationToken,
        since: &mut Instant,
    ) -> Result<Self, ClientError> {
        let mut deadline = *since + config.connect_timeout;
        let mut backoff = Backoff::new(centrals.len());
        let mut tried = vec![false; centrals.len()];
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let limit = config.read_timeout.min(left).max(Duration::from_millis(1));
            let address = centrals.current();
            if let Some(tried) = tried.get_mut(centrals.index()) {
                *tried = true;
            }
            let attempt_started = Instant::now();
            let connect = Self::open(address, config.id, config.token.as_deref(), limit);
            let attempt = cancel.run_until_cancelled(connect).await;
            match attempt.ok_or(ClientError::Cancelled)? {
                Ok(mut connection) => {
                    connection.timeout = config.read_timeout;
                    return Ok(connection);
                }
                Err(e) if e.is_transient() => {
                    if !e.is_busy() && Instant::now() + backoff.step() >= deadline {
                        let waited = since.elapsed();
                        let addresses = centrals.addresses().zip(&tried);
                        let addresses = addresses.filter(|(_, tried)| **tried);
                        return Err(ClientError::Unreachable {
                            addresses: addresses.map(|(address, _)| address.to_owned()).collect(),
                            waited,
                            last: Box::new(e),
                        });
                    }
                    let (address, next_address) = centrals.advance();
                    let pause_for = backoff.next_pause();
                    let retry_in_ms = pause_for.as_millis() as u64;
                    warn!(action = "connect", result = "in_progress", address, next_address, retry_in_ms, error = %e);
                    pause(pause_for, cancel).await?;
                    if e.is_busy() {
                        // Refused for want of a place: this attempt and its pause do not count.
                        *since += attempt_started.elapsed();
                        deadline = *since + config.connect_timeout;
                    }
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
    /// The bets are written as they are (an [`EncodedBatch`] from the reader is not encoded
    /// again; a `Vec<WireBet>` is encoded here).
    ///
    /// # Errors
    /// When the frame cannot be written; `Timeout` when earlier frames must go out first and the
    /// central does not read them in time.
    pub async fn feed_batch(
        &mut self,
        seq: u64,
        bets: impl Into<EncodedBatch>,
    ) -> Result<(), ClientError> {
        let feed = self.frames.feed(EncodedBatchMessage { seq, bets: bets.into() });
        within(self.timeout, || format!("take batch {seq}"), feed).await
    }

    /// Sends whatever was queued.
    ///
    /// # Errors
    /// When the socket fails; `Timeout` when the central does not read it in time.
    pub async fn flush(&mut self) -> Result<(), ClientError> {
        // Any of the sink's item types flushes the same buffer.
        let flush = SinkExt::<ClientMessage>::flush(&mut self.frames);
        within(self.timeout, || "read what the agency sent".into(), flush).await
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
    /// The central's `Receipt`, which comes before the winners, is kept for
    /// [`Connection::receipt`].
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
                ServerMessage::Receipt { bets, sha256 } if self.receipt.is_none() => {
                    self.receipt = Some(Receipt { bets, sha256 });
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

    /// The central's receipt for this agency, once [`Connection::wait_for_draw`] received it.
    pub fn receipt(&self) -> Option<Receipt> {
        self.receipt
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
