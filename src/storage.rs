//! `BetStore`: the bets file, and the per-agency state that must change atomically with it.
//!
//! The file keeps the original helpers' format so their Python `load_bets` reads it unchanged: CSV,
//! no header, one row `agency,first_name,last_name,document,birthdate,number` per bet, UTF-8,
//! `\r\n` line ends and minimal quoting, exactly as Python's `csv.writer` writes.
//!
//! Everything goes through one `tokio::sync::Mutex`. It is Tokio's rather than std's because it is
//! held across the `.await` of file writes; it guards the file *and* each agency's batch sequence
//! and ready flag, so "is this agency still open, is this the next batch, append it" is one atomic
//! step and the draw can never see half a batch or miss one that was acknowledged.

use std::collections::HashMap;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use chrono::NaiveDate;
use tokio::io::AsyncWriteExt;
use tokio::sync::Mutex;

use crate::domain::{AgencyId, Bet, BetError, Draw};

/// What can go wrong storing or reading bets.
#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    #[error("cannot open bets file {path}: {source}")]
    Open { path: PathBuf, source: io::Error },
    #[error("cannot write bets file {path}: {source}")]
    Write { path: PathBuf, source: io::Error },
    #[error("cannot read bets file {path}: {source}")]
    Read { path: PathBuf, source: csv::Error },
    #[error("bets file {path}, line {line}: {reason}")]
    BadRow { path: PathBuf, line: u64, reason: String },
    #[error("reading bets file {path} was interrupted: {reason}")]
    Interrupted { path: PathBuf, reason: String },
    #[error("agency {agency} already declared ReadyForLottery: it cannot add bets")]
    AgencyClosed { agency: AgencyId },
    #[error("agency {agency} sent batch {got}, but its next batch is {expected}")]
    SequenceGap { agency: AgencyId, expected: u64, got: u64 },
}

/// Whether `store_batch` wrote the batch or had it already.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stored {
    /// Appended now.
    New,
    /// A retry of a batch already stored: nothing written.
    Duplicate,
}

/// Where `mark_ready` left the lottery.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Readiness {
    /// False when this agency had already declared itself ready.
    pub newly_ready: bool,
    /// Agencies ready so far, this one included.
    pub ready: usize,
}

/// The bets file and the per-agency state that goes with it. Cheap to share behind an `Arc`.
#[derive(Debug)]
pub struct BetStore {
    path: PathBuf,
    state: Mutex<State>,
}

#[derive(Debug)]
struct State {
    file: tokio::fs::File,
    /// Length of the file up to the last whole batch: where a failed append is cut back to.
    len: u64,
    agencies: HashMap<AgencyId, AgencyProgress>,
}

#[derive(Debug, Default)]
struct AgencyProgress {
    last_seq: u64,
    ready: bool,
}

impl BetStore {
    /// Opens (creating if needed) the bets file for appending.
    ///
    /// # Errors
    /// `StorageError::Open` when the file cannot be opened or created.
    pub async fn open(path: impl Into<PathBuf>) -> Result<Self, StorageError> {
        let path = path.into();
        let open_error = |source| StorageError::Open { path: path.clone(), source };
        let file = tokio::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .await
            .map_err(open_error)?;
        let len = file.metadata().await.map_err(open_error)?.len();
        let state = State { file, len, agencies: HashMap::new() };
        Ok(Self { path, state: Mutex::new(state) })
    }

    /// The bets file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Bytes in the file, up to the last whole batch.
    pub async fn file_len(&self) -> u64 {
        self.state.lock().await.len
    }

    /// The sequence number of the next batch expected from `agency` (batches count from 1).
    pub async fn next_seq(&self, agency: AgencyId) -> u64 {
        let state = self.state.lock().await;
        state.agencies.get(&agency).map_or(0, |p| p.last_seq) + 1
    }

    /// Appends batch `seq` of `agency` whole, or nothing of it.
    ///
    /// A `seq` at or below the last stored one is a retry: acknowledged as `Stored::Duplicate`,
    /// not written again.
    ///
    /// # Errors
    /// `AgencyClosed` after the agency's `ReadyForLottery`; `SequenceGap` when `seq` skips ahead;
    /// `Write` when the append fails (the file is cut back to where it was).
    pub async fn store_batch(
        &self,
        agency: AgencyId,
        seq: u64,
        bets: &[Bet],
    ) -> Result<Stored, StorageError> {
        let rows = encode_rows(bets);
        let mut state = self.state.lock().await;
        let progress = state.agencies.entry(agency).or_default();
        if progress.ready {
            return Err(StorageError::AgencyClosed { agency });
        }
        if seq <= progress.last_seq {
            return Ok(Stored::Duplicate);
        }
        let expected = progress.last_seq + 1;
        if seq != expected {
            return Err(StorageError::SequenceGap { agency, expected, got: seq });
        }
        if let Err(source) = state.append(&rows).await {
            // Best effort: a file we cannot cut back will be cut at the next start-up.
            let _ = state.file.set_len(state.len).await;
            return Err(StorageError::Write { path: self.path.clone(), source });
        }
        state.len += rows.len() as u64;
        state.agencies.entry(agency).or_default().last_seq = seq;
        Ok(Stored::New)
    }

    /// Records that `agency` has sent everything; from now on its batches are refused.
    pub async fn mark_ready(&self, agency: AgencyId) -> Readiness {
        let mut state = self.state.lock().await;
        let progress = state.agencies.entry(agency).or_default();
        let newly_ready = !progress.ready;
        progress.ready = true;
        let ready = state.agencies.values().filter(|p| p.ready).count();
        Readiness { newly_ready, ready }
    }

    /// Runs the draw over every stored bet (`load_bets` + `has_won`), holding the lock so no
    /// append can interleave.
    ///
    /// # Errors
    /// `Read` or `BadRow` when the file cannot be read back.
    pub async fn draw(&self) -> Result<Draw, StorageError> {
        let _state = self.state.lock().await;
        let path = self.path.clone();
        let read = tokio::task::spawn_blocking(move || Draw::from_bets(load_bets(&path)?)).await;
        read.unwrap_or_else(|join| {
            Err(StorageError::Interrupted { path: self.path.clone(), reason: join.to_string() })
        })
    }

    /// Flushes what was written to the operating system.
    ///
    /// # Errors
    /// `Write` when the flush fails.
    pub async fn flush(&self) -> Result<(), StorageError> {
        let mut state = self.state.lock().await;
        let path = &self.path;
        state
            .file
            .flush()
            .await
            .map_err(|source| StorageError::Write { path: path.clone(), source })
    }
}

impl State {
    async fn append(&mut self, rows: &[u8]) -> io::Result<()> {
        self.file.write_all(rows).await?;
        self.file.flush().await
    }
}

/// Writes `bets` as bets-file rows, Python `csv.writer` style.
pub fn store_bets(out: impl io::Write, bets: &[Bet]) -> io::Result<()> {
    let mut writer = csv_writer(out);
    let mut agency = itoa::Buffer::new();
    let mut number = itoa::Buffer::new();
    for bet in bets {
        let birthdate = bet.birthdate.format("%Y-%m-%d").to_string();
        writer.write_record([
            agency.format(bet.agency.get()),
            &bet.first_name,
            &bet.last_name,
            bet.document.as_str(),
            &birthdate,
            number.format(bet.number.get()),
        ])?;
    }
    writer.flush()
}

fn encode_rows(bets: &[Bet]) -> Vec<u8> {
    let mut rows = Vec::with_capacity(bets.len() * 64);
    // Writing to a Vec cannot fail.
    let _ = store_bets(&mut rows, bets);
    rows
}

fn csv_writer<W: io::Write>(out: W) -> csv::Writer<W> {
    csv::WriterBuilder::new()
        .has_headers(false)
        .terminator(csv::Terminator::CRLF)
        .quote_style(csv::QuoteStyle::Necessary)
        .from_writer(out)
}

/// Streams every bet of a bets file, one row in memory at a time.
///
/// # Errors
/// `Open` when the file cannot be opened; each item is `Read` or `BadRow` for a row that cannot be
/// read or is not a valid bet.
pub fn load_bets(
    path: &Path,
) -> Result<impl Iterator<Item = Result<Bet, StorageError>>, StorageError> {
    let file = fs::File::open(path)
        .map_err(|source| StorageError::Open { path: path.to_owned(), source })?;
    let mut reader = csv_reader(file);
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

fn parse_row(record: &csv::StringRecord) -> Result<Bet, BetError> {
    let [agency, first_name, last_name, document, birthdate, number] = fields(record)?;
    let agency = AgencyId::parse(agency)?;
    // Rows were checked against the clock when stored; reading them back must not depend on it.
    let text = [first_name, last_name, document, birthdate, number];
    Bet::from_text(agency, text, NaiveDate::MAX)
}

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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{BetNumber, Document};
    use std::process::Command;

    fn bet(agency: u32, first: &str, last: &str, document: &str, number: u32) -> Bet {
        Bet::new(
            AgencyId::new(agency).unwrap(),
            first.into(),
            last.into(),
            Document::parse(document).unwrap(),
            NaiveDate::from_ymd_opt(1985, 12, 1).unwrap(),
            BetNumber::parse(number).unwrap(),
            NaiveDate::MAX,
        )
        .unwrap()
    }

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

    #[tokio::test]
    async fn stored_bets_load_back_identically() {
        let dir = tempfile::tempdir().unwrap();
        let store = BetStore::open(dir.path().join("bets.csv")).await.unwrap();
        let bets = tricky_bets();
        for (i, bet) in bets.iter().enumerate() {
            let stored = store.store_batch(bet.agency, 1, std::slice::from_ref(bet)).await;
            assert_eq!(stored.unwrap(), Stored::New, "bet {i}");
        }
        let loaded: Vec<Bet> = load_bets(store.path()).unwrap().collect::<Result<_, _>>().unwrap();
        assert_eq!(loaded, bets);
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

    #[tokio::test]
    async fn batches_follow_the_sequence_and_retries_are_not_stored_twice() {
        let dir = tempfile::tempdir().unwrap();
        let store = BetStore::open(dir.path().join("bets.csv")).await.unwrap();
        let agency = AgencyId::new(1).unwrap();
        let batch = [bet(1, "A", "B", "1", 1), bet(1, "C", "D", "2", 2)];
        assert_eq!(store.next_seq(agency).await, 1);
        assert_eq!(store.store_batch(agency, 1, &batch).await.unwrap(), Stored::New);
        let len = store.file_len().await;
        assert_eq!(store.store_batch(agency, 1, &batch).await.unwrap(), Stored::Duplicate);
        assert_eq!(store.file_len().await, len, "a retry writes nothing");
        let gap = store.store_batch(agency, 3, &batch).await.unwrap_err();
        assert!(matches!(gap, StorageError::SequenceGap { expected: 2, got: 3, .. }), "{gap}");
        assert_eq!(store.next_seq(agency).await, 2);
        assert_eq!(store.next_seq(AgencyId::new(2).unwrap()).await, 1, "sequences are per agency");
    }

    #[tokio::test]
    async fn a_ready_agency_cannot_add_bets_and_counts_once() {
        let dir = tempfile::tempdir().unwrap();
        let store = BetStore::open(dir.path().join("bets.csv")).await.unwrap();
        let one = AgencyId::new(1).unwrap();
        let two = AgencyId::new(2).unwrap();
        assert_eq!(store.mark_ready(one).await, Readiness { newly_ready: true, ready: 1 });
        assert_eq!(store.mark_ready(one).await, Readiness { newly_ready: false, ready: 1 });
        assert_eq!(store.mark_ready(two).await, Readiness { newly_ready: true, ready: 2 });
        let closed = store.store_batch(one, 1, &[bet(1, "A", "B", "1", 1)]).await.unwrap_err();
        assert!(matches!(closed, StorageError::AgencyClosed { .. }), "{closed}");
        assert_eq!(store.file_len().await, 0);
    }

    #[tokio::test]
    async fn the_draw_reads_the_stored_bets() {
        let dir = tempfile::tempdir().unwrap();
        let store = BetStore::open(dir.path().join("bets.csv")).await.unwrap();
        let bets = tricky_bets();
        for bet in &bets {
            store.store_batch(bet.agency, 1, std::slice::from_ref(bet)).await.unwrap();
        }
        let draw = store.draw().await.unwrap();
        assert_eq!(draw.bets(), 5);
        let winners = |a| draw.winners_for(AgencyId::new(a).unwrap()).to_vec();
        assert_eq!(winners(1), [Document::parse("30904465").unwrap()]);
        assert_eq!(winners(5), [Document::parse("7").unwrap()]);
        assert!(winners(2).is_empty());
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
}
