//! The course's workflow against the real binaries: the course's configuration files (with the
//! variables compose passes left empty), `SERVER_IP` as a host name, the start-up config lines
//! under the original names, `loop.period` pacing, batches of exactly `batch.maxAmount`, and
//! every `action:` line parsed by the graders' rule (issue 10). `scripts/docker-e2e.sh` drives
//! the same through Docker Compose.

mod common;

use std::time::{Duration, Instant};

use common::{AgencyData, CLIENT_BIN, Process, SERVER_BIN, assert_grader_line, sorted};

/// The graders' rule, on a line as compose prints it (`server  | …`): split on `|`; the first
/// part is the source, the second holds `action: X`, the third is
/// `result: success|fail|in_progress`, every other part is a detail `key: value` whose key (the
/// text up to the last `:`) is not `source`, `action` or `result`. Returns the action, the result
/// and the details.
fn graders_parse(line: &str) -> (String, String, Vec<(String, String)>) {
    let parts: Vec<&str> = line.split('|').collect();
    assert!(!parts[0].trim().is_empty(), "no source in {line:?}");
    let action = parts
        .get(1)
        .copied()
        .unwrap_or_default()
        .split_once("action:")
        .map(|(_, name)| name.trim().to_owned())
        .unwrap_or_else(|| panic!("no action in {line:?}"));
    assert!(!action.is_empty() && !action.contains(' '), "action in {line:?}");
    let result = parts.get(2).and_then(|p| p.trim().strip_prefix("result:")).map(str::trim);
    let result = result.unwrap_or_else(|| panic!("no result in {line:?}"));
    assert!(["success", "fail", "in_progress"].contains(&result), "result in {line:?}");
    let details = parts[3..]
        .iter()
        .map(|part| {
            let (key, value) =
                part.rsplit_once(':').unwrap_or_else(|| panic!("detail {part:?} in {line:?}"));
            let key = key.trim();
            assert!(!key.is_empty(), "empty key in {line:?}");
            assert!(!["source", "action", "result"].contains(&key), "key {key:?} in {line:?}");
            (key.to_owned(), value.trim().to_owned())
        })
        .collect();
    (action, result.to_owned(), details)
}

/// Every `action:` line of `lines` by the graders' rule and ours; none fails, none is `exit`.
fn check_lines(who: &str, lines: &[String]) {
    for line in lines.iter().filter(|l| l.contains("action:")) {
        assert_grader_line(line);
        let (action, result, _) = graders_parse(&format!("{who}  | {line}"));
        assert_ne!(action, "exit", "{who} logged an exit line of its own: {line}");
        assert_ne!(result, "fail", "{who}: {line}");
    }
}

fn field<'a>(line: &'a str, name: &str) -> &'a str {
    line.split(" | ")
        .find_map(|f| f.strip_prefix(&format!("{name}: ")))
        .unwrap_or_else(|| panic!("no {name} in {line:?}"))
}

#[tokio::test]
async fn the_course_files_drive_both_binaries_paced_and_under_the_original_names() {
    let dir = tempfile::tempdir().unwrap();
    let bets_file = dir.path().join("bets.csv");
    let ini = dir.path().join("config.ini");
    // The course's config.ini, with our settings added; `SERVER_IP` is a host name.
    std::fs::write(
        &ini,
        format!(
            "[DEFAULT]\nSERVER_PORT = 0\nSERVER_IP = localhost\nSERVER_LISTEN_BACKLOG = 8\nLOGGING_LEVEL = DEBUG\nLOTTERY_AGENCIES = 1\nBETS_FILE = {}\n",
            bets_file.display()
        ),
    )
    .unwrap();
    // What compose passes when `.env` leaves a variable empty: the file must still win.
    let empty = |names: &[&'static str]| -> Vec<(&'static str, String)> {
        names.iter().map(|&n| (n, String::new())).collect()
    };
    let mut env = empty(&["SERVER_PORT", "SERVER_IP", "SERVER_LISTEN_BACKLOG", "LOGGING_LEVEL"]);
    env.push(("LOTTERY_CONFIG_FILE", ini.display().to_string()));
    let mut server = Process::start(SERVER_BIN, &env);
    let config = server.wait_for_line("action: config | result: success").await;
    assert!(
        config.contains("action: config | result: success | port: 0 | listen_backlog: 8 | logging_level: DEBUG |"),
        "{config}"
    );
    assert!(config.contains("| ip: 127.0.0.1 |"), "localhost resolved: {config}");
    let listen = server.wait_for_line("action: listen | result: success").await;
    let address = field(&listen, "address").to_owned();
    assert!(address.starts_with("127.0.0.1:"), "{listen}");

    let data = AgencyData::generate(dir.path(), 1, 25);
    let yaml = dir.path().join("config.yaml");
    let period = Duration::from_millis(40);
    std::fs::write(
        &yaml,
        format!(
            "server:\n  address: \"{address}\"\nloop:\n  amount: 5\n  period: 40ms\nlog:\n  level: DEBUG\nbatch:\n  maxAmount: 10\n"
        ),
    )
    .unwrap();
    let mut env = empty(&[
        "CLI_SERVER_ADDRESS",
        "CLI_BATCH_MAXAMOUNT",
        "CLI_LOG_LEVEL",
        "CLI_LOOP_PERIOD",
        "CLI_LOOP_AMOUNT",
    ]);
    env.push(("CLI_ID", "1".to_owned()));
    env.push(("CLI_CONFIG_FILE", yaml.display().to_string()));
    env.push(("CLI_DATA_FILE", data.path.display().to_string()));
    let started = Instant::now();
    let (code, client_lines) = Process::start(CLIENT_BIN, &env).finish().await;
    let took = started.elapsed();
    assert_eq!(code, Some(0), "{client_lines:#?}");
    let config = client_lines.iter().find(|l| l.contains("action: config")).unwrap();
    let expected = format!(
        "action: config | result: success | client_id: 1 | server_address: {address} | loop_amount: 5 | loop_period: 40ms | log_level: DEBUG | batch_max_amount: 10 |"
    );
    assert!(config.contains(&expected), "{config}");
    let winners = format!("cant_ganadores: {}", data.winners().len());
    let last = client_lines.last().unwrap();
    assert!(
        last.contains("action: consulta_ganadores | result: success") && last.ends_with(&winners),
        "the winners are the last line: {client_lines:#?}"
    );
    // Hello, 3 batches, ReadyForLottery, the winners' line, exit: a period between each.
    assert!(took >= period * 6, "{took:?}: the agency did not pause between its messages");
    check_lines("client1", &client_lines);

    server.wait_for_line("action: sorteo | result: success").await;
    server.signal("TERM");
    let (code, server_lines) = server.finish().await;
    assert_eq!(code, Some(0), "{server_lines:#?}");
    assert!(server_lines.iter().any(|l| l.contains("action: shutdown | result: success")));
    check_lines("server", &server_lines);
    let batches: Vec<&str> = server_lines
        .iter()
        .filter(|l| l.contains("action: apuesta_recibida | result: success"))
        .map(|l| field(l, "cantidad"))
        .collect();
    assert_eq!(batches, ["10", "10", "5"], "batch.maxAmount: 10 makes batches of exactly 10");
    assert_eq!(common::stored_multiset(&bets_file), sorted(data.stored_rows()));
}

#[tokio::test]
async fn an_unresolvable_server_ip_is_a_configuration_error() {
    let env = [("SERVER_IP", "no-such-host.invalid".to_owned()), ("SERVER_PORT", "0".to_owned())];
    let (code, lines) = Process::start(SERVER_BIN, &env).finish().await;
    assert_eq!(code, Some(2), "{lines:#?}");
    let line = lines.iter().find(|l| l.contains("action: config | result: fail")).unwrap();
    assert!(
        line.contains("SERVER_IP=\"no-such-host.invalid\" is invalid: expected an IP address or a host name that resolves"),
        "{line}"
    );
}

#[test]
fn the_graders_rule_reads_our_lines() {
    let line = "client1  | 2026-11-27 08:00:00 INFO     action: consulta_ganadores | result: success | cant_ganadores: 3";
    let (action, result, details) = graders_parse(line);
    assert_eq!((action.as_str(), result.as_str()), ("consulta_ganadores", "success"));
    assert_eq!(details, [("cant_ganadores".to_owned(), "3".to_owned())]);
}
