//! [`Store`]: the seam between the central and where its bets live.
//!
//! The server uses a store only through these operations: start an agency's session (its
//! progress, for `Welcome`, and the session's epoch), submit a batch and await its
//! acknowledgement, mark an agency ready, run (or re-read) the draw, every agency's progress and
//! the ingest start (for the summary), the commit counters, and close. Two stores implement them:
//! the bets file and its journal, [`BetStore`] (the default; its writes go through a
//! `tokio::sync::Mutex` around the files, and one central owns the files), and PostgreSQL,
//! [`PgStore`], which several centrals share.

use std::time::Instant;

use tokio::sync::watch;

use super::postgres::{Epoch, PgStore};
use super::{Ack, AgencyProgress, BetStore, Readiness, StorageError, StoreStats};
use crate::domain::{AgencyId, Bets, Draw};

/// Where the central stores its bets. See the module docs for the operations a store provides.
#[derive(Debug)]
pub enum Store {
    /// The bets file and its journal (`BETS_FILE`, `BETS_FILE.journal`).
    File(BetStore),
    /// A PostgreSQL database (`LOTTERY_DATABASE_URL`), possibly shared with other centrals.
    Postgres(PgStore),
}

/// The draw's result, and whether this call is the one that recorded it.
#[derive(Debug)]
pub struct Drawn {
    pub draw: Draw,
    /// False when the draw was already recorded (before a restart, or by another central).
    pub recorded_now: bool,
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
    /// Where the bets are, for the log: the bets file's path, or the database (password hidden).
    pub fn location(&self) -> String {
        match self {
            Self::File(store) => store.path().display().to_string(),
            Self::Postgres(store) => store.target().to_owned(),
        }
    }

    /// Whether other centrals may share this store: agencies may then become ready elsewhere,
    /// and the central must watch for it (see [`Store::ready_changes`]).
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
    ) -> Result<(AgencyProgress, Epoch), StorageError> {
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
        epoch: Epoch,
        seq: u64,
        bets: &(impl Bets + ?Sized),
    ) -> Ack {
        match self {
            Self::File(store) => store.submit(agency, seq, bets),
            Self::Postgres(store) => store.submit(agency, epoch, seq, bets),
        }
    }

    /// Records, durably, that `agency` (its session `epoch`) has sent everything.
    ///
    /// # Errors
    /// As [`BetStore::mark_ready`] and [`PgStore::mark_ready`].
    pub async fn mark_ready(
        &self,
        agency: AgencyId,
        epoch: Epoch,
    ) -> Result<Readiness, StorageError> {
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

    /// Changes when another central may have recorded a `ReadyForLottery`; `None` for a store
    /// no other central shares.
    pub fn ready_changes(&self) -> Option<watch::Receiver<u64>> {
        match self {
            Self::File(_) => None,
            Self::Postgres(store) => Some(store.ready_changes()),
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

    /// Stores what is queued, then stops writing and releases the store.
    pub async fn close(&self) {
        match self {
            Self::File(store) => store.close().await,
            Self::Postgres(store) => store.close().await,
        }
    }
}
