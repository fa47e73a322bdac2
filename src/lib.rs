//! lottery: the Lotería Nacional bet collection system.
//!
//! Agencies (clients) upload their bets in batches over TCP to the central (server), which
//! validates and stores every bet. When every expected agency is done, the central runs the draw
//! and each agency receives the winners of its own bets, and only those.
//!
//! # Layout
//! - [`domain`]: validated types (`Bet`, `AgencyId`, …) and the winner rule.
//! - [`protocol`]: the messages and `MessageCodec`, the framing that turns a socket into a
//!   stream of them.
//! - [`storage`]: `BetStore`, the bets file behind a Tokio mutex, in the original CSV format.
//! - [`server`]: the accept loop, one task per connection, the barrier and the draw.
//! - [`client`]: one agency's session, and the agency-file reader.
//! - [`config`]: both binaries' settings, from environment variables.
//! - [`datagen`]: deterministic agency files for tests, demos and benchmarks.
//! - [`signal`]: SIGTERM/Ctrl-C for the binaries.
//! - [`telemetry`]: the graders' log line format.

pub mod client;
pub mod config;
mod csv_rows;
pub mod datagen;
pub mod domain;
pub mod protocol;
pub mod server;
pub mod signal;
pub mod storage;
pub mod telemetry;

pub use client::{ClientError, Connection};
pub use config::{ClientConfig, ConfigError, ServerConfig};
pub use domain::{AgencyId, Bet, Draw};
pub use server::ServerError;
pub use storage::{BetStore, StorageError};
