//! `StorageError`: what can go wrong storing or reading bets, each naming its file or agency.

use std::io;
use std::path::{Path, PathBuf};

use crate::domain::AgencyId;

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
    #[error(
        "database {target} refused this central ({reason}): check LOTTERY_DATABASE_URL's user, password and database name"
    )]
    DatabaseRefused { target: String, reason: String },
    /// TLS to the database failed in a way waiting does not fix (see `postgres/tls.rs`).
    #[error(
        "database {target}: TLS failed ({reason}): check sslmode and sslrootcert in LOTTERY_DATABASE_URL against the server's certificate"
    )]
    DatabaseTls { target: String, reason: String },
    #[error("database {target}: cannot {what}: {reason}")]
    Database { target: String, what: &'static str, reason: String },
    /// The database refused a statement for a reason waiting does not fix (its SQLSTATE class
    /// says so: a permission, a table of the same name with another shape, a read-only role…).
    #[error(
        "database {target}: cannot {what}: {reason}. Waiting does not fix this: fix the database, or the role LOTTERY_DATABASE_URL names, then start the central again"
    )]
    DatabaseRejected { target: String, what: &'static str, reason: String },
    #[error(
        "database {target}: its schema is version {found}, newer than this central's ({ours}): run a newer central"
    )]
    SchemaTooNew { target: String, found: i32, ours: i32 },
    #[error(
        "database {target} holds a lottery of {recorded} agencies (the LOTTERY_AGENCIES of the central that started it); this central has LOTTERY_AGENCIES={ours}: every central sharing a database must have the same, or one draws without some agencies' bets and another waits for a draw forever (to change it, stop every central and UPDATE lottery SET agencies = N)"
    )]
    AgenciesDiffer { target: String, recorded: u32, ours: u32 },
    #[error(
        "agency {agency}: a newer session of this agency took over (on this central or another); this one's batches are refused"
    )]
    Fenced { agency: AgencyId },
}

pub(super) fn write_error(path: &Path) -> impl Fn(io::Error) -> StorageError + '_ {
    move |source| StorageError::Write { path: path.to_owned(), source }
}

pub(super) fn interrupted(path: &Path, reason: &dyn std::fmt::Display) -> StorageError {
    StorageError::Interrupted { path: path.to_owned(), reason: reason.to_string() }
}
