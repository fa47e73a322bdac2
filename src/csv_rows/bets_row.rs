//! The bets file's row, written: `agency,first_name,last_name,document,birthdate,number` and
//! `\r\n`, exactly as Python's `csv.writer` (`QUOTE_MINIMAL`) writes it. The one encoder of a
//! stored bet: the file store writes its rows with it, every export encodes with it, and an
//! agency hashes its own rows with it for its receipt ([`RowHasher`]).

use crate::domain::{AgencyId, BetText, Bets, Receipt, ReceiptHasher, is_winning, write_date};

/// The bets-file rows of `bets`, exactly as Python's `csv.writer` (`QUOTE_MINIMAL`, `\r\n`)
/// writes them. Written by hand: it is on every stored bet's path, and only the names can need
/// quoting (the other fields are digits and dashes).
pub(crate) fn encode_rows(bets: &(impl Bets + ?Sized)) -> Vec<u8> {
    let mut rows = Vec::with_capacity(bets.bet_count() * 64);
    for (id, bet) in bets.bet_texts() {
        push_row(&mut rows, id, &bet);
    }
    rows
}

/// The bets-file rows of `bets` (as [`encode_rows`]), and apart the rows of its winning bets
/// alone, in the same order: what the database store keeps of a batch.
pub(crate) fn encode_rows_and_winners(bets: &(impl Bets + ?Sized)) -> (Vec<u8>, Vec<u8>) {
    let mut rows = Vec::with_capacity(bets.bet_count() * 64);
    let mut winners = Vec::new();
    for (id, bet) in bets.bet_texts() {
        let start = rows.len();
        push_row(&mut rows, id, &bet);
        if is_winning(bet.number) {
            winners.extend_from_slice(&rows[start..]);
        }
    }
    (rows, winners)
}

/// Appends `bet`'s row, as `agency`'s, to `rows`.
fn push_row(rows: &mut Vec<u8>, agency: AgencyId, bet: &BetText<'_>) {
    let mut date = [0; 10];
    let [first_name, last_name, document] = bet.text_bytes();
    rows.extend_from_slice(itoa::Buffer::new().format(agency.get()).as_bytes());
    rows.push(b',');
    push_field(rows, first_name);
    rows.push(b',');
    push_field(rows, last_name);
    rows.push(b',');
    rows.extend_from_slice(document);
    rows.push(b',');
    rows.extend_from_slice(write_date(bet.birthdate, &mut date).as_bytes());
    rows.push(b',');
    rows.extend_from_slice(itoa::Buffer::new().format(bet.number.get()).as_bytes());
    rows.extend_from_slice(b"\r\n");
}

/// A field, quoted (with its quotes doubled) when it holds a delimiter, a quote or a line break.
fn push_field(out: &mut Vec<u8>, field: &[u8]) {
    if field.iter().any(|b| matches!(b, b',' | b'"' | b'\r' | b'\n')) {
        out.push(b'"');
        for &b in field {
            if b == b'"' {
                out.push(b'"');
            }
            out.push(b);
        }
        out.push(b'"');
    } else {
        out.extend_from_slice(field);
    }
}

/// Rows buffered before they are hashed.
const HASH_BUFFER: usize = 64 * 1024;

/// An agency's [`Receipt`], computed over its bets as it reads them: each bet encoded as the
/// bets file's row (with [`push_row`], the store's own encoder) and hashed.
#[derive(Debug)]
pub(crate) struct RowHasher {
    agency: AgencyId,
    rows: Vec<u8>,
    count: u64,
    hasher: ReceiptHasher,
}

impl RowHasher {
    /// A receipt of `agency`'s bets, none yet.
    pub(crate) fn new(agency: AgencyId) -> Self {
        let rows = Vec::with_capacity(HASH_BUFFER + 512);
        Self { agency, rows, count: 0, hasher: ReceiptHasher::default() }
    }

    /// Adds `bet`, the next of the agency's bets.
    pub(crate) fn push(&mut self, bet: &BetText<'_>) {
        push_row(&mut self.rows, self.agency, bet);
        self.count += 1;
        if self.rows.len() >= HASH_BUFFER {
            self.flush();
        }
    }

    fn flush(&mut self) {
        self.hasher.update(&self.rows, self.count);
        self.rows.clear();
        self.count = 0;
    }

    /// The receipt of every bet pushed.
    pub(crate) fn finish(mut self) -> Receipt {
        self.flush();
        self.hasher.finish()
    }
}
