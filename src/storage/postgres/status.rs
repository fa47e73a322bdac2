//! The whole lottery as the database holds it, for the status page: every agency's progress,
//! the central each one is on, and the draw's time — one read-only statement each.

use super::connect::{progress, read_agency};
use super::store::PgStore;
use crate::storage::{AgencyRecord, LotteryRecord, StorageError};

/// Milliseconds since the Unix epoch of a `timestamptz` column, without a date-time type.
const MS: &str = "(extract(epoch FROM {}) * 1000)::bigint";

impl PgStore {
    /// Every agency the database has heard of (on any central) and the draw, if recorded.
    ///
    /// # Errors
    /// `Database` when the database cannot be reached.
    pub async fn record(&self) -> Result<LotteryRecord, StorageError> {
        let what = "read the lottery's status";
        let fail = |e: tokio_postgres::Error| self.shared.error(what, &e);
        let client = self.shared.client(what).await?;
        let agencies = format!(
            "SELECT agency, last_seq, stored_bets, ready, central, {} FROM agencies ORDER BY agency",
            MS.replace("{}", "active_at")
        );
        let rows = client.query(&agencies, &[]).await.map_err(fail)?;
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
        Ok(LotteryRecord { agencies, drawn })
    }
}
