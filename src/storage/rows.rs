//! The bets file's row format, shared with the original Python helpers: writing and reading it
//! (the encoder itself is `csv_rows::encode_rows`, which the agency's receipt uses too).
//!
//! CSV, no header, one row `agency,first_name,last_name,document,birthdate,number` per bet,
//! UTF-8, `\r\n` line ends and minimal quoting, exactly as Python's `csv.writer` writes, so the
//! original `load_bets` reads our file unchanged.

use std::fs;
use std::io;
use std::path::Path;

use jiff::civil::Date;

use super::StorageError;
pub(crate) use crate::csv_rows::encode_rows;
use crate::csv_rows::{csv_reader, fields, record_line};
use crate::domain::{AgencyId, Bet, BetError};

/// Writes `bets` as bets-file rows, Python `csv.writer` style.
///
/// # Errors
/// Any error writing to `out`.
pub fn store_bets(mut out: impl io::Write, bets: &[Bet]) -> io::Result<()> {
    out.write_all(&encode_rows(bets))
}

/// Streams every bet of a bets file, one row in memory at a time.
///
/// # Errors
/// `Open` when the file cannot be opened; each item is `Read` or `BadRow` for a row that cannot be
/// read or is not a valid bet.
pub fn load_bets(
    path: &Path,
) -> Result<impl Iterator<Item = Result<Bet, StorageError>>, StorageError> {
    load_bets_prefix(path, u64::MAX)
}

/// As [`load_bets`], over the file's first `len` bytes only.
///
/// # Errors
/// As [`load_bets`].
pub(super) fn load_bets_prefix(
    path: &Path,
    len: u64,
) -> Result<impl Iterator<Item = Result<Bet, StorageError>>, StorageError> {
    let file = fs::File::open(path)
        .map_err(|source| StorageError::Open { path: path.to_owned(), source })?;
    let mut reader = csv_reader(io::Read::take(file, len));
    let path = path.to_owned();
    let mut record = csv::StringRecord::new();
    Ok(std::iter::from_fn(move || match reader.read_record(&mut record) {
        Ok(false) => None,
        Ok(true) => Some(parse_row(&record).map_err(|e| StorageError::BadRow {
            path: path.clone(),
            line: record_line(&record),
            reason: e.to_string(),
        })),
        Err(source) => Some(Err(StorageError::Read { path: path.clone(), source })),
    }))
}

/// Every row of `bytes` (whole bets-file rows), with the byte offset where it starts: the bet,
/// or why it is not one.
pub(super) fn read_rows(bytes: &[u8]) -> Vec<(u64, Result<Bet, String>)> {
    let mut reader = csv_reader(bytes);
    let mut record = csv::StringRecord::new();
    let mut rows = Vec::new();
    loop {
        let offset = reader.position().byte();
        match reader.read_record(&mut record) {
            Ok(false) => return rows,
            Ok(true) => {
                let offset = record.position().map_or(offset, csv::Position::byte);
                rows.push((offset, parse_row(&record).map_err(|e| e.to_string())));
            }
            Err(e) => {
                rows.push((offset, Err(e.to_string())));
                return rows;
            }
        }
    }
}

fn parse_row(record: &csv::StringRecord) -> Result<Bet, BetError> {
    let [agency, first_name, last_name, document, birthdate, number] = fields(record)?;
    let agency = AgencyId::parse(agency)?;
    // Rows were checked against the clock when stored; reading them back must not depend on it.
    let text = [first_name, last_name, document, birthdate, number];
    Bet::from_text(agency, text, Date::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fixtures::named_bet as bet;
    use std::process::Command;

    fn tricky_bets() -> Vec<Bet> {
        vec![
            bet(1, "Santiago Lionel", "Lorca", "30904465", 7574),
            bet(2, "José, María", "Núñez", "1", 0),
            bet(3, "Ana \"la\" Paz", "O'Brien", "0012345678", 9999),
            bet(4, " leading space", "ñandú,\"", "42", 1234),
            bet(5, "#hash", "'quoted'", "7", 7574),
        ]
    }

    #[test]
    fn rows_are_written_as_python_csv_writes_them() {
        let mut out = Vec::new();
        store_bets(&mut out, &tricky_bets()[1..4]).unwrap();
        let expected = "2,\"José, María\",Núñez,1,1985-12-01,0\r\n\
                        3,\"Ana \"\"la\"\" Paz\",O'Brien,0012345678,1985-12-01,9999\r\n\
                        4, leading space,\"ñandú,\"\"\",42,1985-12-01,1234\r\n";
        assert_eq!(String::from_utf8(out).unwrap(), expected);
    }
    #[test]
    fn python_csv_reads_back_exactly_what_was_stored() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("bets.csv");
        let bets = tricky_bets();
        store_bets(fs::File::create(&path).unwrap(), &bets).unwrap();
        // The original helper opens the file in text mode without newline='', as here.
        let script = "import csv, json, sys\n\
                      with open(sys.argv[1], 'r', encoding='utf-8') as f:\n\
                      \x20   print(json.dumps(list(csv.reader(f, quoting=csv.QUOTE_MINIMAL))))";
        let out = Command::new("python3").arg("-c").arg(script).arg(&path).output();
        let out = out.expect("python3 runs (it is on every machine of this project)");
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        let rows = String::from_utf8(out.stdout).unwrap();
        let expected: Vec<Vec<String>> = bets
            .iter()
            .map(|b| {
                vec![
                    b.agency.to_string(),
                    b.first_name.clone(),
                    b.last_name.clone(),
                    b.document.to_string(),
                    b.birthdate.to_string(),
                    b.number.to_string(),
                ]
            })
            .collect();
        let expected = format!("{}\n", json_rows(&expected));
        assert_eq!(rows, expected);
    }

    /// JSON as Python's `json.dumps` prints a list of lists of strings (ASCII, `\uXXXX` escapes).
    fn json_rows(rows: &[Vec<String>]) -> String {
        let quote = |s: &String| {
            let mut out = String::from("\"");
            for c in s.chars() {
                match c {
                    '"' => out.push_str("\\\""),
                    '\\' => out.push_str("\\\\"),
                    c if c.is_ascii() => out.push(c),
                    c => {
                        let mut units = [0u16; 2];
                        for unit in c.encode_utf16(&mut units) {
                            out.push_str(&format!("\\u{unit:04x}"));
                        }
                    }
                }
            }
            out.push('"');
            out
        };
        let rows: Vec<String> = rows
            .iter()
            .map(|r| format!("[{}]", r.iter().map(quote).collect::<Vec<_>>().join(", ")))
            .collect();
        format!("[{}]", rows.join(", "))
    }
    #[test]
    fn a_bad_row_is_reported_with_its_line() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("bets.csv");
        fs::write(&path, "1,A,B,1,2000-01-01,5\r\n1,A,B,1,2000-01-01,99999\r\n").unwrap();
        let rows: Vec<_> = load_bets(&path).unwrap().collect();
        assert!(rows[0].is_ok());
        let err = rows[1].as_ref().unwrap_err().to_string();
        assert!(err.contains("line 2") && err.contains("99999"), "{err}");
    }

    proptest::proptest! {
        #[test]
        fn rows_match_the_csv_crates_minimal_quoting(first in "[^\\p{Cc}]{1,30}", last in "[ -~ñáé\"',]{1,30}") {
            let bet = bet(7, &first, &last, "123", 42);
            let mut expected = csv::WriterBuilder::new()
                .has_headers(false)
                .terminator(csv::Terminator::CRLF)
                .quote_style(csv::QuoteStyle::Necessary)
                .from_writer(Vec::new());
            expected
                .write_record(["7", &first, &last, "123", "1985-12-01", "42"])
                .unwrap();
            let expected = expected.into_inner().unwrap();
            proptest::prop_assert_eq!(encode_rows(&[bet]), expected);
        }
    }
}
