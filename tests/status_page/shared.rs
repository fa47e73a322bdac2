//! What both status-page test files share: waiting for a status, reading the page's rows,
//! screenshots, and the check that no bettor's data shows.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde_json::{Value, json};

use super::common::browser::{Browser, http_get};
use super::common::{AgencyData, within};

/// Where the screenshots go (and the README's, from the 1280 px one after the draw).
fn shots() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("target/status-page")
}

/// `/status.json`, once `holds` says so of it (asked again each time the central rebuilds it).
pub async fn status_when(http: SocketAddr, holds: impl Fn(&Value) -> bool) -> Value {
    let mut tick = tokio::time::interval(std::time::Duration::from_millis(200));
    within("the status the test waits for", async {
        loop {
            tick.tick().await;
            let (code, body) = http_get(http, "/status.json").await;
            assert_eq!(code, 200, "{body}");
            let status: Value = serde_json::from_str(&body).expect("JSON");
            if holds(&status) {
                return status;
            }
        }
    })
    .await
}

/// Fails the test if any bettor's document or birthdate of `data` is in `text` (a document
/// counts only as a whole number, not as digits inside a longer one such as a timestamp).
pub fn assert_no_personal_data(what: &str, text: &str, data: &[AgencyData]) {
    let numbers: std::collections::HashSet<&str> =
        text.split(|c: char| !c.is_ascii_digit()).filter(|n| !n.is_empty()).collect();
    for row in data.iter().flat_map(|d| &d.rows) {
        assert!(!numbers.contains(row.document.as_str()), "document {} in {what}", row.document);
        assert!(!text.contains(&row.birthdate), "birthdate {} in {what}", row.birthdate);
    }
}

/// The page's agency rows: agency, connection, bets, ready, winners (as the page shows them).
pub async fn rows(browser: &Browser) -> Vec<Value> {
    let script = "return [...document.querySelectorAll('#agencies tr')].map(tr => ({
        agency: Number(tr.dataset.agency),
        connection: tr.querySelector('.conn').textContent,
        bets: Number(tr.querySelector('.bets').textContent.replaceAll(',', '')),
        ready: tr.querySelector('.ready').textContent,
        winners: tr.querySelector('.winners').textContent }))";
    browser.execute(script, json!([])).await.as_array().cloned().unwrap_or_default()
}

pub async fn shoot(browser: &Browser, name: &str, version_after: &str) {
    for (width, height, suffix) in [(1280, 640, "1280"), (1920, 900, "1920"), (360, 1400, "360")] {
        browser.resize(width, height).await;
        // A render after the resize: the page's own signal, a newer version than before it.
        browser
            .wait_until(&format!("Number(document.body.dataset.version) > {version_after}"))
            .await;
        browser.screenshot(&shots().join(format!("{name}-{suffix}.png"))).await;
    }
}
