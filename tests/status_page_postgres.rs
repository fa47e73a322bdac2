//! The status page with PostgreSQL: the whole lottery across two centrals, from the database
//! (each agency's central, bets stored through the other central, the draw recorded by one),
//! in a real browser; `/readyz` following the database down and up. Run under `pg_virtualenv`
//! (see `tests/common/postgres.rs`); without a server they skip, loudly.

mod common;

use std::sync::Arc;

use common::browser::{Browser, http_get};
use common::postgres::{Cluster, test_database};
use common::{AgencyData, spawn_server_with_http, within};
use lottery::client;
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

#[path = "status_page/shared.rs"]
mod shared;
use shared::{assert_no_personal_data, rows, shoot, status_when};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_page_shows_the_whole_lottery_across_two_centrals() {
    let Some(db) = test_database("status_page_two_centrals").await else { return };
    let Some(browser) = Browser::start("the status page across two centrals").await else { return };
    let dir = Arc::new(tempfile::tempdir().unwrap());
    let vars = [("LOTTERY_AGENCIES", "3"), ("LOTTERY_DATABASE_URL", db.url.as_str())];
    let (a, a_http) = spawn_server_with_http(Arc::new(tempfile::tempdir().unwrap()), &vars).await;
    let (b, b_http) = spawn_server_with_http(Arc::new(tempfile::tempdir().unwrap()), &vars).await;
    let a_name = status_when(a_http, |s| s["phase"] == "collecting").await["central"].clone();
    let b_name = status_when(b_http, |s| s["phase"] == "collecting").await["central"].clone();
    assert_ne!(a_name, b_name);
    let data: Vec<AgencyData> =
        (1..=3).map(|n| AgencyData::generate(dir.path(), n, 500 + 100 * n as usize)).collect();
    let run = |agency: &AgencyData, central: std::net::SocketAddr| {
        let config = agency.client_config(central);
        tokio::spawn(async move { client::run(&config, &CancellationToken::new()).await })
    };
    // Agency 1 on central A, agency 2 on central B; the page is A's.
    let early = [run(&data[0], a.addr), run(&data[1], b.addr)];
    browser.goto(&format!("http://{a_http}/")).await;
    browser.wait_until("document.body.dataset.ready === '2'").await;
    let during = rows(&browser).await;
    assert_eq!(during[0]["bets"], json!(data[0].rows.len()), "{during:#?}");
    assert_eq!(during[1]["bets"], json!(data[1].rows.len()), "stored through B: {during:#?}");
    assert_eq!(during[0]["connection"], json!("connected · here"), "{during:#?}");
    let on_b = format!("on {}", b_name.as_str().unwrap());
    assert_eq!(during[1]["connection"], json!(on_b), "{during:#?}");
    assert_eq!(during[2]["bets"], json!(0));
    let text = browser.text_and_html().await;
    assert!(text.contains("Waiting for 1 agency"), "{text}");
    assert!(text.contains("database shared by centrals"), "{text}");
    assert_no_personal_data("the page during the run", &text, &data);
    let version = browser.execute("return document.body.dataset.version", json!([])).await;
    shoot(&browser, "postgres-during", version.as_str().unwrap()).await;

    let late = run(&data[2], b.addr);
    for (agency, done) in data.iter().zip(early.into_iter().chain([late])) {
        let outcome = within("an agency's run", done).await.unwrap().unwrap();
        assert_eq!(outcome.winners.len(), agency.winners().len());
    }
    browser.wait_until("document.body.dataset.draw === 'drawn'").await;
    let after = rows(&browser).await;
    for (row, agency) in after.iter().zip(&data) {
        assert_eq!(row["bets"], json!(agency.rows.len()), "{row}");
        assert_eq!(row["winners"], json!(agency.winners().len().to_string()), "{row}");
    }
    let text = browser.text_and_html().await;
    assert!(text.contains("recorded by "), "{text}");
    assert_no_personal_data("the page after the draw", &text, &data);
    for http in [a_http, b_http] {
        let status = status_when(http, |s| s["phase"] == "drawn").await;
        assert_eq!(
            status["totals"]["bets"],
            json!(data.iter().map(|d| d.rows.len()).sum::<usize>())
        );
        assert_no_personal_data("/status.json", &status.to_string(), &data);
    }
    let version = browser.execute("return document.body.dataset.version", json!([])).await;
    shoot(&browser, "postgres-after-draw", version.as_str().unwrap()).await;
    browser.quit().await;
    a.stop().await;
    b.stop().await;
}

#[tokio::test]
async fn readyz_follows_the_database_down_and_up() {
    let Some(db) = test_database("status_page_readyz").await else { return };
    let Some(cluster) = Cluster::regress("readyz follows the database").await else { return };
    let dir = Arc::new(tempfile::tempdir().unwrap());
    let vars = [("LOTTERY_AGENCIES", "2"), ("LOTTERY_DATABASE_URL", db.url.as_str())];
    let (central, http) = spawn_server_with_http(dir, &vars).await;
    status_when(http, |s| s["phase"] == "collecting" && s["store_reachable"] == true).await;
    assert_eq!(http_get(http, "/readyz").await.0, 200);
    cluster.stop_immediately().await;
    let status: Value = status_when(http, |s| s["store_reachable"] == false).await;
    assert!(status["store_error"].as_str().is_some_and(|e| !e.is_empty()), "{status}");
    let (code, body) = http_get(http, "/readyz").await;
    assert_eq!(code, 503, "{body}");
    assert!(body.contains("the store cannot be reached"), "{body}");
    assert_eq!(http_get(http, "/healthz").await.0, 200, "the process still answers");
    cluster.start().await;
    status_when(http, |s| s["store_reachable"] == true).await;
    assert_eq!(http_get(http, "/readyz").await.0, 200);
    central.stop().await;
}
