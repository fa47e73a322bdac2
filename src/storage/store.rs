//! [`Store`]: the face between the central and where its bets live.
//!
//! The server uses a store only through these operations: open the store the configuration
//! names, start an agency's session (its progress, for `Welcome`, and the session's epoch),
//! submit a batch and await its acknowledgement, mark an agency ready, run (or re-read) the
//! draw, every agency's progress and the ingest start (for the summary), the commit counters,
//! export, and close. Two stores implement them: the bets file and its journal, [`BetStore`]
//! (the default; its writes go through a `tokio::sync::Mutex` around the files, and one central
//! owns the files), and PostgreSQL, [`PgStore`], which several centrals share.

use std::path::PathBuf;
use std::time::Instant;

use tracing::info;

use super::error::interrupted;
use super::file::{self, BetStore, Recovery};
use super::postgres::{self, PgStore};
use super::{
    Ack, AgencyProgress, AgencyRecord, Drawn, LotteryRecord, ReadyFeed, SessionEpoch, StorageError,
    StoreGauges, StoreOptions, StoreStats, Verified,
};
use crate::config::DatabaseUrl;
use crate::domain::{AgencyId, Bets};

/// Where the central stores its bets. See the module docs for the operations a store provides.
#[derive(Debug)]
pub enum Store {
    /// The bets file and its journal (`BETS_FILE`, `BETS_FILE.journal`).
    File(BetStore),
    /// A PostgreSQL database (`LOTTERY_DATABASE_URL`), possibly shared with other centrals.
    Postgres(PgStore),
}

/// Which store to open.
#[derive(Debug, Clone)]
pub enum Location {
    /// The bets file at this path, and its journal beside it.
    File(PathBuf),
    /// The database at this URL; `central` names this central in the `draw` row.
    Database { url: DatabaseUrl, central: String },
}

/// What opening a store found: the file store's recovery, or the database's state.
#[derive(Debug)]
pub enum Opened {
    File(Recovery),
    Database(postgres::Opened),
}

impl Opened {
    /// The agencies that had declared ReadyForLottery.
    pub fn ready(&self) -> &[AgencyId] {
        match self {
            Self::File(recovery) => &recovery.ready,
            Self::Database(opened) => &opened.ready,
        }
    }

    /// Logs what was found: `recovery` for the bets file, `database` for PostgreSQL.
    pub fn log(&self, store: &Store) {
        match self {
            Self::File(recovery) => info!(
                action = "recovery",
                result = "success",
                path = %store.location(),
                bytes = recovery.bets_len,
                batches = recovery.batches,
                cut_bets_bytes = recovery.cut_bets_bytes,
                cut_journal_bytes = recovery.cut_journal_bytes,
                ready = recovery.ready.len(),
                drawn = recovery.drawn,
                adopted = recovery.adopted,
                journal_converted = recovery.journal_converted,
                rewritten_bets_bytes = recovery.rewritten_bets_bytes,
                journal_upgraded = recovery.journal_upgraded,
            ),
            Self::Database(opened) => info!(
                action = "database",
                result = "success",
                target = %store.location(),
                schema_version = opened.schema_version,
                schema_found = opened.schema_found,
                batches = opened.batches,
                ready = opened.ready.len(),
                drawn = opened.drawn,
                synchronous_commit = %opened.synchronous_commit,
                replication = %opened.replication,
            ),
        }
    }
}

impl From<BetStore> for Store {
    fn from(store: BetStore) -> Self {
        Self::File(store)
    }
}

impl From<PgStore> for Store {
    fn from(store: PgStore) -> Self {
        Self::Postgres(store)
    }
}

impl Store {
    /// Opens the store at `location`: the bets file (recovered from a crash, see
    /// [`BetStore::open_with`]), or the database (migrated, see [`PgStore::open`]).
    ///
    /// # Errors
    /// The store's, when it cannot be opened.
    pub async fn open(
        location: Location,
        options: StoreOptions,
    ) -> Result<(Self, Opened), StorageError> {
        match location {
            Location::File(path) => {
                let (store, recovery) = BetStore::open_with(path, options).await?;
                Ok((store.into(), Opened::File(recovery)))
            }
            Location::Database { url, central } => {
                let (store, opened) = PgStore::open(&url, options, central).await?;
                Ok((store.into(), Opened::Database(opened)))
            }
        }
    }

    /// Makes this store a lottery of `agencies` agencies: a database records it for every
    /// central that shares it, and refuses a central that counts otherwise (see
    /// [`PgStore::claim_agencies`]); one central's bets file has nothing to agree with.
    ///
    /// # Errors
    /// `AgenciesDiffer`, or `Database` when the database cannot be reached.
    pub async fn claim_agencies(&self, agencies: u32) -> Result<(), StorageError> {
        match self {
            Self::File(_) => Ok(()),
            Self::Postgres(store) => store.claim_agencies(agencies).await,
        }
    }

    /// Where the bets are, for the log: the bets file's path, or the database (password hidden).
    pub fn location(&self) -> String {
        match self {
            Self::File(store) => store.path().display().to_string(),
            Self::Postgres(store) => store.target().to_owned(),
        }
    }

    /// Whether other centrals may share this store: agencies may then become ready elsewhere,
    /// and the central must watch for it (see [`Store::ready_feed`]).
    pub fn is_shared(&self) -> bool {
        matches!(self, Self::Postgres(_))
    }

    /// Starts a session of `agency`: its durable progress, and the epoch its batches carry.
    /// With PostgreSQL this fences every older session of the agency, on any central; the file
    /// store has one central, whose sessions fence each other in memory, and its epoch is 0.
    ///
    /// # Errors
    /// `Database` when the database cannot be reached.
    pub async fn open_session(
        &self,
        agency: AgencyId,
    ) -> Result<(AgencyProgress, SessionEpoch), StorageError> {
        match self {
            Self::File(store) => Ok((store.progress(agency).await, 0)),
            Self::Postgres(store) => store.open_session(agency).await,
        }
    }

    /// Queues batch `seq` of `agency`'s session `epoch`; the answer comes once it is durably
    /// stored (or refused). `bets` are a received [`BetBatch`](crate::domain::BetBatch) or
    /// plain `Bet`s.
    pub fn submit(
        &self,
        agency: AgencyId,
        epoch: SessionEpoch,
        seq: u64,
        bets: &(impl Bets + ?Sized),
    ) -> Ack {
        match self {
            Self::File(store) => store.submit(agency, seq, bets),
            Self::Postgres(store) => store.submit(agency, epoch, seq, bets),
        }
    }

    /// Records, durably, that `agency` (its session `epoch`) has sent everything. Returns false
    /// when it had already (here, before a restart, or on another central).
    ///
    /// # Errors
    /// As [`BetStore::mark_ready`] and [`PgStore::mark_ready`].
    pub async fn mark_ready(
        &self,
        agency: AgencyId,
        epoch: SessionEpoch,
    ) -> Result<bool, StorageError> {
        match self {
            Self::File(store) => store.mark_ready(agency).await,
            Self::Postgres(store) => store.mark_ready(agency, epoch).await,
        }
    }

    /// Agencies ready on any central sharing this store (the file store: none to watch).
    ///
    /// # Errors
    /// `Database` when the database cannot be reached.
    pub async fn ready_agencies(&self) -> Result<Vec<AgencyId>, StorageError> {
        match self {
            Self::File(_) => Ok(Vec::new()),
            Self::Postgres(store) => store.ready_agencies().await,
        }
    }

    /// The agencies that become ready on any central sharing this store, as the store hears
    /// of them; `None` for a store no other central shares.
    pub fn ready_feed(&self) -> Option<ReadyFeed> {
        match self {
            Self::File(_) => None,
            Self::Postgres(store) => Some(store.ready_feed()),
        }
    }

    /// Runs the draw over every stored bet and records it, or re-reads the recorded one.
    ///
    /// # Errors
    /// As [`BetStore::draw`] and [`PgStore::draw`].
    pub async fn draw(&self) -> Result<Drawn, StorageError> {
        match self {
            Self::File(store) => {
                let recorded_before = store.drawn().await;
                let draw = store.draw().await?;
                Ok(Drawn { draw, recorded_now: !recorded_before })
            }
            Self::Postgres(store) => {
                let (draw, recorded_now) = store.draw().await?;
                Ok(Drawn { draw, recorded_now })
            }
        }
    }

    /// Every agency's durable progress, in agency order.
    ///
    /// # Errors
    /// `Database` when the database cannot be reached.
    pub async fn agencies(&self) -> Result<Vec<(AgencyId, AgencyProgress)>, StorageError> {
        match self {
            Self::File(store) => Ok(store.agencies().await),
            Self::Postgres(store) => store.agencies().await,
        }
    }

    /// The whole lottery as this store holds it, for the status page: every agency counted,
    /// and agencies 1 to `rows` one by one; with PostgreSQL, on any central, with the central
    /// each one is on and when the draw was recorded. A database that cannot be reached says so.
    ///
    /// # Errors
    /// `Database` when the database cannot be reached.
    pub async fn record(&self, rows: u32) -> Result<LotteryRecord, StorageError> {
        match self {
            Self::File(store) => {
                let mut record = LotteryRecord::default();
                for (agency, progress) in store.agencies().await {
                    record.totals.ready += u32::from(progress.ready);
                    record.totals.bets += progress.stored_bets;
                    record.totals.batches += progress.last_seq;
                    if agency.get() <= rows {
                        let (central, active_at_ms) = (None, None);
                        record.agencies.push(AgencyRecord {
                            agency,
                            progress,
                            central,
                            active_at_ms,
                        });
                    }
                }
                Ok(record)
            }
            Self::Postgres(store) => store.record(rows).await,
        }
    }

    /// When this process first stored a batch, if it did.
    pub fn first_commit(&self) -> Option<Instant> {
        match self {
            Self::File(store) => store.first_commit(),
            Self::Postgres(store) => store.first_commit(),
        }
    }

    /// Commits and syncs so far.
    pub fn stats(&self) -> StoreStats {
        match self {
            Self::File(store) => store.stats(),
            Self::Postgres(store) => store.stats(),
        }
    }

    /// What the store reads of its resources now: free bytes, or its pools.
    pub fn gauges(&self) -> StoreGauges {
        match self {
            Self::File(store) => store.gauges(),
            Self::Postgres(store) => store.gauges(),
        }
    }

    /// Stores what is queued, then stops writing and releases the store.
    pub async fn close(&self) {
        match self {
            Self::File(store) => store.close().await,
            Self::Postgres(store) => store.close().await,
        }
    }

    /// Writes every stored bet at `location` (or `agency`'s only: `export --agency K`, whose
    /// SHA-256 is the agency's receipt) to `out` as bets-file rows, in the order stored (what
    /// `lottery-server export` writes), and returns the bytes written: the committed part
    /// of the bets file, checked as a start checks it (every group's rows against their CRC)
    /// but read-only — nothing is cut, adopted or created, and a read-only directory will do —
    /// or the database's bets encoded the same way.
    ///
    /// # Errors
    /// The store's, when it cannot be opened, read or checked (`Corrupt`, naming the damage);
    /// `Write` when `out` fails.
    pub async fn export(
        location: Location,
        options: StoreOptions,
        agency: Option<AgencyId>,
        out: &mut impl std::io::Write,
    ) -> Result<u64, StorageError> {
        match location {
            Location::File(path) => {
                let inspected = inspect_blocking(path).await?;
                match agency {
                    Some(agency) => inspected.export_agency(agency, out),
                    None => inspected.export(out),
                }
            }
            Location::Database { url, central } => {
                let (store, _) = PgStore::open(&url, options, central).await?;
                let exported = store.export(agency, out).await;
                store.close().await;
                exported
            }
        }
    }
}

/// Checks the bets file at `path` and its journal as a start would, changing nothing
/// (`lottery-server verify`): every record, and every group's rows against their CRC.
///
/// # Errors
/// What a start would refuse with (`Corrupt` names the file, the group or line, the byte and the
/// agency of the first damage; `BadRow` a row of a file without a journal), `Locked` while a
/// central has the files.
pub async fn verify(path: PathBuf) -> Result<Verified, StorageError> {
    Ok(inspect_blocking(path).await?.verified)
}

async fn inspect_blocking(path: PathBuf) -> Result<file::Inspection, StorageError> {
    let read = path.clone();
    let inspected = tokio::task::spawn_blocking(move || file::inspect(&read)).await;
    inspected.map_err(|e| interrupted(&path, &e))?
}
