//! The table of every setting, the one home of each default. Settings come from, in precedence
//! order: a command-line flag, then the environment variable, then the configuration file (both
//! gathered in `sources.rs`), then the default in this table (read by `settings::Vars` when a
//! setting is unset, so it is written nowhere else).
//!
//! Every setting is one row of [`SERVER_OPTIONS`] or [`CLIENT_OPTIONS`]: its flag, its
//! environment variable (the name the original exercise uses), its key in the configuration file,
//! its default and its meaning. `--help` is made from the same rows, and docs/operations.md lists them (a test checks it).

/// One setting.
#[derive(Debug, Clone, Copy)]
pub struct ConfigOption {
    /// The long flag, without `--`.
    pub flag: &'static str,
    /// The environment variable; also the key everything else is resolved by.
    pub env: &'static str,
    /// The key in the configuration file (`config.ini`'s `[DEFAULT]` or `config.yaml`'s dotted
    /// path); `None` when the file cannot set it.
    pub file_key: Option<&'static str>,
    /// The default, as shown to people.
    pub default: &'static str,
    pub help: &'static str,
    /// What `--help` calls the value (`PORT`, `DURATION`, `PATH`).
    pub value: &'static str,
    /// The `--help` heading the setting is listed under.
    pub heading: &'static str,
    /// Whether `default` is the value itself, read as if it were set (the one place it is
    /// written), rather than a description of what happens when the setting is unset.
    pub literal: bool,
}

/// A setting whose default is a value (`"12345"`, `"30s"`): the parsers read it from here.
const fn option(
    flag: &'static str,
    env: &'static str,
    file_key: Option<&'static str>,
    default: &'static str,
    help: &'static str,
) -> ConfigOption {
    ConfigOption { flag, env, file_key, default, help, value: "", heading: "", literal: true }
}

/// A setting whose default is described (`"none"`, `"required"`) and worked out in code.
const fn described(option: ConfigOption) -> ConfigOption {
    ConfigOption { literal: false, ..option }
}

impl ConfigOption {
    /// The same setting, listed by `--help` under `heading` with its value called `value`.
    const fn shown(self, heading: &'static str, value: &'static str) -> Self {
        ConfigOption { heading, value, ..self }
    }
}

/// The `--help` headings, in the order they are listed (a binary lists those its settings use).
pub(super) const HEADINGS: &[&str] = &[
    AGENCY, CENTRAL, BATCHES, LISTENING, LOTTERY, STORAGE, LIMITS, TIMEOUTS, LOGGING, FILE, OTHER,
];
const LISTENING: &str = "Listening";
const LOTTERY: &str = "Lottery";
const STORAGE: &str = "Storage";
const LIMITS: &str = "Limits";
const TIMEOUTS: &str = "Timeouts";
const LOGGING: &str = "Logging and metrics";
const FILE: &str = "Configuration file";
const AGENCY: &str = "Agency";
const CENTRAL: &str = "Central";
const BATCHES: &str = "Batches";
/// `--help`, `--version` (and the client's `--check`).
pub(super) const OTHER: &str = "Other";

/// The default value of `var`, when it has one (see [`ConfigOption::literal`]).
pub(super) fn literal_default(var: &str) -> Option<&'static str> {
    SERVER_OPTIONS
        .iter()
        .chain(CLIENT_OPTIONS)
        .find(|option| option.env == var && option.literal)
        .map(|option| option.default)
}

/// `lottery-server`'s settings. The `config.ini` key is the variable's own name.
pub const SERVER_OPTIONS: &[ConfigOption] = &[
    option("port", "SERVER_PORT", Some("SERVER_PORT"), "12345", "TCP port; 0 picks a free one")
        .shown(LISTENING, "PORT"),
    option("ip", "SERVER_IP", Some("SERVER_IP"), "0.0.0.0", "address to listen on")
        .shown(LISTENING, "HOST"),
    option(
        "listen-backlog",
        "SERVER_LISTEN_BACKLOG",
        Some("SERVER_LISTEN_BACKLOG"),
        "128",
        "connections the kernel queues before accept",
    )
    .shown(LISTENING, "N"),
    option(
        "logging-level",
        "LOGGING_LEVEL",
        Some("LOGGING_LEVEL"),
        "INFO",
        "ERROR, WARN, INFO, DEBUG or TRACE",
    )
    .shown(LOGGING, "LEVEL"),
    option(
        "agencies",
        "LOTTERY_AGENCIES",
        Some("LOTTERY_AGENCIES"),
        "5",
        "agencies (1..=N) that must be ready before the draw",
    )
    .shown(LOTTERY, "N"),
    option(
        "bets-file",
        "BETS_FILE",
        Some("BETS_FILE"),
        "./bets.csv",
        "the bets file (its journal is <file>.journal)",
    )
    .shown(STORAGE, "PATH"),
    option(
        "batch-max-bets",
        "LOTTERY_BATCH_MAX_BETS",
        Some("LOTTERY_BATCH_MAX_BETS"),
        "500",
        "most bets accepted in one batch",
    )
    .shown(LIMITS, "N"),
    option(
        "fsync",
        "LOTTERY_FSYNC",
        Some("LOTTERY_FSYNC"),
        "true",
        "fdatasync before acknowledging (false only to measure its cost)",
    )
    .shown(STORAGE, "BOOL"),
    option(
        "max-connections",
        "LOTTERY_MAX_CONNECTIONS",
        Some("LOTTERY_MAX_CONNECTIONS"),
        "1024",
        "connections served at once; more get Busy",
    )
    .shown(LIMITS, "N"),
    described(option(
        "max-pending-hellos",
        "LOTTERY_MAX_PENDING_HELLOS",
        Some("LOTTERY_MAX_PENDING_HELLOS"),
        "64",
        "connections without Hello yet; a newer one closes the oldest",
    ))
    .shown(LIMITS, "N"),
    option(
        "max-frame-bytes",
        "LOTTERY_MAX_FRAME_BYTES",
        Some("LOTTERY_MAX_FRAME_BYTES"),
        "8192",
        "largest frame accepted (8192..=65536)",
    )
    .shown(LIMITS, "BYTES"),
    option(
        "hello-timeout",
        "LOTTERY_HELLO_TIMEOUT",
        Some("LOTTERY_HELLO_TIMEOUT"),
        "5s",
        "time from connecting to Hello",
    )
    .shown(TIMEOUTS, "DURATION"),
    option(
        "read-timeout",
        "LOTTERY_READ_TIMEOUT",
        Some("LOTTERY_READ_TIMEOUT"),
        "30s",
        "time for each whole message once awaited",
    )
    .shown(TIMEOUTS, "DURATION"),
    option(
        "write-timeout",
        "LOTTERY_WRITE_TIMEOUT",
        Some("LOTTERY_WRITE_TIMEOUT"),
        "10s",
        "time to write a reply",
    )
    .shown(TIMEOUTS, "DURATION"),
    described(option(
        "agency-tokens-file",
        "LOTTERY_AGENCY_TOKENS_FILE",
        Some("LOTTERY_AGENCY_TOKENS_FILE"),
        "none",
        "agency:token lines; when set, Hello needs the agency's token",
    ))
    .shown(LOTTERY, "PATH"),
    described(option(
        "http-addr",
        "HTTP_ADDR",
        Some("HTTP_ADDR"),
        "off",
        "serve the status page, /status.json, /healthz, /readyz and /metrics at http://ADDR/ \
         (port 0: a free one)",
    ))
    .shown(LOGGING, "IP:PORT"),
    described(option(
        "metrics-addr",
        "METRICS_ADDR",
        Some("METRICS_ADDR"),
        "off",
        "the older name of --http-addr (deprecated: logs a warning)",
    ))
    .shown(LOGGING, "IP:PORT"),
    option(
        "metrics-agency-labels",
        "METRICS_AGENCY_LABELS",
        Some("METRICS_AGENCY_LABELS"),
        "1000",
        "label metrics per agency only while LOTTERY_AGENCIES <= N, else sum them",
    )
    .shown(LOGGING, "N"),
    option(
        "max-bets-per-agency",
        "LOTTERY_MAX_BETS_PER_AGENCY",
        Some("LOTTERY_MAX_BETS_PER_AGENCY"),
        "10000000",
        "most bets stored for one agency; batches past it are refused",
    )
    .shown(LIMITS, "N"),
    option(
        "min-free-bytes",
        "LOTTERY_MIN_FREE_BYTES",
        Some("LOTTERY_MIN_FREE_BYTES"),
        "67108864",
        "free bytes the bets file's filesystem keeps; below, batches are refused (0: off)",
    )
    .shown(LIMITS, "BYTES"),
    option(
        "journal-compact-bytes",
        "LOTTERY_JOURNAL_COMPACT_BYTES",
        Some("LOTTERY_JOURNAL_COMPACT_BYTES"),
        "67108864",
        "journal size past which the bets file is synced and the journal rewritten without rows",
    )
    .shown(STORAGE, "BYTES"),
    described(option(
        "database-url",
        "LOTTERY_DATABASE_URL",
        Some("LOTTERY_DATABASE_URL"),
        "none: the bets file",
        "PostgreSQL connection string; several centrals may share the database",
    ))
    .shown(STORAGE, "URL"),
    described(option(
        "database-url-file",
        "LOTTERY_DATABASE_URL_FILE",
        Some("LOTTERY_DATABASE_URL_FILE"),
        "none",
        "a file holding LOTTERY_DATABASE_URL (a secret), instead of it",
    ))
    .shown(STORAGE, "PATH"),
    described(option(
        "config",
        "LOTTERY_CONFIG_FILE",
        None,
        "./config.ini if present",
        "the configuration file ([DEFAULT] section, keys as the variables)",
    ))
    .shown(FILE, "PATH"),
];

/// `lottery-client`'s settings; `config.yaml` keys follow the original exercise's layout.
pub const CLIENT_OPTIONS: &[ConfigOption] = &[
    described(option("id", "CLI_ID", Some("id"), "required", "this agency's number"))
        .shown(AGENCY, "N"),
    option(
        "server-address",
        "CLI_SERVER_ADDRESS",
        Some("server.address"),
        "server:12345",
        "the central, host:port; or several, comma-separated, in failover order",
    )
    .shown(CENTRAL, "HOST:PORT,..."),
    option(
        "batch-max-amount",
        "CLI_BATCH_MAXAMOUNT",
        Some("batch.maxAmount"),
        "150",
        "most bets per batch (batches also stay within 8 kB)",
    )
    .shown(BATCHES, "N"),
    option(
        "batch-window",
        "CLI_BATCH_WINDOW",
        Some("batch.window"),
        "8",
        "batches sent ahead of their acknowledgements",
    )
    .shown(BATCHES, "N"),
    option(
        "log-level",
        "CLI_LOG_LEVEL",
        Some("log.level"),
        "INFO",
        "ERROR, WARN, INFO, DEBUG or TRACE",
    )
    .shown(AGENCY, "LEVEL"),
    described(option(
        "data-file",
        "CLI_DATA_FILE",
        Some("data.file"),
        "/data/agency-{id}.csv",
        "the agency file",
    ))
    .shown(AGENCY, "PATH"),
    option(
        "connect-timeout",
        "CLI_CONNECT_TIMEOUT",
        Some("connect.timeout"),
        "30s",
        "how long to keep trying without progress",
    )
    .shown(CENTRAL, "DURATION"),
    option(
        "read-timeout",
        "CLI_READ_TIMEOUT",
        Some("read.timeout"),
        "10s",
        "longest wait on the central for a connection, Welcome, acknowledgement, Pong or send",
    )
    .shown(CENTRAL, "DURATION"),
    option(
        "loop-period",
        "CLI_LOOP_PERIOD",
        Some("loop.period"),
        "0",
        "pause between consecutive messages and before exiting (0: none)",
    )
    .shown(BATCHES, "DURATION"),
    option(
        "loop-amount",
        "CLI_LOOP_AMOUNT",
        Some("loop.amount"),
        "0",
        "accepted and logged; the whole agency file is sent",
    )
    .shown(BATCHES, "N"),
    described(option(
        "token",
        "CLI_TOKEN",
        Some("token"),
        "none",
        "this agency's secret, when the central requires tokens",
    ))
    .shown(AGENCY, "TOKEN"),
    described(option(
        "config",
        "CLI_CONFIG_FILE",
        None,
        "./config.yaml if present",
        "the configuration file",
    ))
    .shown(FILE, "PATH"),
];
