//! The CSV row format both sides read: the agency files (the agency) and the bets file (the
//! central). Headerless, `\n` or `\r\n` line ends, a fixed number of fields per row.

use std::io;

use crate::domain::BetError;

/// A CSV reader for headerless files (bets file, agency files) with `\n` or `\r\n` line ends.
///
/// Records end at `\n` only, so `Position::line` is the record's real line: with the csv
/// crate's default CRLF handling, a record after a `\r\n` reports the previous line. The `\r`
/// this leaves at the end of a row is dropped by [`fields`].
pub(crate) fn csv_reader<R: io::Read>(input: R) -> csv::Reader<R> {
    csv::ReaderBuilder::new()
        .has_headers(false)
        .flexible(true)
        .terminator(csv::Terminator::Any(b'\n'))
        .from_reader(input)
}

/// The 1-based line a record starts on.
pub(crate) fn record_line(record: &csv::StringRecord) -> u64 {
    record.position().map_or(0, csv::Position::line)
}

/// Exactly `N` fields of `record`, the last without the `\r` of a `\r\n` line end.
///
/// # Errors
/// `BetError` for any other number of fields.
pub(crate) fn fields<const N: usize>(record: &csv::StringRecord) -> Result<[&str; N], BetError> {
    let mut fields: [&str; N] = [""; N];
    if record.len() != N {
        let found = format!("{} fields", record.len());
        return Err(BetError::new("row", found, if N == 5 { "5 fields" } else { "6 fields" }));
    }
    for (slot, field) in fields.iter_mut().zip(record.iter()) {
        *slot = field;
    }
    if let Some(last) = fields.last_mut() {
        *last = last.strip_suffix('\r').unwrap_or(last);
    }
    Ok(fields)
}
