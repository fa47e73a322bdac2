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
use std::io;
use std::os::unix::fs::FileExt;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock, PoisonError};

use tokio::sync::{Mutex, Notify};
use tracing::{info, warn};

use super::disk::Files;
use super::journal::Record;
use super::wal::{
    GroupWrite, StopAt, WriteFailure, cut_back, free_bytes, sync_dir_of, write_group,
};
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
    /// `LOTTERY_TEST_STOP_AT`: where a test stops the committer ([`StopAt`]).
    pub(super) stop_at: Option<Arc<StopAt>>,
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
            stop_at: StopAt::from_env().map(Arc::new),
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
        let mut compact_due = false;
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
            let crc = crc32fast::hash(&rows);
            // The journal's write: the group line, the rows it carries, its batch lines.
            let mut line = String::with_capacity(64);
            Record::Group { start, end, crc, carried: true }.write_to(&mut line);
            let mut journal_bytes = Vec::with_capacity(line.len() + rows.len() + batch_lines.len());
            journal_bytes.extend_from_slice(line.as_bytes());
            journal_bytes.extend_from_slice(&rows);
            journal_bytes.extend_from_slice(batch_lines.as_bytes());
            // What the journal holds once compacted: the same records, without the rows.
            let header = Record::Group { start, end, crc, carried: false };
            let mut compact_lines = String::with_capacity(batch_lines.len() + 48);
            header.write_to(&mut compact_lines);
            compact_lines.push_str(&batch_lines);
            records.insert(0, header);
            let write = GroupWrite {
                at: start,
                rows,
                journal_at: journal_start,
                journal_bytes,
                bets_synced: files.bets_synced,
            };
            let written = self.write(files, write).await;
            match written {
                Ok(journal_len) => {
                    files.compact.push_str(&compact_lines);
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
                    // The rows carried since the last compaction (the journal past its records):
                    // not the journal's length, which records alone may pass for good, so that
                    // every group would compact again.
                    let carried = journal_len.saturating_sub(files.compact.len() as u64);
                    compact_due = carried > self.options.journal_compact_bytes
                        && journal_len >= files.compact_retry_at;
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
        // After the acknowledgements: the group is durable in the synced journal, and a
        // compaction syncs up to LOTTERY_JOURNAL_COMPACT_BYTES of the bets file.
        if compact_due {
            self.compact(files).await;
        }
    }

    /// Writes `group`'s journal write and syncs the journal, *then* writes its rows to the bets
    /// file (see `wal.rs`); on failure cuts both files back. Returns the journal's new length.
    /// Writes nothing when the filesystem would be left with less than `min_free_bytes` free.
    async fn write(&self, files: &mut Files, group: GroupWrite) -> Result<u64, WriteFailure> {
        let (bets, journal, sync, dirty) =
            (files.bets.clone(), files.journal.clone(), self.options.sync, files.dirty);
        let dir_unsynced = files.dir_unsynced.then(|| self.journal_path.clone());
        let floor = self.options.min_free_bytes;
        let started = std::time::Instant::now();
        let hook = self.stop_at.clone();
        let written = tokio::task::spawn_blocking(move || {
            let hook = hook.as_deref();
            // One statvfs per group commit (also read for the free-bytes gauge when the floor is
            // off); an error here is left to the write to report. Both files grow: the journal
            // by its write (rows included), the bets file by the rows.
            let free = free_bytes(&bets);
            if floor > 0
                && let Some(free) = free
            {
                let needed = (group.rows.len() + group.journal_bytes.len()) as u64;
                if free.saturating_sub(needed) < floor {
                    return (Err(WriteFailure::LowSpace { free }), dirty, Some(free), false);
                }
            }
            let (at, journal_at) = (group.at, group.journal_at);
            let mut dir_synced = false;
            let result = (|| {
                if let Some(journal_path) = &dir_unsynced {
                    sync_dir_of(journal_path)?;
                    dir_synced = true;
                }
                if dirty {
                    cut_back(&bets, at, &journal, journal_at, sync)?;
                }
                write_group(&bets, &journal, &group, sync, hook)
            })();
            if let Err(e) = result {
                // Best effort: what cannot be cut now is cut before the next write, or at start-up
                // (a group torn in the journal is never acknowledged: recovery cuts it).
                let cut = cut_back(&bets, at, &journal, journal_at, sync);
                return (Err(WriteFailure::Io(e)), cut.is_err(), free, dir_synced);
            }
            (result.map_err(WriteFailure::Io), false, free, dir_synced)
        })
        .await;
        let (result, still_dirty, free, dir_synced) = written.unwrap_or_else(|e| {
            (Err(WriteFailure::Io(io::Error::other(e.to_string()))), true, None, false)
        });
        if let Some(free) = free {
            self.free_bytes.store(free, Ordering::Relaxed);
        }
        metrics::histogram!(COMMIT_SECONDS_METRIC).record(started.elapsed().as_secs_f64());
        files.dirty = still_dirty;
        files.dir_unsynced &= !dir_synced;
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
        // A compaction's rename not yet durable: a power loss could bring back the old journal,
        // without this record (see `Files::dir_unsynced`).
        let dir_unsynced = files.dir_unsynced.then(|| self.journal_path.clone());
        let written = tokio::task::spawn_blocking(move || {
            if let Some(journal_path) = &dir_unsynced {
                sync_dir_of(journal_path)?;
            }
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
                files.dir_unsynced = false;
                if let Record::Ready { .. } | Record::Draw { .. } = record {
                    record.write_to(&mut files.compact);
                }
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
