//! Client failover (issue 13): an agency given several centrals in `CLI_SERVER_ADDRESS` moves to
//! the next one when its central is unreachable or its connection breaks, and resumes there from
//! the `Welcome` it gets.

mod common;

use common::proxy::Proxy;
use common::{
    AgencyData, CLIENT_BIN, Process, assert_grader_line, line_with, sorted, start_server_process,
    stored_multiset,
};
use lottery::protocol::ServerMessage;

fn agency_env(addresses: &str, data: &AgencyData) -> Vec<(&'static str, String)> {
    vec![
        ("CLI_ID", data.agency.to_string()),
        ("CLI_SERVER_ADDRESS", addresses.to_owned()),
        ("CLI_DATA_FILE", data.path.display().to_string()),
        ("CLI_BATCH_MAXAMOUNT", "100".to_owned()),
        ("CLI_CONNECT_TIMEOUT", "30s".to_owned()),
    ]
}

/// A loopback address nothing listens on: a listener's port, the listener dropped.
fn closed_address() -> String {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap().to_string()
}

/// Checks the agency ended well: exit 0, its own winners, every line in the graders' shape.
fn assert_finished(agency: &AgencyData, code: Option<i32>, lines: &[String]) {
    assert_eq!(code, Some(0), "agency {}: {lines:#?}", agency.agency);
    let winners = format!(
        "action: consulta_ganadores | result: success | cant_ganadores: {}",
        agency.winners().len()
    );
    assert!(lines.iter().any(|l| l.ends_with(&winners)), "{winners} in {lines:#?}");
    lines.iter().filter(|l| l.contains("action: ")).for_each(|l| assert_grader_line(l));
}

#[tokio::test]
async fn an_agency_skips_a_central_that_refuses_and_uploads_to_the_next() {
    let dir = tempfile::tempdir().unwrap();
    let bets_file = dir.path().join("bets.csv");
    let (server, live) = start_server_process(&bets_file, 1).await;
    let data = AgencyData::generate(dir.path(), 1, 1500);
    let closed = closed_address();
    let list = format!("{closed},{live}");

    let (code, lines) = Process::start(CLIENT_BIN, &agency_env(&list, &data)).finish().await;
    assert_finished(&data, code, &lines);
    let config = line_with(&lines, "action: config | result: success");
    assert!(config.contains(&format!("| server_address: {list} |")), "the whole list: {config}");
    let moved = line_with(&lines, "action: connect | result: in_progress");
    let expected = format!("| address: {closed} | next_address: {live} | retry_in_ms: ");
    assert!(moved.contains(&expected), "{expected} in {moved}");
    assert!(
        !lines
            .iter()
            .any(|l| l.contains("result: in_progress")
                && l.contains(&format!("| address: {live} |"))),
        "the live central never failed: {lines:#?}"
    );

    server.signal("TERM");
    let (code, lines) = server.finish().await;
    assert_eq!(code, Some(0), "{lines:#?}");
    assert_eq!(lines.iter().filter(|l| l.contains("action: sorteo | result: success")).count(), 1);
    assert_eq!(stored_multiset(&bets_file), sorted(data.stored_rows()), "every bet once");
}

#[tokio::test]
async fn an_agency_that_can_reach_no_central_names_every_address_it_tried() {
    let (first, second) = (closed_address(), closed_address());
    let env = [
        ("CLI_ID", "1".to_owned()),
        ("CLI_SERVER_ADDRESS", format!("{first}, {second}")),
        ("CLI_DATA_FILE", "/nonexistent".to_owned()),
        // Both are tried within the first pause (10 ms at most); the rest is margin.
        ("CLI_CONNECT_TIMEOUT", "2s".to_owned()),
    ];
    let (code, lines) = Process::start(CLIENT_BIN, &env).finish().await;
    assert_eq!(code, Some(1), "{lines:#?}");
    let failure = line_with(&lines, "action: connect | result: fail");
    let expected = format!("cannot reach the central at {first}, {second} (tried for ");
    assert!(failure.contains(&expected), "{expected} in {failure}");
    // Round robin, wrapping: from the second back to the first.
    let back = format!("| address: {second} | next_address: {first} |");
    assert!(lines.iter().any(|l| l.contains(&back)), "{back} in {lines:#?}");
}

/// Two proxies in front of one central stand for two centrals on one database. Proxy 1 dies
/// right after the central acknowledged a batch mid-upload (the acknowledgement is lost with
/// it); the agencies move to proxy 2, resume from its `Welcome` and finish.
#[tokio::test]
async fn agencies_move_to_the_next_central_when_theirs_dies_mid_upload() {
    let dir = tempfile::tempdir().unwrap();
    let bets_file = dir.path().join("bets.csv");
    let (server, address) = start_server_process(&bets_file, 2).await;
    let data: Vec<AgencyData> =
        (1..=2).map(|a| AgencyData::generate(dir.path(), a, 3000 + 100 * a as usize)).collect();
    let (first, second) = (Proxy::start().await, Proxy::start().await);
    for proxy in [&first, &second] {
        proxy.set_backend(address.parse().unwrap());
    }
    // Batch 5 of 30 or more: the first agency to get there is mid-upload.
    first.die_when(|reply| matches!(reply, ServerMessage::BatchAccepted { seq: 5, .. }));
    let list = format!("{},{}", first.addr, second.addr);
    let agencies: Vec<Process> =
        data.iter().map(|d| Process::start(CLIENT_BIN, &agency_env(&list, d))).collect();

    let mut resumed = Vec::new();
    for (agency, data) in agencies.into_iter().zip(&data) {
        let (code, lines) = agency.finish().await;
        assert_finished(data, code, &lines);
        // It left proxy 1 (a broken connection, or a refused one if it came late) for proxy 2…
        let moved = format!("| address: {} | next_address: {} |", first.addr, second.addr);
        assert!(
            lines.iter().any(|l| l.contains("result: in_progress") && l.contains(&moved)),
            "{moved} in {lines:#?}"
        );
        // …and stayed there.
        let failed_there = format!("| address: {} |", second.addr);
        assert!(!lines.iter().any(|l| l.contains(&failed_there)), "{lines:#?}");
        let uploads = lines.iter().filter(|l| l.contains("action: upload | result: success"));
        resumed.extend(uploads.filter(|l| !l.contains("resumed_after: 0 |")).cloned());
    }
    // Proxy 2's Welcome said how many bets the central held, and the upload went on from there.
    assert!(!resumed.is_empty(), "an upload resumed after the bets stored through proxy 1");
    assert!(first.is_down() && first.cuts() == 1, "proxy 1 died once");
    assert_eq!(second.connections(), 2, "each agency connected to proxy 2 once and stayed");

    server.signal("TERM");
    let (code, lines) = server.finish().await;
    assert_eq!(code, Some(0), "{lines:#?}");
    assert_eq!(lines.iter().filter(|l| l.contains("action: sorteo | result: success")).count(), 1);
    let expected = sorted(data.iter().flat_map(AgencyData::stored_rows).collect());
    assert_eq!(stored_multiset(&bets_file), expected, "every bet exactly once");
}
