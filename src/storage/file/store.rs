//! `BetStore`: the bets file, its journal, and the per-agency state that changes with them.
//!
//! # Durability
//! A batch is acknowledged only once its group is durable in the journal, which carries the rows:
//! a group commit appends its `group … rows` line (the rows' byte range and CRC-32), the rows and
//! its `batch` records to the journal in one write and `fdatasync`s it, then writes the rows at
//! the committed end of the bets file, not synced (see `wal.rs`, `journal.rs`). The bets file is
//! synced at close and before the journal is compacted. So the bets file never holds
//! bytes the journal does not describe, recovery at start-up cuts the one unacknowledged group a
//! crash can leave (its journal write torn), rewrites from the journal rows the bets file lost,
//! and refuses a journal that lost records (rows past its last `end`). A crash at any point
//! leaves exactly the acknowledged batches, each whole, and a file the original Python
//! `load_bets` reads. Recovery cuts nothing else: damage it cannot explain by a crash stops
//! start-up instead (see `recovery.rs`). Both files are locked (`flock`) while a store has them
//! open, so a second central on the same files refuses to start.
//!
//! # Limits
//! A batch that would take its agency past `max_bets_per_agency`, or a group commit that would
//! leave less than `min_free_bytes` free on the bets file's filesystem (checked once per group),
//! is refused before anything is written; each condition is logged once when it starts.
//!
//! # Group commit
//! Batches are queued and committed in groups, one journal write and one sync for every batch
//! waiting (see `commit.rs`). The committer task that does it belongs to the store: `open` starts
//! it, `close` (or dropping the store) stops it.
//!
//! One `tokio::sync::Mutex` around the files also guards each agency's batch sequence number and
//! ready flag, so "is this agency still open, is this its next batch, append it" is one atomic
//! step, and the draw reads a file no append can interleave with.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::commit::Shared;
use super::committer::Committer;
use super::disk;
use super::journal::Record;
use super::recovery::{self, Recovery};
use crate::domain::{AgencyId, Bets, Draw, Receipts};
#[cfg(test)]
use crate::storage::Stored;
use crate::storage::error::interrupted;
use crate::storage::{
    Ack, AgencyProgress, ReceiptsBuilder, StorageError, StoreGauges, StoreOptions, StoreStats,
    load_bets,
};

/// The journal beside the bets file at `path`: `<path>.journal`.
pub(super) fn journal_path(path: &Path) -> PathBuf {
    let mut journal_path = path.to_owned().into_os_string();
    journal_path.push(".journal");
    PathBuf::from(journal_path)
}

/// The bets file and the state that goes with it, and the committer task that writes to them.
/// Share it behind an `Arc`.
#[derive(Debug)]
pub struct BetStore {
    shared: Arc<Shared>,
    committer: Committer,
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
    /// its rows were never all written, are cut (see `recovery.rs` for exactly what may be cut).
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
        let journal_path = journal_path(&path);
        let (bets, jp) = (path.clone(), journal_path.clone());
        let recovered =
            tokio::task::spawn_blocking(move || recovery::recover(&bets, &jp, sync)).await;
        let (files, recovery) = recovered.map_err(|e| interrupted(&path, &e))??;
        let shared = Arc::new(Shared::new(path, journal_path, options, files));
        let committer = Committer::start(&shared);
        Ok((Self { shared, committer }, recovery))
    }

    /// Commits and syncs so far.
    pub fn stats(&self) -> StoreStats {
        let groups = self.shared.groups();
        StoreStats { groups, syncs: if self.shared.options.sync { groups } else { 0 } }
    }

    /// The free bytes the last group commit (or the open) read, and the floor they are checked
    /// against.
    pub fn gauges(&self) -> StoreGauges {
        let min_free_bytes = Some(self.shared.options.min_free_bytes);
        StoreGauges { free_bytes: self.shared.free_bytes(), min_free_bytes, pools: Vec::new() }
    }

    /// The bets file's path.
    pub fn path(&self) -> &Path {
        &self.shared.path
    }

    /// The journal's path.
    pub fn journal_path(&self) -> &Path {
        &self.shared.journal_path
    }

    /// Committed bytes of the bets file.
    #[cfg(test)]
    pub(crate) async fn committed_len(&self) -> u64 {
        self.shared.files.lock().await.ledger.committed
    }

    /// `agency`'s durable progress: its last stored batch, bets stored, and ready flag.
    pub async fn progress(&self, agency: AgencyId) -> AgencyProgress {
        self.shared.files.lock().await.ledger.progress(agency)
    }

    /// Stores batch `seq` of `agency` whole, durably, or nothing of it.
    ///
    /// A `seq` at or below the last stored one is a retry: acknowledged as `Stored::Duplicate`,
    /// not written again.
    ///
    /// # Errors
    /// `AgencyClosed` after the agency's `ReadyForLottery`; `SequenceGap` when `seq` skips ahead;
    /// `Write` when the write or sync fails (nothing of the batch is left in the file).
    #[cfg(test)]
    pub(crate) async fn store_batch(
        &self,
        agency: AgencyId,
        seq: u64,
        bets: &(impl Bets + ?Sized),
    ) -> Result<Stored, StorageError> {
        let ack = self.submit(agency, seq, bets);
        self.commit_queued().await;
        // Answered by whoever committed the group it was in, before releasing the mutex.
        ack.await
    }

    /// Queues batch `seq` of `agency` for the next group commit and returns its answer to await.
    /// Batches are committed in the order they are submitted, by the store's committer task.
    /// This is how a connection keeps several batches in flight.
    pub fn submit(&self, agency: AgencyId, seq: u64, bets: &(impl Bets + ?Sized)) -> Ack {
        self.shared.submit(agency, seq, bets)
    }

    /// Commits everything queued so far (waiting for a commit in flight first), in groups of at
    /// most [`MAX_GROUP_BYTES`] of rows.
    #[cfg(test)]
    pub(crate) async fn commit_queued(&self) {
        self.shared.commit_queued().await;
    }

    /// Records, durably, that `agency` has sent everything; from now on its batches are refused.
    /// Returns false when it had already.
    ///
    /// # Errors
    /// `Write` when the journal cannot be written.
    pub async fn mark_ready(&self, agency: AgencyId) -> Result<bool, StorageError> {
        let mut files = self.shared.files.lock().await;
        let newly_ready = !files.ledger.progress(agency).ready;
        if newly_ready {
            self.shared.append_record(&mut files, Record::Ready { agency }).await?;
        }
        Ok(newly_ready)
    }

    /// Every agency's durable progress, in agency order (agencies with no batch nor ready flag
    /// are absent).
    pub async fn agencies(&self) -> Vec<(AgencyId, AgencyProgress)> {
        let files = self.shared.files.lock().await;
        let mut agencies: Vec<_> = files.ledger.agencies.iter().map(|(a, p)| (*a, *p)).collect();
        agencies.sort_by_key(|(a, _)| *a);
        agencies
    }

    /// When this process first committed a batch, if it did.
    pub fn first_commit(&self) -> Option<std::time::Instant> {
        self.shared.first_commit()
    }

    /// Whether the draw is recorded.
    pub async fn drawn(&self) -> bool {
        self.shared.files.lock().await.ledger.draw.is_some()
    }

    /// Agencies that have declared ReadyForLottery, in order.
    #[cfg(test)]
    pub(crate) async fn ready_agencies(&self) -> Vec<AgencyId> {
        let files = self.shared.files.lock().await;
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
        let mut files = self.shared.files.lock().await;
        let end = files.ledger.committed;
        let draw = if files.ledger.winners_unknown {
            let path = self.shared.path.clone();
            let read = tokio::task::spawn_blocking(move || Draw::from_bets(load_bets(&path)?));
            read.await.unwrap_or_else(|e| Err(interrupted(&self.shared.path, &e)))?
        } else {
            Draw::from_winners(files.ledger.winners.clone(), files.ledger.bets)
        };
        let draw = draw.with_receipts(self.receipts(end).await?);
        match files.ledger.draw {
            Some((bets, recorded_end)) if (bets, recorded_end) != (draw.bets(), end) => {
                let reason = format!(
                    "the draw ran over {bets} bets ({recorded_end} bytes); the file now has {} ({end} bytes)",
                    draw.bets()
                );
                Err(StorageError::Corrupt { path: self.shared.path.clone(), reason })
            }
            Some(_) => Ok(draw),
            None => {
                self.shared
                    .append_record(&mut files, Record::Draw { bets: draw.bets(), end })
                    .await?;
                Ok(draw)
            }
        }
    }

    /// Every agency's receipt over the first `end` bytes of the bets file (its committed rows),
    /// read back from the file: what `lottery-server export --agency K` writes, hashed.
    ///
    /// # Errors
    /// `Interrupted` when the file cannot be read; `Corrupt` when its rows are not a bets file's.
    async fn receipts(&self, end: u64) -> Result<Receipts, StorageError> {
        let path = self.shared.path.clone();
        let read = tokio::task::spawn_blocking(move || {
            let file = std::fs::File::open(&path)?;
            ReceiptsBuilder::of_file(file, end)
        });
        let path = &self.shared.path;
        match read.await {
            Ok(Ok(receipts)) => Ok(receipts),
            Ok(Err(e)) if e.kind() == std::io::ErrorKind::InvalidData => {
                Err(StorageError::Corrupt { path: path.clone(), reason: e.to_string() })
            }
            Ok(Err(e)) => Err(interrupted(path, &e)),
            Err(e) => Err(interrupted(path, &e)),
        }
    }

    /// Stops the committer once it has committed every batch queued, waits for any commit in
    /// flight to finish, so the process can exit with nothing half-written, and releases the
    /// files' locks: nothing more is written through this store.
    pub async fn close(&self) {
        self.committer.stop().await;
        let mut files = self.shared.files.lock().await;
        if !files.closed && files.journal_len > files.compact.len() as u64 {
            // The bets file synced, the journal without the rows it carries: a restart reads a
            // short journal.
            self.shared.compact(&mut files).await;
        }
        files.closed = true;
        disk::unlock(&files.bets);
        disk::unlock(&files.journal);
    }
}
