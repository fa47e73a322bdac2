//! Where settings come from, in precedence order: a command-line flag, then the environment
//! variable, then the configuration file, then the built-in default (applied by
//! `ServerConfig::from_lookup` / `ClientConfig::from_lookup`).
//!
//! Every setting is one row of [`SERVER_OPTIONS`] or [`CLIENT_OPTIONS`]: its flag, its
//! environment variable (the name the original exercise uses), its key in the configuration file,
//! its default and its meaning. `--help` and the README's reference are made from the same rows.

use std::collections::HashMap;
use std::ffi::OsString;
use std::path::{Path, PathBuf};

use clap::{Arg, ArgAction, Command};
use yaml_rust2::{Yaml, YamlLoader};

use super::ConfigError;

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
    ConfigOption { flag, env, file_key, default, help, literal: true }
}

/// A setting whose default is described (`"none"`, `"required"`) and worked out in code.
const fn described(option: ConfigOption) -> ConfigOption {
    ConfigOption { literal: false, ..option }
}

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
    option("port", "SERVER_PORT", Some("SERVER_PORT"), "12345", "TCP port; 0 picks a free one"),
    option("ip", "SERVER_IP", Some("SERVER_IP"), "0.0.0.0", "address to listen on"),
    option(
        "listen-backlog",
        "SERVER_LISTEN_BACKLOG",
        Some("SERVER_LISTEN_BACKLOG"),
        "128",
        "connections the kernel queues before accept",
    ),
    option(
        "logging-level",
        "LOGGING_LEVEL",
        Some("LOGGING_LEVEL"),
        "INFO",
        "ERROR, WARN, INFO, DEBUG or TRACE",
    ),
    option(
        "agencies",
        "LOTTERY_AGENCIES",
        Some("LOTTERY_AGENCIES"),
        "5",
        "agencies (1..=N) that must be ready before the draw",
    ),
    option(
        "bets-file",
        "BETS_FILE",
        Some("BETS_FILE"),
        "./bets.csv",
        "the bets file (its journal is <file>.journal)",
    ),
    option(
        "batch-max-bets",
        "LOTTERY_BATCH_MAX_BETS",
        Some("LOTTERY_BATCH_MAX_BETS"),
        "500",
        "most bets accepted in one batch",
    ),
    option(
        "fsync",
        "LOTTERY_FSYNC",
        Some("LOTTERY_FSYNC"),
        "true",
        "fdatasync before acknowledging (false only to measure its cost)",
    ),
    option(
        "max-connections",
        "LOTTERY_MAX_CONNECTIONS",
        Some("LOTTERY_MAX_CONNECTIONS"),
        "1024",
        "connections served at once; more get Busy",
    ),
    described(option(
        "max-pending-hellos",
        "LOTTERY_MAX_PENDING_HELLOS",
        Some("LOTTERY_MAX_PENDING_HELLOS"),
        "64",
        "connections without Hello yet; a newer one closes the oldest",
    )),
    option(
        "max-frame-bytes",
        "LOTTERY_MAX_FRAME_BYTES",
        Some("LOTTERY_MAX_FRAME_BYTES"),
        "8192",
        "largest frame accepted (8192..=65536)",
    ),
    option(
        "hello-timeout",
        "LOTTERY_HELLO_TIMEOUT",
        Some("LOTTERY_HELLO_TIMEOUT"),
        "5s",
        "time from connecting to Hello",
    ),
    option(
        "read-timeout",
        "LOTTERY_READ_TIMEOUT",
        Some("LOTTERY_READ_TIMEOUT"),
        "30s",
        "time for each whole message once awaited",
    ),
    option(
        "write-timeout",
        "LOTTERY_WRITE_TIMEOUT",
        Some("LOTTERY_WRITE_TIMEOUT"),
        "10s",
        "time to write a reply",
    ),
    described(option(
        "agency-tokens-file",
        "LOTTERY_AGENCY_TOKENS_FILE",
        Some("LOTTERY_AGENCY_TOKENS_FILE"),
        "none",
        "agency:token lines; when set, Hello needs the agency's token",
    )),
    described(option(
        "metrics-addr",
        "METRICS_ADDR",
        Some("METRICS_ADDR"),
        "off",
        "serve Prometheus metrics at http://ADDR/metrics (port 0: a free one)",
    )),
    option(
        "max-bets-per-agency",
        "LOTTERY_MAX_BETS_PER_AGENCY",
        Some("LOTTERY_MAX_BETS_PER_AGENCY"),
        "10000000",
        "most bets stored for one agency; batches past it are refused",
    ),
    option(
        "min-free-bytes",
        "LOTTERY_MIN_FREE_BYTES",
        Some("LOTTERY_MIN_FREE_BYTES"),
        "67108864",
        "free bytes the bets file's filesystem keeps; below, batches are refused (0: off)",
    ),
    described(option(
        "config",
        "LOTTERY_CONFIG_FILE",
        None,
        "./config.ini if present",
        "the configuration file ([DEFAULT] section, keys as the variables)",
    )),
];

/// `lottery-client`'s settings; `config.yaml` keys follow the original exercise's layout.
pub const CLIENT_OPTIONS: &[ConfigOption] = &[
    described(option("id", "CLI_ID", Some("id"), "required", "this agency's number")),
    option(
        "server-address",
        "CLI_SERVER_ADDRESS",
        Some("server.address"),
        "server:12345",
        "the central, host:port",
    ),
    option(
        "batch-max-amount",
        "CLI_BATCH_MAXAMOUNT",
        Some("batch.maxAmount"),
        "150",
        "most bets per batch (batches also stay within 8 kB)",
    ),
    option(
        "batch-window",
        "CLI_BATCH_WINDOW",
        Some("batch.window"),
        "8",
        "batches sent ahead of their acknowledgements",
    ),
    option(
        "log-level",
        "CLI_LOG_LEVEL",
        Some("log.level"),
        "INFO",
        "ERROR, WARN, INFO, DEBUG or TRACE",
    ),
    described(option(
        "data-file",
        "CLI_DATA_FILE",
        Some("data.file"),
        "/data/agency-{id}.csv",
        "the agency file",
    )),
    option(
        "connect-timeout",
        "CLI_CONNECT_TIMEOUT",
        Some("connect.timeout"),
        "30s",
        "how long to keep trying without progress",
    ),
    option(
        "read-timeout",
        "CLI_READ_TIMEOUT",
        Some("read.timeout"),
        "10s",
        "longest wait on the central for a connection, Welcome, acknowledgement, Pong or send",
    ),
    option(
        "loop-period",
        "CLI_LOOP_PERIOD",
        Some("loop.period"),
        "0",
        "pause between consecutive messages and before exiting (0: none)",
    ),
    option(
        "loop-amount",
        "CLI_LOOP_AMOUNT",
        Some("loop.amount"),
        "0",
        "accepted and logged; the whole agency file is sent",
    ),
    described(option(
        "token",
        "CLI_TOKEN",
        Some("token"),
        "none",
        "this agency's secret, when the central requires tokens",
    )),
    described(option(
        "config",
        "CLI_CONFIG_FILE",
        None,
        "./config.yaml if present",
        "the configuration file",
    )),
];

/// A binary's command line and configuration file.
pub(super) struct Program {
    name: &'static str,
    about: &'static str,
    options: &'static [ConfigOption],
    /// Whether it has `--check`.
    check: bool,
    /// The variable (and flag) naming the configuration file, and the file read if present.
    config_var: &'static str,
    default_file: &'static str,
}

pub(super) const SERVER: Program = Program {
    name: "lottery-server",
    about: "The Lotería Nacional central: collects agencies' bets and runs the draw.",
    options: SERVER_OPTIONS,
    check: false,
    config_var: "LOTTERY_CONFIG_FILE",
    default_file: "config.ini",
};

pub(super) const CLIENT: Program = Program {
    name: "lottery-client",
    about: "A Lotería Nacional agency: uploads its bets and receives its winners.",
    options: CLIENT_OPTIONS,
    check: true,
    config_var: "CLI_CONFIG_FILE",
    default_file: "config.yaml",
};

/// The command line's flags and the configuration file's settings of `program`.
///
/// # Errors
/// `Usage` for `--help`, `--version` and bad command lines; `Unreadable` or `File` for the file.
pub(super) fn gather<T: Into<OsString> + Clone>(
    program: &Program,
    args: impl IntoIterator<Item = T>,
    env: &impl Fn(&str) -> Option<String>,
) -> Result<(Flags, HashMap<&'static str, String>), ConfigError> {
    let flags = parse_flags(program.name, program.about, program.options, program.check, args)?;
    let named = flags.values.get(program.config_var).cloned().or_else(|| env(program.config_var));
    let named = named.filter(|v| !v.is_empty());
    let file = read_config_file(program.config_var, named, program.default_file, program.options)?;
    Ok((flags, file))
}

/// The flags given on a command line, by variable name, and the switches that were set.
#[derive(Debug, Default)]
pub(super) struct Flags {
    pub(super) values: HashMap<&'static str, String>,
    pub(super) check: bool,
}

/// Parses `args` (program name first) against `options`.
///
/// # Errors
/// `ConfigError::Usage` for `--help`, `--version` (with exit code 0) and bad command lines.
fn parse_flags(
    name: &'static str,
    about: &'static str,
    options: &'static [ConfigOption],
    with_check: bool,
    args: impl IntoIterator<Item = impl Into<OsString> + Clone>,
) -> Result<Flags, ConfigError> {
    let mut command = Command::new(name)
        .version(env!("CARGO_PKG_VERSION"))
        .about(about)
        .after_help("Precedence: flag > environment variable > configuration file > default.");
    for option in options {
        let help = format!("{} [env: {}] [default: {}]", option.help, option.env, option.default);
        command =
            command.arg(Arg::new(option.env).long(option.flag).value_name("VALUE").help(help));
    }
    if with_check {
        command = command.arg(Arg::new("check").long("check").action(ArgAction::SetTrue).help(
            "Validate the agency file offline, report its bad rows with their lines, and exit",
        ));
    }
    let matches = command.try_get_matches_from(args).map_err(|e| ConfigError::Usage {
        message: e.render().to_string(),
        exit_code: e.exit_code(),
    })?;
    let values = options
        .iter()
        .filter_map(|o| Some((o.env, matches.get_one::<String>(o.env)?.clone())))
        .collect();
    let check = with_check && matches.get_flag("check");
    Ok(Flags { values, check })
}

/// The configuration file's settings, by variable name: the file named by the flag or variable
/// `var` (which must exist), else `default_path` if it exists, else none.
///
/// # Errors
/// `Unreadable` or `File` (with the line) when the file cannot be read or parsed.
fn read_config_file(
    var: &'static str,
    named: Option<String>,
    default_path: &str,
    options: &'static [ConfigOption],
) -> Result<HashMap<&'static str, String>, ConfigError> {
    let path = match named {
        Some(path) => PathBuf::from(path),
        None if Path::new(default_path).exists() => PathBuf::from(default_path),
        None => return Ok(HashMap::new()),
    };
    let text = std::fs::read_to_string(&path).map_err(|e| ConfigError::Unreadable {
        var,
        path: path.clone(),
        reason: e.to_string(),
    })?;
    let fail =
        |line: usize, reason: String| ConfigError::File { var, path: path.clone(), line, reason };
    let pairs = if path.extension().is_some_and(|e| e == "yaml" || e == "yml") {
        yaml_pairs(&text).map_err(|(line, reason)| fail(line, reason))?
    } else {
        ini_pairs(&text).map_err(|(line, reason)| fail(line, reason))?
    };
    let mut settings = HashMap::new();
    for (line, key, value) in pairs {
        let known = options.iter().find(|o| {
            o.file_key
                .is_some_and(|k| k == key || (!k.contains('.') && k.eq_ignore_ascii_case(&key)))
        });
        let Some(option) = known else {
            let keys: Vec<&str> = options.iter().filter_map(|o| o.file_key).collect();
            return Err(fail(
                line,
                format!("unknown key {key:?}; known keys: {}", keys.join(", ")),
            ));
        };
        settings.insert(option.env, value);
    }
    Ok(settings)
}

/// A file setting: its line, key and value.
type Setting = (usize, String, String);
/// What is wrong, and on which line.
type LineError = (usize, String);

/// `key = value` (or `key: value`) lines of an INI file's `[DEFAULT]` section, as Python's
/// `configparser` reads the original `config.ini`; `#` and `;` start comments.
fn ini_pairs(text: &str) -> Result<Vec<Setting>, LineError> {
    let mut pairs = Vec::new();
    let mut in_default = false;
    for (i, raw) in text.lines().enumerate() {
        let line = raw.trim();
        if line.is_empty() || line.starts_with('#') || line.starts_with(';') {
            continue;
        }
        if let Some(section) = line.strip_prefix('[') {
            let name = section
                .strip_suffix(']')
                .ok_or_else(|| (i + 1, format!("a section header needs a closing ]: {line:?}")))?;
            in_default = name.trim() == "DEFAULT";
            continue;
        }
        let (key, value) = line
            .split_once(['=', ':'])
            .ok_or_else(|| (i + 1, format!("expected key = value, found {line:?}")))?;
        if !in_default {
            return Err((i + 1, "settings go in the [DEFAULT] section".into()));
        }
        pairs.push((i + 1, key.trim().to_owned(), value.trim().to_owned()));
    }
    Ok(pairs)
}

/// The scalars of a YAML mapping, by dotted path (`server.address`).
fn yaml_pairs(text: &str) -> Result<Vec<Setting>, LineError> {
    let documents = YamlLoader::load_from_str(text)
        .map_err(|e| (e.marker().line(), format!("not valid YAML: {}", e.info())))?;
    let mut pairs = Vec::new();
    if let Some(root) = documents.first() {
        flatten(root, String::new(), text, &mut pairs)?;
    }
    Ok(pairs)
}

fn flatten(node: &Yaml, path: String, text: &str, out: &mut Vec<Setting>) -> Result<(), LineError> {
    // The loader keeps no positions; a key's line is where its name first appears.
    let line_of = |key: &str| {
        let leaf = key.rsplit('.').next().unwrap_or(key);
        text.lines()
            .position(|l| l.trim_start().starts_with(&format!("{leaf}:")))
            .map_or(0, |i| i + 1)
    };
    let scalar = match node {
        Yaml::Hash(map) => {
            for (key, value) in map {
                let key = match key {
                    Yaml::String(k) => k.clone(),
                    other => return Err((0, format!("keys must be names, found {other:?}"))),
                };
                let path = if path.is_empty() { key } else { format!("{path}.{key}") };
                flatten(value, path, text, out)?;
            }
            return Ok(());
        }
        Yaml::Null if path.is_empty() => return Ok(()),
        Yaml::String(s) | Yaml::Real(s) => s.clone(),
        Yaml::Integer(n) => n.to_string(),
        Yaml::Boolean(b) => b.to_string(),
        _ => return Err((line_of(&path), format!("{path} must be a single value"))),
    };
    out.push((line_of(&path), path, scalar));
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ini_reads_the_default_section() {
        let text = "; the original\n[DEFAULT]\nSERVER_PORT = 12345\nlogging_level: DEBUG\n# done\n";
        let pairs = ini_pairs(text).unwrap();
        assert_eq!(
            pairs,
            [
                (3, "SERVER_PORT".into(), "12345".into()),
                (4, "logging_level".into(), "DEBUG".into())
            ]
        );
        assert_eq!(ini_pairs("[DEFAULT]\nnonsense\n").unwrap_err().0, 2);
        assert_eq!(ini_pairs("[DEFAULT\n").unwrap_err().0, 1);
        assert_eq!(ini_pairs("[other]\nA = 1\n").unwrap_err().0, 2);
    }

    #[test]
    fn yaml_flattens_to_dotted_keys() {
        let text = "server:\n  address: \"server:12345\"\nloop:\n  amount: 5\nbatch:\n  maxAmount: 106\nlog:\n  level: info\n";
        let pairs = yaml_pairs(text).unwrap();
        let keys: Vec<(usize, &str, &str)> =
            pairs.iter().map(|(l, k, v)| (*l, k.as_str(), v.as_str())).collect();
        assert_eq!(
            keys,
            [
                (2, "server.address", "server:12345"),
                (4, "loop.amount", "5"),
                (6, "batch.maxAmount", "106"),
                (8, "log.level", "info")
            ]
        );
        let (line, reason) = yaml_pairs("server:\n  address: [a\n").unwrap_err();
        assert!(line >= 2 && reason.starts_with("not valid YAML"), "{line} {reason}");
    }
}
