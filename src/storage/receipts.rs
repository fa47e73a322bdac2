//! Receipts from the stored rows: the bets file's rows (or a database's bets encoded as them)
//! split by agency as they stream by, each agency's run of rows hashed into its receipt; and the
//! same split keeping one agency's rows (`lottery-server export --agency K`).
//!
//! A row ends at its `\n` (a stored bet has no line break in it: names hold no control
//! character) and starts with its agency, digits up to the first `,`.

use std::collections::BTreeMap;
use std::io::{self, Read, Write};

use crate::domain::{AgencyId, ReceiptHasher, Receipts};

/// Bytes read at a time from a bets file.
const CHUNK: usize = 1 << 20;

/// Where each run of rows goes.
trait Runs {
    /// `rows` (`count` whole rows, all `agency`'s).
    fn run(&mut self, agency: AgencyId, rows: &[u8], count: u64) -> io::Result<()>;
}

/// Splits bets-file rows, fed in pieces of any size, into runs of one agency's consecutive rows.
#[derive(Debug, Default)]
struct Splitter {
    /// The start of a row cut by the end of the last piece.
    carry: Vec<u8>,
    /// Rows seen so far, for errors.
    rows: u64,
}

impl Splitter {
    fn feed(&mut self, mut bytes: &[u8], runs: &mut impl Runs) -> io::Result<()> {
        if !self.carry.is_empty() {
            let Some(end) = memchr::memchr(b'\n', bytes) else {
                self.carry.extend_from_slice(bytes);
                return Ok(());
            };
            let mut row = std::mem::take(&mut self.carry);
            row.extend_from_slice(&bytes[..=end]);
            self.whole_rows(&row, runs)?;
            bytes = &bytes[end + 1..];
        }
        let whole = memchr::memrchr(b'\n', bytes).map_or(0, |end| end + 1);
        self.whole_rows(&bytes[..whole], runs)?;
        self.carry.extend_from_slice(&bytes[whole..]);
        Ok(())
    }

    fn whole_rows(&mut self, rows: &[u8], runs: &mut impl Runs) -> io::Result<()> {
        let mut run: Option<(AgencyId, usize, u64)> = None;
        let mut start = 0;
        for end in memchr::memchr_iter(b'\n', rows) {
            self.rows += 1;
            let agency = self.agency(&rows[start..end])?;
            match &mut run {
                Some((current, _, count)) if *current == agency => *count += 1,
                _ => {
                    if let Some((current, from, count)) = run {
                        runs.run(current, &rows[from..start], count)?;
                    }
                    run = Some((agency, start, 1));
                }
            }
            start = end + 1;
        }
        if let Some((current, from, count)) = run {
            runs.run(current, &rows[from..start], count)?;
        }
        Ok(())
    }

    /// The agency a row starts with.
    fn agency(&self, row: &[u8]) -> io::Result<AgencyId> {
        let digits = row.iter().position(|&b| b == b',').map_or(row, |comma| &row[..comma]);
        let number = (1..=10).contains(&digits.len()).then(|| {
            digits
                .iter()
                .try_fold(0u64, |n, &b| b.is_ascii_digit().then(|| n * 10 + u64::from(b - b'0')))
        });
        let parsed = number
            .flatten()
            .and_then(|n| u32::try_from(n).ok())
            .and_then(|n| AgencyId::new(n).ok());
        parsed.ok_or_else(|| {
            let shown = String::from_utf8_lossy(&row[..row.len().min(40)]).into_owned();
            let reason = format!("row {} does not start with an agency: {shown:?}", self.rows);
            io::Error::new(io::ErrorKind::InvalidData, reason)
        })
    }

    /// Checks nothing is left: the last row ended with its line break.
    fn end(&self) -> io::Result<()> {
        if self.carry.is_empty() {
            return Ok(());
        }
        let reason = format!("row {} has no line end", self.rows + 1);
        Err(io::Error::new(io::ErrorKind::InvalidData, reason))
    }
}

/// Every agency's receipt over the bets-file rows fed to it, in order.
#[derive(Debug, Default)]
pub(crate) struct ReceiptsBuilder {
    splitter: Splitter,
    hashers: Hashers,
}

#[derive(Debug, Default)]
struct Hashers(BTreeMap<AgencyId, ReceiptHasher>);

impl Runs for Hashers {
    fn run(&mut self, agency: AgencyId, rows: &[u8], count: u64) -> io::Result<()> {
        self.0.entry(agency).or_default().update(rows, count);
        Ok(())
    }
}

impl ReceiptsBuilder {
    /// Adds the next `rows` (a piece of the rows: it may cut one anywhere).
    ///
    /// # Errors
    /// `InvalidData` for a row that does not start with an agency.
    pub(crate) fn feed(&mut self, rows: &[u8]) -> io::Result<()> {
        self.splitter.feed(rows, &mut self.hashers)
    }

    /// Every agency's receipt.
    ///
    /// # Errors
    /// `InvalidData` when the last row has no line end.
    pub(crate) fn finish(self) -> io::Result<Receipts> {
        self.splitter.end()?;
        Ok(Receipts::new(self.hashers.0.into_iter().map(|(a, h)| (a, h.finish()))))
    }

    /// Every agency's receipt over the first `len` bytes of `file`.
    ///
    /// # Errors
    /// The read's, or `InvalidData` for rows that are not a bets file's; `UnexpectedEof` when
    /// it holds fewer bytes.
    pub(crate) fn of_file(file: impl Read, len: u64) -> io::Result<Receipts> {
        let mut builder = Self::default();
        let read = copy_rows(file, len, |piece| builder.feed(piece))?;
        if read < len {
            return Err(io::Error::from(io::ErrorKind::UnexpectedEof));
        }
        builder.finish()
    }
}

/// Feeds the first `len` bytes of `from` to `each`, a piece at a time; returns the bytes read.
fn copy_rows(
    from: impl Read,
    len: u64,
    mut each: impl FnMut(&[u8]) -> io::Result<()>,
) -> io::Result<u64> {
    let mut from = from.take(len);
    let mut buffer = vec![0; CHUNK];
    let mut read = 0;
    loop {
        let n = match from.read(&mut buffer) {
            Ok(0) => return Ok(read),
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        read += n as u64;
        each(&buffer[..n])?;
    }
}

/// Keeps one agency's rows and writes them to `out`.
struct Keep<'a, W> {
    agency: AgencyId,
    out: &'a mut W,
    written: u64,
}

impl<W: Write> Runs for Keep<'_, W> {
    fn run(&mut self, agency: AgencyId, rows: &[u8], _: u64) -> io::Result<()> {
        if agency == self.agency {
            self.out.write_all(rows)?;
            self.written += rows.len() as u64;
        }
        Ok(())
    }
}

/// Writes `agency`'s rows of the first `len` bytes of `from` (bets-file rows) to `out`, in
/// order; returns the bytes written and the bytes read.
///
/// # Errors
/// The read's or the write's; `InvalidData` for rows that are not a bets file's.
pub(crate) fn copy_agency_rows(
    from: impl Read,
    len: u64,
    agency: AgencyId,
    out: &mut impl Write,
) -> io::Result<(u64, u64)> {
    let mut splitter = Splitter::default();
    let mut keep = Keep { agency, out, written: 0 };
    let read = copy_rows(from, len, |piece| splitter.feed(piece, &mut keep))?;
    splitter.end()?;
    Ok((keep.written, read))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::ReceiptHasher;

    const ROWS: &[u8] = b"1,A,B,1,2000-01-01,5\r\n1,\"C, D\",E,2,2000-01-01,6\r\n\
        2,F,G,3,2000-01-01,7\r\n1,H,I,4,2000-01-01,8\r\n";

    fn receipt_of(rows: &[&[u8]]) -> crate::domain::Receipt {
        let mut hasher = ReceiptHasher::default();
        for row in rows {
            hasher.update(row, 1);
        }
        hasher.finish()
    }

    #[test]
    fn each_agency_gets_the_receipt_of_its_own_rows_in_order_whatever_the_pieces() {
        let one = receipt_of(&[
            b"1,A,B,1,2000-01-01,5\r\n",
            b"1,\"C, D\",E,2,2000-01-01,6\r\n",
            b"1,H,I,4,2000-01-01,8\r\n",
        ]);
        let two = receipt_of(&[b"2,F,G,3,2000-01-01,7\r\n"]);
        for piece in [1, 2, 7, 23, ROWS.len()] {
            let mut builder = ReceiptsBuilder::default();
            for chunk in ROWS.chunks(piece) {
                builder.feed(chunk).unwrap();
            }
            let receipts = builder.finish().unwrap();
            let agency = |n| AgencyId::new(n).unwrap();
            assert_eq!(receipts.receipt_for(agency(1)), one, "pieces of {piece}");
            assert_eq!(receipts.receipt_for(agency(2)), two, "pieces of {piece}");
            assert_eq!(receipts.digest().bets, 4);
        }
        assert_eq!(ReceiptsBuilder::of_file(ROWS, ROWS.len() as u64).unwrap().digest().bets, 4);
    }

    #[test]
    fn one_agencys_rows_are_exported_in_order() {
        let mut out = Vec::new();
        let agency = AgencyId::new(1).unwrap();
        let (written, read) = copy_agency_rows(ROWS, u64::MAX, agency, &mut out).unwrap();
        let expected: &[u8] =
            b"1,A,B,1,2000-01-01,5\r\n1,\"C, D\",E,2,2000-01-01,6\r\n1,H,I,4,2000-01-01,8\r\n";
        assert_eq!(
            (out.as_slice(), written, read),
            (expected, expected.len() as u64, ROWS.len() as u64)
        );
    }

    #[test]
    fn rows_that_are_not_a_bets_files_are_refused() {
        let mut builder = ReceiptsBuilder::default();
        let err = builder.feed(b"x,A\r\n").unwrap_err();
        assert!(err.to_string().contains("row 1"), "{err}");
        let mut builder = ReceiptsBuilder::default();
        builder.feed(b"1,A,B,1,2000-01-01,5").unwrap();
        assert!(builder.finish().unwrap_err().to_string().contains("no line end"));
    }
}
