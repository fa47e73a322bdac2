//! The bets file and its journal read without changing them: what `lottery-server export` and
//! `lottery-server verify` do. Every check of start-up recovery runs (every group's rows
//! against their CRC included), but nothing is cut, adopted, converted or created, and the files
//! are opened read-only under a shared lock (a running central's exclusive lock refuses it), so
//! a read-only directory or file does not make it fail.

use std::fs::{File, OpenOptions};
use std::io;
use std::path::{Path, PathBuf};

use super::disk::lock_shared;
use super::recovery::{Recovery, examine, refuse_a_lone_journal};
use crate::domain::AgencyId;
use crate::storage::{StorageError, Verified, copy_agency_rows};

/// A bets file, read and checked.
#[derive(Debug)]
pub(crate) struct Inspection {
    path: PathBuf,
    /// `None`: there is no bets file (nor journal): nothing is stored.
    bets: Option<File>,
    /// What a start would find, keep and cut.
    pub(crate) verified: Verified,
    /// Rows a start would rewrite from the journal's copy, `(start, rows)`: exported from there.
    rewrite: Vec<(u64, Vec<u8>)>,
}

/// Reads and checks the bets file at `path` and its journal `<path>.journal` (blocking).
///
/// # Errors
/// As [`BetStore::open_with`](super::BetStore::open_with); `Locked` while a central has them.
pub(crate) fn inspect(path: &Path) -> Result<Inspection, StorageError> {
    let journal_path = super::store::journal_path(path);
    refuse_a_lone_journal(path, &journal_path)?;
    let bets = match open_read_only(path)? {
        Some(bets) => bets,
        None => {
            let verified = Verified { exists: false, ..Verified::default() };
            let rewrite = Vec::new();
            return Ok(Inspection { path: path.to_owned(), bets: None, verified, rewrite });
        }
    };
    lock_shared(&bets, path)?;
    let journal = open_read_only(&journal_path)?;
    if let Some(journal) = &journal {
        lock_shared(journal, &journal_path)?;
    }
    let plan = examine(&bets, path, journal, &journal_path)?;
    let verified = verified(&plan.recovery, plan.ledger.bets, plan.checked.groups);
    let rewrite = plan.rewrite;
    Ok(Inspection { path: path.to_owned(), bets: Some(bets), verified, rewrite })
}

impl Inspection {
    /// Copies the committed bytes of the bets file to `out` and returns how many.
    ///
    /// # Errors
    /// `Open` when the bets file cannot be read; `Write` when `out` fails.
    pub(crate) fn export(&self, out: &mut impl io::Write) -> Result<u64, StorageError> {
        let Some(bets) = &self.bets else { return Ok(0) };
        let mut committed = io::Read::take(self.committed(bets), self.verified.bytes);
        let copied = io::copy(&mut committed, out)
            .map_err(|source| StorageError::Write { path: "the export's output".into(), source })?;
        if copied < self.verified.bytes {
            let source = io::Error::from(io::ErrorKind::UnexpectedEof);
            return Err(StorageError::Open { path: self.path.clone(), source });
        }
        Ok(copied)
    }
}

impl Inspection {
    /// Copies `agency`'s rows of the committed bytes of the bets file to `out`, in order, and
    /// returns how many bytes.
    ///
    /// # Errors
    /// `Open` when the bets file cannot be read; `Corrupt` when its rows are not a bets file's;
    /// `Write` when `out` fails.
    pub(crate) fn export_agency(
        &self,
        agency: AgencyId,
        out: &mut impl io::Write,
    ) -> Result<u64, StorageError> {
        let Some(bets) = &self.bets else { return Ok(0) };
        let mut out = WriteErrors { out, error: None };
        let copied = copy_agency_rows(self.committed(bets), self.verified.bytes, agency, &mut out);
        if let Some(source) = out.error {
            return Err(StorageError::Write { path: "the export's output".into(), source });
        }
        match copied {
            Ok((_, read)) if read < self.verified.bytes => {
                let source = io::Error::from(io::ErrorKind::UnexpectedEof);
                Err(StorageError::Open { path: self.path.clone(), source })
            }
            Ok((written, _)) => Ok(written),
            Err(e) if e.kind() == io::ErrorKind::InvalidData => {
                Err(StorageError::Corrupt { path: self.path.clone(), reason: e.to_string() })
            }
            Err(source) => Err(StorageError::Open { path: self.path.clone(), source }),
        }
    }
}

impl Inspection {
    /// The committed bytes: the bets file's, with the rows a start would rewrite taken from the
    /// journal's copy instead.
    fn committed<'a>(&'a self, bets: &'a File) -> Patched<'a> {
        Patched { bets, rewrite: &self.rewrite, at: 0 }
    }
}

/// The bets file read from the start, with `rewrite`'s rows (sorted, not overlapping) read in
/// place of its bytes there.
struct Patched<'a> {
    bets: &'a File,
    rewrite: &'a [(u64, Vec<u8>)],
    at: u64,
}

impl io::Read for Patched<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        use std::os::unix::fs::FileExt;
        let at = self.at;
        let next = self.rewrite.iter().find(|(start, rows)| start + rows.len() as u64 > at);
        let n = match next {
            Some((start, rows)) if *start <= at => {
                let from = usize::try_from(at - start).unwrap_or(usize::MAX);
                let n = buf.len().min(rows.len() - from);
                buf[..n].copy_from_slice(&rows[from..from + n]);
                n
            }
            Some((start, _)) => {
                let room = usize::try_from(start - at).unwrap_or(usize::MAX).min(buf.len());
                self.bets.read_at(&mut buf[..room], at)?
            }
            None => self.bets.read_at(buf, at)?,
        };
        self.at += n as u64;
        Ok(n)
    }
}

/// A writer that keeps its own error apart from the reader's.
struct WriteErrors<'a, W> {
    out: &'a mut W,
    error: Option<io::Error>,
}

impl<W: io::Write> io::Write for WriteErrors<'_, W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.out.write(buf).inspect_err(|e| {
            self.error = Some(io::Error::new(e.kind(), e.to_string()));
        })
    }

    fn flush(&mut self) -> io::Result<()> {
        self.out.flush()
    }
}

fn verified(recovery: &Recovery, bets: u64, groups: u64) -> Verified {
    Verified {
        exists: true,
        bytes: recovery.bets_len,
        bets,
        batches: recovery.batches,
        groups_checked: groups,
        adopted: recovery.adopted,
        journal_converted: recovery.journal_converted,
        cut_bets_bytes: recovery.cut_bets_bytes,
        cut_journal_bytes: recovery.cut_journal_bytes,
        rewritten_bets_bytes: recovery.rewritten_bets_bytes,
        ready: recovery.ready.len(),
        drawn: recovery.drawn,
    }
}

/// `path` opened for reading; `None` when it does not exist.
fn open_read_only(path: &Path) -> Result<Option<File>, StorageError> {
    match OpenOptions::new().read(true).open(path) {
        Ok(file) => Ok(Some(file)),
        Err(source) if source.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(source) => Err(StorageError::Open { path: path.to_owned(), source }),
    }
}
