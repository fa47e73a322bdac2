//! The database's connection string: [`DatabaseUrl`], read from `LOTTERY_DATABASE_URL` or the
//! file `LOTTERY_DATABASE_URL_FILE` names (a Compose or Kubernetes secret), its password hidden
//! whenever it is shown; and what the driver does not read itself, libpq's TLS parameters
//! (`sslmode` with `verify-ca` and `verify-full`, `sslrootcert`), taken out of the string before
//! the driver sees the rest.

use std::path::PathBuf;

use super::ConfigError;
use super::settings::Vars;

/// A PostgreSQL connection string, checked when read. Its `Debug` and `Display` hide the
/// password, so the configuration can be logged.
#[derive(Clone, PartialEq, Eq)]
pub struct DatabaseUrl(String);

impl DatabaseUrl {
    /// The connection string, password included: for connecting, never for logging.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// The connection string without its TLS parameters (for the driver), and the TLS settings
    /// they make (see [`split_tls`]).
    ///
    /// # Errors
    /// The TLS parameter that is wrong, and why (checked already when the string was read).
    pub fn split_tls(&self) -> Result<(String, DatabaseTls), String> {
        split_tls(&self.0)
    }
}

impl std::fmt::Display for DatabaseUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&redact_password(&self.0))
    }
}

impl std::fmt::Debug for DatabaseUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "DatabaseUrl({self})")
    }
}

/// `url` with its password replaced by `***`, read the way the driver (`tokio-postgres`) reads
/// it: in a URL, the `:password` before the first `@` and a `password` parameter of the query
/// (its name percent-decoded); in a `key=value` string, the `password` value whatever its form
/// (spaces around `=`, quoted with spaces, backslash escapes). A `key=value` string the driver
/// would refuse is shown only up to where it stops reading as one: from there on `***`, since
/// the rest may be a password with a space in it.
pub fn redact_password(url: &str) -> String {
    match ["postgresql://", "postgres://"].iter().find_map(|p| url.strip_prefix(p)) {
        Some(rest) => redact_url(url, rest),
        None => redact_key_values(url, false),
    }
}

/// `url` as a configuration error shows it: as [`redact_password`], and in a `key=value`
/// string, nothing after the password either. The driver refused the string, so what follows
/// the password may be more of it (`password=se cret=x`, a space left unquoted).
fn redact_refused(url: &str) -> String {
    match ["postgresql://", "postgres://"].iter().find_map(|p| url.strip_prefix(p)) {
        Some(rest) => redact_url(url, rest),
        None => redact_key_values(url, true),
    }
}

fn redact_url(url: &str, rest: &str) -> String {
    let prefix = &url[..url.len() - rest.len()];
    // The driver ends the credentials at the first `@`; a password with an unencoded `@` (which
    // it then cannot use) is hidden up to the last `@` before the query, so no part shows.
    let credentials_end = rest.find('@').map(|first| {
        let query = rest[first..].find('?').map_or(rest.len(), |q| first + q);
        rest[..query].rfind('@').unwrap_or(first)
    });
    let (credentials, rest) = match credentials_end {
        Some(at) => rest.split_at(at),
        None => ("", rest),
    };
    let mut redacted = prefix.to_owned();
    match credentials.split_once(':') {
        Some((user, _)) => redacted.push_str(&format!("{user}:***")),
        None => redacted.push_str(credentials),
    }
    let Some((before, query)) = rest.split_once('?') else {
        redacted.push_str(rest);
        return redacted;
    };
    redacted.push_str(before);
    redacted.push('?');
    let params: Vec<String> = query
        .split('&')
        .map(|param| match param.split_once('=') {
            Some((key, _)) if percent_decode(key) == "password" => format!("{key}=***"),
            _ => param.to_owned(),
        })
        .collect();
    redacted.push_str(&params.join("&"));
    redacted
}

/// A `key=value …` connection string, its `password` value (and everything from where it stops
/// parsing, or from the password on when `rest_too`) replaced; the rest, spacing included, as
/// given.
fn redact_key_values(text: &str, rest_too: bool) -> String {
    let mut redacted = String::with_capacity(text.len());
    let mut chars = text.char_indices().peekable();
    let skip_ws = |chars: &mut std::iter::Peekable<std::str::CharIndices<'_>>| {
        while chars.next_if(|(_, c)| c.is_whitespace()).is_some() {}
    };
    let at = |chars: &mut std::iter::Peekable<std::str::CharIndices<'_>>| {
        chars.peek().map_or(text.len(), |&(i, _)| i)
    };
    let mut copied = 0;
    loop {
        skip_ws(&mut chars);
        let key_start = at(&mut chars);
        while chars.next_if(|&(_, c)| !c.is_whitespace() && c != '=').is_some() {}
        let key = &text[key_start..at(&mut chars)];
        if key.is_empty() {
            redacted.push_str(&text[copied..]);
            return redacted;
        }
        skip_ws(&mut chars);
        let equals = chars.next_if(|&(_, c)| c == '=').is_some();
        skip_ws(&mut chars);
        let value_start = at(&mut chars);
        let ended = equals
            && if chars.next_if(|&(_, c)| c == '\'').is_some() {
                let mut closed = false;
                while let Some((_, c)) = chars.next() {
                    match c {
                        '\\' => {
                            chars.next();
                        }
                        '\'' => {
                            closed = true;
                            break;
                        }
                        _ => {}
                    }
                }
                closed
            } else {
                let mut any = false;
                while let Some((_, c)) = chars.next_if(|&(_, c)| !c.is_whitespace()) {
                    any = true;
                    if c == '\\' {
                        chars.next();
                    }
                }
                any
            };
        if !ended {
            // Not a connection string the driver reads: nothing past here is shown.
            redacted.push_str(&text[copied..key_start]);
            redacted.push_str("***");
            return redacted;
        }
        if key == "password" {
            redacted.push_str(&text[copied..value_start]);
            redacted.push_str("***");
            if rest_too {
                return redacted;
            }
            copied = at(&mut chars);
        }
    }
}

/// `LOTTERY_DATABASE_URL`, or the connection string in the file `LOTTERY_DATABASE_URL_FILE`
/// names (not both), checked as the central will use it: its TLS parameters, then the rest as
/// the driver reads it.
pub(super) fn database_url<F: Fn(&str) -> Option<String>>(
    vars: &Vars<'_, F>,
) -> Result<Option<DatabaseUrl>, ConfigError> {
    const FILE: &str = "LOTTERY_DATABASE_URL_FILE";
    // What an error shows: the variable's value (password hidden), or the file's name.
    let (var, url, shown, holding) = match (vars.set("LOTTERY_DATABASE_URL"), vars.set(FILE)) {
        (None, None) => return Ok(None),
        (Some(_), Some(path)) => {
            return Err(ConfigError::Invalid {
                var: FILE,
                value: path,
                expected: "LOTTERY_DATABASE_URL unset: the connection string comes from one or \
                           the other, not both"
                    .into(),
            });
        }
        (Some(url), None) => ("LOTTERY_DATABASE_URL", url.clone(), redact_refused(&url), ""),
        (None, Some(path)) => (FILE, read_url_file(FILE, &path)?, path, "a file holding "),
    };
    let invalid = |reason: String| ConfigError::Invalid {
        var,
        value: shown.clone(),
        expected: format!(
            "{holding}a PostgreSQL connection string such as \
             postgresql://lottery:secret@db:5432/lottery ({reason})"
        ),
    };
    let (rest, _) = split_tls(url.trim()).map_err(invalid)?;
    if let Err(e) = rest.parse::<tokio_postgres::Config>() {
        // The driver's "expected `=` but got `x`" would show a character that may be the
        // password's: its position is enough.
        let e = e.to_string();
        return Err(invalid(e.split(": expected").next().unwrap_or_default().to_owned()));
    }
    Ok(Some(DatabaseUrl(url.trim().to_owned())))
}

/// How the connection is protected, as libpq's `sslmode` means it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SslMode {
    /// Plain TCP.
    Disable,
    /// TLS when the server offers it, else plain; the certificate is not checked (the default).
    Prefer,
    /// TLS or no connection; the certificate is not checked (encrypted, not authenticated),
    /// unless `sslrootcert` is given, which makes it `VerifyCa` (as libpq does).
    Require,
    /// TLS, the server's certificate chained to a trusted root; any host name.
    VerifyCa,
    /// As `VerifyCa`, and the certificate names the host connected to.
    VerifyFull,
}

/// The roots a server's certificate must chain to (`verify-ca`, `verify-full`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RootCerts {
    /// The system's roots (`sslrootcert` unset or `system`, as libpq 16 spells it).
    System,
    /// The PEM certificates of `sslrootcert=PATH`.
    File(PathBuf),
}

/// The TLS settings of a connection string.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DatabaseTls {
    pub mode: SslMode,
    pub roots: RootCerts,
}

impl DatabaseTls {
    /// Whether the server's certificate is checked against [`DatabaseTls::roots`].
    pub fn verifies(&self) -> bool {
        match self.mode {
            SslMode::Disable | SslMode::Prefer => false,
            SslMode::Require => self.roots != RootCerts::System,
            SslMode::VerifyCa | SslMode::VerifyFull => true,
        }
    }
}

const SSLMODES: &str = "disable, prefer, require, verify-ca or verify-full";

/// `url` without its `sslmode` and `sslrootcert` parameters (for the driver, which refuses
/// `verify-ca`, `verify-full` and `sslrootcert`), and the TLS settings they make.
///
/// # Errors
/// What is wrong, naming the parameter and its value (never the password): an unknown
/// `sslmode`, an empty `sslrootcert`.
pub fn split_tls(url: &str) -> Result<(String, DatabaseTls), String> {
    let (rest, params) = match ["postgresql://", "postgres://"].iter().find(|p| url.starts_with(*p))
    {
        Some(_) => split_url(url),
        None => split_key_values(url),
    };
    let (mut mode, mut roots) = (SslMode::Prefer, RootCerts::System);
    for (key, value) in params {
        if key == "sslmode" {
            mode = match value.as_str() {
                "disable" => SslMode::Disable,
                "prefer" => SslMode::Prefer,
                "require" => SslMode::Require,
                "verify-ca" => SslMode::VerifyCa,
                "verify-full" => SslMode::VerifyFull,
                other => return Err(format!("sslmode={other:?} is invalid: expected {SSLMODES}")),
            };
        } else {
            roots = match value.as_str() {
                "" => {
                    return Err(
                        "sslrootcert is empty: expected a PEM file's path, or system".into()
                    );
                }
                "system" => RootCerts::System,
                path => RootCerts::File(PathBuf::from(path)),
            };
        }
    }
    Ok((rest, DatabaseTls { mode, roots }))
}

fn ours(key: &str) -> bool {
    key == "sslmode" || key == "sslrootcert"
}

/// A `postgresql://…?k=v&…` URL: the query's `sslmode`/`sslrootcert` taken out (names and
/// values percent-decoded, as the driver decodes them); everything else as given. The query is
/// found as the driver finds it: after the credentials, which end at the first `@` (a password
/// may hold an unencoded `?`).
fn split_url(url: &str) -> (String, Vec<(String, String)>) {
    let after_credentials = url.find('@').map_or(0, |at| at + 1);
    let Some(mark) = url[after_credentials..].find('?') else {
        return (url.to_owned(), Vec::new());
    };
    let (base, query) = (&url[..after_credentials + mark], &url[after_credentials + mark + 1..]);
    let mut taken = Vec::new();
    let mut kept = Vec::new();
    for param in query.split('&') {
        let (key, value) = param.split_once('=').unwrap_or((param, ""));
        let key = percent_decode(key);
        if ours(&key) {
            taken.push((key, percent_decode(value)));
        } else {
            kept.push(param);
        }
    }
    let rest = if kept.is_empty() { base.to_owned() } else { format!("{base}?{}", kept.join("&")) };
    (rest, taken)
}

/// A `key=value …` string read as the driver reads it (spaces around `=`, values quoted with
/// `'…'`, backslash escapes): `sslmode`/`sslrootcert` taken out, every other pair written back
/// quoted. A string the driver would refuse is left whole for it to refuse, with its words.
fn split_key_values(text: &str) -> (String, Vec<(String, String)>) {
    let Some(pairs) = key_values(text) else { return (text.to_owned(), Vec::new()) };
    let (taken, kept): (Vec<_>, Vec<_>) = pairs.into_iter().partition(|(key, _)| ours(key));
    if taken.is_empty() {
        return (text.to_owned(), taken);
    }
    let quote = |v: &str| v.replace('\\', "\\\\").replace('\'', "\\'");
    let kept: Vec<String> = kept.iter().map(|(k, v)| format!("{k}='{}'", quote(v))).collect();
    (kept.join(" "), taken)
}

/// The pairs of a `key=value …` string, or `None` where the driver would stop reading.
fn key_values(text: &str) -> Option<Vec<(String, String)>> {
    let mut chars = text.chars().peekable();
    let mut pairs = Vec::new();
    loop {
        while chars.next_if(|c| c.is_whitespace()).is_some() {}
        let mut key = String::new();
        while let Some(c) = chars.next_if(|&c| !c.is_whitespace() && c != '=') {
            key.push(c);
        }
        if key.is_empty() {
            return chars.peek().is_none().then_some(pairs);
        }
        while chars.next_if(|c| c.is_whitespace()).is_some() {}
        chars.next_if_eq(&'=')?;
        while chars.next_if(|c| c.is_whitespace()).is_some() {}
        let mut value = String::new();
        if chars.next_if_eq(&'\'').is_some() {
            loop {
                match chars.next()? {
                    '\\' => value.push(chars.next()?),
                    '\'' => break,
                    c => value.push(c),
                }
            }
        } else {
            while let Some(c) = chars.next_if(|c| !c.is_whitespace()) {
                match c {
                    // A backslash ending the string escapes nothing: the driver drops it.
                    '\\' => value.extend(chars.next()),
                    c => value.push(c),
                }
            }
        }
        pairs.push((key, value));
    }
}

/// `%XX` escapes decoded, as the driver decodes a URL parameter (its name or its value).
pub(super) fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut decoded = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = bytes.get(i + 1..i + 3).and_then(|h| std::str::from_utf8(h).ok());
        match (bytes[i], hex.and_then(|h| u8::from_str_radix(h, 16).ok())) {
            (b'%', Some(byte)) => {
                decoded.push(byte);
                i += 3;
            }
            (byte, _) => {
                decoded.push(byte);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&decoded).into_owned()
}

/// The connection string in the file `path`, which `var` names (`LOTTERY_DATABASE_URL_FILE`):
/// its text, with the trailing line break(s) an editor or `echo` leaves taken off.
///
/// # Errors
/// `Unreadable` when the file cannot be read (missing, a directory, not UTF-8); `Invalid` when
/// it holds nothing but white space.
pub(super) fn read_url_file(var: &'static str, path: &str) -> Result<String, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|e| ConfigError::Unreadable {
        var,
        path: path.into(),
        reason: e.to_string(),
    })?;
    let url = text.trim_end_matches(['\n', '\r']);
    if url.trim().is_empty() {
        return Err(ConfigError::Invalid {
            var,
            value: path.to_owned(),
            expected: "a file holding a PostgreSQL connection string (this one is empty)".into(),
        });
    }
    Ok(url.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn split(url: &str) -> (String, SslMode, RootCerts) {
        let (rest, tls) = split_tls(url).unwrap();
        (rest, tls.mode, tls.roots)
    }

    #[test]
    fn the_tls_parameters_are_taken_out_of_a_url() {
        let (rest, mode, roots) = split(
            "postgresql://u:p%3Fw@db:5432/x?sslmode=verify-full&application_name=a&sslrootcert=%2Fca.pem",
        );
        assert_eq!(rest, "postgresql://u:p%3Fw@db:5432/x?application_name=a");
        assert_eq!((mode, roots), (SslMode::VerifyFull, RootCerts::File("/ca.pem".into())));
        let (rest, mode, roots) = split("postgres://u@db/x?sslmode=require");
        assert_eq!(
            (rest.as_str(), mode, roots),
            ("postgres://u@db/x", SslMode::Require, RootCerts::System)
        );
        let (rest, mode, _) = split("postgresql://u@db/x");
        assert_eq!((rest.as_str(), mode), ("postgresql://u@db/x", SslMode::Prefer));
        rest.parse::<tokio_postgres::Config>().unwrap();
    }

    /// libpq's several hosts (failover: the driver tries them in order, and with
    /// `target_session_attrs=read-write` keeps the first that takes writes): the TLS parameters
    /// come out, the hosts, ports and `target_session_attrs` reach the driver, and the password
    /// is hidden, in both forms.
    #[test]
    fn several_hosts_keep_their_tls_parameters_and_hidden_password() {
        use tokio_postgres::config::{Host, TargetSessionAttrs};
        let url = "postgresql://u:s3cret@pg1:5432,pg2:5433/lottery?sslmode=verify-full\
                   &target_session_attrs=read-write&sslrootcert=%2Fca.pem";
        let (rest, mode, roots) = split(url);
        assert_eq!(
            rest,
            "postgresql://u:s3cret@pg1:5432,pg2:5433/lottery?target_session_attrs=read-write"
        );
        assert_eq!((mode, roots), (SslMode::VerifyFull, RootCerts::File("/ca.pem".into())));
        let config: tokio_postgres::Config = rest.parse().unwrap();
        let hosts = [Host::Tcp("pg1".into()), Host::Tcp("pg2".into())];
        assert_eq!(config.get_hosts(), hosts);
        assert_eq!(config.get_ports(), [5432, 5433]);
        assert_eq!(config.get_target_session_attrs(), TargetSessionAttrs::ReadWrite);
        assert_eq!(
            redact_password(url),
            "postgresql://u:***@pg1:5432,pg2:5433/lottery?sslmode=verify-full\
             &target_session_attrs=read-write&sslrootcert=%2Fca.pem"
        );

        let text = "host=pg1,pg2 port=5432,5433 user=u password='s 3' dbname=lottery \
                    target_session_attrs=read-write sslmode=require";
        let (rest, mode, _) = split(text);
        assert_eq!(mode, SslMode::Require);
        let config: tokio_postgres::Config = rest.parse().unwrap();
        assert_eq!(config.get_hosts(), hosts);
        assert_eq!(config.get_ports(), [5432, 5433]);
        assert_eq!(config.get_password(), Some(&b"s 3"[..]));
        assert_eq!(config.get_target_session_attrs(), TargetSessionAttrs::ReadWrite);
        let shown = redact_password(text);
        assert!(!shown.contains("s 3") && shown.contains("host=pg1,pg2 port=5432,5433"), "{shown}");
    }

    #[test]
    fn the_tls_parameters_are_taken_out_of_key_values() {
        let (rest, mode, roots) =
            split("host=db  password = 'a b\\'c' sslmode=verify-ca sslrootcert='/my certs/ca.pem'");
        assert_eq!((mode, roots), (SslMode::VerifyCa, RootCerts::File("/my certs/ca.pem".into())));
        assert_eq!(rest, "host='db' password='a b\\'c'");
        let config: tokio_postgres::Config = rest.parse().unwrap();
        assert_eq!(config.get_password(), Some(&b"a b'c"[..]));
        let (rest, mode, roots) = split("host=db sslrootcert=system sslmode=disable");
        assert_eq!(
            (rest.as_str(), mode, roots),
            ("host='db'", SslMode::Disable, RootCerts::System)
        );
        // Untouched when there is nothing of ours, or when the driver would refuse it anyway.
        assert_eq!(split("host=db user=x").0, "host=db user=x");
        assert_eq!(split("host=db sslmode=require user").0, "host=db sslmode=require user");
    }

    /// Wherever the driver reads an `sslmode` it knows, ours is the same: never a weaker one
    /// (the connection's mode is ours, set over the driver's).
    #[test]
    fn the_sslmode_is_read_where_the_driver_reads_it() {
        use tokio_postgres::config::SslMode as Driver;
        let cases = [
            // A password with an unencoded `?` (libpq and the driver take it whole).
            "postgresql://u:a?b@db/x?sslmode=require",
            "postgresql://u:a?sslmode=disable&b@db/x?sslmode=require",
            "postgres://u:?@db:5432/x?application_name=a&sslmode=require",
            // An unquoted value ending in a backslash: the driver drops the backslash.
            "host=db sslmode=require password=abc\\",
            "sslmode=require host=db password=abc\\",
            "postgresql://u:p@db/x?sslmode=require",
            "host=db sslmode=disable",
        ];
        for url in cases {
            let driver = url.parse::<tokio_postgres::Config>().unwrap().get_ssl_mode();
            let (_, tls) = split_tls(url).unwrap();
            let ours = match tls.mode {
                SslMode::Disable => Driver::Disable,
                SslMode::Prefer => Driver::Prefer,
                SslMode::Require | SslMode::VerifyCa | SslMode::VerifyFull => Driver::Require,
            };
            assert_eq!(format!("{ours:?}"), format!("{driver:?}"), "{url}");
        }
    }

    #[test]
    fn a_password_with_an_unencoded_at_sign_never_shows() {
        for (url, shown) in [
            ("postgresql://u:p@ss@db:5432/x", "postgresql://u:***@db:5432/x"),
            (
                "postgres://u:a@b@c@db/x?application_name=me@home",
                "postgres://u:***@db/x?application_name=me@home",
            ),
            ("postgresql://u:pw@db/x", "postgresql://u:***@db/x"),
            ("postgresql://db/x?sslmode=require", "postgresql://db/x?sslmode=require"),
        ] {
            assert_eq!(redact_password(url), shown, "{url}");
        }
    }

    #[test]
    fn bad_tls_parameters_are_named_with_their_values() {
        let e = split_tls("host=db sslmode=verify").unwrap_err();
        assert_eq!(
            e,
            "sslmode=\"verify\" is invalid: expected disable, prefer, require, verify-ca or verify-full"
        );
        let e = split_tls("postgresql://db/x?sslmode=Require").unwrap_err();
        assert!(e.starts_with("sslmode=\"Require\" is invalid"), "{e}");
        let e = split_tls("host=db sslrootcert=''").unwrap_err();
        assert_eq!(e, "sslrootcert is empty: expected a PEM file's path, or system");
    }

    #[test]
    fn require_with_a_root_file_verifies_as_libpq_does() {
        let tls = |url| split_tls(url).unwrap().1.verifies();
        assert!(!tls("host=db sslmode=require"));
        assert!(tls("host=db sslmode=require sslrootcert=/ca.pem"));
        assert!(!tls("host=db sslmode=prefer sslrootcert=/ca.pem"));
        assert!(tls("host=db sslmode=verify-ca"));
    }

    #[test]
    fn a_url_file_loses_its_trailing_line_break_only() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("url");
        let name = path.to_str().unwrap();
        std::fs::write(&path, "postgresql://u:p@db/x \r\n").unwrap();
        assert_eq!(read_url_file("V", name).unwrap(), "postgresql://u:p@db/x ");
        std::fs::write(&path, " \n\n").unwrap();
        let e = read_url_file("V", name).unwrap_err().to_string();
        assert_eq!(
            e,
            format!(
                "V={name:?} is invalid: expected a file holding a PostgreSQL connection string \
                 (this one is empty)"
            )
        );
        let missing = dir.path().join("missing");
        let e = read_url_file("V", missing.to_str().unwrap()).unwrap_err().to_string();
        assert!(
            e.starts_with(&format!("V: cannot read {}: No such file", missing.display())),
            "{e}"
        );
    }
}
