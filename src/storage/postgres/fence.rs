//! Ending a stalled central's transaction. A central that froze, or lost its network, in the
//! middle of a group commit keeps its agencies' rows locked: every other central's `Hello` for
//! those agencies, and so the agencies themselves, would wait for it. The database ends such a
//! transaction itself when it is idle between statements (`idle_in_transaction_session_timeout`),
//! but not when it waits for the rest of a `COPY`, and a frozen process's kernel still answers
//! TCP keepalives. So a `Hello` that cannot get its agency's row soon enough looks at who holds
//! it, and ends the holder's session when the holder has waited for its own central for
//! [`IDLE_IN_TRANSACTION_TIMEOUT`]: the same rule the database applies between statements.
//! Ending it rolls its group back; nothing of it was acknowledged.

use std::time::Duration;

use super::IDLE_IN_TRANSACTION_TIMEOUT;

/// How long a `Hello` waits for its agency's row (`lock_timeout`) before looking at who holds
/// it; it then tries again, for up to [`SESSION_WAIT`].
pub(super) const ROW_WAIT: Duration = Duration::from_secs(1);

/// How long a `Hello` keeps trying for its agency's row before answering with an error (the
/// agency then reconnects and tries again): long enough for a stalled holder to be ended.
pub(super) const SESSION_WAIT: Duration =
    Duration::from_secs(IDLE_IN_TRANSACTION_TIMEOUT.as_secs() * 2);

/// Ends the sessions whose transaction holds `agency`'s row (its `xmax`) and that have been
/// waiting for their central, inside that transaction, for [`IDLE_IN_TRANSACTION_TIMEOUT`] or
/// more; returns how many it ended.
///
/// # Errors
/// The database's.
pub(super) async fn end_stalled_holders(
    client: &impl tokio_postgres::GenericClient,
    agency: i32,
) -> Result<u64, tokio_postgres::Error> {
    let stalled_for = IDLE_IN_TRANSACTION_TIMEOUT.as_secs_f64();
    let row = client
        .query_one(
            "SELECT count(*) FILTER (WHERE pg_terminate_backend(a.pid))
             FROM agencies g
             JOIN pg_locks l ON l.locktype = 'transactionid' AND l.transactionid = g.xmax
                  AND l.granted
             JOIN pg_stat_activity a ON a.pid = l.pid
             WHERE g.agency = $1 AND a.pid <> pg_backend_pid()
               AND a.datname = current_database()
               AND a.state IN ('active', 'idle in transaction')
               AND a.wait_event = 'ClientRead'
               AND a.state_change < clock_timestamp() - make_interval(secs => $2)",
            &[&agency, &stalled_for],
        )
        .await?;
    Ok(u64::try_from(row.get::<_, i64>(0)).unwrap_or(0))
}
