//! The csv crate's reader, set up for this project's files: the general path, which the bets file
//! is read with and which [`RecordReader`](super::RecordReader) is held to.

use std::io;

use super::record_reader::Fields;
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
    Fields::collect(record.iter()).exact()
}
