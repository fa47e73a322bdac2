//! Start-up recovery: lock the bets file and its journal, replay the journal, and cut what a crash
//! left unacknowledged — and nothing else.
//!
//! The journal goes first (see [`journal`]) and carries the rows (format 4): a group commit's
//! journal write (its records and rows) is synced before its rows are written to the bets file,
//! which is synced only at close and before a compaction. So:
//!
//! - bets-file bytes past the last recorded `end` cannot come from a crash: the journal lacks
//!   records, and start-up is refused;
//! - a group whose journal line carries its rows, and whose rows in the bets file are short,
//!   zeros or fail its CRC (the bets file's unsynced tail, lost), is rewritten from the journal;
//! - a torn tail of the journal is cut only where [`journal::replay`] finds it inside the last
//!   write (a group's write torn: never acknowledged);
//! - in a format-3 journal (rows not carried, synced per group), the last group, when nothing but
//!   its own batch records follows it, was never acknowledged if its rows are short of its `end`
//!   or fail its CRC: both files are cut back to where it starts. The journal is then given a
//!   format-4 header.
//!
//! Journals whose rows went first (format 2 and legacy) are read with their rule, for the last
//! time: up to one group commit's rows ([`MAX_GROUP_BYTES`](super::MAX_GROUP_BYTES)) past the last recorded end are cut
//! as never acknowledged — a journal of theirs that lost its last records cannot be told from
//! that — and they are rewritten in the current format.
//!
//! Anything else that does not add up stops start-up with an error naming the file, the line or
//! byte, and what to do; nothing is changed then. Every check runs before the first change.

use std::fs::File;
use std::io::{self, Read};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use tracing::info;

use super::adopt::adopt;
use super::check::{ADOPT_HINT, Checked, Settling, settle};
use super::disk::{Files, install, len, lock, open, sync_dir};
use super::journal::{self, FORMAT_VERSION, Format, Record};
use super::ledger::{LastGroup, Ledger};
use super::legacy::{Converting, check_rows_first, convert};
use crate::domain::AgencyId;
use crate::storage::StorageError;
use crate::storage::error::write_error;

/// What `BetStore::open` found and repaired.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Recovery {
    /// Committed bytes of the bets file.
    pub bets_len: u64,
    /// Bytes of the bets file that were cut: the rows of a group commit that was never
    /// acknowledged (a crash mid-write), or an adopted file's torn last row.
    pub cut_bets_bytes: u64,
    /// Bytes of the journal that were cut: a torn tail, or the records of a group commit that was
    /// never acknowledged.
    pub cut_journal_bytes: u64,
    /// Bytes of the bets file rewritten from the journal's copy: the rows of groups the journal
    /// carries that the bets file lacked (its unsynced tail, lost in a crash).
    pub rewritten_bets_bytes: u64,
    /// The bets file had no journal: its rows, every one a valid bet, were adopted as they are,
    /// counted per agency.
    pub adopted: bool,
    /// The journal was of an older format (rows written first: format 2, or legacy lines without
    /// check fields); it was rewritten in the current one.
    pub journal_converted: bool,
    /// The journal was of format 3 (groups, rows not carried): its records were rewritten under
    /// a format-4 header.
    pub journal_upgraded: bool,
    /// Batches recorded in the journal.
    pub batches: u64,
    /// Agencies that had declared ReadyForLottery.
    pub ready: Vec<AgencyId>,
    /// Whether the draw had run.
    pub drawn: bool,
}

/// Opens both files, locks them, and brings the bets file back to its last committed batch.
pub(super) fn recover(
    path: &Path,
    journal_path: &Path,
    sync: bool,
) -> Result<(Files, Recovery), StorageError> {
    refuse_a_lone_journal(path, journal_path)?;
    let created = !path.exists();
    let bets = open(path, true)?;
    lock(&bets, path)?;
    if created && sync {
        // A new bets file's directory entry must be durable before any of its rows count.
        sync_dir(path)?;
    }
    let existing = match open(journal_path, false) {
        Ok(journal) => Some(journal),
        Err(StorageError::Open { source, .. }) if source.kind() == io::ErrorKind::NotFound => None,
        Err(e) => return Err(e),
    };
    if let Some(journal) = &existing {
        lock(journal, journal_path)?;
    }
    let plan = examine(&bets, path, existing, journal_path)?;
    apply(bets, path, journal_path, plan, sync)
}

/// A journal with bytes next to no bets file: refused (no empty bets file is created).
pub(super) fn refuse_a_lone_journal(path: &Path, journal_path: &Path) -> Result<(), StorageError> {
    let journal_has_bytes = std::fs::metadata(journal_path).is_ok_and(|m| m.len() > 0);
    if journal_has_bytes && !path.exists() {
        let reason = format!(
            "the bets file does not exist, but its journal {} does. Nothing was changed. \
             Restore the bets file from a backup; or move the journal away to start a new lottery",
            journal_path.display()
        );
        return Err(StorageError::Corrupt { path: path.into(), reason });
    }
    Ok(())
}

/// What recovery will do, once every check passed: nothing is changed until [`apply`].
pub(super) struct Plan {
    /// The journal to keep using, or the text of a new one to install.
    journal: Journal,
    /// What the journal says, once what is cut is cut.
    pub(super) ledger: Ledger,
    /// The length the bets file is cut to.
    bets_end: u64,
    pub(super) recovery: Recovery,
    /// The groups whose rows were checked against their CRC.
    pub(super) checked: Checked,
    /// The last group, when it was never acknowledged and is cut.
    cut_group: Option<LastGroup>,
    /// Rows to write into the bets file from the journal's copy: `(start, rows)`.
    pub(super) rewrite: Vec<(u64, Vec<u8>)>,
    /// The journal's records without the rows it carries, header first: what compaction writes.
    compact: String,
}

/// Reads the bets file and its journal (`None`: there is none) and runs every check recovery
/// makes, changing nothing: what a start would keep, cut or write, or why it would refuse.
/// `lottery-server export` and `verify` stop here.
///
/// # Errors
/// As [`BetStore::open_with`](super::BetStore::open_with).
pub(super) fn examine(
    bets: &File,
    path: &Path,
    existing: Option<File>,
    journal_path: &Path,
) -> Result<Plan, StorageError> {
    let bets_len = len(bets, path)?;
    let mut recovery = Recovery::default();
    let mut checked = Checked::default();
    let mut cut_group = None;
    let mut rewrite = Vec::new();
    let mut compact = None;
    let corrupt = |path: &Path, reason: String| StorageError::Corrupt { path: path.into(), reason };
    let contradiction = |e: String| {
        corrupt(journal_path, format!("{e}. Nothing was changed. To start, {ADOPT_HINT}"))
    };

    // The journal to keep using, or the text of a new one to install; what it says; and the
    // length the bets file is cut to.
    let (journal, ledger, bets_end) = match existing {
        None if bets_len == 0 => {
            let (text, ledger) = new_journal(None)?;
            (Journal::Install(text), ledger, 0)
        }
        None => {
            let adopted = adopt(bets, path, bets_len)?;
            recovery.adopted = true;
            let end = adopted.end;
            let base = Record::Base { end, agencies: adopted.agencies };
            let (text, ledger) = new_journal(Some(base))?;
            (Journal::Install(text), ledger, end)
        }
        Some(journal) => {
            let mut bytes = Vec::new();
            (&journal)
                .read_to_end(&mut bytes)
                .map_err(|source| StorageError::Open { path: journal_path.to_owned(), source })?;
            let replay = journal::replay(&bytes, bets_len).map_err(|d| {
                let reason = format!(
                    "damaged at line {} (byte {}): {}. A crash can only tear the journal's last \
                     write, and this is not it. Nothing was changed. To start, {ADOPT_HINT}",
                    d.line, d.offset, d.reason
                );
                corrupt(journal_path, reason)
            })?;
            let journal_len = bytes.len() as u64;
            match replay.format {
                None if bets_len > 0 => {
                    let reason = format!(
                        "the journal holds no readable record ({} bytes), but the bets file {} \
                         has {bets_len} bytes of bets. Nothing was changed. To start, {ADOPT_HINT}",
                        bytes.len(),
                        path.display()
                    );
                    return Err(corrupt(journal_path, reason));
                }
                // Nothing acknowledged yet (e.g. a crash while the journal was being created).
                None => {
                    recovery.cut_journal_bytes = journal_len;
                    let (text, ledger) = new_journal(None)?;
                    (Journal::Rewrite { file: journal, text }, ledger, 0)
                }
                Some(format) => {
                    if format == Format::Checked
                        && !matches!(replay.records.first(), Some(Record::Header { .. }))
                    {
                        let reason = format!(
                            "line 1 is not the journal's header (\"journal {FORMAT_VERSION}\"). \
                             Nothing was changed. To start, {ADOPT_HINT}"
                        );
                        return Err(corrupt(journal_path, reason));
                    }
                    let ledger = Ledger::replay(&replay.records).map_err(contradiction)?;
                    if replay.rows_first {
                        recovery.cut_journal_bytes = journal_len - replay.valid_len;
                        check_rows_first(bets, path, bets_len, ledger.committed)?;
                        let (text, ledger) = convert(&replay.records, bets, path)
                            .and_then(|text| {
                                let records = journal::replay(text.as_bytes(), ledger.committed)
                                    .map_err(|d| d.reason)?
                                    .records;
                                Ok((text, Ledger::replay(&records)?))
                            })
                            .map_err(|e| match e {
                                Converting::Read(e) => e,
                                Converting::Contradiction(e) => contradiction(e),
                            })?;
                        recovery.journal_converted = true;
                        drop(journal);
                        let end = ledger.committed;
                        (Journal::Install(text), ledger, end)
                    } else {
                        let settled =
                            settle(bets, path, bets_len, &replay, ledger).map_err(|e| match e {
                                Settling::Refused(e) => e,
                                Settling::Contradiction(e) => contradiction(e),
                            })?;
                        recovery.cut_journal_bytes = journal_len - settled.journal_len;
                        cut_group = settled.cut_group;
                        checked = settled.checked;
                        for r in &checked.rewrite {
                            let (at, len) = (r.at as usize, (r.end - r.start) as usize);
                            rewrite.push((r.start, bytes[at..at + len].to_vec()));
                        }
                        recovery.rewritten_bets_bytes = checked.rewritten_bytes();
                        let kept = cut_group.map_or(replay.records.len(), |g| g.index);
                        let text = compact_text(&replay.records[..kept]);
                        let end = settled.ledger.committed;
                        if replay.carries {
                            compact = Some(text);
                            (Journal::Keep(journal, settled.journal_len), settled.ledger, end)
                        } else {
                            // Format 3: the same records under a format-4 header.
                            recovery.journal_upgraded = true;
                            drop(journal);
                            let mut ledger = settled.ledger;
                            ledger.carries = true;
                            (Journal::Install(text), ledger, end)
                        }
                    }
                }
            }
        }
    };

    recovery.cut_bets_bytes = bets_len.saturating_sub(bets_end);
    recovery.bets_len = ledger.committed;
    recovery.batches = ledger.batches;
    recovery.drawn = ledger.draw.is_some();
    let mut ready: Vec<AgencyId> =
        ledger.agencies.iter().filter(|(_, p)| p.ready).map(|(a, _)| *a).collect();
    ready.sort();
    recovery.ready = ready;
    let compact = match (&journal, compact) {
        (Journal::Install(text) | Journal::Rewrite { text, .. }, _) => text.clone(),
        (Journal::Keep(..), Some(text)) => text,
        (Journal::Keep(..), None) => String::new(),
    };
    Ok(Plan { journal, ledger, bets_end, recovery, checked, cut_group, rewrite, compact })
}

/// Carries out `plan`: cuts what was never acknowledged, installs or rewrites the journal,
/// syncs, and hands over the open files.
fn apply(
    bets: File,
    path: &Path,
    journal_path: &Path,
    plan: Plan,
    sync: bool,
) -> Result<(Files, Recovery), StorageError> {
    let Plan { journal, ledger, bets_end, recovery, cut_group, rewrite, compact, .. } = plan;
    if let Some(group) = cut_group {
        info!(
            action = "recovery_cut",
            result = "success",
            line = group.index + 1,
            start = group.start,
            end = group.end,
            cut_bets_bytes = recovery.cut_bets_bytes,
            cut_journal_bytes = recovery.cut_journal_bytes,
            reason =
                "the last group commit's rows were never all written: it was never acknowledged",
        );
    }
    // Every check passed: from here on, only bytes that were never acknowledged are cut. The
    // bets file first, synced: a crash in between leaves a journal whose last group is short of
    // rows (cut again at the next start), never rows past the journal's end.
    if recovery.cut_bets_bytes > 0 {
        bets.set_len(bets_end).map_err(write_error(path))?;
        if sync {
            bets.sync_all().map_err(write_error(path))?;
        }
    }
    // Rows the journal carries that the bets file lost: written back, then synced below, before
    // anything is acknowledged again (and before a compaction can drop the journal's copy).
    for (start, rows) in &rewrite {
        bets.write_all_at(rows, *start).map_err(write_error(path))?;
    }
    if !rewrite.is_empty() {
        info!(
            action = "recovery_rewrite",
            result = "success",
            groups = rewrite.len(),
            rewritten_bets_bytes = recovery.rewritten_bets_bytes,
            reason = "the bets file lacked rows of groups its journal carries (its unsynced tail \
                      was lost): rewritten from the journal",
        );
    }
    let (journal, journal_len) = match journal {
        Journal::Keep(file, journal_len) => {
            if recovery.cut_journal_bytes > 0 {
                file.set_len(journal_len).map_err(write_error(journal_path))?;
            }
            (file, journal_len)
        }
        Journal::Rewrite { file, text } => {
            file.set_len(0).map_err(write_error(journal_path))?;
            file.write_all_at(text.as_bytes(), 0).map_err(write_error(journal_path))?;
            (file, text.len() as u64)
        }
        Journal::Install(text) => (install(journal_path, &text, sync)?, text.len() as u64),
    };
    if sync {
        bets.sync_all().map_err(write_error(path))?;
        journal.sync_all().map_err(write_error(journal_path))?;
    }
    let files = Files::new(bets, journal, ledger, journal_len, compact);
    Ok((files, recovery))
}

/// What becomes of the journal once every check passed.
enum Journal {
    /// Used as it is, cut to the given length (its torn tail, or an unacknowledged group).
    Keep(File, u64),
    /// Emptied and given `text` (it held no record and the bets file is empty).
    Rewrite { file: File, text: String },
    /// A new journal with `text` replaces the old one (or none), atomically.
    Install(String),
}

/// The text of a format-4 journal holding `records` without the rows they carry (a format-3
/// journal's records, or a format-4 one's, compacted).
pub(super) fn compact_text(records: &[Record]) -> String {
    let mut text = String::new();
    for record in records {
        let record = match *record {
            Record::Header { .. } => Record::Header { version: FORMAT_VERSION },
            Record::Group { start, end, crc, .. } => {
                Record::Group { start, end, crc, carried: false }
            }
            ref other => other.clone(),
        };
        record.write_to(&mut text);
    }
    text
}

/// A journal's text (its header, then `first`) and its ledger.
fn new_journal(first: Option<Record>) -> Result<(String, Ledger), StorageError> {
    let mut records = vec![Record::Header { version: FORMAT_VERSION }];
    records.extend(first);
    let mut text = String::new();
    records.iter().for_each(|r| r.write_to(&mut text));
    // Built here, in order: replaying it cannot fail; the error is kept for honesty's sake.
    let ledger = Ledger::replay(&records)
        .map_err(|reason| StorageError::Corrupt { path: PathBuf::new(), reason })?;
    Ok((text, ledger))
}

#[cfg(test)]
mod tests {
    use super::super::disk::rows_crc;
    use super::*;
    use crate::domain::Document;

    fn agency(n: u32) -> AgencyId {
        AgencyId::new(n).unwrap()
    }

    const ROWS: &[u8] = b"1,Ana,Paz,1,2000-01-01,7574\r\n2,Ana,Paz,2,2000-01-01,5\r\n";
    const MORE: &[u8] = b"1,Ana,Paz,3,2000-01-01,6\r\n";

    fn lines(records: &[Record]) -> String {
        let mut text = String::new();
        records.iter().for_each(|r| r.write_to(&mut text));
        text
    }

    fn batch(a: u32, seq: u64, end: usize) -> Record {
        Record::Batch { agency: agency(a), seq, bets: 1, end: end as u64, winners: Some(vec![]) }
    }

    /// Header, a group of ROWS (two batches), then `more`.
    fn journal(more: &[Record]) -> String {
        let group = Record::Group {
            start: 0,
            end: ROWS.len() as u64,
            crc: crc32fast::hash(ROWS),
            carried: false,
        };
        let first = [Record::Header { version: journal::FORMAT_GROUPS }, group, batch(1, 1, 29)];
        lines(&[&first[..], &[batch(2, 1, ROWS.len())], more].concat())
    }

    fn more_group(batches: &[Record]) -> Vec<Record> {
        let (start, end) = (ROWS.len() as u64, (ROWS.len() + MORE.len()) as u64);
        let group = Record::Group { start, end, crc: crc32fast::hash(MORE), carried: false };
        [&[group][..], batches].concat()
    }

    /// `journal` (format 3) with the header recovery gives it: format 4's, as long.
    fn upgraded(journal: &[u8]) -> Vec<u8> {
        let (three, four) =
            (lines(&[Record::Header { version: 3 }]), lines(&[Record::Header { version: 4 }]));
        match journal.strip_prefix(three.as_bytes()) {
            Some(rest) => [four.as_bytes(), rest].concat(),
            None => journal.to_vec(),
        }
    }

    /// Runs recovery on `bets` and `journal`; on a refusal, checks nothing was changed.
    fn recover_files(bets: &[u8], journal: &str) -> Result<Recovery, String> {
        recover_bytes(bets, Some(journal.as_bytes())).map(|recovered| recovered.recovery)
    }

    /// What recovery made of two files: its report, the ledger the store goes on from, and
    /// both files as it left them.
    struct Recovered {
        recovery: Recovery,
        ledger: Ledger,
        bets: Vec<u8>,
        journal: Vec<u8>,
    }

    /// Runs recovery on `bets` and `journal` (none when `None`); on a refusal, checks it is
    /// `Corrupt`, says that nothing was changed, and changed nothing.
    fn recover_bytes(bets: &[u8], journal: Option<&[u8]>) -> Result<Recovered, String> {
        let dir = tempfile::tempdir().unwrap();
        let (path, journal_path) =
            (dir.path().join("bets.csv"), dir.path().join("bets.csv.journal"));
        std::fs::write(&path, bets).unwrap();
        if let Some(journal) = journal {
            std::fs::write(&journal_path, journal).unwrap();
        }
        match recover(&path, &journal_path, false) {
            Ok((files, recovery)) => Ok(Recovered {
                recovery,
                ledger: files.ledger,
                bets: std::fs::read(&path).unwrap(),
                journal: std::fs::read(&journal_path).unwrap(),
            }),
            Err(e) => {
                assert!(matches!(e, StorageError::Corrupt { .. }), "{e:?}");
                assert_eq!(std::fs::read(&path).unwrap(), bets, "{e}");
                assert_eq!(std::fs::read(&journal_path).ok().as_deref(), journal, "{e}");
                let text = e.to_string();
                assert!(text.contains("Nothing was changed"), "{text}");
                Err(text)
            }
        }
    }

    /// A crash at every point of a group commit, and of the `ready` write after it, as a power
    /// loss can leave the files (a write cut short, or its unsynced bytes zeros or wrong):
    /// recovery starts with the group either wholly there (only once its rows were all written)
    /// or wholly gone, cutting from both files exactly the bytes it does not keep, and the store
    /// goes on from what the journal it kept says (so nothing of a cut group is left over: not
    /// its batches' progress, not its winners).
    #[test]
    fn every_crash_point_of_a_group_commit_recovers_to_before_or_after_it() {
        let end = ROWS.len() + MORE.len();
        let before = journal(&[]).into_bytes();
        let winner = Record::Batch {
            agency: agency(1),
            seq: 2,
            bets: 1,
            end: end as u64,
            winners: Some(vec![Document::parse("3").unwrap()]),
        };
        let after = journal(&more_group(&[winner])).into_bytes();
        let write = &after[before.len()..];
        let whole = [ROWS, MORE].concat();
        // `kept`: the files recovery must leave, the bets file then the journal.
        let check = |bets: &[u8], journal: &[u8], kept: (&[u8], &[u8]), what: &str| {
            let got = recover_bytes(bets, Some(journal)).unwrap_or_else(|e| panic!("{what}: {e}"));
            let (kept_bets, kept_journal) = kept;
            // A format-3 journal is kept with a format-4 header (of the same length).
            let kept_journal = &upgraded(kept_journal)[..];
            assert!(got.bets == kept_bets && got.journal == kept_journal, "{what}");
            let cut = (bets.len() - kept_bets.len(), journal.len() - kept_journal.len());
            let recovery = &got.recovery;
            assert_eq!(
                (recovery.cut_bets_bytes, recovery.cut_journal_bytes),
                (cut.0 as u64, cut.1 as u64),
                "{what}"
            );
            let records = journal::replay(kept_journal, kept_bets.len() as u64).unwrap().records;
            let expected = Ledger::replay(&records).unwrap();
            assert_eq!(got.ledger, expected, "{what}");
            assert_eq!(
                (recovery.batches, recovery.bets_len),
                (expected.batches, kept_bets.len() as u64),
                "{what}"
            );
        };
        let gone = (ROWS, &before[..]);
        let there = (&whole[..], &after[..]);
        // The journal's write cut short, or its tail never synced; no rows written yet.
        for cut in 0..=write.len() {
            let short = [&before[..], &write[..cut]].concat();
            check(ROWS, &short, gone, &format!("records cut at {cut}"));
            let zeros = [&before[..], &write[..cut], &vec![0; write.len() - cut]].concat();
            check(ROWS, &zeros, gone, &format!("records zeros from {cut}"));
            // Zeros in the middle of the write, its later bytes there.
            if cut + 8 < write.len() {
                let mut hole = after.clone();
                hole[before.len() + cut..before.len() + cut + 8].fill(0);
                check(ROWS, &hole, gone, &format!("a hole in the records at {cut}"));
            }
        }
        // The journal synced; the rows cut short, or not all synced (zeros, or one byte wrong).
        for n in 0..=MORE.len() {
            let kept = if n == MORE.len() { there } else { gone };
            check(&whole[..ROWS.len() + n], &after, kept, &format!("{n} bytes of rows"));
            let zeros = [ROWS, &MORE[..n], &vec![0; MORE.len() - n]].concat();
            check(&zeros, &after, kept, &format!("{n} bytes of rows, then zeros"));
            if n < MORE.len() {
                let mut wrong = whole.clone();
                wrong[ROWS.len() + n] ^= 0x21;
                check(&wrong, &after, gone, &format!("every byte of the rows, byte {n} wrong"));
            }
        }
        // Then a ready record, cut short or never synced: the group stays.
        let ready = lines(&[Record::Ready { agency: agency(1) }]).into_bytes();
        for cut in 0..=ready.len() {
            let short = [&after[..], &ready[..cut]].concat();
            let kept = if cut == ready.len() { (&whole[..], &short[..]) } else { there };
            check(&whole, &short, kept, &format!("ready cut at {cut}"));
            let zeros = [&after[..], &ready[..cut], &vec![0; ready.len() - cut]].concat();
            check(&whole, &zeros, kept, &format!("ready zeros from {cut}"));
        }
        // What the two outcomes are: agency 1 at its batch 1, without the group's winner; or at
        // its batch 2, with it.
        let ledger = |journal: &[u8], bets: usize| {
            Ledger::replay(&journal::replay(journal, bets as u64).unwrap().records).unwrap()
        };
        let (gone, there) = (ledger(&before, ROWS.len()), ledger(&after, end));
        assert_eq!((gone.batches, gone.progress(agency(1)).last_seq), (2, 1));
        assert_eq!((there.batches, there.progress(agency(1)).last_seq), (3, 2));
        assert!(!gone.winners.contains_key(&agency(1)));
        assert_eq!(there.winners[&agency(1)].len(), 1);
    }

    #[test]
    fn an_acknowledged_group_must_be_whole_and_match() {
        let end = ROWS.len() + MORE.len();
        let followed = journal(
            &[more_group(&[batch(1, 2, end)]), vec![Record::Ready { agency: agency(1) }]].concat(),
        );
        let whole = [ROWS, MORE].concat();
        assert_eq!(recover_files(&whole, &followed).unwrap().ready, [agency(1)]);
        let err = recover_files(&whole[..end - 1], &followed).unwrap_err();
        assert!(err.contains("acknowledged bets"), "{err}");
        let mut changed = whole.clone();
        changed[ROWS.len() + 3] = b'7';
        let err = recover_files(&changed, &followed).unwrap_err();
        let group = "bytes 55..81, the rows of the group recorded at line 5 of its journal, do not \
                     match the check";
        assert!(err.contains(group), "{err}");
        // An earlier group changed (not the last one): refused too, naming the row.
        let mut earlier = whole.clone();
        earlier[29] = b'1';
        let winner = Some(vec![crate::domain::Document::parse("1").unwrap()]);
        let first = Record::Batch { agency: agency(1), seq: 1, bets: 1, end: 29, winners: winner };
        let followed = followed.replacen(&lines(&[batch(1, 1, 29)]), &lines(&[first]), 1);
        assert_eq!(recover_files(&whole, &followed).unwrap().ready, [agency(1)]);
        let err = recover_files(&earlier, &followed).unwrap_err();
        assert!(err.contains("bytes 0..55, the rows of the group recorded at line 2"), "{err}");
        let row = "byte 29, in agency 2's batch 1 (bytes 29..55): it reads as a bet of agency 1";
        assert!(err.contains(row), "{err}");
        // An earlier group, short: refused.
        let err =
            recover_files(&ROWS[..ROWS.len() - 1], &journal(&more_group(&[batch(1, 2, end)])))
                .unwrap_err();
        assert!(err.contains("acknowledged bets"), "{err}");
        // The last group's rows whole, its batch records missing: the rows were written after
        // the records were synced whole, so the journal lost records.
        let err = recover_files(&whole, &journal(&more_group(&[]))).unwrap_err();
        assert!(err.contains("its batch records end at byte 55"), "{err}");
    }

    #[test]
    fn bytes_past_the_last_end_are_refused_in_this_format_and_cut_in_older_ones() {
        let whole = [ROWS, MORE].concat();
        let err = recover_files(&whole, &journal(&[])).unwrap_err();
        assert!(
            err.contains("it has 26 bytes past byte 55") && err.contains("lacks records"),
            "{err}"
        );
        let err = recover_files(&[ROWS, b"1"].concat(), &journal(&[])).unwrap_err();
        assert!(err.contains("it has 1 bytes past byte 55"), "{err}");
        // Adopted bytes recorded to end mid-row: the journal is another bets file's.
        let base = lines(&[
            Record::Header { version: FORMAT_VERSION },
            Record::Base { end: ROWS.len() as u64 - 1, agencies: vec![(agency(1), 1)] },
        ]);
        let err = recover_files(ROWS, &base).unwrap_err();
        assert!(err.contains("it has 1 bytes past byte 54"), "{err}");
        let err = recover_files(&ROWS[..ROWS.len() - 1], &base).unwrap_err();
        assert!(err.contains("does not end a row"), "{err}");
        // Format 2: written rows first; one group's rows past its end were never acknowledged.
        let two = lines(&[
            Record::Header { version: journal::FORMAT_ROWS_FIRST },
            batch(1, 1, 29),
            batch(2, 1, ROWS.len()),
        ]);
        let recovery = recover_files(&whole, &two).unwrap();
        assert!(recovery.journal_converted);
        assert_eq!((recovery.cut_bets_bytes, recovery.batches), (MORE.len() as u64, 2));
    }

    #[test]
    fn converted_journals_get_a_group_per_batch_with_its_rows_crc() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("bets.csv");
        std::fs::write(&path, [&b"1,Ana,Paz,9,2000-01-01,1\r\n"[..], ROWS].concat()).unwrap();
        let file = File::open(&path).unwrap();
        let records = [
            Record::Base { end: 26, agencies: vec![] },
            Record::Batch { agency: agency(1), seq: 1, bets: 1, end: 55, winners: None },
            Record::Ready { agency: agency(1) },
        ];
        let Ok(text) = convert(&records, &file, &path) else { panic!("converted") };
        let read = journal::replay(text.as_bytes(), 55).unwrap();
        let group =
            Record::Group { start: 26, end: 55, crc: crc32fast::hash(&ROWS[..29]), carried: false };
        let expected = [
            Record::Header { version: FORMAT_VERSION },
            records[0].clone(),
            group,
            records[1].clone(),
            records[2].clone(),
        ];
        assert_eq!(read.records, expected);
        assert!(Ledger::replay(&read.records).unwrap().winners_unknown);
        assert_eq!(
            rows_crc(&file, &path, 0, 81).unwrap(),
            crc32fast::hash(&std::fs::read(&path).unwrap())
        );
    }

    /// A bets file without a journal is adopted up to its last line end: a last row without its
    /// `\r\n` is a torn write, never acknowledged (even when what is left of it reads as a bet),
    /// so it is cut and not counted. The end is found reading backwards in 64 KiB chunks: the
    /// long file's is past the first.
    #[test]
    fn adoption_cuts_a_last_row_without_its_line_end() {
        let empty = recover_bytes(b"", None).unwrap().recovery;
        assert_eq!((empty.adopted, empty.cut_bets_bytes), (false, 0));
        let long: Vec<u8> = ROWS.iter().copied().cycle().take(200_000).collect();
        let long_end = long.iter().rposition(|b| *b == b'\n').unwrap() + 1;
        for (what, bytes, end) in [
            ("no line end at all", b"1,Ana".to_vec(), 0),
            ("whole rows", ROWS.to_vec(), ROWS.len()),
            ("a torn row", [ROWS, &MORE[..20]].concat(), ROWS.len()),
            (
                "a torn row that reads as a bet",
                [ROWS, &MORE[..MORE.len() - 2]].concat(),
                ROWS.len(),
            ),
            ("a long file, a torn row", [&long[..], b"1,Ana"].concat(), long_end),
        ] {
            let got = recover_bytes(&bytes, None).unwrap_or_else(|e| panic!("{what}: {e}"));
            assert!(got.recovery.adopted, "{what}");
            assert_eq!(got.recovery.cut_bets_bytes, (bytes.len() - end) as u64, "{what}");
            assert_eq!(
                (got.bets.as_slice(), got.recovery.bets_len),
                (&bytes[..end], end as u64),
                "{what}"
            );
            let rows = |agency: &[u8]| {
                bytes[..end].split(|b| *b == b'\n').filter(|row| row.starts_with(agency)).count()
                    as u64
            };
            for (id, prefix) in [(1, b"1,"), (2, b"2,")] {
                assert_eq!(
                    got.ledger.progress(agency(id)).stored_bets,
                    rows(prefix),
                    "{what}: agency {id}"
                );
            }
        }
    }
}
