//! `Handler`: one agency's connection, from `Hello` to `Winners`.
//!
//! ```text
//! Hello → Welcome ─┬→ (Bet* BetBatchEnd → BatchAccepted | BatchRejected)*
//!                  ├→ Ping → Pong (at any point)
//!                  └→ ReadyForLottery → … barrier … draw … → Winners (in chunks)
//! ```
//! The protocol rules are the [`Session`]'s; the handler does the I/O, under deadlines: `Hello`
//! within `hello_timeout`, every later message within `read_timeout` of the central waiting for
//! it, every reply written within `write_timeout`. Any violation is answered with `Error` and ends
//! the connection; the reason is logged once, at the task boundary, with the peer address.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;
use futures::{FutureExt, SinkExt, StreamExt};
use tokio::net::TcpStream;
use tokio::sync::{OwnedMutexGuard, OwnedSemaphorePermit};
use tokio_util::codec::Framed;
use tokio_util::sync::CancellationToken;
use tracing::{debug, error, info, warn};

use super::activity::Presence;
use super::error::{HandlerError, log_end, protocol, refusal, storage_error, unreadable};
use super::lottery::DrawStatus;
use super::metrics;
use super::newcomers::Newcomer;
use super::replies::{BatchOutcome, Outgoing, PendingAck, front_ack};
use super::session::{Session, Step};
use super::shared::Shared;
use crate::domain::{AgencyId, Draw};
use crate::protocol::{
    CentralCodec, ErrorCode, Inbound, MAX_BATCHES_IN_FLIGHT, PROTOCOL_VERSION, ServerMessage,
    WINNERS_PER_FRAME,
};
use crate::storage::{SessionEpoch, StorageError};

/// How long a farewell `Error` may take to send before the connection is dropped anyway.
const FAREWELL_TIMEOUT: Duration = Duration::from_secs(1);

/// One connection's task.
pub(super) struct Handler {
    shared: Arc<Shared>,
    frames: Framed<TcpStream, CentralCodec>,
    peer: SocketAddr,
    /// Cancelled when the central shuts down or a newer connection takes over this agency.
    token: CancellationToken,
    server_token: CancellationToken,
    session: Session,
    /// `Hello` must arrive within `hello_timeout` of this, whatever came before it (`Ping`s).
    connected_at: tokio::time::Instant,
    /// Its place among the connections without `Hello`, until `Hello` is accepted.
    newcomer: Option<Newcomer>,
    /// Its place among `LOTTERY_MAX_CONNECTIONS`, until its agency is ready: a connection that
    /// waits for the draw only answers `Ping`s, and one session per agency bounds how many
    /// wait, so waiting connections are budgeted apart (by `LOTTERY_AGENCIES`) and an agency
    /// still uploading always finds a place once others finish.
    slot: Option<OwnedSemaphorePermit>,
    /// Held while this connection is its agency's session (see `Registry`).
    _claim: Option<OwnedMutexGuard<()>>,
    /// The agency's session on this central, for the status page, while this connection is it.
    _presence: Option<Presence>,
    /// The session's epoch, from the store at `Welcome`: its batches carry it, so a store
    /// shared by several centrals refuses them once a newer session took over anywhere.
    epoch: SessionEpoch,
}

impl Handler {
    pub(super) fn new(
        shared: Arc<Shared>,
        stream: TcpStream,
        peer: SocketAddr,
        server_token: &CancellationToken,
        newcomer: Newcomer,
        slot: OwnedSemaphorePermit,
    ) -> Self {
        let codec = CentralCodec::with_max_frame_len(shared.config.max_frame_bytes);
        let frames = Framed::new(stream, codec);
        let session = Session::new(&shared.rules);
        let token = server_token.child_token();
        Self {
            shared,
            frames,
            peer,
            token,
            server_token: server_token.clone(),
            session,
            connected_at: tokio::time::Instant::now(),
            newcomer: Some(newcomer),
            slot: Some(slot),
            _claim: None,
            _presence: None,
            epoch: 0,
        }
    }

    /// Serves the connection to its end; errors are logged here, never returned.
    pub(super) async fn run(mut self) {
        debug!(action = "connection", result = "success", ip = %self.peer);
        if let Err(e) = self.serve().await {
            if let HandlerError::Protocol { code, message } = &e {
                let farewell = ServerMessage::Error { code: *code, message: message.clone() };
                let _ = tokio::time::timeout(FAREWELL_TIMEOUT, self.frames.send(farewell)).await;
            }
            if self.session.agency().is_none()
                && let Some(refusal) = refusal(&e)
            {
                metrics::refused(refusal);
            }
            log_end(&e, self.peer, self.session.agency(), &self.shared.stranger_failures);
        }
    }

    async fn serve(&mut self) -> Result<(), HandlerError> {
        // Replies owed to the agency, in the order its messages came: a batch's acknowledgement
        // waits for its group commit while later batches are already being read and queued.
        let mut outgoing = VecDeque::new();
        loop {
            self.send_ready(&mut outgoing).await?;
            let acking = matches!(outgoing.front(), Some(Outgoing::Ack { .. }));
            let message = tokio::select! {
                biased;
                answer = front_ack(&mut outgoing), if acking => {
                    if let Some(Outgoing::Ack(pending)) = outgoing.pop_front() {
                        outgoing.push_front(Outgoing::Reply(pending.reply(answer)?));
                    }
                    continue;
                }
                message = self.next(), if outgoing.len() < MAX_BATCHES_IN_FLIGHT => message?,
            };
            let Some(message) = message else { break };
            match self.session.on_message(message, &self.shared.rules) {
                Step::Continue => {}
                Step::Reply(reply) => outgoing.push_back(Outgoing::Reply(reply)),
                Step::Welcome(agency) => {
                    if !self.welcome(agency).await? {
                        return Ok(());
                    }
                }
                Step::Store { agency, seq, bets } => {
                    self.shared.activity.touch(agency);
                    let ack = self.shared.store.submit(agency, self.epoch, seq, &bets);
                    let count = bets.len();
                    let bets = tracing::enabled!(tracing::Level::DEBUG).then_some(bets);
                    let read_at = std::time::Instant::now();
                    let pending = PendingAck { agency, seq, count, bets, ack, read_at };
                    outgoing.push_back(Outgoing::Ack(pending));
                }
                Step::Reject { agency, seq, count, reason, message } => {
                    BatchOutcome::Rejected.count(agency, count);
                    warn!(action = "apuesta_recibida", result = "fail", cantidad = count, agency = %agency, seq, error = %message);
                    outgoing.push_back(Outgoing::Reply(ServerMessage::BatchRejected {
                        seq,
                        reason,
                        message,
                    }));
                }
                Step::Ready(agency) => {
                    self.drain(&mut outgoing).await?;
                    if !self.ready(agency).await? {
                        return Ok(());
                    }
                }
                Step::Unauthorized(agency) => {
                    warn!(action = "auth", result = "fail", agency, ip = %self.peer);
                    metrics::token_failure();
                    let message = format!("missing or wrong token for agency {agency}");
                    return Err(protocol(ErrorCode::Unauthorized, message));
                }
                Step::Close { code, message } => {
                    // Acknowledge what was stored before saying why the session ends.
                    self.drain(&mut outgoing).await?;
                    return Err(protocol(code, message));
                }
            }
        }
        let pending = self.session.pending_bets();
        if let Some(agency) = self.session.agency()
            && pending > 0
        {
            warn!(action = "apuesta_recibida", result = "fail", cantidad = pending, agency = %agency, error = "connection ended inside a batch: nothing of it stored");
        }
        Ok(())
    }

    /// Sends the replies at the front of `outgoing` that are ready, in one write.
    async fn send_ready(&mut self, outgoing: &mut VecDeque<Outgoing>) -> Result<(), HandlerError> {
        let mut ready = Vec::new();
        loop {
            match outgoing.front_mut() {
                Some(Outgoing::Reply(_)) => {
                    if let Some(Outgoing::Reply(reply)) = outgoing.pop_front() {
                        ready.push(reply);
                    }
                }
                Some(Outgoing::Ack(pending)) => {
                    let Some(answer) = (&mut pending.ack).now_or_never() else { break };
                    if let Some(Outgoing::Ack(pending)) = outgoing.pop_front() {
                        ready.push(pending.reply(answer)?);
                    }
                }
                None => break,
            }
        }
        if ready.is_empty() { Ok(()) } else { self.send_all(ready).await }
    }

    /// Waits for every owed reply and sends them all.
    async fn drain(&mut self, outgoing: &mut VecDeque<Outgoing>) -> Result<(), HandlerError> {
        let mut replies = Vec::new();
        while let Some(next) = outgoing.pop_front() {
            replies.push(match next {
                Outgoing::Reply(reply) => reply,
                Outgoing::Ack(mut pending) => {
                    let answer = (&mut pending.ack).await;
                    pending.reply(answer)?
                }
            });
        }
        if replies.is_empty() { Ok(()) } else { self.send_all(replies).await }
    }

    /// The next message; `None` when the peer closed, the central is shutting down, or a newer
    /// connection took over.
    async fn next(&mut self) -> Result<Option<Inbound>, HandlerError> {
        let config = &self.shared.config;
        let (deadline, limit, what) = match self.session.agency() {
            None => (self.connected_at + config.hello_timeout, config.hello_timeout, "Hello"),
            Some(_) => {
                let now = tokio::time::Instant::now();
                (now + config.read_timeout, config.read_timeout, "the next message")
            }
        };
        let evicted = self.newcomer.as_ref().map(|n| n.evicted.clone());
        let evicted = async move {
            match evicted {
                Some(token) => token.cancelled_owned().await,
                None => std::future::pending().await,
            }
        };
        let next = tokio::select! {
            () = self.token.cancelled() => return self.cancelled().await,
            () = evicted => {
                let message = "too many connections without Hello: this one, the oldest, was \
                    closed to make room; try again";
                return Err(protocol(ErrorCode::Busy, message));
            }
            next = tokio::time::timeout_at(deadline, self.frames.next()) => next,
        };
        match next {
            Err(_) => {
                let message = format!("{what} did not arrive within {limit:?}");
                Err(protocol(ErrorCode::Timeout, message))
            }
            Ok(None) => Ok(None),
            Ok(Some(Ok(message))) => Ok(Some(message)),
            Ok(Some(Err(e))) => Err(unreadable(e)),
        }
    }

    /// Says goodbye when the token was cancelled, and why.
    async fn cancelled(&mut self) -> Result<Option<Inbound>, HandlerError> {
        let farewell = if self.server_token.is_cancelled() {
            let message = "the central is shutting down; unacknowledged bets were not stored";
            ServerMessage::Error { code: ErrorCode::ShuttingDown, message: message.into() }
        } else {
            let message = "a newer connection of this agency took over";
            ServerMessage::Error { code: ErrorCode::SessionReplaced, message: message.into() }
        };
        let _ = tokio::time::timeout(FAREWELL_TIMEOUT, self.frames.send(farewell)).await;
        Ok(None)
    }

    /// Sends `messages` (and flushes) within the write deadline.
    async fn send_all(
        &mut self,
        messages: impl IntoIterator<Item = ServerMessage>,
    ) -> Result<(), HandlerError> {
        let deadline = self.shared.config.write_timeout;
        let frames = &mut self.frames;
        let write = async move {
            for message in messages {
                frames.feed(message).await?;
            }
            frames.flush().await
        };
        match tokio::time::timeout(deadline, write).await {
            Ok(written) => Ok(written?),
            Err(_) => Err(HandlerError::WriteTimeout(deadline)),
        }
    }

    async fn send(&mut self, message: ServerMessage) -> Result<(), HandlerError> {
        self.send_all([message]).await
    }

    /// Takes over the agency's session (fencing an older connection of the same agency, and
    /// waiting for it to finish its batch in flight) and answers `Welcome`.
    /// Returns false when this connection was itself cancelled meanwhile.
    async fn welcome(&mut self, agency: AgencyId) -> Result<bool, HandlerError> {
        self.newcomer = None;
        let claim = self.shared.registry.claim(agency, &self.token);
        let Some(claim) = self.token.run_until_cancelled(claim).await else {
            self.cancelled().await?;
            return Ok(false);
        };
        self._claim = claim;
        let (progress, epoch) = self.shared.store.open_session(agency).await.map_err(|e| {
            error!(action = "hello", result = "fail", agency = %agency, ip = %self.peer, error = %e);
            storage_error(&e)
        })?;
        self.epoch = epoch;
        self._presence = Some(self.shared.activity.arrive(agency));
        let (next_seq, stored_bets) = (progress.last_seq + 1, progress.stored_bets);
        info!(action = "hello", result = "success", agency = %agency, ip = %self.peer, next_seq, stored_bets);
        self.send(ServerMessage::Welcome { version: PROTOCOL_VERSION, next_seq, stored_bets })
            .await?;
        Ok(true)
    }

    /// Counts the agency in (once), waits for the draw and sends its winners.
    /// Returns false when this connection was cancelled meanwhile.
    async fn ready(&mut self, agency: AgencyId) -> Result<bool, HandlerError> {
        self.shared.lottery.ready(agency, self.epoch).await.map_err(|e| {
            if matches!(e, StorageError::Fenced { .. }) {
                warn!(action = "ready_for_lottery", result = "fail", agency = %agency, error = %e);
            } else {
                error!(action = "ready_for_lottery", result = "fail", agency = %agency, error = %e);
            }
            storage_error(&e)
        })?;
        // Waiting for the draw: the place goes to an agency that still has bets to upload, and
        // the frame buffers (8 KiB each way, most of a waiting connection's memory at thousands
        // of agencies) go back; a `Ping` needs a few bytes.
        self.slot = None;
        if self.frames.read_buffer().is_empty() {
            *self.frames.read_buffer_mut() = BytesMut::new();
        }
        if self.frames.write_buffer().is_empty() {
            *self.frames.write_buffer_mut() = BytesMut::new();
        }
        let mut status = self.shared.lottery.subscribe();
        let waited = status.wait_for(|s| !matches!(s, DrawStatus::Pending));
        tokio::pin!(waited);
        // While the draw waits for other agencies, this one pings to check the central is alive:
        // keep reading and answer. No read deadline: the wait takes as long as the slowest agency.
        // What the agency sent comes before the draw's result, so winners are never sent (and
        // logged as sent) to an agency that has already closed the connection.
        let status = loop {
            let message = tokio::select! {
                biased;
                () = self.token.cancelled() => break None,
                message = self.frames.next() => message,
                status = &mut waited => break Some(status.map(|s| s.clone())),
            };
            let message = match message {
                None => {
                    debug!(action = "connection", result = "success", ip = %self.peer, agency = %agency, closed = "by the agency, while it waited for the draw");
                    return Ok(false);
                }
                Some(Err(e)) => return Err(unreadable(e)),
                Some(Ok(message)) => message,
            };
            match self.session.on_message(message, &self.shared.rules) {
                Step::Reply(reply) => self.send(reply).await?,
                Step::Close { code, message } => return Err(protocol(code, message)),
                _ => {}
            }
        };
        match status {
            Some(Ok(DrawStatus::Done(draw))) => self.send_winners(agency, &draw).await?,
            Some(Ok(DrawStatus::Failed(reason))) => {
                return Err(protocol(ErrorCode::DrawFailed, reason.to_string()));
            }
            // The sender lives in `Shared`, which this task holds, so it is never dropped;
            // `Pending` is what wait_for waited past.
            Some(Ok(DrawStatus::Pending) | Err(_)) | None => {
                self.cancelled().await?;
                return Ok(false);
            }
        }
        Ok(true)
    }

    async fn send_winners(&mut self, agency: AgencyId, draw: &Draw) -> Result<(), HandlerError> {
        let winners = draw.winners_for(agency);
        let mut chunks: Vec<ServerMessage> = winners
            .chunks(WINNERS_PER_FRAME)
            .map(|chunk| ServerMessage::Winners {
                documents: chunk.iter().map(|d| d.as_str().to_owned()).collect(),
                last: false,
            })
            .collect();
        match chunks.last_mut() {
            Some(ServerMessage::Winners { last, .. }) => *last = true,
            _ => chunks.push(ServerMessage::Winners { documents: Vec::new(), last: true }),
        }
        // The receipt first: the agency checks what the central holds before its winners.
        let receipt = draw.receipt_for(agency);
        chunks.insert(0, ServerMessage::Receipt { bets: receipt.bets, sha256: receipt.sha256 });
        self.send_all(chunks).await?;
        info!(action = "ganadores_enviados", result = "success", agency = %agency, cant_ganadores = winners.len(), apuestas = receipt.bets, sha256 = %receipt.hex());
        Ok(())
    }
}
