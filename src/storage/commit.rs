//! Group commit: the queue of submitted batches, the commit that writes a group of them, and
//! the committer task the store owns.
//!
//! Every write goes through one `tokio::sync::Mutex` (held across the `.await` of the disk work,
//! hence Tokio's). A batch first joins a queue, then takes the mutex; whoever holds it commits
//! *everything* queued so far with one write and one sync per file, and answers each batch. Batches
//! that arrive while a sync is in flight wait for the mutex and are committed together by the next
//! holder, so a sync serves every agency that was waiting for one.
//!
//! The [`Committer`] is a task started by [`BetStore::open_with`](super::BetStore::open_with) that
//! commits batches as they are submitted, so a connection can read its next batches while earlier
//! ones are being synced. The store owns it: `close` stops it after it has committed what is
//! queued, and dropping the store stops it too.

use std::collections::HashMap;
use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::sync::{Arc, PoisonError, Weak};
use std::task::{Context, Poll};

use tokio::sync::{Notify, oneshot};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn};

use super::error::{StorageError, interrupted};
use super::files::Files;
use super::journal::Record;
use super::ledger::AgencyProgress;
use super::{MAX_GROUP_BYTES, Shared, Stored, rows};
use crate::domain::{AgencyId, Bets, Document, is_winning};

#[derive(Debug)]
pub(super) struct Pending {
    agency: AgencyId,
    seq: u64,
    bets: u64,
    rows: Vec<u8>,
    winners: Vec<Document>,
    done: oneshot::Sender<Result<Stored, StorageError>>,
}

/// The answer to a submitted batch, once its group is committed (see [`BetStore::submit`](super::BetStore::submit)).
#[derive(Debug)]
pub struct Ack(oneshot::Receiver<Result<Stored, StorageError>>);

/// Where a committer sends a batch's answer.
pub(super) type AckSender = oneshot::Sender<Result<Stored, StorageError>>;

impl Ack {
    /// A new answer to await, and where the committer sends it.
    pub(super) fn channel() -> (AckSender, Self) {
        let (done, answer) = oneshot::channel();
        (done, Self(answer))
    }
}

impl Future for Ack {
    type Output = Result<Stored, StorageError>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        Pin::new(&mut self.0).poll(cx).map(|answer| {
            answer.unwrap_or_else(|_| {
                let reason = "the store stopped before committing the batch".into();
                Err(StorageError::Interrupted { path: PathBuf::new(), reason })
            })
        })
    }
}

impl Shared {
    /// Queues batch `seq` of `agency` for the next group commit and returns its answer to await.
    /// Batches are committed in the order they are submitted; the [`Committer`] (or any
    /// [`Shared::commit_queued`]) commits them. This is how a connection keeps several batches in
    /// flight.
    pub(super) fn submit(&self, agency: AgencyId, seq: u64, bets: &(impl Bets + ?Sized)) -> Ack {
        let rows = rows::encode_rows(bets);
        let winners = bets
            .bet_texts()
            .filter(|(_, bet)| is_winning(bet.number))
            .map(|(_, bet)| bet.to_document())
            .collect();
        let (done, answer) = oneshot::channel();
        let count = bets.bet_count() as u64;
        let pending = Pending { agency, seq, bets: count, rows, winners, done };
        self.queue.lock().unwrap_or_else(PoisonError::into_inner).push(pending);
        self.queued.notify_one();
        Ack(answer)
    }

    /// Commits everything queued so far (waiting for a commit in flight first), in groups of at
    /// most [`MAX_GROUP_BYTES`] of rows.
    pub(super) async fn commit_queued(&self) {
        let mut files = self.files.lock().await;
        // An earlier holder may have committed everything already; then there is nothing to do.
        loop {
            let group = {
                let mut queue = self.queue.lock().unwrap_or_else(PoisonError::into_inner);
                let (mut taken, mut bytes) = (0, 0u64);
                for pending in queue.iter() {
                    bytes += pending.rows.len() as u64;
                    if taken > 0 && bytes > MAX_GROUP_BYTES {
                        break;
                    }
                    taken += 1;
                }
                queue.drain(..taken).collect::<Vec<_>>()
            };
            if group.is_empty() {
                break;
            }
            self.commit(&mut files, group).await;
        }
    }

    async fn commit(&self, files: &mut Files, group: Vec<Pending>) {
        let (start, journal_start) = (files.ledger.committed, files.journal_len);
        let closed = files.ledger.draw.is_some();
        let limit = self.options.max_bets_per_agency;
        // Each agency's progress as this group would leave it, applied only once it is durable.
        let mut tentative: HashMap<AgencyId, AgencyProgress> = HashMap::new();
        let mut records = Vec::new();
        let mut rows = Vec::new();
        let mut batch_lines = String::new();
        let mut outcomes = Vec::with_capacity(group.len());
        for pending in &group {
            let progress = tentative
                .entry(pending.agency)
                .or_insert_with(|| files.ledger.progress(pending.agency));
            let outcome = if files.closed {
                Err(interrupted(&self.path, &"the store is closed"))
            } else if pending.seq == 0 || pending.bets == 0 {
                let reason = if pending.seq == 0 {
                    "batch numbers start at 1"
                } else {
                    "a batch holds at least one bet"
                };
                Err(StorageError::BadBatch { agency: pending.agency, seq: pending.seq, reason })
            } else if progress.ready || closed {
                Err(StorageError::AgencyClosed { agency: pending.agency })
            } else if pending.seq <= progress.last_seq {
                Ok(Stored::Duplicate)
            } else if pending.seq != progress.last_seq + 1 {
                let expected = progress.last_seq + 1;
                Err(StorageError::SequenceGap {
                    agency: pending.agency,
                    expected,
                    got: pending.seq,
                })
            } else if progress.stored_bets.saturating_add(pending.bets) > limit {
                let (agency, stored) = (pending.agency, progress.stored_bets);
                if files.limit_logged.insert(agency) {
                    warn!(action = "agency_limit", result = "fail", agency = %agency, stored, limit, error = "the agency's batches are refused: it reached LOTTERY_MAX_BETS_PER_AGENCY");
                }
                Err(StorageError::AgencyLimit { agency, stored, bets: pending.bets, limit })
            } else {
                rows.extend_from_slice(&pending.rows);
                progress.last_seq = pending.seq;
                progress.stored_bets += pending.bets;
                let record = Record::Batch {
                    agency: pending.agency,
                    seq: pending.seq,
                    bets: pending.bets,
                    end: start + rows.len() as u64,
                    winners: Some(pending.winners.clone()),
                };
                record.write_to(&mut batch_lines);
                records.push(record);
                Ok(Stored::New)
            };
            outcomes.push(outcome);
        }
        if !rows.is_empty() {
            // The group's record first: its rows' byte range and CRC-32, then its batches.
            let end = start + rows.len() as u64;
            let header = Record::Group { start, end, crc: crc32fast::hash(&rows) };
            let mut text = String::with_capacity(batch_lines.len() + 48);
            header.write_to(&mut text);
            text.push_str(&batch_lines);
            records.insert(0, header);
            let written = self.write(files, start, rows, journal_start, text).await;
            match written {
                Ok(journal_len) => {
                    self.groups.fetch_add(1, Ordering::Relaxed);
                    if files.low_space {
                        files.low_space = false;
                        info!(action = "disk_space", result = "success", path = %self.path.display(), min_free_bytes = self.options.min_free_bytes);
                    }
                    self.first_commit.get_or_init(std::time::Instant::now);
                    for record in &records {
                        // Built from the checks above, in order: applying cannot fail.
                        let _ = files.ledger.apply(record);
                    }
                    files.journal_len = journal_len;
                }
                Err(failure) => {
                    if let WriteFailure::LowSpace { free } = failure
                        && !files.low_space
                    {
                        files.low_space = true;
                        let floor = self.options.min_free_bytes;
                        warn!(action = "disk_space", result = "fail", path = %self.path.display(), free_bytes = free, min_free_bytes = floor, error = "batches are refused until space is freed (LOTTERY_MIN_FREE_BYTES)");
                    }
                    // Nothing of the group is stored: its new batches fail, and so does a retry of
                    // one of them that came in the same group (a `Duplicate` of nothing durable).
                    for (outcome, pending) in outcomes.iter_mut().zip(&group) {
                        let durable = files.ledger.progress(pending.agency).last_seq;
                        let lost = match outcome {
                            Ok(Stored::New) => true,
                            Ok(Stored::Duplicate) => pending.seq > durable,
                            Err(_) => false,
                        };
                        if lost {
                            *outcome =
                                Err(failure.to_error(&self.path, self.options.min_free_bytes));
                        }
                    }
                }
            }
        }
        for (pending, outcome) in group.into_iter().zip(outcomes) {
            // The agency's task may be gone (its connection closed); its batch still counts.
            let _ = pending.done.send(outcome);
        }
    }

    /// Writes `records` at `journal_at` and syncs the journal, *then* writes `rows` at `at` and
    /// syncs the bets file; on failure cuts both files back. Returns the journal's new length.
    /// Writes nothing when the filesystem would be left with less than `min_free_bytes` free.
    async fn write(
        &self,
        files: &mut Files,
        at: u64,
        rows: Vec<u8>,
        journal_at: u64,
        records: String,
    ) -> Result<u64, WriteFailure> {
        let (bets, journal, sync, dirty) =
            (files.bets.clone(), files.journal.clone(), self.sync, files.dirty);
        let floor = self.options.min_free_bytes;
        let started = std::time::Instant::now();
        let written = tokio::task::spawn_blocking(move || {
            if floor > 0 {
                // One statvfs per group commit; an error here is left to the write to report.
                if let Ok(stats) = rustix::fs::fstatvfs(&*bets) {
                    let free = stats.f_bavail.saturating_mul(stats.f_frsize);
                    let needed = (rows.len() + records.len()) as u64;
                    if free.saturating_sub(needed) < floor {
                        return (Err(WriteFailure::LowSpace { free }), dirty);
                    }
                }
            }
            let result = (|| {
                if dirty {
                    cut_back(&bets, at, &journal, journal_at, sync)?;
                }
                // The journal first: the bets file never holds rows it does not describe.
                journal.write_all_at(records.as_bytes(), journal_at)?;
                if sync {
                    journal.sync_data()?;
                }
                bets.write_all_at(&rows, at)?;
                if sync {
                    bets.sync_data()?;
                }
                Ok(journal_at + records.len() as u64)
            })();
            if let Err(e) = result {
                // Best effort: what cannot be cut now is cut before the next write, or at start-up
                // (a group whose rows are short is never acknowledged: recovery cuts it).
                let cut = cut_back(&bets, at, &journal, journal_at, sync);
                return (Err(WriteFailure::Io(e)), cut.is_err());
            }
            (result.map_err(WriteFailure::Io), false)
        })
        .await;
        let (result, still_dirty) = written
            .unwrap_or_else(|e| (Err(WriteFailure::Io(io::Error::other(e.to_string()))), true));
        metrics::histogram!("lottery_commit_seconds").record(started.elapsed().as_secs_f64());
        files.dirty = still_dirty;
        result
    }

    /// Appends one record (ready, draw) to the journal and syncs it, after cutting what a failed
    /// write left past the committed ends.
    pub(super) async fn append_record(
        &self,
        files: &mut Files,
        record: Record,
    ) -> Result<(), StorageError> {
        if files.closed {
            return Err(interrupted(&self.path, &"the store is closed"));
        }
        let mut line = String::new();
        record.write_to(&mut line);
        let (journal, at, sync) = (files.journal.clone(), files.journal_len, self.sync);
        let (bets, committed, dirty) = (files.bets.clone(), files.ledger.committed, files.dirty);
        let written = tokio::task::spawn_blocking(move || {
            if dirty {
                // What a failed write left past the committed ends goes before the record.
                cut_back(&bets, committed, &journal, at, sync)?;
            }
            journal.write_all_at(line.as_bytes(), at)?;
            if sync {
                journal.sync_data()?;
            }
            Ok::<_, io::Error>(at + line.len() as u64)
        })
        .await
        .unwrap_or_else(|e| Err(io::Error::other(e.to_string())));
        match written {
            Ok(len) => {
                files.journal_len = len;
                files.dirty = false;
                // The record was built from the ledger's own state: applying it cannot fail.
                let _ = files.ledger.apply(&record);
                Ok(())
            }
            Err(source) => {
                files.dirty = true;
                Err(StorageError::Write { path: self.journal_path.clone(), source })
            }
        }
    }
}

/// Why a group commit wrote nothing.
enum WriteFailure {
    /// Free space would fall below `min_free_bytes`: nothing was written.
    LowSpace { free: u64 },
    /// A write or sync failed; what was written is cut back.
    Io(io::Error),
}

impl WriteFailure {
    /// What a batch of the failed group is answered.
    fn to_error(&self, path: &std::path::Path, floor: u64) -> StorageError {
        match self {
            Self::LowSpace { free } => {
                StorageError::LowDiskSpace { path: path.to_owned(), free: *free, floor }
            }
            Self::Io(e) => StorageError::Write {
                path: path.to_owned(),
                source: io::Error::new(e.kind(), e.to_string()),
            },
        }
    }
}

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
        let task = tokio::spawn(run(Arc::downgrade(shared), shared.queued.clone(), token.clone()));
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
        // A batch committed by `store_batch` itself leaves nothing for the committer to do.
        if !shared.queue.lock().unwrap_or_else(PoisonError::into_inner).is_empty() {
            shared.commit_queued().await;
        }
    }
    if let Some(shared) = shared.upgrade() {
        shared.commit_queued().await;
    }
}

/// Cuts what a failed write left past the committed ends: the bets file first and synced, then
/// the journal and synced. A cut that is not durable could reappear after a power loss once a
/// later record made the journal's shorter length durable: rows past the journal's end, which
/// recovery refuses. In this order a crash in between leaves a last group short of its rows,
/// which recovery cuts.
fn cut_back(bets: &File, at: u64, journal: &File, journal_at: u64, sync: bool) -> io::Result<()> {
    bets.set_len(at)?;
    if sync {
        bets.sync_data()?;
    }
    journal.set_len(journal_at)?;
    if sync {
        journal.sync_data()?;
    }
    Ok(())
}
