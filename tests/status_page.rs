//! The status page and the HTTP listener: the page in a real browser (headless Chromium) during
//! a run and after the draw, `/status.json`, `/healthz`, `/readyz`, `/metrics`, clients that
//! are slow or never read, the older `METRICS_ADDR`, and `healthcheck` with the central's flags.

mod common;

use std::net::SocketAddr;
use std::sync::Arc;

use common::browser::{Browser, http_get};
use common::{AgencyData, Process, SERVER_BIN, spawn_server_with_http, within};
use lottery::client;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_util::sync::CancellationToken;

#[path = "status_page/shared.rs"]
mod shared;
use shared::{assert_no_personal_data, rows, shoot, status_when};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_page_shows_the_lottery_live_and_after_the_draw_in_a_real_browser() {
    let Some(browser) = Browser::start("the status page in a real browser").await else { return };
    let dir = Arc::new(tempfile::tempdir().unwrap());
    let (server, http) = spawn_server_with_http(dir.clone(), &[("LOTTERY_AGENCIES", "3")]).await;
    let data: Vec<AgencyData> =
        (1..=3).map(|a| AgencyData::generate(dir.path(), a, 600 + 150 * a as usize)).collect();
    let run = |agency: &AgencyData| {
        let config = agency.client_config(server.addr);
        tokio::spawn(async move { client::run(&config, &CancellationToken::new()).await })
    };
    // Agencies 1 and 2 upload everything and wait for the draw; agency 3 has not come yet.
    let early = [run(&data[0]), run(&data[1])];
    browser.goto(&format!("http://{http}/")).await;
    browser.wait_until("document.body.dataset.ready === '2'").await;
    let during = rows(&browser).await;
    assert_eq!(during.len(), 3, "{during:#?}");
    for (row, agency) in during.iter().zip(&data).take(2) {
        assert_eq!(row["agency"], json!(agency.agency), "{row}");
        assert_eq!(row["bets"], json!(agency.rows.len()), "{row}");
        assert_eq!((&row["ready"], &row["connection"]), (&json!("ready"), &json!("connected")));
        assert_eq!(row["winners"], json!("–"), "no winners before the draw: {row}");
    }
    assert_eq!(during[2]["bets"], json!(0));
    assert_eq!(
        (&during[2]["ready"], &during[2]["connection"]),
        (&json!("no"), &json!("not connected"))
    );
    let text = browser.text_and_html().await;
    assert!(text.contains("Waiting for 1 agency"), "{text}");
    assert_no_personal_data("the page during the run", &text, &data);
    let (_, json) = http_get(http, "/status.json").await;
    assert_no_personal_data("/status.json during the run", &json, &data);
    let version = browser.execute("return document.body.dataset.version", json!([])).await;
    shoot(&browser, "during", version.as_str().unwrap()).await;

    let late = run(&data[2]);
    for (agency, done) in data.iter().zip(early.into_iter().chain([late])) {
        let outcome = within("an agency's run", done).await.unwrap().unwrap();
        assert_eq!(outcome.winners.len(), agency.winners().len());
    }
    browser.wait_until("document.body.dataset.draw === 'drawn'").await;
    let after = rows(&browser).await;
    for (row, agency) in after.iter().zip(&data) {
        assert_eq!(row["bets"], json!(agency.rows.len()), "{row}");
        assert_eq!(row["ready"], json!("ready"), "{row}");
        assert_eq!(row["winners"], json!(agency.winners().len().to_string()), "{row}");
    }
    let text = browser.text_and_html().await;
    assert!(text.contains("Drawn at "), "{text}");
    let total: usize = data.iter().map(|d| d.winners().len()).sum();
    let bets: usize = data.iter().map(|d| d.rows.len()).sum();
    assert!(text.contains(&format!("{total} winners among {}", fmt(bets))), "{text}");
    assert_no_personal_data("the page after the draw", &text, &data);
    let (_, json) = http_get(http, "/status.json").await;
    assert_no_personal_data("/status.json after the draw", &json, &data);
    let version = browser.execute("return document.body.dataset.version", json!([])).await;
    shoot(&browser, "after-draw", version.as_str().unwrap()).await;
    browser.quit().await;
    server.stop().await;
}

/// `n` as the page writes it (1,234).
fn fmt(n: usize) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    out
}

#[tokio::test]
async fn health_readiness_status_json_and_metrics() {
    let dir = Arc::new(tempfile::tempdir().unwrap());
    let (server, http) = spawn_server_with_http(dir.clone(), &[("LOTTERY_AGENCIES", "2")]).await;
    assert_eq!(http_get(http, "/healthz").await, (200, "ok\n".to_owned()));
    let status = status_when(http, |s| s["phase"] == "collecting").await;
    assert_eq!(http_get(http, "/readyz").await, (200, "ready\n".to_owned()));
    assert_eq!(status["totals"]["agencies_expected"], json!(2));
    assert_eq!(status["draw"]["waiting_for"], json!(2));
    assert_eq!(status["store_reachable"], json!(true));
    let (code, page) = http_get(http, "/").await;
    assert!(code == 200 && page.contains("<title>Lottery central"), "{page}");
    assert_eq!(http_get(http, "/nowhere").await.0, 404);
    let (code, metrics) = http_get(http, "/metrics").await;
    assert_eq!(code, 200, "{metrics}");
    // A request head past 8 KiB is refused, not buffered (exactly 8 KiB sent, all of it read).
    let mut big = TcpStream::connect(http).await.unwrap();
    let mut head = b"GET / HTTP/1.1\r\nX-Pad: ".to_vec();
    head.resize(8 * 1024, b'a');
    big.write_all(&head).await.unwrap();
    let mut answer = String::new();
    within("the refusal", big.read_to_string(&mut answer)).await.unwrap();
    assert!(answer.starts_with("HTTP/1.1 431"), "{answer}");
    // Neither a POST nor an unknown path.
    let mut post = TcpStream::connect(http).await.unwrap();
    post.write_all(b"POST /status.json HTTP/1.1\r\nContent-Length: 0\r\n\r\n").await.unwrap();
    let mut answer = String::new();
    within("the POST", post.read_to_string(&mut answer)).await.unwrap();
    assert!(answer.starts_with("HTTP/1.1 405"), "{answer}");

    let data: Vec<AgencyData> = (1..=2).map(|a| AgencyData::generate(dir.path(), a, 400)).collect();
    let runs: Vec<_> = data
        .iter()
        .map(|agency| {
            let config = agency.client_config(server.addr);
            tokio::spawn(async move { client::run(&config, &CancellationToken::new()).await })
        })
        .collect();
    for run in runs {
        within("an agency", run).await.unwrap().unwrap();
    }
    let status = status_when(http, |s| s["phase"] == "drawn").await;
    assert_eq!(status["totals"]["bets"], json!(800));
    assert_eq!(
        status["totals"]["batches"],
        json!(
            status["agencies"]
                .as_array()
                .map_or(0, |a| { a.iter().map(|r| r["batches"].as_u64().unwrap()).sum::<u64>() })
        )
    );
    let winners: Vec<Value> =
        status["agencies"].as_array().unwrap().iter().map(|r| r["winners"].clone()).collect();
    assert_eq!(winners, data.iter().map(|d| json!(d.winners().len())).collect::<Vec<_>>());
    assert!(status["draw"]["drawn_at_ms"].as_i64().is_some_and(|t| t > 0), "{status}");
    assert!(status["rate"]["last_minute"].as_u64().is_some_and(|n| n <= 800), "{status}");
    assert_no_personal_data("/status.json", &status.to_string(), &data);
    server.stop().await;
}

#[tokio::test]
async fn readyz_says_503_until_the_store_is_open_while_healthz_answers() {
    // A database that accepts connections and never answers: opening the store waits.
    let silent = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = silent.local_addr().unwrap().port();
    let _held = tokio::spawn(async move {
        let mut open = Vec::new();
        while let Ok((stream, _)) = silent.accept().await {
            open.push(stream);
        }
    });
    let url = format!("host=127.0.0.1 port={port} user=x password=y dbname=z connect_timeout=1");
    let dir = Arc::new(tempfile::tempdir().unwrap());
    let vars = [("LOTTERY_AGENCIES", "2"), ("LOTTERY_DATABASE_URL", url.as_str())];
    let (server, http) = spawn_server_with_http(dir, &vars).await;
    assert_eq!(http_get(http, "/healthz").await.0, 200);
    let (code, body) = http_get(http, "/readyz").await;
    assert_eq!(code, 503, "{body}");
    assert!(body.contains("start-up recovery"), "{body}");
    let (code, body) = http_get(http, "/status.json").await;
    assert!(code == 200 && body.contains("\"phase\":\"starting\""), "{body}");
    // Stopped while waiting: it stops cleanly.
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_silent_and_never_reading_http_clients_do_not_hold_the_central_back() {
    let dir = Arc::new(tempfile::tempdir().unwrap());
    let (server, http) = spawn_server_with_http(dir.clone(), &[("LOTTERY_AGENCIES", "2")]).await;
    status_when(http, |s| s["phase"] == "collecting").await;
    // Every HTTP place taken by clients that connect and say nothing, and past the places, a
    // connection is told so at once (the silent ones hold theirs for 5 s).
    let mut silent = Vec::new();
    for _ in 0..32 {
        silent.push(TcpStream::connect(http).await.unwrap());
    }
    let mut turned_away = TcpStream::connect(http).await.unwrap();
    let mut answer = String::new();
    within("the busy answer", turned_away.read_to_string(&mut answer)).await.unwrap();
    assert!(answer.starts_with("HTTP/1.1 503") && answer.contains("busy"), "{answer}");
    // And clients that ask for the page and never read a byte of it (receive buffers made
    // tiny), more of them waiting behind the others.
    let mut greedy = Vec::new();
    for _ in 0..24 {
        let socket = tokio::net::TcpSocket::new_v4().unwrap();
        socket.set_recv_buffer_size(1024).unwrap();
        let mut stream = socket.connect(http).await.unwrap();
        stream.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n").await.unwrap();
        greedy.push(stream);
    }
    // The agencies upload and get their winners all the same.
    let data: Vec<AgencyData> =
        (1..=2).map(|a| AgencyData::generate(dir.path(), a, 2000)).collect();
    let runs: Vec<_> = data
        .iter()
        .map(|agency| {
            let config = agency.client_config(server.addr);
            tokio::spawn(async move { client::run(&config, &CancellationToken::new()).await })
        })
        .collect();
    for (run, agency) in runs.into_iter().zip(&data) {
        let outcome = within("an agency beside the silent clients", run).await.unwrap().unwrap();
        assert_eq!(outcome.winners.len(), agency.winners().len());
    }
    // A silent client is closed at its deadline, with nothing said.
    let mut rest = Vec::new();
    within("a silent client's deadline", silent[0].read_to_end(&mut rest)).await.unwrap();
    assert!(rest.is_empty(), "{}", String::from_utf8_lossy(&rest));
    // The listener still answers, beside clients that never read.
    assert_eq!(http_get(http, "/healthz").await.0, 200);
    // Shutdown does not wait for them either.
    server.stop().await;
    drop((silent, greedy));
}

#[tokio::test]
async fn metrics_addr_still_works_with_a_warning_and_healthcheck_takes_the_central_flags() {
    let dir = tempfile::tempdir().unwrap();
    let bets = dir.path().join("bets.csv").display().to_string();
    let env = [
        ("SERVER_IP", "127.0.0.1".to_owned()),
        ("BETS_FILE", bets.clone()),
        ("LOTTERY_AGENCIES", "1".to_owned()),
        ("METRICS_ADDR", "127.0.0.1:0".to_owned()),
    ];
    let mut server = Process::start_with_args(SERVER_BIN, &env, ["--port", "0"]);
    let warning = server.wait_for_line("action: config_deprecated").await;
    assert!(warning.contains("| setting: METRICS_ADDR | use_instead: HTTP_ADDR"), "{warning}");
    assert!(warning.contains("WARN"), "{warning}");
    let line = server.wait_for_line("action: http | result: success").await;
    let http_addr = line.split(" | ").find_map(|f| f.strip_prefix("address: ")).unwrap().to_owned();
    let line = server.wait_for_line("action: listen | result: success").await;
    let port = line.rsplit(':').next().unwrap().trim().to_owned();
    let http: SocketAddr = http_addr.parse().unwrap();
    status_when(http, |s| s["phase"] == "collecting").await;

    // healthcheck with the central's own flags (nothing in its environment): /readyz.
    let flags = ["healthcheck", "--ip", "127.0.0.1", "--port", &port, "--http-addr", &http_addr];
    let (code, lines) = healthcheck(&flags).await;
    assert_eq!(code, Some(0), "{lines:?}");
    // Without the HTTP address: a Ping on the port its flag gives.
    let (code, lines) = healthcheck(&["healthcheck", "--ip", "127.0.0.1", "--port", &port]).await;
    assert_eq!(code, Some(0), "{lines:?}");
    server.signal("TERM");
    assert_eq!(server.finish().await.0, Some(0));
    // The central gone: both fail.
    let (code, _) = healthcheck(&flags).await;
    assert_eq!(code, Some(1));
}

/// Runs `lottery-server` with `args` and an empty environment; its exit code and stdout.
async fn healthcheck(args: &[&str]) -> (Option<i32>, String) {
    let dir = tempfile::tempdir().unwrap();
    let output = within(
        "healthcheck",
        tokio::process::Command::new(SERVER_BIN)
            .args(args)
            .env_clear()
            .current_dir(dir.path())
            .output(),
    )
    .await
    .unwrap();
    let text = String::from_utf8_lossy(&output.stdout).into_owned()
        + &String::from_utf8_lossy(&output.stderr);
    (output.status.code(), text)
}
