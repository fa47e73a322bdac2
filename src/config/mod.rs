//! `ServerConfig` and `ClientConfig`: from flags, environment variables, a configuration file and
//! defaults, in that order of precedence (see `options.rs` for the table of settings).
//!
//! Both are built on `from_lookup(|name| …)`, keyed by the environment variable names, so tests
//! pass a map instead of touching the process environment; `load(args, env)` layers the command
//! line and the file on top. An empty value counts as unset (compose writes `VAR=` for "no value").
//!
//! # Layout
//! - `server.rs`: [`ServerConfig`]; `client.rs`: [`ClientConfig`] and [`BetSource`];
//! - `options.rs`: the table of every setting (flag, variable, file key, default), the one home
//!   of each default;
//! - `sources.rs`: the command line (flags made from the table) and which configuration file is
//!   read, gathered for one binary;
//! - `files.rs`: the configuration files (`config.ini`, `config.yaml`);
//! - `settings.rs`: the layered lookup and typed access shared by both sides;
//! - `database.rs`: the database's connection string (`LOTTERY_DATABASE_URL`, or the file
//!   `LOTTERY_DATABASE_URL_FILE` names): its password hidden, its TLS parameters (`sslmode`,
//!   `sslrootcert`);
//! - `tokens.rs`: the agency tokens file;
//! - `error.rs`: [`ConfigError`].

mod client;
mod database;
mod error;
mod files;
mod options;
mod server;
mod settings;
mod sources;
#[cfg(test)]
mod tests;
mod tokens;

pub use client::{BetSource, ClientConfig, DEFAULT_CLIENT_READ_TIMEOUT, ServerAddresses};
pub use database::{DatabaseTls, DatabaseUrl, RootCerts, SslMode, redact_password};
pub use error::{ConfigError, MAX_ECHO_BYTES};
pub use options::{CLIENT_OPTIONS, ConfigOption, SERVER_OPTIONS};
pub use server::{MAX_AGENCIES, ServerConfig};
pub use settings::env_lookup;
pub use tokens::AgencyTokens;
