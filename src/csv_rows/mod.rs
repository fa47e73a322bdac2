//! The CSV row format both sides read: the agency files (the agency) and the bets file (the
//! central). Headerless, `\n` or `\r\n` line ends, a fixed number of fields per row.
//!
//! # Layout
//! - `csv_reader.rs`: the csv crate's reader set up for these files ([`csv_reader()`],
//!   [`fields`]), the general path the bets file is read with;
//! - `record_reader.rs`: [`RecordReader`], the agency file's fast reader, exactly the records,
//!   fields, line numbers and errors of [`csv_reader()`] (a test holds them side by side);
//! - `quoted.rs`: a record with quotes, as csv-core parses it (the fast reader's rare path).

mod csv_reader;
mod quoted;
mod record_reader;

pub(crate) use csv_reader::{csv_reader, fields, record_line};
pub(crate) use record_reader::RecordReader;
