//! Where a binary's settings come from besides the environment: its command line (the flags
//! made from the table in `options.rs`) and its configuration file (read in `files.rs`).

use std::collections::HashMap;
use std::ffi::OsString;

use clap::{Arg, ArgAction, Command};

use super::ConfigError;
use super::files::read_config_file;
use super::options::{CLIENT_OPTIONS, ConfigOption, SERVER_OPTIONS};

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
