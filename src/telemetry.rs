//! Logging in the graders' line format, set up once by each binary.
//!
//! ```text
//! 2026-11-26 17:20:25 INFO     action: apuesta_recibida | result: success | cantidad: 150
//! ```
//!
//! An event's fields are printed in the order they are written, as `key: value` joined by ` | `,
//! so `info!(action = "sorteo", result = "success")` prints `action: sorteo | result: success`.
//! A `message` field is printed bare.

use std::fmt;

use tracing::field::{Field, Visit};
use tracing::{Event, Level, Subscriber};
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
        let now = chrono::Local::now().format("%Y-%m-%d %H:%M:%S");
        write!(writer, "{now} {:<8} ", event.metadata().level().as_str())?;
        let mut fields = Fields { writer: &mut writer, first: true, result: Ok(()) };
        event.record(&mut fields);
        fields.result?;
        writeln!(writer)
    }
}

struct Fields<'a, 'w> {
    writer: &'a mut Writer<'w>,
    first: bool,
    result: fmt::Result,
}

impl Fields<'_, '_> {
    fn key(&mut self, field: &Field) -> fmt::Result {
        let separator = if std::mem::take(&mut self.first) { "" } else { " | " };
        match field.name() {
            "message" => self.writer.write_str(separator),
            name => write!(self.writer, "{separator}{name}: "),
        }
    }

    /// Writes a text value; line breaks are escaped so a value never breaks the one-line format.
    fn text(&mut self, field: &Field, value: &str) {
        if self.result.is_ok() {
            self.result = self.key(field).and_then(|()| {
                if value.contains(['\n', '\r']) {
                    let escaped = value.replace('\n', "\\n").replace('\r', "\\r");
                    self.writer.write_str(&escaped)
                } else {
                    self.writer.write_str(value)
                }
            });
        }
    }

    /// Writes a value that cannot contain a line break (a number, a bool).
    fn plain(&mut self, field: &Field, value: impl fmt::Display) {
        if self.result.is_ok() {
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};

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

    #[test]
    fn lines_follow_the_graders_format() {
        let buffer = Buffer::default();
        let out = buffer.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_writer(move || out.clone())
            .event_format(ActionFormat)
            .finish();
        tracing::subscriber::with_default(subscriber, || {
            tracing::info!(action = "apuesta_recibida", result = "success", cantidad = 150);
            tracing::warn!(action = "x", result = "fail", error = %"two\nlines");
        });
        let text = String::from_utf8(buffer.0.lock().unwrap().clone()).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 2, "{text}");
        let (stamp, rest) = lines[0].split_at(20);
        assert!(chrono::NaiveDateTime::parse_from_str(stamp.trim(), "%Y-%m-%d %H:%M:%S").is_ok());
        assert_eq!(rest, "INFO     action: apuesta_recibida | result: success | cantidad: 150");
        assert!(lines[1].ends_with("WARN     action: x | result: fail | error: two\\nlines"));
    }
}
