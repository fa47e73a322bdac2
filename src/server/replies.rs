//! The replies a connection owes its agency, in the order its messages came, and each batch's
//! acknowledgement: the reply to a committed (or refused) batch, its log lines and its metrics.

use std::collections::VecDeque;
use std::time::Instant;

use tracing::{debug, error, info, warn};

use super::error::{HandlerError, storage_code, storage_error};
use super::metrics;
use crate::domain::{AgencyId, BetBatch};
use crate::protocol::{ErrorCode, RejectReason, ServerMessage};
use crate::storage::{Ack, StorageError, Stored};

/// A reply owed to the agency.
pub(super) enum Outgoing {
    Reply(ServerMessage),
    /// A batch waiting for its group commit.
    Ack(PendingAck),
}

/// A batch waiting for its group commit; `bets` kept only for DEBUG logging.
pub(super) struct PendingAck {
    pub(super) agency: AgencyId,
    pub(super) seq: u64,
    pub(super) count: usize,
    pub(super) bets: Option<BetBatch>,
    pub(super) ack: Ack,
    /// When the batch was read: the start of its acknowledgement latency.
    pub(super) read_at: Instant,
}

/// The front batch's answer, or never when the front is not a batch.
pub(super) async fn front_ack(outgoing: &mut VecDeque<Outgoing>) -> Result<Stored, StorageError> {
    match outgoing.front_mut() {
        Some(Outgoing::Ack(pending)) => (&mut pending.ack).await,
        _ => std::future::pending().await,
    }
}

impl PendingAck {
    /// The reply to the batch once committed (or refused) with `answer`, logged and counted.
    ///
    /// # Errors
    /// A protocol error that ends the connection, for answers the agency cannot recover from.
    pub(super) fn reply(
        self,
        answer: Result<Stored, StorageError>,
    ) -> Result<ServerMessage, HandlerError> {
        let Self { agency, seq, count, bets, read_at, .. } = self;
        metrics::batch_acked(read_at.elapsed());
        match answer {
            Ok(Stored::New) => {
                BatchOutcome::Stored.count(agency, count);
                debug!(action = "agency_progress", result = "in_progress", agency = %agency, lotes = seq);
                info!(action = "apuesta_recibida", result = "success", cantidad = count, agency = %agency, seq);
                for bet in bets.iter().flat_map(BetBatch::iter) {
                    debug!(action = "apuesta_almacenada", result = "success", dni = %bet.document(), numero = %bet.number);
                }
                Ok(ServerMessage::BatchAccepted { seq, count: count as u32 })
            }
            Ok(Stored::Duplicate) => {
                BatchOutcome::Duplicate.count(agency, count);
                info!(action = "batch_retry", result = "success", agency = %agency, seq, cantidad = count);
                Ok(ServerMessage::BatchAccepted { seq, count: count as u32 })
            }
            Err(e) if storage_code(&e) != ErrorCode::StorageFailed => {
                if matches!(e, StorageError::AgencyClosed { .. }) {
                    warn!(action = "apuesta_recibida", result = "fail", cantidad = count, agency = %agency, seq, error = %e);
                }
                Err(storage_error(&e))
            }
            Err(e) => {
                BatchOutcome::Rejected.count(agency, count);
                if matches!(e, StorageError::AgencyLimit { .. } | StorageError::LowDiskSpace { .. })
                {
                    // The store logs the condition once when it starts; a line per batch would let
                    // one agency flood the log.
                    debug!(action = "apuesta_recibida", result = "fail", cantidad = count, agency = %agency, seq, error = %e);
                } else {
                    error!(action = "apuesta_recibida", result = "fail", cantidad = count, agency = %agency, seq, error = %e);
                }
                let message = format!("not stored: {e}");
                Ok(ServerMessage::BatchRejected { seq, reason: RejectReason::Storage, message })
            }
        }
    }
}

/// What became of a batch, for the metrics (see `server::metrics`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum BatchOutcome {
    Stored,
    Duplicate,
    Rejected,
}

impl BatchOutcome {
    /// The `result` label of `lottery_batches_total`.
    fn label(self) -> &'static str {
        match self {
            Self::Stored => "stored",
            Self::Duplicate => "duplicate",
            Self::Rejected => "rejected",
        }
    }

    /// Counts a batch of `bets` bets of `agency` with this outcome.
    pub(super) fn count(self, agency: AgencyId, bets: usize) {
        metrics::agency_counter(metrics::BATCHES, agency, &[("result", self.label())]).increment(1);
        let bets_metric = match self {
            Self::Stored => metrics::BETS_STORED,
            Self::Rejected => metrics::BETS_REJECTED,
            Self::Duplicate => return,
        };
        metrics::agency_counter(bets_metric, agency, &[]).increment(bets as u64);
    }
}
