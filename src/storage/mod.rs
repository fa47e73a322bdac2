//! Where the central's bets live: one face, [`Store`], and two stores behind it.
//!
//! The server uses a store only through [`Store`] and the words defined here: a session's
//! [`SessionEpoch`] and [`AgencyProgress`], a batch's [`Ack`] and what it resolves to
//! ([`Stored`] or a [`StorageError`]), the [`Drawn`] draw, the
//! [`StoreStats`] and [`StoreGauges`], and the [`StoreOptions`] both stores apply. Nothing above this module names a
//! store's own types.
//!
//! Both stores decide each batch by one rule ([`decide`]: duplicate, gap, closed, limit) and
//! commit batches in groups taken by one loop ([`decide::take_group`]); each has a committer task
//! of its own, started by its `open` and stopped by its `close`.
//!
//! # Layout
//! - `mod.rs`: the words every store shares;
//! - `store.rs`: [`Store`], the face: open the store the configuration names, and every operation
//!   the server uses;
//! - `decide.rs`: the rule that decides a batch, and the loop that takes a group;
//! - `error.rs`: [`StorageError`];
//! - `ready.rs`: [`ReadyFeed`], the agencies a shared store says became ready on any central;
//! - `rows.rs`: the bets file's row format (the file store's rows, and every store's export);
//! - `receipts.rs`: every agency's receipt from the stored rows, and one agency's rows exported;
//! - `status.rs`: [`LotteryRecord`], the whole lottery as the store holds it (the status page);
//! - [`file`]: the bets file and its journal ([`file::BetStore`]), one central's;
//! - [`postgres`]: the bets in PostgreSQL ([`postgres::PgStore`]), shared by several centrals.

pub mod decide;
mod error;
pub mod file;
pub mod postgres;
mod ready;
mod receipts;
mod rows;
mod status;
mod store;

use std::path::PathBuf;
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::sync::oneshot;

use crate::domain::Draw;

pub use error::StorageError;
pub(crate) use ready::ReadyInbox;
pub use ready::{READY_POLL, ReadyFeed, ReadyNews};
pub(crate) use receipts::{ReceiptsBuilder, copy_agency_rows};
pub use rows::{load_bets, store_bets};
pub use status::{AgencyRecord, LotteryRecord, RecordTotals};
pub use store::{Location, Opened, Store, verify};

/// The default of [`StoreOptions::max_bets_per_agency`] (`LOTTERY_MAX_BETS_PER_AGENCY`).
pub const DEFAULT_MAX_BETS_PER_AGENCY: u64 = 10_000_000;

/// The default of [`StoreOptions::min_free_bytes`] (`LOTTERY_MIN_FREE_BYTES`): 64 MiB.
pub const DEFAULT_MIN_FREE_BYTES: u64 = 64 << 20;

/// How a store writes, and what it refuses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StoreOptions {
    /// The file store: fdatasync every group commit before acknowledging it (`LOTTERY_FSYNC`).
    pub sync: bool,
    /// Most bets stored for one agency, adopted rows included.
    pub max_bets_per_agency: u64,
    /// The file store: free bytes the bets file's filesystem must keep after a group commit;
    /// 0: no check.
    pub min_free_bytes: u64,
    /// The file store: bytes of rows the journal carries past which the bets file is synced and
    /// the journal rewritten without them (`LOTTERY_JOURNAL_COMPACT_BYTES`).
    pub journal_compact_bytes: u64,
}

/// The default of [`StoreOptions::journal_compact_bytes`]: 64 MiB.
pub const DEFAULT_JOURNAL_COMPACT_BYTES: u64 = 64 << 20;

impl Default for StoreOptions {
    fn default() -> Self {
        Self {
            sync: true,
            max_bets_per_agency: DEFAULT_MAX_BETS_PER_AGENCY,
            min_free_bytes: DEFAULT_MIN_FREE_BYTES,
            journal_compact_bytes: DEFAULT_JOURNAL_COMPACT_BYTES,
        }
    }
}

/// A session of an agency, as its store numbers it: its batches and its `ReadyForLottery`
/// carry it, and a store several centrals share refuses them once a newer session of the agency
/// took over anywhere ([`StorageError::Fenced`]). One central's store fences its sessions in
/// memory (the server's session registry) and numbers them all 0.
pub type SessionEpoch = i64;

/// An agency's durable progress.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct AgencyProgress {
    /// The last batch sequence number stored (0: none yet).
    pub last_seq: u64,
    /// Bets stored for the agency, over all its batches.
    pub stored_bets: u64,
    /// Whether it declared ReadyForLottery.
    pub ready: bool,
}

/// What became of a stored batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stored {
    /// Stored now.
    New,
    /// A retry of a batch already stored: nothing written.
    Duplicate,
}

/// The draw's result, and whether this call is the one that recorded it.
#[derive(Debug)]
pub struct Drawn {
    pub draw: Draw,
    /// False when the draw was already recorded (before a restart, or by another central).
    pub recorded_now: bool,
}

/// Counters for the shutdown line, benchmarks and tests.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StoreStats {
    /// Group commits that stored batches.
    pub groups: u64,
    /// Syncs they made: the file store's fdatasyncs, the database's `COMMIT`s.
    pub syncs: u64,
}

/// The histogram both stores record each group commit's time in, in seconds. The central's
/// metrics table (`server/metrics.rs`) describes it; the name is written here, once, because
/// the stores record it.
pub const COMMIT_SECONDS_METRIC: &str = "lottery_commit_seconds";

/// What a store reads of its resources, for the central's gauges (read at each scrape).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StoreGauges {
    /// The file store: free bytes on the bets file's filesystem, at its last reading (at open,
    /// then at every group commit: the reading the `min_free_bytes` check makes).
    pub free_bytes: Option<u64>,
    /// The file store: `min_free_bytes`, the floor those free bytes are checked against.
    pub min_free_bytes: Option<u64>,
    /// PostgreSQL: each connection pool.
    pub pools: Vec<PoolGauges>,
}

/// One connection pool, as it is now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PoolGauges {
    /// Which pool: `queries` (sessions, ready, draw) or `commit` (the committer's).
    pub pool: &'static str,
    /// Most connections it opens.
    pub max: usize,
    /// Connections open, idle ones included.
    pub open: usize,
    /// Open connections no task holds.
    pub idle: usize,
    /// Tasks waiting for a connection.
    pub waiting: usize,
}

/// What checking a bets file found (`lottery-server verify`, and the file store's export): what
/// a start would keep, and what it would cut as never acknowledged.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Verified {
    /// False when there is no bets file (and no journal): nothing is stored.
    pub exists: bool,
    /// Committed bytes of the bets file.
    pub bytes: u64,
    /// Bets they hold (adopted rows included).
    pub bets: u64,
    /// Batches the journal records.
    pub batches: u64,
    /// Groups whose rows matched their journal's CRC.
    pub groups_checked: u64,
    /// No journal: a start would adopt the file (every row was read as a valid bet).
    pub adopted: bool,
    /// A journal of an older format: a start would rewrite it in the current one.
    pub journal_converted: bool,
    /// Bytes a start would cut from the bets file (never acknowledged).
    pub cut_bets_bytes: u64,
    /// Bytes a start would cut from the journal (a torn tail, an unacknowledged group).
    pub cut_journal_bytes: u64,
    /// Bytes a start would rewrite in the bets file from the journal's copy (rows its unsynced
    /// tail lost in a crash); `export` writes them from there.
    pub rewritten_bets_bytes: u64,
    /// Agencies ready.
    pub ready: usize,
    /// Whether the draw ran.
    pub drawn: bool,
}

/// The answer to a submitted batch, once its group is committed (or refused).
#[derive(Debug)]
pub struct Ack(oneshot::Receiver<Result<Stored, StorageError>>);

/// Where a committer sends a batch's answer.
pub(crate) type AckSender = oneshot::Sender<Result<Stored, StorageError>>;

impl Ack {
    /// A new answer to await, and where the committer sends it.
    pub(crate) fn channel() -> (AckSender, Self) {
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
