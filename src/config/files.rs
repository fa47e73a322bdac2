//! The configuration files, in the original exercise's layouts: the central's INI file
//! (`config.ini`, its `[DEFAULT]` section) and the agency's YAML file (`config.yaml`, keys by
//! dotted path).

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use yaml_rust2::parser::{Event, MarkedEventReceiver, Parser};
use yaml_rust2::scanner::Marker;
use yaml_rust2::{Yaml, YamlLoader};

use super::ConfigError;
use super::error::echo;
use super::options::ConfigOption;

/// The configuration file's settings, by variable name: the file named by the flag or variable
/// `var` (which must exist), else `default_path` if it exists, else none.
///
/// # Errors
/// `Unreadable` or `File` (with the line) when the file cannot be read or parsed.
pub(super) fn read_config_file(
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
                format!("unknown key {}; known keys: {}", echo(&key), keys.join(", ")),
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
/// `configparser` reads the original `config.ini`; `#` and `;` start comments. A key set twice
/// (in any case, as `configparser` folds it) is refused, as `configparser` refuses it.
fn ini_pairs(text: &str) -> Result<Vec<Setting>, LineError> {
    let mut pairs = Vec::new();
    let mut first_lines: HashMap<String, usize> = HashMap::new();
    let mut in_default = false;
    for (i, raw) in text.lines().enumerate() {
        let line = raw.trim();
        if line.is_empty() || line.starts_with('#') || line.starts_with(';') {
            continue;
        }
        if let Some(section) = line.strip_prefix('[') {
            let name = section.strip_suffix(']').ok_or_else(|| {
                (i + 1, format!("a section header needs a closing ]: {}", echo(line)))
            })?;
            in_default = name.trim() == "DEFAULT";
            continue;
        }
        let (key, value) = line
            .split_once(['=', ':'])
            .ok_or_else(|| (i + 1, format!("expected key = value, found {}", echo(line))))?;
        if !in_default {
            return Err((i + 1, "settings go in the [DEFAULT] section".into()));
        }
        let key = key.trim();
        if let Some(first) = first_lines.insert(key.to_ascii_lowercase(), i + 1) {
            return Err((
                i + 1,
                format!("duplicate key {}: already set on line {first}; set it once", echo(key)),
            ));
        }
        pairs.push((i + 1, key.to_owned(), value.trim().to_owned()));
    }
    Ok(pairs)
}

/// The scalars of a YAML mapping, by dotted path (`server.address`), each with its key's line.
fn yaml_pairs(text: &str) -> Result<Vec<Setting>, LineError> {
    let documents = YamlLoader::load_from_str(text)
        .map_err(|e| (e.marker().line(), format!("not valid YAML: {}", e.info())))?;
    let mut pairs = Vec::new();
    if let Some(root) = documents.first() {
        let mut lines = KeyLines::default();
        Parser::new_from_str(text)
            .load(&mut lines, false)
            .map_err(|e| (e.marker().line(), format!("not valid YAML: {}", e.info())))?;
        flatten(root, String::new(), &lines.lines, &mut pairs)?;
    }
    Ok(pairs)
}

fn flatten(
    node: &Yaml,
    path: String,
    lines: &HashMap<String, usize>,
    out: &mut Vec<Setting>,
) -> Result<(), LineError> {
    let line_of = |path: &str| lines.get(path).copied().unwrap_or(0);
    let scalar = match node {
        Yaml::Hash(map) => {
            for (key, value) in map {
                let key = match key {
                    Yaml::String(k) => k.clone(),
                    other => {
                        return Err((
                            line_of(&path),
                            format!("keys must be names, found {other:?}"),
                        ));
                    }
                };
                let path = if path.is_empty() { key } else { format!("{path}.{key}") };
                flatten(value, path, lines, out)?;
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

/// The line of each key of the first document's mappings, by dotted path: the loader keeps no
/// positions, so the parser's events are read once more for them. A key given twice has the
/// line of its last occurrence, whose value the loader keeps.
#[derive(Default)]
struct KeyLines {
    lines: HashMap<String, usize>,
    /// The open collections: a mapping's path and the key awaiting its value, or a sequence.
    open: Vec<Open>,
    /// Whether the first document has ended.
    done: bool,
}

enum Open {
    Mapping { path: String, key: Option<String> },
    Sequence,
}

impl KeyLines {
    /// A value (scalar, collection or alias) has been read: the key it answered is settled.
    /// Returns the path of a collection opened as that value.
    fn value_read(&mut self) -> String {
        match self.open.last_mut() {
            Some(Open::Mapping { path, key }) => match key.take() {
                Some(key) if path.is_empty() => key,
                Some(key) => format!("{path}.{key}"),
                None => path.clone(),
            },
            Some(Open::Sequence) | None => String::new(),
        }
    }
}

impl MarkedEventReceiver for KeyLines {
    fn on_event(&mut self, event: Event, mark: Marker) {
        if self.done {
            return;
        }
        let awaiting_key = matches!(self.open.last(), Some(Open::Mapping { key: None, .. }));
        match event {
            Event::Scalar(name, ..) if awaiting_key => {
                if let Some(Open::Mapping { path, key }) = self.open.last_mut() {
                    let full =
                        if path.is_empty() { name.clone() } else { format!("{path}.{name}") };
                    self.lines.insert(full, mark.line());
                    *key = Some(name);
                }
            }
            Event::Scalar(..) | Event::Alias(_) => {
                self.value_read();
            }
            Event::MappingStart(..) => {
                let path = self.value_read();
                self.open.push(Open::Mapping { path, key: None });
            }
            Event::SequenceStart(..) => {
                self.value_read();
                self.open.push(Open::Sequence);
            }
            Event::MappingEnd | Event::SequenceEnd => {
                self.open.pop();
            }
            Event::DocumentEnd => self.done = true,
            _ => {}
        }
    }
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

    #[test]
    fn ini_refuses_a_key_set_twice_naming_both_lines() {
        let text = "[DEFAULT]\nSERVER_PORT = 1\nLOGGING_LEVEL = INFO\nserver_port = 2\n";
        let (line, reason) = ini_pairs(text).unwrap_err();
        assert_eq!(line, 4);
        assert!(reason.contains("\"server_port\"") && reason.contains("line 2"), "{reason}");
    }

    #[test]
    fn yaml_keys_are_on_their_own_lines() {
        // `level` appears first under `log`; `batch.level` is on line 5, not line 2.
        let text = "log:\n  level: INFO\nbatch:\n  maxAmount: 5\n  level: [1, 2]\n";
        assert_eq!(yaml_pairs(text).unwrap_err().0, 5);
        let text = "loop:\n  period: 1s\nserver:\n  period: 5\n  address: \"a:1\"\n";
        let pairs = yaml_pairs(text).unwrap();
        let lines: Vec<(usize, &str)> = pairs.iter().map(|(l, k, _)| (*l, k.as_str())).collect();
        assert_eq!(lines, [(2, "loop.period"), (4, "server.period"), (5, "server.address")]);
    }
}
