//! The real binaries as separate processes: what `docker compose up` and the graders see.

mod common;

use common::{
    AgencyData, CLIENT_BIN, Process, SERVER_BIN, assert_grader_line, sorted, start_server_process,
    stored_multiset, wire_bet, within,
};
use std::path::Path;

use lottery::client::ClientError;
use lottery::protocol::ErrorCode;
use lottery::{AgencyId, Connection};

fn client_env(address: &str, data: &AgencyData) -> Vec<(&'static str, String)> {
    vec![
        ("CLI_ID", data.agency.to_string()),
        ("CLI_SERVER_ADDRESS", address.to_owned()),
        ("CLI_DATA_FILE", data.path.display().to_string()),
        ("CLI_CONNECT_TIMEOUT", "10s".to_owned()),
    ]
}

#[tokio::test]
async fn five_agency_processes_run_the_lottery_to_the_end() {
    let dir = tempfile::tempdir().unwrap();
    let bets_file = dir.path().join("bets.csv");
    let (server, address) = start_server_process(&bets_file, 5).await;
    let data: Vec<AgencyData> =
        (1..=5).map(|a| AgencyData::generate(dir.path(), a, 3000 + 500 * a as usize)).collect();
    let clients: Vec<Process> =
        data.iter().map(|d| Process::start(CLIENT_BIN, &client_env(&address, d))).collect();

    for (client, agency) in clients.into_iter().zip(&data) {
        let (code, lines) = client.finish().await;
        assert_eq!(code, Some(0), "agency {}: {lines:#?}", agency.agency);
        let expected = format!(
            "action: consulta_ganadores | result: success | cant_ganadores: {}",
            agency.winners().len()
        );
        assert!(lines.iter().any(|l| l.ends_with(&expected)), "{expected} in {lines:#?}");
        lines.iter().filter(|l| l.contains("action: ")).for_each(|l| assert_grader_line(l));
    }
    server.signal("TERM");
    let (code, lines) = server.finish().await;
    assert_eq!(code, Some(0), "{lines:#?}");
    let draws = lines.iter().filter(|l| l.contains("action: sorteo | result: success")).count();
    assert_eq!(draws, 1, "one draw: {lines:#?}");
    let stored: usize = lines
        .iter()
        .filter(|l| l.contains("action: apuesta_recibida | result: success | cantidad: "))
        .map(|l| l.split(" | ").nth(2).unwrap()["cantidad: ".len()..].parse::<usize>().unwrap())
        .sum();
    assert_eq!(stored, data.iter().map(|d| d.rows.len()).sum::<usize>(), "logged batches");
    assert!(lines.iter().any(|l| l.ends_with("action: shutdown | result: success")));
    lines.iter().filter(|l| l.contains("action: ")).for_each(|l| assert_grader_line(l));
    let expected = sorted(data.iter().flat_map(AgencyData::stored_rows).collect());
    assert_eq!(stored_multiset(&bets_file), expected);
}

#[tokio::test]
async fn sigterm_while_agencies_wait_at_the_barrier_exits_zero() {
    let dir = tempfile::tempdir().unwrap();
    let (mut server, address) = start_server_process(&dir.path().join("bets.csv"), 3).await;
    let data = AgencyData::generate(dir.path(), 2, 500);
    let mut env = client_env(&address, &data);
    env.push(("CLI_CONNECT_TIMEOUT", "300ms".to_owned())); // the later of the two wins
    let client = Process::start(CLIENT_BIN, &env);
    server.wait_for_line("action: ready_for_lottery | result: success | agency: 2").await;

    server.signal("TERM");
    let (code, lines) = server.finish().await;
    assert_eq!(code, Some(0), "{lines:#?}");
    for step in [
        "signal: SIGTERM",
        "step: listener closed",
        "step: connections closed",
        "step: bets file closed",
    ] {
        assert!(lines.iter().any(|l| l.contains("action: shutdown") && l.contains(step)), "{step}");
    }
    assert!(lines.last().unwrap().ends_with("action: shutdown | result: success"), "{lines:#?}");
    let (code, lines) = client.finish().await;
    assert_eq!(code, Some(1), "no winners: the draw never ran: {lines:#?}");
    let told = "action: reconnect | result: in_progress";
    assert!(lines.iter().any(|l| l.contains(told) && l.contains("ShuttingDown")), "{lines:#?}");
    let failure = lines.iter().find(|l| l.contains("action: connect | result: fail")).unwrap();
    assert!(failure.contains("cannot reach the central"), "{failure}");
}

#[tokio::test]
async fn a_client_stopped_by_sigterm_exits_zero() {
    let dir = tempfile::tempdir().unwrap();
    let (mut server, address) = start_server_process(&dir.path().join("bets.csv"), 2).await;
    let data = AgencyData::generate(dir.path(), 1, 100);
    let mut client = Process::start(CLIENT_BIN, &client_env(&address, &data));
    server.wait_for_line("action: ready_for_lottery | result: success | agency: 1").await;
    client.wait_for_line("action: upload | result: success").await;
    client.signal("TERM");
    let (code, lines) = client.finish().await;
    assert_eq!(code, Some(0), "{lines:#?}");
    assert!(lines.iter().any(|l| l.ends_with("action: shutdown | result: success")), "{lines:#?}");
    server.signal("TERM");
    assert_eq!(server.finish().await.0, Some(0));
}

#[tokio::test]
async fn single_bet_mode_sends_one_bet() {
    let dir = tempfile::tempdir().unwrap();
    let bets_file = dir.path().join("bets.csv");
    let (server, address) = start_server_process(&bets_file, 1).await;
    let env = [
        ("CLI_ID", "1".to_owned()),
        ("CLI_SERVER_ADDRESS", address),
        ("NOMBRE", "Santiago Lionel".to_owned()),
        ("APELLIDO", "Lorca".to_owned()),
        ("DOCUMENTO", "30904465".to_owned()),
        ("NACIMIENTO", "1999-03-17".to_owned()),
        ("NUMERO", "7574".to_owned()),
    ];
    let (code, lines) = Process::start(CLIENT_BIN, &env).finish().await;
    assert_eq!(code, Some(0), "{lines:#?}");
    let sent = "action: apuesta_enviada | result: success | dni: 30904465 | numero: 7574";
    assert!(lines.iter().any(|l| l.ends_with(sent)), "{lines:#?}");
    assert!(lines.iter().any(|l| l.ends_with("cant_ganadores: 1")), "{lines:#?}");
    server.signal("INT");
    assert_eq!(server.finish().await.0, Some(0));
    assert_eq!(stored_multiset(&bets_file), ["1|Santiago Lionel|Lorca|30904465|1999-03-17|7574"]);
}

#[tokio::test]
async fn a_bad_row_stops_the_client_and_names_file_line_and_reason() {
    let dir = tempfile::tempdir().unwrap();
    let bets_file = dir.path().join("bets.csv");
    let (server, address) = start_server_process(&bets_file, 1).await;
    let path = dir.path().join("agency-1.csv");
    let mut rows: String = (0..400).map(|i| format!("Ana,Paz,{i},2000-01-01,1\n")).collect();
    rows.push_str("Ana,Paz,401,2000-02-30,1\n");
    std::fs::write(&path, rows).unwrap();
    let env = [
        ("CLI_ID", "1".to_owned()),
        ("CLI_SERVER_ADDRESS", address),
        ("CLI_DATA_FILE", path.display().to_string()),
        ("CLI_BATCH_MAXAMOUNT", "100".to_owned()),
    ];
    let (code, lines) = Process::start(CLIENT_BIN, &env).finish().await;
    assert_eq!(code, Some(1), "{lines:#?}");
    let failure = lines.iter().find(|l| l.contains("result: fail")).expect("a failure line");
    assert!(
        failure
            .contains(&format!("{}, line 401: invalid birthdate \"2000-02-30\"", path.display())),
        "{failure}"
    );
    server.signal("TERM");
    assert_eq!(server.finish().await.0, Some(0));
    assert_eq!(stored_multiset(&bets_file).len(), 400, "the 4 acknowledged batches stay stored");
}

async fn bad_config(binary: &str, env: &[(&str, String)], needle: &str) {
    let (code, lines) = Process::start(binary, env).finish().await;
    assert_eq!(code, Some(2), "{lines:#?}");
    assert!(lines.iter().any(|l| l.contains(needle)), "{needle} in {lines:#?}");
}

#[tokio::test]
async fn bad_configuration_exits_2_naming_the_variable() {
    let bets = ("BETS_FILE", Path::new("/nonexistent/bets.csv").display().to_string());
    bad_config(
        SERVER_BIN,
        &[("SERVER_PORT", "99999".into()), bets.clone()],
        "SERVER_PORT=\"99999\" is invalid: expected a port number",
    )
    .await;
    bad_config(
        SERVER_BIN,
        &[("LOTTERY_AGENCIES", "0".into())],
        "LOTTERY_AGENCIES=\"0\" is invalid",
    )
    .await;
    bad_config(CLIENT_BIN, &[], "CLI_ID is required").await;
    bad_config(
        CLIENT_BIN,
        &[("CLI_ID", "1".into()), ("CLI_BATCH_MAXAMOUNT", "lots".into())],
        "CLI_BATCH_MAXAMOUNT=\"lots\" is invalid",
    )
    .await;
}

#[tokio::test]
async fn an_unreachable_central_fails_after_the_connect_timeout() {
    // Bind and drop a listener to get a port nothing listens on.
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let env = [
        ("CLI_ID", "1".to_owned()),
        ("CLI_SERVER_ADDRESS", format!("127.0.0.1:{port}")),
        ("CLI_DATA_FILE", "/nonexistent".to_owned()),
        ("CLI_CONNECT_TIMEOUT", "300ms".to_owned()),
    ];
    let (code, lines) = Process::start(CLIENT_BIN, &env).finish().await;
    assert_eq!(code, Some(1), "{lines:#?}");
    assert!(
        lines.iter().any(|l| l.contains("action: connect | result: fail")
            && l.contains("cannot reach the central")),
        "{lines:#?}"
    );
}

#[tokio::test]
async fn the_healthcheck_pings_the_central() {
    let dir = tempfile::tempdir().unwrap();
    let (server, address) = start_server_process(&dir.path().join("bets.csv"), 1).await;
    let port = address.rsplit(':').next().unwrap().to_owned();
    let (code, _) = Process::start_with_args(SERVER_BIN, &[("SERVER_PORT", port)], ["healthcheck"])
        .finish()
        .await;
    assert_eq!(code, Some(0));
    server.signal("TERM");
    assert_eq!(server.finish().await.0, Some(0));

    let free = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let env = [("SERVER_PORT", free.to_string())];
    let (code, _) = Process::start_with_args(SERVER_BIN, &env, ["healthcheck"]).finish().await;
    assert_eq!(code, Some(1), "nothing listens there");
}

#[tokio::test]
async fn each_agency_counts_once_and_gets_winners_only_after_the_draw() {
    let dir = tempfile::tempdir().unwrap();
    let (mut server, address) = start_server_process(&dir.path().join("bets.csv"), 2).await;
    let connect = |agency| {
        let address = address.clone();
        async move {
            let connect = Connection::connect(&address, AgencyId::new(agency).unwrap(), None);
            within("connect", connect).await.unwrap()
        }
    };
    let mut first = connect(1).await;
    first.send_batch(1, &[wire_bet("111", 7574), wire_bet("112", 3)]).await.unwrap();
    let first = tokio::spawn(async move { first.winners().await });
    server
        .wait_for_line("action: ready_for_lottery | result: success | agency: 1 | ready: 1")
        .await;

    // Agency 1 again, from a new connection: it takes over the session, and its second
    // ReadyForLottery does not count as agency 2 (if it did, the draw would run now).
    let mut repeat = connect(1).await;
    let err = within("first", first).await.unwrap().unwrap_err();
    assert!(matches!(err, ClientError::Server { code: ErrorCode::SessionReplaced, .. }), "{err}");
    let repeat = tokio::spawn(async move { repeat.winners().await });
    server
        .wait_for_line("action: ready_for_lottery | result: success | agency: 1 | again: true")
        .await;

    let mut late = connect(1).await;
    let err = within("repeat", repeat).await.unwrap().unwrap_err();
    assert!(
        matches!(err, ClientError::Server { code: ErrorCode::SessionReplaced, .. }),
        "no winners before the draw: {err}"
    );
    let err = late.send_batch(2, &[wire_bet("113", 7574)]).await.unwrap_err();
    assert!(matches!(err, ClientError::Server { code: ErrorCode::AgencyClosed, .. }), "{err}");

    let mut second = connect(2).await;
    assert_eq!(second.send_batch(1, &[wire_bet("211", 7574)]).await.unwrap(), 1);
    assert_eq!(within("winners 2", second.winners()).await.unwrap(), ["211"]);
    // After the draw, each agency still gets its own winners, at once, from any new connection.
    assert_eq!(within("again 1", connect(1).await.winners()).await.unwrap(), ["111"]);
    assert_eq!(within("again 2", connect(2).await.winners()).await.unwrap(), ["211"]);
    server.signal("TERM");
    let (code, lines) = server.finish().await;
    assert_eq!(code, Some(0));
    assert_eq!(lines.iter().filter(|l| l.contains("action: sorteo | result: success")).count(), 1);
}

/// A central still waiting for its database at start-up (nothing listens on its port: it
/// retries for a minute) stops at SIGTERM, as it does once serving: exit 0, at once.
#[tokio::test]
async fn sigterm_while_the_central_waits_for_its_database_stops_it() {
    let env = [
        ("SERVER_IP", "127.0.0.1".to_owned()),
        ("SERVER_PORT", "0".to_owned()),
        ("LOTTERY_DATABASE_URL", "postgresql://lottery:secret@127.0.0.1:1/lottery".to_owned()),
    ];
    let mut central = Process::start(SERVER_BIN, &env);
    central.wait_for_line("action: database | result: in_progress").await;
    central.signal("TERM");
    let (code, lines) = central.finish().await;
    assert_eq!(code, Some(0), "{lines:#?}");
    common::line_with(
        &lines,
        "action: shutdown | result: success | step: stopped before the store opened",
    );
}
