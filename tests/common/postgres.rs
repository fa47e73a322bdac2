//! PostgreSQL for tests: a fresh database per test on the server that `PGHOST`, `PGPORT`,
//! `PGUSER` and `PGPASSWORD` name (as `pg_virtualenv` sets them), or a loud skip when there is
//! none. CI runs these tests under `pg_virtualenv` with `LOTTERY_REQUIRE_POSTGRES=1`, which turns
//! the skip into a failure.

use std::sync::atomic::{AtomicU32, Ordering};

use tokio_postgres::NoTls;

/// How to run the PostgreSQL tests, for the skip message.
pub const HOW: &str = "pg_virtualenv cargo test --locked --test postgres --test postgres_chaos";

/// A database of its own for one test.
pub struct TestDb {
    /// `LOTTERY_DATABASE_URL` for a central (key=value form; the password is in it).
    pub url: String,
    pub name: String,
}

/// A new, empty database for `test`, or `None` (after saying so on stderr) when no PostgreSQL
/// server is configured.
pub async fn test_database(test: &str) -> Option<TestDb> {
    let Some(host) = std::env::var("PGHOST").ok().filter(|h| !h.is_empty()) else {
        assert!(
            std::env::var_os("LOTTERY_REQUIRE_POSTGRES").is_none(),
            "LOTTERY_REQUIRE_POSTGRES is set but PGHOST is not: run `{HOW}`"
        );
        // Straight to the process's stderr, past the test harness's capture: a skip is loud.
        let message = format!(
            "\n!!! SKIPPED {test}: no PostgreSQL server (PGHOST is unset).\n!!! Run the database tests with: {HOW}\n"
        );
        let _ = std::io::Write::write_all(&mut std::io::stderr(), message.as_bytes());
        return None;
    };
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let name = format!(
        "lottery_{}_{}_{}",
        test.replace(|c: char| !c.is_ascii_alphanumeric(), "_"),
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    );
    let name = name.chars().take(63).collect::<String>();
    let var = |k: &str| std::env::var(k).unwrap_or_default();
    let base = format!(
        "host={host} port={} user={} password={}",
        std::env::var("PGPORT").unwrap_or_else(|_| "5432".into()),
        var("PGUSER"),
        var("PGPASSWORD"),
    );
    let admin = connect(&format!("{base} dbname=postgres")).await;
    admin.batch_execute(&format!("CREATE DATABASE \"{name}\"")).await.unwrap();
    Some(TestDb { url: format!("{base} dbname={name}"), name })
}

impl TestDb {
    /// A client on this database.
    pub async fn client(&self) -> tokio_postgres::Client {
        connect(&self.url).await
    }

    /// The one `bigint` (or `count(*)`) `sql` returns.
    pub async fn count(&self, sql: &str) -> i64 {
        self.client().await.query_one(sql, &[]).await.unwrap().get(0)
    }
}

async fn connect(url: &str) -> tokio_postgres::Client {
    let (client, connection) = tokio_postgres::connect(url, NoTls).await.unwrap();
    tokio::spawn(async move {
        let _ = connection.await;
    });
    client
}
