//! [`Store`]: the seam between the central and where its bets live.
//!
//! The server uses a store only through these operations: submit a batch and await its
//! acknowledgement, an agency's progress (for `Welcome`), mark an agency ready, run (or re-read)
//! the draw, every agency's progress and the ingest start (for the summary), the commit counters,
//! and close. A second store (PostgreSQL, issue 13) is another variant here implementing the same
//! operations; the server does not change. Today there is one: the bets file and its journal,
//! [`BetStore`], whose writes go through a `tokio::sync::Mutex` around the files.

use std::path::Path;
use std::time::Instant;

use super::{Ack, AgencyProgress, BetStore, Readiness, StorageError, StoreStats};
use crate::domain::{AgencyId, Bet, Draw};

/// Where the central stores its bets. See the module docs for the operations a store provides.
#[derive(Debug)]
pub enum Store {
    /// The bets file and its journal (`BETS_FILE`, `BETS_FILE.journal`).
    File(BetStore),
}

impl From<BetStore> for Store {
    fn from(store: BetStore) -> Self {
        Self::File(store)
    }
}

impl Store {
    /// Where the bets are, for the log: the bets file's path.
    pub fn location(&self) -> &Path {
        match self {
            Self::File(store) => store.path(),
        }
    }

    /// Queues batch `seq` of `agency`; the answer comes once it is durably stored (or refused).
    pub fn submit(&self, agency: AgencyId, seq: u64, bets: &[Bet]) -> Ack {
        match self {
            Self::File(store) => store.submit(agency, seq, bets),
        }
    }

    /// `agency`'s durable progress: its last stored batch, bets stored, and ready flag.
    pub async fn progress(&self, agency: AgencyId) -> AgencyProgress {
        match self {
            Self::File(store) => store.progress(agency).await,
        }
    }

    /// Records, durably, that `agency` has sent everything.
    ///
    /// # Errors
    /// As [`BetStore::mark_ready`].
    pub async fn mark_ready(&self, agency: AgencyId) -> Result<Readiness, StorageError> {
        match self {
            Self::File(store) => store.mark_ready(agency).await,
        }
    }

    /// Runs the draw over every stored bet and records it, or re-reads the recorded one.
    ///
    /// # Errors
    /// As [`BetStore::draw`].
    pub async fn draw(&self) -> Result<Draw, StorageError> {
        match self {
            Self::File(store) => store.draw().await,
        }
    }

    /// Every agency's durable progress, in agency order.
    pub async fn agencies(&self) -> Vec<(AgencyId, AgencyProgress)> {
        match self {
            Self::File(store) => store.agencies().await,
        }
    }

    /// When this process first stored a batch, if it did.
    pub fn first_commit(&self) -> Option<Instant> {
        match self {
            Self::File(store) => store.first_commit(),
        }
    }

    /// Commits and syncs so far.
    pub fn stats(&self) -> StoreStats {
        match self {
            Self::File(store) => store.stats(),
        }
    }

    /// Stores what is queued, then stops writing and releases the store.
    pub async fn close(&self) {
        match self {
            Self::File(store) => store.close().await,
        }
    }
}
