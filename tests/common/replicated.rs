//! A replicated PostgreSQL without Docker: a primary and a synchronous standby made from
//! Debian's PostgreSQL binaries (`initdb`, `pg_ctl`, `pg_basebackup -R`) in a temporary
//! directory, on two loopback ports the test picks, for failover tests: kill the primary with
//! `kill -9`, promote the standby (as a failover manager would), rebuild a standby on the dead
//! one's port from the new primary. Run as root, the servers run as the `postgres` user
//! (`runuser`), as `pg_virtualenv` does. They run with the other database suites (`PGHOST` set,
//! as under `pg_virtualenv`, or `LOTTERY_REQUIRE_POSTGRES=1`), else skip loudly; without the
//! binaries they skip too, and `LOTTERY_REQUIRE_POSTGRES=1` turns that skip into a failure.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use tokio::process::Command;
use tokio_postgres::NoTls;

/// The superuser and database the clusters are made with.
pub const USER: &str = "lottery";
pub const DATABASE: &str = "lottery";

/// How long a server may take to start, stop, be promoted or catch up.
const DEADLINE: Duration = Duration::from_secs(60);

/// One server: its data directory and port.
pub struct Node {
    pub dir: PathBuf,
    pub port: u16,
}

/// A primary (`nodes[primary]`) and, when rebuilt, a standby (the other node).
pub struct Replicated {
    root: tempfile::TempDir,
    bin: PathBuf,
    /// Run the PostgreSQL binaries as this user (`runuser -u`), when the test runs as root.
    run_as: Option<&'static str>,
    pub nodes: [Node; 2],
    pub primary: usize,
    /// `synchronous_standby_names = '*'` on every server (else asynchronous).
    synchronous: bool,
    made: usize,
}

/// The newest Debian PostgreSQL's binaries, or `None` (after saying so on stderr) when there are
/// none; under `LOTTERY_REQUIRE_POSTGRES` that fails instead.
pub fn binaries(test: &str) -> Option<PathBuf> {
    // Run with the other database suites (under `pg_virtualenv`, or LOTTERY_REQUIRE_POSTGRES),
    // not by every `cargo test`: they take a minute.
    let asked =
        ["PGHOST", "LOTTERY_REQUIRE_POSTGRES"].iter().any(|v| std::env::var_os(v).is_some());
    if !asked {
        let message = format!(
            "\n!!! SKIPPED {test}: a database suite (PGHOST is unset).\n!!! Run it with: {}\n",
            super::postgres::HOW
        );
        let _ = std::io::Write::write_all(&mut std::io::stderr(), message.as_bytes());
        return None;
    }
    let mut found: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let version = e.file_name().to_str()?.parse().ok()?;
            let bin = e.path().join("bin");
            ["initdb", "pg_ctl", "pg_basebackup", "postgres"]
                .iter()
                .all(|b| bin.join(b).is_file())
                .then_some((version, bin))
        })
        .collect();
    found.sort();
    if let Some((_, bin)) = found.pop() {
        return Some(bin);
    }
    let why = "no PostgreSQL server binaries in /usr/lib/postgresql/*/bin";
    assert!(
        std::env::var_os("LOTTERY_REQUIRE_POSTGRES").is_none(),
        "LOTTERY_REQUIRE_POSTGRES is set but there are {why}: apt-get install postgresql"
    );
    let message = format!("\n!!! SKIPPED {test}: {why}.\n!!! Install Debian's `postgresql`.\n");
    let _ = std::io::Write::write_all(&mut std::io::stderr(), message.as_bytes());
    None
}

/// A loopback port free now (bound to port 0, then released for the server to take).
fn free_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap().port()
}

impl Replicated {
    /// A primary with the database [`DATABASE`] and a standby streaming from it (synchronous
    /// when `synchronous`), both accepting connections; `None` when the binaries are missing.
    pub async fn start(test: &str, synchronous: bool) -> Option<Self> {
        let bin = binaries(test)?;
        let root = tempfile::tempdir().unwrap();
        let run_as = is_root().await.then_some("postgres");
        if let Some(user) = run_as {
            chown(root.path(), user).await;
        }
        let nodes = [0, 1].map(|i| Node { dir: root.path().join(format!("n{i}")), port: 0 });
        let mut cluster = Self { root, bin, run_as, nodes, primary: 0, synchronous, made: 0 };
        let dir = cluster.fresh_dir(0);
        cluster.nodes[0] = Node { dir: dir.clone(), port: free_port() };
        cluster.nodes[1].port = free_port();
        let initdb = ["-D", path(&dir), "-U", USER, "--auth=trust", "-N", "-E", "UTF8"];
        cluster.run("initdb", &initdb).await;
        // Asynchronous until it has a standby: a synchronous primary's commits wait for one.
        cluster.configure(0, false);
        cluster.pg_ctl(0, &["start"]).await;
        let admin = cluster.client(0, "postgres").await;
        admin.batch_execute(&format!("CREATE DATABASE {DATABASE}")).await.unwrap();
        cluster.rebuild_standby().await;
        if synchronous {
            let set = "ALTER SYSTEM SET synchronous_standby_names = '*'";
            admin.batch_execute(set).await.unwrap();
            admin.batch_execute("SELECT pg_reload_conf()").await.unwrap();
            cluster.wait_for_standby().await;
        }
        Some(cluster)
    }

    /// `LOTTERY_DATABASE_URL` naming both servers, the writable one wanted.
    pub fn url(&self) -> String {
        let [a, b] = [&self.nodes[0], &self.nodes[1]];
        format!(
            "host=127.0.0.1,127.0.0.1 port={},{} user={USER} dbname={DATABASE} \
             target_session_attrs=read-write sslmode=disable",
            a.port, b.port
        )
    }

    /// The standby's index.
    pub fn standby(&self) -> usize {
        1 - self.primary
    }

    /// A client of `database` on node `i`.
    pub async fn client(&self, i: usize, database: &str) -> tokio_postgres::Client {
        let url = format!(
            "host=127.0.0.1 port={} user={USER} dbname={database} sslmode=disable",
            self.nodes[i].port
        );
        let (client, connection) = tokio_postgres::connect(&url, NoTls).await.unwrap();
        tokio::spawn(async move {
            let _ = connection.await;
        });
        client
    }

    /// `kill -9` of the primary's postmaster (its pid from `postmaster.pid`); returns once every
    /// process of that server has exited (its backends follow the postmaster), so its port is
    /// free.
    pub async fn kill_primary(&mut self) {
        let dir = self.nodes[self.primary].dir.clone();
        let pid_file = std::fs::read_to_string(dir.join("postmaster.pid")).unwrap();
        let pid = pid_file.lines().next().unwrap().trim().to_owned();
        let status = Command::new("kill").args(["-9", &pid]).status().await.unwrap();
        assert!(status.success(), "kill -9 {pid}");
        let deadline = Instant::now() + DEADLINE;
        // Gone means reaped too: a server refuses to start while its lock files name a
        // process that exists, a zombie included.
        let proc = PathBuf::from(format!("/proc/{pid}"));
        while proc.exists() || !processes_in(&dir).is_empty() {
            assert!(Instant::now() < deadline, "{} still run after the kill", dir.display());
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Promotes the standby (`pg_ctl promote -w`: returns once it takes writes); it is the
    /// primary from now on.
    pub async fn promote(&mut self) {
        let standby = self.standby();
        self.pg_ctl(standby, &["promote"]).await;
        self.primary = standby;
    }

    /// A new standby in place of the other node (a new directory, the same port) from a base
    /// backup of the primary (`pg_basebackup -R`); returns once it streams (and, synchronous, is
    /// the primary's synchronous standby).
    pub async fn rebuild_standby(&mut self) {
        let standby = self.standby();
        let dir = self.fresh_dir(standby);
        self.nodes[standby].dir = dir.clone();
        let primary_port = self.nodes[self.primary].port.to_string();
        let args = [
            "-h",
            "127.0.0.1",
            "-p",
            &primary_port,
            "-U",
            USER,
            "-D",
            path(&dir),
            "-R",
            "-X",
            "stream",
            "-c",
            "fast",
            "-N",
        ];
        self.run("pg_basebackup", &args).await;
        // Promoted, it keeps the mode: synchronous, its commits wait for the next standby.
        self.configure(standby, self.synchronous);
        self.pg_ctl(standby, &["start"]).await;
        self.wait_for_standby().await;
    }

    /// Returns once the primary has a standby streaming (synchronous when the cluster is).
    async fn wait_for_standby(&self) {
        let primary = self.client(self.primary, "postgres").await;
        let deadline = Instant::now() + DEADLINE;
        loop {
            let row = primary
                .query_opt(
                    "SELECT 1 FROM pg_stat_replication WHERE state = 'streaming' \
                     AND (sync_state = 'sync' OR current_setting('synchronous_standby_names') = '')",
                    &[],
                )
                .await
                .unwrap();
            if row.is_some() {
                return;
            }
            assert!(Instant::now() < deadline, "the standby did not stream within {DEADLINE:?}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Starts node `i` again from its directory as it was (a killed primary comes back as a
    /// primary: the case a failover manager's fencing exists for).
    pub async fn restart(&self, i: usize) {
        self.pg_ctl(i, &["start"]).await;
    }

    /// Starts node `i` again from its directory as a primary that acknowledges commits alone
    /// (`synchronous_standby_names` emptied): an old primary brought back writable, the worst
    /// case a failover manager's fencing exists for.
    pub async fn restart_alone(&self, i: usize) {
        // In the file `ALTER SYSTEM` writes (read last), where the primary's `'*'` is.
        let conf = self.nodes[i].dir.join("postgresql.auto.conf");
        let mut text = std::fs::read_to_string(&conf).unwrap();
        text.push_str("\nsynchronous_standby_names = ''\n");
        std::fs::write(&conf, text).unwrap();
        self.pg_ctl(i, &["start"]).await;
    }

    /// The primary stops waiting for a standby (`synchronous_standby_names = ''`, reloaded), as
    /// a failover manager does when no synchronous standby is left (Patroni without
    /// `synchronous_mode_strict`).
    pub async fn go_alone(&self) {
        let admin = self.client(self.primary, "postgres").await;
        admin.batch_execute("ALTER SYSTEM SET synchronous_standby_names = ''").await.unwrap();
        admin.batch_execute("SELECT pg_reload_conf()").await.unwrap();
    }

    /// Stops node `i` at once.
    pub async fn stop(&self, i: usize) {
        self.pg_ctl(i, &["stop", "-m", "immediate"]).await;
    }

    fn fresh_dir(&mut self, i: usize) -> PathBuf {
        self.made += 1;
        self.root.path().join(format!("n{i}-{}", self.made))
    }

    /// The node's own settings, after whatever a base backup copied: its port, loopback only,
    /// its socket in the cluster's root (not in its data directory), no fsync (the tests kill processes, not the machine), and
    /// the replication mode.
    fn configure(&self, i: usize, synchronous: bool) {
        let node = &self.nodes[i];
        let names = if synchronous { "*" } else { "" };
        let settings = format!(
            "\nport = {}\nlisten_addresses = '127.0.0.1'\nunix_socket_directories = '{}'\n\
             fsync = off\nfull_page_writes = off\nshared_buffers = 16MB\nmax_connections = 40\n\
             min_wal_size = 32MB\nmax_wal_size = 64MB\nsynchronous_standby_names = '{names}'\n\
             logging_collector = off\n",
            node.port,
            // Not the data directory: a base backup would copy the primary's socket lock file.
            self.root.path().display()
        );
        let conf = node.dir.join("postgresql.conf");
        let mut text = std::fs::read_to_string(&conf).unwrap();
        text.push_str(&settings);
        std::fs::write(&conf, text).unwrap();
    }

    async fn pg_ctl(&self, i: usize, args: &[&str]) {
        let dir = &self.nodes[i].dir;
        let log = dir.with_extension("log");
        let timeout = DEADLINE.as_secs().to_string();
        let mut all = vec!["-D", path(dir), "-l", path(&log), "-w", "-t", &timeout];
        all.extend_from_slice(args);
        self.run("pg_ctl", &all).await;
    }

    async fn run(&self, binary: &str, args: &[&str]) {
        let program = self.bin.join(binary);
        let mut command = match self.run_as {
            Some(user) => {
                let mut c = Command::new("runuser");
                c.args(["-u", user, "--"]).arg(&program);
                c
            }
            None => Command::new(&program),
        };
        command.args(args).current_dir(self.root.path()).kill_on_drop(true);
        let output = super::within(binary, command.output()).await.unwrap();
        let log = self.logs();
        assert!(output.status.success(), "{binary} {args:?}: {output:?}\n{log}");
    }

    /// The servers' logs, for a failure's message.
    pub fn logs(&self) -> String {
        let mut logs = String::new();
        for entry in std::fs::read_dir(self.root.path()).into_iter().flatten().flatten() {
            if entry.path().extension().is_some_and(|e| e == "log") {
                let text = std::fs::read_to_string(entry.path()).unwrap_or_default();
                let tail: Vec<&str> = text.lines().rev().take(15).collect();
                logs.push_str(&format!("--- {}\n", entry.path().display()));
                logs.extend(tail.into_iter().rev().map(|l| format!("{l}\n")));
            }
        }
        logs
    }
}

impl Drop for Replicated {
    /// Stops every server still running (`-m immediate`), so none outlives the test.
    fn drop(&mut self) {
        for node in &self.nodes {
            for pid in processes_in(&node.dir) {
                let _ = std::process::Command::new("kill")
                    .args(["-9", &pid.to_string()])
                    .stderr(std::process::Stdio::null())
                    .status();
            }
        }
    }
}

fn path(p: &Path) -> &str {
    p.to_str().unwrap()
}

async fn is_root() -> bool {
    let output = Command::new("id").arg("-u").output().await.unwrap();
    String::from_utf8_lossy(&output.stdout).trim() == "0"
}

async fn chown(dir: &Path, user: &str) {
    let status = Command::new("chown").args([user, path(dir)]).status().await.unwrap();
    assert!(status.success(), "chown {user} {}", dir.display());
}

/// The processes whose working directory is `dir` (a server's postmaster and backends).
fn processes_in(dir: &Path) -> Vec<u32> {
    std::fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let pid: u32 = e.file_name().to_str()?.parse().ok()?;
            (std::fs::read_link(e.path().join("cwd")).ok()? == dir).then_some(pid)
        })
        .collect()
}
