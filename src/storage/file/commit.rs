//! Group commit: the queue of submitted batches, and the commit that writes a group of them.
//!
//! Every write goes through one `tokio::sync::Mutex` (held across the `.await` of the disk work,
//! hence Tokio's). A connection puts its batch in a queue and awaits its answer; the committer
//! takes the mutex and commits *everything* queued so far with one write and one sync per file,
//! and answers each batch. Batches that arrive while a sync is in flight are committed together
//! by the next group, so a sync serves every agency that was waiting for one.
//!
//! The committer task (`committer.rs`) commits batches as they are submitted, so a connection can
//! read its next batches while earlier ones are being synced.

use std::collections::HashMap;
use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock, PoisonError};

use tokio::sync::{Mutex, Notify};
use tracing::{info, warn};

use super::disk::Files;
use super::journal::Record;
use crate::domain::{AgencyId, Bets, Document, is_winning};
use crate::storage::decide::{Proposal, decide, take_group};
use crate::storage::error::interrupted;
use crate::storage::{
    Ack, AckSender, AgencyProgress, COMMIT_SECONDS_METRIC, StorageError, StoreOptions, Stored, rows,
};

/// Most bytes of rows one group commit writes. Batches queued beyond it wait for the next group.
/// Recovery of an older journal (rows written first) cuts at most this much past its last
/// recorded batch (see `recovery.rs`).
pub const MAX_GROUP_BYTES: u64 = 1 << 20;

/// `Shared::free_bytes` before its first reading.
const NOT_READ: u64 = u64::MAX;

/// What the store and its committer task share.
#[derive(Debug)]
pub(super) struct Shared {
    pub(super) path: PathBuf,
    pub(super) journal_path: PathBuf,
    pub(super) options: StoreOptions,
    queue: std::sync::Mutex<Vec<Pending>>,
    /// Woken when a batch is queued.
    queued: Arc<Notify>,
    /// The `tokio::sync::Mutex` around the bets file (and its journal, and the ledger), held
    /// across the disk work of a commit, a ready or a draw record, and the draw.
    pub(super) files: Mutex<Files>,
    groups: AtomicU64,
    /// Free bytes on the bets file's filesystem at the last reading ([`NOT_READ`]: none yet).
    free_bytes: AtomicU64,
    /// When this process first committed a batch (the start of its ingest).
    first_commit: OnceLock<std::time::Instant>,
}

#[derive(Debug)]
struct Pending {
    agency: AgencyId,
    seq: u64,
    bets: u64,
    rows: Vec<u8>,
    winners: Vec<Document>,
    done: AckSender,
}

impl Shared {
    pub(super) fn new(
        path: PathBuf,
        journal_path: PathBuf,
        options: StoreOptions,
        files: Files,
    ) -> Self {
        let free_bytes = AtomicU64::new(free_bytes(&files.bets).unwrap_or(NOT_READ));
        Self {
            path,
            journal_path,
            options,
            queue: std::sync::Mutex::default(),
            queued: Arc::new(Notify::new()),
            files: Mutex::new(files),
            groups: AtomicU64::new(0),
            free_bytes,
            first_commit: OnceLock::new(),
        }
    }

    /// Free bytes on the bets file's filesystem at the last reading (at open, then at every
    /// group commit's free-space check).
    pub(super) fn free_bytes(&self) -> Option<u64> {
        Some(self.free_bytes.load(Ordering::Relaxed)).filter(|&free| free != NOT_READ)
    }

    /// Group commits so far.
    pub(super) fn groups(&self) -> u64 {
        self.groups.load(Ordering::Relaxed)
    }

    /// When this process first committed a batch, if it did.
    pub(super) fn first_commit(&self) -> Option<std::time::Instant> {
        self.first_commit.get().copied()
    }

    /// Woken when a batch is queued: what the committer waits on.
    pub(super) fn queued(&self) -> Arc<Notify> {
        self.queued.clone()
    }

    /// Whether no batch waits for a group.
    pub(super) fn nothing_queued(&self) -> bool {
        self.queue.lock().unwrap_or_else(PoisonError::into_inner).is_empty()
    }

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
        let (done, answer) = Ack::channel();
        let count = bets.bet_count() as u64;
        let pending = Pending { agency, seq, bets: count, rows, winners, done };
        self.queue.lock().unwrap_or_else(PoisonError::into_inner).push(pending);
        self.queued.notify_one();
        answer
    }

    /// Commits everything queued so far (waiting for a commit in flight first), in groups of at
    /// most [`MAX_GROUP_BYTES`] of rows.
    pub(super) async fn commit_queued(&self) {
        let mut files = self.files.lock().await;
        // An earlier holder may have committed everything already; then there is nothing to do.
        loop {
            let group = {
                let mut queue = self.queue.lock().unwrap_or_else(PoisonError::into_inner);
                take_group(&mut queue, MAX_GROUP_BYTES, |p| p.rows.len() as u64)
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
            let batch = Proposal { agency: pending.agency, seq: pending.seq, bets: pending.bets };
            let outcome = if files.closed {
                Err(interrupted(&self.path, &"the store is closed"))
            } else {
                decide(progress, batch, closed, limit)
            };
            match &outcome {
                Ok(Stored::New) => {
                    rows.extend_from_slice(&pending.rows);
                    let record = Record::Batch {
                        agency: pending.agency,
                        seq: pending.seq,
                        bets: pending.bets,
                        end: start + rows.len() as u64,
                        winners: Some(pending.winners.clone()),
                    };
                    record.write_to(&mut batch_lines);
                    records.push(record);
                }
                Err(StorageError::AgencyLimit { agency, stored, .. })
                    if files.limit_logged.insert(*agency) =>
                {
                    warn!(action = "agency_limit", result = "fail", agency = %agency, stored, limit, error = "the agency's batches are refused: it reached LOTTERY_MAX_BETS_PER_AGENCY");
                }
                _ => {}
            }
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
            (files.bets.clone(), files.journal.clone(), self.options.sync, files.dirty);
        let floor = self.options.min_free_bytes;
        let started = std::time::Instant::now();
        let written = tokio::task::spawn_blocking(move || {
            // One statvfs per group commit (also read for the free-bytes gauge when the floor is
            // off); an error here is left to the write to report.
            let free = free_bytes(&bets);
            if floor > 0
                && let Some(free) = free
            {
                let needed = (rows.len() + records.len()) as u64;
                if free.saturating_sub(needed) < floor {
                    return (Err(WriteFailure::LowSpace { free }), dirty, Some(free));
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
                return (Err(WriteFailure::Io(e)), cut.is_err(), free);
            }
            (result.map_err(WriteFailure::Io), false, free)
        })
        .await;
        let (result, still_dirty, free) = written.unwrap_or_else(|e| {
            (Err(WriteFailure::Io(io::Error::other(e.to_string()))), true, None)
        });
        if let Some(free) = free {
            self.free_bytes.store(free, Ordering::Relaxed);
        }
        metrics::histogram!(COMMIT_SECONDS_METRIC).record(started.elapsed().as_secs_f64());
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
        let (journal, at, sync) = (files.journal.clone(), files.journal_len, self.options.sync);
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

/// Cuts what a failed write left past the committed ends: the bets file first and synced, then
/// the journal and synced. A cut that is not durable could reappear after a power loss once a
/// later record made the journal's shorter length durable: rows past the journal's end, which
/// recovery refuses. In this order a crash in between leaves a last group short of its rows,
/// which recovery cuts.
/// Free bytes (for an unprivileged user) on `file`'s filesystem; `None` when it cannot be read.
fn free_bytes(file: &File) -> Option<u64> {
    let stats = rustix::fs::fstatvfs(file).ok()?;
    Some(stats.f_bavail.saturating_mul(stats.f_frsize))
}

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
