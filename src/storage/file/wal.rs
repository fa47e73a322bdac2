//! The disk steps of a group commit, now that the journal carries the rows (format 4), and the
//! journal's compaction.
//!
//! A group commit writes, in one write, its `group … rows` line, its rows, and its `batch` lines
//! to the journal, and `fdatasync`s the journal: that one sync makes the group durable, and the
//! batches are acknowledged after it. The rows are then written to the bets file, *not* synced:
//! a crash that loses the bets file's unsynced tail is repaired at start-up from the journal's
//! copy (`check.rs`). The bets file is synced at close and before every compaction (not at the draw: its rows are
//! durable in the journal until a compaction, which syncs them first).
//!
//! **Compaction.** Once the rows the journal carries pass `LOTTERY_JOURNAL_COMPACT_BYTES`, the
//! bets file is synced (every row the journal carries is then durable in it), and the journal is
//! rewritten without its rows: its records, header first, written to `<journal>.tmp`, synced,
//! locked, renamed over the journal, and the directory synced. A crash before the rename leaves the old
//! journal (its rows still carried, the `.tmp` ignored and overwritten next time); after it, the
//! new one, whose every group's rows the bets file holds, synced. The same happens at close.
//!
//! `LOTTERY_TEST_STOP_AT` (tests only) stops the committer at one point of a commit or of a
//! compaction, so a test can kill the central there: see [`StopAt`].

use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use tracing::{error, info};

use crate::storage::StorageError;

/// A point of a group commit or of a compaction where a test can stop the central.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum StopPoint {
    /// The group's journal write is done, not synced.
    JournalWritten,
    /// The journal is synced: the group is durable, its rows not yet in the bets file.
    JournalSynced,
    /// Half of the group's rows are written to the bets file.
    RowsHalfWritten,
    /// All of the group's rows are written to the bets file (not synced), before the acks.
    RowsWritten,
    /// The compacted journal is written and synced as `<journal>.tmp`, not yet renamed.
    CompactionWritten,
    /// The compacted journal is renamed over the journal; the directory is not yet synced.
    CompactionRenamed,
}

impl StopPoint {
    const ALL: [(&'static str, Self); 6] = [
        ("journal_written", Self::JournalWritten),
        ("journal_synced", Self::JournalSynced),
        ("rows_half_written", Self::RowsHalfWritten),
        ("rows_written", Self::RowsWritten),
        ("compaction_written", Self::CompactionWritten),
        ("compaction_renamed", Self::CompactionRenamed),
    ];

    fn name(self) -> &'static str {
        Self::ALL.iter().find(|(_, p)| *p == self).map_or("?", |(name, _)| name)
    }
}

/// A test hook: `LOTTERY_TEST_STOP_AT=<point>[:<n>]` stops the committer the `n`th time (1 by
/// default) it reaches `point` ([`StopPoint`]'s names): it logs `action: test_stop` with the
/// point and `bets_synced_bytes` (the bets file's length at its last sync: what a power loss
/// would leave of it) and blocks for good, holding the store's lock, so nothing more is written
/// until the test kills the process.
#[derive(Debug)]
pub(super) struct StopAt {
    point: StopPoint,
    nth: u64,
    seen: AtomicU64,
}

impl StopAt {
    /// The hook `LOTTERY_TEST_STOP_AT` asks for, if any. A value that cannot be read is logged
    /// and ignored (it is a test hook, not a setting).
    pub(super) fn from_env() -> Option<Self> {
        let value = std::env::var("LOTTERY_TEST_STOP_AT").ok()?;
        let (name, nth) = value.split_once(':').unwrap_or((value.as_str(), "1"));
        let point = StopPoint::ALL.iter().find(|(n, _)| *n == name).map(|(_, p)| *p);
        match (point, nth.parse::<u64>()) {
            (Some(point), Ok(nth)) if nth > 0 => Some(Self { point, nth, seen: AtomicU64::new(0) }),
            _ => {
                let names: Vec<&str> = StopPoint::ALL.iter().map(|(n, _)| *n).collect();
                error!(action = "test_stop", result = "fail", value = %value, error = format!("LOTTERY_TEST_STOP_AT must be one of {} with an optional :N (N ≥ 1); ignored", names.join(", ")));
                None
            }
        }
    }

    /// Blocks for good if this is the point and the time to stop.
    fn reached(&self, point: StopPoint, at: Where) {
        if point != self.point || self.seen.fetch_add(1, Ordering::SeqCst) + 1 != self.nth {
            return;
        }
        info!(
            action = "test_stop",
            result = "success",
            point = point.name(),
            bets_synced_bytes = at.bets_synced,
            group_start = at.group_start,
            journal_start = at.journal_start,
        );
        loop {
            std::thread::park();
        }
    }
}

/// Where the files stand at a [`StopPoint`], for the test that stops there.
#[derive(Debug, Clone, Copy)]
pub(super) struct Where {
    /// The bets file's length at its last sync: what a power loss would leave of it.
    pub(super) bets_synced: u64,
    /// Where the group's rows start in the bets file (the committed end before it).
    pub(super) group_start: u64,
    /// Where the group's journal write starts (the journal's length before it).
    pub(super) journal_start: u64,
}

/// Calls [`StopAt::reached`] when there is a hook.
pub(super) fn stop_at(hook: Option<&StopAt>, point: StopPoint, at: Where) {
    if let Some(hook) = hook {
        hook.reached(point, at);
    }
}

/// One group commit's bytes and where they go.
pub(super) struct GroupWrite {
    /// Where the rows go in the bets file (its committed end).
    pub(super) at: u64,
    pub(super) rows: Vec<u8>,
    /// Where the journal's write goes (its end), and the write: the group line, the rows, the
    /// batch lines.
    pub(super) journal_at: u64,
    pub(super) journal_bytes: Vec<u8>,
    /// What the last sync of the bets file left of it (for the test hook).
    pub(super) bets_synced: u64,
}

impl GroupWrite {
    fn at(&self) -> Where {
        Where {
            bets_synced: self.bets_synced,
            group_start: self.at,
            journal_start: self.journal_at,
        }
    }
}

/// Writes `group` to the journal and syncs it, then writes its rows to the bets file (not
/// synced). Returns the journal's new length. On failure the caller cuts both files back.
pub(super) fn write_group(
    bets: &File,
    journal: &File,
    group: &GroupWrite,
    sync: bool,
    hook: Option<&StopAt>,
) -> io::Result<u64> {
    journal.write_all_at(&group.journal_bytes, group.journal_at)?;
    stop_at(hook, StopPoint::JournalWritten, group.at());
    if sync {
        journal.sync_data()?;
    }
    stop_at(hook, StopPoint::JournalSynced, group.at());
    // The group is durable: its rows go to the bets file, synced later (draw, close,
    // compaction); a crash that loses them is repaired from the journal's copy.
    let half = group.rows.len() / 2;
    bets.write_all_at(&group.rows[..half], group.at)?;
    stop_at(hook, StopPoint::RowsHalfWritten, group.at());
    bets.write_all_at(&group.rows[half..], group.at + half as u64)?;
    stop_at(hook, StopPoint::RowsWritten, group.at());
    Ok(group.journal_at + group.journal_bytes.len() as u64)
}

/// A compaction's new journal.
pub(super) struct Compacted {
    /// Open and locked; renamed over the journal.
    pub(super) journal: File,
    /// Whether the directory was synced after the rename (if not, it must be before the next
    /// write).
    pub(super) dir_synced: bool,
}

/// Syncs the bets file, then replaces the journal at `journal_path` with `text` (its records
/// without their rows) through `<journal>.tmp`: written, synced, locked, renamed over, and the
/// directory synced (see the module's doc).
///
/// # Errors
/// Any failure before the rename: the old journal is still the journal, whole.
pub(super) fn compact(
    bets: &File,
    journal_path: &Path,
    text: &str,
    sync: bool,
    hook: Option<&StopAt>,
    at: Where,
) -> Result<Compacted, StorageError> {
    let write = |path: &Path| {
        let path = path.to_owned();
        move |source| StorageError::Write { path, source }
    };
    if sync {
        // Every row the journal carries must be durable in the bets file before it drops them.
        bets.sync_data().map_err(write(Path::new("the bets file")))?;
    }
    let temporary = temporary_path(journal_path);
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .open(&temporary)
        .map_err(|source| StorageError::Open { path: temporary.clone(), source })?;
    file.write_all_at(text.as_bytes(), 0).map_err(write(&temporary))?;
    if sync {
        file.sync_all().map_err(write(&temporary))?;
    }
    // The new journal is locked before it is the journal: no moment without a lock on it.
    rustix::fs::flock(&file, rustix::fs::FlockOperation::NonBlockingLockExclusive)
        .map_err(|e| StorageError::Write { path: temporary.clone(), source: e.into() })?;
    stop_at(hook, StopPoint::CompactionWritten, at);
    std::fs::rename(&temporary, journal_path).map_err(write(journal_path))?;
    stop_at(hook, StopPoint::CompactionRenamed, at);
    let dir_synced = !sync || sync_dir_of(journal_path).is_ok();
    Ok(Compacted { journal: file, dir_synced })
}

/// Syncs the directory that holds `path` (after a rename whose directory sync failed).
pub(super) fn sync_dir_of(path: &Path) -> io::Result<()> {
    let dir = path.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(Path::new("."));
    File::open(dir)?.sync_all()
}

/// `<journal>.tmp`.
pub(super) fn temporary_path(journal_path: &Path) -> PathBuf {
    let mut temporary = journal_path.to_owned().into_os_string();
    temporary.push(".tmp");
    PathBuf::from(temporary)
}

/// Why a group commit wrote nothing.
pub(super) enum WriteFailure {
    /// Free space would fall below `min_free_bytes`: nothing was written.
    LowSpace { free: u64 },
    /// A write or sync failed; what was written is cut back.
    Io(io::Error),
}

impl WriteFailure {
    /// What a batch of the failed group is answered.
    pub(super) fn to_error(&self, path: &std::path::Path, floor: u64) -> StorageError {
        match self {
            Self::LowSpace { free } => {
                StorageError::LowDiskSpace { path: path.to_owned(), free: *free, floor }
            }
            Self::Io(e) => StorageError::Write {
                path: path.to_owned(),
                source: io::Error::new(e.kind(), e.to_string()),
            },
        }
    }
}

/// Cuts what a failed write left past the committed ends: the bets file first and synced, then
/// the journal and synced. A cut that is not durable could reappear after a power loss once a
/// later record made the journal's shorter length durable: rows past the journal's end, which
/// recovery refuses. In this order a crash in between leaves a last group short of its rows,
/// which recovery cuts.
/// Free bytes (for an unprivileged user) on `file`'s filesystem; `None` when it cannot be read.
pub(super) fn free_bytes(file: &File) -> Option<u64> {
    let stats = rustix::fs::fstatvfs(file).ok()?;
    Some(stats.f_bavail.saturating_mul(stats.f_frsize))
}

pub(super) fn cut_back(
    bets: &File,
    at: u64,
    journal: &File,
    journal_at: u64,
    sync: bool,
) -> io::Result<()> {
    bets.set_len(at)?;
    if sync {
        bets.sync_data()?;
    }
    journal.set_len(journal_at)?;
    if sync {
        journal.sync_data()?;
    }
    Ok(())
}
