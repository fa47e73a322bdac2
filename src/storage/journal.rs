//! The journal: a small append-only text file beside the bets file (`<BETS_FILE>.journal`) that
//! records what the bets file's bytes mean. One record per line:
//!
//! ```text
//! base <end>                          bytes 0..end were adopted from a bets file with no journal
//! batch <agency> <seq> <bets> <end> <winners>
//!                                     the agency's batch seq (bets rows) ends at byte `end`;
//!                                     `winners` are its winning documents, comma-separated, or `-`
//! ready <agency>                      the agency declared ReadyForLottery
//! draw <bets> <end>                   the draw ran over `bets` rows, bytes 0..end
//! ```
//!
//! A record is written only after the rows it describes are on disk, and synced before anything
//! is acknowledged, so the journal is the commit log: bytes of the bets file past the last
//! recorded `end` belong to no acknowledged batch and are cut at start-up. A crash can leave the
//! journal's own tail torn (a line without its `\n`, or zeros); replay stops at the first line
//! that does not parse, which is always past the last synced record.

use std::collections::HashMap;
use std::fmt::Write as _;

use crate::domain::{AgencyId, Document};

/// One journal line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Record {
    Base {
        end: u64,
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
    pub(super) fn write_to(&self, out: &mut String) {
        // Writing to a String cannot fail.
        let _ = match *self {
            Self::Base { end } => writeln!(out, "base {end}"),
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
                writeln!(out)
            }
            Self::Ready { agency } => writeln!(out, "ready {agency}"),
            Self::Draw { bets, end } => writeln!(out, "draw {bets} {end}"),
        };
    }

    fn parse(line: &str) -> Option<Self> {
        let mut words = line.split(' ');
        let kind = words.next()?;
        let mut number = || words.next()?.parse::<u64>().ok();
        let agency = |n: u64| AgencyId::new(u32::try_from(n).ok()?).ok();
        let record = match kind {
            "base" => Self::Base { end: number()? },
            "batch" => {
                let (agency, seq, bets, end) =
                    (agency(number()?)?, number()?, number()?, number()?);
                let winners = match words.next() {
                    None => None,
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

/// The records of a journal, up to its first torn or unreadable line.
#[derive(Debug)]
pub(super) struct Replay {
    pub(super) records: Vec<Record>,
    /// Bytes of the journal that hold `records`; anything after is cut.
    pub(super) valid_len: u64,
}

pub(super) fn replay(bytes: &[u8]) -> Replay {
    let mut records = Vec::new();
    let mut valid_len = 0;
    for line in bytes.split_inclusive(|b| *b == b'\n') {
        let Some(text) = line.strip_suffix(b"\n") else { break };
        let Some(record) = std::str::from_utf8(text).ok().and_then(Record::parse) else { break };
        records.push(record);
        valid_len += line.len() as u64;
    }
    Replay { records, valid_len }
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
}

impl Ledger {
    /// Applies `records` in order.
    ///
    /// # Errors
    /// A description of the first record that contradicts the ones before it.
    pub(super) fn replay(records: &[Record]) -> Result<Self, String> {
        let mut ledger = Self::default();
        for (i, record) in records.iter().enumerate() {
            ledger.apply(record).map_err(|e| format!("journal record {}: {e}", i + 1))?;
        }
        Ok(ledger)
    }

    pub(super) fn apply(&mut self, record: &Record) -> Result<(), String> {
        match *record {
            Record::Base { end } => {
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

    #[test]
    fn records_round_trip() {
        let records = [
            Record::Base { end: 10 },
            Record::Batch {
                agency: agency(2),
                seq: 1,
                bets: 150,
                end: 7000,
                winners: Some(docs(&["7", "0012"])),
            },
            Record::Ready { agency: agency(2) },
            Record::Draw { bets: 150, end: 7000 },
        ];
        let mut text = String::new();
        records.iter().for_each(|r| r.write_to(&mut text));
        assert_eq!(text, "base 10\nbatch 2 1 150 7000 7,0012\nready 2\ndraw 150 7000\n");
        let replay = replay(text.as_bytes());
        assert_eq!(replay.records, records);
        assert_eq!(replay.valid_len, text.len() as u64);
    }

    #[test]
    fn replay_stops_at_a_torn_or_garbled_tail() {
        let good = "batch 1 1 5 100 -\nbatch 1 2 5 200 42\n";
        for tail in [
            "batch 1 3 5 3",
            "batch 1 3 5 300 -",
            "\0\0\0\0\0\0",
            "batch 1 3 5 300 9x\n",
            "batch 1 3 5 300 - 1\n",
            "batch 0 3 5 300 -\n",
            "\u{fffd}\n",
        ] {
            let bytes = format!("{good}{tail}batch 1 3 5 300 -\n");
            let replay = replay(bytes.as_bytes());
            assert_eq!(replay.records.len(), 2, "{tail:?}");
            assert_eq!(replay.valid_len, good.len() as u64, "{tail:?}");
        }
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
        let old = replay(b"batch 1 1 3 90\n");
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
