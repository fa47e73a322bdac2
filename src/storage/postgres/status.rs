//! The whole lottery as the database holds it, for the status page: every agency's progress,
//! the central each one is on, and the draw's time — one read-only statement each.

use super::connect::{progress, read_agency};
use super::store::PgStore;
use crate::storage::{AgencyRecord, LotteryRecord, RecordTotals, StorageError};

/// Milliseconds since the Unix epoch of a `timestamptz` column, without a date-time type.
const MS: &str = "(extract(epoch FROM {}) * 1000)::bigint";

impl PgStore {
    /// Every agency the database has heard of (on any central) counted, agencies 1 to `rows`
    /// one by one, and the draw, if recorded. The counting is the database's: at 100,000
    /// agencies a central reads a thousand rows a second, not all of them.
    ///
    /// # Errors
    /// `Database` when the database cannot be reached.
    pub async fn record(&self, rows: u32) -> Result<LotteryRecord, StorageError> {
        let what = "read the lottery's status";
        let fail = |e: tokio_postgres::Error| self.shared.error(what, &e);
        let client = self.shared.client(what).await?;
        let totals = client
            .query_one(
                "SELECT count(*) FILTER (WHERE ready), coalesce(sum(stored_bets), 0)::bigint,
                    coalesce(sum(last_seq), 0)::bigint FROM agencies",
                &[],
            )
            .await
            .map_err(fail)?;
        let count = |i: usize| u64::try_from(totals.get::<_, i64>(i)).unwrap_or(0);
        let totals = RecordTotals {
            ready: u32::try_from(count(0)).unwrap_or(u32::MAX),
            bets: count(1),
            batches: count(2),
        };
        let agencies = format!(
            "SELECT agency, last_seq, stored_bets, ready, central, {} FROM agencies
             WHERE agency <= $1 ORDER BY agency",
            MS.replace("{}", "active_at")
        );
        let rows = i32::try_from(rows).unwrap_or(i32::MAX);
        let rows = client.query(&agencies, &[&rows]).await.map_err(fail)?;
        let agencies = rows
            .iter()
            .map(|row| {
                Ok(AgencyRecord {
                    agency: read_agency(row.get(0), &self.shared.target)?,
                    progress: progress(row.get(1), row.get(2), row.get(3)),
                    central: row.get(4),
                    active_at_ms: row.get(5),
                })
            })
            .collect::<Result<_, StorageError>>()?;
        let draw = format!("SELECT {}, central FROM draw", MS.replace("{}", "drawn_at"));
        let drawn = client.query_opt(&draw, &[]).await.map_err(fail)?;
        let drawn = drawn.map(|row| (row.get(0), row.get(1)));
        Ok(LotteryRecord { agencies, totals, drawn })
    }
}
