//! `BetStore`: the bets file, its journal, and the per-agency state that changes with them.
//!
//! # Durability
//! A batch is acknowledged only once its journal record *and* its rows are on disk, the journal
//! first: a group commit appends its `group` record (the rows' byte range and CRC-32) and its
//! `batch` records to the journal in one write and `fdatasync`s it, then writes the rows at the
//! committed end of the bets file and `fdatasync`s that (see [`journal`] for the format). So the
//! bets file never holds bytes the journal does not describe, and recovery at start-up can tell
//! the one unacknowledged group a crash can leave (its rows short, or failing their CRC) from a
//! journal that lost records (rows past its last `end`: refused). A crash at any point leaves
//! exactly the acknowledged batches, each whole, and a file the original Python `load_bets`
//! reads. Recovery cuts nothing else: damage it cannot explain by a crash stops start-up instead
//! (see [`recovery`]). Both files are locked (`flock`) while a store has them
//! open, so a second central on the same files refuses to start.
//!
//! # Limits
//! A batch that would take its agency past `max_bets_per_agency`, or a group commit that would
//! leave less than `min_free_bytes` free on the bets file's filesystem (checked once per group),
//! is refused before anything is written; each condition is logged once when it starts.
//!
//! # Group commit
//! Every write goes through one `tokio::sync::Mutex` (held across the `.await` of the disk work,
//! hence Tokio's). A batch first joins a queue, then takes the mutex; whoever holds it commits
//! *everything* queued so far with one write and one sync per file, and answers each batch. Batches
//! that arrive while a sync is in flight wait for the mutex and are committed together by the next
//! holder, so a sync serves every agency that was waiting for one.
//!
//! The mutex also guards each agency's batch sequence number and ready flag, so "is this agency
//! still open, is this its next batch, append it" is one atomic step, and the draw reads a file
//! no append can interleave with.

mod journal;
mod recovery;
mod rows;

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock, PoisonError};

use std::collections::HashMap;
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::sync::{Mutex, Notify, oneshot};
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::domain::{AgencyId, Bet, Document, Draw, has_won};
use journal::{Ledger, Record};

pub use journal::Progress;
pub(crate) use rows::{csv_reader, fields, record_line};
pub use rows::{load_bets, store_bets};

/// What can go wrong storing or reading bets.
#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    #[error("cannot open {path}: {source}")]
    Open { path: PathBuf, source: io::Error },
    #[error("cannot write {path}: {source}")]
    Write { path: PathBuf, source: io::Error },
    #[error("cannot read bets file {path}: {source}")]
    Read { path: PathBuf, source: csv::Error },
    #[error("bets file {path}, line {line}: {reason}")]
    BadRow { path: PathBuf, line: u64, reason: String },
    #[error("{path} is inconsistent: {reason}")]
    Corrupt { path: PathBuf, reason: String },
    #[error("reading bets file {path} was interrupted: {reason}")]
    Interrupted { path: PathBuf, reason: String },
    #[error("agency {agency} already declared ReadyForLottery: it cannot add bets")]
    AgencyClosed { agency: AgencyId },
    #[error("agency {agency} sent batch {got}, but its next batch is {expected}")]
    SequenceGap { agency: AgencyId, expected: u64, got: u64 },
    #[error("{path} is locked by another central{}: two centrals on one bets file would corrupt it; stop the other one, or give this one its own BETS_FILE", holder.map(|pid| format!(" (process {pid})")).unwrap_or_default())]
    Locked { path: PathBuf, holder: Option<u32> },
    #[error(
        "agency {agency} has {stored} bets stored; {bets} more would pass the limit of {limit} per agency (LOTTERY_MAX_BETS_PER_AGENCY)"
    )]
    AgencyLimit { agency: AgencyId, stored: u64, bets: u64, limit: u64 },
    #[error(
        "{path}: {free} bytes free on its filesystem, below the floor of {floor} (LOTTERY_MIN_FREE_BYTES) once this group is written; batches are refused until space is freed"
    )]
    LowDiskSpace { path: PathBuf, free: u64, floor: u64 },
    #[error("agency {agency}, batch {seq}: {reason}")]
    BadBatch { agency: AgencyId, seq: u64, reason: &'static str },
}

/// Most bytes of rows one group commit writes. Batches queued beyond it wait for the next group.
/// Recovery of an older journal (rows written first) cuts at most this much past its last
/// recorded batch (see [`recovery`]).
pub const MAX_GROUP_BYTES: u64 = 1 << 20;

/// The default of [`StoreOptions::max_bets_per_agency`] (`LOTTERY_MAX_BETS_PER_AGENCY`).
pub const DEFAULT_MAX_BETS_PER_AGENCY: u64 = 10_000_000;

/// The default of [`StoreOptions::min_free_bytes`] (`LOTTERY_MIN_FREE_BYTES`): 64 MiB.
pub const DEFAULT_MIN_FREE_BYTES: u64 = 64 << 20;

/// How a [`BetStore`] writes, and what it refuses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StoreOptions {
    /// fdatasync every group commit before acknowledging it (`LOTTERY_FSYNC`).
    pub sync: bool,
    /// Most bets stored for one agency, adopted rows included.
    pub max_bets_per_agency: u64,
    /// Free bytes the bets file's filesystem must keep after a group commit; 0: no check.
    pub min_free_bytes: u64,
}

impl Default for StoreOptions {
    fn default() -> Self {
        Self {
            sync: true,
            max_bets_per_agency: DEFAULT_MAX_BETS_PER_AGENCY,
            min_free_bytes: DEFAULT_MIN_FREE_BYTES,
        }
    }
}

/// Whether `store_batch` wrote the batch or had it already.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stored {
    /// Appended now.
    New,
    /// A retry of a batch already stored: nothing written.
    Duplicate,
}

/// Where `mark_ready` left the lottery.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Readiness {
    /// False when this agency had already declared itself ready.
    pub newly_ready: bool,
    /// Agencies ready so far, this one included.
    pub ready: usize,
}

/// What `BetStore::open` found and repaired.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Recovery {
    /// Committed bytes of the bets file.
    pub bets_len: u64,
    /// Bytes of the bets file that were cut: the rows of a group commit that was never
    /// acknowledged (a crash mid-write), or an adopted file's torn last row.
    pub cut_bets_bytes: u64,
    /// Bytes of the journal that were cut: a torn tail, or the records of a group commit that was
    /// never acknowledged.
    pub cut_journal_bytes: u64,
    /// The bets file had no journal: its rows, every one a valid bet, were adopted as they are,
    /// counted per agency.
    pub adopted: bool,
    /// The journal was of an older format (rows written first: format 2, or legacy lines without
    /// check fields); it was rewritten in the current one.
    pub journal_converted: bool,
    /// Batches recorded in the journal.
    pub batches: u64,
    /// Agencies that had declared ReadyForLottery.
    pub ready: Vec<AgencyId>,
    /// Whether the draw had run.
    pub drawn: bool,
}

/// The bets file and the state that goes with it. Cheap to share behind an `Arc`.
#[derive(Debug)]
pub struct BetStore {
    path: PathBuf,
    journal_path: PathBuf,
    sync: bool,
    options: StoreOptions,
    queue: std::sync::Mutex<Vec<Pending>>,
    /// Woken when a batch is queued.
    queued: Notify,
    files: Mutex<Files>,
    groups: AtomicU64,
    /// When this process first committed a batch (the start of its ingest).
    first_commit: OnceLock<std::time::Instant>,
}

/// Counters for benchmarks and tests.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StoreStats {
    /// Group commits that wrote rows (each one write and, with sync on, one fdatasync per file).
    pub groups: u64,
    /// fdatasync calls made for batches and journal records.
    pub syncs: u64,
}

#[derive(Debug)]
struct Pending {
    agency: AgencyId,
    seq: u64,
    bets: u64,
    rows: Vec<u8>,
    winners: Vec<Document>,
    done: oneshot::Sender<Result<Stored, StorageError>>,
}

/// The answer to a submitted batch, once its group is committed (see [`BetStore::submit`]).
#[derive(Debug)]
pub struct Ack(oneshot::Receiver<Result<Stored, StorageError>>);

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

#[derive(Debug)]
struct Files {
    bets: Arc<File>,
    journal: Arc<File>,
    ledger: Ledger,
    journal_len: u64,
    /// A failed write may have left bytes past the committed ends: cut them before the next one.
    dirty: bool,
    /// Set by `close`: the files are unlocked, nothing more is written.
    closed: bool,
    /// Agencies whose limit was logged (once each).
    limit_logged: std::collections::HashSet<AgencyId>,
    /// Whether the free-space floor was hit and not yet left (logged once each way).
    low_space: bool,
}

impl Files {
    fn new(bets: File, journal: File, ledger: Ledger, journal_len: u64) -> Self {
        Self {
            bets: Arc::new(bets),
            journal: Arc::new(journal),
            ledger,
            journal_len,
            dirty: false,
            closed: false,
            limit_logged: std::collections::HashSet::new(),
            low_space: false,
        }
    }
}

impl BetStore {
    /// Opens (creating if needed) the bets file and its journal `<path>.journal`, with the
    /// default limits; `sync: false` skips every fsync (for measuring their cost only:
    /// acknowledgements are then not durable). See [`BetStore::open_with`].
    ///
    /// # Errors
    /// As [`BetStore::open_with`].
    pub async fn open(
        path: impl Into<PathBuf>,
        sync: bool,
    ) -> Result<(Self, Recovery), StorageError> {
        Self::open_with(path, StoreOptions { sync, ..StoreOptions::default() }).await
    }

    /// Opens (creating if needed) the bets file and its journal `<path>.journal`, locks both,
    /// and recovers from a crash: the journal's torn last write, and the last group commit when
    /// its rows were never all written, are cut (see [`recovery`] for exactly what may be cut).
    /// A bets file without a journal is adopted when every row is a valid bet.
    ///
    /// # Errors
    /// `Open` when a file cannot be opened, created or locked; `Locked` when another process
    /// has them; `Corrupt` when the journal is damaged beyond a torn last write, contradicts
    /// itself, or does not match the bets file (nothing is changed then); `BadRow` or `Read`
    /// when a bets file to adopt has a row that is not a valid bet.
    pub async fn open_with(
        path: impl Into<PathBuf>,
        options: StoreOptions,
    ) -> Result<(Self, Recovery), StorageError> {
        let path = path.into();
        let sync = options.sync;
        let mut journal_path = path.clone().into_os_string();
        journal_path.push(".journal");
        let journal_path = PathBuf::from(journal_path);
        let (bets, jp) = (path.clone(), journal_path.clone());
        let recovered =
            tokio::task::spawn_blocking(move || recovery::recover(&bets, &jp, sync)).await;
        let (files, recovery) = recovered.map_err(|e| interrupted(&path, &e))??;
        let store = Self {
            path,
            journal_path,
            sync,
            options,
            queue: std::sync::Mutex::default(),
            files: Mutex::new(files),
            queued: Notify::new(),
            groups: AtomicU64::new(0),
            first_commit: OnceLock::new(),
        };
        Ok((store, recovery))
    }

    /// Commits and syncs so far.
    pub fn stats(&self) -> StoreStats {
        let groups = self.groups.load(Ordering::Relaxed);
        StoreStats { groups, syncs: if self.sync { 2 * groups } else { 0 } }
    }

    /// The bets file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The journal's path.
    pub fn journal_path(&self) -> &Path {
        &self.journal_path
    }

    /// Committed bytes of the bets file.
    pub async fn committed_len(&self) -> u64 {
        self.files.lock().await.ledger.committed
    }

    /// `agency`'s durable progress: its last stored batch, bets stored, and ready flag.
    pub async fn progress(&self, agency: AgencyId) -> Progress {
        self.files.lock().await.ledger.progress(agency)
    }

    /// Stores batch `seq` of `agency` whole, durably, or nothing of it.
    ///
    /// A `seq` at or below the last stored one is a retry: acknowledged as `Stored::Duplicate`,
    /// not written again.
    ///
    /// # Errors
    /// `AgencyClosed` after the agency's `ReadyForLottery`; `SequenceGap` when `seq` skips ahead;
    /// `Write` when the write or sync fails (nothing of the batch is left in the file).
    pub async fn store_batch(
        &self,
        agency: AgencyId,
        seq: u64,
        bets: &[Bet],
    ) -> Result<Stored, StorageError> {
        let ack = self.submit(agency, seq, bets);
        self.commit_queued().await;
        // Answered by whoever committed the group it was in, before releasing the mutex.
        ack.await
    }

    /// Queues batch `seq` of `agency` for the next group commit and returns its answer to await.
    /// Batches are committed in the order they are submitted; [`BetStore::run_committer`] (or
    /// any [`BetStore::commit_queued`]) commits them. This is how a connection keeps several
    /// batches in flight.
    pub fn submit(&self, agency: AgencyId, seq: u64, bets: &[Bet]) -> Ack {
        let rows = rows::encode_rows(bets);
        let winners = bets.iter().filter(|b| has_won(b)).map(|b| b.document.clone()).collect();
        let (done, answer) = oneshot::channel();
        let pending = Pending { agency, seq, bets: bets.len() as u64, rows, winners, done };
        self.queue.lock().unwrap_or_else(PoisonError::into_inner).push(pending);
        self.queued.notify_one();
        Ack(answer)
    }

    /// Commits everything queued so far (waiting for a commit in flight first), in groups of at
    /// most [`MAX_GROUP_BYTES`] of rows.
    pub async fn commit_queued(&self) {
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

    /// Commits submitted batches as they come, each group while the next one queues, until
    /// `token` is cancelled; then commits what is left and returns.
    pub async fn run_committer(&self, token: CancellationToken) {
        loop {
            tokio::select! {
                () = self.queued.notified() => self.commit_queued().await,
                () = token.cancelled() => break,
            }
        }
        self.commit_queued().await;
    }

    async fn commit(&self, files: &mut Files, group: Vec<Pending>) {
        let (start, journal_start) = (files.ledger.committed, files.journal_len);
        let closed = files.ledger.draw.is_some();
        let limit = self.options.max_bets_per_agency;
        // Each agency's progress as this group would leave it, applied only once it is durable.
        let mut tentative: HashMap<AgencyId, Progress> = HashMap::new();
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
            let group = Record::Group { start, end, crc: crc32fast::hash(&rows) };
            let mut text = String::with_capacity(batch_lines.len() + 48);
            group.write_to(&mut text);
            text.push_str(&batch_lines);
            records.insert(0, group);
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
                Err(WriteFailure::LowSpace { free }) => {
                    let floor = self.options.min_free_bytes;
                    if !files.low_space {
                        files.low_space = true;
                        warn!(action = "disk_space", result = "fail", path = %self.path.display(), free_bytes = free, min_free_bytes = floor, error = "batches are refused until space is freed (LOTTERY_MIN_FREE_BYTES)");
                    }
                    for outcome in outcomes.iter_mut().filter(|o| matches!(o, Ok(Stored::New))) {
                        let path = self.path.clone();
                        *outcome = Err(StorageError::LowDiskSpace { path, free, floor });
                    }
                }
                Err(WriteFailure::Io(e)) => {
                    for outcome in outcomes.iter_mut().filter(|o| matches!(o, Ok(Stored::New))) {
                        let source = io::Error::new(e.kind(), e.to_string());
                        *outcome = Err(StorageError::Write { path: self.path.clone(), source });
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
                    bets.set_len(at)?;
                    journal.set_len(journal_at)?;
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
                let cut = bets.set_len(at).and_then(|()| journal.set_len(journal_at));
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

    /// Records, durably, that `agency` has sent everything; from now on its batches are refused.
    ///
    /// # Errors
    /// `Write` when the journal cannot be written.
    pub async fn mark_ready(&self, agency: AgencyId) -> Result<Readiness, StorageError> {
        let mut files = self.files.lock().await;
        let newly_ready = !files.ledger.progress(agency).ready;
        if newly_ready {
            self.append_record(&mut files, Record::Ready { agency }).await?;
        }
        let ready = files.ledger.agencies.values().filter(|p| p.ready).count();
        Ok(Readiness { newly_ready, ready })
    }

    /// Every agency's durable progress, in agency order (agencies with no batch nor ready flag
    /// are absent).
    pub async fn agencies(&self) -> Vec<(AgencyId, Progress)> {
        let files = self.files.lock().await;
        let mut agencies: Vec<_> = files.ledger.agencies.iter().map(|(a, p)| (*a, *p)).collect();
        agencies.sort_by_key(|(a, _)| *a);
        agencies
    }

    /// When this process first committed a batch, if it did.
    pub fn first_commit(&self) -> Option<std::time::Instant> {
        self.first_commit.get().copied()
    }

    /// Agencies that have declared ReadyForLottery, in order.
    pub async fn ready_agencies(&self) -> Vec<AgencyId> {
        let files = self.files.lock().await;
        let mut ready: Vec<AgencyId> =
            files.ledger.agencies.iter().filter(|(_, p)| p.ready).map(|(a, _)| *a).collect();
        ready.sort();
        ready
    }

    /// Runs the draw over every stored bet and records it. The winners come from the index the
    /// journal keeps as batches are stored (`has_won` on each bet), so the file is not re-read;
    /// a file adopted without a journal is read with `load_bets`. Once recorded, running it
    /// again (after a restart) checks the result covers the same bets, so the winners are
    /// identical.
    ///
    /// # Errors
    /// `Read` or `BadRow` when the file cannot be read back; `Corrupt` when it changed since the
    /// recorded draw; `Write` when the record cannot be written.
    pub async fn draw(&self) -> Result<Draw, StorageError> {
        let mut files = self.files.lock().await;
        let end = files.ledger.committed;
        let draw = if files.ledger.winners_unknown {
            let path = self.path.clone();
            let read = tokio::task::spawn_blocking(move || Draw::from_bets(load_bets(&path)?));
            read.await.unwrap_or_else(|e| Err(interrupted(&self.path, &e)))?
        } else {
            Draw::from_winners(files.ledger.winners.clone(), files.ledger.bets)
        };
        match files.ledger.draw {
            Some((bets, recorded_end)) if (bets, recorded_end) != (draw.bets(), end) => {
                let reason = format!(
                    "the draw ran over {bets} bets ({recorded_end} bytes); the file now has {} ({end} bytes)",
                    draw.bets()
                );
                Err(StorageError::Corrupt { path: self.path.clone(), reason })
            }
            Some(_) => Ok(draw),
            None => {
                self.append_record(&mut files, Record::Draw { bets: draw.bets(), end }).await?;
                Ok(draw)
            }
        }
    }

    /// Waits for any commit in flight to finish, so the process can exit with nothing
    /// half-written, and releases the files' locks: nothing more is written through this store.
    pub async fn close(&self) {
        let mut files = self.files.lock().await;
        files.closed = true;
        recovery::unlock(&files.bets);
        recovery::unlock(&files.journal);
    }

    async fn append_record(&self, files: &mut Files, record: Record) -> Result<(), StorageError> {
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
                bets.set_len(committed)?;
                journal.set_len(at)?;
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

fn write_error(path: &Path) -> impl Fn(io::Error) -> StorageError + '_ {
    move |source| StorageError::Write { path: path.to_owned(), source }
}

fn interrupted(path: &Path, reason: &dyn std::fmt::Display) -> StorageError {
    StorageError::Interrupted { path: path.to_owned(), reason: reason.to_string() }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{BetNumber, Document};

    fn docs(list: &[&str]) -> Vec<Document> {
        list.iter().map(|d| Document::parse(d).unwrap()).collect()
    }
    use chrono::NaiveDate;
    use std::fs;

    fn bet(agency: u32, document: &str, number: u32) -> Bet {
        Bet::new(
            AgencyId::new(agency).unwrap(),
            "Ana, \"la\"".into(),
            "Núñez".into(),
            Document::parse(document).unwrap(),
            NaiveDate::from_ymd_opt(1985, 12, 1).unwrap(),
            BetNumber::parse(number).unwrap(),
            NaiveDate::MAX,
        )
        .unwrap()
    }

    fn agency(n: u32) -> AgencyId {
        AgencyId::new(n).unwrap()
    }

    async fn open(dir: &tempfile::TempDir) -> (BetStore, Recovery) {
        BetStore::open(dir.path().join("bets.csv"), true).await.unwrap()
    }

    fn loaded(store: &BetStore) -> Vec<Bet> {
        load_bets(store.path()).unwrap().collect::<Result<_, _>>().unwrap()
    }

    #[tokio::test]
    async fn stored_batches_load_back_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let (store, recovery) = open(&dir).await;
        assert_eq!(recovery, Recovery::default());
        let one = [bet(1, "11", 7574), bet(1, "12", 1)];
        let two = [bet(2, "21", 5)];
        assert_eq!(store.store_batch(agency(1), 1, &one).await.unwrap(), Stored::New);
        assert_eq!(store.store_batch(agency(2), 1, &two).await.unwrap(), Stored::New);
        assert_eq!(loaded(&store), [&one[..], &two[..]].concat());
        let journal = fs::read_to_string(store.journal_path()).unwrap();
        let len = fs::metadata(store.path()).unwrap().len();
        let last = journal.lines().last().unwrap();
        assert!(last.starts_with(&format!("batch 2 1 1 {len} - #")), "{journal}");
    }

    #[tokio::test]
    async fn batches_follow_the_sequence_and_retries_are_not_stored_twice() {
        let dir = tempfile::tempdir().unwrap();
        let (store, _) = open(&dir).await;
        let batch = [bet(1, "1", 1), bet(1, "2", 2)];
        assert_eq!(store.progress(agency(1)).await, Progress::default());
        assert_eq!(store.store_batch(agency(1), 1, &batch).await.unwrap(), Stored::New);
        let len = store.committed_len().await;
        assert_eq!(store.store_batch(agency(1), 1, &batch).await.unwrap(), Stored::Duplicate);
        assert_eq!(store.committed_len().await, len, "a retry writes nothing");
        let gap = store.store_batch(agency(1), 3, &batch).await.unwrap_err();
        assert!(matches!(gap, StorageError::SequenceGap { expected: 2, got: 3, .. }), "{gap}");
        let progress = store.progress(agency(1)).await;
        assert_eq!(progress, Progress { last_seq: 1, stored_bets: 2, ready: false });
        assert_eq!(store.progress(agency(2)).await.last_seq, 0, "sequences are per agency");
    }

    #[tokio::test]
    async fn a_ready_agency_cannot_add_bets_and_counts_once() {
        let dir = tempfile::tempdir().unwrap();
        let (store, _) = open(&dir).await;
        assert_eq!(
            store.mark_ready(agency(1)).await.unwrap(),
            Readiness { newly_ready: true, ready: 1 }
        );
        assert_eq!(
            store.mark_ready(agency(1)).await.unwrap(),
            Readiness { newly_ready: false, ready: 1 }
        );
        assert_eq!(
            store.mark_ready(agency(2)).await.unwrap(),
            Readiness { newly_ready: true, ready: 2 }
        );
        let closed = store.store_batch(agency(1), 1, &[bet(1, "1", 1)]).await.unwrap_err();
        assert!(matches!(closed, StorageError::AgencyClosed { .. }), "{closed}");
        assert_eq!(store.committed_len().await, 0);
        assert_eq!(store.ready_agencies().await, [agency(1), agency(2)]);
    }

    #[tokio::test]
    async fn everything_survives_a_reopen() {
        let dir = tempfile::tempdir().unwrap();
        {
            let (store, _) = open(&dir).await;
            store.store_batch(agency(1), 1, &[bet(1, "11", 7574)]).await.unwrap();
            store.store_batch(agency(1), 2, &[bet(1, "12", 7574), bet(1, "13", 3)]).await.unwrap();
            store.store_batch(agency(2), 1, &[bet(2, "21", 7574)]).await.unwrap();
            store.mark_ready(agency(1)).await.unwrap();
            store.mark_ready(agency(2)).await.unwrap();
            store.draw().await.unwrap();
        }
        let (store, recovery) = open(&dir).await;
        assert_eq!((recovery.batches, recovery.drawn), (3, true));
        assert_eq!(recovery.ready, [agency(1), agency(2)]);
        assert_eq!(
            store.progress(agency(1)).await,
            Progress { last_seq: 2, stored_bets: 3, ready: true }
        );
        let draw = store.draw().await.unwrap();
        let docs: Vec<&str> = draw.winners_for(agency(1)).iter().map(Document::as_str).collect();
        assert_eq!(docs, ["11", "12"], "the same winners after a restart");
        let journal = fs::read_to_string(store.journal_path()).unwrap();
        assert_eq!(journal.matches("draw ").count(), 1, "the draw is recorded once: {journal}");
    }

    #[tokio::test]
    async fn a_group_whose_rows_were_never_all_written_is_cut_from_both_files() {
        let dir = tempfile::tempdir().unwrap();
        let committed = {
            let (store, _) = open(&dir).await;
            store.store_batch(agency(1), 1, &[bet(1, "11", 1), bet(1, "12", 2)]).await.unwrap();
            loaded(&store)
        };
        let path = dir.path().join("bets.csv");
        let journal_path = dir.path().join("bets.csv.journal");
        let (len, journal_len) =
            (fs::metadata(&path).unwrap().len(), fs::metadata(&journal_path).unwrap().len());
        let bets = fs::read(&path).unwrap();
        let journal = fs::read(&journal_path).unwrap();
        // A crash after the journal's sync: the group's records whole, its rows not (yet) all
        // written, or written but not all of them synced.
        let rows = b"1,Ana,Paz,13,1985-12-01,3\r\n1,Ana,Paz,14,1985-12-01,4\r\n";
        let end = len + rows.len() as u64;
        let mut records = String::new();
        for record in [
            Record::Group { start: len, end, crc: crc32fast::hash(rows) },
            Record::Batch { agency: agency(1), seq: 2, bets: 2, end, winners: Some(vec![]) },
        ] {
            record.write_to(&mut records);
        }
        let mut wrong = rows.to_vec();
        wrong[5] = 0;
        for (what, written) in [
            ("no rows", &rows[..0]),
            ("a row and a half", &rows[..40]),
            ("every byte, one of them never synced", &wrong[..]),
        ] {
            fs::write(&path, [&bets[..], written].concat()).unwrap();
            fs::write(&journal_path, [&journal[..], records.as_bytes()].concat()).unwrap();
            let (store, recovery) = open(&dir).await;
            assert_eq!(recovery.cut_bets_bytes, written.len() as u64, "{what}");
            assert_eq!(recovery.cut_journal_bytes, records.len() as u64, "{what}");
            assert_eq!(fs::metadata(&path).unwrap().len(), len, "{what}");
            assert_eq!(fs::metadata(&journal_path).unwrap().len(), journal_len, "{what}");
            assert_eq!(loaded(&store), committed, "{what}");
            assert_eq!(store.progress(agency(1)).await.last_seq, 1, "{what}");
        }
        // Whole rows matching the group's CRC: it was acknowledged, and is kept.
        fs::write(&path, [&bets[..], rows].concat()).unwrap();
        fs::write(&journal_path, [&journal[..], records.as_bytes()].concat()).unwrap();
        let (store, recovery) = open(&dir).await;
        assert_eq!((recovery.cut_bets_bytes, recovery.cut_journal_bytes), (0, 0));
        assert_eq!(
            store.progress(agency(1)).await,
            Progress { last_seq: 2, stored_bets: 4, ready: false }
        );
        assert_eq!(store.store_batch(agency(1), 3, &[bet(1, "15", 4)]).await.unwrap(), Stored::New);
        assert_eq!(loaded(&store).len(), 5);
    }

    #[tokio::test]
    async fn a_bets_file_shorter_than_its_acknowledged_groups_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        {
            let (store, _) = open(&dir).await;
            store.store_batch(agency(1), 1, &[bet(1, "11", 1)]).await.unwrap();
            store.store_batch(agency(1), 2, &[bet(1, "12", 1)]).await.unwrap();
        }
        let path = dir.path().join("bets.csv");
        let journal_path = dir.path().join("bets.csv.journal");
        let (bets, journal) = (fs::read(&path).unwrap(), fs::read(&journal_path).unwrap());
        // Into the first group's rows: a later group follows it, so it was acknowledged.
        let short = &bets[..bets.len() / 2 - 1];
        fs::write(&path, short).unwrap();
        let err = BetStore::open(&path, true).await.unwrap_err();
        assert!(matches!(err, StorageError::Corrupt { .. }), "{err}");
        assert!(err.to_string().contains("acknowledged"), "{err}");
        assert!(err.to_string().contains("Nothing was changed"), "{err}");
        assert_eq!(fs::read(&path).unwrap(), short);
        assert_eq!(fs::read(&journal_path).unwrap(), journal);
    }

    #[tokio::test]
    async fn a_bets_file_without_journal_is_adopted_only_when_every_row_is_a_bet() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("bets.csv");
        let rows = "3,Ana,Paz,1,2000-01-01,7574\r\n1,Ana,Paz,2,2000-01-01,5\r\n3,Ana,Paz,3,2000-01-01,6\r\n";
        // A row that is not a bet: refused, naming it, and nothing is changed or created.
        let bad = format!("{rows}3,Ana\r\n");
        fs::write(&path, &bad).unwrap();
        let err = BetStore::open(&path, true).await.unwrap_err();
        assert!(matches!(err, StorageError::BadRow { line: 4, .. }), "{err}");
        assert_eq!(fs::read_to_string(&path).unwrap(), bad);
        assert!(!dir.path().join("bets.csv.journal").exists());

        // Whole rows are adopted, counted per agency; a last row without its line end is a torn
        // write (the central writes every row whole with its line end): cut, not counted.
        fs::write(&path, format!("{rows}3,Ana,Paz,4,2000-01-01,75")).unwrap();
        let (store, recovery) = BetStore::open(&path, true).await.unwrap();
        assert!(recovery.adopted);
        assert_eq!(recovery.cut_bets_bytes, 25);
        assert_eq!(fs::read_to_string(&path).unwrap(), rows);
        assert_eq!(loaded(&store).len(), 3);
        assert_eq!(
            store.progress(agency(3)).await,
            Progress { last_seq: 0, stored_bets: 2, ready: false }
        );
        assert_eq!(store.progress(agency(1)).await.stored_bets, 1);
        assert_eq!(store.store_batch(agency(3), 1, &[bet(3, "9", 1)]).await.unwrap(), Stored::New);
        drop(store);
        let (store, recovery) = BetStore::open(&path, true).await.unwrap();
        assert!(!recovery.adopted, "adopted once; the journal now exists");
        assert_eq!(loaded(&store).len(), 4);
        assert_eq!(
            store.progress(agency(3)).await,
            Progress { last_seq: 1, stored_bets: 3, ready: false }
        );
        let draw = store.draw().await.unwrap();
        let docs: Vec<&str> = draw.winners_for(agency(3)).iter().map(Document::as_str).collect();
        assert_eq!(docs, ["1"], "adopted rows win too");
    }

    #[tokio::test]
    async fn rows_first_journals_are_rewritten_in_the_current_format() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("bets.csv");
        let journal_path = dir.path().join("bets.csv.journal");
        let rows = "1,Ana,Paz,1,2000-01-01,7574\r\n1,Ana,Paz,2,2000-01-01,5\r\n";
        let unacknowledged = "1,Ana,Paz,3,2000-01-01,6\r\n";
        let format_two = {
            let mut text = String::new();
            Record::Header { version: journal::FORMAT_ROWS_FIRST }.write_to(&mut text);
            let batch = Record::Batch {
                agency: agency(1),
                seq: 1,
                bets: 2,
                end: rows.len() as u64,
                winners: Some(docs(&["1"])),
            };
            batch.write_to(&mut text);
            Record::Ready { agency: agency(1) }.write_to(&mut text);
            text
        };
        for (what, journal, winners) in [
            // As main wrote it: no header, no check fields, no winners, a torn tail.
            ("legacy", format!("batch 1 1 2 {}\nready 1\nbatch 2 1", rows.len()), "?"),
            ("format 2", format!("{format_two}batch 2 1"), "1"),
        ] {
            // Rows past the last record (written first, never acknowledged): cut, as before.
            fs::write(&path, format!("{rows}{unacknowledged}")).unwrap();
            fs::write(&journal_path, &journal).unwrap();
            let (store, recovery) = BetStore::open(&path, true).await.unwrap();
            assert!(recovery.journal_converted, "{what}");
            assert_eq!(recovery.cut_journal_bytes, 9, "{what}");
            assert_eq!(recovery.cut_bets_bytes, unacknowledged.len() as u64, "{what}");
            assert_eq!(
                store.progress(agency(1)).await,
                Progress { last_seq: 1, stored_bets: 2, ready: true },
                "{what}"
            );
            let text = fs::read_to_string(&journal_path).unwrap();
            let lines: Vec<&str> = text.lines().collect();
            assert_eq!(lines.len(), 4, "{what}: {text}");
            assert!(lines[0].starts_with("journal 3 #"), "{what}: {text}");
            let crc = crc32fast::hash(rows.as_bytes());
            let group = format!("group 0 {} {crc:08x} #", rows.len());
            assert!(lines[1].starts_with(&group), "{what}: {text}");
            let batch = format!("batch 1 1 2 {} {winners} #", rows.len());
            assert!(lines[2].starts_with(&batch), "{what}: {text}");
            drop(store);
            let (store, recovery) = BetStore::open(&path, true).await.unwrap();
            assert!(!recovery.journal_converted, "{what}");
            assert_eq!(store.progress(agency(1)).await.stored_bets, 2, "{what}");
            let draw = store.draw().await.unwrap();
            let docs: Vec<&str> =
                draw.winners_for(agency(1)).iter().map(Document::as_str).collect();
            assert_eq!(docs, ["1"], "{what}: winners read from the file when not recorded");
            assert!(!dir.path().join("bets.csv.journal.tmp").exists());
        }
    }

    #[tokio::test]
    async fn acknowledged_rows_that_changed_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        {
            let (store, _) = open(&dir).await;
            store.store_batch(agency(1), 1, &[bet(1, "11", 1)]).await.unwrap();
            store.mark_ready(agency(1)).await.unwrap();
        }
        let path = dir.path().join("bets.csv");
        let mut bytes = fs::read(&path).unwrap();
        bytes[3] = b'x';
        fs::write(&path, &bytes).unwrap();
        let err = BetStore::open(&path, true).await.unwrap_err();
        assert!(
            err.to_string().contains("do not match the check of the journal's last group"),
            "{err}"
        );
        assert_eq!(fs::read(&path).unwrap(), bytes, "nothing cut");

        // Adopted bytes the journal says end mid-row: another file's journal.
        let journal_path = dir.path().join("bets.csv.journal");
        let mut journal = String::new();
        Record::Header { version: journal::FORMAT_VERSION }.write_to(&mut journal);
        Record::Base { end: bytes.len() as u64 - 1, agencies: vec![(agency(1), 1)] }
            .write_to(&mut journal);
        fs::write(&journal_path, &journal).unwrap();
        let err = BetStore::open(&path, true).await.unwrap_err();
        assert!(err.to_string().contains("it has 1 bytes past byte"), "{err}");
        fs::write(&path, &bytes[..bytes.len() - 1]).unwrap();
        let err = BetStore::open(&path, true).await.unwrap_err();
        assert!(err.to_string().contains("does not end a row"), "{err}");
        assert_eq!(fs::read_to_string(&journal_path).unwrap(), journal, "nothing changed");
    }

    #[tokio::test]
    async fn a_second_store_on_the_same_files_is_refused_until_the_first_closes() {
        let dir = tempfile::tempdir().unwrap();
        let (first, _) = open(&dir).await;
        let err = BetStore::open(first.path(), true).await.unwrap_err();
        let StorageError::Locked { holder, .. } = &err else { panic!("{err}") };
        assert_eq!(*holder, Some(std::process::id()), "{err}");
        assert!(err.to_string().contains("locked by another central"), "{err}");
        first.close().await;
        let closed = first.store_batch(agency(1), 1, &[bet(1, "1", 1)]).await.unwrap_err();
        assert!(matches!(closed, StorageError::Interrupted { .. }), "{closed}");
        let (second, _) = open(&dir).await;
        assert_eq!(second.store_batch(agency(1), 1, &[bet(1, "1", 1)]).await.unwrap(), Stored::New);
    }

    #[tokio::test]
    async fn limits_refuse_a_batch_before_anything_is_written() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("bets.csv");
        let options = StoreOptions { max_bets_per_agency: 3, ..StoreOptions::default() };
        let (store, _) = BetStore::open_with(&path, options).await.unwrap();
        let two = [bet(1, "1", 1), bet(1, "2", 2)];
        store.store_batch(agency(1), 1, &two).await.unwrap();
        let len = store.committed_len().await;
        let err = store.store_batch(agency(1), 2, &two).await.unwrap_err();
        assert!(
            matches!(err, StorageError::AgencyLimit { stored: 2, bets: 2, limit: 3, .. }),
            "{err}"
        );
        assert_eq!(fs::metadata(&path).unwrap().len(), len);
        assert_eq!(store.store_batch(agency(1), 2, &two[..1]).await.unwrap(), Stored::New);
        assert_eq!(store.store_batch(agency(2), 1, &[bet(2, "3", 3)]).await.unwrap(), Stored::New);
        for (seq, bets) in [(1, &[][..]), (0, &two[..1])] {
            let err = store.store_batch(agency(2), seq, bets).await.unwrap_err();
            assert!(matches!(err, StorageError::BadBatch { .. }), "{err}");
        }
        drop(store);

        let options = StoreOptions { min_free_bytes: u64::MAX / 2, ..StoreOptions::default() };
        let (store, _) = BetStore::open_with(&path, options).await.unwrap();
        let len = fs::metadata(&path).unwrap().len();
        let journal = fs::read(store.journal_path()).unwrap();
        let err = store.store_batch(agency(2), 2, &[bet(2, "4", 4)]).await.unwrap_err();
        assert!(matches!(err, StorageError::LowDiskSpace { .. }), "{err}");
        assert_eq!(
            store.stats(),
            StoreStats { groups: 0, syncs: 0 },
            "a refused group is no commit"
        );
        assert_eq!(fs::metadata(&path).unwrap().len(), len);
        assert_eq!(fs::read(store.journal_path()).unwrap(), journal);
    }

    #[tokio::test]
    async fn a_group_commit_writes_at_most_max_group_bytes() {
        let dir = tempfile::tempdir().unwrap();
        let (store, _) = open(&dir).await;
        let batch: Vec<Bet> = (0..400).map(|i| bet(1, &i.to_string(), i)).collect();
        let batches = MAX_GROUP_BYTES as usize / encode(&batch) + 2;
        let acks: Vec<Ack> =
            (1..=batches as u64).map(|seq| store.submit(agency(1), seq, &batch)).collect();
        store.commit_queued().await;
        for ack in acks {
            assert_eq!(ack.await.unwrap(), Stored::New);
        }
        assert_eq!(store.stats().groups, 2, "split at {MAX_GROUP_BYTES} bytes");
    }

    fn encode(bets: &[Bet]) -> usize {
        rows::encode_rows(bets).len()
    }

    #[tokio::test]
    async fn concurrent_batches_share_group_commits() {
        let dir = tempfile::tempdir().unwrap();
        let (store, _) = open(&dir).await;
        let store = Arc::new(store);
        let mut tasks = tokio::task::JoinSet::new();
        for a in 1..=50 {
            let store = store.clone();
            tasks.spawn(async move {
                let batch = [bet(a, &a.to_string(), a)];
                store.store_batch(agency(a), 1, &batch).await.unwrap()
            });
        }
        while let Some(stored) = tasks.join_next().await {
            assert_eq!(stored.unwrap(), Stored::New);
        }
        assert_eq!(loaded(&store).len(), 50);
        let stats = store.stats();
        assert!(stats.groups < 50, "batches waiting for a sync share the next one: {stats:?}");
        assert_eq!(stats.syncs, 2 * stats.groups);
    }

    #[tokio::test]
    async fn the_draw_reads_the_stored_bets() {
        let dir = tempfile::tempdir().unwrap();
        let (store, _) = open(&dir).await;
        store.store_batch(agency(1), 1, &[bet(1, "11", 7574), bet(1, "12", 1)]).await.unwrap();
        store.store_batch(agency(5), 1, &[bet(5, "7", 7574)]).await.unwrap();
        let draw = store.draw().await.unwrap();
        assert_eq!(draw.bets(), 3);
        assert_eq!(draw.winners_for(agency(1)), [Document::parse("11").unwrap()]);
        assert_eq!(draw.winners_for(agency(5)), [Document::parse("7").unwrap()]);
        let late = store.store_batch(agency(2), 1, &[bet(2, "21", 1)]).await.unwrap_err();
        assert!(
            matches!(late, StorageError::AgencyClosed { .. }),
            "no bets after the draw: {late}"
        );
    }
}
