//! [`Board`]: the status the HTTP listener serves, rebuilt about once a second by a task of its
//! own from the store's record, this central's sessions and the draw. Requests only read what
//! was last published: however many browsers poll, the store is read once a second.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex as StdMutex, PoisonError};
use std::time::Duration;

use tokio_util::sync::CancellationToken;
use tracing::warn;

use super::super::activity::{Activity, now_ms};
use super::super::lottery::{DrawStatus, Lottery};
use super::super::metrics;
use super::status::{self, DrawSeen, Inputs, RateHistory, Status};
use crate::storage::{LotteryRecord, Store};

/// How often the status is rebuilt (the page polls as often).
const REFRESH: Duration = Duration::from_secs(1);

/// How long one read of the store may take before the store counts as unreachable.
const READ_TIMEOUT: Duration = Duration::from_secs(2);

/// The status last published, and whether the central can store.
#[derive(Debug)]
pub(crate) struct Board {
    central: String,
    expected: u32,
    version: AtomicU64,
    published: StdMutex<Published>,
}

#[derive(Debug, Clone)]
struct Published {
    /// `/status.json`'s body.
    json: Arc<[u8]>,
    /// `Err(why)` while the central cannot store: recovering, the store unreachable, stopping.
    ready: Result<(), String>,
}

/// What the board reads each time it rebuilds the status.
pub(crate) struct Sources {
    pub(crate) store: Arc<Store>,
    pub(crate) lottery: Arc<Lottery>,
    pub(crate) activity: Arc<Activity>,
}

impl Board {
    /// A board for `central`, a lottery of `expected` agencies, not ready until
    /// [`Board::run`] has read the opened store.
    pub(crate) fn new(central: String, expected: u32) -> Arc<Self> {
        let board = Self {
            central,
            expected,
            version: AtomicU64::new(0),
            published: StdMutex::new(Published { json: Arc::from(&b"{}"[..]), ready: Ok(()) }),
        };
        board.publish_placeholder("starting", "start-up recovery is not done");
        Arc::new(board)
    }

    /// `/status.json`'s body.
    pub(crate) fn status_json(&self) -> Arc<[u8]> {
        self.lock().json.clone()
    }

    /// `Ok` when the central can store; else why not.
    pub(crate) fn readiness(&self) -> Result<(), String> {
        self.lock().ready.clone()
    }

    /// Rebuilds the status every [`REFRESH`] (and as soon as the draw is published) until
    /// `token` is cancelled; then publishes `stopping`.
    pub(crate) async fn run(self: Arc<Self>, sources: Sources, token: CancellationToken) {
        let mut draw = sources.lottery.subscribe();
        let mut draw_open = true;
        let mut seen = DrawSeen::Pending;
        let mut history = RateHistory::default();
        let mut record = LotteryRecord::default();
        let mut failing = false;
        let mut tick = tokio::time::interval(REFRESH);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                () = token.cancelled() => break,
                _ = tick.tick() => {}
                changed = draw.changed(), if draw_open => draw_open = changed.is_ok(),
            }
            seen = match (&*draw.borrow_and_update(), seen) {
                (DrawStatus::Done(_), done @ DrawSeen::Done(..)) => done,
                (DrawStatus::Done(d), _) => DrawSeen::Done(d.clone(), now_ms()),
                (DrawStatus::Failed(e), _) => DrawSeen::Failed(e.to_string()),
                (DrawStatus::Pending, _) => DrawSeen::Pending,
            };
            metrics::refresh(&sources.store);
            let read =
                tokio::time::timeout(READ_TIMEOUT, sources.store.record(status::MAX_ROWS)).await;
            let store_error = match read {
                Ok(Ok(read)) => {
                    record = read;
                    None
                }
                Ok(Err(e)) => Some(e.to_string()),
                Err(_) => Some(format!("the store did not answer within {READ_TIMEOUT:?}")),
            };
            if store_error.is_some() != failing {
                failing = store_error.is_some();
                if let Some(error) = &store_error {
                    warn!(action = "status", result = "fail", error = %error);
                }
            }
            let total = record.totals.bets;
            let inputs = Inputs {
                version: self.version.fetch_add(1, Ordering::Relaxed) + 1,
                central: &self.central,
                shared_store: sources.store.is_shared(),
                expected: self.expected,
                now_ms: now_ms(),
                record: &record,
                store_error: store_error.clone(),
                seen: &sources.activity.snapshot(),
                draw: &seen,
                rate: history.sample(std::time::Instant::now(), total),
            };
            let ready = match store_error {
                None => Ok(()),
                Some(e) => Err(format!("the store cannot be reached: {e}")),
            };
            self.publish(&status::build(&inputs), ready);
        }
        self.publish_placeholder("stopping", "the central is shutting down");
    }

    fn publish_placeholder(&self, phase: &'static str, why: &str) {
        let version = self.version.fetch_add(1, Ordering::Relaxed) + 1;
        let status = status::placeholder(version, phase, &self.central, self.expected);
        self.publish(&status, Err(why.to_owned()));
    }

    fn publish(&self, status: &Status, ready: Result<(), String>) {
        // A plain struct of numbers and strings: serializing it cannot fail.
        let json = serde_json::to_vec(status).unwrap_or_else(|_| b"{}".to_vec());
        *self.lock() = Published { json: json.into(), ready };
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Published> {
        self.published.lock().unwrap_or_else(PoisonError::into_inner)
    }
}
