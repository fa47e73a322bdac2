//! `ServerConfig`: `lottery-server`'s settings.

use std::ffi::OsString;
use std::net::{IpAddr, SocketAddr};
use std::num::{NonZeroU32, NonZeroUsize};
use std::path::PathBuf;
use std::time::Duration;

use tracing::Level;

use super::database::{DatabaseUrl, database_url};
use super::settings::{Vars, env_lookup, layered};
use super::{AgencyTokens, ConfigError, sources};
use crate::protocol::{FRAME_LEN_CAP, MAX_BATCH_BYTES};

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
    /// `HTTP_ADDR` (or its older name, `METRICS_ADDR`): where to serve the status page,
    /// `/status.json`, `/healthz`, `/readyz` and the Prometheus metrics (`/metrics`). Default: off.
    pub http_addr: Option<SocketAddr>,
    /// Settings given by an older name: `(older, current)`, for the binary to warn about.
    pub deprecated: Vec<(&'static str, &'static str)>,
    /// `METRICS_AGENCY_LABELS`: the metrics carry an `agency` label only while
    /// `LOTTERY_AGENCIES` is at most this; above it, each per-agency metric is one series summed
    /// over the agencies (about six series per agency otherwise). 0: never. Default 1000.
    pub metrics_agency_labels: u32,
    /// `LOTTERY_MAX_BETS_PER_AGENCY`: most bets stored for one agency; a batch that would pass it
    /// is refused (`Storage`). Default 10,000,000.
    pub max_bets_per_agency: u64,
    /// `LOTTERY_MIN_FREE_BYTES`: free bytes the bets file's filesystem must keep; below it
    /// batches are refused (`Storage`). 0 turns the check off. Default 64 MiB.
    pub min_free_bytes: u64,
    /// `LOTTERY_JOURNAL_COMPACT_BYTES`: the file store's journal carries each group's rows; once
    /// they pass this many bytes the bets file is synced and the journal rewritten without them. Default 64 MiB.
    pub journal_compact_bytes: u64,
    /// `LOTTERY_DATABASE_URL`: a PostgreSQL connection string; when set, bets are stored there
    /// (several centrals may share it) instead of in `bets_file`. Default: unset (the bets file).
    pub database_url: Option<DatabaseUrl>,
}

/// `HTTP_ADDR`, else its older name `METRICS_ADDR` (which the binary warns about).
fn http_addr(
    vars: &Vars<'_, impl Fn(&str) -> Option<String>>,
) -> Result<Option<SocketAddr>, ConfigError> {
    let Some((var, addr)) =
        ["HTTP_ADDR", "METRICS_ADDR"].into_iter().find_map(|var| Some((var, vars.set(var)?)))
    else {
        return Ok(None);
    };
    let expected = "an address with a port, such as 0.0.0.0:8080 (port 0: a free one)";
    let addr = addr.trim().parse().map_err(|_| vars.invalid(var, expected))?;
    Ok(Some(addr))
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
        let agencies: NonZeroU32 =
            vars.parse("LOTTERY_AGENCIES", "a whole number from 1 to 100000")?;
        if agencies.get() > MAX_AGENCIES {
            return Err(vars.invalid("LOTTERY_AGENCIES", "a whole number from 1 to 100000"));
        }
        let max_connections: NonZeroUsize =
            vars.parse("LOTTERY_MAX_CONNECTIONS", "a whole number of 2 or more")?;
        if max_connections.get() < 2 {
            return Err(vars.invalid("LOTTERY_MAX_CONNECTIONS", "a whole number of 2 or more"));
        }
        Ok(Self {
            ip: vars.host("SERVER_IP")?,
            port: vars.parse("SERVER_PORT", "a port number from 0 to 65535")?,
            listen_backlog: vars.parse("SERVER_LISTEN_BACKLOG", "a whole number")?,
            logging_level: vars.level("LOGGING_LEVEL")?,
            agencies,
            bets_file: vars.parse("BETS_FILE", "a path")?,
            batch_max_bets: vars.parse("LOTTERY_BATCH_MAX_BETS", "a whole number of 1 or more")?,
            fsync: vars.boolean("LOTTERY_FSYNC")?,
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
                let bytes: usize = vars.parse("LOTTERY_MAX_FRAME_BYTES", "a whole number")?;
                if !(MAX_BATCH_BYTES..=FRAME_LEN_CAP).contains(&bytes) {
                    return Err(vars.invalid(
                        "LOTTERY_MAX_FRAME_BYTES",
                        "a number of bytes from 8192 (a whole batch is one frame) to 65536",
                    ));
                }
                bytes
            },
            hello_timeout: vars.duration("LOTTERY_HELLO_TIMEOUT")?,
            read_timeout: vars.duration("LOTTERY_READ_TIMEOUT")?,
            write_timeout: vars.duration("LOTTERY_WRITE_TIMEOUT")?,
            agency_tokens: vars.tokens("LOTTERY_AGENCY_TOKENS_FILE", agencies.get())?,
            http_addr: http_addr(&vars)?,
            deprecated: ["METRICS_ADDR"]
                .into_iter()
                .filter(|older| vars.set(older).is_some())
                .map(|older| (older, "HTTP_ADDR"))
                .collect(),
            metrics_agency_labels: {
                let expected = "a whole number of agencies from 0 (no agency label) to 100000";
                let most: u32 = vars.parse("METRICS_AGENCY_LABELS", expected)?;
                if most > MAX_AGENCIES {
                    return Err(vars.invalid("METRICS_AGENCY_LABELS", expected));
                }
                most
            },
            max_bets_per_agency: {
                let expected = "a whole number of bets of 1 or more";
                let limit: u64 = vars.parse("LOTTERY_MAX_BETS_PER_AGENCY", expected)?;
                if limit == 0 {
                    return Err(vars.invalid("LOTTERY_MAX_BETS_PER_AGENCY", expected));
                }
                limit
            },
            min_free_bytes: vars.parse(
                "LOTTERY_MIN_FREE_BYTES",
                "a whole number of bytes, such as 67108864 (64 MiB); 0 turns the check off",
            )?,
            journal_compact_bytes: {
                let expected = "a whole number of bytes of 1 or more, such as 67108864 (64 MiB)";
                let bytes: u64 = vars.parse("LOTTERY_JOURNAL_COMPACT_BYTES", expected)?;
                if bytes == 0 {
                    return Err(vars.invalid("LOTTERY_JOURNAL_COMPACT_BYTES", expected));
                }
                bytes
            },
            database_url: database_url(&vars)?,
        })
    }

    /// Whether `agency` is one of the `1..=agencies` this central expects.
    pub fn expects(&self, agency: u32) -> bool {
        (1..=self.agencies.get()).contains(&agency)
    }
}

impl<F: Fn(&str) -> Option<String>> Vars<'_, F> {
    /// The agency tokens file named by `var`, read and checked; `None` when unset.
    fn tokens(
        &self,
        var: &'static str,
        agencies: u32,
    ) -> Result<Option<AgencyTokens>, ConfigError> {
        let Some(path) = self.set(var) else { return Ok(None) };
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
}
