//! The draw's receipts in the database: computed once, by the central that records the draw,
//! from the stored bets (the batches' rows, the bets file's, as the export writes them: finished
//! from the state each group commit carried on, or hashed again where a row changed), and kept
//! in `receipts` with the draw's digest in `draw.sha256`, so that every central sharing the
//! database sends the same receipts and logs the same digest, however late it reads the draw.

use futures::TryStreamExt;
use tokio_postgres::Transaction;

use super::connect::{Shared, read_agency};
use crate::domain::{AgencyId, Receipt, ReceiptHasher, Receipts};
use crate::storage::{ReceiptsBuilder, StorageError};

/// Every agency's receipt over the bets the database holds, each agency's in the order it sent
/// them, without reading them when it can: an agency whose batches are all as their group commit
/// stored them (each batch's `xmin` is still the `stored_xid` it was stored by: no `UPDATE` since;
/// their count and bets are its `last_seq` and `stored_bets`: none deleted) has its receipt
/// finished from the SHA-256 state that commit left in its row (`agencies.receipt`, the hash of
/// exactly those rows). Any other agency's rows are read and hashed as stored.
///
/// # Errors
/// `Database` when the bets cannot be read; `Corrupt` for stored rows that are not bets-file rows.
pub(super) async fn compute(
    tx: &Transaction<'_>,
    shared: &Shared,
) -> Result<Receipts, StorageError> {
    let fail = |e: tokio_postgres::Error| shared.error("read the bets for the receipts", &e);
    // One pass over `batches`' own pages (its `rows` are out of line, not read). Every batch's
    // agency has a row (a foreign key).
    let rows = tx
        .query(
            "SELECT a.agency, a.stored_bets, a.receipt,
                 coalesce(b.batches = a.last_seq AND b.bets = a.stored_bets AND b.changed = 0,
                     false)
             FROM agencies a LEFT JOIN (
                 SELECT agency, count(*) AS batches, sum(bets) AS bets,
                     count(*) FILTER (WHERE xmin::text::bigint <> stored_xid % 4294967296)
                         AS changed
                 FROM batches GROUP BY agency) b USING (agency)
             WHERE a.stored_bets > 0 OR b.agency IS NOT NULL
             ORDER BY a.agency",
            &[],
        )
        .await
        .map_err(fail)?;
    let mut receipts = Vec::with_capacity(rows.len());
    let mut read = Vec::new();
    for row in rows {
        let agency: i32 = row.get(0);
        let bets = u64::try_from(row.get::<_, i64>(1)).unwrap_or(0);
        let state: Option<&[u8]> = row.get(2);
        let whole: bool = row.get(3);
        let hasher = match state {
            Some(state) if whole => ReceiptHasher::resume(bets, state),
            _ => None,
        };
        match hasher {
            Some(hasher) => receipts.push((read_agency(agency, &shared.target)?, hasher.finish())),
            None => read.push(agency),
        }
    }
    if !read.is_empty() {
        let hashed = hash_rows(tx, shared, &read).await?;
        for agency in &read {
            let agency = read_agency(*agency, &shared.target)?;
            let receipt = hashed.receipt_for(agency);
            if receipt.bets > 0 {
                receipts.push((agency, receipt));
            }
        }
    }
    Ok(Receipts::new(receipts))
}

/// The receipts of `agencies`' rows as stored, read and hashed (no bet decoded).
async fn hash_rows(
    tx: &Transaction<'_>,
    shared: &Shared,
    agencies: &[i32],
) -> Result<Receipts, StorageError> {
    let fail = |e: tokio_postgres::Error| shared.error("read the bets for the receipts", &e);
    let rows = tx
        .query_raw(
            // Each agency's rows in the order it sent them (its batches' order is its `seq`'s),
            // agency after agency: the primary key's order.
            "SELECT rows FROM batches WHERE agency = ANY($1) ORDER BY agency, seq",
            [agencies],
        )
        .await
        .map_err(fail)?;
    let mut rows = std::pin::pin!(rows);
    let mut builder = ReceiptsBuilder::default();
    let bad = |e: std::io::Error| shared.corrupt(format!("the stored bets: {e}"));
    while let Some(row) = rows.try_next().await.map_err(fail)? {
        builder.feed(row.get::<_, &[u8]>(0)).map_err(bad)?;
    }
    builder.finish().map_err(bad)
}

/// Records `receipts` beside the draw row.
///
/// # Errors
/// `Database` when they cannot be written.
pub(super) async fn record(
    tx: &Transaction<'_>,
    shared: &Shared,
    receipts: &Receipts,
) -> Result<(), StorageError> {
    let fail = |e: tokio_postgres::Error| shared.error("record the receipts", &e);
    let (mut agencies, mut bets, mut digests) = (Vec::new(), Vec::new(), Vec::new());
    for (agency, receipt) in receipts.iter() {
        agencies.push(i32::try_from(agency.get()).unwrap_or(i32::MAX));
        bets.push(i64::try_from(receipt.bets).unwrap_or(i64::MAX));
        digests.push(receipt.sha256.to_vec());
    }
    tx.execute(
        "INSERT INTO receipts (agency, bets, sha256)
         SELECT * FROM unnest($1::integer[], $2::bigint[], $3::bytea[])",
        &[&agencies, &bets, &digests],
    )
    .await
    .map_err(fail)?;
    Ok(())
}

/// The receipts recorded with the draw, checked against the draw's digest `sha256`.
///
/// # Errors
/// `Database` when they cannot be read; `Corrupt` when they do not add up to the digest.
pub(super) async fn read(
    tx: &Transaction<'_>,
    shared: &Shared,
    sha256: &[u8],
) -> Result<Receipts, StorageError> {
    let fail = |e: tokio_postgres::Error| shared.error("read the receipts", &e);
    let rows = tx
        .query("SELECT agency, bets, sha256 FROM receipts ORDER BY agency", &[])
        .await
        .map_err(fail)?;
    let mut receipts = Vec::with_capacity(rows.len());
    for row in rows {
        let agency = read_agency(row.get(0), &shared.target)?;
        let bets: i64 = row.get(1);
        let digest: Vec<u8> = row.get(2);
        let sha256 = <[u8; 32]>::try_from(digest.as_slice())
            .map_err(|_| shared.corrupt(format!("agency {agency}'s receipt is not a SHA-256")))?;
        receipts.push((agency, Receipt { bets: u64::try_from(bets).unwrap_or(0), sha256 }));
    }
    let receipts = Receipts::new(receipts);
    if receipts.digest().sha256.as_slice() != sha256 {
        let reason = "the recorded receipts do not add up to the draw's digest".to_owned();
        return Err(shared.corrupt(reason));
    }
    Ok(receipts)
}

/// The first agency (in agency order) whose receipt differs between `recorded` and `now`.
pub(super) fn first_difference(recorded: &Receipts, now: &Receipts) -> Option<AgencyId> {
    let agencies: std::collections::BTreeSet<AgencyId> =
        recorded.iter().chain(now.iter()).map(|(agency, _)| agency).collect();
    agencies.into_iter().find(|&a| recorded.receipt_for(a) != now.receipt_for(a))
}
