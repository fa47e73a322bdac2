//! The connections anyone can open and keep: the [`Newcomers`] that have not said `Hello`
//! (`LOTTERY_MAX_PENDING_HELLOS`), and the [`Throttle`] that keeps what such peers cause to one
//! log line a second.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex as StdMutex, PoisonError};
use std::time::Duration;

use tokio_util::sync::CancellationToken;

/// Keeps a kind of event that anyone can cause (refused, evicted or failed connections of peers
/// that never said `Hello`) to one log line a second, so a flood cannot flood the log.
#[derive(Debug, Default)]
pub(crate) struct Throttle {
    since_log: u64,
    last_log: Option<tokio::time::Instant>,
}

impl Throttle {
    /// Counts one more event. When a line is due (the first, then at most one a second),
    /// returns how many events it stands for.
    pub(crate) fn due(&mut self) -> Option<u64> {
        self.since_log += 1;
        let due = self.last_log.is_none_or(|at| at.elapsed() >= Duration::from_secs(1));
        due.then(|| {
            self.last_log = Some(tokio::time::Instant::now());
            std::mem::take(&mut self.since_log)
        })
    }
}

/// Connections that have not completed `Hello`, oldest first. Their number is bounded by
/// `LOTTERY_MAX_PENDING_HELLOS`: a new connection beyond it closes the oldest one (with `Busy`)
/// rather than being refused, so however fast a flood of connections that never say `Hello`
/// comes, an agency that says it right away gets through. Once `Hello` is accepted the connection
/// leaves (one session per agency bounds the rest).
#[derive(Debug)]
pub(crate) struct Newcomers {
    limit: usize,
    queue: StdMutex<NewcomerQueue>,
}

#[derive(Debug, Default)]
struct NewcomerQueue {
    next_id: u64,
    waiting: VecDeque<(u64, CancellationToken)>,
}

/// One connection's place among the [`Newcomers`]; dropping it leaves.
#[derive(Debug)]
pub(crate) struct Newcomer {
    id: u64,
    /// Cancelled when a newer connection took this place.
    pub(crate) evicted: CancellationToken,
    newcomers: Arc<Newcomers>,
}

impl Newcomers {
    pub(crate) fn new(limit: usize) -> Arc<Self> {
        Arc::new(Self { limit, queue: StdMutex::default() })
    }

    /// A place for a new connection, and whether the oldest one was evicted to make it.
    pub(crate) fn admit(self: &Arc<Self>) -> (Newcomer, bool) {
        let evicted = CancellationToken::new();
        let mut queue = self.queue.lock().unwrap_or_else(PoisonError::into_inner);
        let oldest =
            if queue.waiting.len() >= self.limit { queue.waiting.pop_front() } else { None };
        let evicted_one = oldest.map(|(_, token)| token.cancel()).is_some();
        let id = queue.next_id;
        queue.next_id += 1;
        queue.waiting.push_back((id, evicted.clone()));
        (Newcomer { id, evicted, newcomers: self.clone() }, evicted_one)
    }
}

impl Drop for Newcomer {
    fn drop(&mut self) {
        let mut queue = self.newcomers.queue.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(i) = queue.waiting.iter().position(|(id, _)| *id == self.id) {
            queue.waiting.remove(i);
        }
    }
}
