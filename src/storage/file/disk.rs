//! The bets file and the journal as open files: [`Files`], what the store keeps of them under
//! its mutex, and the file operations recovery and the store use (open, lock and its holder,
//! install a new journal, lengths).

use std::collections::HashSet;
use std::fs::{File, OpenOptions};

use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::ledger::Ledger;
use crate::domain::AgencyId;
use crate::storage::StorageError;
use crate::storage::error::write_error;

/// The open, locked files and what the store knows of them, behind the store's mutex.
#[derive(Debug)]
pub(super) struct Files {
    pub(super) bets: Arc<File>,
    pub(super) journal: Arc<File>,
    pub(super) ledger: Ledger,
    pub(super) journal_len: u64,
    /// A failed write may have left bytes past the committed ends: cut them before the next one.
    pub(super) dirty: bool,
    /// Set by `close`: the files are unlocked, nothing more is written.
    pub(super) closed: bool,
    /// Agencies whose limit was logged (once each).
    pub(super) limit_logged: HashSet<AgencyId>,
    /// Whether the free-space floor was hit and not yet left (logged once each way).
    pub(super) low_space: bool,
    /// The journal's records without the rows it carries, header first: the journal a compaction
    /// writes (see `wal.rs`).
    pub(super) compact: String,
    /// The bets file's length when it was last synced (a test hook reports it).
    pub(super) bets_synced: u64,
    /// A compaction renamed the new journal over the old one but could not sync the directory:
    /// synced before the next write (or the rename could be lost with records after it).
    pub(super) dir_unsynced: bool,
    /// After a failed compaction, the journal length below which none is tried again (another
    /// `LOTTERY_JOURNAL_COMPACT_BYTES` of rows later), so a failure that lasts (a full disk, a
    /// read-only directory) costs one attempt and one warning per bound, not one per group.
    pub(super) compact_retry_at: u64,
}

impl Files {
    pub(super) fn new(
        bets: File,
        journal: File,
        ledger: Ledger,
        journal_len: u64,
        compact: String,
    ) -> Self {
        Self {
            bets_synced: ledger.committed,
            bets: Arc::new(bets),
            journal: Arc::new(journal),
            ledger,
            journal_len,
            dirty: false,
            closed: false,
            limit_logged: HashSet::new(),
            low_space: false,
            compact,
            dir_unsynced: false,
            compact_retry_at: 0,
        }
    }
}

/// Syncs the directory that holds `path`, so that its entry (a new or renamed file) is durable.
pub(super) fn sync_dir(path: &Path) -> Result<(), StorageError> {
    let dir = path.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(Path::new("."));
    File::open(dir).and_then(|d| d.sync_all()).map_err(write_error(dir))
}

/// Writes `text` as the new journal at `path` (through a temporary file renamed over it, so a
/// crash leaves the old journal or the new one, whole) and opens and locks it.
pub(super) fn install(path: &Path, text: &str, sync: bool) -> Result<File, StorageError> {
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
        sync_dir(path)?;
    }
    let journal = open(path, false)?;
    lock(&journal, path)?;
    Ok(journal)
}

pub(super) fn open(path: &Path, create: bool) -> Result<File, StorageError> {
    OpenOptions::new()
        .read(true)
        .write(true)
        .create(create)
        .truncate(false)
        .open(path)
        .map_err(|source| StorageError::Open { path: path.to_owned(), source })
}

pub(super) fn len(file: &File, path: &Path) -> Result<u64, StorageError> {
    let metadata =
        file.metadata().map_err(|source| StorageError::Open { path: path.to_owned(), source })?;
    Ok(metadata.len())
}

/// Takes an exclusive `flock` on `file` for as long as it stays open (or until
/// [`unlock`]); a second central on the same file is refused here.
pub(super) fn lock(file: &File, path: &Path) -> Result<(), StorageError> {
    use rustix::fs::{FlockOperation, flock};
    match flock(file, FlockOperation::NonBlockingLockExclusive) {
        Ok(()) => Ok(()),
        Err(rustix::io::Errno::WOULDBLOCK) => {
            Err(StorageError::Locked { path: path.to_owned(), holder: lock_holder(file) })
        }
        Err(e) => Err(StorageError::Open { path: path.to_owned(), source: e.into() }),
    }
}

/// Takes a shared `flock` on `file` (readers: `export`, `verify`): refused while a central
/// holds [`lock`]'s, and it keeps a central from starting meanwhile.
pub(super) fn lock_shared(file: &File, path: &Path) -> Result<(), StorageError> {
    use rustix::fs::{FlockOperation, flock};
    match flock(file, FlockOperation::NonBlockingLockShared) {
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

/// The CRC-32 of bytes `start..end` of the bets file.
pub(super) fn rows_crc(
    bets: &File,
    path: &Path,
    start: u64,
    end: u64,
) -> Result<u32, StorageError> {
    rows_crc_with(bets, path, start, end, &mut vec![0u8; 64 << 10])
}

/// [`rows_crc`], reading through `buffer` (a check of every group reuses one).
pub(super) fn rows_crc_with(
    bets: &File,
    path: &Path,
    start: u64,
    end: u64,
    buffer: &mut [u8],
) -> Result<u32, StorageError> {
    let mut hasher = crc32fast::Hasher::new();
    let mut at = start;
    while at < end {
        let n = usize::try_from(end - at).unwrap_or(usize::MAX).min(buffer.len());
        bets.read_exact_at(&mut buffer[..n], at)
            .map_err(|source| StorageError::Open { path: path.to_owned(), source })?;
        hasher.update(&buffer[..n]);
        at += n as u64;
    }
    Ok(hasher.finalize())
}

/// The bets file must hold every acknowledged byte and end a row there.
pub(super) fn check_row_end(
    bets: &File,
    path: &Path,
    bets_len: u64,
    committed: u64,
) -> Result<(), StorageError> {
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
    Ok(())
}
