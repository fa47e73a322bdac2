//! Schema version 6: a row per batch instead of a row per bet. Each batch keeps its bets as the
//! bets file's rows (`batches.rows`, `bytea`: the export is their concatenation, the receipts
//! their hash) and its winning bets' rows apart (`batches.winners`, NULL when none won: the draw
//! reads those alone). A database of version 5 has its bets in `bets`, a row each: they are
//! encoded into their batches here, in the migration's transaction, with the store's own encoder
//! (so the export stays byte for byte what it was), and `bets` becomes a view that decodes the
//! rows for SQL users.

use std::collections::BTreeMap;

use futures::TryStreamExt;
use tokio_postgres::Transaction;

use crate::csv_rows::encode_rows_and_winners;
use crate::domain::{AgencyId, Bet, BetNumber, Document, ReceiptHasher};

/// The version this migration makes.
pub(super) const VERSION: i32 = 6;

/// Its first part, plain SQL: the new columns, filled by [`convert`]. `rows` is stored out of
/// line uncompressed (`EXTERNAL`): compressing it would cost the database CPU on every commit
/// for a little disk.
///
/// `stored_xid` is the transaction that stored the batch: a row changed since (an `UPDATE` by
/// hand) has another `xmin`, so the draw finds it without reading any rows. `agencies.receipt`
/// is the SHA-256 state of the agency's rows so far, carried on by every group commit: the draw
/// finishes it instead of hashing every row again (see `receipts.rs`).
pub(super) const ADD_COLUMNS: &str = "ALTER TABLE batches ADD COLUMN rows bytea,
        ADD COLUMN winners bytea,
        ADD COLUMN stored_xid bigint NOT NULL DEFAULT pg_current_xact_id()::text::bigint;
    ALTER TABLE batches ALTER COLUMN rows SET STORAGE EXTERNAL;
    ALTER TABLE agencies ADD COLUMN receipt bytea;";

/// Its last part, once every batch has its rows: the per-bet table goes, the winners get their
/// index, and `bets` is a view decoding the rows (slow: it splits and matches every row; for
/// looking a bet up by hand, not for the lottery, which never reads it).
const FINISH: &str = r#"DROP TABLE bets;
    ALTER TABLE batches ALTER COLUMN rows SET NOT NULL;
    CREATE INDEX batches_winning ON batches (position) WHERE winners IS NOT NULL;
    CREATE VIEW bets AS
    SELECT b.agency, b.seq, (r.n - 1)::integer AS idx, f.m[1] AS document,
        f.m[2]::date AS birthdate, f.m[3]::integer AS number, r.line
    FROM batches b
    CROSS JOIN LATERAL regexp_split_to_table(convert_from(b.rows, 'UTF8'), E'\r\n')
        WITH ORDINALITY AS r(line, n)
    CROSS JOIN LATERAL regexp_match(r.line, ',([0-9]+),([0-9]{4}-[0-9]{2}-[0-9]{2}),([0-9]+)$')
        AS f(m)
    WHERE r.line <> '';"#;

/// Why the bets of a version 5 database could not be moved.
#[derive(Debug, thiserror::Error)]
pub(super) enum ConvertError {
    #[error(transparent)]
    Database(#[from] tokio_postgres::Error),
    /// The bets are not the batches': what is wrong.
    #[error("{0}")]
    Unconvertible(String),
}

/// Rows of `bets` fetched at a time, and batches written back at a time.
const FETCH: i32 = 20_000;
const WRITE: usize = 1_000;

/// Encodes every bet of `bets` into its batch's `rows` and `winners`, checks every batch got its
/// bets, and finishes the migration ([`FINISH`]).
///
/// # Errors
/// The database's; [`Unconvertible`](ConvertError::Unconvertible) when the bets are not the
/// batches' (a bet that is not valid, a batch whose bets are missing or of another count): the
/// migration rolls back and the database stays at version 5.
pub(super) async fn convert(tx: &Transaction<'_>) -> Result<(), ConvertError> {
    let select = tx
        .prepare(
            "SELECT agency, seq, first_name, last_name, document, birthdate, number
             FROM bets ORDER BY agency, seq, idx",
        )
        .await?;
    let portal = tx.bind(&select, &[]).await?;
    let mut writer = Writer::default();
    let mut batch: Option<(i32, i64, Vec<Bet>)> = None;
    loop {
        let rows: Vec<_> = tx.query_portal_raw(&portal, FETCH).await?.try_collect().await?;
        if rows.is_empty() {
            break;
        }
        for row in &rows {
            let (agency, seq): (i32, i64) = (row.try_get(0)?, row.try_get(1)?);
            let bet = decode(row)?;
            match &mut batch {
                Some((a, s, bets)) if (*a, *s) == (agency, seq) => bets.push(bet),
                _ => {
                    if let Some(done) = batch.replace((agency, seq, vec![bet])) {
                        writer.push(tx, done).await?;
                    }
                }
            }
        }
    }
    if let Some(done) = batch {
        writer.push(tx, done).await?;
    }
    writer.flush(tx).await?;
    let (agencies, states): (Vec<i32>, Vec<Vec<u8>>) =
        writer.receipts.iter().map(|(agency, hasher)| (*agency, hasher.state())).unzip();
    tx.execute(
        "UPDATE agencies SET receipt = t.receipt
         FROM unnest($1::integer[], $2::bytea[]) AS t(agency, receipt)
         WHERE agencies.agency = t.agency",
        &[&agencies, &states],
    )
    .await?;
    // Closed (dropping it sends `Close`, ahead of what follows) before `bets` can be dropped.
    drop(portal);
    let empty: i64 =
        tx.query_one("SELECT count(*) FROM batches WHERE rows IS NULL", &[]).await?.try_get(0)?;
    if empty > 0 {
        let reason = format!("{empty} batches have no bets in the bets table");
        return Err(ConvertError::Unconvertible(reason));
    }
    tx.batch_execute(FINISH).await?;
    Ok(())
}

/// A stored bet of version 5's `bets`.
fn decode(row: &tokio_postgres::Row) -> Result<Bet, ConvertError> {
    let agency: i32 = row.try_get(0)?;
    let bad = |e: &dyn std::fmt::Display| {
        ConvertError::Unconvertible(format!("a bet of agency {agency} is not valid: {e}"))
    };
    let number: i32 = row.try_get(6)?;
    Ok(Bet {
        agency: u32::try_from(agency)
            .map_err(|e| bad(&e))
            .and_then(|a| AgencyId::new(a).map_err(|e| bad(&e)))?,
        first_name: row.try_get(2)?,
        last_name: row.try_get(3)?,
        document: Document::from_string(row.try_get(4)?).map_err(|e| bad(&e))?,
        birthdate: row.try_get(5)?,
        number: u32::try_from(number)
            .map_err(|e| bad(&e))
            .and_then(|n| BetNumber::parse(n).map_err(|e| bad(&e)))?,
    })
}

/// Batches encoded, written back [`WRITE`] at a time; each agency's rows hashed as they go by
/// (they come in `seq` order), for its receipt's state.
#[derive(Default)]
struct Writer {
    receipts: BTreeMap<i32, ReceiptHasher>,
    agencies: Vec<i32>,
    seqs: Vec<i64>,
    counts: Vec<i32>,
    rows: Vec<Vec<u8>>,
    winners: Vec<Option<Vec<u8>>>,
}

impl Writer {
    async fn push(
        &mut self,
        tx: &Transaction<'_>,
        (agency, seq, bets): (i32, i64, Vec<Bet>),
    ) -> Result<(), ConvertError> {
        let (rows, winners) = encode_rows_and_winners(bets.as_slice());
        self.receipts.entry(agency).or_default().update(&rows, bets.len() as u64);
        self.agencies.push(agency);
        self.seqs.push(seq);
        self.counts.push(i32::try_from(bets.len()).unwrap_or(i32::MAX));
        self.rows.push(rows);
        self.winners.push((!winners.is_empty()).then_some(winners));
        if self.agencies.len() >= WRITE {
            self.flush(tx).await?;
        }
        Ok(())
    }

    /// Writes the batches pushed into their rows; each must exist, without rows yet, and hold
    /// as many bets as were found.
    async fn flush(&mut self, tx: &Transaction<'_>) -> Result<(), ConvertError> {
        if self.agencies.is_empty() {
            return Ok(());
        }
        let updated = tx
            .execute(
                "UPDATE batches SET rows = t.rows, winners = t.winners
                 FROM unnest($1::integer[], $2::bigint[], $3::integer[], $4::bytea[], $5::bytea[])
                     AS t(agency, seq, bets, rows, winners)
                 WHERE batches.agency = t.agency AND batches.seq = t.seq
                     AND batches.bets = t.bets AND batches.rows IS NULL",
                &[&self.agencies, &self.seqs, &self.counts, &self.rows, &self.winners],
            )
            .await?;
        if updated != self.agencies.len() as u64 {
            let reason = format!(
                "of {} batches' bets (agencies {} to {}), {} match a batch of the same agency, \
                 seq and bet count",
                self.agencies.len(),
                self.agencies.first().unwrap_or(&0),
                self.agencies.last().unwrap_or(&0),
                updated
            );
            return Err(ConvertError::Unconvertible(reason));
        }
        let receipts = std::mem::take(&mut self.receipts);
        *self = Self { receipts, ..Self::default() };
        Ok(())
    }
}
