//! Start-up recovery: lock the bets file and its journal, replay the journal, and cut what a crash
//! left past the last committed batch — and nothing else.
//!
//! What may be cut is only what was never acknowledged: the journal's torn last line, and bets
//! file bytes past the last recorded `end`, at most one group commit's worth
//! ([`MAX_GROUP_BYTES`]): rows that were written and synced when the central stopped before
//! their journal records were. Anything else that does not add up stops start-up with an error
//! naming the file, the line or byte, and what to do; nothing is changed then. Every check runs
//! before the first change.

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io::{self, Read};
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::{Path, PathBuf};

use super::journal::{self, FORMAT_VERSION, Format, Ledger, Record};
use super::{Files, MAX_GROUP_BYTES, Recovery, StorageError, load_bets, write_error};
use crate::domain::AgencyId;

/// What to do when the journal cannot be trusted, but the bets file can.
const ADOPT_HINT: &str = "restore the journal from a backup; or, if the bets file is complete and \
     its journal is lost, move the journal away: the central then adopts the bets file as it is, \
     and each agency resumes after its rows";

/// Opens both files, locks them, and brings the bets file back to its last committed batch.
pub(super) fn recover(
    path: &Path,
    journal_path: &Path,
    sync: bool,
) -> Result<(Files, Recovery), StorageError> {
    let journal_has_bytes = std::fs::metadata(journal_path).is_ok_and(|m| m.len() > 0);
    if journal_has_bytes && !path.exists() {
        let reason = format!(
            "the bets file does not exist, but its journal {} does. Nothing was changed. \
             Restore the bets file from a backup; or move the journal away to start a new lottery",
            journal_path.display()
        );
        return Err(StorageError::Corrupt { path: path.into(), reason });
    }
    let bets = open(path, true)?;
    lock(&bets, path)?;
    let bets_len = len(&bets, path)?;
    let mut recovery = Recovery::default();
    let corrupt = |path: &Path, reason: String| StorageError::Corrupt { path: path.into(), reason };

    let existing = match open(journal_path, false) {
        Ok(journal) => Some(journal),
        Err(StorageError::Open { source, .. }) if source.kind() == io::ErrorKind::NotFound => None,
        Err(e) => return Err(e),
    };
    // The journal to keep using, or the text of a new one to install; and what it says.
    let (journal, ledger, journal_len) = match existing {
        None if bets_len == 0 => {
            let (text, ledger) = new_journal(None)?;
            (Journal::Install(text), ledger, 0)
        }
        None => {
            let adopted = adopt(&bets, path, bets_len)?;
            recovery.adopted = true;
            let base = Record::Base { end: adopted.end, agencies: adopted.agencies };
            let (text, ledger) = new_journal(Some(base))?;
            (Journal::Adopt { text, line_end_at: adopted.line_end_at }, ledger, 0)
        }
        Some(journal) => {
            lock(&journal, journal_path)?;
            let mut bytes = Vec::new();
            (&journal)
                .read_to_end(&mut bytes)
                .map_err(|source| StorageError::Open { path: journal_path.to_owned(), source })?;
            let replay = journal::replay(&bytes).map_err(|d| {
                let reason = format!(
                    "damaged at line {} (byte {}): {}. Only a torn last line can be a crash's \
                     doing. Nothing was changed. To start, {ADOPT_HINT}",
                    d.line, d.offset, d.reason
                );
                corrupt(journal_path, reason)
            })?;
            recovery.cut_journal_bytes = bytes.len() as u64 - replay.valid_len;
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
                    let (text, ledger) = new_journal(None)?;
                    (Journal::Rewrite { file: journal, text }, ledger, 0)
                }
                Some(Format::Legacy) => {
                    let ledger = Ledger::replay(&replay.records)
                        .map_err(|e| corrupt(journal_path, format!("{e}. {ADOPT_HINT}")))?;
                    let mut text = String::new();
                    Record::Header { version: FORMAT_VERSION }.write_to(&mut text);
                    replay.records.iter().for_each(|r| r.write_to(&mut text));
                    recovery.journal_converted = true;
                    drop(journal);
                    (Journal::Install(text), ledger, 0)
                }
                Some(Format::Checked) => {
                    if !matches!(replay.records.first(), Some(Record::Header { .. })) {
                        let reason = format!(
                            "line 1 is not the journal's header (\"journal {FORMAT_VERSION}\"). \
                             Nothing was changed. To start, {ADOPT_HINT}"
                        );
                        return Err(corrupt(journal_path, reason));
                    }
                    let ledger = Ledger::replay(&replay.records)
                        .map_err(|e| corrupt(journal_path, format!("{e}. {ADOPT_HINT}")))?;
                    (Journal::Keep(journal), ledger, replay.valid_len)
                }
            }
        }
    };

    let committed = ledger.committed;
    if !recovery.adopted {
        check_bets(&bets, path, bets_len, committed)?;
    }

    // Every check passed: from here on, only bytes that were never acknowledged are cut.
    recovery.cut_bets_bytes = if recovery.adopted { 0 } else { bets_len - committed };
    if recovery.cut_bets_bytes > 0 {
        bets.set_len(committed).map_err(write_error(path))?;
    }
    let (journal, journal_len) = match journal {
        Journal::Keep(file) => {
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
        Journal::Adopt { text, line_end_at } => {
            if let Some(at) = line_end_at {
                // A last row without its line end: complete it, so the next batch starts a row.
                bets.write_all_at(b"\r\n", at).map_err(write_error(path))?;
            }
            if sync {
                bets.sync_all().map_err(write_error(path))?;
            }
            (install(journal_path, &text, sync)?, text.len() as u64)
        }
    };
    if sync {
        bets.sync_all().map_err(write_error(path))?;
        journal.sync_all().map_err(write_error(journal_path))?;
    }
    recovery.bets_len = ledger.committed;
    recovery.batches = ledger.batches;
    recovery.drawn = ledger.draw.is_some();
    let mut ready: Vec<AgencyId> =
        ledger.agencies.iter().filter(|(_, p)| p.ready).map(|(a, _)| *a).collect();
    ready.sort();
    recovery.ready = ready;
    let files = Files::new(bets, journal, ledger, journal_len);
    Ok((files, recovery))
}

/// What becomes of the journal once every check passed.
enum Journal {
    /// Used as it is (its torn tail cut).
    Keep(File),
    /// Emptied and given `text` (it held no record and the bets file is empty).
    Rewrite { file: File, text: String },
    /// A new journal with `text` replaces the old one (or none), atomically.
    Install(String),
    /// As `Install`, after completing the bets file's last row when it has no line end.
    Adopt { text: String, line_end_at: Option<u64> },
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

/// The bets file must hold every acknowledged byte, end a row there, and have no more past it
/// than one group commit can leave.
fn check_bets(bets: &File, path: &Path, bets_len: u64, committed: u64) -> Result<(), StorageError> {
    let corrupt = |reason| StorageError::Corrupt { path: path.to_owned(), reason };
    if bets_len < committed {
        let reason = format!(
            "the journal records {committed} bytes of acknowledged bets, the file has {bets_len}. \
             Nothing was changed: restore the bets file from a backup"
        );
        return Err(corrupt(reason));
    }
    if committed > 0 {
        let mut last = [0u8];
        bets.read_exact_at(&mut last, committed - 1)
            .map_err(|source| StorageError::Open { path: path.to_owned(), source })?;
        if last[0] != b'\n' {
            let reason = format!(
                "byte {committed}, where the journal says the acknowledged bets end, does not end \
                 a row: the journal is another bets file's, or the file was edited. Nothing was \
                 changed: restore the matching bets file and journal"
            );
            return Err(corrupt(reason));
        }
    }
    let extra = bets_len - committed;
    if extra > MAX_GROUP_BYTES {
        let reason = format!(
            "it has {extra} bytes past byte {committed}, where the journal's last batch ends; a \
             crash leaves at most {MAX_GROUP_BYTES} (one group commit, never acknowledged), so \
             the journal lacks records of acknowledged bets. Nothing was changed. To start, \
             {ADOPT_HINT}"
        );
        return Err(corrupt(reason));
    }
    Ok(())
}

/// What adopting a bets file found.
struct Adopted {
    end: u64,
    agencies: Vec<(AgencyId, u64)>,
    /// Where a line end must be added: the last row is whole but has none.
    line_end_at: Option<u64>,
}

/// Reads every row of a bets file that has no journal with the rules the draw uses, and counts
/// each agency's rows.
fn adopt(bets: &File, path: &Path, len: u64) -> Result<Adopted, StorageError> {
    let mut counts: HashMap<AgencyId, u64> = HashMap::new();
    for bet in load_bets(path)? {
        match bet {
            Ok(bet) => *counts.entry(bet.agency).or_default() += 1,
            Err(StorageError::BadRow { path, line, reason }) => {
                let reason = format!(
                    "{reason}; a bets file without a journal is adopted only when every row is a \
                     valid bet: fix or remove the row (nothing was changed)"
                );
                return Err(StorageError::BadRow { path, line, reason });
            }
            Err(e) => return Err(e),
        }
    }
    let mut last = [0u8];
    bets.read_exact_at(&mut last, len - 1)
        .map_err(|source| StorageError::Open { path: path.to_owned(), source })?;
    let line_end_at = (last[0] != b'\n').then_some(len);
    let end = if line_end_at.is_some() { len + 2 } else { len };
    let mut agencies: Vec<(AgencyId, u64)> = counts.into_iter().collect();
    agencies.sort();
    Ok(Adopted { end, agencies, line_end_at })
}

/// Writes `text` as the new journal at `path` (through a temporary file renamed over it, so a
/// crash leaves the old journal or the new one, whole) and opens and locks it.
fn install(path: &Path, text: &str, sync: bool) -> Result<File, StorageError> {
    let mut temporary = path.to_owned().into_os_string();
    temporary.push(".tmp");
    let temporary = PathBuf::from(temporary);
    let file = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .open(&temporary)
        .map_err(|source| StorageError::Open { path: temporary.clone(), source })?;
    file.write_all_at(text.as_bytes(), 0).map_err(write_error(&temporary))?;
    if sync {
        file.sync_all().map_err(write_error(&temporary))?;
    }
    drop(file);
    std::fs::rename(&temporary, path).map_err(write_error(path))?;
    if sync {
        // The journal's directory entry must be durable before anything relies on it.
        let dir = path.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(Path::new("."));
        File::open(dir).and_then(|d| d.sync_all()).map_err(write_error(dir))?;
    }
    let journal = open(path, false)?;
    lock(&journal, path)?;
    Ok(journal)
}

fn open(path: &Path, create: bool) -> Result<File, StorageError> {
    OpenOptions::new()
        .read(true)
        .write(true)
        .create(create)
        .truncate(false)
        .open(path)
        .map_err(|source| StorageError::Open { path: path.to_owned(), source })
}

fn len(file: &File, path: &Path) -> Result<u64, StorageError> {
    let metadata =
        file.metadata().map_err(|source| StorageError::Open { path: path.to_owned(), source })?;
    Ok(metadata.len())
}

/// Takes an exclusive `flock` on `file` for as long as it stays open (or until
/// [`unlock`]); a second central on the same file is refused here.
fn lock(file: &File, path: &Path) -> Result<(), StorageError> {
    use rustix::fs::{FlockOperation, flock};
    match flock(file, FlockOperation::NonBlockingLockExclusive) {
        Ok(()) => Ok(()),
        Err(rustix::io::Errno::WOULDBLOCK) => {
            Err(StorageError::Locked { path: path.to_owned(), holder: lock_holder(file) })
        }
        Err(e) => Err(StorageError::Open { path: path.to_owned(), source: e.into() }),
    }
}

/// Releases [`lock`]'s lock.
pub(super) fn unlock(file: &File) {
    // Closing the file releases it anyway; this only makes it happen now.
    let _ = rustix::fs::flock(file, rustix::fs::FlockOperation::Unlock);
}

/// The process holding a `flock` on `file`, from `/proc/locks` (Linux), when it can be told:
/// `None` elsewhere, or when the holder is in another PID namespace (another container).
fn lock_holder(file: &File) -> Option<u32> {
    let metadata = file.metadata().ok()?;
    let dev = metadata.dev();
    // glibc's encoding of a device number, as `major()` and `minor()` decode it.
    let major = ((dev >> 8) & 0xfff) | ((dev >> 32) & !0xfff);
    let minor = (dev & 0xff) | ((dev >> 12) & !0xff);
    let wanted = format!("{major:02x}:{minor:02x}:{}", metadata.ino());
    let locks = std::fs::read_to_string("/proc/locks").ok()?;
    locks.lines().find_map(|line| {
        // `1: FLOCK  ADVISORY  WRITE 1234 fd:01:5678 0 EOF`; waiters have a `->` field first.
        let fields: Vec<&str> = line.split_whitespace().filter(|f| *f != "->").collect();
        let (kind, pid, id) = (fields.get(1)?, fields.get(4)?, fields.get(5)?);
        let pid: u32 = pid.parse().ok()?;
        (*kind == "FLOCK" && *id == wanted && pid != 0).then_some(pid)
    })
}
