//! `ServerConfig` and `ClientConfig`: from flags, environment variables, a configuration file and
//! defaults, in that order of precedence (see [`sources`] for the table of settings).
//!
//! Both are built on `from_lookup(|name| …)`, keyed by the environment variable names, so tests
//! pass a map instead of touching the process environment; `load(args, env)` layers the command
//! line and the file on top. An empty value counts as unset (compose writes `VAR=` for "no value").

use std::collections::HashMap;
use std::ffi::OsString;
use std::fmt;
use std::net::{IpAddr, SocketAddr, ToSocketAddrs};
use std::num::{NonZeroU32, NonZeroUsize};
use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

use tracing::Level;

use crate::domain::{
    AgencyId, Bet, BetNumber, Checker, Document, latest_birthdate, parse_date, parse_digits,
};
use crate::protocol::{FRAME_LEN_CAP, MAX_BATCH_BYTES};

mod sources;
mod tokens;

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
}

/// The most agencies a central accepts (each gets a barrier party and a little state).
pub const MAX_AGENCIES: u32 = 100_000;

/// `lottery-server` settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerConfig {
    /// `SERVER_IP`: address to listen on, or a host name resolved to one (its first IPv4
    /// address, else its first address). Default `0.0.0.0`.
    pub ip: IpAddr,
    /// `SERVER_PORT`: 0 picks a free port. Default 12345.
    pub port: u16,
    /// `SERVER_LISTEN_BACKLOG`: pending connections the kernel queues. Default 128.
    pub listen_backlog: u32,
    /// `LOGGING_LEVEL`. Default INFO.
    pub logging_level: Level,
    /// `LOTTERY_AGENCIES`: agencies that must be ready before the draw, numbered 1..=N. Default 5.
    pub agencies: NonZeroU32,
    /// `BETS_FILE`. Default `./bets.csv`.
    pub bets_file: PathBuf,
    /// `LOTTERY_BATCH_MAX_BETS`: bets in one batch. Default 500 (more than 8 kB can hold).
    pub batch_max_bets: NonZeroUsize,
    /// `LOTTERY_FSYNC`: sync every batch to disk before acknowledging it. Default true; false is
    /// only for measuring what durability costs.
    pub fsync: bool,
    /// `LOTTERY_MAX_CONNECTIONS`: connections served at once; more are refused with `Busy`.
    /// Default 1024.
    pub max_connections: NonZeroUsize,
    /// `LOTTERY_MAX_PENDING_HELLOS`: connections that have not completed `Hello` yet; a newer one
    /// beyond it closes the oldest of them, so a flood cannot keep agencies out. Less than
    /// `max_connections`. Default 64 (half of a `max_connections` under 128).
    pub max_pending_hellos: NonZeroUsize,
    /// `LOTTERY_MAX_FRAME_BYTES`: largest frame payload accepted, checked before it is buffered.
    /// Default 8192.
    pub max_frame_bytes: usize,
    /// `LOTTERY_HELLO_TIMEOUT`: time a new connection has to send `Hello`. Default 5 s.
    pub hello_timeout: Duration,
    /// `LOTTERY_READ_TIMEOUT`: time an agency has to send each whole message once the central
    /// waits for one (a slow trickle of bytes does not reset it). Default 30 s.
    pub read_timeout: Duration,
    /// `LOTTERY_WRITE_TIMEOUT`: time a reply may take to be written (a peer that never reads).
    /// Default 10 s.
    pub write_timeout: Duration,
    /// `LOTTERY_AGENCY_TOKENS_FILE`: `agency:token` lines; when set, every agency must present its
    /// token in `Hello`. Default: no tokens.
    pub agency_tokens: Option<AgencyTokens>,
    /// `METRICS_ADDR`: where to serve Prometheus metrics (`/metrics`). Default: off.
    pub metrics_addr: Option<SocketAddr>,
    /// `LOTTERY_MAX_BETS_PER_AGENCY`: most bets stored for one agency; a batch that would pass it
    /// is refused (`Storage`). Default 10,000,000.
    pub max_bets_per_agency: u64,
    /// `LOTTERY_MIN_FREE_BYTES`: free bytes the bets file's filesystem must keep; below it
    /// batches are refused (`Storage`). 0 turns the check off. Default 64 MiB.
    pub min_free_bytes: u64,
}

impl ServerConfig {
    /// Reads the configuration from this process's command line, environment and configuration
    /// file (flag > environment > file > default).
    ///
    /// # Errors
    /// `Usage` for `--help`/`--version` or a bad command line; any other `ConfigError` for the
    /// first setting or file that does not parse.
    pub fn load_from_process() -> Result<Self, ConfigError> {
        Self::load(std::env::args_os(), env_lookup)
    }

    /// Like [`ServerConfig::load_from_process`], with the command line `args` (program name
    /// first) and the environment `env`.
    ///
    /// # Errors
    /// As [`ServerConfig::load_from_process`].
    pub fn load<T: Into<OsString> + Clone>(
        args: impl IntoIterator<Item = T>,
        env: impl Fn(&str) -> Option<String>,
    ) -> Result<Self, ConfigError> {
        let (flags, file) = sources::gather(&sources::SERVER, args, &env)?;
        Self::from_lookup(layered(&flags.values, &env, &file))
    }

    /// Reads the configuration from the process environment.
    ///
    /// # Errors
    /// The first variable that does not parse.
    pub fn from_env() -> Result<Self, ConfigError> {
        Self::from_lookup(env_lookup)
    }

    /// Reads the configuration through `lookup` (a variable name → its value).
    ///
    /// # Errors
    /// The first variable that does not parse.
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        let vars = Vars(&lookup);
        let agencies: NonZeroU32 = vars.parse_or(
            "LOTTERY_AGENCIES",
            NonZeroU32::MIN.saturating_add(4),
            "a whole number from 1 to 100000",
        )?;
        if agencies.get() > MAX_AGENCIES {
            return Err(vars.invalid("LOTTERY_AGENCIES", "a whole number from 1 to 100000"));
        }
        let max_connections: NonZeroUsize = vars.parse_or(
            "LOTTERY_MAX_CONNECTIONS",
            NonZeroUsize::MIN.saturating_add(1023),
            "a whole number of 2 or more",
        )?;
        if max_connections.get() < 2 {
            return Err(vars.invalid("LOTTERY_MAX_CONNECTIONS", "a whole number of 2 or more"));
        }
        Ok(Self {
            ip: vars.host("SERVER_IP", IpAddr::from([0, 0, 0, 0]))?,
            port: vars.parse_or("SERVER_PORT", 12345, "a port number from 0 to 65535")?,
            listen_backlog: vars.parse_or("SERVER_LISTEN_BACKLOG", 128, "a whole number")?,
            logging_level: vars.level("LOGGING_LEVEL")?,
            agencies,
            bets_file: vars.get("BETS_FILE").map_or_else(|| "./bets.csv".into(), PathBuf::from),
            batch_max_bets: vars.parse_or(
                "LOTTERY_BATCH_MAX_BETS",
                NonZeroUsize::MIN.saturating_add(499),
                "a whole number of 1 or more",
            )?,
            fsync: vars.boolean("LOTTERY_FSYNC", true)?,
            max_connections,
            max_pending_hellos: {
                // Unset: 64, or half of a smaller LOTTERY_MAX_CONNECTIONS.
                let default = NonZeroUsize::new((max_connections.get() / 2).min(64))
                    .unwrap_or(NonZeroUsize::MIN);
                let pending = vars.parse_or(
                    "LOTTERY_MAX_PENDING_HELLOS",
                    default,
                    "a whole number of 1 or more",
                )?;
                if pending >= max_connections {
                    return Err(vars.invalid(
                        "LOTTERY_MAX_PENDING_HELLOS",
                        format_args!(
                            "fewer than LOTTERY_MAX_CONNECTIONS ({max_connections}): the rest is \
                             kept for agencies that said Hello"
                        ),
                    ));
                }
                pending
            },
            max_frame_bytes: {
                let bytes: usize =
                    vars.parse_or("LOTTERY_MAX_FRAME_BYTES", 8192, "a whole number")?;
                if !(MAX_BATCH_BYTES..=FRAME_LEN_CAP).contains(&bytes) {
                    return Err(vars.invalid(
                        "LOTTERY_MAX_FRAME_BYTES",
                        "a number of bytes from 8192 (a whole batch is one frame) to 65536",
                    ));
                }
                bytes
            },
            hello_timeout: vars.duration("LOTTERY_HELLO_TIMEOUT", Duration::from_secs(5))?,
            read_timeout: vars.duration("LOTTERY_READ_TIMEOUT", Duration::from_secs(30))?,
            write_timeout: vars.duration("LOTTERY_WRITE_TIMEOUT", Duration::from_secs(10))?,
            agency_tokens: vars.tokens("LOTTERY_AGENCY_TOKENS_FILE", agencies.get())?,
            metrics_addr: match vars.get("METRICS_ADDR") {
                None => None,
                Some(addr) => Some(addr.trim().parse().map_err(|_| {
                    vars.invalid("METRICS_ADDR", "an address with a port, such as 0.0.0.0:9100")
                })?),
            },
            max_bets_per_agency: {
                let expected = "a whole number of bets of 1 or more";
                let limit: u64 = vars.parse_or(
                    "LOTTERY_MAX_BETS_PER_AGENCY",
                    crate::storage::DEFAULT_MAX_BETS_PER_AGENCY,
                    expected,
                )?;
                if limit == 0 {
                    return Err(vars.invalid("LOTTERY_MAX_BETS_PER_AGENCY", expected));
                }
                limit
            },
            min_free_bytes: vars.parse_or(
                "LOTTERY_MIN_FREE_BYTES",
                crate::storage::DEFAULT_MIN_FREE_BYTES,
                "a whole number of bytes, such as 67108864 (64 MiB); 0 turns the check off",
            )?,
        })
    }

    /// Whether `agency` is one of the `1..=agencies` this central expects.
    pub fn expects(&self, agency: u32) -> bool {
        (1..=self.agencies.get()).contains(&agency)
    }
}

/// The default `CLI_BATCH_MAXAMOUNT`: see README ("Batches") for how it was chosen.
pub const DEFAULT_BATCH_MAXAMOUNT: usize = 150;

/// The default `CLI_BATCH_WINDOW`: enough batches in flight to keep the central's group commits
/// full while one syncs (see README, "Performance").
pub const DEFAULT_BATCH_WINDOW: usize = 8;

/// The default `CLI_READ_TIMEOUT`: a group commit under load takes tens of milliseconds, a draw
/// over millions of bets a few seconds; a central silent for 10 s is stuck or gone.
pub const DEFAULT_CLIENT_READ_TIMEOUT: Duration = Duration::from_secs(10);

/// `lottery-client` settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientConfig {
    /// `CLI_ID`: this agency's number.
    pub id: AgencyId,
    /// `CLI_SERVER_ADDRESS`: the central, `host:port`. Default `server:12345`.
    pub server_address: String,
    /// `CLI_BATCH_MAXAMOUNT`: most bets per batch (batches also stay under 8 kB).
    pub batch_max_amount: NonZeroUsize,
    /// `CLI_BATCH_WINDOW`: batches sent ahead of their acknowledgements. Default 8.
    pub batch_window: NonZeroUsize,
    /// `CLI_LOG_LEVEL`. Default INFO.
    pub log_level: Level,
    /// `CLI_CONNECT_TIMEOUT`: how long to keep retrying without progress. Default 30 s.
    pub connect_timeout: Duration,
    /// `CLI_LOOP_PERIOD` (`loop.period`, the original's time between messages): the pause
    /// between consecutive messages of the agency (`Hello`, each batch, `ReadyForLottery`),
    /// before it logs its winners and before it exits. Default 0: no pause.
    pub loop_period: Duration,
    /// `CLI_LOOP_AMOUNT` (`loop.amount`, the original's number of messages): accepted so the
    /// course's files work, and logged; the agency sends its whole file whatever it says.
    /// Default 0 (unset).
    pub loop_amount: u64,
    /// `CLI_TOKEN`: this agency's secret, when the central requires tokens.
    pub token: Option<String>,
    /// `CLI_READ_TIMEOUT`: the longest the agency waits on the central for any one thing (a
    /// connection, `Welcome`, an acknowledgement, a `Pong`, a send) before it treats the
    /// connection as broken. Default 10 s.
    pub read_timeout: Duration,
    /// Where the bets come from.
    pub source: BetSource,
    /// `--check`: validate the agency file offline and exit.
    pub check: bool,
}

/// The bets an agency sends.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BetSource {
    /// `CLI_DATA_FILE`: an agency file (default `/data/agency-{CLI_ID}.csv`).
    File(PathBuf),
    /// `NOMBRE`, `APELLIDO`, `DOCUMENTO`, `NACIMIENTO`, `NUMERO`: one bet (the original exercise 5).
    Single(Bet),
}

const SINGLE_BET_VARS: [&str; 5] = ["NOMBRE", "APELLIDO", "DOCUMENTO", "NACIMIENTO", "NUMERO"];

impl ClientConfig {
    /// Reads the configuration from this process's command line, environment and configuration
    /// file (flag > environment > file > default).
    ///
    /// # Errors
    /// `Usage` for `--help`/`--version` or a bad command line; any other `ConfigError` for the
    /// first setting or file that does not parse.
    pub fn load_from_process() -> Result<Self, ConfigError> {
        Self::load(std::env::args_os(), env_lookup)
    }

    /// Like [`ClientConfig::load_from_process`], with the command line `args` (program name
    /// first) and the environment `env`.
    ///
    /// # Errors
    /// As [`ClientConfig::load_from_process`].
    pub fn load<T: Into<OsString> + Clone>(
        args: impl IntoIterator<Item = T>,
        env: impl Fn(&str) -> Option<String>,
    ) -> Result<Self, ConfigError> {
        let (flags, file) = sources::gather(&sources::CLIENT, args, &env)?;
        let mut config = Self::from_lookup(layered(&flags.values, &env, &file))?;
        config.check = flags.check;
        Ok(config)
    }

    /// Reads the configuration from the process environment.
    ///
    /// # Errors
    /// The first variable that is missing or does not parse.
    pub fn from_env() -> Result<Self, ConfigError> {
        Self::from_lookup(env_lookup)
    }

    /// Reads the configuration through `lookup` (a variable name → its value).
    ///
    /// # Errors
    /// The first variable that is missing or does not parse.
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        let vars = Vars(&lookup);
        let id_text = vars.get("CLI_ID").ok_or(ConfigError::Missing {
            var: "CLI_ID",
            expected: "this agency's number, 1 or more",
        })?;
        let id = AgencyId::parse(&id_text)
            .map_err(|_| vars.invalid("CLI_ID", "this agency's number, 1 or more"))?;
        let server_address =
            vars.get("CLI_SERVER_ADDRESS").unwrap_or_else(|| "server:12345".into());
        if !has_host_and_port(&server_address) {
            return Err(vars.invalid("CLI_SERVER_ADDRESS", "host:port, such as server:12345"));
        }
        Ok(Self {
            id,
            server_address,
            batch_max_amount: vars.parse_or(
                "CLI_BATCH_MAXAMOUNT",
                NonZeroUsize::MIN.saturating_add(DEFAULT_BATCH_MAXAMOUNT - 1),
                "a whole number of 1 or more",
            )?,
            batch_window: vars.parse_or(
                "CLI_BATCH_WINDOW",
                NonZeroUsize::MIN.saturating_add(DEFAULT_BATCH_WINDOW - 1),
                "a whole number from 1 to 32",
            )?,
            log_level: vars.level("CLI_LOG_LEVEL")?,
            connect_timeout: vars.duration("CLI_CONNECT_TIMEOUT", Duration::from_secs(30))?,
            loop_period: vars.period("CLI_LOOP_PERIOD")?,
            loop_amount: vars.parse_or("CLI_LOOP_AMOUNT", 0, "a whole number of 0 or more")?,
            token: vars.get("CLI_TOKEN"),
            read_timeout: vars.duration("CLI_READ_TIMEOUT", DEFAULT_CLIENT_READ_TIMEOUT)?,
            source: vars.source(id)?,
            check: false,
        })
    }
}

fn has_host_and_port(address: &str) -> bool {
    address
        .rsplit_once(':')
        .is_some_and(|(host, port)| !host.is_empty() && parse_digits::<u16>(port).is_some())
}

/// The first non-empty value of `name` among the flags, the environment and the file.
fn layered<'a>(
    flags: &'a HashMap<&'static str, String>,
    env: &'a impl Fn(&str) -> Option<String>,
    file: &'a HashMap<&'static str, String>,
) -> impl Fn(&str) -> Option<String> + 'a {
    move |name| {
        let from_flag = || flags.get(name).cloned();
        let from_file = || file.get(name).cloned();
        [from_flag(), env(name), from_file()].into_iter().flatten().find(|v| !v.is_empty())
    }
}

/// The process environment as a lookup (a variable that is not UTF-8 is kept, lossily, so its
/// parse error names it).
pub fn env_lookup(name: &str) -> Option<String> {
    match std::env::var(name) {
        Ok(value) => Some(value),
        Err(std::env::VarError::NotPresent) => None,
        // Not UTF-8: keep it visible so the parse error names it rather than ignoring it.
        Err(std::env::VarError::NotUnicode(raw)) => Some(raw.to_string_lossy().into_owned()),
    }
}

/// Typed access to the variables, with errors that name them.
struct Vars<'a, F>(&'a F);

impl<F: Fn(&str) -> Option<String>> Vars<'_, F> {
    fn get(&self, var: &str) -> Option<String> {
        (self.0)(var).filter(|v| !v.is_empty())
    }

    fn invalid(&self, var: &'static str, expected: impl fmt::Display) -> ConfigError {
        let value = self.get(var).unwrap_or_default();
        ConfigError::Invalid { var, value, expected: expected.to_string() }
    }

    fn parse_or<T: FromStr>(
        &self,
        var: &'static str,
        default: T,
        expected: &str,
    ) -> Result<T, ConfigError> {
        match self.get(var) {
            None => Ok(default),
            // Rust's number parsers take a leading `+`; no setting means to allow one.
            Some(v) if v.trim().starts_with('+') => Err(self.invalid(var, expected)),
            Some(v) => v.trim().parse().map_err(|_| self.invalid(var, expected)),
        }
    }

    /// An IP address, or a host name resolved to its first IPv4 address (else its first).
    fn host(&self, var: &'static str, default: IpAddr) -> Result<IpAddr, ConfigError> {
        let Some(v) = self.get(var) else { return Ok(default) };
        resolve_host(v.trim()).map_err(|reason| {
            self.invalid(
                var,
                format_args!(
                    "an IP address or a host name that resolves, such as 0.0.0.0 or server ({reason})"
                ),
            )
        })
    }

    fn tokens(
        &self,
        var: &'static str,
        agencies: u32,
    ) -> Result<Option<AgencyTokens>, ConfigError> {
        let Some(path) = self.get(var) else { return Ok(None) };
        let path = PathBuf::from(path);
        let text = std::fs::read_to_string(&path).map_err(|e| ConfigError::Unreadable {
            var,
            path: path.clone(),
            reason: e.to_string(),
        })?;
        AgencyTokens::parse(&text, agencies).map(Some).map_err(|(line, reason)| ConfigError::File {
            var,
            path,
            line,
            reason,
        })
    }

    fn boolean(&self, var: &'static str, default: bool) -> Result<bool, ConfigError> {
        let Some(v) = self.get(var) else { return Ok(default) };
        match v.trim().to_ascii_lowercase().as_str() {
            "true" | "1" | "yes" | "on" => Ok(true),
            "false" | "0" | "no" | "off" => Ok(false),
            _ => Err(self.invalid(var, "true or false")),
        }
    }

    fn level(&self, var: &'static str) -> Result<Level, ConfigError> {
        let Some(v) = self.get(var) else {
            return Ok(Level::INFO);
        };
        match v.trim().to_ascii_uppercase().as_str() {
            "ERROR" | "CRITICAL" => Ok(Level::ERROR),
            "WARN" | "WARNING" => Ok(Level::WARN),
            "INFO" => Ok(Level::INFO),
            "DEBUG" => Ok(Level::DEBUG),
            "TRACE" => Ok(Level::TRACE),
            _ => Err(self.invalid(var, "one of ERROR, WARN, INFO, DEBUG, TRACE")),
        }
    }

    fn duration(&self, var: &'static str, default: Duration) -> Result<Duration, ConfigError> {
        let Some(v) = self.get(var) else {
            return Ok(default);
        };
        parse_duration(v.trim())
            .filter(|d| !d.is_zero())
            .ok_or_else(|| self.invalid(var, "a duration above zero such as 30, 30s or 500ms"))
    }

    /// A pause that may be zero (none), such as `150ms`.
    fn period(&self, var: &'static str) -> Result<Duration, ConfigError> {
        let Some(v) = self.get(var) else { return Ok(Duration::ZERO) };
        parse_duration(v.trim())
            .ok_or_else(|| self.invalid(var, "a duration such as 0, 150ms, 5s or 1m"))
    }

    fn source(&self, id: AgencyId) -> Result<BetSource, ConfigError> {
        let single: HashMap<&str, String> =
            SINGLE_BET_VARS.iter().filter_map(|&var| Some((var, self.get(var)?))).collect();
        if single.is_empty() || self.get("CLI_DATA_FILE").is_some() {
            let default = format!("/data/agency-{id}.csv");
            return Ok(BetSource::File(self.get("CLI_DATA_FILE").unwrap_or(default).into()));
        }
        let [nombre, apellido, documento, nacimiento, numero] = SINGLE_BET_VARS.map(|var| {
            single.get(var).cloned().ok_or(ConfigError::Missing {
                var,
                expected: "all of NOMBRE, APELLIDO, DOCUMENTO, NACIMIENTO, NUMERO for a single bet",
            })
        });
        let (nombre, apellido) = (nombre?, apellido?);
        let document =
            Document::parse(&documento?).map_err(|e| self.invalid("DOCUMENTO", e.expected))?;
        let birthdate =
            parse_date(&nacimiento?).map_err(|e| self.invalid("NACIMIENTO", e.expected))?;
        let number =
            BetNumber::parse_text(&numero?).map_err(|e| self.invalid("NUMERO", e.expected))?;
        let latest = latest_birthdate(Checker::Agency);
        let bet =
            Bet::new(id, nombre, apellido, document, birthdate, number, latest).map_err(|e| {
                let var = match e.field {
                    "first_name" => "NOMBRE",
                    "last_name" => "APELLIDO",
                    _ => "NACIMIENTO",
                };
                self.invalid(var, e.expected)
            })?;
        Ok(BetSource::Single(bet))
    }
}

/// `host` as an address: itself if it is one, else what the resolver answers for it (its first
/// IPv4 address, else its first). `Err` says why not.
fn resolve_host(host: &str) -> Result<IpAddr, String> {
    if let Ok(ip) = host.parse::<IpAddr>() {
        return Ok(ip);
    }
    let addresses: Vec<SocketAddr> =
        (host, 0).to_socket_addrs().map_err(|e| format!("cannot resolve {host:?}: {e}"))?.collect();
    let ip = addresses.iter().find(|a| a.is_ipv4()).or(addresses.first()).map(SocketAddr::ip);
    ip.ok_or_else(|| format!("{host:?} resolves to no address"))
}

/// `30`, `30s`, `1500ms`, `2m`: a whole number of seconds, or with a unit.
fn parse_duration(text: &str) -> Option<Duration> {
    let split = text.find(|c: char| !c.is_ascii_digit()).unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let number: u64 = number.parse().ok()?;
    match unit.trim() {
        "" | "s" => Some(Duration::from_secs(number)),
        "ms" => Some(Duration::from_millis(number)),
        "m" => number.checked_mul(60).map(Duration::from_secs),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lookup<'a>(vars: &'a [(&'a str, &'a str)]) -> impl Fn(&str) -> Option<String> + 'a {
        move |name| vars.iter().find(|(k, _)| *k == name).map(|(_, v)| v.to_string())
    }

    #[test]
    fn server_defaults() {
        let config = ServerConfig::from_lookup(lookup(&[])).unwrap();
        assert_eq!(config.port, 12345);
        assert_eq!(config.agencies.get(), 5);
        assert_eq!(config.logging_level, Level::INFO);
        assert_eq!(config.bets_file, PathBuf::from("./bets.csv"));
        assert!(config.fsync);
        assert!(config.expects(5) && !config.expects(0) && !config.expects(6));
        assert_eq!((config.max_bets_per_agency, config.min_free_bytes), (10_000_000, 64 << 20));
        let config = ServerConfig::from_lookup(lookup(&[
            ("LOTTERY_MAX_BETS_PER_AGENCY", "250"),
            ("LOTTERY_MIN_FREE_BYTES", "0"),
        ]))
        .unwrap();
        assert_eq!((config.max_bets_per_agency, config.min_free_bytes), (250, 0));
    }

    #[test]
    fn server_values_and_errors_name_the_variable() {
        let config = ServerConfig::from_lookup(lookup(&[
            ("SERVER_PORT", "0"),
            ("LOGGING_LEVEL", "debug"),
            ("LOTTERY_AGENCIES", "20"),
            ("SERVER_IP", "127.0.0.1"),
        ]))
        .unwrap();
        assert_eq!((config.port, config.agencies.get()), (0, 20));
        assert_eq!(config.logging_level, Level::DEBUG);

        for (var, value) in [
            ("SERVER_PORT", "70000"),
            ("SERVER_PORT", "abc"),
            ("LOTTERY_AGENCIES", "0"),
            ("LOTTERY_AGENCIES", "100001"),
            ("LOGGING_LEVEL", "LOUD"),
            ("SERVER_IP", "no-such-host.invalid"),
            ("LOTTERY_BATCH_MAX_BETS", "0"),
            ("LOTTERY_FSYNC", "maybe"),
            ("LOTTERY_MAX_CONNECTIONS", "0"),
            ("LOTTERY_MAX_CONNECTIONS", "1"),
            ("LOTTERY_MAX_PENDING_HELLOS", "0"),
            ("LOTTERY_MAX_PENDING_HELLOS", "1024"),
            ("LOTTERY_MAX_FRAME_BYTES", "100"),
            ("LOTTERY_HELLO_TIMEOUT", "0s"),
            ("LOTTERY_READ_TIMEOUT", "soon"),
            ("LOTTERY_MAX_BETS_PER_AGENCY", "0"),
            ("LOTTERY_MAX_BETS_PER_AGENCY", "-1"),
            ("LOTTERY_MIN_FREE_BYTES", "64MiB"),
        ] {
            let err = ServerConfig::from_lookup(lookup(&[(var, value)])).unwrap_err();
            let text = err.to_string();
            assert!(text.starts_with(&format!("{var}={value:?} is invalid: expected ")), "{text}");
        }
    }

    #[test]
    fn server_ip_takes_an_address_or_a_host_name() {
        let ip = |value: &str| ServerConfig::from_lookup(lookup(&[("SERVER_IP", value)]));
        assert_eq!(ip("10.1.2.3").unwrap().ip, IpAddr::from([10, 1, 2, 3]));
        assert_eq!(ip("::1").unwrap().ip, "::1".parse::<IpAddr>().unwrap());
        // The course's `SERVER_IP = server` is a host name: it is resolved, IPv4 first.
        assert_eq!(ip("localhost").unwrap().ip, IpAddr::from([127, 0, 0, 1]));
        assert_eq!(ip(" localhost ").unwrap().ip, IpAddr::from([127, 0, 0, 1]));
        // `.invalid` never resolves (RFC 2606).
        let text = ip("no-such-host.invalid").unwrap_err().to_string();
        assert!(
            text.starts_with("SERVER_IP=\"no-such-host.invalid\" is invalid: expected an IP address or a host name that resolves"),
            "{text}"
        );
        assert!(text.contains("cannot resolve \"no-such-host.invalid\""), "{text}");
    }

    #[test]
    fn empty_variables_leave_the_file_in_charge() {
        // Compose passes `VAR: ${VAR:-}` as an empty value when `.env` leaves it empty.
        let dir = tempfile::tempdir().unwrap();
        let ini = dir.path().join("config.ini");
        std::fs::write(
            &ini,
            "[DEFAULT]\nSERVER_PORT = 4444\nSERVER_IP = localhost\nSERVER_LISTEN_BACKLOG = 8\nLOGGING_LEVEL = DEBUG\n",
        )
        .unwrap();
        let path = ini.display().to_string();
        let env = |name: &str| match name {
            "LOTTERY_CONFIG_FILE" => Some(path.clone()),
            "SERVER_PORT" | "SERVER_IP" | "SERVER_LISTEN_BACKLOG" | "LOGGING_LEVEL" => {
                Some(String::new())
            }
            _ => None,
        };
        let config = ServerConfig::load(["lottery-server"], env).unwrap();
        assert_eq!(config.port, 4444);
        assert_eq!(config.ip, IpAddr::from([127, 0, 0, 1]));
        assert_eq!(config.listen_backlog, 8);
        assert_eq!(config.logging_level, Level::DEBUG);

        let yaml = dir.path().join("config.yaml");
        std::fs::write(
            &yaml,
            "server:\n  address: \"server:12345\"\nloop:\n  amount: 5\n  period: 150ms\nlog:\n  level: DEBUG\nbatch:\n  maxAmount: 10\n",
        )
        .unwrap();
        let path = yaml.display().to_string();
        let env = |name: &str| match name {
            "CLI_CONFIG_FILE" => Some(path.clone()),
            "CLI_ID" => Some("3".to_owned()),
            "CLI_SERVER_ADDRESS"
            | "CLI_BATCH_MAXAMOUNT"
            | "CLI_LOG_LEVEL"
            | "CLI_LOOP_PERIOD"
            | "CLI_LOOP_AMOUNT" => Some(String::new()),
            _ => None,
        };
        let config = ClientConfig::load(["lottery-client"], env).unwrap();
        assert_eq!(config.server_address, "server:12345");
        assert_eq!(config.batch_max_amount.get(), 10);
        assert_eq!(config.log_level, Level::DEBUG);
        assert_eq!(config.loop_period, Duration::from_millis(150));
        assert_eq!(config.loop_amount, 5);
    }

    #[test]
    fn loop_period_is_a_pause_that_may_be_zero() {
        let period = |value: &str| {
            ClientConfig::from_lookup(lookup(&[("CLI_ID", "1"), ("CLI_LOOP_PERIOD", value)]))
        };
        assert_eq!(period("").unwrap().loop_period, Duration::ZERO, "unset: no pause");
        assert_eq!(period("0").unwrap().loop_period, Duration::ZERO);
        assert_eq!(period("150ms").unwrap().loop_period, Duration::from_millis(150));
        assert_eq!(period("5s").unwrap().loop_period, Duration::from_secs(5));
        let text = period("soon").unwrap_err().to_string();
        assert!(
            text.starts_with("CLI_LOOP_PERIOD=\"soon\" is invalid: expected a duration"),
            "{text}"
        );
        let text = ClientConfig::from_lookup(lookup(&[("CLI_ID", "1"), ("CLI_LOOP_AMOUNT", "-1")]))
            .unwrap_err()
            .to_string();
        assert!(text.starts_with("CLI_LOOP_AMOUNT=\"-1\" is invalid"), "{text}");
    }

    #[test]
    fn client_needs_an_id_and_reads_its_file_by_default() {
        let err = ClientConfig::from_lookup(lookup(&[])).unwrap_err();
        assert!(matches!(err, ConfigError::Missing { var: "CLI_ID", .. }));
        let config = ClientConfig::from_lookup(lookup(&[("CLI_ID", "3")])).unwrap();
        assert_eq!(config.server_address, "server:12345");
        assert_eq!(config.batch_max_amount.get(), DEFAULT_BATCH_MAXAMOUNT);
        assert_eq!(config.source, BetSource::File("/data/agency-3.csv".into()));
        assert_eq!(config.connect_timeout, Duration::from_secs(30));
        assert_eq!(config.read_timeout, DEFAULT_CLIENT_READ_TIMEOUT);
        assert_eq!((config.loop_period, config.loop_amount), (Duration::ZERO, 0), "no pacing");
    }

    #[test]
    fn client_errors_name_the_variable() {
        for (var, value) in [
            ("CLI_ID", "0"),
            ("CLI_SERVER_ADDRESS", "server"),
            ("CLI_SERVER_ADDRESS", "server:port"),
            ("CLI_BATCH_MAXAMOUNT", "0"),
            ("CLI_LOG_LEVEL", "x"),
            ("CLI_CONNECT_TIMEOUT", "soon"),
            ("CLI_READ_TIMEOUT", "0s"),
            ("CLI_ID", "+1"),
            ("CLI_SERVER_ADDRESS", "server:+80"),
            ("CLI_BATCH_MAXAMOUNT", "+5"),
            ("CLI_BATCH_WINDOW", "+2"),
        ] {
            let vars = [("CLI_ID", "1"), (var, value)];
            let vars = if var == "CLI_ID" { &vars[1..] } else { &vars[..] };
            let err = ClientConfig::from_lookup(lookup(vars)).unwrap_err();
            let text = err.to_string();
            assert!(text.starts_with(&format!("{var}={value:?} is invalid")), "{text}");
        }
    }

    #[test]
    fn client_read_timeout_has_a_flag_a_variable_and_a_yaml_key() {
        let dir = tempfile::tempdir().unwrap();
        let yaml = dir.path().join("agency.yaml");
        std::fs::write(&yaml, "id: 1\nread:\n  timeout: 4s\n").unwrap();
        let file = yaml.display().to_string();
        let env = |name: &str| (name == "CLI_CONFIG_FILE").then(|| file.clone());
        let config = ClientConfig::load(["lottery-client"], env).unwrap();
        assert_eq!(config.read_timeout, Duration::from_secs(4), "file");
        let env = |name: &str| match name {
            "CLI_CONFIG_FILE" => Some(file.clone()),
            "CLI_READ_TIMEOUT" => Some("2500ms".to_owned()),
            _ => None,
        };
        let config = ClientConfig::load(["lottery-client"], env).unwrap();
        assert_eq!(config.read_timeout, Duration::from_millis(2500), "environment");
        let config = ClientConfig::load(["lottery-client", "--read-timeout", "1s"], env).unwrap();
        assert_eq!(config.read_timeout, Duration::from_secs(1), "flag");
    }

    #[test]
    fn single_bet_mode_needs_all_five_variables() {
        let full = [
            ("CLI_ID", "2"),
            ("NOMBRE", "Ana María"),
            ("APELLIDO", "Núñez"),
            ("DOCUMENTO", "30904465"),
            ("NACIMIENTO", "1999-03-17"),
            ("NUMERO", "7574"),
        ];
        let config = ClientConfig::from_lookup(lookup(&full)).unwrap();
        let BetSource::Single(bet) = config.source else { panic!("single bet mode") };
        assert_eq!((bet.agency.get(), bet.number.get()), (2, 7574));

        let err = ClientConfig::from_lookup(lookup(&full[..5])).unwrap_err();
        assert!(matches!(err, ConfigError::Missing { var: "NUMERO", .. }), "{err}");
        let mut bad = full;
        bad[5] = ("NUMERO", "10000");
        let err = ClientConfig::from_lookup(lookup(&bad)).unwrap_err();
        assert!(err.to_string().starts_with("NUMERO=\"10000\" is invalid"), "{err}");
    }

    #[test]
    fn agency_tokens() {
        let text = "# agency:token\n1:s3cret\n\n 2 : other-token \n";
        let tokens = AgencyTokens::parse(text, 5).unwrap();
        assert_eq!(tokens.len(), 2);
        assert!(tokens.check(1, Some("s3cret")));
        assert!(tokens.check(2, Some("other-token")));
        assert!(!tokens.check(1, Some("other-token")), "another agency's token");
        assert!(!tokens.check(1, Some("s3cre")));
        assert!(!tokens.check(1, None));
        assert!(!tokens.check(3, Some("s3cret")), "no line, no valid token");
        assert!(!format!("{tokens:?}").contains("s3cret"), "never printed");
        for (text, line, reason) in [
            ("1:a\n1:b\n", 2, "twice"),
            ("1:a\nx\n", 2, "agency:token"),
            ("9:a\n", 1, "not in 1..=5"),
            ("1: \n", 1, "empty"),
            ("1:a b\n", 1, "spaces"),
        ] {
            let (at, why) = AgencyTokens::parse(text, 5).unwrap_err();
            assert_eq!(at, line, "{text:?}");
            assert!(why.contains(reason), "{why}");
        }
        let err =
            ServerConfig::from_lookup(lookup(&[("LOTTERY_AGENCY_TOKENS_FILE", "/nonexistent")]))
                .unwrap_err();
        assert!(
            err.to_string().starts_with("LOTTERY_AGENCY_TOKENS_FILE: cannot read /nonexistent"),
            "{err}"
        );
    }

    #[test]
    fn flags_beat_the_environment_which_beats_the_file_which_beats_the_default() {
        let dir = tempfile::tempdir().unwrap();
        let ini = dir.path().join("central.ini");
        std::fs::write(
            &ini,
            "[DEFAULT]\nSERVER_PORT = 1111\nSERVER_LISTEN_BACKLOG = 7\nlogging_level = DEBUG\n",
        )
        .unwrap();
        let env_vars = [
            ("LOTTERY_CONFIG_FILE", ini.display().to_string()),
            ("SERVER_PORT", "2222".to_owned()),
            ("LOGGING_LEVEL", "WARN".to_owned()),
        ];
        let env = |name: &str| env_vars.iter().find(|(k, _)| *k == name).map(|(_, v)| v.clone());
        let config = ServerConfig::load(["lottery-server", "--port", "3333"], env).unwrap();
        assert_eq!(config.port, 3333, "flag");
        assert_eq!(config.logging_level, Level::WARN, "environment over file");
        assert_eq!(config.listen_backlog, 7, "file over default");
        assert_eq!(config.agencies.get(), 5, "default");
        let config = ServerConfig::load(["lottery-server"], env).unwrap();
        assert_eq!(config.port, 2222, "environment over file");

        let yaml = dir.path().join("agency.yaml");
        std::fs::write(
            &yaml,
            "id: 4\nserver:\n  address: \"file:1\"\nbatch:\n  maxAmount: 50\nloop:\n  amount: 5\n",
        )
        .unwrap();
        let env_vars = [
            ("CLI_CONFIG_FILE", yaml.display().to_string()),
            ("CLI_BATCH_MAXAMOUNT", "60".to_owned()),
        ];
        let env = |name: &str| env_vars.iter().find(|(k, _)| *k == name).map(|(_, v)| v.clone());
        let config =
            ClientConfig::load(["lottery-client", "--server-address", "flag:2", "--check"], env)
                .unwrap();
        assert_eq!(config.id.get(), 4, "file");
        assert_eq!(config.server_address, "flag:2", "flag");
        assert_eq!(config.batch_max_amount.get(), 60, "environment");
        assert_eq!(config.batch_window.get(), DEFAULT_BATCH_WINDOW, "default");
        assert!(config.check);
    }

    #[test]
    fn a_malformed_or_unknown_file_setting_names_file_and_line() {
        let dir = tempfile::tempdir().unwrap();
        let ini = dir.path().join("bad.ini");
        std::fs::write(&ini, "[DEFAULT]\nSERVER_PORT = 1\nthis is not a setting\n").unwrap();
        let path = ini.display().to_string();
        let env = |name: &str| (name == "LOTTERY_CONFIG_FILE").then(|| path.clone());
        let err = ServerConfig::load(["lottery-server"], env).unwrap_err().to_string();
        assert!(err.contains("bad.ini, line 3: expected key = value"), "{err}");

        std::fs::write(&ini, "[DEFAULT]\nSERVER_PORT = 1\nSERVER_PROT = 2\n").unwrap();
        let err = ServerConfig::load(["lottery-server"], env).unwrap_err().to_string();
        assert!(err.contains("line 3: unknown key \"SERVER_PROT\""), "{err}");

        std::fs::write(&ini, "[DEFAULT]\nSERVER_PORT = lots\n").unwrap();
        let err = ServerConfig::load(["lottery-server"], env).unwrap_err().to_string();
        assert!(
            err.starts_with("SERVER_PORT=\"lots\" is invalid"),
            "a bad value names its setting: {err}"
        );

        let err = ServerConfig::load(["lottery-server", "--config", "/nonexistent.ini"], |_| None);
        assert!(matches!(err, Err(ConfigError::Unreadable { .. })), "{err:?}");
    }

    #[test]
    fn help_and_version_are_usage_with_exit_code_zero() {
        let Err(ConfigError::Usage { message, exit_code: 0 }) =
            ServerConfig::load(["lottery-server", "--help"], |_| None)
        else {
            panic!("--help")
        };
        for option in SERVER_OPTIONS {
            assert!(message.contains(&format!("--{}", option.flag)), "{}", option.flag);
            assert!(message.contains(&format!("[env: {}]", option.env)), "{}", option.env);
        }
        let Err(ConfigError::Usage { message, exit_code: 0 }) =
            ClientConfig::load(["lottery-client", "--version"], |_| None)
        else {
            panic!("--version")
        };
        assert!(message.contains(env!("CARGO_PKG_VERSION")));
        let Err(ConfigError::Usage { exit_code: 2, .. }) =
            ClientConfig::load(["lottery-client", "--nope"], |_| None)
        else {
            panic!("a bad flag")
        };
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("30"), Some(Duration::from_secs(30)));
        assert_eq!(parse_duration("250ms"), Some(Duration::from_millis(250)));
        assert_eq!(parse_duration("2m"), Some(Duration::from_secs(120)));
        assert_eq!(parse_duration("2h"), None);
        assert_eq!(parse_duration("s"), None);
    }
}
