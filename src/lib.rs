//! lottery: the Lotería Nacional bet collection system.
//!
//! Agencies (clients) upload their bets in batches over TCP to the central (server), which
//! validates and stores every bet. When every expected agency is done, the central runs the draw
//! and each agency receives the winners of its own bets, and only those.
//!
//! # Layout
//! - [`domain`]: validated types (`Bet`, `AgencyId`, …), the rules on a bet's fields, a received
//!   batch's checked bets (`BetBatch`), the draw and its winner rule; why a bet has seven types.
//! - [`protocol`]: the messages and `MessageCodec`, the framing that turns a socket into a
//!   stream of them; the limits both sides share (frame and batch sizes, batches in flight); the
//!   agency's batch encoder and the central's in-place `Batch` reader.
//! - `csv_rows`: the CSV row format both sides read (agency files, the bets file): the csv
//!   crate's reader and the agency's fast `RecordReader`.
//! - [`storage`]: where bets live: the [`Store`](storage::Store) face the server uses, with the
//!   file store (the bets file and its journal behind a Tokio mutex, group commit, recovery) and
//!   the PostgreSQL store (shared by several centrals) behind it.
//! - [`server`]: the central: accept loop, one task per connection, sessions, the lottery.
//! - [`client`]: one agency: its connection to the central, the upload, the agency-file reader,
//!   failover between centrals.
//! - [`config`]: both binaries' settings, from flags, environment variables and a
//!   configuration file; one table of every setting and its default.
//! - [`datagen`]: deterministic agency files for tests, demos and benchmarks.
//! - [`signal`]: the binaries' shutdown signals (SIGTERM, Ctrl-C) turned into a cancellation.
//! - [`memory`]: how the binaries take memory: the global allocator, no transparent huge pages.
//! - [`open_files`]: the central's limit of open files, raised to what its agencies need.
//! - [`telemetry`]: the graders' log line format.
//!
//! The path of one bet through these files is in `docs/architecture.md`.

pub mod client;
pub mod config;
mod csv_rows;
pub mod datagen;
pub mod domain;
#[cfg(test)]
mod fixtures;
pub mod memory;
pub mod open_files;
pub mod protocol;
pub mod server;
pub mod signal;
pub mod storage;
pub mod telemetry;

pub use client::{ClientError, Connection};
pub use config::{ClientConfig, ConfigError, ServerConfig};
pub use domain::{AgencyId, Bet, Draw};
pub use server::ServerError;
pub use storage::StorageError;
