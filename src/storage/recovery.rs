//! Start-up recovery: open the bets file and its journal, replay the journal, and cut what a crash
//! left past the last committed batch.

use std::fs::{File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom};
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::Arc;

use super::journal::{self, Ledger, Record};
use super::{Files, Recovery, StorageError, write_error};
use crate::domain::AgencyId;

/// Opens both files and brings the bets file back to its last committed batch.
pub(super) fn recover(
    path: &Path,
    journal_path: &Path,
    sync: bool,
) -> Result<(Files, Recovery), StorageError> {
    let open = |p: &Path| {
        OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(p)
            .map_err(|source| StorageError::Open { path: p.to_owned(), source })
    };
    let journal_existed = journal_path.exists();
    let bets = open(path)?;
    let mut journal = open(journal_path)?;
    let mut bytes = Vec::new();
    journal
        .read_to_end(&mut bytes)
        .map_err(|source| StorageError::Open { path: journal_path.to_owned(), source })?;
    let replay = journal::replay(&bytes);
    let corrupt = |reason| StorageError::Corrupt { path: journal_path.to_owned(), reason };
    let mut ledger = Ledger::replay(&replay.records).map_err(corrupt)?;
    let mut journal_len = replay.valid_len;
    let mut recovery = Recovery {
        cut_journal_bytes: bytes.len() as u64 - replay.valid_len,
        ..Recovery::default()
    };
    if recovery.cut_journal_bytes > 0 {
        journal.set_len(journal_len).map_err(write_error(journal_path))?;
    }

    let bets_len = bets
        .metadata()
        .map_err(|source| StorageError::Open { path: path.to_owned(), source })?
        .len();
    if !journal_existed && bets_len > 0 {
        // A bets file from before the journal (or written by hand): keep its complete rows.
        let end = complete_rows_len(&bets)
            .map_err(|source| StorageError::Open { path: path.to_owned(), source })?;
        let mut line = String::new();
        Record::Base { end }.write_to(&mut line);
        journal.write_all_at(line.as_bytes(), 0).map_err(write_error(journal_path))?;
        journal_len = line.len() as u64;
        ledger.apply(&Record::Base { end }).map_err(corrupt)?;
        recovery.adopted = true;
    }
    if bets_len < ledger.committed {
        let reason = format!(
            "the journal records {} bytes of acknowledged bets, the file has {bets_len}",
            ledger.committed
        );
        return Err(StorageError::Corrupt { path: path.to_owned(), reason });
    }
    recovery.cut_bets_bytes = bets_len - ledger.committed;
    if recovery.cut_bets_bytes > 0 {
        bets.set_len(ledger.committed).map_err(write_error(path))?;
    }
    if sync {
        bets.sync_all().map_err(write_error(path))?;
        journal.sync_all().map_err(write_error(journal_path))?;
        if !journal_existed {
            // The journal's directory entry must be durable before anything relies on it.
            let dir = journal_path
                .parent()
                .filter(|d| !d.as_os_str().is_empty())
                .unwrap_or(Path::new("."));
            File::open(dir).and_then(|d| d.sync_all()).map_err(write_error(dir))?;
        }
    }
    recovery.bets_len = ledger.committed;
    recovery.batches = ledger.batches;
    recovery.drawn = ledger.draw.is_some();
    let mut ready: Vec<AgencyId> =
        ledger.agencies.iter().filter(|(_, p)| p.ready).map(|(a, _)| *a).collect();
    ready.sort();
    recovery.ready = ready;
    let files = Files {
        bets: Arc::new(bets),
        journal: Arc::new(journal),
        ledger,
        journal_len,
        dirty: false,
    };
    Ok((files, recovery))
}

/// Length of `file` up to and including its last `\n`.
fn complete_rows_len(file: &File) -> io::Result<u64> {
    const CHUNK: u64 = 64 * 1024;
    let mut file = file;
    let mut end = file.seek(SeekFrom::End(0))?;
    let mut buf = vec![0; CHUNK as usize];
    while end > 0 {
        let start = end.saturating_sub(CHUNK);
        let chunk = &mut buf[..(end - start) as usize];
        file.read_exact_at(chunk, start)?;
        if let Some(i) = chunk.iter().rposition(|b| *b == b'\n') {
            return Ok(start + i as u64 + 1);
        }
        end = start;
    }
    Ok(0)
}
