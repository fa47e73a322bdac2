//! Receipts (issue 21): each agency gets the count and SHA-256 of the rows the central holds for
//! it, compares them with its own file's, and fails loudly (`recibo | result: fail`, exit code 3)
//! when they differ — which catches what acknowledgements cannot: a file edited after its rows
//! were acknowledged, a stored row changed behind the central's back. Also the protocol version
//! both sides refuse by name. The PostgreSQL cases are in `tests/postgres.rs`.

mod common;

use std::path::Path;

use common::{
    AgencyData, CLIENT_BIN, Process, SERVER_BIN, assert_grader_line, line_with,
    start_server_process, within,
};
use futures::{SinkExt, StreamExt};
use lottery::Connection;
use lottery::client::ClientError;
use lottery::domain::AgencyId;
use lottery::protocol::{ClientMessage, ErrorCode, PROTOCOL_VERSION, ServerCodec, ServerMessage};
use sha2::{Digest, Sha256};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::codec::Framed;

/// The exit code of an agency whose receipt does not match (`lottery-client`'s).
const RECEIPT_MISMATCH: i32 = 3;

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn expected_rows(data: &AgencyData) -> Vec<u8> {
    data.stored_bytes()
}

/// `lottery-server export --agency K -` of the bets file at `bets_file`: its bytes.
async fn export_agency(bets_file: &Path, agency: u32) -> Vec<u8> {
    let output = tokio::process::Command::new(SERVER_BIN)
        .args(["export", "--agency", &agency.to_string(), "-"])
        .env_clear()
        .env("BETS_FILE", bets_file)
        .output();
    let output = within("export", output).await.unwrap();
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    output.stdout
}

fn agency_process(data: &AgencyData, address: &str) -> Process {
    let env = [
        ("CLI_ID", data.agency.to_string()),
        ("CLI_SERVER_ADDRESS", address.to_owned()),
        ("CLI_DATA_FILE", data.path.display().to_string()),
    ];
    Process::start(CLIENT_BIN, &env)
}

/// The value of `key` in a log line.
fn field<'a>(line: &'a str, key: &str) -> &'a str {
    let at = line.find(&format!("| {key}: ")).unwrap_or_else(|| panic!("{key} in {line:?}"));
    let value = &line[at + key.len() + 4..];
    value.split(" | ").next().unwrap().trim()
}

#[tokio::test]
async fn every_agency_gets_a_receipt_that_export_and_sha256sum_reproduce() {
    let dir = tempfile::tempdir().unwrap();
    let bets_file = dir.path().join("bets.csv");
    let (mut central, address) = start_server_process(&bets_file, 2).await;
    let data: Vec<AgencyData> =
        (1..=2).map(|agency| AgencyData::generate(dir.path(), agency, 3_000)).collect();
    let agencies: Vec<Process> = data.iter().map(|d| agency_process(d, &address)).collect();
    let mut digests = Vec::new();
    for (agency, d) in agencies.into_iter().zip(&data) {
        let (code, lines) = agency.finish().await;
        assert_eq!(code, Some(0), "agency {}: {lines:#?}", d.agency);
        let expected: [u8; 32] = Sha256::digest(expected_rows(d)).into();
        let receipt = line_with(&lines, "action: recibo | result: success");
        assert_grader_line(receipt);
        assert!(
            receipt.ends_with(&format!(
                "action: recibo | result: success | apuestas: {} | sha256: {}",
                d.rows.len(),
                hex(&expected)
            )),
            "{receipt}"
        );
        // The receipt before the winners; consulta_ganadores stays the agency's last line.
        let position = |needle| lines.iter().position(|l| l.contains(needle)).unwrap();
        assert!(position("action: recibo") < position("action: consulta_ganadores"));
        assert!(lines.last().unwrap().contains("action: consulta_ganadores"), "{lines:#?}");
        digests.extend_from_slice(&expected);
    }
    let sorteo = central.wait_for_line("action: sorteo | result: success").await;
    assert_grader_line(&sorteo);
    assert_eq!(field(&sorteo, "apuestas"), "6000", "{sorteo}");
    assert_eq!(field(&sorteo, "sha256"), hex(&Sha256::digest(&digests)), "{sorteo}");
    central.signal("TERM");
    let (code, _) = central.finish().await;
    assert_eq!(code, Some(0));
    // What an auditor runs: export --agency K - | sha256sum, for each agency.
    for d in &data {
        let exported = export_agency(&bets_file, d.agency).await;
        assert!(exported == expected_rows(d), "agency {}'s export", d.agency);
    }
}

/// Agency 1 uploads everything and waits for the draw (agency 2 has not come yet); it is killed
/// there, `edit` runs, and it starts again: it resumes after every row (all acknowledged), then
/// agency 2 comes and the draw runs. Returns agency 1's exit code and lines.
async fn crash_and_resume(
    edit: impl FnOnce(&AgencyData, &Path),
) -> (Option<i32>, Vec<String>, AgencyData) {
    let dir = tempfile::tempdir().unwrap();
    let bets_file = dir.path().join("bets.csv");
    let (mut central, address) = start_server_process(&bets_file, 2).await;
    let first = AgencyData::generate(dir.path(), 1, 2_000);
    let second = AgencyData::generate(dir.path(), 2, 500);
    let crashed = agency_process(&first, &address);
    central.wait_for_line("action: ready_for_lottery | result: success | agency: 1").await;
    crashed.signal("KILL");
    let _ = crashed.finish().await;
    edit(&first, &bets_file);
    let resumed = agency_process(&first, &address);
    central.wait_for_line("agency: 1 | again: true").await;
    let (code, lines) = agency_process(&second, &address).finish().await;
    assert_eq!(code, Some(0), "agency 2: {lines:#?}");
    line_with(&lines, "action: recibo | result: success | apuestas: 500 |");
    let (code, lines) = resumed.finish().await;
    central.signal("TERM");
    central.finish().await;
    (code, lines, first)
}

#[tokio::test]
async fn an_agency_resumed_after_a_crash_gets_a_receipt_over_all_its_rows() {
    let (code, lines, data) = crash_and_resume(|_, _| {}).await;
    assert_eq!(code, Some(0), "{lines:#?}");
    let upload = line_with(&lines, "action: upload | result: success");
    assert_eq!(field(upload, "resumed_after"), "2000", "it sent nothing again: {upload}");
    let expected = hex(&Sha256::digest(expected_rows(&data)));
    let receipt = line_with(&lines, "action: recibo | result: success");
    assert!(receipt.ends_with(&format!("apuestas: 2000 | sha256: {expected}")), "{receipt}");
}

#[tokio::test]
async fn a_file_edited_in_its_acknowledged_part_before_the_resume_fails_the_receipt() {
    let (code, lines, _) = crash_and_resume(|data, _| {
        // Its first row, acknowledged before the crash, now names someone else.
        let mut rows = data.rows.clone();
        rows[0].first_name = format!("{} Edited", rows[0].first_name);
        lottery::datagen::write_agency_file(&data.path, rows).unwrap();
    })
    .await;
    assert_eq!(code, Some(RECEIPT_MISMATCH), "{lines:#?}");
    let fail = line_with(&lines, "action: recibo | result: fail");
    assert_grader_line(fail);
    assert_eq!(field(fail, "apuestas"), "2000", "{fail}");
    assert_eq!(field(fail, "apuestas_central"), "2000", "{fail}");
    assert_ne!(field(fail, "sha256"), field(fail, "sha256_central"), "{fail}");
    assert!(!lines.iter().any(|l| l.contains("consulta_ganadores")), "{lines:#?}");
}

#[tokio::test]
async fn a_stored_row_changed_behind_the_centrals_back_fails_the_receipt() {
    let (code, lines, _) = crash_and_resume(|_, bets_file| {
        // One byte of agency 1's first stored row, changed in place (the same length: the
        // journal's byte ranges still hold) while the central runs.
        let mut bytes = std::fs::read(bets_file).unwrap();
        let row = bytes.iter().position(|&b| b == b',').unwrap() + 1;
        bytes[row] = if bytes[row] == b'X' { b'Y' } else { b'X' };
        std::fs::write(bets_file, bytes).unwrap();
    })
    .await;
    assert_eq!(code, Some(RECEIPT_MISMATCH), "{lines:#?}");
    let fail = line_with(&lines, "action: recibo | result: fail");
    assert_eq!((field(fail, "apuestas"), field(fail, "apuestas_central")), ("2000", "2000"));
    assert_ne!(field(fail, "sha256"), field(fail, "sha256_central"), "{fail}");
}

#[tokio::test]
async fn an_agency_of_the_old_version_is_refused_naming_both_versions() {
    let dir = tempfile::tempdir().unwrap();
    let (central, address) = start_server_process(&dir.path().join("bets.csv"), 1).await;
    let stream = TcpStream::connect(&address).await.unwrap();
    let mut frames = Framed::new(stream, lottery::protocol::ClientCodec::new());
    let old = PROTOCOL_VERSION - 1;
    frames.send(ClientMessage::Hello { version: old, agency: 1, token: None }).await.unwrap();
    let reply = within("reply", frames.next()).await.unwrap().unwrap();
    let ServerMessage::Error { code: ErrorCode::UnsupportedVersion, message } = reply else {
        panic!("{reply:?}")
    };
    assert!(message.contains(&format!("protocol version {old};")), "{message}");
    assert!(message.contains(&format!("speaks version {PROTOCOL_VERSION}")), "{message}");
    central.signal("TERM");
    central.finish().await;
}

/// A central that answers every `Hello` with `answer`, as a central of another version does.
async fn fake_central(answer: ServerMessage) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap().to_string();
    tokio::spawn(async move {
        let (stream, _) = listener.accept().await.unwrap();
        let mut frames = Framed::new(stream, ServerCodec::new());
        if let Some(Ok(ClientMessage::Hello { .. })) = frames.next().await {
            let _ = frames.send(answer).await;
        }
    });
    address
}

#[tokio::test]
async fn a_central_of_another_version_is_refused_naming_both_versions() {
    let agency = AgencyId::new(1).unwrap();
    // What a version 4 central says to this agency's Hello.
    let refusal = ServerMessage::Error {
        code: ErrorCode::UnsupportedVersion,
        message: format!("protocol version {PROTOCOL_VERSION}; this central speaks 4"),
    };
    let address = fake_central(refusal).await;
    let err = within("refusal", Connection::connect(&address, agency, None)).await.unwrap_err();
    assert!(matches!(err, ClientError::VersionRefused { ours: PROTOCOL_VERSION, .. }), "{err:?}");
    assert!(!err.is_transient(), "another central of the list would not help: {err}");
    let text = err.to_string();
    assert!(text.contains(&format!("protocol version {PROTOCOL_VERSION}")), "{text}");
    assert!(text.contains("speaks 4"), "{text}");
    // A central that welcomes it in another version is refused by the agency.
    let welcome = ServerMessage::Welcome { version: 4, next_seq: 1, stored_bets: 0 };
    let address = fake_central(welcome).await;
    let err = within("welcome", Connection::connect(&address, agency, None)).await.unwrap_err();
    let text = err.to_string();
    assert!(text.contains(&format!("version {PROTOCOL_VERSION}")), "{text}");
    assert!(text.contains("version 4"), "{text}");
}
