//! [`ConfigError`]: a setting, file or command line that cannot be used, named in the message.

use std::path::PathBuf;

/// A variable that is missing or does not parse. Its message names the variable, the value and
/// what was expected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    #[error("{var} is required: expected {expected}")]
    Missing { var: &'static str, expected: &'static str },
    #[error("{var}={} is invalid: expected {expected}", echo(value))]
    Invalid { var: &'static str, value: String, expected: String },
    #[error("{var}: {path}, line {line}: {reason}")]
    File { var: &'static str, path: PathBuf, line: usize, reason: String },
    #[error("{var}: cannot read {path}: {reason}")]
    Unreadable { var: &'static str, path: PathBuf, reason: String },
    /// `--help`, `--version` (exit code 0), or a command line that does not parse (2).
    #[error("{message}")]
    Usage { message: String, exit_code: i32 },
}

/// Most bytes of a rejected value an error shows: a value is echoed to name the mistake, and a
/// megabyte-long one would make a megabyte-long log line.
pub const MAX_ECHO_BYTES: usize = 200;

/// `value` as an error shows it: quoted, cut after [`MAX_ECHO_BYTES`] (at a character boundary),
/// saying how many bytes were cut.
pub(crate) fn echo(value: &str) -> String {
    if value.len() <= MAX_ECHO_BYTES {
        return format!("{value:?}");
    }
    let mut end = MAX_ECHO_BYTES;
    while !value.is_char_boundary(end) {
        end -= 1;
    }
    format!("{:?}… ({} more bytes cut)", &value[..end], value.len() - end)
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
