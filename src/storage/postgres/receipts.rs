//! The draw's receipts in the database: computed once, by the central that records the draw,
//! from the stored bets (encoded as the bets file's rows, as the export writes them), and kept
//! in `receipts` with the draw's digest in `draw.sha256`, so that every central sharing the
//! database sends the same receipts and logs the same digest, however late it reads the draw.

use futures::{StreamExt, TryStreamExt};
use tokio_postgres::Transaction;

use super::connect::{Shared, read_agency};
use crate::domain::{AgencyId, Receipt, Receipts};
use crate::storage::{ReceiptsBuilder, StorageError, encode_rows};

/// Every agency's receipt over the bets the database holds, each agency's in the order it sent
/// them.
///
/// # Errors
/// `Database` when the bets cannot be read; `Corrupt` for a stored bet that is not valid.
pub(super) async fn compute(
    tx: &Transaction<'_>,
    shared: &Shared,
) -> Result<Receipts, StorageError> {
    let fail = |e: tokio_postgres::Error| shared.error("read the bets for the receipts", &e);
    let rows = tx
        .query_raw(
            // Each agency's rows in the order it sent them (its batches' order is its `seq`'s),
            // agency after agency: the primary key's order, read without a sort or a join.
            "SELECT agency, first_name, last_name, document, birthdate, number
             FROM bets ORDER BY agency, seq, idx",
            std::iter::empty::<i32>(),
        )
        .await
        .map_err(fail)?;
    let mut rows = std::pin::pin!(rows.map_err(fail).chunks(4096));
    let mut builder = ReceiptsBuilder::default();
    let bad = |e: std::io::Error| shared.corrupt(format!("the stored bets: {e}"));
    while let Some(chunk) = rows.next().await {
        let mut bets = Vec::with_capacity(chunk.len());
        for row in chunk {
            bets.push(shared.bet(&row?)?);
        }
        builder.feed(&encode_rows(&bets)).map_err(bad)?;
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
