//! An agency's session in the database: `Hello` bumps the agency's epoch, which fences every
//! older session of it on any central, and `ReadyForLottery` sets its flag and tells every
//! central. Both take the agency's row as `fence.rs` allows: a central that froze holding it is
//! ended.

use std::time::Instant;

use tokio_postgres::error::SqlState;
use tracing::warn;

use super::READY_CHANNEL;
use super::connect::{agency_id, progress};
use super::fence;
use super::store::PgStore;
use crate::domain::AgencyId;
use crate::storage::{AgencyProgress, SessionEpoch, StorageError};

impl PgStore {
    /// Starts a session of `agency`: bumps its epoch, which fences every older session of it
    /// (here or on another central), and returns its durable progress and the new epoch. When
    /// the agency's row stays locked by a central that stopped talking to the database in the
    /// middle of its transaction, that central's session is ended (see `fence.rs`).
    ///
    /// # Errors
    /// `Database` when the database cannot be reached, or the agency's row stays locked for
    /// longer than a stalled holder takes to be ended.
    pub async fn open_session(
        &self,
        agency: AgencyId,
    ) -> Result<(AgencyProgress, SessionEpoch), StorageError> {
        let what = "start the agency's session";
        let fail = |e: tokio_postgres::Error| self.shared.error(what, &e);
        let mut client = self.shared.client(what).await?;
        let tx = client.transaction().await.map_err(fail)?;
        let bump = "INSERT INTO agencies (agency, epoch) VALUES ($1, 1)
            ON CONFLICT (agency) DO UPDATE SET epoch = agencies.epoch + 1
            RETURNING epoch, last_seq, stored_bets, ready";
        let row = self.lock_agency_row(&tx, what, agency, bump).await?;
        // The upsert returns its row whether it inserted or updated.
        let row = row.ok_or_else(|| self.shared.corrupt(format!("agency {agency}: no row")))?;
        // For the status page: the central the agency is on now.
        let on = "UPDATE agencies SET central = $2, active_at = now() WHERE agency = $1";
        tx.execute(on, &[&agency_id(agency), &self.shared.central]).await.map_err(fail)?;
        tx.commit().await.map_err(fail)?;
        Ok((progress(row.get(1), row.get(2), row.get(3)), row.get::<_, SessionEpoch>(0)))
    }

    /// Records that `agency` (in its session of `epoch`) has sent everything (false: it had
    /// already), and notifies every
    /// central. Its row is taken as `Hello` takes it: a stalled holder is ended (see `fence.rs`).
    ///
    /// # Errors
    /// `Fenced` when a newer session of the agency took over; `Database` when the database
    /// cannot be reached, or the agency's row stays locked for longer than a stalled holder
    /// takes to be ended.
    pub async fn mark_ready(
        &self,
        agency: AgencyId,
        epoch: SessionEpoch,
    ) -> Result<bool, StorageError> {
        let what = "record ReadyForLottery";
        let fail = |e: tokio_postgres::Error| self.shared.error(what, &e);
        let mut client = self.shared.client(what).await?;
        let tx = client.transaction().await.map_err(fail)?;
        let lock = "SELECT epoch, ready FROM agencies WHERE agency = $1 FOR UPDATE";
        let row = self.lock_agency_row(&tx, what, agency, lock).await?;
        let Some(row) = row else { return Err(StorageError::Fenced { agency }) };
        if row.get::<_, SessionEpoch>(0) != epoch {
            return Err(StorageError::Fenced { agency });
        }
        let newly_ready = !row.get::<_, bool>(1);
        if newly_ready {
            tx.execute("UPDATE agencies SET ready = true WHERE agency = $1", &[&agency_id(agency)])
                .await
                .map_err(fail)?;
            let payload = agency.to_string();
            tx.execute("SELECT pg_notify($1, $2)", &[&READY_CHANNEL, &payload.as_str()])
                .await
                .map_err(fail)?;
        }
        tx.commit().await.map_err(fail)?;
        Ok(newly_ready)
    }

    /// Runs `lock`, a statement that locks `agency`'s row (`$1`: the agency) and returns it, in
    /// `tx`, waiting for the row at most [`fence::ROW_WAIT`] at a time. When a central that
    /// stopped in the middle of its transaction holds the row, that central's session is ended
    /// and the statement tried again (from a savepoint), for up to [`fence::SESSION_WAIT`]; see
    /// `fence.rs`. Hello and ReadyForLottery take their agency's row this way.
    async fn lock_agency_row(
        &self,
        tx: &deadpool_postgres::Transaction<'_>,
        what: &'static str,
        agency: AgencyId,
        lock: &str,
    ) -> Result<Option<tokio_postgres::Row>, StorageError> {
        let fail = |e: tokio_postgres::Error| self.shared.error(what, &e);
        let wait = format!(
            "SET LOCAL lock_timeout = {}; SAVEPOINT agency_row",
            fence::ROW_WAIT.as_millis()
        );
        tx.batch_execute(&wait).await.map_err(fail)?;
        let started = Instant::now();
        loop {
            match tx.query_opt(lock, &[&agency_id(agency)]).await {
                Ok(row) => return Ok(row),
                Err(e)
                    if e.code() == Some(&SqlState::LOCK_NOT_AVAILABLE)
                        && started.elapsed() < fence::SESSION_WAIT =>
                {
                    tx.batch_execute("ROLLBACK TO SAVEPOINT agency_row").await.map_err(fail)?;
                    self.end_stalled_holders(&**tx, agency).await.map_err(fail)?;
                }
                Err(e) => return Err(fail(e)),
            }
        }
    }

    /// Ends the sessions that hold `agency`'s row and stopped talking to the database (see
    /// `fence.rs`), and says so.
    async fn end_stalled_holders(
        &self,
        client: &impl tokio_postgres::GenericClient,
        agency: AgencyId,
    ) -> Result<(), tokio_postgres::Error> {
        let ended = fence::end_stalled_holders(client, agency_id(agency)).await?;
        if ended > 0 {
            warn!(action = "fence", result = "success", agency = %agency, sessions_ended = ended, reason = "their transaction held the agency's row and their central had not been heard from");
        }
        Ok(())
    }
}
