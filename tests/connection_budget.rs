//! Connections that never say `Hello` have a small budget of their own: a flood of them cannot
//! take the places of agencies that authenticate.

mod common;

use common::{AgencyData, CLIENT_BIN, Process, replies_until_closed, start_server_with, within};
use futures::StreamExt;
use lottery::protocol::ClientCodec;
use lottery::protocol::{ErrorCode, ServerMessage};
use tokio::net::TcpStream;
use tokio_util::codec::Framed;

#[tokio::test]
async fn idle_connections_cannot_keep_an_agency_out() {
    let dir = tempfile::tempdir().unwrap();
    let vars = [
        ("LOTTERY_AGENCIES", "1"),
        ("LOTTERY_MAX_CONNECTIONS", "16"),
        ("LOTTERY_MAX_PENDING_HELLOS", "8"),
        // The idle connections would hold their places for the whole test.
        ("LOTTERY_HELLO_TIMEOUT", "10m"),
    ];
    let (mut server, address) = start_server_with(&dir.path().join("bets.csv"), &vars).await;

    // 40 connections that never say anything: more than every connection the central may serve.
    let mut idle = Vec::new();
    for _ in 0..40 {
        idle.push(TcpStream::connect(&address).await.unwrap());
    }
    // The agency connects after all of them, and gets through.
    let data = AgencyData::generate(dir.path(), 1, 300);
    let client_env = [
        ("CLI_ID", "1".to_owned()),
        ("CLI_SERVER_ADDRESS", address.clone()),
        ("CLI_DATA_FILE", data.path.display().to_string()),
        ("CLI_CONNECT_TIMEOUT", "5s".to_owned()),
    ];
    let (code, lines) = Process::start(CLIENT_BIN, &client_env).finish().await;
    assert_eq!(code, Some(0), "{lines:#?}");
    let winners = format!("cant_ganadores: {}", data.winners().len());
    assert!(lines.iter().any(|l| l.contains(&winners)), "{lines:#?}");

    // The central made room by closing the oldest connections without Hello.
    let needle =
        "error: too many connections without Hello: the oldest closed with Busy | limit: 8";
    server.wait_for_line(needle).await;
    let first_idle = idle.swap_remove(0);
    let replies = replies_until_closed(first_idle).await;
    let busy = |r: &ServerMessage| matches!(r, ServerMessage::Error { code: ErrorCode::Busy, .. });
    assert!(replies.iter().any(busy), "the oldest connection was told Busy: {replies:?}");
    server.signal("TERM");
    let (code, lines) = server.finish().await;
    assert_eq!(code, Some(0), "{lines:#?}");
    let closed: Vec<&String> =
        lines.iter().filter(|l| l.contains("action: connection | result: fail")).collect();
    assert!(!closed.is_empty(), "{lines:#?}");
    for line in closed {
        assert!(!line.contains(": |") && !line.ends_with(": "), "no empty field: {line}");
    }
}

/// Finding 2 (medium). Each connection the newcomers' budget closes logs its own WARN line
/// (`error: Busy: too many connections without Hello: this one, the oldest, was closed…`) next
/// to the rate-limited summary: a flood of connections turns into one log line each. Measured
/// on the release binary: 156,289 such lines (30 MB of log) from a 40 s connect/close flood.
#[tokio::test]
async fn evicted_connections_do_not_each_log_a_line() {
    let dir = tempfile::tempdir().unwrap();
    let bets_file = dir.path().join("bets.csv");
    let extra = [
        ("LOTTERY_MAX_CONNECTIONS", "64"),
        ("LOTTERY_MAX_PENDING_HELLOS", "2"),
        ("LOTTERY_HELLO_TIMEOUT", "10m"),
    ];
    let (server, address) =
        start_server_with(&bets_file, &[&[("LOTTERY_AGENCIES", "1")][..], &extra[..]].concat())
            .await;
    let mut idle = Vec::new();
    for _ in 0..50 {
        idle.push(TcpStream::connect(&address).await.unwrap());
    }
    // The central closes every one but the last two; wait until it has.
    for stream in idle.drain(..48) {
        let mut frames = Framed::new(stream, ClientCodec::new());
        while let Some(Ok(_)) = within("an evicted connection closing", frames.next()).await {}
    }
    server.signal("TERM");
    let (code, lines) = server.finish().await;
    assert_eq!(code, Some(0), "{lines:#?}");
    let each: Vec<&String> =
        lines.iter().filter(|l| l.contains("this one, the oldest, was closed")).collect();
    assert!(each.len() <= 5, "{} lines for 48 evictions: {:#?}", each.len(), &each[..3]);
}

/// More agencies than connection slots (issue 24): an agency that is ready and waits for the
/// draw gives its place to one still uploading, and an agency told `Busy` keeps trying however
/// long the central stays full (it answers: it is serving others), so every agency uploads and
/// the draw happens. On the code before, the first 8 agencies held every place while they
/// waited, the others gave up after `CLI_CONNECT_TIMEOUT` (2 s here), and no draw came.
#[tokio::test]
async fn more_agencies_than_connection_slots_still_draw() {
    use common::{AgencyData, sorted, spawn_server_with, stored_multiset};
    use lottery::client;
    use tokio::task::JoinSet;
    use tokio_util::sync::CancellationToken;

    let agencies = 40;
    let server = spawn_server_with(&[
        ("LOTTERY_AGENCIES", &agencies.to_string()),
        ("LOTTERY_MAX_CONNECTIONS", "8"),
    ])
    .await;
    let data: Vec<AgencyData> =
        (1..=agencies).map(|a| AgencyData::generate(server.dir.path(), a, 100)).collect();
    let mut clients = JoinSet::new();
    for agency in &data {
        let mut config = agency.client_config(server.addr);
        config.connect_timeout = std::time::Duration::from_secs(2);
        let expected = agency.winners();
        clients.spawn(async move {
            let outcome = client::run(&config, &CancellationToken::new()).await;
            let winners = outcome.unwrap_or_else(|e| panic!("agency {}: {e}", config.id)).winners;
            assert_eq!(winners, expected, "agency {}", config.id);
        });
    }
    while let Some(done) = within("agencies", clients.join_next()).await {
        done.unwrap();
    }
    let expected = sorted(data.iter().flat_map(AgencyData::stored_rows).collect());
    assert_eq!(stored_multiset(&server.bets_file), expected, "every bet stored exactly once");
    server.stop().await;
}
