//! Where a binary's settings come from besides the environment: its command line (the flags
//! made from the table in `options.rs`) and its configuration file (read in `files.rs`).

use std::collections::HashMap;
use std::ffi::OsString;

use clap::{Arg, ArgAction, Command};

use super::ConfigError;
use super::files::read_config_file;
use super::options::{CLIENT_OPTIONS, ConfigOption, HEADINGS, OTHER, SERVER_OPTIONS};

/// The width `--help` keeps to: clap's `wrap_help` (and its terminal-size dependency) is off, so
/// the help text is filled here.
pub(super) const HELP_WIDTH: usize = 80;

/// A binary's command line and configuration file.
pub(super) struct Program {
    name: &'static str,
    about: &'static str,
    options: &'static [ConfigOption],
    /// Whether it has `--check`.
    check: bool,
    /// What it runs instead of its main job, by its first argument (dispatched by the binary;
    /// listed here for `--help`).
    commands: &'static [Subcommand],
    /// The variable (and flag) naming the configuration file, and the file read if present.
    config_var: &'static str,
    default_file: &'static str,
}

pub(super) const SERVER: Program = Program {
    name: "lottery-server",
    about: "The Lotería Nacional central: collects agencies' bets and runs the draw.",
    options: SERVER_OPTIONS,
    check: false,
    commands: &[
        Subcommand {
            name: "export",
            usage: "export [--agency <K>] <OUTPUT> [OPTIONS]",
            about: "write the stored bets as the original bets file to OUTPUT (-: standard \
                    output); agency K's rows only, with --agency",
        },
        Subcommand {
            name: "verify",
            usage: "verify [BETS_FILE] [OPTIONS]",
            about: "check the bets file (BETS_FILE, else --bets-file) and its journal as a start \
                    would, changing nothing",
        },
        Subcommand {
            name: "healthcheck",
            usage: "healthcheck [OPTIONS]",
            about: "exit 0 if the central these settings describe is ready: /readyz at \
                    HTTP_ADDR when set, else a Ping at SERVER_IP:SERVER_PORT",
        },
    ],
    config_var: "LOTTERY_CONFIG_FILE",
    default_file: "config.ini",
};

pub(super) const CLIENT: Program = Program {
    name: "lottery-client",
    about: "A Lotería Nacional agency: uploads its bets and receives its winners.",
    options: CLIENT_OPTIONS,
    check: true,
    commands: &[],
    config_var: "CLI_CONFIG_FILE",
    default_file: "config.yaml",
};

/// A subcommand, as `--help` lists it.
pub(super) struct Subcommand {
    name: &'static str,
    /// Its usage line after the program's name.
    usage: &'static str,
    about: &'static str,
}

/// The command line's flags and the configuration file's settings of `program`.
///
/// # Errors
/// `Usage` for `--help`, `--version` and bad command lines; `Unreadable` or `File` for the file.
pub(super) fn gather<T: Into<OsString> + Clone>(
    program: &Program,
    args: impl IntoIterator<Item = T>,
    env: &impl Fn(&str) -> Option<String>,
) -> Result<(Flags, HashMap<&'static str, String>), ConfigError> {
    let flags = parse_flags(program, args)?;
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

/// Parses `args` (program name first) against `program`'s settings.
///
/// # Errors
/// `ConfigError::Usage` for `--help`, `--version` (with exit code 0) and bad command lines.
fn parse_flags(
    program: &Program,
    args: impl IntoIterator<Item = impl Into<OsString> + Clone>,
) -> Result<Flags, ConfigError> {
    let matches = command(program).try_get_matches_from(args).map_err(|e| ConfigError::Usage {
        message: e.render().to_string(),
        exit_code: e.exit_code(),
    })?;
    // The binary runs a subcommand only when it comes first; after a setting it would be
    // ignored and the central started instead.
    if let Some(name) = matches.subcommand_name() {
        let usage = program.commands.iter().find(|c| c.name == name).map_or(name, |c| c.usage);
        return Err(ConfigError::Usage {
            message: format!(
                "error: {name} must be the first argument: {} {usage}\n",
                program.name
            ),
            exit_code: 2,
        });
    }
    let values = program
        .options
        .iter()
        .filter_map(|o| Some((o.env, matches.get_one::<String>(o.env)?.clone())))
        .collect();
    let check = program.check && matches.get_flag("check");
    Ok(Flags { values, check })
}

/// `program`'s command line: a flag per setting, grouped under the table's headings, each help
/// filled to [`HELP_WIDTH`] columns with its variable and default.
fn command(program: &Program) -> Command {
    let mut command = Command::new(program.name)
        .version(env!("CARGO_PKG_VERSION"))
        .about(program.about)
        .after_help("Precedence: flag > environment variable > configuration file > default.")
        .disable_help_flag(true)
        .disable_version_flag(true)
        .disable_help_subcommand(true);
    if !program.commands.is_empty() {
        let usage = std::iter::once(format!("{} [OPTIONS]", program.name))
            .chain(program.commands.iter().map(|c| format!("       {} {}", program.name, c.usage)));
        command = command.override_usage(usage.collect::<Vec<_>>().join("\n"));
        let longest = program.commands.iter().map(|c| c.name.len()).max().unwrap_or(0);
        for sub in program.commands {
            let about = fill(sub.about.split_whitespace(), HELP_WIDTH.saturating_sub(longest + 8));
            command = command.subcommand(Command::new(sub.name).about(about));
        }
    }
    // (heading, flag, its width as `--flag <VALUE>`, the words of its help)
    let mut args: Vec<(&str, Arg, usize, Vec<String>)> = program
        .options
        .iter()
        .map(|option| {
            let arg = Arg::new(option.env).long(option.flag).value_name(option.value);
            let width = option.flag.len() + option.value.len() + 5;
            let mut words = words(option.help);
            words.push(format!("[env: {}]", option.env));
            words.push(format!("[default: {}]", option.default));
            (option.heading, arg, width, words)
        })
        .collect();
    let switch = |id: &'static str, short: Option<char>, action, help: &str| {
        let arg = Arg::new(id).long(id).short(short).action(action);
        (OTHER, arg, id.len() + 2, words(help))
    };
    if program.check {
        let help =
            "validate the agency file offline, report its bad rows with their lines, and exit";
        args.push(switch("check", None, ArgAction::SetTrue, help));
    }
    args.push(switch("help", Some('h'), ArgAction::Help, "print this help"));
    args.push(switch("version", Some('V'), ArgAction::Version, "print the version"));
    // In the order of HEADINGS (a heading missing there goes last rather than losing its flags).
    args.sort_by_key(|(heading, ..)| {
        HEADINGS.iter().position(|h| h == heading).unwrap_or(HEADINGS.len())
    });
    for (heading, arg, _, words) in &args {
        // Where clap starts the help: past the indent, a short flag's place (`-h, `), the
        // heading's widest flag and two spaces.
        let same = args.iter().filter(|(h, ..)| h == heading);
        let column = same.map(|(_, _, width, _)| width + 8).max().unwrap_or(0);
        let help = fill(words.iter().map(String::as_str), HELP_WIDTH.saturating_sub(column));
        command = command.arg(arg.clone().help(help).help_heading(*heading));
    }
    command
}

/// `text`'s words, to be filled by [`fill`].
fn words(text: &str) -> Vec<String> {
    text.split_whitespace().map(str::to_owned).collect()
}

/// `words` filled into lines of at most `width` columns, one space apart; a word wider than
/// `width` has a line of its own.
fn fill<'a>(words: impl IntoIterator<Item = &'a str>, width: usize) -> String {
    let mut text = String::new();
    let mut line = 0;
    for word in words {
        let len = word.chars().count();
        if line > 0 && line + 1 + len > width {
            text.push('\n');
            line = 0;
        } else if line > 0 {
            text.push(' ');
            line += 1;
        }
        text.push_str(word);
        line += len;
    }
    text
}
