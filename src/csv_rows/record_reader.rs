//! [`RecordReader`]: the fast reader of headerless CSV files, the agency's hot path. A record
//! without quotes is handed out as its line in the read buffer with where its commas are (found
//! eight bytes at a time); a record with quotes is parsed by `quoted.rs`.

use std::io;
use std::ops::Range;

use super::quoted::quoted;
use crate::domain::BetError;

/// The fields of one record, as text: the first `N` of them and how many there were.
#[derive(Debug)]
pub(crate) struct Fields<'a, const N: usize> {
    first: [&'a str; N],
    count: usize,
}

impl<'a, const N: usize> Fields<'a, N> {
    /// The fields `fields` yields: the first `N`, and how many.
    pub(super) fn collect(fields: impl Iterator<Item = &'a str>) -> Self {
        let mut first = [""; N];
        let mut count = 0;
        for field in fields {
            if let Some(slot) = first.get_mut(count) {
                *slot = field;
            }
            count += 1;
        }
        Self { first, count }
    }

    /// Exactly `N` fields, the last without the `\r` of a `\r\n` line end:
    /// [`fields`](super::fields) for a [`RecordReader`]'s record.
    ///
    /// # Errors
    /// `BetError` for any other number of fields.
    pub(crate) fn exact(&self) -> Result<[&'a str; N], BetError> {
        if self.count != N {
            let found = format!("{} fields", self.count);
            return Err(BetError::new("row", found, if N == 5 { "5 fields" } else { "6 fields" }));
        }
        let mut fields = self.first;
        if let Some(last) = fields.last_mut() {
            *last = last.strip_suffix('\r').unwrap_or(last);
        }
        Ok(fields)
    }
}

/// A record as [`RecordReader`] reads it.
#[derive(Debug)]
pub(crate) enum Record<'a, const N: usize> {
    /// A record without quotes: one line, as read (not yet checked to be UTF-8), without its
    /// `\n`, and where its commas are.
    Line { bytes: &'a [u8], commas: Commas<N>, at: Position },
    /// A record with quotes: its fields, or why it cannot be read.
    Parsed(Result<Fields<'a, N>, String>),
}

impl<'a, const N: usize> Record<'a, N> {
    /// The record's line when it is one of exactly `N` fields without quotes, and where each
    /// of its fields is in it.
    pub(crate) fn line(&self) -> Option<(&'a [u8], [Range<usize>; N])> {
        match self {
            Self::Line { bytes, commas, .. } if commas.count == N - 1 => {
                Some((bytes, std::array::from_fn(|i| commas.field(i, bytes.len()))))
            }
            _ => None,
        }
    }

    /// The fields, as text.
    ///
    /// # Errors
    /// The csv crate's text for a record that is not UTF-8, or a read that failed.
    pub(crate) fn fields(self) -> Result<Fields<'a, N>, String> {
        match self {
            // Commas are ASCII, so the line is UTF-8 exactly when each of its fields is.
            Self::Line { bytes, commas, at } => match std::str::from_utf8(bytes) {
                Ok(text) => {
                    // At commas and the ends: always character boundaries.
                    let field = |i| text.get(commas.field(i, bytes.len())).unwrap_or_default();
                    let first =
                        std::array::from_fn(|i| if i <= commas.count { field(i) } else { "" });
                    Ok(Fields { first, count: commas.count + 1 })
                }
                Err(_) => Err(at.not_utf8(bytes.split(|&b| b == b','))),
            },
            Self::Parsed(fields) => fields,
        }
    }
}

/// Where the commas of a line without quotes are: the first `N` and how many in all.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Commas<const N: usize> {
    at: [usize; N],
    count: usize,
}

impl<const N: usize> Commas<N> {
    /// Scans `input` up to the end of its first line or its first quote, whichever comes
    /// first: the commas before it, and where it is (`None`: neither is in `input`). Eight bytes
    /// at a time: on every row, several times quicker than a byte at a time or `memchr`'s
    /// searches on lines this short.
    #[inline(always)]
    fn scan(input: &[u8]) -> (Self, Option<usize>) {
        let each = |byte| u64::from_ne_bytes([byte; 8]);
        let mut commas = Self { at: [0; N], count: 0 };
        // The commas of the word at `base`, up to its first stop; where that stop is.
        let mut step = |base: usize, word: u64| {
            let stops = zero_bytes(word ^ each(b'\n')) | zero_bytes(word ^ each(b'"'));
            // The commas before the first stop: the bits below its bit.
            let mut found =
                zero_bytes(word ^ each(b',')) & (stops & stops.wrapping_neg()).wrapping_sub(1);
            while found != 0 {
                commas.push(base + found.trailing_zeros() as usize / 8);
                found &= found - 1;
            }
            (stops != 0).then(|| base + stops.trailing_zeros() as usize / 8)
        };
        let mut words = input.chunks_exact(8);
        for (i, word) in words.by_ref().enumerate() {
            let word = u64::from_le_bytes(word.try_into().unwrap_or_default());
            if let Some(stop) = step(i * 8, word) {
                return (commas, Some(stop));
            }
        }
        // The last few bytes, padded with zeros (which stop nothing).
        let mut tail = [0; 8];
        tail[..words.remainder().len()].copy_from_slice(words.remainder());
        let stop = step(input.len() / 8 * 8, u64::from_le_bytes(tail));
        (commas, stop)
    }

    fn push(&mut self, at: usize) {
        if let Some(slot) = self.at.get_mut(self.count) {
            *slot = at;
        }
        self.count += 1;
    }

    /// Where field `i` (at most `N - 1`, at most the number of commas) of a line of `len`
    /// bytes is.
    fn field(&self, i: usize, len: usize) -> Range<usize> {
        let start = if i == 0 { 0 } else { self.at[i - 1] + 1 };
        let end = if i < self.count { self.at[i] } else { len };
        start..end
    }
}

/// The high bit of each byte of `word` that is zero, and no other bit (no false positives,
/// unlike the shorter `(x - 0x01…) & !x & 0x80…`).
fn zero_bytes(word: u64) -> u64 {
    const LOW7: u64 = u64::from_ne_bytes([0x7F; 8]);
    !(((word & LOW7) + LOW7) | word | LOW7)
}

/// How much a [`RecordReader`] reads at a time.
const READ_CHUNK: usize = 128 * 1024;

/// Reads the records of a headerless CSV file exactly as [`csv_reader()`](super::csv_reader())
/// does (the same records, fields, line numbers and error texts; a test holds them side by
/// side), in a fraction of the time: a record without a quote, nearly every one, is one line,
/// handed out as its bytes in the read buffer with where its commas are (found eight bytes at a
/// time), so that a caller can check its fields without making strings; only a record with a
/// `"` takes the general path (Python's csv quoting: quoted fields, doubled quotes, newlines
/// inside quotes, text after a closing quote).
pub(crate) struct RecordReader<R> {
    input: R,
    buf: Vec<u8>,
    /// `buf[start..end]` is read and not yet consumed.
    start: usize,
    end: usize,
    eof: bool,
    /// A read failed: the failure was the last record.
    failed: bool,
    /// Where `buf[start]` is: its line (1-based) and byte offset, and the records before it.
    line: u64,
    byte: u64,
    records: u64,
    /// A quoted record's fields, unquoted, and where each ends.
    scratch: Vec<u8>,
    ends: Vec<usize>,
}

impl<R: io::Read> RecordReader<R> {
    pub(crate) fn new(input: R) -> Self {
        Self::with_chunk(input, READ_CHUNK)
    }

    pub(crate) fn with_chunk(input: R, chunk: usize) -> Self {
        Self {
            input,
            buf: vec![0; chunk.max(1)],
            start: 0,
            end: 0,
            eof: false,
            failed: false,
            line: 1,
            byte: 0,
            records: 0,
            scratch: Vec::new(),
            ends: Vec::new(),
        }
    }

    /// The next record: the line it starts on (as the csv crate counts: blank lines before it
    /// included) and its fields, or the reason it cannot be read (not UTF-8, a failed read).
    /// `None` at the end of the input, and after a failed read.
    #[inline(always)]
    pub(crate) fn next_record<const N: usize>(&mut self) -> Option<(u64, Record<'_, N>)> {
        if self.failed {
            return None;
        }
        let at = Position { line: self.line, byte: self.byte, record: self.records };
        if at.byte == 0 {
            self.skip_bom();
        }
        loop {
            // Blank lines before a record are skipped, as the csv crate does.
            let blank = self.buf[self.start..self.end].iter().take_while(|&&b| b == b'\n').count();
            self.advance(blank, blank as u64);
            if self.start == self.end && self.eof {
                return None;
            }
            let rest = &self.buf[self.start..self.end];
            match Commas::scan(rest) {
                (commas, Some(len)) if rest[len] == b'\n' => {
                    return Some(self.plain(len, len + 1, commas, at));
                }
                (commas, None) if self.eof => {
                    return Some(self.plain(rest.len(), rest.len(), commas, at));
                }
                (_, Some(_)) => {
                    if let Some(taken) = quoted(rest, self.eof, &mut self.scratch, &mut self.ends) {
                        let newlines = memchr::memchr_iter(b'\n', &rest[..taken]).count();
                        self.advance(taken, newlines as u64);
                        self.records += 1;
                        return Some((at.line, Record::Parsed(self.quoted_fields(at))));
                    }
                }
                (_, None) => {}
            }
            if let Err(e) = self.fill() {
                self.failed = true;
                let pending = &self.buf[self.start..self.end];
                let newlines = memchr::memchr_iter(b'\n', pending).count() as u64;
                return Some((self.line + newlines, Record::Parsed(Err(e.to_string()))));
            }
        }
    }

    /// A record without quotes: the next `len` bytes, `taken` with its line end.
    fn plain<const N: usize>(
        &mut self,
        len: usize,
        taken: usize,
        commas: Commas<N>,
        at: Position,
    ) -> (u64, Record<'_, N>) {
        let from = self.start;
        self.advance(taken, (taken > len).into());
        self.records += 1;
        (at.line, Record::Line { bytes: &self.buf[from..from + len], commas, at })
    }

    fn quoted_fields<const N: usize>(&self, at: Position) -> Result<Fields<'_, N>, String> {
        let starts = std::iter::once(0).chain(self.ends.iter().copied());
        let raw = || starts.clone().zip(&self.ends).map(|(from, &to)| &self.scratch[from..to]);
        if raw().any(|field| std::str::from_utf8(field).is_err()) {
            return Err(at.not_utf8(raw()));
        }
        Ok(Fields::collect(raw().filter_map(|field| std::str::from_utf8(field).ok())))
    }

    /// Skips a UTF-8 byte order mark at the start of the input, as csv-core does.
    fn skip_bom(&mut self) {
        while self.end - self.start < 3 && !self.eof && !self.failed {
            if self.fill().is_err() {
                // The next read reports it.
                break;
            }
        }
        if self.buf[self.start..self.end].starts_with(b"\xEF\xBB\xBF") {
            self.advance(3, 0);
        }
    }

    fn advance(&mut self, bytes: usize, newlines: u64) {
        self.start += bytes;
        self.byte += bytes as u64;
        self.line += newlines;
    }

    /// Reads more input after what is pending, which it moves to the front (growing the buffer
    /// when one record fills it); sets `eof` at the end of the input.
    fn fill(&mut self) -> io::Result<()> {
        self.buf.copy_within(self.start..self.end, 0);
        (self.end, self.start) = (self.end - self.start, 0);
        if self.end == self.buf.len() {
            self.buf.resize(self.buf.len() * 2, 0);
        }
        loop {
            match self.input.read(&mut self.buf[self.end..]) {
                Ok(0) => self.eof = true,
                Ok(n) => self.end += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            }
            return Ok(());
        }
    }
}

/// Where a record starts, as the csv crate reports it: before the blank lines it skipped.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Position {
    line: u64,
    byte: u64,
    /// Records before this one.
    record: u64,
}

impl Position {
    /// The csv crate's text for a record that is not UTF-8 (`fields` are its raw fields).
    fn not_utf8<'a>(self, fields: impl Iterator<Item = &'a [u8]>) -> String {
        let (field, valid_up_to) = fields
            .enumerate()
            .find_map(|(i, field)| std::str::from_utf8(field).err().map(|e| (i, e.valid_up_to())))
            .unwrap_or_default();
        let Self { line, byte, record } = self;
        format!(
            "CSV parse error: record {record} (line {line}, field: {field}, byte: {byte}): \
             invalid utf-8: invalid UTF-8 in field {field} near byte index {valid_up_to}"
        )
    }
}
