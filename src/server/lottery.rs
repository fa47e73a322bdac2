//! The lottery: ready → barrier → draw → winners.
//!
//! An agency's `ReadyForLottery` is recorded durably by the store, then adds the agency's party
//! to a `tokio::sync::Barrier` with one party per agency (once, even across reconnections and
//! restarts). The barrier's leader runs the draw and publishes its result on a `watch` channel,
//! where every connection waiting for the draw reads it and sends its agency's winners.

use std::sync::Arc;

use tokio::sync::{Barrier, watch};
use tracing::{error, info};

use super::Shared;
use crate::domain::{AgencyId, Draw};
use crate::storage::StorageError;

/// The barrier and the draw's result, shared by every connection.
#[derive(Debug)]
pub(super) struct Lottery {
    /// One party per agency; each agency waits on it once, at its first `ReadyForLottery`.
    barrier: Barrier,
    /// Set once, by the barrier's leader, when the draw has run.
    draw: watch::Sender<DrawStatus>,
    /// The journal held the draw when this process started: running it again restores it.
    recorded: bool,
}

/// Where the draw is.
#[derive(Debug, Clone)]
pub(super) enum DrawStatus {
    Pending,
    Done(Arc<Draw>),
    Failed(Arc<str>),
}

impl Lottery {
    /// A lottery of `agencies` agencies; `recorded` when the store already holds its draw.
    pub(super) fn new(agencies: usize, recorded: bool) -> Self {
        let (draw, _) = watch::channel(DrawStatus::Pending);
        Self { barrier: Barrier::new(agencies), draw, recorded }
    }

    /// The draw's status, to wait on until it is no longer `Pending`.
    pub(super) fn subscribe(&self) -> watch::Receiver<DrawStatus> {
        self.draw.subscribe()
    }
}

impl Shared {
    /// Records, durably, that `agency` is ready and, the first time, counts it in the barrier.
    ///
    /// # Errors
    /// The store's, when the record cannot be written.
    pub(super) async fn ready(self: &Arc<Self>, agency: AgencyId) -> Result<(), StorageError> {
        let readiness = self.store.mark_ready(agency).await?;
        if readiness.newly_ready {
            let expected = self.config.agencies;
            info!(action = "ready_for_lottery", result = "success", agency = %agency, ready = readiness.ready, expected);
            metrics::gauge!("lottery_agencies_ready").set(readiness.ready as f64);
            self.join_barrier();
        } else {
            info!(action = "ready_for_lottery", result = "success", agency = %agency, again = true);
        }
        Ok(())
    }

    /// Adds an agency's party to the barrier, once it is durably ready (or was, before a
    /// restart). The party is a task of its own, not the agency's connection: a connection can
    /// end (closed, replaced by a newer one) at any moment, and the agency must still count,
    /// exactly once. When the last party arrives, it runs the draw.
    pub(super) fn join_barrier(self: &Arc<Self>) {
        let shared = self.clone();
        self.tasks.spawn(async move {
            if let Some(arrival) =
                shared.token.run_until_cancelled(shared.lottery.barrier.wait()).await
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
                let action = if self.lottery.recorded { "sorteo_restaurado" } else { "sorteo" };
                info!(
                    action,
                    result = "success",
                    apuestas = draw.bets(),
                    ganadores = draw.total_winners()
                );
                self.log_summary(&draw).await;
                metrics::gauge!("lottery_draw_done").set(1.0);
                DrawStatus::Done(Arc::new(draw))
            }
            Err(e) => {
                error!(action = "sorteo", result = "fail", error = %e);
                DrawStatus::Failed(e.to_string().into())
            }
        };
        self.lottery.draw.send_replace(status);
    }
}
