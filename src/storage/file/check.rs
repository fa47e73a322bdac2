//! The bets file against a current-format journal: the last group kept or cut ([`settle`]), and
//! every group's rows against the check its journal line recorded ([`check_groups`]): the CRC-32
//! of bytes `start..end`, read once, group after group. A group that fails it was acknowledged and then
//! changed on disk (a crash never changes rows it did not write: recovery cuts the one group a
//! crash can leave, before this check runs), so its report names the bets file, the group's
//! line and bytes, and, as closely as the journal allows, the first damaged row: its byte, its
//! agency and batch, and why (not a bet, another agency's, a winner the journal did not record
//! or one it recorded and the row lost). The CRC covers a whole group, so damage that leaves
//! every row a valid bet of its agency with the recorded winners (a letter of a name) is named
//! by its group's bytes and batches only.

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::Path;

use super::disk::{check_row_end, rows_crc, rows_crc_with};
use super::journal::{self, Record};
use super::ledger::{LastGroup, Ledger};
use crate::domain::{AgencyId, Bet, Document, has_won};
use crate::storage::StorageError;
use crate::storage::rows::read_rows;

/// What to do when the journal cannot be trusted, but the bets file can.
pub(super) const ADOPT_HINT: &str = "restore the journal from a backup; or, if the bets file is complete and \
     its journal is lost, move the journal away: the central then adopts the bets file as it is, \
     and each agency resumes after its rows";

/// How much of the bets file one read takes.
const READ_BYTES: usize = 1 << 20;

/// A current-format journal, settled against its bets file.
pub(super) struct Settled {
    pub(super) ledger: Ledger,
    /// The journal's length to keep.
    pub(super) journal_len: u64,
    /// The last group, when it was never acknowledged and is cut.
    pub(super) cut_group: Option<LastGroup>,
    /// The groups kept, checked against their CRC.
    pub(super) checked: Checked,
}

pub(super) enum Settling {
    /// A refusal, complete.
    Refused(StorageError),
    /// Records that contradict each other.
    Contradiction(String),
}

/// Applies the current format's rules to the bets file's length (see the module's doc): keeps
/// the last group when its rows are whole, cuts it when they are short or fail their CRC and
/// nothing but its batches follows it, and refuses anything else.
pub(super) fn settle(
    bets: &File,
    path: &Path,
    bets_len: u64,
    replay: &journal::Replay,
    ledger: Ledger,
) -> Result<Settled, Settling> {
    let refused =
        |reason: String| Settling::Refused(StorageError::Corrupt { path: path.to_owned(), reason });
    let crc =
        |group: &LastGroup| rows_crc(bets, path, group.start, group.end).map_err(Settling::Refused);
    let mut settled = Settled {
        ledger,
        journal_len: replay.valid_len,
        cut_group: None,
        checked: Checked::default(),
    };
    let carries = replay.carries;
    match settled.ledger.last_group {
        // Format 4: the group's write is synced whole before its rows are written. Its batch
        // lines short (the write cut at a line end) and no rows past its start: never
        // acknowledged; with all its lines there, kept (its rows rewritten from the journal).
        Some(group) if !group.followed && carries => {
            if group.covered < group.end && bets_len <= group.start {
                settled.ledger = Ledger::replay(&replay.records[..group.index])
                    .map_err(Settling::Contradiction)?;
                settled.journal_len = replay.offsets[group.index];
                settled.cut_group = Some(group);
            } else if group.covered < group.end {
                return Err(refused(records_missing(&group)));
            }
        }
        Some(group) if !group.followed && (group.start..=group.end).contains(&bets_len) => {
            let whole = bets_len == group.end && crc(&group)? == group.crc;
            if !whole {
                // Its rows were never all written: never acknowledged. Cut it.
                settled.ledger = Ledger::replay(&replay.records[..group.index])
                    .map_err(Settling::Contradiction)?;
                settled.journal_len = replay.offsets[group.index];
                settled.cut_group = Some(group);
            } else if group.covered < group.end {
                return Err(refused(records_missing(&group)));
            }
        }
        _ => {}
    }
    let committed = settled.ledger.committed;
    let len = if carries { bets_len } else { settled.cut_group.map_or(bets_len, |g| g.start) };
    if len > committed {
        return Err(refused(format!(
            "it has {} bytes past byte {committed}, where the journal's records end; the journal \
             is written before the rows, so no crash leaves rows past it: the journal lacks \
             records of acknowledged bets. Nothing was changed. To start, {ADOPT_HINT}",
            len - committed
        )));
    }
    let kept = settled.cut_group.map_or(replay.records.len(), |g| g.index);
    let (records, rows) = (&replay.records[..kept], &replay.rows[..kept]);
    // The bytes the bets file must hold itself: those no group of the journal carries.
    let needed = if carries { uncarried_end(records) } else { committed };
    check_row_end(bets, path, len, needed).map_err(Settling::Refused)?;
    // Every group kept, acknowledged, must still hold the rows it recorded; a group the journal
    // carries is rewritten from it when its rows are short or do not match.
    settled.checked =
        check_groups(bets, path, records, rows, len, committed).map_err(Settling::Refused)?;
    Ok(settled)
}

/// The refusal of a last group whose rows are there but whose batch records are not.
fn records_missing(group: &LastGroup) -> String {
    format!(
        "the journal's last group (line {}) holds bytes {}..{}, which are whole, but its batch \
         records end at byte {}: the journal lacks records of acknowledged batches. Nothing was \
         changed. To start, {ADOPT_HINT}",
        group.index + 1,
        group.start,
        group.end,
        group.covered
    )
}

/// Where the bytes recorded by `records` that the journal does not carry end.
fn uncarried_end(records: &[Record]) -> u64 {
    records
        .iter()
        .filter_map(|r| match *r {
            Record::Base { end, .. } | Record::Group { end, carried: false, .. } => Some(end),
            _ => None,
        })
        .max()
        .unwrap_or(0)
}

/// What [`check_groups`] read.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(super) struct Checked {
    /// Groups whose rows matched their check.
    pub(super) groups: u64,
    /// Groups the journal carries whose rows the bets file lacks (short, or not matching their
    /// CRC: a crash lost what the bets file had not synced): rewritten from the journal.
    pub(super) rewrite: Vec<Rewrite>,
}

/// A group's rows to copy from the journal (bytes `at..at + end - start`) to the bets file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Rewrite {
    pub(super) start: u64,
    pub(super) end: u64,
    pub(super) at: u64,
}

impl Checked {
    /// Bytes of the bets file rewritten from the journal.
    pub(super) fn rewritten_bytes(&self) -> u64 {
        self.rewrite.iter().map(|r| r.end - r.start).sum()
    }
}

/// Checks the rows of every group of `records` that ends at or before `up_to` against its
/// recorded CRC-32, in a bets file of `len` bytes. A group whose rows the journal carries
/// (`rows[i]`: where they start in it) and the bets file lacks is not damage: it is listed to be
/// rewritten.
///
/// # Errors
/// `Corrupt` naming the first group whose rows do not match (see the module's doc), ending in
/// "Nothing was changed"; `Open` when the bets file cannot be read.
pub(super) fn check_groups(
    bets: &File,
    path: &Path,
    records: &[Record],
    rows: &[Option<u64>],
    len: u64,
    up_to: u64,
) -> Result<Checked, StorageError> {
    let mut buffer = vec![0u8; READ_BYTES];
    let mut checked = Checked::default();
    for (index, record) in records.iter().enumerate() {
        let Record::Group { start, end, crc, .. } = *record else { continue };
        if end > up_to {
            break;
        }
        let carried = rows.get(index).copied().flatten();
        if let Some(at) = carried
            && end > len
        {
            checked.rewrite.push(Rewrite { start, end, at });
            continue;
        }
        let found = rows_crc_with(bets, path, start, end, &mut buffer)?;
        if found != crc {
            if let Some(at) = carried {
                checked.rewrite.push(Rewrite { start, end, at });
                continue;
            }
            let batches = group_batches(records, index, start);
            let located = locate(bets, path, &batches)?;
            let reason = format!(
                "bytes {start}..{end}, the rows of the group recorded at line {} of its journal, \
                 do not match the check that line recorded (CRC-32 {crc:08x}; the rows give \
                 {found:08x}): they were acknowledged, then changed on disk. {located}. Nothing was changed: \
                 restore the bets file from a backup (its journal is consistent)",
                index + 1
            );
            return Err(StorageError::Corrupt { path: path.to_owned(), reason });
        }
        checked.groups += 1;
    }
    Ok(checked)
}

/// One batch of a group: its agency and sequence, its rows' bytes, how many, its winners.
struct BatchSpan<'a> {
    agency: AgencyId,
    seq: u64,
    start: u64,
    end: u64,
    bets: u64,
    winners: Option<&'a [Document]>,
}

/// The batch records following the group record at `index`.
fn group_batches(records: &[Record], index: usize, start: u64) -> Vec<BatchSpan<'_>> {
    let mut at = start;
    let mut batches = Vec::new();
    for record in records.iter().skip(index + 1) {
        let Record::Batch { agency, seq, bets, end, ref winners } = *record else { break };
        batches.push(BatchSpan { agency, seq, start: at, end, bets, winners: winners.as_deref() });
        at = end;
    }
    batches
}

/// Where in `batches` the first damaged row is, as a sentence.
fn locate(bets: &File, path: &Path, batches: &[BatchSpan<'_>]) -> Result<String, StorageError> {
    for batch in batches {
        let len = usize::try_from(batch.end - batch.start).unwrap_or(usize::MAX);
        let mut bytes = vec![0u8; len];
        bets.read_exact_at(&mut bytes, batch.start)
            .map_err(|source| StorageError::Open { path: path.to_owned(), source })?;
        if let Some((offset, why)) = first_damage(batch, &bytes) {
            return Ok(format!(
                "The first damaged row is at byte {}, in agency {}'s batch {} (bytes {}..{}): {why}",
                batch.start + offset,
                batch.agency,
                batch.seq,
                batch.start,
                batch.end
            ));
        }
    }
    let agencies: Vec<String> = batches.iter().map(|b| b.agency.to_string()).collect();
    Ok(format!(
        "Every row there still reads as a valid bet of its batch's agency (agencies {}), with the \
         winners the journal recorded: the damage is inside these bytes",
        agencies.join(", ")
    ))
}

/// The first row of `batch` (its `bytes`) that cannot be what was stored, and why.
fn first_damage(batch: &BatchSpan<'_>, bytes: &[u8]) -> Option<(u64, String)> {
    let rows = read_rows(bytes);
    let mut recorded = batch.winners.map(<[Document]>::iter);
    let mut next_winner = recorded.as_mut().and_then(Iterator::next);
    let mut lost: Option<(u64, &Bet)> = None;
    for (offset, row) in &rows {
        let bet = match row {
            Ok(bet) => bet,
            Err(reason) => return Some((*offset, format!("it is not a valid bet: {reason}"))),
        };
        if bet.agency != batch.agency {
            return Some((*offset, format!("it reads as a bet of agency {}", bet.agency)));
        }
        let Some(recorded) = recorded.as_mut() else { continue };
        if has_won(bet) {
            if next_winner != Some(&bet.document) {
                let why = format!(
                    "it reads as a winning bet (document {}, number {}), which the journal did \
                     not record",
                    bet.document.as_str(),
                    bet.number.get()
                );
                return Some((*offset, why));
            }
            next_winner = recorded.next();
        } else if lost.is_none() && next_winner == Some(&bet.document) {
            lost = Some((*offset, bet));
        }
    }
    if let Some(missing) = next_winner {
        let (offset, why) = match lost {
            Some((offset, bet)) => (offset, format!("number {}", bet.number.get())),
            None => (0, "no row with that document".to_owned()),
        };
        let why = format!(
            "the journal recorded document {} as a winner; the batch now has {why}",
            missing.as_str()
        );
        return Some((offset, why));
    }
    let found = rows.len() as u64;
    (found != batch.bets).then(|| {
        let why =
            format!("the batch holds {found} rows, where the journal recorded {}", batch.bets);
        (0, why)
    })
}
