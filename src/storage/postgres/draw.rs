//! The draw, recorded once by whichever central gets there first (under [`DRAW_LOCK`], after the
//! groups in flight: [`COMMIT_LOCK`]), its winners computed in SQL; and the export of every
//! stored bet, encoded as the file store's rows.

use std::collections::HashMap;
use std::io::Write;

use futures::{StreamExt, TryStreamExt};

use super::connect::{Shared, read_agency};
use super::schema;
use super::store::PgStore;
use super::{COMMIT_LOCK, DRAW_LOCK};
use crate::domain::{AgencyId, Bet, BetNumber, Document, Draw};
use crate::storage::{StorageError, encode_rows};

impl PgStore {
    /// Records the draw, or, when a central already has, reads it; `true` when this call
    /// recorded it. The winners are computed in SQL, in the order their bets were stored.
    ///
    /// # Errors
    /// `Corrupt` when the recorded draw covered a different number of bets than are stored;
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
        let recorded = tx.query_opt("SELECT bets FROM draw", &[]).await.map_err(fail)?;
        let fresh = match recorded.map(|row| row.get::<_, i64>(0)) {
            Some(bets) if bets != stored => {
                let reason = format!(
                    "the draw ran over {bets} bets; the database now holds {stored}: bets were \
                     stored after the draw"
                );
                return Err(self.shared.corrupt(reason));
            }
            Some(_) => false,
            None => {
                tx.execute(
                    "INSERT INTO draw (bets, central) VALUES ($1, $2)",
                    &[&stored, &self.shared.central],
                )
                .await
                .map_err(fail)?;
                true
            }
        };
        let rows = tx.query(&schema::winners_query(), &[]).await.map_err(fail)?;
        tx.commit().await.map_err(fail)?;
        let mut winners: HashMap<AgencyId, Vec<Document>> = HashMap::new();
        for row in rows {
            let agency = read_agency(row.get(0), &self.shared.target)?;
            let document = Document::from_string(row.get(1))
                .map_err(|e| self.shared.corrupt(format!("a stored document: {e}")))?;
            winners.entry(agency).or_default().push(document);
        }
        Ok((Draw::from_winners(winners, u64::try_from(stored).unwrap_or(0)), fresh))
    }

    /// Writes every stored bet to `out` as bets-file rows, in the order they were stored: the
    /// same bytes the file store writes for the same batches.
    ///
    /// # Errors
    /// `Database` when the database cannot be read; `Write` when `out` fails.
    pub async fn export(&self, out: &mut impl Write) -> Result<u64, StorageError> {
        let what = "read the bets";
        let fail = |e: tokio_postgres::Error| self.shared.error(what, &e);
        let client = self.shared.client(what).await?;
        let rows = client
            .query_raw(
                "SELECT b.agency, b.first_name, b.last_name, b.document, b.birthdate, b.number
                 FROM bets b JOIN batches t USING (agency, seq) ORDER BY t.position, b.idx",
                std::iter::empty::<i32>(),
            )
            .await
            .map_err(fail)?;
        let mut rows = std::pin::pin!(rows.map_err(fail).chunks(4096));
        let mut written = 0;
        while let Some(chunk) = rows.next().await {
            let mut bets = Vec::with_capacity(chunk.len());
            for row in chunk {
                bets.push(self.shared.bet(&row?)?);
            }
            written += bets.len() as u64;
            let write = |e| StorageError::Write { path: "export output".into(), source: e };
            out.write_all(&encode_rows(&bets)).map_err(write)?;
        }
        Ok(written)
    }
}

impl Shared {
    /// A stored bet, as the file store's rows hold it.
    pub(super) fn bet(&self, row: &tokio_postgres::Row) -> Result<Bet, StorageError> {
        let bad = |e: &dyn std::fmt::Display| self.corrupt(format!("a stored bet: {e}"));
        let number: i32 = row.get(5);
        Ok(Bet {
            agency: read_agency(row.get(0), &self.target)?,
            first_name: row.get(1),
            last_name: row.get(2),
            document: Document::from_string(row.get(3)).map_err(|e| bad(&e))?,
            birthdate: row.get(4),
            number: u32::try_from(number)
                .map_err(|e| bad(&e))
                .and_then(|n| BetNumber::parse(n).map_err(|e| bad(&e)))?,
        })
    }
}
