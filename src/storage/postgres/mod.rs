//! `PgStore`: the bets in PostgreSQL, where several centrals can share them.
//!
//! # Exactly once, across centrals
//! Each agency has a row in `agencies` with its last stored batch, its bets stored, its ready
//! flag and its session *epoch*. `Hello` bumps the epoch (on whichever central it reaches) and
//! the session keeps the new value. Batches are committed in groups, one transaction per group
//! (see `commit.rs`): it locks the group's agency rows (`FOR UPDATE`, in agency order, so two
//! centrals never deadlock), decides each batch against them exactly as the file store does
//! (duplicate, gap, closed, limit) and also refuses a batch whose session epoch is no longer the
//! agency's (`Fenced`: a newer session took over, here or on another central), then copies the
//! accepted batches, a row each with its bets as the bets file's rows (`COPY … FROM STDIN
//! BINARY` into `batches`), moves the agencies' rows on, and commits. A batch is acknowledged only after
//! `COMMIT` returns, with `synchronous_commit = on` (set on every connection): its bets are in
//! the database's write-ahead log on disk. A retry of a stored batch, on any central, finds its
//! `seq` at or below `last_seq` and is acknowledged without storing again. When the outcome of a
//! `COMMIT` is unknown (the connection broke), the batch is answered with a storage error; the
//! agency retries, and finds it stored or not.
//!
//! # Ready and the draw
//! `ReadyForLottery` sets the agency's flag under the same row lock (so no batch of it commits
//! after) and sends `NOTIFY lottery_ready` with the agency. Every central `LISTEN`s on a
//! connection of its own and counts each agency a notification names (see `storage/ready.rs`),
//! and the server re-reads every ready agency every [`READY_POLL`](crate::storage::READY_POLL)
//! in case a notification was lost; it counts each ready agency once in its barrier. The draw
//! is one row of `draw`, written by whichever central gets there first (under an advisory
//! lock); the others find it and check it covers the same bets. Winners are found at commit.
//!
//! # Layout
//! - `store.rs`: [`PgStore`], the database store's face: open, submit, read, close;
//! - `connect.rs`: the pools, the connection settings, start-up (connect, migrate, read where
//!   the lottery is) and the translation of database errors;
//! - `replication.rs`: what the database reports of its standbys (synchronous or not);
//! - `schema.rs`: the schema and its migrations;
//! - `batch_rows.rs`: migration 6, a row per batch (its bets as the bets file's rows), with the
//!   bets of a version 5 database moved into their batches;
//! - `sessions.rs`: an agency's session (its epoch: fencing) and its `ReadyForLottery`;
//! - `fence.rs`: ending a frozen central's transaction that holds an agency's row;
//! - `commit.rs`: group commit, one transaction per group;
//! - `timeline.rs`: every connection, host by host: the first that takes writes and is not on
//!   an older timeline than another seen (an old primary back after a failover is refused);
//! - `tls.rs`: TLS to the database (rustls), as the connection string's `sslmode` asks;
//! - `watch.rs`: the `LISTEN` connection that tells of agencies ready on other centrals;
//! - `draw.rs`: the draw, and the export of every stored bet;
//! - `receipts.rs`: the draw's receipts, computed from the bets and recorded with the draw.
//! - `status.rs`: the whole lottery for the status page (agencies, their centrals, the draw).

mod batch_rows;
mod commit;
mod connect;
mod draw;
mod fence;
mod receipts;
mod replication;
mod schema;
mod sessions;
mod status;
mod store;
mod timeline;
mod tls;
mod watch;

use std::time::Duration;

pub use connect::Opened;
pub use replication::Replication;
pub use store::PgStore;

/// How long connecting to the database may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// How long a central keeps trying to reach the database at start-up.
const START_WAIT: Duration = Duration::from_secs(60);

/// How long the database waits, inside a transaction of a central, for the central's next
/// statement before it ends the session (`idle_in_transaction_session_timeout`, set on every
/// connection). A central never pauses inside its own transactions (between two statements it
/// only decides, in memory), so a transaction idle this long belongs to a central that froze or
/// lost its network in the middle of a group commit: its row locks would otherwise stall every
/// agency of that group on every other central (their `Hello` and batches wait for the rows)
/// until the central came back, or forever. Ending the session rolls the group back; its
/// batches were never acknowledged, and the agencies resend them wherever they reconnect. A
/// machine that died outright is found by the server's TCP keepalives (set with it: about 25 s).
pub const IDLE_IN_TRANSACTION_TIMEOUT: Duration = Duration::from_secs(10);

/// Connections in a central's pool, for sessions (`Hello`, `ReadyForLottery`), the draw and
/// the ready watcher. The committer has one of its own besides (`commit_pool`): a `Hello`
/// waiting for its agency's row holds its connection for up to `fence::SESSION_WAIT`, and
/// several of them must not keep every other agency's batches from being stored.
const POOL_SIZE: usize = 4;

/// Taken (`pg_advisory_xact_lock`) by the draw: one central at a time records or reads it.
/// (Public for the tests that hold it to catch the draw in the act.)
pub const DRAW_LOCK: i64 = 0x6c6f_7474_6572_7902;

/// Held shared by every group commit (`pg_advisory_xact_lock_shared`, see `commit.rs`) and
/// taken exclusively by the draw after [`DRAW_LOCK`]: the draw waits for the groups in flight,
/// and a group that starts after it waits for it and then sees it (and stores nothing), so the
/// draw covers every bet stored before it and none is stored after it.
/// (Public for the tests that hold it to catch a group in the act.)
pub const COMMIT_LOCK: i64 = 0x6c6f_7474_6572_7903;

/// The notification channel of `ReadyForLottery`.
const READY_CHANNEL: &str = "lottery_ready";
