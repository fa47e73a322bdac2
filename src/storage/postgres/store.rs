//! [`PgStore`]: the database store's face, what the central's [`Store`](crate::storage::Store)
//! calls: open (pools, schema, committer and ready listener), submit a batch, the ready
//! agencies and their changes, every agency's progress, counters, close.

use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex as StdMutex};
use std::time::Instant;

use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::commit::{self, Pending, Queue};
use super::connect::{Opened, Shared};
use super::watch;
use crate::config::DatabaseUrl;
use crate::domain::{AgencyId, Bets};
use crate::storage::{
    Ack, AgencyProgress, PoolGauges, ReadyFeed, SessionEpoch, StorageError, StoreGauges,
    StoreOptions, StoreStats,
};

/// The bets in PostgreSQL. Share it behind the server's `Store`.
#[derive(Debug)]
pub struct PgStore {
    pub(super) shared: Arc<Shared>,
    queue: Arc<Queue>,
    committer: StdMutex<Option<JoinHandle<()>>>,
    listener: JoinHandle<()>,
    stop: CancellationToken,
}

impl PgStore {
    /// Connects to the database at `url` (retrying for up to a minute while it is not up yet),
    /// creates or migrates its schema, and starts the committer and the ready listener.
    /// `central` names this central in the `draw` row.
    ///
    /// # Errors
    /// `Database` when it cannot be reached in time; at once, `DatabaseRejected` when it refuses
    /// a statement for a reason waiting does not fix (a permission, a table of the same name with
    /// another shape, a read-only role: its SQLSTATE class says so), `DatabaseRefused` when it
    /// refuses the login, `SchemaTooNew` when its schema is newer than this central's.
    pub async fn open(
        url: &DatabaseUrl,
        options: StoreOptions,
        central: String,
    ) -> Result<(Self, Opened), StorageError> {
        let shared = Shared::connect(url, options, central)?;
        let shared = Arc::new(shared);
        let (schema_found, opened) = shared.start().await?;
        let stop = CancellationToken::new();
        let queue = Arc::new(Queue::default());
        let committer = tokio::spawn(commit::run(shared.clone(), queue.clone(), stop.clone()));
        let listener = tokio::spawn(watch::listen(shared.clone(), stop.clone()));
        let committer = StdMutex::new(Some(committer));
        let store = Self { shared, queue, committer, listener, stop };
        Ok((store, Opened { schema_found, ..opened }))
    }

    /// The database, password hidden.
    pub fn target(&self) -> &str {
        &self.shared.target
    }

    /// Records `agencies` (LOTTERY_AGENCIES) as the lottery's when no central has yet, and
    /// checks it is the one recorded: centrals that disagree would draw without some agencies'
    /// bets, or wait for a draw forever.
    ///
    /// # Errors
    /// `AgenciesDiffer` when the database's lottery has another number of agencies; `Database`
    /// when it cannot be reached.
    pub async fn claim_agencies(&self, agencies: u32) -> Result<(), StorageError> {
        let what = "record LOTTERY_AGENCIES";
        let fail = |e: tokio_postgres::Error| self.shared.error(what, &e);
        let client = self.shared.client(what).await?;
        let ours = i32::try_from(agencies).unwrap_or(i32::MAX);
        // Two statements: the second's snapshot sees a row another central inserted while
        // this one's insert waited for it.
        client
            .execute(
                "INSERT INTO lottery (agencies) VALUES ($1) ON CONFLICT (id) DO NOTHING",
                &[&ours],
            )
            .await
            .map_err(fail)?;
        let recorded: i32 =
            client.query_one("SELECT agencies FROM lottery", &[]).await.map_err(fail)?.get(0);
        if recorded == ours {
            return Ok(());
        }
        Err(StorageError::AgenciesDiffer {
            target: self.shared.target.clone(),
            recorded: u32::try_from(recorded).unwrap_or(0),
            ours: agencies,
        })
    }

    /// Queues batch `seq` of `agency`, sent in the session of `epoch`, for the next group
    /// commit; the answer comes once the group's transaction has committed (or failed).
    pub fn submit(
        &self,
        agency: AgencyId,
        epoch: SessionEpoch,
        seq: u64,
        bets: &(impl Bets + ?Sized),
    ) -> Ack {
        let (done, ack) = Ack::channel();
        let pending = Pending::new(agency, epoch, seq, bets, done);
        self.queue.push(pending);
        ack
    }

    /// Agencies that have declared ReadyForLottery, on any central, in order.
    ///
    /// # Errors
    /// `Database` when the database cannot be reached.
    pub async fn ready_agencies(&self) -> Result<Vec<AgencyId>, StorageError> {
        self.shared.ready_agencies().await
    }

    /// The agencies that become ready on any central, as this central's listener hears of
    /// them (see `watch.rs`).
    pub fn ready_feed(&self) -> ReadyFeed {
        self.shared.ready.feed()
    }

    /// Every agency's durable progress, in agency order.
    ///
    /// # Errors
    /// `Database` when the database cannot be reached.
    pub async fn agencies(&self) -> Result<Vec<(AgencyId, AgencyProgress)>, StorageError> {
        self.shared.agencies().await
    }

    /// When this process first committed a batch, if it did.
    pub fn first_commit(&self) -> Option<Instant> {
        self.shared.first_commit.get().copied()
    }

    /// Group commits so far; each is one `COMMIT`, one write-ahead log flush.
    pub fn stats(&self) -> StoreStats {
        let groups = self.shared.groups.load(Ordering::Relaxed);
        StoreStats { groups, syncs: groups }
    }

    /// Its two connection pools as they are now: `queries` (sessions, ready, the draw) and
    /// `commit` (the committer's one connection).
    pub fn gauges(&self) -> StoreGauges {
        let pool = |pool, status: deadpool_postgres::Status| PoolGauges {
            pool,
            max: status.max_size,
            open: status.size,
            idle: status.available,
            waiting: status.waiting,
        };
        let pools = vec![
            pool("queries", self.shared.pool.status()),
            pool("commit", self.shared.commit_pool.status()),
        ];
        StoreGauges { free_bytes: None, min_free_bytes: None, pools }
    }

    /// Commits what is queued, then stops the committer and the listener and closes the pool.
    pub async fn close(&self) {
        self.stop.cancel();
        let committer =
            self.committer.lock().unwrap_or_else(std::sync::PoisonError::into_inner).take();
        if let Some(committer) = committer {
            let _ = committer.await;
        }
        self.listener.abort();
        self.shared.pool.close();
        self.shared.commit_pool.close();
    }
}

impl Drop for PgStore {
    fn drop(&mut self) {
        self.stop.cancel();
        self.listener.abort();
    }
}
