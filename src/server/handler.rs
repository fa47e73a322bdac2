//! `Handler`: one agency's connection, from `Hello` to `Winners`.
//!
//! ```text
//! Hello → Welcome ─┬→ (Bet* BetBatchEnd → BatchAccepted | BatchRejected)*
//!                  ├→ Ping → Pong (at any point)
//!                  └→ ReadyForLottery → … barrier … draw … → Winners (in chunks)
//! ```
//! Any protocol violation is answered with `Error` and ends the connection; the reason is logged
//! once, at the task boundary, with the peer address.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use chrono::NaiveDate;
use futures::{SinkExt, StreamExt};
use tokio::net::TcpStream;
use tokio_util::codec::Framed;
use tokio_util::sync::CancellationToken;
use tracing::{debug, error, info, warn};

use super::{DrawStatus, Shared};
use crate::domain::{AgencyId, Bet, Draw};
use crate::protocol::{
    ClientMessage, CodecError, ErrorCode, MAX_BATCH_BYTES, PROTOCOL_VERSION, RejectReason,
    ServerCodec, ServerMessage, WINNERS_PER_FRAME, WireBet,
};
use crate::storage::{StorageError, Stored};

/// How long a farewell `Error` may take to send before the connection is dropped anyway.
const FAREWELL_TIMEOUT: Duration = Duration::from_secs(1);

/// Why a connection ended early.
#[derive(Debug, thiserror::Error)]
enum HandlerError {
    #[error(transparent)]
    Codec(#[from] CodecError),
    #[error("{code:?}: {message}")]
    Protocol { code: ErrorCode, message: String },
}

/// One connection's task.
pub(super) struct Handler {
    shared: Arc<Shared>,
    frames: Framed<TcpStream, ServerCodec>,
    peer: SocketAddr,
    token: CancellationToken,
}

impl Handler {
    pub(super) fn new(
        shared: Arc<Shared>,
        stream: TcpStream,
        peer: SocketAddr,
        token: CancellationToken,
    ) -> Self {
        let frames = Framed::new(stream, ServerCodec::new());
        Self { shared, frames, peer, token }
    }

    /// Serves the connection to its end; errors are logged here, never returned.
    pub(super) async fn run(mut self) {
        debug!(action = "connection", result = "success", ip = %self.peer);
        if let Err(e) = self.serve().await {
            if let HandlerError::Protocol { code, message } = &e {
                let farewell = ServerMessage::Error { code: *code, message: message.clone() };
                let _ = tokio::time::timeout(FAREWELL_TIMEOUT, self.frames.send(farewell)).await;
            }
            warn!(action = "connection", result = "fail", ip = %self.peer, error = %e);
        }
    }

    async fn serve(&mut self) -> Result<(), HandlerError> {
        let Some(agency) = self.hello().await? else {
            return Ok(());
        };
        let mut batch = PendingBatch::new(self.shared.config.batch_max_bets.get());
        while let Some(message) = self.next().await? {
            match message {
                ClientMessage::Bet(bet) => batch.push(bet, agency),
                ClientMessage::BetBatchEnd { seq } => {
                    let done = std::mem::replace(
                        &mut batch,
                        PendingBatch::new(self.shared.config.batch_max_bets.get()),
                    );
                    self.end_batch(agency, seq, done).await?;
                }
                ClientMessage::ReadyForLottery if batch.count > 0 => {
                    return Err(protocol(
                        ErrorCode::AgencyClosed,
                        "ReadyForLottery inside a batch",
                    ));
                }
                ClientMessage::ReadyForLottery => {
                    if !self.ready(agency).await? {
                        return Ok(());
                    }
                }
                ClientMessage::Ping => self.frames.send(ServerMessage::Pong).await?,
                ClientMessage::Hello { .. } => {
                    return Err(protocol(ErrorCode::HelloRequired, "Hello was already received"));
                }
            }
        }
        if batch.count > 0 {
            warn!(action = "apuesta_recibida", result = "fail", cantidad = batch.count, agency = %agency, error = "connection ended inside a batch: nothing of it stored");
        }
        Ok(())
    }

    /// The next message; `None` when the peer closed or the central is shutting down.
    async fn next(&mut self) -> Result<Option<ClientMessage>, HandlerError> {
        let next = tokio::select! {
            () = self.token.cancelled() => return self.shutting_down().await,
            next = self.frames.next() => next,
        };
        match next {
            None => Ok(None),
            Some(Ok(message)) => Ok(Some(message)),
            Some(Err(CodecError::Io(e))) => Err(CodecError::Io(e).into()),
            Some(Err(e)) => Err(protocol(ErrorCode::Malformed, e.to_string())),
        }
    }

    async fn shutting_down(&mut self) -> Result<Option<ClientMessage>, HandlerError> {
        let farewell = ServerMessage::Error {
            code: ErrorCode::ShuttingDown,
            message: "the central is shutting down; unacknowledged bets were not stored".into(),
        };
        let _ = tokio::time::timeout(FAREWELL_TIMEOUT, self.frames.send(farewell)).await;
        Ok(None)
    }

    async fn hello(&mut self) -> Result<Option<AgencyId>, HandlerError> {
        let (version, agency) = loop {
            match self.next().await? {
                None => return Ok(None),
                Some(ClientMessage::Hello { version, agency }) => break (version, agency),
                Some(ClientMessage::Ping) => self.frames.send(ServerMessage::Pong).await?,
                Some(_) => {
                    return Err(protocol(
                        ErrorCode::HelloRequired,
                        "the first message must be Hello",
                    ));
                }
            }
        };
        if version != PROTOCOL_VERSION {
            let message =
                format!("protocol version {version}; this central speaks {PROTOCOL_VERSION}");
            return Err(protocol(ErrorCode::UnsupportedVersion, message));
        }
        let agencies = self.shared.config.agencies;
        let agency = AgencyId::new(agency)
            .ok()
            .filter(|a| self.shared.config.expects(a.get()))
            .ok_or_else(|| {
                let message =
                    format!("agency {agency}; this central expects agencies 1 to {agencies}");
                protocol(ErrorCode::UnknownAgency, message)
            })?;
        let progress = self.shared.store.progress(agency).await;
        let (next_seq, stored_bets) = (progress.last_seq + 1, progress.stored_bets);
        info!(action = "hello", result = "success", agency = %agency, ip = %self.peer, next_seq, stored_bets);
        let welcome = ServerMessage::Welcome { version: PROTOCOL_VERSION, next_seq, stored_bets };
        self.frames.send(welcome).await?;
        Ok(Some(agency))
    }

    async fn end_batch(
        &mut self,
        agency: AgencyId,
        seq: u64,
        batch: PendingBatch,
    ) -> Result<(), HandlerError> {
        let count = batch.count;
        if let Some((reason, message)) = batch.problem {
            warn!(action = "apuesta_recibida", result = "fail", cantidad = count, agency = %agency, seq, error = %message);
            let reply = ServerMessage::BatchRejected { seq, reason, message };
            return Ok(self.frames.send(reply).await?);
        }
        let reply = match self.shared.store.store_batch(agency, seq, &batch.bets).await {
            Ok(Stored::New) => {
                info!(action = "apuesta_recibida", result = "success", cantidad = count, agency = %agency, seq);
                for bet in &batch.bets {
                    debug!(action = "apuesta_almacenada", result = "success", dni = %bet.document, numero = %bet.number);
                }
                ServerMessage::BatchAccepted { seq, count: count as u32 }
            }
            Ok(Stored::Duplicate) => {
                info!(action = "batch_retry", result = "success", agency = %agency, seq, cantidad = count);
                ServerMessage::BatchAccepted { seq, count: count as u32 }
            }
            Err(e @ StorageError::SequenceGap { .. }) => {
                return Err(protocol(ErrorCode::SequenceGap, e.to_string()));
            }
            Err(e @ StorageError::AgencyClosed { .. }) => {
                warn!(action = "apuesta_recibida", result = "fail", cantidad = count, agency = %agency, seq, error = %e);
                return Err(protocol(ErrorCode::AgencyClosed, e.to_string()));
            }
            Err(e) => {
                error!(action = "apuesta_recibida", result = "fail", cantidad = count, agency = %agency, seq, error = %e);
                let message = format!("not stored: {e}");
                ServerMessage::BatchRejected { seq, reason: RejectReason::Storage, message }
            }
        };
        Ok(self.frames.send(reply).await?)
    }

    /// Counts the agency in (once), waits for the draw and sends its winners.
    /// Returns false when the central is shutting down.
    async fn ready(&mut self, agency: AgencyId) -> Result<bool, HandlerError> {
        let readiness = self.shared.store.mark_ready(agency).await.map_err(|e| {
            error!(action = "ready_for_lottery", result = "fail", agency = %agency, error = %e);
            protocol(ErrorCode::StorageFailed, e.to_string())
        })?;
        if readiness.newly_ready {
            let expected = self.shared.config.agencies;
            info!(action = "ready_for_lottery", result = "success", agency = %agency, ready = readiness.ready, expected);
            // Barrier::wait is not cancel safe: a cancelled wait still counts its party. That is
            // what we want here: the agency counts once, and a shutdown must not block on it.
            let Some(arrival) = self.token.run_until_cancelled(self.shared.barrier.wait()).await
            else {
                self.shutting_down().await?;
                return Ok(false);
            };
            if arrival.is_leader() {
                self.shared.run_draw().await;
            }
        }
        let mut status = self.shared.draw.subscribe();
        let waited = status.wait_for(|s| !matches!(s, DrawStatus::Pending));
        let status = self.token.run_until_cancelled(waited).await.map(|s| s.map(|s| s.clone()));
        let status = match status {
            Some(Ok(status)) => status,
            // The sender lives in `Shared`, which this task holds: it cannot be dropped.
            Some(Err(_)) | None => {
                self.shutting_down().await?;
                return Ok(false);
            }
        };
        match status {
            DrawStatus::Done(draw) => self.send_winners(agency, &draw).await?,
            DrawStatus::Failed(reason) => {
                return Err(protocol(ErrorCode::DrawFailed, reason.to_string()));
            }
            DrawStatus::Pending => unreachable!("waited until the draw is no longer pending"),
        }
        Ok(true)
    }

    async fn send_winners(&mut self, agency: AgencyId, draw: &Draw) -> Result<(), HandlerError> {
        let winners = draw.winners_for(agency);
        let mut chunks = winners.chunks(WINNERS_PER_FRAME).peekable();
        if chunks.peek().is_none() {
            self.frames.feed(ServerMessage::Winners { documents: Vec::new(), last: true }).await?;
        }
        while let Some(chunk) = chunks.next() {
            let documents = chunk.iter().map(|d| d.as_str().to_owned()).collect();
            let last = chunks.peek().is_none();
            self.frames.feed(ServerMessage::Winners { documents, last }).await?;
        }
        self.frames.flush().await?;
        info!(action = "ganadores_enviados", result = "success", agency = %agency, cant_ganadores = winners.len());
        Ok(())
    }
}

fn protocol(code: ErrorCode, message: impl Into<String>) -> HandlerError {
    HandlerError::Protocol { code, message: message.into() }
}

/// The bets of the batch being received. Past the first problem, bets are counted and dropped,
/// so a bad or oversized batch holds no memory; it is rejected whole at its `BetBatchEnd`.
struct PendingBatch {
    bets: Vec<Bet>,
    count: usize,
    bytes: usize,
    max_bets: usize,
    problem: Option<(RejectReason, String)>,
    today: Option<NaiveDate>,
}

impl PendingBatch {
    fn new(max_bets: usize) -> Self {
        Self { bets: Vec::new(), count: 0, bytes: 0, max_bets, problem: None, today: None }
    }

    fn push(&mut self, bet: WireBet, agency: AgencyId) {
        self.count += 1;
        self.bytes = self.bytes.saturating_add(bet.frame_len());
        if self.problem.is_some() {
            return;
        }
        // The batch end frame is a few more bytes; the limit leaves room for it.
        let end_room = crate::protocol::batch_end_frame_max_len();
        let problem = if self.count > self.max_bets {
            let message = format!("more than {} bets in one batch", self.max_bets);
            Some((RejectReason::TooManyBets, message))
        } else if self.bytes + end_room > MAX_BATCH_BYTES {
            let message = format!("batch exceeds {MAX_BATCH_BYTES} bytes on the wire");
            Some((RejectReason::TooLarge, message))
        } else {
            let today = *self.today.get_or_insert_with(|| chrono::Local::now().date_naive());
            match bet.into_bet(agency, today) {
                Ok(bet) => {
                    self.bets.push(bet);
                    None
                }
                Err(e) => Some((RejectReason::InvalidBet, format!("bet {}: {e}", self.count))),
            }
        };
        if problem.is_some() {
            self.bets = Vec::new();
            self.problem = problem;
        }
    }
}
