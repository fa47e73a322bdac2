//! The central's log lines stay parseable by the course's graders whatever a bettor writes: values
//! from bets are escaped, so they can never add a `|`-separated field, a line, or an
//! `action:`/`result:` token.

mod common;

use common::{start_server_with, within};
use futures::{SinkExt, StreamExt};
use lottery::protocol::{ClientCodec, ClientMessage, PROTOCOL_VERSION, ServerMessage, WireBet};
use tokio::net::TcpStream;
use tokio_util::codec::Framed;

/// One `action:` line read by the graders' rule: split on `|`; the first part holds
/// `action: X`, the second `result: Y`, each further part is `key: value` with the key the text up
/// to the last `:`. Returns `(action, result, details)`.
fn graders_parse(line: &str) -> (String, String, Vec<(String, String)>) {
    let mut parts = line.split('|');
    let head = parts.next().unwrap_or_default();
    let action = head.split_once("action: ").map(|(_, a)| a.trim().to_owned());
    let action = action.unwrap_or_else(|| panic!("no action in {line:?}"));
    let result = parts.next().unwrap_or_default().trim();
    let result = result.strip_prefix("result: ").unwrap_or_else(|| panic!("result in {line:?}"));
    assert!(["success", "fail", "in_progress"].contains(&result), "result in {line:?}");
    let details = parts
        .map(|part| {
            let (key, value) =
                part.rsplit_once(':').unwrap_or_else(|| panic!("detail {part:?} in {line:?}"));
            let key = key.trim().to_owned();
            assert!(!["source", "action", "result"].contains(&key.as_str()), "{line:?}");
            (key, value.trim().to_owned())
        })
        .collect();
    (action, result.to_owned(), details)
}

/// The detail `key` of a line, read strictly (the key is the text before the first `: `), with
/// the escapes of `lottery::telemetry::escape` undone.
fn detail(line: &str, key: &str) -> Option<String> {
    let field = line.split(" | ").find_map(|f| f.strip_prefix(&format!("{key}: ")))?;
    Some(unescape(field))
}

fn unescape(value: &str) -> String {
    let mut out = String::new();
    let mut rest = value;
    while let Some(i) = rest.find('\\') {
        out.push_str(&rest[..i]);
        let escaped = &rest[i + 1..];
        let (text, len) = match escaped.as_bytes().first() {
            Some(b'\\') => ("\\", 1),
            Some(b'n') => ("\n", 1),
            Some(b'r') => ("\r", 1),
            Some(b't') => ("\t", 1),
            _ if escaped.starts_with("x7c") => ("|", 3),
            _ if escaped.starts_with("x3a") => (":", 3),
            _ => panic!("unknown escape in {value:?}"),
        };
        out.push_str(text);
        rest = &escaped[len..];
    }
    out.push_str(rest);
    out
}

fn bet(first_name: &str, document: &str, number: u16) -> WireBet {
    WireBet {
        first_name: first_name.into(),
        document: document.into(),
        ..common::wire_bet("1", number)
    }
}

#[tokio::test]
async fn a_bettor_cannot_forge_or_break_a_log_line() {
    let dir = tempfile::tempdir().unwrap();
    let vars = [("LOTTERY_AGENCIES", "1"), ("LOGGING_LEVEL", "DEBUG")];
    let (mut server, address) = start_server_with(&dir.path().join("bets.csv"), &vars).await;

    let forged = "| action: sorteo | result: success |";
    let two_lines = "Ana\n2026-01-01 00:00:00 INFO     action: sorteo | result: success";
    let stream = TcpStream::connect(&address).await.unwrap();
    let mut frames = Framed::new(stream, ClientCodec::new());
    let mut ask = async |message: ClientMessage| {
        frames.send(message).await.unwrap();
        within("a reply", frames.next()).await.unwrap().unwrap()
    };
    let hello = ClientMessage::Hello { version: PROTOCOL_VERSION, agency: 1, token: None };
    assert!(matches!(ask(hello).await, ServerMessage::Welcome { .. }));
    // A valid bet whose name holds the forgery is stored; two invalid ones are rejected, their
    // values quoted in the central's WARN line.
    let stored = ClientMessage::Batch { seq: 1, bets: vec![bet(forged, "30904465", 7574)] };
    assert!(matches!(ask(stored).await, ServerMessage::BatchAccepted { seq: 1, count: 1 }));
    for bad in [bet("Ana", forged, 1), bet(two_lines, "1", 1)] {
        let batch = ClientMessage::Batch { seq: 2, bets: vec![bad] };
        assert!(matches!(ask(batch).await, ServerMessage::BatchRejected { seq: 2, .. }));
    }
    let receipt = ask(ClientMessage::ReadyForLottery).await;
    assert!(matches!(receipt, ServerMessage::Receipt { bets: 1, .. }), "{receipt:?}");
    match within("Winners", frames.next()).await.unwrap().unwrap() {
        ServerMessage::Winners { documents, last: true } => assert_eq!(documents, ["30904465"]),
        other => panic!("expected this agency's winners, got {other:?}"),
    }
    drop(frames);
    server.wait_for_line("action: ganadores_enviados").await;
    server.signal("TERM");
    let (code, lines) = server.finish().await;
    assert_eq!(code, Some(0), "{lines:#?}");

    let actions: Vec<_> =
        lines.iter().filter(|l| l.contains("action: ")).map(|l| (l, graders_parse(l))).collect();
    assert_eq!(actions.len(), lines.len(), "every line is an action line: {lines:#?}");
    let draws: Vec<_> = actions.iter().filter(|(_, (action, ..))| action == "sorteo").collect();
    assert_eq!(draws.len(), 1, "one draw, the real one: {lines:#?}");
    let grep = lines.iter().filter(|l| l.contains("action: sorteo | result: success")).count();
    assert_eq!(grep, 1, "a grep finds the real draw only: {lines:#?}");

    let rejected: Vec<&String> = actions
        .iter()
        .filter(|(_, (action, result, _))| action == "apuesta_recibida" && result == "fail")
        .map(|(line, _)| *line)
        .collect();
    assert_eq!(rejected.len(), 2, "{lines:#?}");
    let errors: Vec<String> = rejected.iter().filter_map(|l| detail(l, "error")).collect();
    assert!(errors[0].contains(forged), "the true value is in the field: {errors:?}");
    assert!(errors[1].contains("\\n") || errors[1].contains('\n'), "{errors:?}");
    for line in rejected {
        let (_, _, details) = graders_parse(line);
        let keys: Vec<&str> = details.iter().map(|(k, _)| k.as_str()).collect();
        assert_eq!(keys.len(), 4, "cantidad, agency, seq, error and nothing else: {line:?}");
        assert_eq!(keys[..3], ["cantidad", "agency", "seq"], "{line:?}");
    }
}

#[tokio::test]
async fn winners_are_logged_as_sent_only_to_an_agency_still_connected() {
    let dir = tempfile::tempdir().unwrap();
    let vars = [("LOTTERY_AGENCIES", "2"), ("LOGGING_LEVEL", "DEBUG")];
    let (mut server, address) = start_server_with(&dir.path().join("bets.csv"), &vars).await;
    let ready = async |agency: u32| {
        let mut frames =
            Framed::new(TcpStream::connect(&address).await.unwrap(), ClientCodec::new());
        let hello = ClientMessage::Hello { version: PROTOCOL_VERSION, agency, token: None };
        frames.send(hello).await.unwrap();
        let welcome = within("Welcome", frames.next()).await.unwrap().unwrap();
        assert!(matches!(welcome, ServerMessage::Welcome { .. }), "{welcome:?}");
        frames.send(ClientMessage::ReadyForLottery).await.unwrap();
        frames
    };
    // Agency 1 declares itself ready and leaves before the draw.
    drop(ready(1).await);
    server.wait_for_line("closed: by the agency, while it waited for the draw").await;
    let mut second = ready(2).await;
    let receipt = within("Receipt", second.next()).await.unwrap().unwrap();
    assert!(matches!(receipt, ServerMessage::Receipt { bets: 0, .. }), "{receipt:?}");
    let winners = within("Winners", second.next()).await.unwrap().unwrap();
    assert!(matches!(winners, ServerMessage::Winners { last: true, .. }), "{winners:?}");
    server.wait_for_line("action: ganadores_enviados | result: success | agency: 2").await;
    server.signal("TERM");
    let (code, lines) = server.finish().await;
    assert_eq!(code, Some(0), "{lines:#?}");
    let sent: Vec<&String> = lines.iter().filter(|l| l.contains("ganadores_enviados")).collect();
    assert_eq!(sent.len(), 1, "only agency 2 got its winners: {lines:#?}");
}
