//! Adoption: a bets file without a journal, read with the rules the draw uses, its rows counted
//! per agency for the new journal's `base` record (see `docs/durability.md`).

use std::collections::HashMap;
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::Path;

use crate::domain::AgencyId;
use crate::storage::StorageError;
use crate::storage::rows;

/// What adopting a bets file found.
pub(super) struct Adopted {
    /// Where its whole rows end (a torn last row, without its line end, is past it).
    pub(super) end: u64,
    pub(super) agencies: Vec<(AgencyId, u64)>,
}

/// Reads every row of a bets file that has no journal with the rules the draw uses, and counts
/// each agency's rows. A last row without its line end can only be a torn write (the central
/// writes every row with its `\r\n`), never acknowledged: it is left past `end`, to be cut.
pub(super) fn adopt(bets: &File, path: &Path, len: u64) -> Result<Adopted, StorageError> {
    let end = last_line_end(bets, path, len)?;
    let mut counts: HashMap<AgencyId, u64> = HashMap::new();
    for bet in rows::load_bets_prefix(path, end)? {
        match bet {
            Ok(bet) => *counts.entry(bet.agency).or_default() += 1,
            Err(StorageError::BadRow { path, line, reason }) => {
                let reason = format!(
                    "{reason}; a bets file without a journal is adopted only when every row is a \
                     valid bet: fix or remove the row. Nothing was changed"
                );
                return Err(StorageError::BadRow { path, line, reason });
            }
            Err(e) => return Err(e),
        }
    }
    let mut agencies: Vec<(AgencyId, u64)> = counts.into_iter().collect();
    agencies.sort();
    Ok(Adopted { end, agencies })
}

/// Where the file's last `\n` ends it (0 when it has none).
pub(super) fn last_line_end(file: &File, path: &Path, len: u64) -> Result<u64, StorageError> {
    let mut buffer = vec![0u8; 64 << 10];
    let mut end = len;
    while end > 0 {
        let n = usize::try_from(end).unwrap_or(usize::MAX).min(buffer.len());
        let at = end - n as u64;
        file.read_exact_at(&mut buffer[..n], at)
            .map_err(|source| StorageError::Open { path: path.to_owned(), source })?;
        if let Some(i) = buffer[..n].iter().rposition(|b| *b == b'\n') {
            return Ok(at + i as u64 + 1);
        }
        end = at;
    }
    Ok(0)
}
