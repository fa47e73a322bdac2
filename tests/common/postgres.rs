//! PostgreSQL for tests: a fresh database per test on the server that `PGHOST`, `PGPORT`,
//! `PGUSER` and `PGPASSWORD` name (as `pg_virtualenv` sets them), or a loud skip when there is
//! none. CI runs these tests under `pg_virtualenv` with `LOTTERY_REQUIRE_POSTGRES=1`, which turns
//! the skip into a failure.

use std::sync::atomic::{AtomicU32, Ordering};

use tokio_postgres::NoTls;

/// How to run the PostgreSQL tests, for the skip message.
pub const HOW: &str = "pg_virtualenv -t cargo test --locked --test postgres --test postgres_chaos --test postgres_tls --test postgres_failover --test postgres_fencing --test postgres_migration";

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

/// Starts a central process on 127.0.0.1:`port` (0: a free one) storing in `db`; returns it and
/// its address once it listens and has opened the database.
pub async fn start_central(db: &TestDb, port: u16, agencies: u32) -> (super::Process, String) {
    let mut central = spawn_central(db, port, agencies);
    let address = central_address(&mut central).await;
    central.wait_for_line("action: database | result: success").await;
    (central, address)
}

/// A central process on 127.0.0.1:`port` storing in `db`, not waited for: it may still be
/// waiting for the database (see [`central_address`]).
pub fn spawn_central(db: &TestDb, port: u16, agencies: u32) -> super::Process {
    let env = [
        ("SERVER_IP", "127.0.0.1".to_owned()),
        ("SERVER_PORT", port.to_string()),
        ("LOTTERY_DATABASE_URL", db.url.clone()),
        ("LOTTERY_AGENCIES", agencies.to_string()),
        ("BETS_FILE", "/nonexistent/never-opened.csv".to_owned()),
    ];
    super::Process::start(super::SERVER_BIN, &env)
}

/// The address `central` listens on, from its `listen` line.
pub async fn central_address(central: &mut super::Process) -> String {
    let line = central.wait_for_line("action: listen | result: success").await;
    let address = line.rsplit("address: ").next().unwrap_or_default().trim().to_owned();
    assert!(address.parse::<std::net::SocketAddr>().is_ok(), "address in {line:?}");
    address
}

/// An agency's environment: `addresses` is its `CLI_SERVER_ADDRESS` list.
pub fn agency_env(addresses: &str, data: &super::AgencyData) -> Vec<(&'static str, String)> {
    vec![
        ("CLI_ID", data.agency.to_string()),
        ("CLI_SERVER_ADDRESS", addresses.to_owned()),
        ("CLI_DATA_FILE", data.path.display().to_string()),
        ("CLI_CONNECT_TIMEOUT", "60s".to_owned()),
    ]
}

/// `lottery-server export` of `db` into `dir`, read back as sorted rows.
pub async fn exported(db: &TestDb, dir: &std::path::Path) -> Vec<String> {
    let output = dir.join("exported.csv");
    let env = [("LOTTERY_DATABASE_URL", db.url.clone())];
    let export = super::Process::start_with_args(
        super::SERVER_BIN,
        &env,
        ["export", output.to_str().unwrap()],
    );
    let (code, lines) = export.finish().await;
    assert_eq!(code, Some(0), "export: {lines:#?}");
    super::stored_multiset(&output)
}

/// The PostgreSQL cluster `pg_virtualenv` made (named `regress`), to stop and start under the
/// centrals' feet.
pub struct Cluster {
    version: String,
}

impl Cluster {
    /// The cluster, or `None` (after saying so on stderr) when this is not a `pg_virtualenv`
    /// cluster `pg_ctlcluster` can drive. Under `LOTTERY_REQUIRE_POSTGRES` that fails instead.
    pub async fn regress(test: &str) -> Option<Self> {
        let version = std::env::var("PGVERSION").ok().filter(|v| !v.is_empty());
        let running = match &version {
            Some(version) => tokio::process::Command::new("pg_ctlcluster")
                .args([version.as_str(), "regress", "status"])
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::null())
                .status()
                .await
                .is_ok_and(|status| status.success()),
            None => false,
        };
        if let (Some(version), true) = (version, running) {
            return Some(Self { version });
        }
        let why =
            "no running pg_virtualenv cluster (`pg_ctlcluster $PGVERSION regress status` failed)";
        assert!(
            std::env::var_os("LOTTERY_REQUIRE_POSTGRES").is_none(),
            "LOTTERY_REQUIRE_POSTGRES is set but there is {why}: run `{HOW}`"
        );
        let message = format!("\n!!! SKIPPED {test}: {why}.\n!!! Run it with: {HOW}\n");
        let _ = std::io::Write::write_all(&mut std::io::stderr(), message.as_bytes());
        None
    }

    /// Stops the cluster at once (`-m immediate`: no checkpoint, every connection cut, as in a
    /// crash); returns when it is down.
    pub async fn stop_immediately(&self) {
        self.ctl(&["stop", "-m", "immediate"]).await;
    }

    /// Starts the cluster; returns when it accepts connections.
    pub async fn start(&self) {
        self.ctl(&["start"]).await;
    }

    async fn ctl(&self, args: &[&str]) {
        let output = tokio::process::Command::new("pg_ctlcluster")
            .args([self.version.as_str(), "regress"])
            .args(args)
            .output();
        let output = super::within("pg_ctlcluster", output).await.unwrap();
        assert!(output.status.success(), "pg_ctlcluster {args:?}: {output:?}");
    }
}
