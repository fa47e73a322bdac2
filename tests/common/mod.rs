//! Shared test harness: an in-process central on 127.0.0.1:0, agency data, and real processes.
#![allow(dead_code)] // each test binary uses its own part of the harness

pub mod browser;
pub mod failover;
pub mod pg_proxy;
pub mod postgres;
pub mod proxy;
pub mod replicated;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use lottery::config::{ClientConfig, ServerConfig};
use lottery::datagen::{self, Row};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::net::TcpListener;
use tokio::process::{Child, Command};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// A valid bet on the wire (born 1990-02-28), for tests that speak the protocol directly.
pub fn wire_bet(document: &str, number: u16) -> lottery::protocol::WireBet {
    lottery::protocol::WireBet {
        first_name: "Ana".into(),
        last_name: "Núñez".into(),
        document: document.into(),
        birthdate: lottery::protocol::WireDate { year: 1990, month: 2, day: 28 },
        number,
    }
}

/// Anything a test awaits is bounded by this, so a bug fails the test instead of hanging it.
pub const LIMIT: Duration = Duration::from_secs(60);

pub async fn within<F: std::future::IntoFuture>(what: &str, fut: F) -> F::Output {
    match tokio::time::timeout(LIMIT, fut).await {
        Ok(out) => out,
        Err(_) => panic!("{what} did not finish within {LIMIT:?}"),
    }
}

/// A central running in this process, with its own bets file.
pub struct TestServer {
    pub addr: SocketAddr,
    pub token: CancellationToken,
    pub handle: JoinHandle<Result<(), lottery::ServerError>>,
    pub dir: Arc<tempfile::TempDir>,
    pub bets_file: PathBuf,
}

pub async fn spawn_server(agencies: u32) -> TestServer {
    spawn_server_with(&[("LOTTERY_AGENCIES", &agencies.to_string())]).await
}

pub async fn spawn_server_with(vars: &[(&str, &str)]) -> TestServer {
    spawn_server_in(Arc::new(tempfile::tempdir().unwrap()), vars).await
}

/// A central whose bets file is `bets.csv` in `dir` (reused across restarts).
pub async fn spawn_server_in(dir: Arc<tempfile::TempDir>, vars: &[(&str, &str)]) -> TestServer {
    let bets_file = dir.path().join("bets.csv");
    let mut env: HashMap<String, String> =
        vars.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
    env.insert("BETS_FILE".into(), bets_file.display().to_string());
    let config = ServerConfig::from_lookup(|name| env.get(name).cloned()).unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let token = CancellationToken::new();
    let handle = tokio::spawn(lottery::server::run(listener, config, token.clone()));
    TestServer { addr, token, handle, dir, bets_file }
}

/// A central like [`spawn_server_with`]'s, with its HTTP listener (the status page) on
/// 127.0.0.1:0; returns it with the listener's address.
pub async fn spawn_server_with_http(
    dir: Arc<tempfile::TempDir>,
    vars: &[(&str, &str)],
) -> (TestServer, SocketAddr) {
    let bets_file = dir.path().join("bets.csv");
    let mut env: HashMap<String, String> =
        vars.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
    env.insert("BETS_FILE".into(), bets_file.display().to_string());
    let config = ServerConfig::from_lookup(|name| env.get(name).cloned()).unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let http = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let http_addr = http.local_addr().unwrap();
    let token = CancellationToken::new();
    let run = lottery::server::run_with_http(listener, Some(http), config, token.clone());
    let handle = tokio::spawn(run);
    (TestServer { addr, token, handle, dir, bets_file }, http_addr)
}

impl TestServer {
    /// Stops the central, checks it stopped cleanly, and hands back its directory.
    pub async fn stop(self) -> Arc<tempfile::TempDir> {
        self.token.cancel();
        within("server shutdown", self.handle).await.unwrap().unwrap();
        self.dir
    }
}

/// One agency's generated data, on disk.
pub struct AgencyData {
    pub agency: u32,
    pub path: PathBuf,
    pub rows: Vec<Row>,
}

impl AgencyData {
    pub fn generate(dir: &Path, agency: u32, count: usize) -> Self {
        let rows: Vec<Row> = datagen::agency_rows(agency, count, 2026).collect();
        let path = dir.join(format!("agency-{agency}.csv"));
        datagen::write_agency_file(&path, rows.clone()).unwrap();
        Self { agency, path, rows }
    }

    pub fn winners(&self) -> Vec<String> {
        self.rows.iter().filter(|r| r.wins()).map(|r| r.document.clone()).collect()
    }

    /// The bets-file rows this agency's data must become.
    pub fn stored_rows(&self) -> Vec<String> {
        self.rows
            .iter()
            .map(|r| {
                let fields = [&r.first_name, &r.last_name, &r.document, &r.birthdate];
                format!("{}|{}|{}", self.agency, fields.map(|f| f.as_str()).join("|"), r.number)
            })
            .collect()
    }

    /// The bets-file rows this agency's data must become, as bytes: written by the csv crate as
    /// Python's `csv.writer` writes them (the oracle `storage::rows`' property test holds the
    /// store's encoder to), not by the encoder under test.
    pub fn stored_bytes(&self) -> Vec<u8> {
        let mut writer = csv::WriterBuilder::new()
            .has_headers(false)
            .terminator(csv::Terminator::CRLF)
            .quote_style(csv::QuoteStyle::Necessary)
            .from_writer(Vec::new());
        for r in &self.rows {
            let agency = self.agency.to_string();
            let number = r.number.to_string();
            let fields = [&agency, &r.first_name, &r.last_name, &r.document, &r.birthdate, &number];
            writer.write_record(fields).unwrap();
        }
        writer.into_inner().unwrap()
    }

    /// The receipt a central holding every row of this agency sends it.
    pub fn receipt(&self) -> lottery::protocol::ServerMessage {
        use sha2::Digest;
        let sha256 = sha2::Sha256::digest(self.stored_bytes()).into();
        lottery::protocol::ServerMessage::Receipt { bets: self.rows.len() as u64, sha256 }
    }

    pub fn client_config(&self, server: SocketAddr) -> ClientConfig {
        let env = [
            ("CLI_ID", self.agency.to_string()),
            ("CLI_SERVER_ADDRESS", server.to_string()),
            ("CLI_DATA_FILE", self.path.display().to_string()),
        ];
        ClientConfig::from_lookup(|name| {
            env.iter().find(|(k, _)| *k == name).map(|(_, v)| v.clone())
        })
        .unwrap()
    }
}

/// Every bet in a bets file, as `agency|first|last|document|birthdate|number`, sorted.
pub fn stored_multiset(bets_file: &Path) -> Vec<String> {
    let mut rows: Vec<String> = lottery::storage::load_bets(bets_file)
        .unwrap()
        .map(|bet| {
            let bet = bet.unwrap();
            format!(
                "{}|{}|{}|{}|{}|{}",
                bet.agency, bet.first_name, bet.last_name, bet.document, bet.birthdate, bet.number
            )
        })
        .collect();
    rows.sort();
    rows
}

pub fn sorted(mut rows: Vec<String>) -> Vec<String> {
    rows.sort();
    rows
}

/// A real binary of this package, with its stdout lines on a channel.
pub struct Process {
    pub child: Child,
    pub lines: mpsc::UnboundedReceiver<String>,
    pub seen: Vec<String>,
}

impl Process {
    pub fn start(binary: &str, env: &[(&str, String)]) -> Self {
        Self::start_with_args(binary, env, [])
    }

    pub fn start_with_args<const N: usize>(
        binary: &str,
        env: &[(&str, String)],
        args: [&str; N],
    ) -> Self {
        let mut command = Command::new(binary);
        command.args(args);
        command
            .env_clear()
            .envs(env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true);
        let mut child = command.spawn().unwrap();
        let stdout = child.stdout.take().unwrap();
        let (tx, lines) = mpsc::unbounded_channel();
        tokio::spawn(async move {
            let mut reader = BufReader::new(stdout).lines();
            while let Ok(Some(line)) = reader.next_line().await {
                if std::env::var_os("TEST_LOG").is_some() {
                    println!("{line}");
                }
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Self { child, lines, seen: Vec::new() }
    }

    /// Waits for a stdout line containing `needle` and returns it.
    pub async fn wait_for_line(&mut self, needle: &str) -> String {
        if let Some(line) = self.seen.iter().find(|l| l.contains(needle)) {
            return line.clone();
        }
        loop {
            let line = within(needle, self.lines.recv()).await;
            let Some(line) = line else {
                panic!("output ended before {needle:?}: {:#?}", self.seen)
            };
            self.seen.push(line.clone());
            if line.contains(needle) {
                return line;
            }
        }
    }

    /// Waits for the process to exit and returns its code with every line it printed.
    pub async fn finish(mut self) -> (Option<i32>, Vec<String>) {
        let status = within("process exit", self.child.wait()).await.unwrap();
        while let Some(line) = within("process output", self.lines.recv()).await {
            self.seen.push(line);
        }
        (status.code(), self.seen)
    }

    pub fn signal(&self, name: &str) {
        let pid = self.child.id().expect("the process is running").to_string();
        let status = std::process::Command::new("kill").args([&format!("-{name}"), &pid]).status();
        assert!(status.unwrap().success(), "kill -{name} {pid}");
    }
}

pub const SERVER_BIN: &str = env!("CARGO_BIN_EXE_lottery-server");
pub const CLIENT_BIN: &str = env!("CARGO_BIN_EXE_lottery-client");

/// Starts the real server on 127.0.0.1 with a free port; returns it and its address.
pub async fn start_server_process(bets_file: &Path, agencies: u32) -> (Process, String) {
    start_server_with(bets_file, &[("LOTTERY_AGENCIES", &agencies.to_string())]).await
}

/// Starts the real server on 127.0.0.1 with a free port and these variables besides.
pub async fn start_server_with(bets_file: &Path, vars: &[(&str, &str)]) -> (Process, String) {
    let mut env = vec![
        ("SERVER_IP", "127.0.0.1".to_owned()),
        ("SERVER_PORT", "0".to_owned()),
        ("BETS_FILE", bets_file.display().to_string()),
    ];
    env.extend(vars.iter().map(|(k, v)| (*k, (*v).to_owned())));
    let mut server = Process::start(SERVER_BIN, &env);
    let line = server.wait_for_line("action: listen | result: success").await;
    let address = line.rsplit("address: ").next().unwrap().trim().to_owned();
    (server, address)
}

/// The first of `lines` that contains `needle`; fails the test, showing them all, if none does.
pub fn line_with<'a>(lines: &'a [String], needle: &str) -> &'a str {
    let line = lines.iter().find(|l| l.contains(needle));
    line.unwrap_or_else(|| panic!("no line with {needle:?} in {lines:#?}"))
}

/// What the central says on `stream` until it closes it; fails the test if it never does.
pub async fn replies_until_closed(
    stream: tokio::net::TcpStream,
) -> Vec<lottery::protocol::ServerMessage> {
    use futures::StreamExt;
    let mut frames = tokio_util::codec::Framed::new(stream, lottery::protocol::ClientCodec::new());
    let mut replies = Vec::new();
    while let Some(Ok(reply)) = within("the central closing the connection", frames.next()).await {
        replies.push(reply);
    }
    replies
}

/// Asserts `line` has the graders' shape:
/// `YYYY-MM-DD HH:MM:SS LEVEL    action: X | result: success|fail|in_progress | key: value …`.
pub fn assert_grader_line(line: &str) {
    let (stamp, rest) = line.split_at_checked(20).unwrap_or_else(|| panic!("short line {line:?}"));
    assert!(
        jiff::civil::DateTime::strptime("%Y-%m-%d %H:%M:%S", stamp.trim_end()).is_ok(),
        "timestamp in {line:?}"
    );
    let (level, message) = rest.split_at(9);
    assert!(
        ["ERROR", "WARN", "INFO", "DEBUG", "TRACE"].contains(&level.trim_end()),
        "level in {line:?}"
    );
    let mut fields = message.split(" | ");
    let action = fields.next().unwrap();
    assert!(action.starts_with("action: ") && action.len() > 8, "action in {line:?}");
    let result = fields.next().unwrap_or_default();
    assert!(
        ["result: success", "result: fail", "result: in_progress"].contains(&result),
        "result in {line:?}"
    );
    for field in fields {
        let (key, _) =
            field.split_once(": ").unwrap_or_else(|| panic!("field {field:?} in {line:?}"));
        assert!(!key.is_empty() && key.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'));
    }
}
