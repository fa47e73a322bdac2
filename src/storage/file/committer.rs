//! The [`Committer`]: the task that commits submitted batches as they come, each group while
//! the next one queues. The store owns it (mini-redis's `DbDropGuard` is the model): `open`
//! starts it, `close` stops it once what is queued is committed, and dropping the store stops it
//! too.

use std::sync::{Arc, PoisonError, Weak};

use tokio::sync::Notify;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn};

use super::commit::Shared;
use super::disk::Files;
use super::wal::{Where, compact};
use crate::storage::error::interrupted;

/// The task that commits submitted batches as they come, each group while the next one queues.
/// Owned by the store (mini-redis's `DbDropGuard` is the model): [`Committer::stop`] commits what
/// is queued and waits for the task, and dropping it tells the task to do the same on its own.
#[derive(Debug)]
pub(super) struct Committer {
    token: CancellationToken,
    task: std::sync::Mutex<Option<JoinHandle<()>>>,
}

impl Committer {
    /// Starts the committer of `shared`. It holds the store only while it commits, so dropping
    /// the store releases the files as soon as no commit is in flight.
    pub(super) fn start(shared: &Arc<Shared>) -> Self {
        let token = CancellationToken::new();
        let task = tokio::spawn(run(Arc::downgrade(shared), shared.queued(), token.clone()));
        Self { token, task: std::sync::Mutex::new(Some(task)) }
    }

    /// Commits what is queued and waits for the task to end.
    pub(super) async fn stop(&self) {
        self.token.cancel();
        let task = self.task.lock().unwrap_or_else(PoisonError::into_inner).take();
        if let Some(task) = task
            && let Err(e) = task.await
        {
            error!(action = "shutdown", result = "in_progress", step = "committer failed", error = %e);
        }
    }
}

impl Drop for Committer {
    fn drop(&mut self) {
        self.token.cancel();
    }
}

/// Commits batches as they are submitted until `token` is cancelled; then commits what is left.
async fn run(shared: Weak<Shared>, queued: Arc<Notify>, token: CancellationToken) {
    loop {
        tokio::select! {
            () = queued.notified() => {}
            () = token.cancelled() => break,
        }
        let Some(shared) = shared.upgrade() else { return };
        // A wake-up for batches an earlier commit already took leaves nothing to do (tests also
        // commit by hand, through `store_batch`).
        if !shared.nothing_queued() {
            shared.commit_queued().await;
        }
    }
    if let Some(shared) = shared.upgrade() {
        shared.commit_queued().await;
    }
}

/// Compaction: the committer's too (after a group that took the journal past its bound, and at
/// close).
impl Shared {
    /// Syncs the bets file and rewrites the journal without the rows it carries (see `wal.rs`).
    /// A failure is logged and leaves the journal as it was (it still carries them).
    pub(super) async fn compact(&self, files: &mut Files) {
        let (bets, sync, committed) =
            (files.bets.clone(), self.options.sync, files.ledger.committed);
        // The records are lent to the blocking task, not copied (they grow with every batch);
        // they come back whether it finishes or panics (its clone is dropped either way).
        let text = Arc::new(std::mem::take(&mut files.compact));
        let (path, lent) = (self.journal_path.clone(), Arc::clone(&text));
        // The bets file is synced first: a stop inside the compaction finds all of it synced.
        let at = Where {
            bets_synced: committed,
            group_start: committed,
            journal_start: files.journal_len,
        };
        let before = files.journal_len;
        let started = std::time::Instant::now();
        let hook = self.stop_at.clone();
        let compacted = tokio::task::spawn_blocking(move || {
            let hook = hook.as_deref();
            compact(&bets, &path, &lent, sync, hook, at)
        })
        .await
        .unwrap_or_else(|e| Err(interrupted(&self.journal_path, &e)));
        files.compact = Arc::try_unwrap(text).unwrap_or_else(|shared| (*shared).clone());
        match compacted {
            Ok(new) => {
                files.journal = Arc::new(new.journal);
                files.journal_len = files.compact.len() as u64;
                files.bets_synced = committed;
                files.dir_unsynced = !new.dir_synced;
                info!(
                    action = "journal_compacted",
                    result = "success",
                    bytes_before = before,
                    bytes_after = files.journal_len,
                    ms = started.elapsed().as_millis() as u64
                );
            }
            Err(e) => {
                files.compact_retry_at =
                    files.journal_len.saturating_add(self.options.journal_compact_bytes);
                warn!(action = "journal_compacted", result = "fail", bytes = before, error = %e, retry_at_bytes = files.compact_retry_at);
            }
        }
    }
}
