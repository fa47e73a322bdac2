//! The lottery: ready → barrier → draw → winners.
//!
//! An agency's `ReadyForLottery` is recorded durably by the store, then adds the agency's party
//! to a `tokio::sync::Barrier` with one party per agency (once, even across reconnections and
//! restarts). The barrier's leader runs the draw and publishes its result on a `watch` channel,
//! where every connection waiting for the draw reads it and sends its agency's winners.
//!
//! With a store several centrals share (PostgreSQL), agencies also become ready on the other
//! centrals: a watcher task adds the party of each agency the store's ready feed names (a
//! notification), re-reads every ready agency when the feed may have missed one and every
//! [`READY_POLL`], and adds each one's party once. Every
//! central's barrier then completes; the store records the draw once, whichever central's leader
//! gets there first, and the others read it. A draw the database does not take is tried again
//! until it does (see `Lottery::run_draw`): the agencies waiting for it keep waiting.

use std::collections::HashSet;
use std::num::NonZeroU32;
use std::sync::{Arc, Mutex as StdMutex, PoisonError};
use std::time::Duration;

use tokio::sync::{Barrier, watch};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{error, info, warn};

use super::metrics;
use crate::domain::{AgencyId, Draw};
use crate::storage::{READY_POLL, SessionEpoch, StorageError, Store};

/// The first pause before trying a draw again when the database could not be reached; it
/// doubles up to [`DRAW_RETRY_MAX`].
const DRAW_RETRY_FIRST: Duration = Duration::from_millis(100);

/// The longest pause between two tries of the draw.
const DRAW_RETRY_MAX: Duration = Duration::from_secs(2);

/// The barrier and the draw's result, shared by every connection, and what it needs to run the
/// draw: the store, and where its tasks run.
#[derive(Debug)]
pub(super) struct Lottery {
    /// One party per agency; each agency waits on it once, at its first `ReadyForLottery`.
    barrier: Barrier,
    /// Set once, by the barrier's leader, when the draw has run.
    draw: watch::Sender<DrawStatus>,
    /// The agencies whose party has joined the barrier.
    joined: StdMutex<HashSet<AgencyId>>,
    /// `LOTTERY_AGENCIES`: agencies 1 to this take part.
    agencies: NonZeroU32,
    store: Arc<Store>,
    /// Where the barrier parties and the ready watcher run, and what stops them.
    tasks: TaskTracker,
    token: CancellationToken,
}

/// Where the draw is.
#[derive(Debug, Clone)]
pub(super) enum DrawStatus {
    Pending,
    Done(Arc<Draw>),
    Failed(Arc<str>),
}

impl Lottery {
    /// A lottery of `agencies` agencies over `store`; its tasks run on `tasks` until `token`.
    pub(super) fn new(
        store: Arc<Store>,
        agencies: NonZeroU32,
        tasks: TaskTracker,
        token: CancellationToken,
    ) -> Self {
        let (draw, _) = watch::channel(DrawStatus::Pending);
        let barrier = Barrier::new(agencies.get() as usize);
        Self { barrier, draw, joined: StdMutex::default(), agencies, store, tasks, token }
    }

    /// The draw's status, to wait on until it is no longer `Pending`.
    pub(super) fn subscribe(&self) -> watch::Receiver<DrawStatus> {
        self.draw.subscribe()
    }

    /// Whether `agency` takes part in this lottery.
    fn expects(&self, agency: AgencyId) -> bool {
        agency.get() <= self.agencies.get()
    }

    /// Gives the agencies the store found ready at start-up (before a restart) their parties.
    pub(super) fn restore(self: &Arc<Self>, ready: &[AgencyId]) {
        for &agency in ready {
            if self.expects(agency) {
                self.join_barrier(agency);
            } else {
                warn!(action = "recovery", result = "fail", agency = %agency, error = "ready agency outside LOTTERY_AGENCIES: ignored");
            }
        }
    }

    /// Records, durably, that `agency` is ready and, the first time, counts it in the barrier.
    ///
    /// # Errors
    /// The store's, when the record cannot be written.
    pub(super) async fn ready(
        self: &Arc<Self>,
        agency: AgencyId,
        epoch: SessionEpoch,
    ) -> Result<(), StorageError> {
        let newly_ready = self.store.mark_ready(agency, epoch).await?;
        // Again too: with a shared store, it may have been recorded ready by another central
        // before this one's watcher saw it. Counted before its line is logged, and its party
        // spawned after: the draw it may complete is logged after it.
        let (first, ready) = self.count_in(agency);
        if newly_ready {
            let expected = self.agencies;
            info!(action = "ready_for_lottery", result = "success", agency = %agency, ready, expected);
        } else {
            info!(action = "ready_for_lottery", result = "success", agency = %agency, again = true);
        }
        if first {
            self.spawn_party();
        }
        Ok(())
    }

    /// Counts `agency` in, once: whether this is the first time, and how many agencies this
    /// central counts as ready (with a shared store, those it has heard of so far).
    fn count_in(&self, agency: AgencyId) -> (bool, usize) {
        let mut joined = self.joined.lock().unwrap_or_else(PoisonError::into_inner);
        let first = joined.insert(agency);
        let ready = joined.len();
        drop(joined);
        if first {
            metrics::agency_ready(agency, ready);
        }
        (first, ready)
    }

    /// Adds `agency`'s party to the barrier, once it is durably ready (or was, before a
    /// restart, or on another central), and only the first time. The party is a task of its
    /// own, not the agency's connection: a connection can end (closed, replaced by a newer one)
    /// at any moment, and the agency must still count, exactly once. When the last party
    /// arrives, it runs the draw.
    pub(super) fn join_barrier(self: &Arc<Self>, agency: AgencyId) {
        if self.count_in(agency).0 {
            self.spawn_party();
        }
    }

    /// One party of the barrier, as a task of its own; the last one to arrive runs the draw.
    fn spawn_party(self: &Arc<Self>) {
        let lottery = self.clone();
        self.tasks.spawn(async move {
            if let Some(arrival) = lottery.token.run_until_cancelled(lottery.barrier.wait()).await
                && arrival.is_leader()
            {
                lottery.run_draw().await;
            }
        });
    }

    /// Watches a store other centrals share for agencies that became ready on any of them, and
    /// adds each one's party (once): each agency the store's feed names as it hears of it, and
    /// every ready agency, re-read, whenever the feed may have missed one and every
    /// [`READY_POLL`], so a lost notification delays the draw by a second at most. Ends when
    /// every agency has joined, or at shutdown.
    pub(super) fn watch_ready(self: &Arc<Self>) {
        let Some(mut feed) = self.store.ready_feed() else { return };
        let lottery = self.clone();
        self.tasks.spawn(async move {
            let mut failing = false;
            let mut ignored = HashSet::new();
            let mut reread = true;
            // One clock for the whole watch: news arriving more often than it ticks must not
            // put the full re-read off.
            let start = tokio::time::Instant::now() + READY_POLL;
            let mut poll = tokio::time::interval_at(start, READY_POLL);
            poll.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                let news = feed.take();
                let mut ready = news.agencies;
                if reread || news.missed {
                    match lottery.store.ready_agencies().await {
                        Ok(all) => {
                            failing = false;
                            reread = false;
                            ready.extend(all);
                        }
                        Err(e) => {
                            reread = true;
                            if !failing {
                                failing = true;
                                warn!(action = "ready_watch", result = "fail", error = %e, retry_in_ms = READY_POLL.as_millis() as u64);
                            }
                        }
                    }
                }
                for agency in ready {
                    if lottery.expects(agency) {
                        lottery.join_barrier(agency);
                    } else if ignored.insert(agency) {
                        warn!(action = "ready_for_lottery", result = "fail", agency = %agency, error = "ready agency outside LOTTERY_AGENCIES: ignored");
                    }
                }
                let joined = lottery.joined.lock().unwrap_or_else(PoisonError::into_inner).len();
                if joined >= lottery.agencies.get() as usize {
                    return;
                }
                tokio::select! {
                    () = lottery.token.cancelled() => return,
                    () = feed.changed() => {}
                    _ = poll.tick() => reread = true,
                }
            }
        });
    }

    /// One line per agency (bets, batches, winners) and one with the totals and how long this
    /// process ingested for (first stored batch → draw).
    async fn log_summary(&self, draw: &Draw) {
        let agencies = match self.store.agencies().await {
            Ok(agencies) => agencies,
            Err(e) => {
                warn!(action = "resumen", result = "fail", error = %e);
                return;
            }
        };
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
    /// `sorteo` is logged once per lottery: a draw the store already held (before a restart, or
    /// recorded by another central) is restored, and logged as `sorteo_restaurado`.
    ///
    /// A database that cannot be reached (down, restarting, a connection cut mid-draw), or that
    /// refuses the draw, is waited for: the draw is tried again, with backoff, until it runs or
    /// the central stops, while the waiting agencies keep their connections (they ping; the wait
    /// for the draw has no deadline). Retrying is safe: the draw's transaction either recorded
    /// the draw, which the retry then reads, or left nothing. Any other failure (stored bets
    /// that contradict a recorded draw) is published at once.
    async fn run_draw(&self) {
        let mut delay = DRAW_RETRY_FIRST;
        let status = loop {
            match self.store.draw().await {
                Ok(drawn) => {
                    let draw = drawn.draw;
                    // Counted before the line that says so, which tests and operators wait for.
                    metrics::draw_done();
                    let action = if drawn.recorded_now { "sorteo" } else { "sorteo_restaurado" };
                    info!(
                        action,
                        result = "success",
                        apuestas = draw.bets(),
                        ganadores = draw.total_winners(),
                        sha256 = %draw.digest().hex()
                    );
                    let draw = Arc::new(draw);
                    // The winners go out first: the summary reads every agency's progress and
                    // logs a line for each, which at thousands of agencies takes a while.
                    self.draw.send_replace(DrawStatus::Done(draw.clone()));
                    self.log_summary(&draw).await;
                    return;
                }
                // A database error that looks permanent is retried here too: ending the lottery
                // would send every waiting agency away, and a database that refuses the draw
                // (a role's rights, a standby during a failover) can be mended while they wait.
                Err(
                    e @ (StorageError::Database { .. } | StorageError::DatabaseRejected { .. }),
                ) => {
                    let retry_in_ms = delay.as_millis() as u64;
                    error!(action = "sorteo", result = "fail", error = %e, retry_in_ms);
                    if self.token.run_until_cancelled(tokio::time::sleep(delay)).await.is_none() {
                        // Shutting down: the waiting connections end with the token.
                        return;
                    }
                    delay = (delay * 2).min(DRAW_RETRY_MAX);
                }
                Err(e) => {
                    error!(action = "sorteo", result = "fail", error = %e);
                    break DrawStatus::Failed(e.to_string().into());
                }
            }
        };
        self.draw.send_replace(status);
    }
}
