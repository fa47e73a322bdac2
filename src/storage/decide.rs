//! The rule that decides a batch, and the loop that takes a group: written once, applied by both
//! stores' committers.
//!
//! A committer takes a group of queued batches ([`take_group`]), reads each agency's durable
//! progress (the file store from its journal's ledger, the database from the agencies' rows,
//! locked), and decides each batch in order with [`decide`] against that progress as the group
//! leaves it: the group's earlier batches count. What it decides is stored, or refused, as one.

use super::{AgencyProgress, StorageError, Stored};
use crate::domain::AgencyId;

/// A batch to decide: whose it is, its number, and how many bets it holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Proposal {
    pub agency: AgencyId,
    pub seq: u64,
    pub bets: u64,
}

/// Decides `batch` against `progress`, its agency's progress as the group so far leaves it, and
/// moves `progress` on when the batch is to be stored. `closed`: the draw is recorded, so no
/// batch of any agency may be stored; `limit`: most bets stored per agency.
///
/// In order: batch 0 or an empty batch is malformed; a batch of an agency that is ready (or
/// after the draw) is refused; a batch at or below the last stored one is a retry, acknowledged
/// without storing it again; one that skips ahead is a gap; one that would pass the limit is
/// refused; anything else is stored.
///
/// # Errors
/// `BadBatch`, `AgencyClosed`, `SequenceGap` or `AgencyLimit`, as above.
pub fn decide(
    progress: &mut AgencyProgress,
    batch: Proposal,
    closed: bool,
    limit: u64,
) -> Result<Stored, StorageError> {
    let Proposal { agency, seq, bets } = batch;
    if seq == 0 || bets == 0 {
        let reason =
            if seq == 0 { "batch numbers start at 1" } else { "a batch holds at least one bet" };
        return Err(StorageError::BadBatch { agency, seq, reason });
    }
    if progress.ready || closed {
        return Err(StorageError::AgencyClosed { agency });
    }
    if seq <= progress.last_seq {
        return Ok(Stored::Duplicate);
    }
    if seq != progress.last_seq + 1 {
        return Err(StorageError::SequenceGap {
            agency,
            expected: progress.last_seq + 1,
            got: seq,
        });
    }
    if progress.stored_bets.saturating_add(bets) > limit {
        let stored = progress.stored_bets;
        return Err(StorageError::AgencyLimit { agency, stored, bets, limit });
    }
    progress.last_seq = seq;
    progress.stored_bets += bets;
    Ok(Stored::New)
}

/// Takes the next group off the front of `queue`: as many batches as fit in `most` (measured by
/// `size`: bytes of rows, or bets), and always at least one, so an oversized batch still goes.
pub fn take_group<T>(queue: &mut Vec<T>, most: u64, size: impl Fn(&T) -> u64) -> Vec<T> {
    let (mut taken, mut total) = (0, 0u64);
    for pending in queue.iter() {
        total = total.saturating_add(size(pending));
        if taken > 0 && total > most {
            break;
        }
        taken += 1;
    }
    queue.drain(..taken).collect()
}

/// The table of cases both stores are held to: a sequence of batches of agency 1 (`(seq,
/// bets)`), with what each is answered, from a store with a limit of [`TABLE_LIMIT`] bets per
/// agency and nothing stored. Run through [`decide`] below, and through each store by their tests.
pub const TABLE: &[((u64, u64), Answer)] = &[
    ((0, 1), Answer::BadBatch),
    ((1, 0), Answer::BadBatch),
    ((2, 1), Answer::Gap { expected: 1 }),
    ((1, 2), Answer::New),
    ((1, 2), Answer::Duplicate),
    ((2, 3), Answer::New),
    ((1, 5), Answer::Duplicate),
    ((4, 1), Answer::Gap { expected: 3 }),
    ((3, 6), Answer::Limit),
    ((3, 5), Answer::New),
    ((3, 5), Answer::Duplicate),
];

/// The limit of bets per agency the [`TABLE`] assumes.
pub const TABLE_LIMIT: u64 = 10;

/// An answer of the [`TABLE`], as the tests compare it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Answer {
    New,
    Duplicate,
    BadBatch,
    Gap { expected: u64 },
    Limit,
    Closed,
    Other,
}

impl Answer {
    /// How a store answered.
    pub fn of(result: &Result<Stored, StorageError>) -> Self {
        match result {
            Ok(Stored::New) => Self::New,
            Ok(Stored::Duplicate) => Self::Duplicate,
            Err(StorageError::BadBatch { .. }) => Self::BadBatch,
            Err(StorageError::SequenceGap { expected, .. }) => Self::Gap { expected: *expected },
            Err(StorageError::AgencyLimit { .. }) => Self::Limit,
            Err(StorageError::AgencyClosed { .. }) => Self::Closed,
            Err(_) => Self::Other,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn agency() -> AgencyId {
        AgencyId::new(1).unwrap()
    }

    #[test]
    fn the_table_decides_as_it_says() {
        let mut progress = AgencyProgress::default();
        for &((seq, bets), expected) in TABLE {
            let batch = Proposal { agency: agency(), seq, bets };
            let answer = Answer::of(&decide(&mut progress, batch, false, TABLE_LIMIT));
            assert_eq!(answer, expected, "batch {seq} of {bets} bets");
        }
        assert_eq!(progress, AgencyProgress { last_seq: 3, stored_bets: 10, ready: false });
    }

    #[test]
    fn nothing_is_stored_once_ready_or_drawn() {
        let batch = Proposal { agency: agency(), seq: 1, bets: 1 };
        let mut ready = AgencyProgress { ready: true, ..AgencyProgress::default() };
        assert_eq!(Answer::of(&decide(&mut ready, batch, false, 10)), Answer::Closed);
        let mut open = AgencyProgress::default();
        assert_eq!(Answer::of(&decide(&mut open, batch, true, 10)), Answer::Closed);
        assert_eq!(open, AgencyProgress::default(), "a refusal moves nothing on");
        let retry = Proposal { seq: 0, ..batch };
        assert_eq!(Answer::of(&decide(&mut ready, retry, true, 10)), Answer::BadBatch);
    }

    #[test]
    fn a_group_takes_what_fits_and_at_least_one() {
        let mut queue = vec![5u64, 3, 4, 1];
        assert_eq!(take_group(&mut queue, 8, |n| *n), vec![5, 3]);
        assert_eq!(take_group(&mut queue, 2, |n| *n), vec![4], "one, even past the most");
        assert_eq!(take_group(&mut queue, 2, |n| *n), vec![1]);
        assert!(take_group(&mut queue, 2, |n| *n).is_empty());
    }
}
