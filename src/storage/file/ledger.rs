//! The ledger: what the journal's records add up to (each agency's progress, the committed end
//! of the bets file, the winners index, the draw), replayed at start-up and kept up to date as
//! records are written; and the rules a sequence of records must follow.

use std::collections::HashMap;

use super::journal::{FORMAT_GROUPS, FORMAT_ROWS_FIRST, FORMAT_VERSION, Record};
use crate::domain::{AgencyId, Document};
use crate::storage::AgencyProgress;

/// The journal's last `group` record, and how far its `batch` records reach.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct LastGroup {
    /// Its index among the records (its line is `index + 1`).
    pub(super) index: usize,
    pub(super) start: u64,
    pub(super) end: u64,
    pub(super) crc: u32,
    /// Where its batch records end so far (`end` once they are all there).
    pub(super) covered: u64,
    /// Whether a record other than its own batches follows it: then it was acknowledged.
    pub(super) followed: bool,
}

/// What the journal says, replayed.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub(super) struct Ledger {
    /// Bytes of the bets file that are committed.
    pub(super) committed: u64,
    pub(super) agencies: HashMap<AgencyId, AgencyProgress>,
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
    /// True when rows were adopted without counts (a legacy `base`): `bets` undercounts them.
    pub(super) bets_unknown: bool,
    /// Batch records come in groups (formats 3 and 4).
    pub(super) grouped: bool,
    /// Groups may carry their rows (format 4).
    pub(super) carries: bool,
    /// The last group record.
    pub(super) last_group: Option<LastGroup>,
    /// Records applied so far.
    seen_records: u64,
}

impl Ledger {
    /// Applies `records` in order.
    ///
    /// # Errors
    /// A description of the first record that contradicts the ones before it, naming its line.
    pub(super) fn replay(records: &[Record]) -> Result<Self, String> {
        let mut ledger = Self::default();
        for (i, record) in records.iter().enumerate() {
            ledger.apply(record).map_err(|e| format!("line {}: {e}", i + 1))?;
        }
        Ok(ledger)
    }

    pub(super) fn apply(&mut self, record: &Record) -> Result<(), String> {
        self.seen_records += 1;
        if !matches!(record, Record::Batch { .. }) {
            self.close_group()?;
        }
        match *record {
            Record::Header { version } => {
                if ![FORMAT_VERSION, FORMAT_GROUPS, FORMAT_ROWS_FIRST].contains(&version) {
                    return Err(format!(
                        "journal format {version}; this central reads formats \
                         {FORMAT_ROWS_FIRST} to {FORMAT_VERSION}"
                    ));
                }
                if self.seen_records > 1 {
                    return Err("a journal header after other records".into());
                }
                self.grouped = version >= FORMAT_GROUPS;
                self.carries = version == FORMAT_VERSION;
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
                self.bets_unknown |= agencies.is_empty() && end > 0;
                self.advance(end)?;
            }
            Record::Group { start, end, crc, carried } => {
                if !self.grouped {
                    return Err(format!(
                        "a group record in a journal of format {FORMAT_ROWS_FIRST} or older"
                    ));
                }
                if carried && !self.carries {
                    return Err(format!(
                        "a group carrying its rows in a journal of format {FORMAT_GROUPS}"
                    ));
                }
                if start != self.committed {
                    return Err(format!(
                        "a group of bytes {start}..{end}, where the bets recorded before it end \
                         at byte {}",
                        self.committed
                    ));
                }
                if end <= start {
                    return Err(format!("a group of bytes {start}..{end} holds no rows"));
                }
                let index = usize::try_from(self.seen_records - 1).unwrap_or(usize::MAX);
                self.last_group =
                    Some(LastGroup { index, start, end, crc, covered: start, followed: false });
            }
            Record::Batch { agency, seq, bets, end, ref winners } => {
                if self.grouped {
                    let group = self.last_group.as_mut().filter(|g| g.covered < g.end);
                    let Some(group) = group else {
                        return Err(format!(
                            "agency {agency}: batch {seq} is recorded outside a group"
                        ));
                    };
                    if end > group.end {
                        return Err(format!(
                            "agency {agency}: batch {seq} ends at byte {end}, past the end of \
                             its group (byte {})",
                            group.end
                        ));
                    }
                    group.covered = end;
                }
                let progress = self.agencies.entry(agency).or_default();
                if progress.ready {
                    return Err(format!(
                        "agency {agency}: batch {seq} is recorded after the agency's ready record"
                    ));
                }
                if seq != progress.last_seq + 1 {
                    let expected = progress.last_seq + 1;
                    return Err(format!(
                        "agency {agency}: batch {seq} where batch {expected} was expected"
                    ));
                }
                if bets == 0 || end <= self.committed {
                    return Err(format!(
                        "agency {agency}: batch {seq} records {bets} bets in bytes {}..{end}: \
                         every batch holds at least one bet, in bytes of its own",
                        self.committed
                    ));
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
                if !self.bets_unknown && bets != self.bets {
                    return Err(format!(
                        "a draw over {bets} bets, where the records before it hold {}",
                        self.bets
                    ));
                }
                self.draw = Some((bets, end));
            }
        }
        Ok(())
    }

    /// Before any record but a batch: the last group must have all its batch records.
    fn close_group(&mut self) -> Result<(), String> {
        match self.last_group.as_mut() {
            Some(group) if !group.followed && group.covered < group.end => Err(format!(
                "the group of line {} covers bytes {}..{}, but its batch records end at byte {}: \
                 records of its batches are missing",
                group.index + 1,
                group.start,
                group.end,
                group.covered
            )),
            Some(group) => {
                group.followed = true;
                Ok(())
            }
            None => Ok(()),
        }
    }

    fn advance(&mut self, end: u64) -> Result<(), String> {
        if end < self.committed {
            return Err(format!("end {end} is before the previous end {}", self.committed));
        }
        self.committed = end;
        Ok(())
    }

    pub(super) fn progress(&self, agency: AgencyId) -> AgencyProgress {
        self.agencies.get(&agency).copied().unwrap_or_default()
    }
}
