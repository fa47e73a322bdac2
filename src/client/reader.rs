//! The agency file, read on a blocking thread and cut into batches.

use std::io;
use std::path::Path;

use tokio::sync::mpsc;

use super::ClientError;
use crate::config::{BetSource, ClientConfig};
use crate::csv_rows::{csv_reader, fields, record_line};
use crate::domain::{AgencyId, Bet, BetNumber, Checker, WINNING_NUMBER, has_won, latest_birthdate};
use crate::protocol::{MAX_BATCH_BYTES, WireBet, batch_end_frame_max_len};

/// Batches read ahead of the one being sent.
const READ_AHEAD_BATCHES: usize = 4;

/// What the reader hands the session.
#[derive(Debug)]
pub(super) enum Read {
    /// The next batch to send.
    Batch(Vec<WireBet>),
    /// The whole source was read: the documents of its winning bets (the rows the central already
    /// held included), which are the only winners the central may send this agency.
    End { winners: Vec<String> },
}

type ReadResult = Result<Read, ClientError>;

/// Reads the agency's bets after the first `skip` on a blocking thread, in batches.
pub(super) fn spawn_reader(config: &ClientConfig, skip: u64) -> mpsc::Receiver<ReadResult> {
    let (tx, rx) = mpsc::channel(READ_AHEAD_BATCHES);
    match &config.source {
        BetSource::Single(bet) => {
            let winners = has_won(bet).then(|| bet.document.to_string()).into_iter().collect();
            // The channel has room for both: this cannot fail.
            if skip == 0 {
                let _ = tx.try_send(Ok(Read::Batch(vec![WireBet::from_bet(bet)])));
            }
            let _ = tx.try_send(Ok(Read::End { winners }));
        }
        BetSource::File(path) => {
            let (path, agency, max) = (path.clone(), config.id, config.batch_max_amount.get());
            tokio::task::spawn_blocking(move || {
                let deliver = |batch| tx.blocking_send(Ok(Read::Batch(batch))).is_ok();
                let read = read_batches(&path, agency, max, skip, deliver);
                let _ = tx.blocking_send(read.map(|winners| Read::End { winners }));
            });
        }
    }
    rx
}

/// Reads an agency file (CSV, no header: `first_name,last_name,document,birthdate,number`),
/// skips its first `skip` rows (already stored at the central) and hands `deliver` batches of at
/// most `max_amount` bets and `MAX_BATCH_BYTES` on the wire. Stops quietly when `deliver` returns
/// false. Returns the documents of the file's winning bets, the skipped rows' included.
///
/// # Errors
/// `DataFile` when the file cannot be opened; `BadRow` at the first invalid row (its batch is not
/// delivered); `FileShorter` when the file has fewer than `skip` rows.
pub fn read_batches(
    path: &Path,
    agency: AgencyId,
    max_amount: usize,
    skip: u64,
    mut deliver: impl FnMut(Vec<WireBet>) -> bool,
) -> Result<Vec<String>, ClientError> {
    let mut rows = Rows::open(path, agency)?;
    let bad_row = |(line, reason)| ClientError::BadRow { path: path.to_owned(), line, reason };
    let empty_bytes = batch_end_frame_max_len();
    let mut batch = Vec::new();
    let mut bytes = empty_bytes;
    let mut winners = Vec::new();
    let skipped = rows.pass_over(skip, &mut winners);
    if skipped < skip {
        return Err(ClientError::FileShorter {
            path: path.to_owned(),
            stored: skip,
            rows: skipped,
        });
    }
    for row in rows {
        let bet = row.map_err(bad_row)?;
        if bet.number == WINNING_NUMBER.get() {
            winners.push(bet.document.clone());
        }
        let len = bet.frame_len();
        // A bet is at most a few hundred bytes, so it always fits an empty batch.
        if !batch.is_empty() && bytes + len > MAX_BATCH_BYTES {
            if !deliver(std::mem::take(&mut batch)) {
                return Ok(winners);
            }
            bytes = empty_bytes;
        }
        bytes += len;
        batch.push(bet);
        // Deliver a full batch at once, so it is sent even if a later row is bad.
        if batch.len() == max_amount {
            if !deliver(std::mem::take(&mut batch)) {
                return Ok(winners);
            }
            bytes = empty_bytes;
        }
    }
    if !batch.is_empty() {
        deliver(batch);
    }
    Ok(winners)
}

/// What `check_file` found.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct CheckReport {
    /// Rows read.
    pub rows: u64,
    /// Rows that are not valid bets.
    pub bad_rows: u64,
    /// The first bad rows (at most [`CHECK_REPORTED_ROWS`]): line and reason.
    pub first_bad: Vec<(u64, String)>,
}

/// How many bad rows `check_file` describes.
pub const CHECK_REPORTED_ROWS: usize = 10;

/// Validates every row of an agency file, offline, as the agency would before sending it.
///
/// # Errors
/// `DataFile` when the file cannot be opened.
pub fn check_file(path: &Path, agency: AgencyId) -> Result<CheckReport, ClientError> {
    let mut report = CheckReport::default();
    for row in Rows::open(path, agency)? {
        report.rows += 1;
        if let Err(bad) = row {
            report.bad_rows += 1;
            if report.first_bad.len() < CHECK_REPORTED_ROWS {
                report.first_bad.push(bad);
            }
        }
    }
    Ok(report)
}

/// An agency file's rows, each a bet ready to send or the line and reason it is not one.
struct Rows {
    reader: csv::Reader<io::BufReader<std::fs::File>>,
    record: csv::StringRecord,
    agency: AgencyId,
    latest_birthdate: chrono::NaiveDate,
}

impl Rows {
    fn open(path: &Path, agency: AgencyId) -> Result<Self, ClientError> {
        let file = std::fs::File::open(path)
            .map_err(|source| ClientError::DataFile { path: path.to_owned(), source })?;
        Ok(Self {
            reader: csv_reader(io::BufReader::new(file)),
            record: csv::StringRecord::new(),
            agency,
            latest_birthdate: latest_birthdate(Checker::Agency),
        })
    }

    /// Passes over the first `n` rows (already stored, so checked when they were sent), adding
    /// the documents of the winning ones to `winners`; returns how many rows there were.
    fn pass_over(&mut self, n: u64, winners: &mut Vec<String>) -> u64 {
        let mut skipped = 0;
        while skipped < n && matches!(self.reader.read_record(&mut self.record), Ok(true)) {
            skipped += 1;
            if let Ok([_, _, document, _, number]) = fields::<5>(&self.record)
                && BetNumber::parse_text(number).is_ok_and(|n| n == WINNING_NUMBER)
            {
                winners.push(document.to_owned());
            }
        }
        skipped
    }
}

impl Iterator for Rows {
    type Item = Result<WireBet, (u64, String)>;

    fn next(&mut self) -> Option<Self::Item> {
        match self.reader.read_record(&mut self.record) {
            Ok(false) => None,
            Err(e) => {
                let line = e.position().map_or(self.reader.position().line(), csv::Position::line);
                Some(Err((line, e.to_string())))
            }
            Ok(true) => {
                let line = record_line(&self.record);
                let row = fields::<5>(&self.record)
                    .map_err(|e| format!("{e} (first_name,last_name,document,birthdate,number)"))
                    .and_then(|fields| {
                        Bet::from_text(self.agency, fields, self.latest_birthdate)
                            .map_err(|e| e.to_string())
                    });
                Some(row.map(WireBet::from_owned).map_err(|reason| (line, reason)))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::{ClientCodec, ClientMessage};
    use bytes::BytesMut;
    use tokio_util::codec::Encoder;

    type Read = (Vec<Vec<WireBet>>, Result<Vec<String>, ClientError>);

    fn batches(contents: &str, max_amount: usize) -> Read {
        batches_after(contents, max_amount, 0)
    }

    fn batches_after(contents: &str, max_amount: usize, skip: u64) -> Read {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("agency-1.csv");
        std::fs::write(&path, contents).unwrap();
        let mut out = Vec::new();
        let agency = AgencyId::new(1).unwrap();
        let result = read_batches(&path, agency, max_amount, skip, |b| {
            out.push(b);
            true
        });
        (out, result)
    }

    fn wire_len(batch: &[WireBet], seq: u64) -> usize {
        let mut codec = ClientCodec::new();
        let mut buf = BytesMut::new();
        for bet in batch {
            codec.encode(ClientMessage::Bet(bet.clone()), &mut buf).unwrap();
        }
        codec.encode(ClientMessage::BetBatchEnd { seq }, &mut buf).unwrap();
        buf.len()
    }

    #[test]
    fn batches_respect_both_the_amount_and_8_kb() {
        let long = "Ñ".repeat(96);
        let rows: String =
            (0..300).map(|i| format!("{long},\"{long}, jr\",{i},2000-01-01,{i}\r\n")).collect();
        let (out, result) = batches(&rows, 1000);
        result.unwrap();
        assert_eq!(out.iter().map(Vec::len).sum::<usize>(), 300);
        assert!(out.len() > 1);
        for (i, batch) in out.iter().enumerate() {
            let len = wire_len(batch, u64::MAX);
            assert!(len <= MAX_BATCH_BYTES, "batch {i} is {len} bytes");
            let mut frame = BytesMut::new();
            let whole = ClientMessage::Batch { seq: u64::MAX, bets: batch.clone() };
            ClientCodec::new().encode(whole, &mut frame).expect("a full batch fits one frame");
            assert!(frame.len() <= len, "one Batch frame is smaller than its Bet frames");
            assert!(len + 450 > MAX_BATCH_BYTES || i == out.len() - 1, "batch {i} is full");
        }
        let (out, _) = batches("Ana,Paz,1,2000-01-01,1\n".repeat(25).as_str(), 10);
        assert_eq!(out.iter().map(Vec::len).collect::<Vec<_>>(), [10, 10, 5]);
    }

    #[test]
    fn a_bad_row_names_its_line_and_reason() {
        for (contents, line, reason) in [
            (
                "Ana,Paz,1,2000-01-01,1\r\n\"Ana, M\",Paz,2,2000-01-01,2\r\nAna,Paz\r\n",
                3,
                "5 fields",
            ),
            ("Ana,Paz,1,2000-01-01,1\nAna,Paz,x,2000-01-01,2\n", 2, "invalid document \"x\""),
            ("Ana,,1,2000-01-01,1\n", 1, "invalid last_name \"\""),
        ] {
            let (_, result) = batches(contents, 100);
            let err = result.unwrap_err();
            let text = err.to_string();
            assert!(matches!(err, ClientError::BadRow { line: l, .. } if l == line), "{text}");
            assert!(text.contains(reason), "{text}");
        }
    }

    #[test]
    fn the_files_winners_come_back_the_skipped_rows_included() {
        let rows = "A,B,11,2000-01-01,7574\nA,B,12,2000-01-01,1\nA,B,13,2000-01-01,7574\n\
                    A,B,14,2000-01-01,07574\nA,B,15,2000-01-01,2\n";
        for skip in 0..=5 {
            let (sent, winners) = batches_after(rows, 2, skip);
            assert_eq!(sent.concat().len() as u64, 5 - skip);
            assert_eq!(winners.unwrap(), ["11", "13", "14"], "after skipping {skip}");
        }
    }
}
