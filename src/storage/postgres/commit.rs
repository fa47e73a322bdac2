//! Group commit into PostgreSQL: the committer task takes every batch queued (up to
//! [`MAX_GROUP_BETS`] bets) and stores them in one transaction, so one `COMMIT` (one flush of
//! the write-ahead log) serves every agency that was waiting, as the file store's group commit
//! does with its fsyncs.

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex as StdMutex, PoisonError};
use std::time::Instant;

use bytes::{BufMut, Bytes, BytesMut};
use futures::SinkExt;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn};

use super::COMMIT_LOCK;
use super::connect::{Shared, agency_id, describe, describe_pool, group_failed, progress};
use crate::csv_rows::encode_rows_and_winners;
use crate::domain::{AgencyId, Bets, ReceiptHasher};
use crate::storage::decide::{Proposal, decide, take_group};
use crate::storage::{
    AckSender, AgencyProgress, COMMIT_SECONDS_METRIC, SessionEpoch, StorageError, Stored,
};

/// Most bets one group transaction stores; more queued wait for the next one.
pub(super) const MAX_GROUP_BETS: u64 = 50_000;

/// `COPY … (FORMAT binary)`'s header: signature, flags, header extension length.
const COPY_HEADER: &[u8] = b"PGCOPY\n\xff\r\n\0\0\0\0\0\0\0\0\0";

/// Its trailer: a field count of -1.
const COPY_TRAILER: &[u8] = &[0xff, 0xff];

/// Taken first by every group transaction: the draw takes [`COMMIT_LOCK`] exclusively, so it
/// waits for the groups in flight, and a group that starts after it waits for it to commit.
const SHARE_COMMIT_LOCK: &str = "SELECT pg_advisory_xact_lock_shared($1)";

/// Locks the group's agency rows, in agency order (two centrals never deadlock), and reads them,
/// and whether the draw is recorded. Run after [`SHARE_COMMIT_LOCK`], so its snapshot sees a draw
/// that committed while the group waited for that lock.
const LOCK_AGENCIES: &str = "SELECT agency, epoch, last_seq, stored_bets, ready,
        EXISTS (SELECT 1 FROM draw), receipt FROM agencies
    WHERE agency = ANY($1) ORDER BY agency FOR UPDATE";

/// Moves the agencies of the stored batches on (their batches are in by then, `COPY`ed in the
/// order given: their `position`), with their receipts' SHA-256 state past the new rows.
const MOVE_AGENCIES: &str = "UPDATE agencies
    SET last_seq = t.last_seq, stored_bets = t.stored_bets, receipt = t.receipt,
        active_at = now()
    FROM unnest($1::integer[], $2::bigint[], $3::bigint[], $4::bytea[])
        AS t(agency, last_seq, stored_bets, receipt)
    WHERE agencies.agency = t.agency";

/// The batches' `COPY`: one row per batch, its bets as the bets file's rows.
const COPY_BATCHES: &str =
    "COPY batches (agency, seq, bets, rows, winners) FROM STDIN (FORMAT binary)";

/// A batch waiting for its group, already its `COPY` binary row (encoded by the session's task,
/// not the committer's).
#[derive(Debug)]
pub(super) struct Pending {
    agency: AgencyId,
    epoch: SessionEpoch,
    seq: u64,
    bets: u64,
    /// Its `COPY` row, and within it the bets' rows (for the receipt).
    row: Bytes,
    rows: Bytes,
    done: AckSender,
}

impl Pending {
    pub(super) fn new(
        agency: AgencyId,
        epoch: SessionEpoch,
        seq: u64,
        bets: &(impl Bets + ?Sized),
        done: AckSender,
    ) -> Self {
        let count = bets.bet_count() as u64;
        let (row, rows) = copy_row(agency, seq, count, bets);
        Self { agency, epoch, seq, bets: count, row, rows, done }
    }
}

/// The batches submitted and not yet taken by the committer, in the order submitted.
#[derive(Debug, Default)]
pub(super) struct Queue {
    pending: StdMutex<Vec<Pending>>,
    /// Woken when a batch is queued.
    queued: Notify,
}

impl Queue {
    /// Queues `pending` for the committer.
    pub(super) fn push(&self, pending: Pending) {
        self.pending.lock().unwrap_or_else(PoisonError::into_inner).push(pending);
        self.queued.notify_one();
    }

    fn next_group(&self) -> Vec<Pending> {
        let mut pending = self.pending.lock().unwrap_or_else(PoisonError::into_inner);
        take_group(&mut pending, MAX_GROUP_BETS, |p| p.bets)
    }

    fn is_empty(&self) -> bool {
        self.pending.lock().unwrap_or_else(PoisonError::into_inner).is_empty()
    }
}

/// The committer: commits queued batches until `stop`, then what is still queued, and ends.
pub(super) async fn run(shared: Arc<Shared>, queue: Arc<Queue>, stop: CancellationToken) {
    loop {
        let group = queue.next_group();
        if group.is_empty() {
            tokio::select! {
                biased;
                () = queue.queued.notified() => continue,
                () = stop.cancelled() => {
                    if queue.is_empty() {
                        return;
                    }
                    continue;
                }
            }
        }
        commit(&shared, group).await;
    }
}

/// Commits `group` in one transaction and answers each batch.
async fn commit(shared: &Shared, group: Vec<Pending>) {
    let started = Instant::now();
    let stored = match shared.commit_pool.get().await {
        Ok(mut client) => {
            let stored = store_group(shared, &mut client, &group).await;
            if stored.is_err() {
                // Whatever the failed statement left behind on this connection (a transaction
                // the database aborted, a COPY cut short), the next group must not inherit it
                // and fail with "current transaction is aborted", hiding this group's cause:
                // the connection is closed, and the pool opens a new one.
                drop(deadpool_postgres::Object::take(client));
            }
            stored
        }
        Err(e) => Err(describe_pool(&e)),
    };
    // As the file store's: from taking the connection to the end of `COMMIT` (or its failure).
    metrics::histogram!(COMMIT_SECONDS_METRIC).record(started.elapsed().as_secs_f64());
    match stored {
        Ok(outcomes) => {
            for (pending, outcome) in group.into_iter().zip(outcomes) {
                let _ = pending.done.send(outcome);
            }
        }
        Err(reason) => {
            error!(action = "group_commit", result = "fail", target = %shared.target, batches = group.len(), error = %reason);
            for pending in group {
                let _ = pending.done.send(Err(group_failed(&shared.target, &reason)));
            }
        }
    }
}

/// Decides every batch of `group` against its agency's row, stores the accepted ones, commits,
/// on `client`. `Err` (the first failed statement's SQLSTATE and message) when the transaction
/// failed: nothing of the group is acknowledged.
async fn store_group(
    shared: &Shared,
    client: &mut deadpool_postgres::Object,
    group: &[Pending],
) -> Result<Vec<Result<Stored, StorageError>>, String> {
    let describe = |e: tokio_postgres::Error| describe(&e);
    let tx = client.transaction().await.map_err(describe)?;
    let mut agencies: Vec<i32> = group.iter().map(|p| agency_id(p.agency)).collect();
    agencies.sort_unstable();
    agencies.dedup();
    // Prepared once per connection: a statement given as text costs a parse and a round trip.
    let share = tx.prepare_cached(SHARE_COMMIT_LOCK).await.map_err(describe)?;
    tx.execute(&share, &[&COMMIT_LOCK]).await.map_err(describe)?;
    let lock = tx.prepare_cached(LOCK_AGENCIES).await.map_err(describe)?;
    let rows = tx.query(&lock, &[&agencies]).await.map_err(describe)?;
    // No batch after the draw, of any agency: it would be a bet the draw missed.
    let drawn = rows.first().is_some_and(|row| row.get::<_, bool>(5));
    let mut state: HashMap<i32, (SessionEpoch, AgencyProgress)> = rows
        .iter()
        .map(|row| (row.get(0), (row.get(1), progress(row.get(2), row.get(3), row.get(4)))))
        .collect();
    let receipts: HashMap<i32, Option<ReceiptHasher>> =
        rows.iter().map(|row| (row.get(0), resume(row.get(3), row.get(6)))).collect();
    let limit = shared.options.max_bets_per_agency;
    let mut outcomes = Vec::with_capacity(group.len());
    let mut accepted: Vec<&Pending> = Vec::new();
    for pending in group {
        let agency = pending.agency;
        let batch = Proposal { agency, seq: pending.seq, bets: pending.bets };
        let outcome = match state.get_mut(&agency_id(agency)) {
            Some((epoch, progress)) if *epoch == pending.epoch => {
                decide(progress, batch, drawn, limit)
            }
            // No row, or another session's epoch: a newer session took over.
            _ => Err(StorageError::Fenced { agency }),
        };
        if matches!(outcome, Ok(Stored::New)) {
            accepted.push(pending);
        }
        outcomes.push(outcome);
    }
    if accepted.is_empty() {
        // Nothing to write: the row locks go with the rollback.
        return Ok(outcomes);
    }
    let sink = tx.copy_in::<_, Bytes>(COPY_BATCHES).await.map_err(describe)?;
    let mut sink = std::pin::pin!(sink);
    sink.feed(Bytes::from_static(COPY_HEADER)).await.map_err(describe)?;
    for pending in &accepted {
        sink.feed(pending.row.clone()).await.map_err(describe)?;
    }
    sink.feed(Bytes::from_static(COPY_TRAILER)).await.map_err(describe)?;
    // Hashed while the database takes the `COPY`.
    let receipts = carry_receipts(receipts, &accepted);
    sink.as_mut().finish().await.map_err(describe)?;
    let mut moved: Vec<i32> = accepted.iter().map(|p| agency_id(p.agency)).collect();
    moved.sort_unstable();
    moved.dedup();
    let last_seqs: Vec<i64> = moved.iter().map(|a| seq_id(state[a].1.last_seq)).collect();
    let stored: Vec<i64> = moved.iter().map(|a| seq_id(state[a].1.stored_bets)).collect();
    let receipts: Vec<Option<Vec<u8>>> = moved
        .iter()
        .map(|a| receipts.get(a).and_then(|h| h.as_ref().map(ReceiptHasher::state)))
        .collect();
    let record = tx.prepare_cached(MOVE_AGENCIES).await.map_err(describe)?;
    let params: [&(dyn tokio_postgres::types::ToSql + Sync); 4] =
        [&moved, &last_seqs, &stored, &receipts];
    tx.execute(&record, &params).await.map_err(describe)?;
    tx.commit().await.map_err(describe)?;
    shared.groups.fetch_add(1, Ordering::Relaxed);
    if shared.first_commit.set(Instant::now()).is_ok() {
        info!(action = "group_commit", result = "success", target = %shared.target, first = true);
    }
    for (pending, outcome) in group.iter().zip(&outcomes) {
        if let Err(e @ StorageError::Fenced { .. }) = outcome {
            warn!(action = "apuesta_recibida", result = "fail", agency = %pending.agency, seq = pending.seq, error = %e);
        }
    }
    Ok(outcomes)
}

/// An agency's receipt hasher from its row: its SHA-256 state so far, or a new one while it has
/// no bets; `None` when it has bets and no state this central can resume (NULL, or saved by
/// another SHA-256 layout): its receipt stays unknown (NULL), and the draw hashes its rows.
fn resume(stored_bets: i64, state: Option<&[u8]>) -> Option<ReceiptHasher> {
    match state {
        _ if stored_bets == 0 => Some(ReceiptHasher::default()),
        Some(state) => ReceiptHasher::resume(0, state),
        None => None,
    }
}

/// `receipts` carried on past the rows of `accepted` (each agency's in `seq` order).
fn carry_receipts(
    mut receipts: HashMap<i32, Option<ReceiptHasher>>,
    accepted: &[&Pending],
) -> HashMap<i32, Option<ReceiptHasher>> {
    for pending in accepted {
        if let Some(Some(hasher)) = receipts.get_mut(&agency_id(pending.agency)) {
            hasher.update(&pending.rows, pending.bets);
        }
    }
    receipts
}

fn seq_id(value: u64) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}

/// Batch `seq` of `agency` as a row of [`COPY_BATCHES`] (`FORMAT binary`): the field count, then
/// each field's length and big-endian value: `agency`, `seq`, the bet count, the bets as the
/// bets file's rows, and the winning bets' rows (NULL, length -1, when none won). Also the bets'
/// rows alone, a slice of it.
fn copy_row(agency: AgencyId, seq: u64, count: u64, bets: &(impl Bets + ?Sized)) -> (Bytes, Bytes) {
    let (rows, winners) = encode_rows_and_winners(bets);
    let mut row = BytesMut::with_capacity(rows.len() + winners.len() + 40);
    row.put_i16(5);
    row.put_i32(4);
    row.put_i32(agency_id(agency));
    row.put_i32(8);
    row.put_i64(seq_id(seq));
    row.put_i32(4);
    row.put_i32(i32::try_from(count).unwrap_or(i32::MAX));
    row.put_i32(i32::try_from(rows.len()).unwrap_or(i32::MAX));
    let start = row.len();
    row.put_slice(&rows);
    let end = row.len();
    if winners.is_empty() {
        row.put_i32(-1);
    } else {
        row.put_i32(i32::try_from(winners.len()).unwrap_or(i32::MAX));
        row.put_slice(&winners);
    }
    let row = row.freeze();
    let rows = row.slice(start..end);
    (row, rows)
}
