//! The journal: an append-only file beside the bets file (`<BETS_FILE>.journal`) that records
//! what the bets file's bytes mean. One record per line, each ending in a check field
//! ` #xxxxxxxx`, the CRC-32 (IEEE) of the text before it, in lowercase hex:
//!
//! ```text
//! journal 4                           the first line: the journal's format
//! base <end> <counts>                 bytes 0..end were adopted from a bets file with no journal;
//!                                     `counts` is `agency:rows,…` (or `-`)
//! group <start> <end> <rows_crc> rows a group commit: its rows are bytes start..end of the bets
//!                                     file, `rows_crc` their CRC-32; ` rows`: the rows follow
//!                                     the line (end - start bytes), then its `batch` lines;
//!                                     without it (compacted, or format 3) only its batch lines
//! batch <agency> <seq> <bets> <end> <winners>
//!                                     the agency's batch seq (bets rows) ends at byte `end`;
//!                                     `winners` are its winning documents, comma-separated, `-`
//!                                     (none) or `?` (not known: converted from an old journal)
//! ready <agency>                      the agency declared ReadyForLottery
//! draw <bets> <end>                   the draw ran over `bets` rows, bytes 0..end
//! ```
//!
//! The journal goes first, and carries the rows: a group commit writes its group line, rows and
//! batch lines in one write and syncs the journal, *then* writes the rows to the bets file (not
//! synced) and acknowledges (`wal.rs`). So the bets file never holds a byte past the last
//! recorded `end`; only the last group's journal write can be torn; and rows the bets file lost
//! are in the journal. [`replay`] accepts as a torn tail only what lies inside the journal's last
//! write (see there) and reports any other damage, naming the line and its byte offset.
//!
//! Older journals are read too: format 3 (groups that carry no rows, the bets file synced per
//! group: the last group's rows may be short), format 2 (`journal 2`, check fields but no `group`
//! lines, rows written before their records) and legacy ones (no header, no check fields). In
//! formats 2 and legacy the rows were written first, so recovery keeps their rule (see
//! `recovery`).

use super::record::is_lower_hex;
pub(super) use super::record::{FORMAT_GROUPS, FORMAT_ROWS_FIRST, FORMAT_VERSION, Record};

/// Which kind of lines a journal has.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Format {
    /// Every line has its check field (formats 2 and 3).
    Checked,
    /// No line has one: written before the check field existed.
    Legacy,
}

/// The records of a journal, without its torn tail.
#[derive(Debug)]
pub(super) struct Replay {
    pub(super) records: Vec<Record>,
    /// Where each record's line starts.
    pub(super) offsets: Vec<u64>,
    /// For each record, where the rows it carries start in the journal (a format-4 group's).
    pub(super) rows: Vec<Option<u64>>,
    /// `None` when no line could be read at all.
    pub(super) format: Option<Format>,
    /// Whether the journal's rows went first (legacy or format 2), so its tail is read with
    /// their rule: only the last line can be torn.
    pub(super) rows_first: bool,
    /// Whether its groups carry their rows (format 4): the bets file is not synced per group,
    /// so it may lack the rows of groups the journal carries (recovery rewrites them from it).
    pub(super) carries: bool,
    /// Bytes of the journal that hold `records`; anything after is a torn tail.
    pub(super) valid_len: u64,
}

/// Damage that is not a torn tail.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Damage {
    /// 1-based.
    pub(super) line: u64,
    /// Where the line starts.
    pub(super) offset: u64,
    pub(super) reason: String,
}

/// One line of a journal, read as far as it can be.
struct Line {
    offset: u64,
    read: Result<Record, String>,
    /// Not whole printable text ending in `\n`: what a write cut short leaves.
    torn: bool,
    /// Holds zero bytes: what a power loss leaves where a write's data never reached the disk.
    zeros: bool,
    /// A carried group's line: where its rows start in the journal.
    rows: Option<u64>,
}

/// Reads a journal next to a bets file of `bets_len` bytes, and tells its torn tail (left out
/// of `valid_len`) from damage. In a journal of this format, damage (a line that cannot be
/// read, or fails its check) is a torn tail only when it lies inside the journal's last write:
///
/// - a group write: it comes after the last readable `group` line, only `batch` lines or
///   unreadable lines follow that group line, and the bets file ends exactly at the group's
///   `start` (its rows were never written, so it was never acknowledged). The journal is cut
///   back to that group's line. Zeros in the middle of the write with whole lines after them
///   are such a tear (a power loss can persist a write's later pages and not its earlier ones).
///   So are zeros over the group line itself: a line holding zero bytes where a write starts,
///   after whole records, followed only by `batch` lines or unreadable ones, the bets file
///   ending exactly where the records before them end. The journal is cut where they start.
/// - a single-line write (`ready`, `draw`): the journal's last line, torn as [`torn`] defines
///   (no `\n`, or bytes that are not text), where a group's batch lines are not expected (the
///   last group has all of them). That line is cut.
///
/// Journals whose rows went first (format 2, legacy) keep their rule: only the last line may be
/// torn.
///
/// # Errors
/// `Damage` for the first bad line that is no torn tail.
pub(super) fn replay(bytes: &[u8], bets_len: u64) -> Result<Replay, Damage> {
    let mut lines = Vec::new();
    let mut format = None;
    let mut offset = 0u64;
    let mut carries = false;
    let mut rest = bytes;
    while !rest.is_empty() {
        let len = rest.iter().position(|b| *b == b'\n').map_or(rest.len(), |n| n + 1);
        let segment = &rest[..len];
        rest = &rest[len..];
        let read = match segment.strip_suffix(b"\n") {
            Some(text) => read_line(text, format).map(|(record, line_format)| {
                format = Some(line_format);
                record
            }),
            None => Err("the line has no line end".to_owned()),
        };
        if lines.is_empty() {
            carries = matches!(read, Ok(Record::Header { version }) if version == FORMAT_VERSION);
        }
        let torn = segment.strip_suffix(b"\n").is_none_or(torn);
        let zeros = segment.contains(&0);
        let rows = match read {
            Ok(Record::Group { start, end, crc, carried: true }) => Some((start, end, crc)),
            _ => None,
        };
        let line_offset = offset;
        offset += segment.len() as u64;
        let Some((start, end, crc)) = rows else {
            lines.push(Line { offset: line_offset, read, torn, zeros, rows: None });
            continue;
        };
        // The group's rows follow its line: `end - start` bytes, their CRC-32 on that line.
        let want = usize::try_from(end.saturating_sub(start)).unwrap_or(usize::MAX);
        let rows_at = offset;
        let (rows, whole) = if rest.len() < want {
            (rest, false)
        } else {
            (&rest[..want], crc32fast::hash(&rest[..want]) == crc)
        };
        rest = &rest[rows.len()..];
        offset += rows.len() as u64;
        lines.push(Line { offset: line_offset, read, torn, zeros, rows: Some(rows_at) });
        if !whole {
            let reason = format!(
                "the rows its group line (byte {line_offset}) carries, bytes {rows_at}..{}, are \
                 {}",
                rows_at + want as u64,
                if rows.len() < want { "cut short" } else { "not the ones its CRC recorded" }
            );
            let zeros = rows.contains(&0);
            lines.push(Line { offset: rows_at, read: Err(reason), torn: true, zeros, rows: None });
        }
    }
    let rows_first = match lines.first().map(|l| &l.read) {
        Some(Ok(Record::Header { version })) => *version == FORMAT_ROWS_FIRST,
        Some(Ok(_)) => format == Some(Format::Legacy),
        _ => false,
    };
    let bad = lines.iter().position(|l| l.read.is_err());
    let valid = match bad {
        None => lines.len(),
        Some(bad) => {
            let last = bad + 1 == lines.len();
            let group_write = (!rows_first)
                .then(|| lines.iter().rposition(|l| matches!(l.read, Ok(Record::Group { .. }))))
                .flatten()
                .filter(|&g| {
                    g < bad
                        && match lines[g].read {
                            // Format 4: the damage inside the group's own write (its batch lines
                            // not all read before it), no rows of it written.
                            Ok(Record::Group { start, .. }) if carries => {
                                bets_len <= start && inside_a_group(&lines[..bad])
                            }
                            Ok(Record::Group { start, .. }) => start == bets_len,
                            _ => false,
                        }
                        && lines[g + 1..]
                            .iter()
                            .all(|l| matches!(l.read, Ok(Record::Batch { .. }) | Err(_)))
                });
            // A group write whose own group line is among the torn bytes (zeros over it, its
            // batch lines after them): torn bytes where a new write starts, only batch lines or
            // unreadable ones after them, and no rows past the records before them.
            let group_line_torn = !rows_first
                && lines[bad].zeros
                && !inside_a_group(&lines[..bad])
                && (last_end(&lines[..bad]) == bets_len
                    || (carries && bets_len < last_end(&lines[..bad])))
                && lines[bad + 1..]
                    .iter()
                    .all(|l| matches!(l.read, Ok(Record::Batch { .. }) | Err(_)));
            match group_write {
                Some(group) => group,
                None if group_line_torn => bad,
                None if last && lines[bad].torn && !inside_a_group(&lines[..bad]) => bad,
                None => {
                    let line = &lines[bad];
                    let reason = line.read.as_ref().err().cloned().unwrap_or_default();
                    return Err(Damage { line: bad as u64 + 1, offset: line.offset, reason });
                }
            }
        }
    };
    let valid_len = lines.get(valid).map_or(offset, |l| l.offset);
    let offsets = lines[..valid].iter().map(|l| l.offset).collect();
    let rows = lines[..valid].iter().filter(|l| l.read.is_ok()).map(|l| l.rows).collect();
    let records = lines.into_iter().take(valid).filter_map(|l| l.read.ok()).collect::<Vec<_>>();
    let format = if records.is_empty() { None } else { format };
    Ok(Replay { records, offsets, rows, format, rows_first, carries, valid_len })
}

/// Where the bytes the readable records of `lines` describe end.
fn last_end(lines: &[Line]) -> u64 {
    lines
        .iter()
        .rev()
        .find_map(|l| match l.read {
            Ok(Record::Base { end, .. } | Record::Batch { end, .. }) => Some(end),
            _ => None,
        })
        .unwrap_or(0)
}

/// Whether `lines` end inside a group write: after a `group` line and some of its batch lines,
/// not all (so a torn line after them would be one of its batch lines, not a single-line write).
fn inside_a_group(lines: &[Line]) -> bool {
    let Some(g) = lines.iter().rposition(|l| matches!(l.read, Ok(Record::Group { .. }))) else {
        return false;
    };
    let Ok(Record::Group { start, end, .. }) = lines[g].read else { return false };
    let mut covered = start;
    for line in &lines[g + 1..] {
        match line.read {
            Ok(Record::Batch { end: batch_end, .. }) => covered = batch_end,
            _ => return false,
        }
    }
    covered < end
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
        .filter(|(_, hex)| is_lower_hex(hex));
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
                .ok_or_else(|| format!("{} is not a journal record", quoted(body)))?;
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

/// Whether a line that cannot be read looks like a write cut short by a crash: bytes that are
/// not text (zeros, where the file grew but its data never reached the disk). A whole line of
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

#[cfg(test)]
mod tests {
    use super::super::ledger::{LastGroup, Ledger};
    use super::*;
    use crate::domain::{AgencyId, Document};
    use crate::storage::AgencyProgress;

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

    fn batch(a: u32, seq: u64, bets: u64, end: u64) -> Record {
        Record::Batch { agency: agency(a), seq, bets, end, winners: Some(vec![]) }
    }

    fn group(start: u64, end: u64) -> Record {
        Record::Group { start, end, crc: 0x0123_abcd, carried: false }
    }

    /// A journal of this format: adopted rows, one group of two batches, ready, draw.
    fn sample() -> Vec<Record> {
        vec![
            Record::Header { version: FORMAT_GROUPS },
            Record::Base { end: 10, agencies: vec![(agency(3), 1), (agency(1), 4)] },
            group(10, 7050),
            Record::Batch {
                agency: agency(2),
                seq: 1,
                bets: 150,
                end: 7000,
                winners: Some(docs(&["7", "0012"])),
            },
            batch(2, 2, 1, 7050),
            Record::Ready { agency: agency(2) },
            Record::Draw { bets: 156, end: 7050 },
        ]
    }

    /// Where line `n` (1-based) of `text` starts.
    fn line_start(text: &str, n: usize) -> usize {
        text.split_inclusive('\n').take(n - 1).map(str::len).sum()
    }

    #[test]
    fn records_round_trip_with_their_check_field() {
        let mut records = sample();
        records.push(Record::Batch { agency: agency(4), seq: 1, bets: 2, end: 9, winners: None });
        let text = text(&records);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines[0], format!("journal 3 #{:08x}", crc32fast::hash(b"journal 3")));
        assert!(lines[1].starts_with("base 10 3:1,1:4 #"), "{}", lines[1]);
        assert!(lines[2].starts_with("group 10 7050 0123abcd #"), "{}", lines[2]);
        assert!(lines[3].starts_with("batch 2 1 150 7000 7,0012 #"), "{}", lines[3]);
        assert!(lines[4].starts_with("batch 2 2 1 7050 - #"), "{}", lines[4]);
        assert!(lines[7].starts_with("batch 4 1 2 9 ? #"), "unknown winners: {}", lines[7]);
        assert!(lines.iter().all(|l| l.len() > 10 && l.as_bytes()[l.len() - 10] == b' '));
        let read = replay(text.as_bytes(), 0).unwrap();
        assert_eq!(read.records, records);
        assert_eq!(read.format, Some(Format::Checked));
        assert!(!read.rows_first);
        assert_eq!(read.valid_len, text.len() as u64);
        assert_eq!(read.offsets[2], line_start(&text, 3) as u64);
        // A group's CRC is 8 lowercase hex digits.
        for bad in ["group 1 2 123abcd", "group 1 2 0123ABCD", "group 1 2"] {
            assert!(Record::parse(bad, false).is_none(), "{bad}");
        }
    }

    #[test]
    fn a_torn_single_line_write_is_only_the_last_line() {
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
            // Whatever the bets file's length: a single-line write has no rows.
            let read = replay(&bytes, 7050).unwrap_or_else(|d| panic!("{tail:?}: {d:?}"));
            assert_eq!(read.records.len(), 7, "{tail:?}");
            assert_eq!(read.valid_len, good.len() as u64, "{tail:?}");
            if next.as_bytes().starts_with(&tail) {
                continue; // completed by a line end, it would be a good line
            }
            // The same bytes followed by a good line are damage, reported where they start.
            let bytes = [good.as_bytes(), &tail, b"\n", next.as_bytes()].concat();
            let damage = replay(&bytes, 7050).unwrap_err();
            assert_eq!((damage.line, damage.offset), (8, good.len() as u64), "{tail:?}");
        }
        // A whole, printable last line that fails its check (one character changed) or has none
        // was written complete, then damaged: it is not cut.
        for last in [changed, b"ready 3\n".to_vec()] {
            let bytes = [good.as_bytes(), &last].concat();
            let damage = replay(&bytes, 7050).unwrap_err();
            assert_eq!((damage.line, damage.offset), (8, good.len() as u64), "{last:?}");
        }
    }

    #[test]
    fn a_torn_group_write_is_cut_back_to_its_group_line_only_when_its_rows_were_never_written() {
        let good = text(&sample()[..5]);
        let write = text(&[group(7050, 7300), batch(1, 1, 2, 7100), batch(3, 1, 5, 7300)]);
        let group_line = good.len() as u64;
        let second = group_line as usize + line_start(&write, 2);
        let third = group_line as usize + line_start(&write, 3);
        let whole = [good.as_bytes(), write.as_bytes()].concat();
        let mut zeros_inside = whole.clone();
        zeros_inside[second + 3..third + 4].fill(0); // across a line end, whole line after
        let mut one_changed = whole.clone();
        one_changed[second + 6] = b'9';
        for (what, bytes) in [
            ("zeros in the middle, a whole line after", zeros_inside),
            ("the last line torn", whole[..whole.len() - 4].to_vec()),
            ("a batch line changed, a whole line after", one_changed),
        ] {
            // The bets file ends at the group's start: its rows were never written.
            let read = replay(&bytes, 7050).unwrap_or_else(|d| panic!("{what}: {d:?}"));
            assert_eq!(read.valid_len, group_line, "{what}");
            assert_eq!(read.records, sample()[..5], "{what}");
            // Anywhere else the group's rows were written after its records were synced: the
            // records were whole, so this is damage.
            for bets_len in [7000, 7100, 7300] {
                let damage = replay(&bytes, bets_len).unwrap_err();
                assert!(damage.line >= 7, "{what}, {bets_len}: {damage:?}");
            }
        }
        // Zeros over the group line itself, its batch lines after them: cut where they start,
        // when the bets file ends where the records before them end; a changed character there
        // (printable) or rows past that end make it damage.
        let mut group_zeroed = whole.clone();
        group_zeroed[group_line as usize + 4..second + 2].fill(0);
        let read = replay(&group_zeroed, 7050).unwrap();
        assert_eq!((read.records.len(), read.valid_len), (5, group_line));
        assert_eq!(replay(&group_zeroed, 7300).unwrap_err().line, 6);
        let mut group_changed = whole.clone();
        group_changed[group_line as usize + 7] = b'9';
        let read = replay(&group_changed, 7050).unwrap_err();
        assert_eq!((read.line, read.offset), (6, group_line));
        // Zeros past a whole group write: with its rows written, a torn single-line write;
        // without, part of the group's write (cut with it, as it was never acknowledged).
        let zeros_after = [&whole[..], &[0; 100]].concat();
        let read = replay(&zeros_after, 7300).unwrap();
        assert_eq!((read.records.len(), read.valid_len), (8, whole.len() as u64));
        let read = replay(&zeros_after, 7050).unwrap();
        assert_eq!((read.records.len(), read.valid_len), (5, group_line));
        // Damage before the last group line, or a ready line after the damage, is no tear.
        let mut early = whole.clone();
        early[line_start(&good, 4) + 3] = 0;
        let damage = replay(&early, 7050).unwrap_err();
        assert_eq!((damage.line, damage.offset), (4, line_start(&good, 4) as u64));
        let mut then_ready = whole.clone();
        then_ready[second + 3] = 0;
        let then_ready =
            [&then_ready[..], text(&[Record::Ready { agency: agency(1) }]).as_bytes()].concat();
        assert_eq!(replay(&then_ready, 7050).unwrap_err().line, 7);
    }

    #[test]
    fn damage_names_its_line_offset_and_reason() {
        let good = text(&sample());
        let offset = line_start(&good, 4);
        // One character changed on line 4: its check fails.
        let mut bytes = good.clone().into_bytes();
        bytes[offset + 8] = b'9';
        let damage = replay(&bytes, 7050).unwrap_err();
        assert_eq!((damage.line, damage.offset), (4, offset as u64));
        assert!(damage.reason.contains("does not match"), "{}", damage.reason);
        // Line ends saved as CRLF: the first line is already not a record.
        let crlf = good.replace('\n', "\r\n");
        let damage = replay(crlf.as_bytes(), 7050).unwrap_err();
        assert_eq!((damage.line, damage.offset), (1, 0));
        // A legacy line inside a checked journal.
        let mixed =
            format!("{good}ready 3\n{next}", next = text(&[Record::Ready { agency: agency(4) }]));
        assert!(replay(mixed.as_bytes(), 7050).unwrap_err().reason.contains("no check field"));
        // Nothing readable at all is not damage: the caller decides what an empty journal means.
        for empty in [&b""[..], &[0; 100], b"journal 3 #0000"] {
            let read = replay(empty, 0).unwrap();
            assert_eq!((read.records.len(), read.format, read.valid_len), (0, None, 0));
        }
    }

    #[test]
    fn rows_first_journals_keep_the_last_line_rule() {
        let legacy = "base 90\nbatch 1 1 3 120\nbatch 1 2 5 200 42\nready 1\ndraw 8 200\nbatch 1 3";
        let read = replay(legacy.as_bytes(), 200).unwrap();
        assert_eq!(read.format, Some(Format::Legacy));
        assert!(read.rows_first);
        assert_eq!(read.records.len(), 5);
        assert_eq!(read.records[0], Record::Base { end: 90, agencies: vec![] });
        assert_eq!(read.valid_len, legacy.len() as u64 - 9, "the torn tail is left out");
        let ledger = Ledger::replay(&read.records).unwrap();
        assert_eq!((ledger.committed, ledger.bets, ledger.draw), (200, 8, Some((8, 200))));
        assert!(ledger.bets_unknown, "a legacy base does not count its rows");
        let checked_after = format!("ready 1\n{}", text(&[Record::Ready { agency: agency(2) }]));
        let damage = replay(format!("{checked_after}ready 3\n").as_bytes(), 0).unwrap_err();
        assert_eq!(damage.line, 2);
        // A garbled legacy line followed by more lines is damage too.
        assert_eq!(replay(b"batch 1 1 3 90 -\r\nready 1\r\n", 0).unwrap_err().line, 1);

        // Format 2: check fields, no groups; only its last line can be torn.
        let two = [
            Record::Header { version: FORMAT_ROWS_FIRST },
            batch(1, 1, 3, 90),
            batch(1, 2, 3, 180),
        ];
        let two = text(&two);
        let read = replay(format!("{two}batch 1 3").as_bytes(), 180).unwrap();
        assert!(read.rows_first);
        assert_eq!((read.records.len(), read.valid_len), (3, two.len() as u64));
        let ledger = Ledger::replay(&read.records).unwrap();
        assert!(!ledger.grouped);
        assert_eq!((ledger.committed, ledger.batches), (180, 2));
        let mut damaged = two.clone().into_bytes();
        damaged[line_start(&two, 2) + 2] = 0;
        assert_eq!(replay(&damaged, 90).unwrap_err().line, 2);
        let grouped = [Record::Header { version: FORMAT_ROWS_FIRST }, group(0, 90)];
        assert!(Ledger::replay(&grouped).unwrap_err().contains("line 2: a group record"));
    }

    #[test]
    fn adopted_counts_and_the_header_feed_the_ledger() {
        let ledger = Ledger::replay(&sample()).unwrap();
        assert_eq!(
            ledger.progress(agency(1)),
            AgencyProgress { last_seq: 0, stored_bets: 4, ready: false }
        );
        assert_eq!(ledger.progress(agency(3)).stored_bets, 1);
        assert_eq!(
            ledger.progress(agency(2)),
            AgencyProgress { last_seq: 2, stored_bets: 151, ready: true }
        );
        assert_eq!(ledger.bets, 156);
        assert!(ledger.winners_unknown, "adopted rows: the draw reads the file");
        assert!(ledger.grouped && !ledger.bets_unknown);
        let late_header = [Record::Ready { agency: agency(1) }, Record::Header { version: 3 }];
        assert!(Ledger::replay(&late_header).unwrap_err().contains("line 2"));
        assert!(Ledger::replay(&[Record::Header { version: 5 }]).is_err());
        let late_base = [
            Record::Header { version: 3 },
            group(0, 9),
            batch(1, 1, 1, 9),
            Record::Base { end: 20, agencies: vec![] },
        ];
        assert!(Ledger::replay(&late_base).is_err());
    }

    #[test]
    fn the_ledger_follows_groups_and_reports_the_last_one() {
        let header = Record::Header { version: FORMAT_VERSION };
        let records = [
            header.clone(),
            group(0, 150),
            Record::Batch {
                agency: agency(1),
                seq: 1,
                bets: 3,
                end: 90,
                winners: Some(docs(&["5"])),
            },
            batch(2, 1, 2, 150),
            Record::Ready { agency: agency(2) },
            group(150, 270),
            Record::Batch {
                agency: agency(1),
                seq: 2,
                bets: 4,
                end: 270,
                winners: Some(docs(&["6"])),
            },
        ];
        let ledger = Ledger::replay(&records).unwrap();
        assert_eq!(ledger.committed, 270);
        assert_eq!(
            ledger.progress(agency(2)),
            AgencyProgress { last_seq: 1, stored_bets: 2, ready: true }
        );
        assert_eq!((ledger.batches, ledger.bets), (3, 9));
        assert_eq!(ledger.winners[&agency(1)], docs(&["5", "6"]));
        assert!(!ledger.winners_unknown);
        let last = LastGroup {
            index: 5,
            start: 150,
            end: 270,
            crc: 0x0123_abcd,
            covered: 270,
            followed: false,
        };
        assert_eq!(ledger.last_group, Some(last));
        // Its batches short: reported, not refused (recovery decides); followed: acknowledged.
        let short = Ledger::replay(&records[..6]).unwrap();
        assert_eq!(short.last_group.map(|g| (g.covered, g.followed)), Some((150, false)));
        let ready = [&records[..], &[Record::Ready { agency: agency(1) }]].concat();
        assert!(Ledger::replay(&ready).unwrap().last_group.unwrap().followed);
    }

    #[test]
    fn the_ledger_refuses_records_the_store_never_writes() {
        let header = Record::Header { version: FORMAT_VERSION };
        let first = [header, group(0, 90), batch(1, 1, 3, 90)];
        let refused = |extra: &[Record], expected: &str| {
            let records = [&first[..], extra].concat();
            let err = Ledger::replay(&records).unwrap_err();
            assert!(err.contains(expected), "{expected} in {err}");
        };
        // The sequence, read forwards.
        refused(
            &[group(90, 120), batch(1, 1, 3, 120)],
            "line 5: agency 1: batch 1 where batch 2 was expected",
        );
        refused(&[group(90, 120), batch(1, 3, 3, 120)], "batch 3 where batch 2 was expected");
        // Bets without bytes of their own, or a batch without bets.
        refused(&[batch(2, 1, 1, 90)], "outside a group");
        refused(&[group(90, 120), batch(2, 1, 1, 90)], "in bytes 90..90");
        refused(&[group(90, 120), batch(2, 1, 0, 120)], "records 0 bets");
        // A batch after its agency's ready record.
        refused(
            &[Record::Ready { agency: agency(1) }, group(90, 120), batch(1, 2, 1, 120)],
            "after the agency's ready record",
        );
        // Groups: contiguous, not empty, whole before anything else, batches inside.
        refused(&[group(80, 120)], "where the bets recorded before it end at byte 90");
        refused(&[group(90, 90)], "holds no rows");
        refused(
            &[group(90, 120), batch(2, 1, 1, 100), Record::Ready { agency: agency(2) }],
            "records of its batches are missing",
        );
        refused(&[group(90, 120), group(90, 120)], "line 5: the group of line 4");
        refused(&[group(90, 120), batch(2, 1, 1, 130)], "past the end of its group");
        // A draw over other bets than recorded.
        refused(
            &[Record::Draw { bets: 5, end: 90 }],
            "a draw over 5 bets, where the records before it hold 3",
        );
        refused(&[Record::Draw { bets: 3, end: 80 }], "draw at byte 80");
        let draw = [&first[..], &[Record::Draw { bets: 3, end: 90 }]].concat();
        assert_eq!(Ledger::replay(&draw).unwrap().draw, Some((3, 90)));
    }
}
