//! The file store: the bets file (`BETS_FILE`, the original's `bets.csv` rows) and its journal
//! (`BETS_FILE.journal`), one central's. Its durability, recovery and limits are in
//! [`BetStore`]'s module, `store.rs`, and in `docs/durability.md`.
//!
//! # Layout
//! - `store.rs`: [`BetStore`], the file store's face;
//! - `commit.rs`: the queue and group commit; `committer.rs`: the task that commits, which the
//!   store owns;
//! - `disk.rs`: the open, locked files ([`Files`](disk::Files)) and the file-system steps
//!   (lock, install a journal, sync a directory, check a row's end, CRC of rows);
//! - `wal.rs`: a group's disk steps (the journal carries the rows; one sync), the journal's
//!   compaction, and the test hook `LOTTERY_TEST_STOP_AT`;
//! - `record.rs`: the journal's records; `journal.rs`: their replay; `ledger.rs`: what they add
//!   up to;
//! - `recovery.rs`: start-up recovery ([`Recovery`]): every check, then the cuts;
//!   `check.rs`: every group's rows against their CRC, and where damage lies; `adopt.rs`: a bets
//!   file without a journal; `legacy.rs`: older journals' check and conversion;
//! - `inspect.rs`: the same checks, changing nothing (`lottery-server export` and `verify`).

mod adopt;
mod check;
mod commit;
mod committer;
mod disk;
mod inspect;
mod journal;
mod ledger;
mod legacy;
mod record;
mod recovery;
mod store;
#[cfg(test)]
mod tests;
mod wal;
#[cfg(test)]
mod wal_tests;

pub use commit::MAX_GROUP_BYTES;
pub(crate) use inspect::{Inspection, inspect};
pub use recovery::Recovery;
pub use store::BetStore;
