//! `ServerConfig` and `ClientConfig`: from flags, environment variables, a configuration file and
//! defaults, in that order of precedence (see `sources.rs` for the table of settings).
//!
//! Both are built on `from_lookup(|name| …)`, keyed by the environment variable names, so tests
//! pass a map instead of touching the process environment; `load(args, env)` layers the command
//! line and the file on top. An empty value counts as unset (compose writes `VAR=` for "no value").

//!
//! # Layout
//! - `server.rs`: [`ServerConfig`]; `client.rs`: [`ClientConfig`] and [`BetSource`];
//! - `sources.rs`: the table of every setting (flag, variable, file key, default) and the
//!   command line and configuration files; the table is the one home of each default;
//! - `files.rs`: the configuration files (`config.ini`, `config.yaml`);
//! - `settings.rs`: the layered lookup and typed access shared by both sides;
//! - `tokens.rs`: the agency tokens file.

use std::path::PathBuf;

mod client;
mod files;
mod server;
mod settings;
mod sources;
#[cfg(test)]
mod tests;
mod tokens;

pub use client::{BetSource, ClientConfig, DEFAULT_CLIENT_READ_TIMEOUT, ServerAddresses};
pub use server::{DatabaseUrl, MAX_AGENCIES, ServerConfig, redact_password};
pub use settings::env_lookup;
pub use sources::{CLIENT_OPTIONS, ConfigOption, SERVER_OPTIONS};
pub use tokens::AgencyTokens;

/// A variable that is missing or does not parse. Its message names the variable, the value and
/// what was expected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    #[error("{var} is required: expected {expected}")]
    Missing { var: &'static str, expected: &'static str },
    #[error("{var}={value:?} is invalid: expected {expected}")]
    Invalid { var: &'static str, value: String, expected: String },
    #[error("{var}: {path}, line {line}: {reason}")]
    File { var: &'static str, path: PathBuf, line: usize, reason: String },
    #[error("{var}: cannot read {path}: {reason}")]
    Unreadable { var: &'static str, path: PathBuf, reason: String },
    /// `--help`, `--version` (exit code 0), or a command line that does not parse (2).
    #[error("{message}")]
    Usage { message: String, exit_code: i32 },
}

impl ConfigError {
    /// Prints a `Usage` error as a command-line tool should (help on stdout, mistakes on stderr)
    /// and returns its exit code; any other error is the caller's to log.
    pub fn print_usage(&self) -> Option<u8> {
        let Self::Usage { message, exit_code } = self else { return None };
        if *exit_code == 0 {
            print!("{message}");
        } else {
            eprint!("{message}");
        }
        Some(u8::try_from(*exit_code).unwrap_or(2))
    }

    /// What a binary does when its configuration fails: prints a `Usage` error (see
    /// [`ConfigError::print_usage`]), or logs any other as `action: config | result: fail`;
    /// returns the exit code (2 for a bad configuration).
    pub fn report(&self) -> u8 {
        if let Some(code) = self.print_usage() {
            return code;
        }
        crate::telemetry::init(tracing::Level::INFO, None);
        tracing::error!(action = "config", result = "fail", error = %self);
        2
    }
}
