//! Journals of the formats before this one (format 2 and legacy: rows written before their
//! records): the check their bets file must pass, and their conversion to the current format.

use std::fs::File;
use std::path::Path;

use super::disk::{check_row_end, rows_crc};
use super::journal::{FORMAT_VERSION, Record};
use crate::storage::StorageError;

/// A journal whose rows went first (format 2, legacy): the bets file may hold the last group
/// commit's rows past the last recorded end, written and synced but never acknowledged because
/// their records were not. (Such a journal that lost its last records looks the same: the
/// reason the current format writes the journal first.)
pub(super) fn check_rows_first(
    bets: &File,
    path: &Path,
    bets_len: u64,
    committed: u64,
) -> Result<(), StorageError> {
    // Rows were written before their records, and the versions that did so did not bound a
    // group (main's took the whole queue: 32 batches in flight per agency): whatever lies past the
    // last recorded end is the last group, never acknowledged, and is cut. In these formats that
    // cannot be told from a journal that lost records; format 3 can (see `recovery`).
    check_row_end(bets, path, bets_len, committed)
}

/// Why a conversion failed: the bets file could not be read, or the records contradict it.
pub(super) enum Converting {
    Read(StorageError),
    Contradiction(String),
}

impl From<String> for Converting {
    fn from(e: String) -> Self {
        Self::Contradiction(e)
    }
}

/// The text of a current-format journal saying what `records` (of a rows-first journal) say:
/// each batch gets a group of its own, whose CRC is read from the bets file.
pub(super) fn convert(records: &[Record], bets: &File, path: &Path) -> Result<String, Converting> {
    let mut text = String::new();
    Record::Header { version: FORMAT_VERSION }.write_to(&mut text);
    let mut end = 0;
    for record in records {
        match *record {
            Record::Header { .. } => continue,
            Record::Base { end: base, .. } => end = base,
            Record::Batch { end: batch_end, .. } => {
                let crc = rows_crc(bets, path, end, batch_end).map_err(Converting::Read)?;
                Record::Group { start: end, end: batch_end, crc, carried: false }
                    .write_to(&mut text);
                end = batch_end;
            }
            Record::Group { .. } | Record::Ready { .. } | Record::Draw { .. } => {}
        }
        record.write_to(&mut text);
    }
    Ok(text)
}
