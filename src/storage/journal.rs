//! The journal: a small append-only text file beside the bets file (`<BETS_FILE>.journal`) that
//! records what the bets file's bytes mean. One record per line, each ending in a check field
//! ` #xxxxxxxx`, the CRC-32 (IEEE) of the text before it, in lowercase hex:
//!
//! ```text
//! journal 2                           the first line: the journal's format
//! base <end> <counts>                 bytes 0..end were adopted from a bets file with no journal;
//!                                     `counts` is `agency:rows,…` (or `-`)
//! batch <agency> <seq> <bets> <end> <winners>
//!                                     the agency's batch seq (bets rows) ends at byte `end`;
//!                                     `winners` are its winning documents, comma-separated, or `-`
//! ready <agency>                      the agency declared ReadyForLottery
//! draw <bets> <end>                   the draw ran over `bets` rows, bytes 0..end
//! ```
//!
//! A record is written only after the rows it describes are on disk, and synced before anything
//! is acknowledged, so the journal is the commit log. A crash can only tear what was written last
//! and not yet synced: [`replay`] accepts a torn tail (a last line without its `\n`, or a last
//! line whose check fails, zeros included) and refuses any other damage — a line that fails its
//! check or does not parse with lines after it — naming the line and its byte offset.
//!
//! Journals written before the check field existed (`legacy`: no `journal` line, no `#` fields)
//! are read when *every* line is legacy, and rewritten in this format at start-up.

use std::collections::HashMap;
use std::fmt::Write as _;

use crate::domain::{AgencyId, Document};

/// The format [`Record::Header`] names.
pub(super) const FORMAT_VERSION: u64 = 2;

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
    /// `winners` is `None` only in lines written before the winners index existed.
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
            Self::Batch { agency, seq, bets, end, ref winners } => {
                let _ = write!(out, "batch {agency} {seq} {bets} {end} ");
                match winners.as_deref() {
                    None | Some([]) => out.push('-'),
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
    /// winners, and no header.
    fn parse(line: &str, legacy: bool) -> Option<Self> {
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
            "batch" => {
                let (agency, seq, bets, end) =
                    (agency(number()?)?, number()?, number()?, number()?);
                let winners = match words.next() {
                    None if legacy => None,
                    None => return None,
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

/// Which kind of journal was replayed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Format {
    /// Every line has its check field (this version's journals).
    Checked,
    /// No line has one: written before the check field existed.
    Legacy,
}

/// The records of a journal, without its torn tail.
#[derive(Debug)]
pub(super) struct Replay {
    pub(super) records: Vec<Record>,
    /// `None` when no line could be read at all.
    pub(super) format: Option<Format>,
    /// Bytes of the journal that hold `records`; anything after is a torn tail.
    pub(super) valid_len: u64,
}

/// Damage that is not a torn tail: a line that fails its check, or does not parse, and is not
/// the journal's last.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Damage {
    /// 1-based.
    pub(super) line: u64,
    /// Where the line starts.
    pub(super) offset: u64,
    pub(super) reason: String,
}

/// Reads a journal. Everything up to the last line must be a readable record of one format;
/// the last line may be torn (no `\n`, or failing its check): it is left out of `valid_len`.
///
/// # Errors
/// `Damage` for the first bad line that is not the last.
pub(super) fn replay(bytes: &[u8]) -> Result<Replay, Damage> {
    let mut records = Vec::new();
    let mut format = None;
    let mut offset = 0u64;
    for (i, segment) in bytes.split_inclusive(|b| *b == b'\n').enumerate() {
        let last = offset + segment.len() as u64 == bytes.len() as u64;
        let Some(text) = segment.strip_suffix(b"\n") else { break };
        match read_line(text, format) {
            Ok((record, line_format)) => {
                format = Some(line_format);
                records.push(record);
            }
            Err(_) if last && torn(text) => break,
            Err(reason) => return Err(Damage { line: i as u64 + 1, offset, reason }),
        }
        offset += segment.len() as u64;
    }
    Ok(Replay { records, format, valid_len: offset })
}

/// One line's record and format, or why it cannot be read (given the format of the lines
/// before it).
fn read_line(text: &[u8], format: Option<Format>) -> Result<(Record, Format), String> {
    let Ok(text) = std::str::from_utf8(text) else {
        return Err("not UTF-8 text".into());
    };
    let checked = text
        .len()
        .checked_sub(10)
        .filter(|at| text.is_char_boundary(*at))
        .map(|at| text.split_at(at))
        .and_then(|(body, check)| Some((body, check.strip_prefix(" #")?)))
        .filter(|(_, hex)| hex.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)));
    match (checked, format) {
        (Some(_), Some(Format::Legacy)) => Err("a checked line in a legacy journal".into()),
        (Some((body, hex)), _) => {
            let crc = u32::from_str_radix(hex, 16).map_err(|e| e.to_string())?;
            if crc32fast::hash(body.as_bytes()) != crc {
                return Err(format!(
                    "its check field #{hex} does not match its text: the line was changed"
                ));
            }
            let record = Record::parse(body, false)
                .ok_or_else(|| format!("{body:?} is not a journal record"))?;
            Ok((record, Format::Checked))
        }
        (None, Some(Format::Checked)) => Err(format!("{} has no check field", quoted(text))),
        (None, _) => {
            let record = Record::parse(text, true)
                .ok_or_else(|| format!("{} is not a journal record", quoted(text)))?;
            Ok((record, Format::Legacy))
        }
    }
}

/// Whether a last line that cannot be read looks like a write cut short by a crash: bytes that
/// are not text (zeros, where the file grew but its data never reached the disk). A whole line of
/// printable text that fails its check was written complete and then changed: damage, not a
/// tear (the check field is what tells the two apart).
fn torn(text: &[u8]) -> bool {
    std::str::from_utf8(text).map_or(true, |t| t.chars().any(char::is_control))
}

/// `text`, quoted and cut to a readable length.
fn quoted(text: &str) -> String {
    let cut: String = text.chars().take(60).collect();
    if cut.len() < text.len() { format!("{cut:?}…") } else { format!("{cut:?}") }
}

/// An agency's durable progress.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Progress {
    /// The last batch sequence number stored (0: none yet).
    pub last_seq: u64,
    /// Bets stored for the agency, over all its batches.
    pub stored_bets: u64,
    /// Whether it declared ReadyForLottery.
    pub ready: bool,
}

/// What the journal says, replayed.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub(super) struct Ledger {
    /// Bytes of the bets file that are committed.
    pub(super) committed: u64,
    pub(super) agencies: HashMap<AgencyId, Progress>,
    /// `(bets, end)` of the draw, once it ran.
    pub(super) draw: Option<(u64, u64)>,
    pub(super) batches: u64,
    /// Rows in the committed bytes, when every one was recorded batch by batch.
    pub(super) bets: u64,
    /// Each agency's winning documents, in the order stored: the draw needs no re-read.
    pub(super) winners: HashMap<AgencyId, Vec<Document>>,
    /// True when some rows came without winners in the journal (an adopted file, or lines
    /// from before the index): the draw then reads the file.
    pub(super) winners_unknown: bool,
    /// Records applied so far.
    seen_records: u64,
}

impl Ledger {
    /// Applies `records` in order.
    ///
    /// # Errors
    /// A description of the first record that contradicts the ones before it.
    pub(super) fn replay(records: &[Record]) -> Result<Self, String> {
        let mut ledger = Self::default();
        for (i, record) in records.iter().enumerate() {
            ledger.apply(record).map_err(|e| format!("line {}: {e}", i + 1))?;
        }
        Ok(ledger)
    }

    pub(super) fn apply(&mut self, record: &Record) -> Result<(), String> {
        self.seen_records += 1;
        match *record {
            Record::Header { version } => {
                if version != FORMAT_VERSION {
                    return Err(format!(
                        "journal format {version}; this central reads format {FORMAT_VERSION}"
                    ));
                }
                if self.seen_records > 1 {
                    return Err("a journal header after other records".into());
                }
            }
            Record::Base { end, ref agencies } => {
                if self.committed > 0 || self.batches > 0 {
                    return Err("adopted rows after other records".into());
                }
                for (agency, rows) in agencies {
                    self.agencies.entry(*agency).or_default().stored_bets += rows;
                    self.bets += rows;
                }
                self.winners_unknown = true;
                self.advance(end)?;
            }
            Record::Batch { agency, seq, bets, end, ref winners } => {
                let progress = self.agencies.entry(agency).or_default();
                if seq != progress.last_seq + 1 {
                    let expected = progress.last_seq + 1;
                    return Err(format!("agency {agency} batch {seq} follows batch {expected}"));
                }
                progress.last_seq = seq;
                progress.stored_bets += bets;
                self.batches += 1;
                self.bets += bets;
                match winners {
                    Some(docs) if !docs.is_empty() => {
                        self.winners.entry(agency).or_default().extend(docs.iter().cloned());
                    }
                    Some(_) => {}
                    None => self.winners_unknown = true,
                }
                self.advance(end)?;
            }
            Record::Ready { agency } => self.agencies.entry(agency).or_default().ready = true,
            Record::Draw { bets, end } => {
                if end != self.committed {
                    return Err(format!("draw at byte {end}, bets end at {}", self.committed));
                }
                self.draw = Some((bets, end));
            }
        }
        Ok(())
    }

    fn advance(&mut self, end: u64) -> Result<(), String> {
        if end < self.committed {
            return Err(format!("end {end} is before the previous end {}", self.committed));
        }
        self.committed = end;
        Ok(())
    }

    pub(super) fn progress(&self, agency: AgencyId) -> Progress {
        self.agencies.get(&agency).copied().unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn agency(n: u32) -> AgencyId {
        AgencyId::new(n).unwrap()
    }

    fn docs(list: &[&str]) -> Vec<Document> {
        list.iter().map(|d| Document::parse(d).unwrap()).collect()
    }

    fn text(records: &[Record]) -> String {
        let mut text = String::new();
        records.iter().for_each(|r| r.write_to(&mut text));
        text
    }

    fn sample() -> Vec<Record> {
        vec![
            Record::Header { version: FORMAT_VERSION },
            Record::Base { end: 10, agencies: vec![(agency(3), 1), (agency(1), 4)] },
            Record::Batch {
                agency: agency(2),
                seq: 1,
                bets: 150,
                end: 7000,
                winners: Some(docs(&["7", "0012"])),
            },
            Record::Batch { agency: agency(2), seq: 2, bets: 1, end: 7050, winners: Some(vec![]) },
            Record::Ready { agency: agency(2) },
            Record::Draw { bets: 156, end: 7050 },
        ]
    }

    #[test]
    fn records_round_trip_with_their_check_field() {
        let records = sample();
        let text = text(&records);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines[0], format!("journal 2 #{:08x}", crc32fast::hash(b"journal 2")));
        assert!(lines[1].starts_with("base 10 3:1,1:4 #"), "{}", lines[1]);
        assert!(lines[2].starts_with("batch 2 1 150 7000 7,0012 #"), "{}", lines[2]);
        assert!(lines[3].starts_with("batch 2 2 1 7050 - #"), "{}", lines[3]);
        assert!(lines.iter().all(|l| l.len() > 10 && l.as_bytes()[l.len() - 10] == b' '));
        let read = replay(text.as_bytes()).unwrap();
        assert_eq!(read.records, records);
        assert_eq!(read.format, Some(Format::Checked));
        assert_eq!(read.valid_len, text.len() as u64);
    }

    #[test]
    fn only_the_last_line_can_be_a_torn_tail() {
        let good = text(&sample());
        let next = text(&[Record::Ready { agency: agency(3) }]);
        let mut changed = next.clone().into_bytes();
        changed[0] = b'R';
        for tail in [
            next.as_bytes()[..5].to_vec(),
            next.as_bytes()[..next.len() - 1].to_vec(),
            vec![0; 40],
            [&[0u8; 7][..], b"\n"].concat(),
            [&next.as_bytes()[..9], &[0u8; 9][..], b"\n"].concat(),
            b"\xff\xfe\n".to_vec(),
        ] {
            let bytes = [good.as_bytes(), &tail].concat();
            let read = replay(&bytes).unwrap_or_else(|d| panic!("{tail:?}: {d:?}"));
            assert_eq!(read.records.len(), 6, "{tail:?}");
            assert_eq!(read.valid_len, good.len() as u64, "{tail:?}");
            if next.as_bytes().starts_with(&tail) {
                continue; // completed by a line end, it would be a good line
            }
            // The same bytes followed by a good line are damage, reported where they start.
            let bytes = [good.as_bytes(), &tail, b"\n", next.as_bytes()].concat();
            let damage = replay(&bytes).unwrap_err();
            assert_eq!((damage.line, damage.offset), (7, good.len() as u64), "{tail:?}");
        }
        // A whole, printable last line that fails its check (one character changed) or has none
        // was written complete, then damaged: it is not cut.
        for last in [changed, b"ready 3\n".to_vec()] {
            let bytes = [good.as_bytes(), &last].concat();
            let damage = replay(&bytes).unwrap_err();
            assert_eq!((damage.line, damage.offset), (7, good.len() as u64), "{last:?}");
        }
    }

    #[test]
    fn damage_names_its_line_offset_and_reason() {
        let good = text(&sample());
        let offset = good.match_indices('\n').nth(2).map(|(i, _)| i + 1).unwrap();
        // One character changed on line 4: its check fails.
        let mut bytes = good.clone().into_bytes();
        bytes[offset + 8] = b'9';
        let damage = replay(&bytes).unwrap_err();
        assert_eq!((damage.line, damage.offset), (4, offset as u64));
        assert!(damage.reason.contains("does not match"), "{}", damage.reason);
        // Line ends saved as CRLF: the first line is already not a record.
        let crlf = good.replace('\n', "\r\n");
        let damage = replay(crlf.as_bytes()).unwrap_err();
        assert_eq!((damage.line, damage.offset), (1, 0));
        // A legacy line inside a checked journal.
        let mixed =
            format!("{good}ready 3\n{next}", next = text(&[Record::Ready { agency: agency(4) }]));
        assert!(replay(mixed.as_bytes()).unwrap_err().reason.contains("no check field"));
        // Nothing readable at all is not damage: the caller decides what an empty journal means.
        for empty in [&b""[..], &[0; 100], b"journal 2 #0000"] {
            let read = replay(empty).unwrap();
            assert_eq!((read.records.len(), read.format, read.valid_len), (0, None, 0));
        }
    }

    #[test]
    fn legacy_journals_are_read_when_every_line_is_legacy() {
        let legacy = "base 90\nbatch 1 1 3 120\nbatch 1 2 5 200 42\nready 1\ndraw 8 200\nbatch 1 3";
        let read = replay(legacy.as_bytes()).unwrap();
        assert_eq!(read.format, Some(Format::Legacy));
        assert_eq!(read.records.len(), 5);
        assert_eq!(read.records[0], Record::Base { end: 90, agencies: vec![] });
        assert_eq!(read.valid_len, legacy.len() as u64 - 9, "the torn tail is left out");
        let ledger = Ledger::replay(&read.records).unwrap();
        assert_eq!((ledger.committed, ledger.bets, ledger.draw), (200, 8, Some((8, 200))));
        let checked_after = format!("ready 1\n{}", text(&[Record::Ready { agency: agency(2) }]));
        let damage = replay(format!("{checked_after}ready 3\n").as_bytes()).unwrap_err();
        assert_eq!(damage.line, 2);
        // A garbled legacy line followed by more lines is damage too.
        assert_eq!(replay(b"batch 1 1 3 90 -\r\nready 1\r\n").unwrap_err().line, 1);
    }

    #[test]
    fn adopted_counts_and_the_header_feed_the_ledger() {
        let ledger = Ledger::replay(&sample()).unwrap();
        assert_eq!(
            ledger.progress(agency(1)),
            Progress { last_seq: 0, stored_bets: 4, ready: false }
        );
        assert_eq!(ledger.progress(agency(3)).stored_bets, 1);
        assert_eq!(
            ledger.progress(agency(2)),
            Progress { last_seq: 2, stored_bets: 151, ready: true }
        );
        assert_eq!(ledger.bets, 156);
        assert!(ledger.winners_unknown, "adopted rows: the draw reads the file");
        let late_header = [Record::Ready { agency: agency(1) }, Record::Header { version: 2 }];
        assert!(Ledger::replay(&late_header).unwrap_err().contains("line 2"));
        assert!(Ledger::replay(&[Record::Header { version: 3 }]).is_err());
        let late_base = [
            Record::Batch { agency: agency(1), seq: 1, bets: 1, end: 9, winners: None },
            Record::Base { end: 20, agencies: vec![] },
        ];
        assert!(Ledger::replay(&late_base).is_err());
    }

    #[test]
    fn the_ledger_follows_the_records_and_rejects_contradictions() {
        let records = [
            Record::Batch {
                agency: agency(1),
                seq: 1,
                bets: 3,
                end: 90,
                winners: Some(docs(&["5"])),
            },
            Record::Batch { agency: agency(2), seq: 1, bets: 2, end: 150, winners: Some(vec![]) },
            Record::Batch {
                agency: agency(1),
                seq: 2,
                bets: 4,
                end: 270,
                winners: Some(docs(&["6"])),
            },
            Record::Ready { agency: agency(1) },
        ];
        let ledger = Ledger::replay(&records).unwrap();
        assert_eq!(ledger.committed, 270);
        assert_eq!(
            ledger.progress(agency(1)),
            Progress { last_seq: 2, stored_bets: 7, ready: true }
        );
        assert_eq!(ledger.progress(agency(3)), Progress::default());
        assert_eq!((ledger.batches, ledger.bets), (3, 9));
        assert_eq!(ledger.winners[&agency(1)], docs(&["5", "6"]));
        assert!(!ledger.winners_unknown);
        let old = replay(b"batch 1 1 3 90\n").unwrap();
        assert_eq!(old.records.len(), 1, "lines from before the winners index still parse");
        assert!(Ledger::replay(&old.records).unwrap().winners_unknown);

        let gap = [Record::Batch { agency: agency(1), seq: 2, bets: 3, end: 90, winners: None }];
        assert!(Ledger::replay(&gap).unwrap_err().contains("follows batch 1"));
        let backwards = [
            Record::Batch {
                agency: agency(1),
                seq: 1,
                bets: 3,
                end: 90,
                winners: Some(docs(&["5"])),
            },
            Record::Batch { agency: agency(1), seq: 2, bets: 3, end: 80, winners: None },
        ];
        assert!(Ledger::replay(&backwards).is_err());
    }
}
