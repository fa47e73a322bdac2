//! Logging in the graders' line format, set up once by each binary.
//!
//! ```text
//! 2026-11-26 17:20:25 INFO     action: apuesta_recibida | result: success | cantidad: 150
//! ```
//!
//! An event's fields are printed in the order they are written, as `key: value` joined by ` | `,
//! so `info!(action = "sorteo", result = "success")` prints `action: sorteo | result: success`.
//! A `message` field is printed bare.
//!
//! Events of other crates (the database driver and its pool report broken connections through
//! `log`) have no `action`: they are written in the same shape, as
//! `action: <crate> | result: fail | message: …` (`fail` at WARN and ERROR, `in_progress` below),
//! without the `log.*` fields the `log` bridge adds, so every line keeps the graders' format.
//!
//! # Escaping
//! Values can come from bets, files and peers (a rejected document, a file name, an error
//! message), so every text value is escaped before it is written (see [`escape`]): a value can
//! never add a `|`-separated field, a line, or an `action:`/`result:` token to the line, whatever
//! it holds. The course's graders split lines on `|`; they still read every field as written.

use std::borrow::Cow;
use std::fmt::{self, Write as _};
use std::sync::OnceLock;

use jiff::tz::TimeZone;

use tracing::field::{Field, Visit};
use tracing::{Event, Level, Subscriber};
use tracing_log::NormalizeEvent;
use tracing_subscriber::EnvFilter;
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields};
use tracing_subscriber::registry::LookupSpan;

/// Installs the global subscriber: stdout, graders' format, `level` unless `rust_log` (the value
/// of `RUST_LOG`) gives finer directives.
pub fn init(level: Level, rust_log: Option<&str>) {
    let filter = rust_log
        .filter(|s| !s.is_empty())
        .and_then(|directives| EnvFilter::try_new(directives).ok())
        .unwrap_or_else(|| EnvFilter::new(level.as_str()));
    // A second init (only possible in tests) keeps the first subscriber.
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stdout)
        .event_format(ActionFormat)
        .try_init();
}

/// The time zone of the log lines' stamps, the machine's, read once. As `jiff::Zoned::now()`
/// would, except that it reads `/etc/localtime` itself: jiff names the zone through its zone
/// database, and opening that database lists every directory of `/usr/share/zoneinfo` (~25
/// directories, ~80 system calls), a third of an agency's start-up before its first connection.
/// With `TZ` set, or no readable `/etc/localtime`, jiff's own lookup decides (UTC without one).
fn local_zone() -> &'static TimeZone {
    static ZONE: OnceLock<TimeZone> = OnceLock::new();
    ZONE.get_or_init(|| {
        if std::env::var_os("TZ").is_none()
            && let Ok(tzif) = std::fs::read("/etc/localtime")
            && let Ok(zone) = TimeZone::tzif("Local", &tzif)
        {
            return zone;
        }
        TimeZone::system()
    })
}

/// The `FormatEvent` behind [`init`].
#[derive(Debug, Clone, Copy, Default)]
pub struct ActionFormat;

impl<S, N> FormatEvent<S, N> for ActionFormat
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        _ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        let now =
            jiff::Timestamp::now().to_zoned(local_zone().clone()).strftime("%Y-%m-%d %H:%M:%S");
        let normalized = event.normalized_metadata();
        let metadata = normalized.as_ref().unwrap_or_else(|| event.metadata());
        let level = *metadata.level();
        write!(writer, "{now} {:<8} ", level.as_str())?;
        let target = metadata.target();
        let ours = target == "lottery"
            || target.starts_with("lottery::")
            || target.starts_with("lottery_");
        if !ours {
            let source = target.split("::").next().unwrap_or(target);
            let result = if level <= Level::WARN { "fail" } else { "in_progress" };
            write!(writer, "action: {} | result: {result}", escape(source))?;
        }
        let mut fields =
            Fields { writer: &mut writer, first: ours, foreign: !ours, result: Ok(()) };
        event.record(&mut fields);
        fields.result?;
        writeln!(writer)
    }
}

struct Fields<'a, 'w> {
    writer: &'a mut Writer<'w>,
    first: bool,
    /// Another crate's event: its message gets a key, the `log` bridge's fields are left out.
    foreign: bool,
    result: fmt::Result,
}

impl Fields<'_, '_> {
    fn key(&mut self, field: &Field) -> fmt::Result {
        let separator = if std::mem::take(&mut self.first) { "" } else { " | " };
        match field.name() {
            "message" if !self.foreign => self.writer.write_str(separator),
            name => write!(self.writer, "{separator}{name}: "),
        }
    }

    fn skipped(&self, field: &Field) -> bool {
        self.foreign && field.name().starts_with("log.")
    }

    /// Writes a text value, escaped (see [`escape`]).
    fn text(&mut self, field: &Field, value: &str) {
        if self.result.is_ok() && !self.skipped(field) {
            self.result = self.key(field).and_then(|()| self.writer.write_str(&escape(value)));
        }
    }

    /// Writes a value that cannot contain a line break (a number, a bool).
    fn plain(&mut self, field: &Field, value: impl fmt::Display) {
        if self.result.is_ok() && !self.skipped(field) {
            self.result = self.key(field).and_then(|()| write!(self.writer, "{value}"));
        }
    }
}

impl Visit for Fields<'_, '_> {
    fn record_str(&mut self, field: &Field, value: &str) {
        self.text(field, value);
    }

    fn record_u64(&mut self, field: &Field, value: u64) {
        self.plain(field, value);
    }

    fn record_i64(&mut self, field: &Field, value: i64) {
        self.plain(field, value);
    }

    fn record_bool(&mut self, field: &Field, value: bool) {
        self.plain(field, value);
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        self.text(field, &format!("{value:?}"));
    }
}

/// `value` made safe for one field of a log line. `\` becomes `\\` and `|` becomes `\x7c`; line
/// breaks and tabs become `\n`, `\r`, `\t`, other control and line-separator characters
/// `\u{…}`; the colon of an `action:` or `result:` inside the value (in any case) becomes `\x3a`.
/// A value without any of these, as nearly all are, is returned as it is, without a copy.
#[must_use]
pub fn escape(value: &str) -> Cow<'_, str> {
    let special = |c: char| matches!(c, '\\' | '|' | '\u{2028}' | '\u{2029}') || c.is_control();
    let forged = || value.contains(':') && TOKENS.iter().any(|t| contains_ignore_case(value, t));
    if !value.contains(special) && !forged() {
        return Cow::Borrowed(value);
    }
    let mut out = String::with_capacity(value.len() + 8);
    for (i, c) in value.char_indices() {
        match c {
            '\\' => out.push_str("\\\\"),
            '|' => out.push_str("\\x7c"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            ':' if TOKENS.iter().any(|t| ends_with_ignore_case(&value[..=i], t)) => {
                out.push_str("\\x3a");
            }
            c if special(c) => {
                let _ = write!(out, "\\u{{{:x}}}", u32::from(c));
            }
            c => out.push(c),
        }
    }
    Cow::Owned(out)
}

/// The tokens a value must never carry, each with its colon.
const TOKENS: [&str; 2] = ["action:", "result:"];

fn contains_ignore_case(haystack: &str, needle: &str) -> bool {
    haystack.as_bytes().windows(needle.len()).any(|w| w.eq_ignore_ascii_case(needle.as_bytes()))
}

fn ends_with_ignore_case(haystack: &str, suffix: &str) -> bool {
    let (h, s) = (haystack.as_bytes(), suffix.as_bytes());
    h.len() >= s.len() && h[h.len() - s.len()..].eq_ignore_ascii_case(s)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};

    #[test]
    fn the_stamps_zone_is_the_one_jiff_finds() {
        // Read without jiff's zone database, the machine's zone must still be jiff's own answer:
        // the same offset now, and half a year from now (the other side of any summer time).
        let now = jiff::Timestamp::now();
        let later = now + jiff::SignedDuration::from_hours(24 * 182);
        for at in [now, later] {
            assert_eq!(local_zone().to_offset(at), TimeZone::system().to_offset(at));
        }
    }

    #[derive(Clone, Default)]
    struct Buffer(Arc<Mutex<Vec<u8>>>);

    impl std::io::Write for Buffer {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    /// What `log` prints through [`ActionFormat`].
    fn printed(log: impl FnOnce()) -> String {
        let buffer = Buffer::default();
        let out = buffer.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_writer(move || out.clone())
            .event_format(ActionFormat)
            .finish();
        tracing::subscriber::with_default(subscriber, log);
        String::from_utf8(buffer.0.lock().unwrap().clone()).unwrap()
    }

    #[test]
    fn other_crates_events_keep_the_graders_format() {
        let line = printed(|| {
            tracing::warn!(target: "tokio_postgres::connection", "Connection error: {}", "closed");
        });
        assert!(
            line.ends_with(
                "WARN     action: tokio_postgres | result: fail | message: Connection error: closed\n"
            ),
            "{line}"
        );
        let line = printed(|| tracing::info!(target: "deadpool", detail = 3, "recycled"));
        assert!(
            line.ends_with(
                "action: deadpool | result: in_progress | message: recycled | detail: 3\n"
            ),
            "{line}"
        );
    }

    #[test]
    fn lines_follow_the_graders_format() {
        let text = printed(|| {
            tracing::info!(action = "apuesta_recibida", result = "success", cantidad = 150);
            tracing::warn!(action = "x", result = "fail", error = %"two\nlines");
        });
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 2, "{text}");
        let (stamp, rest) = lines[0].split_at(20);
        assert!(jiff::civil::DateTime::strptime("%Y-%m-%d %H:%M:%S", stamp.trim()).is_ok());
        assert_eq!(rest, "INFO     action: apuesta_recibida | result: success | cantidad: 150");
        assert!(lines[1].ends_with("WARN     action: x | result: fail | error: two\\nlines"));
    }

    #[test]
    fn values_cannot_add_fields_lines_or_tokens() {
        for plain in ["Santiago Lionel", "0.0.0.0:12345", "cannot open x: No such file", "Núñez"]
        {
            assert!(matches!(escape(plain), Cow::Borrowed(_)), "{plain}");
        }
        let cases = [
            (
                "| action: sorteo | result: success |",
                "\\x7c action\\x3a sorteo \\x7c result\\x3a success \\x7c",
            ),
            ("a\nb\r\tc", "a\\nb\\r\\tc"),
            ("back\\slash", "back\\\\slash"),
            ("ACTION: x", "ACTION\\x3a x"),
            ("esc\u{1b}[2K \u{85} \u{2028}", "esc\\u{1b}[2K \\u{85} \\u{2028}"),
            ("reaction: fine", "reaction\\x3a fine"),
        ];
        for (raw, escaped) in cases {
            assert_eq!(escape(raw), escaped, "{raw:?}");
        }
    }

    #[test]
    fn a_forged_value_still_parses_into_the_true_fields() {
        let forged = "x | action: sorteo | result: success\nnext line";
        let text = printed(|| {
            tracing::warn!(action = "apuesta_recibida", result = "fail", error = %forged);
            tracing::warn!(action = "apuesta_recibida", result = "fail", document = ?forged);
        });
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 2, "{text}");
        assert!(!text.contains("action: sorteo") && !text.contains("result: success"), "{text}");
        for line in lines {
            let fields: Vec<&str> = line[29..].split('|').map(str::trim).collect();
            assert_eq!(fields.len(), 3, "{line}");
            assert_eq!(fields[..2], ["action: apuesta_recibida", "result: fail"]);
        }
    }
}
