//! `/metrics` after a real run, read with a real exposition-format parser: `promtool check
//! metrics` (Debian's `prometheus` package) must find nothing wrong, every family has `# HELP`
//! and `# TYPE`, and the values say what happened (bets stored = bets sent, build info 1, a
//! refused connection counted). With the file store (per-agency labels, and summed), and with
//! PostgreSQL under `pg_virtualenv`.
//!
//! Without `promtool` the test says so loudly and skips; CI sets `LOTTERY_REQUIRE_PROMTOOL`,
//! which turns the skip into a failure.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::process::Stdio;

use common::postgres::{agency_env, test_database};
use common::{AgencyData, CLIENT_BIN, Process, SERVER_BIN, replies_until_closed, within};
use futures::{SinkExt, StreamExt};
use lottery::protocol::{ClientCodec, ClientMessage, ErrorCode, PROTOCOL_VERSION, ServerMessage};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_util::codec::Framed;

const BETS_PER_AGENCY: usize = 700;

#[tokio::test]
async fn file_store_metrics_parse_and_count_per_agency() {
    let dir = tempfile::tempdir().unwrap();
    let bets_file = dir.path().join("bets.csv").display().to_string();
    let scrape = run(dir.path(), &[("BETS_FILE", bets_file.clone())]).await;
    let Some(scrape) = scrape else { return };
    for agency in ["1", "2"] {
        let labels = format!("agency=\"{agency}\"");
        assert_eq!(scrape.value("lottery_bets_stored_total", &labels), Some(700.0));
        assert_eq!(scrape.value("lottery_agency_ready", &labels), Some(1.0));
    }
    assert_eq!(scrape.value("lottery_batches_total", "agency=\"2\",result=\"stored\""), Some(7.0));
    assert!(scrape.value("lottery_store_free_bytes", "").is_some_and(|free| free > 0.0));
    assert_eq!(scrape.value("lottery_store_min_free_bytes", ""), Some(f64::from(64 << 20)));
    assert_eq!(scrape.value("lottery_db_pool_connections", "pool=\"commit\",state=\"idle\""), None);
    assert_build_info(&scrape, "file");

    // Restarted on the same bets file: the agencies ready before count again (the metrics are
    // installed before the lottery restores them), and the draw is restored.
    let env = [
        ("SERVER_IP", "127.0.0.1".to_owned()),
        ("SERVER_PORT", "0".to_owned()),
        ("LOTTERY_AGENCIES", "2".to_owned()),
        ("METRICS_ADDR", "127.0.0.1:0".to_owned()),
        ("BETS_FILE", bets_file),
    ];
    let (mut server, _, metrics_address) = start_central(&env).await;
    server.wait_for_line("action: sorteo_restaurado | result: success").await;
    let scrape = Scrape::get(&metrics_address).await;
    assert_eq!(scrape.value("lottery_agencies_ready", ""), Some(2.0), "{}", scrape.body);
    assert_eq!(scrape.value("lottery_agency_ready", "agency=\"2\""), Some(1.0));
    assert_eq!(scrape.value("lottery_draw_done", ""), Some(1.0));
    server.signal("TERM");
    assert_eq!(server.finish().await.0, Some(0));
}

#[tokio::test]
async fn above_the_agency_label_setting_the_series_are_summed() {
    let dir = tempfile::tempdir().unwrap();
    let bets_file = dir.path().join("bets.csv").display().to_string();
    let vars = [("BETS_FILE", bets_file), ("METRICS_AGENCY_LABELS", "1".to_owned())];
    let Some(scrape) = run(dir.path(), &vars).await else { return };
    assert!(!scrape.body.contains("agency=\""), "{}", scrape.body);
    assert!(!scrape.families.contains_key("lottery_agency_ready"), "{}", scrape.body);
    assert_eq!(scrape.value("lottery_bets_stored_total", ""), Some(1400.0));
    assert_eq!(scrape.value("lottery_batches_total", "result=\"stored\""), Some(14.0));
    assert_eq!(scrape.value("lottery_batches_total", "result=\"duplicate\""), Some(0.0));
    assert_eq!(scrape.value("lottery_bets_rejected_total", ""), Some(0.0));
}

#[tokio::test]
async fn postgres_store_metrics_parse_with_commits_and_pools() {
    let Some(db) = test_database("postgres_store_metrics").await else { return };
    let dir = tempfile::tempdir().unwrap();
    let vars = [
        ("LOTTERY_DATABASE_URL", db.url.clone()),
        ("BETS_FILE", "/nonexistent/never-opened.csv".to_owned()),
    ];
    let Some(scrape) = run(dir.path(), &vars).await else { return };
    assert_eq!(scrape.value("lottery_bets_stored_total", "agency=\"1\""), Some(700.0));
    let commit = ("pool=\"commit\",state=\"idle\"", "pool=\"commit\",state=\"in_use\"");
    let idle = scrape.value("lottery_db_pool_connections", commit.0).unwrap();
    let in_use = scrape.value("lottery_db_pool_connections", commit.1).unwrap();
    assert_eq!(idle + in_use, 1.0, "the committer's pool has its one connection");
    assert_eq!(scrape.value("lottery_db_pool_max_connections", "pool=\"commit\""), Some(1.0));
    assert!(scrape.value("lottery_db_pool_max_connections", "pool=\"queries\"").unwrap() >= 1.0);
    assert_eq!(scrape.value("lottery_db_pool_waiting_tasks", "pool=\"queries\""), Some(0.0));
    assert!(!scrape.families.contains_key("lottery_store_free_bytes"), "{}", scrape.body);
    assert_build_info(&scrape, "postgres");
}

/// Every refusal reason, each caused by a peer, counted as the peers were told: a wrong token, a
/// `Hello` of another protocol version, the oldest of two connections without `Hello` closed for
/// the newer one, a connection that never says `Hello`, and one over the connection budget.
#[tokio::test]
async fn refusals_are_counted_by_reason() {
    if !promtool_present() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let tokens = dir.path().join("tokens");
    std::fs::write(&tokens, "1:tok-1\n2:tok-2\n").unwrap();
    let env = [
        ("SERVER_IP", "127.0.0.1".to_owned()),
        ("SERVER_PORT", "0".to_owned()),
        ("LOTTERY_AGENCIES", "2".to_owned()),
        ("METRICS_ADDR", "127.0.0.1:0".to_owned()),
        ("BETS_FILE", dir.path().join("bets.csv").display().to_string()),
        ("LOTTERY_AGENCY_TOKENS_FILE", tokens.display().to_string()),
        ("LOTTERY_MAX_CONNECTIONS", "2".to_owned()),
        ("LOTTERY_MAX_PENDING_HELLOS", "1".to_owned()),
        ("LOTTERY_HELLO_TIMEOUT", "5s".to_owned()),
        ("LOTTERY_READ_TIMEOUT", "10m".to_owned()),
    ];
    let (server, address, metrics_address) = start_central(&env).await;
    let hello = |agency, version, token: &str| ClientMessage::Hello {
        version,
        agency,
        token: Some(token.to_owned()),
    };
    let mut told = BTreeMap::<&str, f64>::new();
    let mut tell = |code| {
        let reason = match code {
            Some(ErrorCode::Unauthorized) => "token",
            Some(ErrorCode::UnsupportedVersion) => "bad_hello",
            Some(ErrorCode::Busy) => "busy",
            Some(ErrorCode::Timeout) => "hello_timeout",
            other => panic!("unexpected answer {other:?}"),
        };
        *told.entry(reason).or_default() += 1.0;
        reason
    };

    tell(close_code(framed(&address, Some(hello(1, PROTOCOL_VERSION, "tok-2"))).await).await);
    tell(close_code(framed(&address, Some(hello(1, PROTOCOL_VERSION + 1, "tok-1"))).await).await);
    // The refused connections' tasks end after the peer has read their answer: wait until they
    // have, so the two below are not refused for places those still hold.
    connections_open_reach(&metrics_address, 0.0).await;
    // Accepted in the order they connect: the newer one closes the older (unless the older's
    // Hello time ran out first), then runs out of time itself.
    let older = framed(&address, None).await;
    let newer = framed(&address, None).await;
    let evicted = tell(close_code(older).await);
    tell(close_code(newer).await);
    connections_open_reach(&metrics_address, 0.0).await;
    // Both places taken by sessions: the next connection is told Busy by the accept loop.
    let mut sessions = Vec::new();
    for (agency, token) in [(1, "tok-1"), (2, "tok-2")] {
        let mut session = framed(&address, Some(hello(agency, PROTOCOL_VERSION, token))).await;
        let welcome = within("Welcome", session.next()).await;
        assert!(matches!(welcome, Some(Ok(ServerMessage::Welcome { .. }))), "{welcome:?}");
        sessions.push(session);
    }
    assert_eq!(tell(close_code(framed(&address, None).await).await), "busy");

    let scrape = Scrape::get(&metrics_address).await;
    scrape.check_with_promtool().await;
    let refused = |reason: &str| {
        scrape.value("lottery_connections_refused_total", &format!("reason=\"{reason}\""))
    };
    let pending_hellos = if evicted == "busy" { 1.0 } else { 0.0 };
    assert_eq!(refused("token"), Some(1.0), "{}", scrape.body);
    assert_eq!(refused("bad_hello"), Some(1.0), "{}", scrape.body);
    assert_eq!(refused("pending_hellos"), Some(pending_hellos), "{}", scrape.body);
    assert_eq!(refused("hello_timeout"), told.get("hello_timeout").copied(), "{}", scrape.body);
    assert_eq!(refused("connection_budget"), Some(1.0), "{}", scrape.body);
    assert_eq!(scrape.value("lottery_token_failures_total", ""), Some(1.0));
    assert_eq!(scrape.value("lottery_connections_open", ""), Some(2.0), "the two sessions");
    drop(sessions);
    server.signal("TERM");
    assert_eq!(server.finish().await.0, Some(0));
}

/// A central process with `env`: it, its agencies' address and its metrics' address.
async fn start_central(env: &[(&str, String)]) -> (Process, String, String) {
    let mut server = Process::start(SERVER_BIN, env);
    let line = server.wait_for_line("action: listen | result: success").await;
    let address = line.rsplit("address: ").next().unwrap().trim().to_owned();
    let line = server.wait_for_line("action: metrics | result: success").await;
    let metrics_address =
        line.split(" | ").find_map(|f| f.strip_prefix("address: ")).unwrap().to_owned();
    (server, address, metrics_address)
}

/// A connection to the central, having sent `first` if given.
async fn framed(address: &str, first: Option<ClientMessage>) -> Framed<TcpStream, ClientCodec> {
    let stream = TcpStream::connect(address).await.unwrap();
    let mut frames = Framed::new(stream, ClientCodec::new());
    if let Some(message) = first {
        frames.send(message).await.unwrap();
    }
    frames
}

/// The `Error` code the central closes `frames` with.
async fn close_code(frames: Framed<TcpStream, ClientCodec>) -> Option<ErrorCode> {
    let replies = replies_until_closed(frames.into_inner()).await;
    replies.iter().find_map(|r| match r {
        ServerMessage::Error { code, .. } => Some(*code),
        _ => None,
    })
}

fn assert_build_info(scrape: &Scrape, store: &str) {
    let labels = format!(
        "version=\"{}\",protocol_version=\"{}\",store=\"{store}\"",
        env!("CARGO_PKG_VERSION"),
        lottery::protocol::PROTOCOL_VERSION
    );
    assert_eq!(scrape.value("lottery_build_info", &labels), Some(1.0), "{}", scrape.body);
}

/// A central (with `vars`) and two agencies of [`BETS_PER_AGENCY`] bets through the draw, one
/// connection refused for a bad `Hello`; then one scrape, checked for what every run must show.
/// `None` when `promtool` is missing (and not required).
async fn run(dir: &std::path::Path, vars: &[(&str, String)]) -> Option<Scrape> {
    if !promtool_present() {
        return None;
    }
    let mut env = vec![
        ("SERVER_IP", "127.0.0.1".to_owned()),
        ("SERVER_PORT", "0".to_owned()),
        ("LOTTERY_AGENCIES", "2".to_owned()),
        ("METRICS_ADDR", "127.0.0.1:0".to_owned()),
    ];
    env.extend(vars.iter().cloned());
    let (mut server, address, metrics_address) = start_central(&env).await;

    // Before any agency: every family is there already, with nothing counted.
    let before = Scrape::get(&metrics_address).await;
    assert_eq!(before.value("lottery_draw_done", ""), Some(0.0));
    assert_eq!(
        before.value("lottery_connections_refused_total", "reason=\"bad_hello\""),
        Some(0.0)
    );

    // A peer that speaks no protocol: refused as a bad Hello.
    let mut stranger = tokio::net::TcpStream::connect(&address).await.unwrap();
    stranger.write_all(&[0, 0, 0, 3, 0xff, 0xff, 0xff]).await.unwrap();
    let mut rest = Vec::new();
    within("the stranger's close", stranger.read_to_end(&mut rest)).await.unwrap();

    let data: Vec<AgencyData> =
        (1..=2).map(|a| AgencyData::generate(dir, a, BETS_PER_AGENCY)).collect();
    let agencies: Vec<Process> = data
        .iter()
        .map(|agency| {
            let mut env = agency_env(&address, agency);
            env.push(("CLI_BATCH_MAXAMOUNT", "100".to_owned()));
            Process::start(CLIENT_BIN, &env)
        })
        .collect();
    for agency in agencies {
        let (code, lines) = agency.finish().await;
        assert_eq!(code, Some(0), "{lines:#?}");
    }
    server.wait_for_line("action: resumen_total | result: success").await;

    let scrape = Scrape::get(&metrics_address).await;
    scrape.check_with_promtool().await;
    scrape.check_every_family_has_help_and_type();
    for family in [
        "lottery_build_info",
        "lottery_agencies_expected",
        "lottery_agencies_ready",
        "lottery_draw_done",
        "lottery_bets_stored_total",
        "lottery_batches_total",
        "lottery_batch_ack_seconds",
        "lottery_commit_seconds",
        "lottery_connections_open",
        "lottery_connections_refused_total",
        "lottery_token_failures_total",
    ] {
        assert!(scrape.families.contains_key(family), "{family} in {}", scrape.body);
    }
    let stored: f64 = scrape.sum("lottery_bets_stored_total");
    assert_eq!(stored, 2.0 * BETS_PER_AGENCY as f64, "stored = sent");
    assert_eq!(scrape.value("lottery_agencies_expected", ""), Some(2.0));
    assert_eq!(scrape.value("lottery_agencies_ready", ""), Some(2.0));
    assert_eq!(scrape.value("lottery_draw_done", ""), Some(1.0));
    assert_eq!(scrape.value("lottery_batch_ack_seconds_count", ""), Some(14.0));
    assert!(scrape.value("lottery_commit_seconds_count", "").is_some_and(|n| n >= 1.0));
    let refused = |reason: &str| {
        scrape.value("lottery_connections_refused_total", &format!("reason=\"{reason}\""))
    };
    assert_eq!(refused("bad_hello"), Some(1.0), "{}", scrape.body);
    for reason in ["connection_budget", "pending_hellos", "hello_timeout", "token"] {
        assert_eq!(refused(reason), Some(0.0), "{reason}");
    }
    assert_eq!(scrape.value("lottery_token_failures_total", ""), Some(0.0));

    server.signal("TERM");
    assert_eq!(server.finish().await.0, Some(0));
    Some(scrape)
}

/// Whether `promtool` runs here; a loud skip when not, a failure under
/// `LOTTERY_REQUIRE_PROMTOOL`.
fn promtool_present() -> bool {
    let present = std::process::Command::new("promtool")
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !present {
        assert!(
            std::env::var_os("LOTTERY_REQUIRE_PROMTOOL").is_none(),
            "LOTTERY_REQUIRE_PROMTOOL is set but promtool does not run: apt-get install prometheus"
        );
        let message = "\n!!! SKIPPED a metrics test: no promtool (Debian's prometheus package).\n";
        let _ = std::io::Write::write_all(&mut std::io::stderr(), message.as_bytes());
    }
    present
}

/// One scrape: the body, and its samples by family.
struct Scrape {
    body: String,
    /// Family name → (HELP seen, TYPE seen).
    families: BTreeMap<String, (bool, bool)>,
    /// Sample name with its labels as written (`name{a="b"}`) → value.
    samples: BTreeMap<String, f64>,
}

/// Waits until the central's `lottery_connections_open` is `open` (scraping it again each
/// 20 ms): its connections' tasks have ended and released their places.
async fn connections_open_reach(metrics_address: &str, open: f64) {
    within("lottery_connections_open", async {
        loop {
            let scrape = Scrape::get(metrics_address).await;
            if scrape.value("lottery_connections_open", "") == Some(open) {
                return;
            }
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
    })
    .await;
}

impl Scrape {
    async fn get(address: &str) -> Self {
        let mut stream = tokio::net::TcpStream::connect(address).await.unwrap();
        stream.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n").await.unwrap();
        let mut response = String::new();
        within("metrics", stream.read_to_string(&mut response)).await.unwrap();
        let (head, body) = response.split_once("\r\n\r\n").unwrap();
        assert!(head.starts_with("HTTP/1.1 200 OK"), "{response}");
        let mut families = BTreeMap::new();
        let mut samples = BTreeMap::new();
        for line in body.lines().filter(|l| !l.is_empty()) {
            let mut words = line.split(' ');
            match (words.next(), words.next(), words.next()) {
                (Some("#"), Some("HELP"), Some(name)) => {
                    families.entry(name.to_owned()).or_insert((false, false)).0 = true;
                }
                (Some("#"), Some("TYPE"), Some(name)) => {
                    families.entry(name.to_owned()).or_insert((false, false)).1 = true;
                }
                _ => {
                    let (series, value) = line.rsplit_once(' ').unwrap();
                    samples.insert(series.to_owned(), value.parse().unwrap());
                }
            }
        }
        Self { body: body.to_owned(), families, samples }
    }

    /// `promtool check metrics` reads the body from its standard input: it must parse it and
    /// find no problem (help text, counter and unit suffixes, snake case…).
    async fn check_with_promtool(&self) {
        let mut promtool = tokio::process::Command::new("promtool")
            .args(["check", "metrics"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut stdin = promtool.stdin.take().unwrap();
        stdin.write_all(self.body.as_bytes()).await.unwrap();
        drop(stdin);
        let output = within("promtool", promtool.wait_with_output()).await.unwrap();
        let said = String::from_utf8_lossy(&output.stdout).into_owned()
            + &String::from_utf8_lossy(&output.stderr);
        assert!(
            output.status.success() && said.trim().is_empty(),
            "promtool: {said}\n{}",
            self.body
        );
    }

    /// Every sample belongs to a family with `# HELP` and `# TYPE` (a histogram's `_bucket`,
    /// `_sum` and `_count` to the histogram's).
    fn check_every_family_has_help_and_type(&self) {
        let names: BTreeSet<&str> =
            self.samples.keys().map(|s| s.split('{').next().unwrap()).collect();
        for name in names {
            let family = ["_bucket", "_sum", "_count"]
                .iter()
                .find_map(|suffix| {
                    let base = name.strip_suffix(suffix)?;
                    self.families.contains_key(base).then_some(base)
                })
                .unwrap_or(name);
            assert_eq!(self.families.get(family), Some(&(true, true)), "{family}: {}", self.body);
        }
    }

    /// The sample `name{labels}` (`name` alone when `labels` is empty).
    fn value(&self, name: &str, labels: &str) -> Option<f64> {
        let key = if labels.is_empty() { name.to_owned() } else { format!("{name}{{{labels}}}") };
        self.samples.get(&key).copied()
    }

    /// The sum of every sample of `name`, whatever its labels.
    fn sum(&self, name: &str) -> f64 {
        self.samples
            .iter()
            .filter(|(series, _)| series.split('{').next() == Some(name))
            .map(|(_, value)| value)
            .sum()
    }
}
