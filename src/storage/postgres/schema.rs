//! The database's schema, created and migrated by the central at start-up.
//!
//! Migrations are numbered from 1 and applied in order, each once; the versions applied are rows
//! of `lottery_schema_version`. Centrals starting together take a transaction-scoped advisory
//! lock first, so exactly one of them applies a migration and the others find it applied.

use tokio_postgres::Client;

use super::batch_rows;

/// Taken (`pg_advisory_xact_lock`) while migrating: one central at a time.
const SCHEMA_LOCK: i64 = 0x6c6f_7474_6572_7901; // "lottery" 1

/// Every migration, in order: the schema after migration N is version N.
const MIGRATIONS: &[&str] = &[
    // 1: agencies, their batches and bets, and the draw.
    "CREATE TABLE agencies (
        agency      integer PRIMARY KEY CHECK (agency > 0),
        -- The session epoch: bumped by every Hello, on any central; a batch or ReadyForLottery
        -- of an older session is refused (fencing).
        epoch       bigint  NOT NULL DEFAULT 0,
        last_seq    bigint  NOT NULL DEFAULT 0 CHECK (last_seq >= 0),
        stored_bets bigint  NOT NULL DEFAULT 0 CHECK (stored_bets >= 0),
        ready       boolean NOT NULL DEFAULT false
    );
    CREATE TABLE batches (
        agency    integer NOT NULL REFERENCES agencies,
        seq       bigint  NOT NULL CHECK (seq > 0),
        -- The order batches were stored in: the bets file's row order, for export.
        position  bigint  GENERATED ALWAYS AS IDENTITY UNIQUE,
        bets      integer NOT NULL CHECK (bets > 0),
        stored_at timestamptz NOT NULL DEFAULT now(),
        PRIMARY KEY (agency, seq)
    );
    -- No foreign key to batches: it would cost a check per row, and a bet and its batch are
    -- always written by the same transaction.
    CREATE TABLE bets (
        agency     integer NOT NULL,
        seq        bigint  NOT NULL,
        idx        integer NOT NULL CHECK (idx >= 0),
        first_name text    NOT NULL,
        last_name  text    NOT NULL,
        document   text    NOT NULL,
        birthdate  date    NOT NULL,
        number     integer NOT NULL CHECK (number BETWEEN 0 AND 9999),
        PRIMARY KEY (agency, seq, idx)
    );
    CREATE TABLE draw (
        id       boolean PRIMARY KEY DEFAULT true CHECK (id),
        bets     bigint  NOT NULL,
        central  text    NOT NULL,
        drawn_at timestamptz NOT NULL DEFAULT now()
    );",
    // 2: the lottery's LOTTERY_AGENCIES, recorded by the first central: every central sharing
    // the database must have the same (see `PgStore::claim_agencies`).
    "CREATE TABLE lottery (
        id       boolean PRIMARY KEY DEFAULT true CHECK (id),
        agencies integer NOT NULL CHECK (agencies > 0)
    );",
    // 3: the winning bets, indexed apart (the winning number is `domain::WINNING_NUMBER`; a
    // test holds the two together): the draw reads them without scanning every bet, which took
    // longer than a second at 1,000,000 bets, once per central. One bet in 10,000 enters it.
    "CREATE INDEX bets_winning ON bets (agency, seq, idx) WHERE number = 7574;",
    // 4: the draw's receipts (see `receipts.rs`): each agency's bets and the SHA-256 of their
    // rows, and the draw's digest over them, computed once by the central that records the
    // draw, so every central sends the same. NULL: drawn by a central of before receipts.
    "ALTER TABLE draw ADD COLUMN sha256 bytea CHECK (length(sha256) = 32);
    CREATE TABLE receipts (
        agency integer PRIMARY KEY CHECK (agency > 0),
        bets   bigint  NOT NULL CHECK (bets > 0),
        sha256 bytea   NOT NULL CHECK (length(sha256) = 32)
    );",
    // 5: for the status page, which central took each agency's last session and when the
    // agency was last heard from (its `Hello` or a stored batch), on any central.
    "ALTER TABLE agencies ADD COLUMN central text, ADD COLUMN active_at timestamptz;",
    // 6: a row per batch, not per bet: its bets as the bets file's rows, its winners apart, and
    // `bets` a view; the bets of a version 5 database are moved into their batches (see
    // `batch_rows.rs`, which finishes it).
    batch_rows::ADD_COLUMNS,
];

/// The schema version this central writes.
pub(super) const VERSION: i32 = MIGRATIONS.len() as i32;

/// Brings the schema up to [`VERSION`]; returns the version found before.
///
/// # Errors
/// The database's error; a schema newer than this central knows is refused with
/// [`TooNew`](MigrateError::TooNew): an older central must not write to it.
pub(super) async fn migrate(client: &mut Client) -> Result<i32, MigrateError> {
    let tx = client.transaction().await?;
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&SCHEMA_LOCK]).await?;
    tx.batch_execute(
        "CREATE TABLE IF NOT EXISTS lottery_schema_version (
            version    integer PRIMARY KEY,
            applied_at timestamptz NOT NULL DEFAULT now()
        )",
    )
    .await?;
    let found: i32 = tx
        .query_one("SELECT coalesce(max(version), 0) FROM lottery_schema_version", &[])
        .await?
        .try_get(0)?;
    if found > VERSION {
        return Err(MigrateError::TooNew { found });
    }
    for (version, migration) in (1..).zip(MIGRATIONS).skip(found as usize) {
        tx.batch_execute(migration).await?;
        if version == batch_rows::VERSION {
            batch_rows::convert(&tx).await?;
        }
        tx.execute("INSERT INTO lottery_schema_version (version) VALUES ($1)", &[&version]).await?;
    }
    tx.commit().await?;
    Ok(found)
}

/// The draw's query of the winning bets: the rows of every batch that has any, in the order
/// stored (the `batches_winning` index holds just those batches).
pub(super) const WINNERS_QUERY: &str =
    "SELECT agency, winners FROM batches WHERE winners IS NOT NULL ORDER BY position";

#[derive(Debug, thiserror::Error)]
pub(super) enum MigrateError {
    #[error(transparent)]
    Database(#[from] tokio_postgres::Error),
    #[error(
        "the database's schema is version {found}, newer than this central's ({VERSION}): run a newer central"
    )]
    TooNew { found: i32 },
    #[error(
        "the bets of this version 5 database cannot be moved into their batches: {0}; \
         the database is left as it was: fix or remove those rows (`bets`, `batches`), or \
         export the bets with a central of version 5"
    )]
    Unconvertible(String),
}

impl From<batch_rows::ConvertError> for MigrateError {
    fn from(e: batch_rows::ConvertError) -> Self {
        match e {
            batch_rows::ConvertError::Database(e) => Self::Database(e),
            batch_rows::ConvertError::Unconvertible(reason) => Self::Unconvertible(reason),
        }
    }
}
