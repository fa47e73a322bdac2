//! The agency file, read on a blocking thread and cut into batches.

use std::io;
use std::path::Path;

use tokio::sync::mpsc;

use super::ClientError;
use crate::config::{BetSource, ClientConfig};
use crate::csv_rows::{RecordReader, RowHasher};
use crate::domain::{
    AgencyId, BetNumber, BetText, Checker, Receipt, has_won, is_winning, latest_birthdate,
};
use crate::protocol::{
    EncodedBatch, MAX_BATCH_BYTES, WireBet, WireBetRef, batch_end_frame_max_len,
};

/// Batches read ahead of the one being sent.
const READ_AHEAD_BATCHES: usize = 4;

/// What the reader hands the session.
#[derive(Debug)]
pub(super) enum Read {
    /// The next batch to send, already in wire form.
    Batch(EncodedBatch),
    /// The whole source was read.
    End(Whole),
}

/// What reading a whole source found, over every valid row (the rows the central already held
/// included).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Whole {
    /// The documents of its winning bets: the only winners the central may send this agency.
    pub winners: Vec<String>,
    /// Its rows' receipt: how many, and the SHA-256 of their bets-file rows, in order.
    pub receipt: Receipt,
}

type ReadResult = Result<Read, ClientError>;

/// Reads the agency's bets after the first `skip` on a blocking thread, in batches.
pub(super) fn spawn_reader(config: &ClientConfig, skip: u64) -> mpsc::Receiver<ReadResult> {
    let (tx, rx) = mpsc::channel(READ_AHEAD_BATCHES);
    match &config.source {
        BetSource::Single(bet) => {
            let winners = has_won(bet).then(|| bet.document.to_string()).into_iter().collect();
            let mut receipt = RowHasher::new(config.id);
            receipt.push(&bet.as_text());
            let receipt = receipt.finish();
            // The channel has room for both: this cannot fail.
            if skip == 0 {
                let batch = EncodedBatch::from(vec![WireBet::from_bet(bet)]);
                let _ = tx.try_send(Ok(Read::Batch(batch)));
            }
            let _ = tx.try_send(Ok(Read::End(Whole { winners, receipt })));
        }
        BetSource::File(path) => {
            let (path, max, agency) = (path.clone(), config.batch_max_amount.get(), config.id);
            tokio::task::spawn_blocking(move || {
                let deliver = |batch| tx.blocking_send(Ok(Read::Batch(batch))).is_ok();
                let read = read_batches(&path, agency, max, skip, deliver);
                let _ = tx.blocking_send(read.map(Read::End));
            });
        }
    }
    rx
}

/// Reads an agency file (CSV, no header: `first_name,last_name,document,birthdate,number`),
/// skips its first `skip` rows (already stored at the central) and hands `deliver` batches of at
/// most `max_amount` bets and `MAX_BATCH_BYTES` on the wire, each bet written in wire form
/// straight from its row. Stops quietly when `deliver` returns false. Returns the documents of
/// the file's winning bets and the receipt of its rows as `agency`'s, the skipped rows' included
/// (a skipped row that is no longer a valid bet is left out of the receipt, which then cannot
/// match the central's).
///
/// # Errors
/// `DataFile` when the file cannot be opened; `BadRow` at the first invalid row (its batch is not
/// delivered); `FileShorter` when the file has fewer than `skip` rows.
pub fn read_batches(
    path: &Path,
    agency: AgencyId,
    max_amount: usize,
    skip: u64,
    mut deliver: impl FnMut(EncodedBatch) -> bool,
) -> Result<Whole, ClientError> {
    let mut rows = Rows::open(path)?;
    let bad_row = |(line, reason)| ClientError::BadRow { path: path.to_owned(), line, reason };
    let empty_bytes = batch_end_frame_max_len();
    // A batch's bets take less than MAX_BATCH_BYTES: its buffer never grows.
    let new_batch = || EncodedBatch::with_capacity(MAX_BATCH_BYTES);
    let mut batch = new_batch();
    let mut bytes = empty_bytes;
    let mut winners = Vec::new();
    let mut receipt = RowHasher::new(agency);
    let skipped = rows.pass_over(skip, &mut winners, &mut receipt);
    if skipped < skip {
        return Err(ClientError::FileShorter {
            path: path.to_owned(),
            stored: skip,
            rows: skipped,
        });
    }
    while let Some(row) = rows.next_bet() {
        let bet = row.map_err(bad_row)?;
        if is_winning(bet.number) {
            winners.push(bet.document().to_owned());
        }
        receipt.push(&bet);
        let bet = WireBetRef::from_text(&bet);
        let len = bet.frame_len();
        // A bet is at most a few hundred bytes, so it always fits an empty batch.
        if !batch.is_empty() && bytes + len > MAX_BATCH_BYTES {
            if !deliver(std::mem::replace(&mut batch, new_batch())) {
                return Ok(Whole { winners, receipt: receipt.finish() });
            }
            bytes = empty_bytes;
        }
        bytes += len;
        batch.push(&bet);
        // Deliver a full batch at once, so it is sent even if a later row is bad.
        if batch.len() == max_amount {
            if !deliver(std::mem::replace(&mut batch, new_batch())) {
                return Ok(Whole { winners, receipt: receipt.finish() });
            }
            bytes = empty_bytes;
        }
    }
    if !batch.is_empty() {
        deliver(batch);
    }
    Ok(Whole { winners, receipt: receipt.finish() })
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
pub fn check_file(path: &Path) -> Result<CheckReport, ClientError> {
    let mut report = CheckReport::default();
    let mut rows = Rows::open(path)?;
    while let Some(row) = rows.next_bet() {
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

/// An agency file's rows, each a checked bet or the line and reason it is not one.
struct Rows<R> {
    records: RecordReader<R>,
    latest_birthdate: jiff::civil::Date,
}

impl Rows<std::fs::File> {
    fn open(path: &Path) -> Result<Self, ClientError> {
        let file = std::fs::File::open(path)
            .map_err(|source| ClientError::DataFile { path: path.to_owned(), source })?;
        Ok(Self::new(RecordReader::new(file), latest_birthdate(Checker::Agency)))
    }
}

impl<R: io::Read> Rows<R> {
    fn new(records: RecordReader<R>, latest_birthdate: jiff::civil::Date) -> Self {
        Self { records, latest_birthdate }
    }

    /// Passes over the first `n` rows (already stored, so checked when they were sent), adding
    /// the documents of the winning ones to `winners` and each to `receipt`; returns how many
    /// rows there were. A row that is no longer a valid bet (the file was edited since) counts
    /// as passed over, and is left out of the receipt, which then cannot match the central's.
    fn pass_over(&mut self, n: u64, winners: &mut Vec<String>, receipt: &mut RowHasher) -> u64 {
        let latest_birthdate = self.latest_birthdate;
        let mut skipped = 0;
        while skipped < n {
            let Some(Ok(fields)) = self.records.next_record::<5>().map(|(_, row)| row.fields())
            else {
                break;
            };
            skipped += 1;
            let Ok(fields) = fields.exact() else { continue };
            let [_, _, document, _, number] = fields;
            if BetNumber::parse_text(number).is_ok_and(is_winning) {
                winners.push(document.to_owned());
            }
            if let Ok(bet) = BetText::parse(fields, latest_birthdate) {
                receipt.push(&bet);
            }
        }
        skipped
    }

    /// The next row: a checked bet, borrowed from the file's buffer, or its line and why it is
    /// not one. `None` after the last row.
    fn next_bet(&mut self) -> Option<Result<BetText<'_>, (u64, String)>> {
        let latest_birthdate = self.latest_birthdate;
        let (line, record) = self.records.next_record::<5>()?;
        // Nearly every row: one line without quotes, a valid bet.
        let quick = record
            .line()
            .and_then(|(line, fields)| BetText::from_line(line, fields, latest_birthdate));
        if let Some(bet) = quick {
            return Some(Ok(bet));
        }
        let bet = record.fields().and_then(|fields| {
            let fields = fields
                .exact()
                .map_err(|e| format!("{e} (first_name,last_name,document,birthdate,number)"))?;
            BetText::parse(fields, latest_birthdate).map_err(|e| e.to_string())
        });
        Some(bet.map_err(|reason| (line, reason)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::{ClientCodec, ClientMessage, EncodedBatchMessage, ServerCodec};
    use bytes::BytesMut;
    use proptest::prelude::*;
    use tokio_util::codec::{Decoder, Encoder};

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
            out.push(decoded(b));
            true
        });
        (out, result.map(|whole| whole.winners))
    }

    /// The bets the central reads from `batch`'s frame.
    fn decoded(batch: EncodedBatch) -> Vec<WireBet> {
        let mut frame = BytesMut::new();
        let message = EncodedBatchMessage { seq: 7, bets: batch };
        ClientCodec::new().encode(message, &mut frame).unwrap();
        match ServerCodec::new().decode(&mut frame).unwrap() {
            Some(ClientMessage::Batch { seq: 7, bets }) if frame.is_empty() => bets,
            other => panic!("not one Batch frame: {other:?}"),
        }
    }

    /// How the reader cut `bets` into batches before they were encoded as they are read: by
    /// their `Bet` frames' lengths.
    fn batches_as_before(bets: Vec<WireBet>, max_amount: usize) -> Vec<Vec<WireBet>> {
        let (mut batches, mut batch, empty_bytes) =
            (Vec::new(), Vec::new(), batch_end_frame_max_len());
        let mut bytes = empty_bytes;
        for bet in bets {
            let len = bet.frame_len();
            if !batch.is_empty() && bytes + len > MAX_BATCH_BYTES {
                batches.push(std::mem::take(&mut batch));
                bytes = empty_bytes;
            }
            bytes += len;
            batch.push(bet);
            if batch.len() == max_amount {
                batches.push(std::mem::take(&mut batch));
                bytes = empty_bytes;
            }
        }
        batches.extend((!batch.is_empty()).then_some(batch));
        batches
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

    /// What a reader does with a file: each row's bet or line and reason, then for each `skip`
    /// what passing over that many rows finds (rows passed over, winners).
    type Outcome = (Vec<Result<WireBet, (u64, String)>>, Vec<(u64, Vec<String>)>);

    fn today() -> jiff::civil::Date {
        jiff::civil::date(2026, 11, 26)
    }

    /// The reader before this one, kept as the reference: the csv crate's `StringRecord`s and
    /// `Bet::from_text`'s steps, as they were.
    fn reference(contents: &[u8]) -> Outcome {
        use crate::csv_rows::{csv_reader, fields, record_line};
        use crate::domain::{Bet, Document, parse_date};
        let mut reader = csv_reader(contents);
        let mut record = csv::StringRecord::new();
        let mut rows = Vec::new();
        loop {
            match reader.read_record(&mut record) {
                Ok(false) => break,
                Err(e) => {
                    let line = e.position().map_or(reader.position().line(), csv::Position::line);
                    rows.push(Err((line, e.to_string())));
                }
                Ok(true) => {
                    let line = record_line(&record);
                    let row = fields::<5>(&record)
                        .map_err(|e| {
                            format!("{e} (first_name,last_name,document,birthdate,number)")
                        })
                        .and_then(|[first, last, document, birthdate, number]| {
                            let bet = || {
                                let agency = crate::domain::AgencyId::new(1)?;
                                let document = Document::parse(document)?;
                                let birthdate = parse_date(birthdate)?;
                                let number = BetNumber::parse_text(number)?;
                                let (first, last) = (first.into(), last.into());
                                Bet::new(agency, first, last, document, birthdate, number, today())
                            };
                            bet().map_err(|e| e.to_string())
                        });
                    rows.push(row.map(WireBet::from_owned).map_err(|reason| (line, reason)));
                }
            }
        }
        let passes = (0..=rows.len() as u64 + 1)
            .map(|n| {
                let (mut reader, mut winners) = (csv_reader(contents), Vec::new());
                let mut skipped = 0;
                while skipped < n && matches!(reader.read_record(&mut record), Ok(true)) {
                    skipped += 1;
                    if let Ok([_, _, document, _, number]) = fields::<5>(&record)
                        && BetNumber::parse_text(number).is_ok_and(is_winning)
                    {
                        winners.push(document.to_owned());
                    }
                }
                (skipped, winners)
            })
            .collect();
        (rows, passes)
    }

    /// This reader, reading `chunk` bytes at a time.
    fn fast(contents: &[u8], chunk: usize) -> Outcome {
        let rows_of = || Rows::new(RecordReader::with_chunk(contents, chunk), today());
        let mut rows = rows_of();
        let mut out = Vec::new();
        while let Some(row) = rows.next_bet() {
            out.push(row.map(|bet| {
                let wire = WireBet::from_text(&bet);
                let mut from_row = EncodedBatch::default();
                from_row.push(&WireBetRef::from_text(&bet));
                assert_eq!(from_row, EncodedBatch::from(vec![wire.clone()]), "{wire:?}");
                wire
            }));
        }
        let passes = (0..=out.len() as u64 + 1)
            .map(|n| {
                let mut winners = Vec::new();
                let mut receipt = RowHasher::new(AgencyId::new(1).unwrap());
                (rows_of().pass_over(n, &mut winners, &mut receipt), winners)
            })
            .collect();
        (out, passes)
    }

    /// Pieces of agency files, the awkward ones included: quotes, commas in names, CRLF, a BOM,
    /// empty fields, blank lines, control characters (C0 and C1), bytes that are not UTF-8.
    const PIECES: &[&[u8]] = &[
        b"Ana",
        b"Paz",
        "Ñandú".as_bytes(),
        b",",
        b",",
        b",",
        b"\"",
        b"\"\"",
        b"\r",
        b"\n",
        b"\n",
        b"\r\n",
        b"1",
        b"30904465",
        b"7574",
        b"0",
        b"2000-01-01",
        b"1999-02-29",
        b"2026-11-27",
        b"2026-11-28",
        b"-",
        b" ",
        "\u{85}".as_bytes(),
        "\u{feff}".as_bytes(),
        b"\xff",
        b"\xc3",
        b"\t",
        b"12345678901",
        b"+5",
        b"",
    ];

    fn piece() -> impl Strategy<Value = Vec<u8>> {
        proptest::sample::select(PIECES).prop_map(<[u8]>::to_vec)
    }

    /// A field: mostly plausible, sometimes quoted (its quotes doubled), sometimes anything.
    fn field(plausible: &'static [&'static str]) -> impl Strategy<Value = Vec<u8>> {
        let plain = proptest::sample::select(plausible).prop_map(|f| f.as_bytes().to_vec());
        let soup = proptest::collection::vec(piece(), 0..4).prop_map(|p| p.concat());
        prop_oneof![
            6 => plain.clone(),
            1 => plain.prop_map(|f| [&b"\""[..], &f.iter().flat_map(|&b| if b == b'"' { vec![b'"'; 2] } else { vec![b] }).collect::<Vec<_>>(), b"\""].concat()),
            2 => soup,
        ]
    }

    fn row() -> impl Strategy<Value = Vec<u8>> {
        let names = &["Ana", "Núñez", "José María, \"Pepe\"", "O'Brien", "a\tb", "\u{9f}x", ""];
        let fields = (
            field(names),
            field(names),
            field(&["30904465", "1", "0012", "x", "12345678901", ""]),
            field(&[
                "1999-03-17",
                "2024-02-29",
                "2023-02-29",
                "2026-11-27",
                "2026-11-28",
                "0000-12-31",
            ]),
            field(&["7574", "07574", "0", "9999", "10000", ""]),
            proptest::collection::vec(field(names), 0..2),
        );
        const ENDS: &[&[u8]] = &[b"\n", b"\r\n", b"\n\n", b"", b"\r\r\n"];
        let end = proptest::sample::select(ENDS);
        (fields, end).prop_map(|((a, b, c, d, e, more), end)| {
            let mut row =
                [a, b, c, d, e].into_iter().chain(more).collect::<Vec<_>>().join(&b","[..]);
            row.extend_from_slice(end);
            row
        })
    }

    proptest! {
        #[test]
        fn rows_are_read_exactly_as_the_csv_crate_reads_them(
            rows in proptest::collection::vec(row(), 0..8),
            soup in proptest::collection::vec(piece(), 0..12),
            at in any::<prop::sample::Index>(),
            chunk in 1..48usize,
        ) {
            // Well-formed rows, with a piece of anything put in somewhere.
            let mut contents = rows.concat();
            contents.splice(at.index(contents.len() + 1)..at.index(contents.len() + 1), soup.concat());
            let expected = reference(&contents);
            prop_assert_eq!(&fast(&contents, chunk), &expected);
            prop_assert_eq!(&fast(&contents, READ_CHUNK_FOR_TESTS), &expected);
        }
    }

    const READ_CHUNK_FOR_TESTS: usize = 128 * 1024;

    #[test]
    fn edge_cases_are_read_exactly_as_the_csv_crate_reads_them() {
        let cases: &[&[u8]] = &[
            b"",
            b"\n\n\n",
            b"Ana,Paz,1,2000-01-01,7574",
            b"Ana,Paz,1,2000-01-01,7574\n\nAna,Paz,2,2000-01-01,1\n",
            b"\"Ana, M\",\"Paz \"\"x\"\"\",1,2000-01-01,1\r\n",
            b"\"Ana\nM\",Paz,1,2000-01-01,1\nAna,Paz,x,2000-01-01,1\n",
            b"\"Ana\"x,Paz,1,2000-01-01,1\n",
            b"A\"na,Paz,1,2000-01-01,1\n",
            b"\"Ana,Paz,1,2000-01-01,1\nAna,Paz,2,2000-01-01,1\n",
            b"Ana,Paz,1,2000-01-01,\"7574\"\r\n",
            b"Ana,Paz,1,2000-01-01,7574,\n,\n\r\n\r\n",
            b"\xef\xbb\xbfAna,Paz,1,2000-01-01,7574\n",
            b"Ana,Paz,1,2000-01-01,1\nA\xffna,Paz,2,2000-01-01,1\nAna,Paz,3,2000-01-01,1\n",
            b"Ana,Paz,1,2000-01-01,1\n\"A\xc3\",\"\xb1\",2,2000-01-01,1\n",
            b"Ana,Paz,\xc3\xb1,2000-01-01,1\n",
            b"Ana,\xc2\x85,1,2000-01-01,1\n",
            b"Ana,Paz,1,2000-01-01,1\r",
            b"Ana,Paz,1,2000-01-01,1\r\r\n",
            b"\"\"\"\",Paz,1,2000-01-01,1\n",
        ];
        for contents in cases {
            let expected = reference(contents);
            for chunk in [1, 2, 3, 7, 64, READ_CHUNK_FOR_TESTS] {
                assert_eq!(
                    fast(contents, chunk),
                    expected,
                    "{:?} in chunks of {chunk}",
                    contents.escape_ascii().to_string()
                );
            }
        }
    }

    #[test]
    fn a_read_that_fails_is_the_last_row_as_the_csv_crate_reports_it() {
        let dir = tempfile::tempdir().unwrap();
        let report = check_file(dir.path()).unwrap();
        let reference = {
            let mut reader = crate::csv_rows::csv_reader(std::fs::File::open(dir.path()).unwrap());
            let e = reader.read_record(&mut csv::StringRecord::new()).unwrap_err();
            (reader.position().line(), e.to_string())
        };
        assert_eq!(report, CheckReport { rows: 1, bad_rows: 1, first_bad: vec![reference] });
    }

    #[test]
    fn batches_respect_both_the_amount_and_8_kb() {
        let long = "Ñ".repeat(96);
        let rows: String =
            (0..300).map(|i| format!("{long},\"{long}, jr\",{i},2000-01-01,{i}\r\n")).collect();
        let (out, result) = batches(&rows, 1000);
        result.unwrap();
        assert_eq!(out, batches_as_before(out.concat(), 1000), "cut exactly as before");
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
    fn batches_of_every_size_are_cut_exactly_as_before() {
        // Names of 1 to 100 characters (up to 300 bytes: lengths of one and three bytes on the
        // wire), so batches end at every kind of boundary.
        let rows: String = (0..2000)
            .map(|i| {
                let (first, last) = ("€".repeat(1 + i * 7 % 100), "ñ".repeat(1 + i * 3 % 100));
                format!("{first},{last},{i},2000-01-01,{}\n", i % 10_000)
            })
            .collect();
        for max_amount in [1, 7, 100, 10_000] {
            let (out, result) = batches(&rows, max_amount);
            result.unwrap();
            assert_eq!(out.iter().map(Vec::len).sum::<usize>(), 2000);
            assert_eq!(out, batches_as_before(out.concat(), max_amount), "at most {max_amount}");
        }
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
