//! The machinery both sides' settings share: the layered lookup (flag > environment > file),
//! the process environment, and `Vars`, typed access whose errors name the variable.

use std::collections::HashMap;
use std::fmt;
use std::net::{IpAddr, SocketAddr, ToSocketAddrs};
use std::str::FromStr;
use std::time::Duration;

use tracing::Level;

use super::error::echo;
use super::{ConfigError, options};

/// The first non-empty value of `name` among the flags, the environment and the file.
pub(super) fn layered<'a>(
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

/// Typed access to the variables, with errors that name them. A variable that is unset (or
/// empty) reads as its default from the table of settings (`sources`), when that is a value.
pub(super) struct Vars<'a, F>(pub(super) &'a F);

impl<F: Fn(&str) -> Option<String>> Vars<'_, F> {
    /// What `var` was set to, if anything.
    pub(super) fn set(&self, var: &str) -> Option<String> {
        (self.0)(var).filter(|v| !v.is_empty())
    }

    /// What `var` was set to, else its default value.
    pub(super) fn get(&self, var: &str) -> Option<String> {
        self.set(var).or_else(|| options::literal_default(var).map(str::to_owned))
    }

    pub(super) fn invalid(&self, var: &'static str, expected: impl fmt::Display) -> ConfigError {
        let value = self.get(var).unwrap_or_default();
        ConfigError::Invalid { var, value, expected: expected.to_string() }
    }

    /// `var`'s value; `Missing` only for a variable without a default value.
    fn value(&self, var: &'static str, expected: &'static str) -> Result<String, ConfigError> {
        self.get(var).ok_or(ConfigError::Missing { var, expected })
    }

    pub(super) fn parse<T: FromStr>(
        &self,
        var: &'static str,
        expected: &str,
    ) -> Result<T, ConfigError> {
        let v = self.value(var, "a value")?;
        self.parse_value(var, &v, expected)
    }

    /// As [`Vars::parse`], with a default worked out in code (the table describes it).
    pub(super) fn parse_or<T: FromStr>(
        &self,
        var: &'static str,
        default: T,
        expected: &str,
    ) -> Result<T, ConfigError> {
        match self.set(var) {
            None => Ok(default),
            Some(v) => self.parse_value(var, &v, expected),
        }
    }

    fn parse_value<T: FromStr>(
        &self,
        var: &'static str,
        v: &str,
        expected: &str,
    ) -> Result<T, ConfigError> {
        // Rust's number parsers take a leading `+`; no setting means to allow one.
        if v.trim().starts_with('+') {
            return Err(self.invalid(var, expected));
        }
        v.trim().parse().map_err(|_| self.invalid(var, expected))
    }

    /// An IP address, or a host name resolved to its first IPv4 address (else its first).
    pub(super) fn host(&self, var: &'static str) -> Result<IpAddr, ConfigError> {
        let expected = "an IP address or a host name that resolves, such as 0.0.0.0 or server";
        let v = self.value(var, expected)?;
        resolve_host(v.trim())
            .map_err(|reason| self.invalid(var, format_args!("{expected} ({reason})")))
    }

    pub(super) fn boolean(&self, var: &'static str) -> Result<bool, ConfigError> {
        let v = self.value(var, "true or false")?;
        match v.trim().to_ascii_lowercase().as_str() {
            "true" | "1" | "yes" | "on" => Ok(true),
            "false" | "0" | "no" | "off" => Ok(false),
            _ => Err(self.invalid(var, "true or false")),
        }
    }

    pub(super) fn level(&self, var: &'static str) -> Result<Level, ConfigError> {
        let expected = "one of ERROR, WARN, INFO, DEBUG, TRACE";
        let v = self.value(var, expected)?;
        match v.trim().to_ascii_uppercase().as_str() {
            "ERROR" | "CRITICAL" => Ok(Level::ERROR),
            "WARN" | "WARNING" => Ok(Level::WARN),
            "INFO" => Ok(Level::INFO),
            "DEBUG" => Ok(Level::DEBUG),
            "TRACE" => Ok(Level::TRACE),
            _ => Err(self.invalid(var, expected)),
        }
    }

    pub(super) fn duration(&self, var: &'static str) -> Result<Duration, ConfigError> {
        let expected = "a duration above zero such as 30, 30s or 500ms";
        let v = self.value(var, expected)?;
        parse_duration(v.trim()).filter(|d| !d.is_zero()).ok_or_else(|| self.invalid(var, expected))
    }

    /// A pause that may be zero (none), such as `150ms`.
    pub(super) fn period(&self, var: &'static str) -> Result<Duration, ConfigError> {
        let expected = "a duration such as 0, 150ms, 5s or 1m";
        let v = self.value(var, expected)?;
        parse_duration(v.trim()).ok_or_else(|| self.invalid(var, expected))
    }
}

/// `host` as an address: itself if it is one, else what the resolver answers for it (its first
/// IPv4 address, else its first). `Err` says why not.
fn resolve_host(host: &str) -> Result<IpAddr, String> {
    if let Ok(ip) = host.parse::<IpAddr>() {
        return Ok(ip);
    }
    let addresses: Vec<SocketAddr> = (host, 0)
        .to_socket_addrs()
        .map_err(|e| format!("cannot resolve {}: {e}", echo(host)))?
        .collect();
    let ip = addresses.iter().find(|a| a.is_ipv4()).or(addresses.first()).map(SocketAddr::ip);
    ip.ok_or_else(|| format!("{} resolves to no address", echo(host)))
}

/// `30`, `30s`, `1500ms`, `2m`: a whole number of seconds, or with a unit.
pub(super) fn parse_duration(text: &str) -> Option<Duration> {
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
