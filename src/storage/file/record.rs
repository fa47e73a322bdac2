//! The journal's records: one line each, ending in a check field ` #xxxxxxxx`, the CRC-32
//! (IEEE) of the text before it, in lowercase hex (the list is in `journal.rs` and
//! `docs/durability.md`). A format-4 `group` line that ends in ` rows` is followed by its group's
//! rows themselves, `end - start` bytes (the length its line gives before them), then the group's
//! `batch` lines: the journal carries the rows (see `commit.rs`).

use std::fmt::Write as _;

use crate::domain::{AgencyId, Document};

/// The format [`Record::Header`] names in the journals this version writes: groups whose
/// journal write carries their rows (a `group … rows` line is followed by them).
pub(super) const FORMAT_VERSION: u64 = 4;

/// The format before the journal carried rows: groups, journal first, each group's rows synced in
/// the bets file before it was acknowledged. Still read, and rewritten as format 4 at start-up.
pub(super) const FORMAT_GROUPS: u64 = 3;

/// The format before groups: check fields, rows written before their records. Still read.
pub(super) const FORMAT_ROWS_FIRST: u64 = 2;

/// One journal line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Record {
    /// The first line of a checked journal.
    Header {
        version: u64,
    },
    /// Adopted rows; `agencies` counts each agency's rows (empty in legacy lines, which did not
    /// count them).
    Base {
        end: u64,
        agencies: Vec<(AgencyId, u64)>,
    },
    /// A group commit's rows, bytes `start..end`, and their CRC-32; its batches follow it.
    /// `carried`: the journal holds the rows too, right after this line (format 4; once the bets
    /// file is synced, compaction rewrites the journal without them).
    Group {
        start: u64,
        end: u64,
        crc: u32,
        carried: bool,
    },
    /// `winners` is `None` when not known (lines written before the winners index existed).
    Batch {
        agency: AgencyId,
        seq: u64,
        bets: u64,
        end: u64,
        winners: Option<Vec<Document>>,
    },
    Ready {
        agency: AgencyId,
    },
    Draw {
        bets: u64,
        end: u64,
    },
}

impl Record {
    /// Appends the record's line, check field and `\n` included, to `out`.
    pub(super) fn write_to(&self, out: &mut String) {
        let start = out.len();
        self.write_text(out);
        let crc = crc32fast::hash(&out.as_bytes()[start..]);
        // Writing to a String cannot fail.
        let _ = writeln!(out, " #{crc:08x}");
    }

    /// The record's text, without check field or line end.
    fn write_text(&self, out: &mut String) {
        // Writing to a String cannot fail.
        let _ = match *self {
            Self::Header { version } => write!(out, "journal {version}"),
            Self::Base { end, ref agencies } => {
                let _ = write!(out, "base {end} ");
                if agencies.is_empty() {
                    out.push('-');
                }
                for (i, (agency, rows)) in agencies.iter().enumerate() {
                    let comma = if i > 0 { "," } else { "" };
                    let _ = write!(out, "{comma}{agency}:{rows}");
                }
                Ok(())
            }
            Self::Group { start, end, crc, carried } => {
                let rows = if carried { " rows" } else { "" };
                write!(out, "group {start} {end} {crc:08x}{rows}")
            }
            Self::Batch { agency, seq, bets, end, ref winners } => {
                let _ = write!(out, "batch {agency} {seq} {bets} {end} ");
                match winners.as_deref() {
                    None => out.push('?'),
                    Some([]) => out.push('-'),
                    Some(docs) => {
                        for (i, doc) in docs.iter().enumerate() {
                            if i > 0 {
                                out.push(',');
                            }
                            out.push_str(doc.as_str());
                        }
                    }
                }
                Ok(())
            }
            Self::Ready { agency } => write!(out, "ready {agency}"),
            Self::Draw { bets, end } => write!(out, "draw {bets} {end}"),
        };
    }

    /// Parses a record's text (no check field, no line end). `legacy` accepts the lines of
    /// journals from before the check field: `base <end>` without counts, `batch` without
    /// winners, and no header nor group.
    pub(super) fn parse(line: &str, legacy: bool) -> Option<Self> {
        let mut words = line.split(' ');
        let kind = words.next()?;
        let mut number = || words.next()?.parse::<u64>().ok();
        let agency = |n: u64| AgencyId::new(u32::try_from(n).ok()?).ok();
        let record = match kind {
            "journal" if !legacy => Self::Header { version: number()? },
            "base" => {
                let end = number()?;
                let agencies = match words.next() {
                    None if legacy => Vec::new(),
                    Some("-") if !legacy => Vec::new(),
                    Some(list) if !legacy => list
                        .split(',')
                        .map(|pair| {
                            let (a, rows) = pair.split_once(':')?;
                            Some((agency(a.parse().ok()?)?, rows.parse().ok()?))
                        })
                        .collect::<Option<_>>()?,
                    _ => return None,
                };
                Self::Base { end, agencies }
            }
            "group" if !legacy => {
                let (start, end) = (number()?, number()?);
                let hex = words.next().filter(|h| h.len() == 8 && is_lower_hex(h))?;
                let crc = u32::from_str_radix(hex, 16).ok()?;
                let carried = match words.next() {
                    None => false,
                    Some("rows") => true,
                    Some(_) => return None,
                };
                Self::Group { start, end, crc, carried }
            }
            "batch" => {
                let (agency, seq, bets, end) =
                    (agency(number()?)?, number()?, number()?, number()?);
                let winners = match words.next() {
                    None if legacy => None,
                    None => return None,
                    Some("?") if !legacy => None,
                    Some("-") => Some(Vec::new()),
                    Some(list) => Some(
                        list.split(',').map(|d| Document::parse(d).ok()).collect::<Option<_>>()?,
                    ),
                };
                Self::Batch { agency, seq, bets, end, winners }
            }
            "ready" => Self::Ready { agency: agency(number()?)? },
            "draw" => Self::Draw { bets: number()?, end: number()? },
            _ => return None,
        };
        words.next().is_none().then_some(record)
    }
}

pub(super) fn is_lower_hex(text: &str) -> bool {
    text.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}
