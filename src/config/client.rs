//! `ClientConfig`: `lottery-client`'s settings, and where its bets come from.

use std::collections::HashMap;
use std::ffi::OsString;
use std::num::NonZeroUsize;
use std::path::PathBuf;
use std::time::Duration;

use tracing::Level;

use super::error::echo;
use super::settings::{Vars, env_lookup, layered};
use super::{ConfigError, sources};
use crate::domain::{
    AgencyId, Bet, BetNumber, Checker, Document, latest_birthdate, parse_date, parse_digits,
};
use crate::protocol::MAX_BATCHES_IN_FLIGHT;

/// The default `CLI_READ_TIMEOUT`, for callers without a configuration (its home is the
/// settings table; a test checks they agree): a group commit under load takes tens of milliseconds, a draw
/// over millions of bets a few seconds; a central silent for 10 s is stuck or gone.
pub const DEFAULT_CLIENT_READ_TIMEOUT: Duration = Duration::from_secs(10);

/// `lottery-client` settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientConfig {
    /// `CLI_ID`: this agency's number.
    pub id: AgencyId,
    /// `CLI_SERVER_ADDRESS`: the centrals, `host:port` each, in failover order. Default
    /// `server:12345`.
    pub server_addresses: ServerAddresses,
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
    /// The agency's settings from this process's command line, environment and `config.yaml`,
    /// as [`ServerConfig::load_from_process`](super::ServerConfig::load_from_process) reads the
    /// central's.
    ///
    /// # Errors
    /// As `ServerConfig::load_from_process`.
    pub fn load_from_process() -> Result<Self, ConfigError> {
        Self::load(std::env::args_os(), env_lookup)
    }

    /// As [`ClientConfig::load_from_process`], from `args` (program name first) and `env`;
    /// `--check` is a flag only.
    ///
    /// # Errors
    /// As `ServerConfig::load_from_process`.
    pub fn load<T: Into<OsString> + Clone>(
        args: impl IntoIterator<Item = T>,
        env: impl Fn(&str) -> Option<String>,
    ) -> Result<Self, ConfigError> {
        let (flags, file) = sources::gather(&sources::CLIENT, args, &env)?;
        let check = flags.check;
        Self::from_lookup(layered(&flags.values, &env, &file))
            .map(|config| Self { check, ..config })
    }

    /// Reads the configuration through `lookup` (a variable name → its value).
    ///
    /// # Errors
    /// The first variable that is missing or does not parse.
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        let vars = Vars(&lookup);
        let id_text = vars.set("CLI_ID").ok_or(ConfigError::Missing {
            var: "CLI_ID",
            expected: "this agency's number, 1 or more",
        })?;
        let id = AgencyId::parse(&id_text)
            .map_err(|_| vars.invalid("CLI_ID", "this agency's number, 1 or more"))?;
        let addresses = vars.get("CLI_SERVER_ADDRESS").unwrap_or_default();
        let server_addresses = ServerAddresses::parse(&addresses)
            .map_err(|expected| vars.invalid("CLI_SERVER_ADDRESS", expected))?;
        Ok(Self {
            id,
            server_addresses,
            batch_max_amount: vars.parse("CLI_BATCH_MAXAMOUNT", "a whole number of 1 or more")?,
            batch_window: {
                let expected = format!("a whole number from 1 to {MAX_BATCHES_IN_FLIGHT}");
                let window: NonZeroUsize = vars.parse("CLI_BATCH_WINDOW", &expected)?;
                // The central reads at most this many batches ahead of their acknowledgements.
                if window.get() > MAX_BATCHES_IN_FLIGHT {
                    return Err(vars.invalid("CLI_BATCH_WINDOW", expected));
                }
                window
            },
            log_level: vars.level("CLI_LOG_LEVEL")?,
            connect_timeout: vars.duration("CLI_CONNECT_TIMEOUT")?,
            loop_period: vars.period("CLI_LOOP_PERIOD")?,
            loop_amount: vars.parse("CLI_LOOP_AMOUNT", "a whole number of 0 or more")?,
            token: vars.set("CLI_TOKEN"),
            read_timeout: vars.duration("CLI_READ_TIMEOUT")?,
            source: vars.source(id)?,
            check: false,
        })
    }

    /// The first central of `CLI_SERVER_ADDRESS`, where the agency starts.
    pub fn server_address(&self) -> &str {
        self.server_addresses.first()
    }
}

/// What `CLI_SERVER_ADDRESS` expects, in its errors.
const EXPECTED_ADDRESS: &str = "host:port, such as server:12345";

/// The centrals an agency may talk to (`CLI_SERVER_ADDRESS`), `host:port` each, in failover
/// order: never empty, no address twice.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerAddresses(Vec<String>);

impl ServerAddresses {
    /// One `host:port`, or several separated by commas (spaces around them allowed).
    ///
    /// # Errors
    /// What was expected, naming the entry at fault: an empty entry, one that is not
    /// `host:port`, or one listed twice (the host compared without case, the port as a number).
    pub fn parse(text: &str) -> Result<Self, String> {
        let entries: Vec<&str> = text.split(',').map(str::trim).collect();
        if let [single] = entries[..] {
            return match host_and_port(single) {
                Some(_) => Ok(Self(vec![single.to_owned()])),
                None => Err(EXPECTED_ADDRESS.to_owned()),
            };
        }
        let expected =
            |what: String| format!("{EXPECTED_ADDRESS}, or several separated by commas; {what}");
        let mut seen: Vec<(String, u16)> = Vec::with_capacity(entries.len());
        for (i, entry) in entries.iter().enumerate() {
            let key = match host_and_port(entry) {
                _ if entry.is_empty() => return Err(expected(format!("entry {} is empty", i + 1))),
                Some((host, port)) => (host.to_ascii_lowercase(), port),
                None => return Err(expected(format!("entry {} is not host:port", echo(entry)))),
            };
            if seen.contains(&key) {
                return Err(expected(format!("entry {} is listed twice", echo(entry))));
            }
            seen.push(key);
        }
        Ok(Self(entries.into_iter().map(str::to_owned).collect()))
    }

    /// The first address: where an agency starts.
    pub fn first(&self) -> &str {
        // Never empty: `parse` is the only way to make one and refuses an empty list.
        self.0.first().map_or("", String::as_str)
    }

    /// The address at `index`, counting round the list (`index` past the end wraps).
    pub fn get(&self, index: usize) -> &str {
        self.0.get(index % self.0.len().max(1)).map_or("", String::as_str)
    }

    /// How many addresses there are (1 or more).
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Never: a list holds at least one address.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The addresses, in failover order.
    pub fn iter(&self) -> impl Iterator<Item = &str> {
        self.0.iter().map(String::as_str)
    }
}

/// As the setting is written: the addresses separated by commas.
impl std::fmt::Display for ServerAddresses {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0.join(","))
    }
}

/// `address`'s host and port, when it is `host:port` (a non-empty host, a port of digits only).
fn host_and_port(address: &str) -> Option<(&str, u16)> {
    let (host, port) = address.rsplit_once(':')?;
    let port = parse_digits::<u16>(port)?;
    (!host.is_empty()).then_some((host, port))
}

impl<F: Fn(&str) -> Option<String>> Vars<'_, F> {
    /// The agency file (`CLI_DATA_FILE`, else the default for `id`), or the single bet of the
    /// original exercise 5 when all its variables are set and no file is.
    fn source(&self, id: AgencyId) -> Result<BetSource, ConfigError> {
        let single: HashMap<&str, String> =
            SINGLE_BET_VARS.iter().filter_map(|&var| Some((var, self.set(var)?))).collect();
        if single.is_empty() || self.set("CLI_DATA_FILE").is_some() {
            let default = format!("/data/agency-{id}.csv");
            return Ok(BetSource::File(self.set("CLI_DATA_FILE").unwrap_or(default).into()));
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
