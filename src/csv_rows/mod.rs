//! The CSV row format both sides read: the agency files (the agency) and the bets file (the
//! central); and the bets file's row, written (the central stores it, the agency hashes it). Headerless, `\n` or `\r\n` line ends, a fixed number of fields per row.
//!
//! # Layout
//! - `csv_reader.rs`: the csv crate's reader set up for these files ([`csv_reader()`],
//!   [`fields`]), the general path the bets file is read with;
//! - `record_reader.rs`: [`RecordReader`], the agency file's fast reader, exactly the records,
//!   fields, line numbers and errors of [`csv_reader()`] (a test holds them side by side);
//! - `quoted.rs`: a record with quotes, as csv-core parses it (the fast reader's rare path);
//! - `bets_row.rs`: the bets file's row, written: the one encoder of a stored bet, and
//!   [`RowHasher`], an agency's receipt of its rows in that encoding.

mod bets_row;
mod csv_reader;
mod quoted;
mod record_reader;

pub(crate) use bets_row::{RowHasher, encode_rows, encode_rows_and_winners};
pub(crate) use csv_reader::{csv_reader, fields, record_line};
pub(crate) use record_reader::RecordReader;
