//! The draw, recorded once by whichever central gets there first (under [`DRAW_LOCK`], after the
//! groups in flight: [`COMMIT_LOCK`]), its winners read from the batches that have any; and the
//! export of every stored bet: the batches' rows, which are the file store's.

use std::collections::HashMap;
use std::io::Write;

use futures::TryStreamExt;

use super::connect::read_agency;
use super::store::PgStore;
use super::{COMMIT_LOCK, DRAW_LOCK};
use super::{receipts, schema};
use crate::domain::{AgencyId, Document, Draw};
use crate::storage::StorageError;
use crate::storage::rows::read_rows;

impl PgStore {
    /// Records the draw, or, when a central already has, reads it; `true` when this call
    /// recorded it. The winners are the winning rows of the batches that have any (found at
    /// commit), in the order their bets were stored; the receipts from every stored bet by the central that records the draw, and recorded with it
    /// (`receipts.rs`), so every central sends the same; a central reading them computes them
    /// again from the bets and refuses the draw when they differ.
    ///
    /// # Errors
    /// `Corrupt` when the recorded draw covered a different number of bets than are stored, or
    /// its receipts are not the stored bets' any more;
    /// `Database` when the database cannot be reached.
    pub async fn draw(&self) -> Result<(Draw, bool), StorageError> {
        let what = "run the draw";
        let fail = |e: tokio_postgres::Error| self.shared.error(what, &e);
        let mut client = self.shared.client(what).await?;
        let tx = client.transaction().await.map_err(fail)?;
        tx.execute("SELECT pg_advisory_xact_lock($1)", &[&DRAW_LOCK]).await.map_err(fail)?;
        tx.execute("SELECT pg_advisory_xact_lock($1)", &[&COMMIT_LOCK]).await.map_err(fail)?;
        let stored: i64 = tx
            .query_one("SELECT coalesce(sum(stored_bets), 0)::bigint FROM agencies", &[])
            .await
            .map_err(fail)?
            .get(0);
        let recorded = tx.query_opt("SELECT bets, sha256 FROM draw", &[]).await.map_err(fail)?;
        let recorded = recorded.map(|row| (row.get::<_, i64>(0), row.get::<_, Option<Vec<u8>>>(1)));
        let (fresh, receipts) = match recorded {
            Some((bets, _)) if bets != stored => {
                let reason = format!(
                    "the draw ran over {bets} bets; the database now holds {stored}: bets were \
                     stored after the draw"
                );
                return Err(self.shared.corrupt(reason));
            }
            Some((_, Some(sha256))) => {
                let recorded = receipts::read(&tx, &self.shared, &sha256).await?;
                // Checked against the bets as they are now: a receipt is sent only while the
                // stored rows still reproduce it (as the file store checks its rows at start).
                let now = receipts::compute(&tx, &self.shared).await?;
                if let Some(agency) = receipts::first_difference(&recorded, &now) {
                    let reason = format!(
                        "agency {agency}'s bets changed since the draw: its recorded receipt is \
                         no longer its stored rows'"
                    );
                    return Err(self.shared.corrupt(reason));
                }
                (false, recorded)
            }
            // Drawn by a central of before receipts: computed from the bets, as they are now.
            Some((_, None)) => (false, receipts::compute(&tx, &self.shared).await?),
            None => {
                let receipts = receipts::compute(&tx, &self.shared).await?;
                let sha256 = receipts.digest().sha256.to_vec();
                tx.execute(
                    "INSERT INTO draw (bets, central, sha256) VALUES ($1, $2, $3)",
                    &[&stored, &self.shared.central, &sha256],
                )
                .await
                .map_err(fail)?;
                receipts::record(&tx, &self.shared, &receipts).await?;
                (true, receipts)
            }
        };
        let rows = tx.query(schema::WINNERS_QUERY, &[]).await.map_err(fail)?;
        tx.commit().await.map_err(fail)?;
        let mut winners: HashMap<AgencyId, Vec<Document>> = HashMap::new();
        for row in rows {
            let agency = read_agency(row.get(0), &self.shared.target)?;
            for (_, bet) in read_rows(row.get(1)) {
                let bet = bet.map_err(|e| self.shared.corrupt(format!("a winning bet: {e}")))?;
                if bet.agency != agency {
                    let reason = format!(
                        "a winning bet of agency {} in agency {agency}'s batch",
                        bet.agency
                    );
                    return Err(self.shared.corrupt(reason));
                }
                winners.entry(agency).or_default().push(bet.document);
            }
        }
        let draw = Draw::from_winners(winners, u64::try_from(stored).unwrap_or(0));
        Ok((draw.with_receipts(receipts), fresh))
    }

    /// Writes every stored bet (or `agency`'s only) to `out` as bets-file rows, in the order
    /// they were stored: the same bytes the file store writes for the same batches.
    ///
    /// # Errors
    /// `Database` when the database cannot be read; `Write` when `out` fails.
    pub async fn export(
        &self,
        agency: Option<AgencyId>,
        out: &mut impl Write,
    ) -> Result<u64, StorageError> {
        let what = "read the bets";
        let fail = |e: tokio_postgres::Error| self.shared.error(what, &e);
        let client = self.shared.client(what).await?;
        // Agency 0 never exists: `None` keeps every agency's rows.
        let only = agency.map_or(0, |a| i32::try_from(a.get()).unwrap_or(i32::MAX));
        // Each batch's rows are the bets file's: the export is their concatenation.
        let rows = client
            .query_raw(
                "SELECT bets, rows FROM batches WHERE $1 = 0 OR agency = $1 ORDER BY position",
                [only],
            )
            .await
            .map_err(fail)?;
        let mut rows = std::pin::pin!(rows);
        let mut written = 0;
        while let Some(row) = rows.try_next().await.map_err(fail)? {
            let bets: i32 = row.get(0);
            written += u64::try_from(bets).unwrap_or(0);
            let write = |e| StorageError::Write { path: "export output".into(), source: e };
            out.write_all(row.get::<_, &[u8]>(1)).map_err(write)?;
        }
        Ok(written)
    }
}
