//! Recovery never destroys an acknowledged bet, and the store refuses what it cannot hold: the
//! real `lottery-server` binary on real files, damaged, adopted, shared, filled.

mod common;

use std::path::{Path, PathBuf};

use common::{AgencyData, Process, SERVER_BIN, sorted, stored_multiset, wire_bet, within};
use lottery::client::{self, ClientError};
use lottery::protocol::{ErrorCode, RejectReason, WireBet};
use lottery::{AgencyId, Connection};
use tokio_util::sync::CancellationToken;

/// The central's environment: 127.0.0.1, a free port, `bets_file`, and `extra`.
fn server_env<'a>(
    bets_file: &Path,
    agencies: u32,
    extra: &[(&'a str, &str)],
) -> Vec<(&'a str, String)> {
    let mut env = vec![
        ("SERVER_IP", "127.0.0.1".to_owned()),
        ("SERVER_PORT", "0".to_owned()),
        ("LOTTERY_AGENCIES", agencies.to_string()),
        ("BETS_FILE", bets_file.display().to_string()),
    ];
    env.extend(extra.iter().map(|(name, value)| (*name, value.to_string())));
    env
}

/// Starts the central and waits until it listens; returns it and its address.
async fn start(bets_file: &Path, agencies: u32, extra: &[(&str, &str)]) -> (Process, String) {
    let mut server = Process::start(SERVER_BIN, &server_env(bets_file, agencies, extra));
    let line = server.wait_for_line("action: listen | result: success").await;
    let address = line.rsplit("address: ").next().unwrap().trim().to_owned();
    (server, address)
}

/// Starts the central expecting it to refuse: returns its `action: server | result: fail` line.
async fn refused(bets_file: &Path, agencies: u32) -> String {
    let server = Process::start(SERVER_BIN, &server_env(bets_file, agencies, &[]));
    let (code, lines) = server.finish().await;
    assert_eq!(code, Some(1), "{lines:#?}");
    let failure = lines.iter().find(|l| l.contains("action: server | result: fail"));
    failure.unwrap_or_else(|| panic!("no failure line: {lines:#?}")).clone()
}

/// Stops the central with SIGTERM and returns every line it printed.
async fn stop(server: Process) -> Vec<String> {
    server.signal("TERM");
    let (code, lines) = server.finish().await;
    assert_eq!(code, Some(0), "{lines:#?}");
    lines
}

async fn connect(address: &str, agency: u32) -> Connection {
    within("connect", Connection::connect(address, AgencyId::new(agency).unwrap(), None))
        .await
        .unwrap()
}

fn batch(agency: u32, seq: u64, count: usize) -> Vec<WireBet> {
    (0..count).map(|i| wire_bet(&format!("{agency}{seq:03}{i:03}"), 1 + i as u16)).collect()
}

/// Agency 1 uploads `batches` acknowledged batches of 100 bets.
async fn upload(address: &str, batches: u64) {
    let mut agency = connect(address, 1).await;
    for seq in 1..=batches {
        assert_eq!(agency.send_batch(seq, &batch(1, seq, 100)).await.unwrap(), 100);
    }
}

struct Acknowledged {
    _dir: tempfile::TempDir,
    bets_file: PathBuf,
    journal: PathBuf,
    bets: Vec<u8>,
    records: Vec<u8>,
}

/// A bets file with 3,000 acknowledged bets (30 batches) and its journal, the central stopped.
async fn acknowledged() -> Acknowledged {
    let dir = tempfile::tempdir().unwrap();
    let bets_file = dir.path().join("bets.csv");
    let (server, address) = start(&bets_file, 2, &[]).await;
    upload(&address, 30).await;
    stop(server).await;
    let journal = dir.path().join("bets.csv.journal");
    let (bets, records) = (std::fs::read(&bets_file).unwrap(), std::fs::read(&journal).unwrap());
    assert_eq!(stored_multiset(&bets_file).len(), 3000);
    Acknowledged { _dir: dir, bets_file, journal, bets, records }
}

/// Where line `n` (1-based) of `text` starts.
fn line_start(text: &[u8], n: usize) -> usize {
    if n == 1 {
        0
    } else {
        text.iter().enumerate().filter(|(_, b)| **b == b'\n').nth(n - 2).unwrap().0 + 1
    }
}

#[tokio::test]
async fn a_damaged_journal_stops_start_up_and_changes_nothing() {
    let files = acknowledged().await;
    let text = &files.records;
    assert!(text.iter().filter(|b| **b == b'\n').count() > 10, "a header and 30 batches");
    let changed = |line: usize| {
        let mut bytes = text.clone();
        let at = line_start(text, line) + 6;
        bytes[at] = if bytes[at] == b'7' { b'8' } else { b'7' };
        bytes
    };
    let crlf: Vec<u8> = String::from_utf8(text.clone()).unwrap().replace('\n', "\r\n").into();
    for (what, journal, expected) in [
        ("an empty journal", Vec::new(), "holds no readable record (0 bytes)".to_owned()),
        ("an all-zero journal", vec![0; text.len()], "holds no readable record".to_owned()),
        ("a CRLF journal", crlf, "damaged at line 1 (byte 0)".to_owned()),
        ("a damaged first line", changed(1), "damaged at line 1 (byte 0)".to_owned()),
        (
            "one changed character on line 10",
            changed(10),
            format!("damaged at line 10 (byte {})", line_start(text, 10)),
        ),
        (
            "one changed character on the last line",
            changed(31),
            format!("damaged at line 31 (byte {})", line_start(text, 31)),
        ),
    ] {
        std::fs::write(&files.journal, &journal).unwrap();
        let failure = refused(&files.bets_file, 2).await;
        assert!(failure.contains(&files.journal.display().to_string()), "{what}: {failure}");
        assert!(failure.contains(&expected), "{what}: {expected} in {failure}");
        assert!(
            failure.contains("Nothing was changed") && failure.contains("move the journal away"),
            "{what}: {failure}"
        );
        assert_eq!(
            std::fs::read(&files.bets_file).unwrap(),
            files.bets,
            "{what}: bets file untouched"
        );
        assert_eq!(std::fs::read(&files.journal).unwrap(), journal, "{what}: journal untouched");
    }

    // With its journal back, the central holds every acknowledged bet.
    std::fs::write(&files.journal, &files.records).unwrap();
    let (server, address) = start(&files.bets_file, 2, &[]).await;
    let agency = connect(&address, 1).await;
    assert_eq!((agency.next_seq(), agency.stored_bets()), (31, 3000));
    stop(server).await;
}

#[tokio::test]
async fn a_bets_file_the_journal_does_not_explain_stops_start_up() {
    let files = acknowledged().await;
    // Shorter than recorded: acknowledged rows are missing.
    std::fs::write(&files.bets_file, &files.bets[..files.bets.len() - 31]).unwrap();
    let failure = refused(&files.bets_file, 2).await;
    assert!(failure.contains("bytes of acknowledged bets"), "{failure}");
    // Longer than one group commit past the last record: the journal lost records.
    let mut longer = files.bets.clone();
    while longer.len() < files.bets.len() + (1 << 20) + 1 {
        longer.extend_from_slice(&files.bets[..files.bets.len() / 30]);
    }
    std::fs::write(&files.bets_file, &longer).unwrap();
    let failure = refused(&files.bets_file, 2).await;
    assert!(failure.contains("the journal lacks records"), "{failure}");
    assert_eq!(std::fs::read(&files.bets_file).unwrap(), longer, "nothing cut");
    assert_eq!(std::fs::read(&files.journal).unwrap(), files.records);
    // Gone: not replaced by an empty file.
    std::fs::remove_file(&files.bets_file).unwrap();
    let failure = refused(&files.bets_file, 2).await;
    assert!(failure.contains("the bets file does not exist, but its journal"), "{failure}");
    assert!(!files.bets_file.exists(), "no empty bets file created");
    assert_eq!(std::fs::read(&files.journal).unwrap(), files.records);
}

#[tokio::test]
async fn a_torn_last_record_is_cut_with_the_rows_it_did_not_acknowledge() {
    let files = acknowledged().await;
    let last_line = line_start(&files.records, 31);
    let batch_30 = files.bets.len() / 30;
    for (what, journal, cut_bets) in [
        // The last record half written: its batch was never acknowledged.
        ("a torn last record", files.records[..files.records.len() - 5].to_vec(), batch_30),
        ("zeros after the last record", [&files.records[..], &[0; 4096]].concat(), 0),
        (
            "a last record with zeros inside",
            {
                let mut bytes = files.records.clone();
                bytes[last_line + 6..last_line + 12].fill(0);
                bytes
            },
            batch_30,
        ),
    ] {
        std::fs::write(&files.bets_file, &files.bets).unwrap();
        std::fs::write(&files.journal, &journal).unwrap();
        let (mut server, address) = start(&files.bets_file, 2, &[]).await;
        let recovery = server.wait_for_line("action: recovery").await;
        let cut_journal =
            journal.len() - if cut_bets > 0 { last_line } else { files.records.len() };
        assert!(recovery.contains(&format!("cut_bets_bytes: {cut_bets} |")), "{what}: {recovery}");
        assert!(
            recovery.contains(&format!("cut_journal_bytes: {cut_journal} |")),
            "{what}: {recovery}"
        );
        let agency = connect(&address, 1).await;
        let expected = if cut_bets > 0 { (30, 2900) } else { (31, 3000) };
        assert_eq!((agency.next_seq(), agency.stored_bets()), expected, "{what}");
        assert_eq!(
            std::fs::read(&files.bets_file).unwrap(),
            files.bets[..files.bets.len() - cut_bets],
            "{what}"
        );
        stop(server).await;
    }
}

#[tokio::test]
async fn adoption_refuses_a_row_the_draw_would_refuse() {
    let dir = tempfile::tempdir().unwrap();
    let bets_file = dir.path().join("bets.csv");
    let long_name = "N".repeat(101);
    let rows = format!(
        "1,Ana,Paz,1,1990-01-01,7574\r\n2,Ana,Paz,2,1990-01-01,1\r\n1,{long_name},Paz,3,1990-01-01,2\r\n1,Ana,Paz,4,1990-01-01,3\r\n"
    );
    std::fs::write(&bets_file, &rows).unwrap();
    let failure = refused(&bets_file, 2).await;
    assert!(failure.contains("line 3"), "{failure}");
    assert!(failure.contains("1 to 100 characters"), "the reason: {failure}");
    assert_eq!(std::fs::read_to_string(&bets_file).unwrap(), rows, "nothing changed");
    assert!(!dir.path().join("bets.csv.journal").exists(), "no journal written");
}

async fn run_agency(data: &AgencyData, address: &str) -> Vec<String> {
    let config = data.client_config(address.parse().unwrap());
    within("agency", client::run(&config, &CancellationToken::new())).await.unwrap().winners
}

#[tokio::test]
async fn a_deleted_journal_is_adopted_and_agencies_resume_after_their_rows() {
    let dir = tempfile::tempdir().unwrap();
    let bets_file = dir.path().join("bets.csv");
    let data: Vec<AgencyData> =
        (1..=2).map(|a| AgencyData::generate(dir.path(), a, 700 + a as usize)).collect();
    let (server, address) = start(&bets_file, 2, &[]).await;
    let (one, two) = tokio::join!(run_agency(&data[0], &address), run_agency(&data[1], &address));
    assert_eq!((one, two), (data[0].winners(), data[1].winners()));
    stop(server).await;
    let expected = sorted(data.iter().flat_map(AgencyData::stored_rows).collect());
    assert_eq!(stored_multiset(&bets_file), expected);

    std::fs::remove_file(dir.path().join("bets.csv.journal")).unwrap();
    for restart in 0..2 {
        let (mut server, address) = start(&bets_file, 2, &[]).await;
        let recovery = server.wait_for_line("action: recovery").await;
        assert!(recovery.contains(&format!("adopted: {}", restart == 0)), "{recovery}");
        for agency in &data {
            let again = connect(&address, agency.agency).await;
            assert_eq!(again.stored_bets(), agency.rows.len() as u64, "restart {restart}");
        }
        if restart == 0 {
            // Both agencies run again: nothing is sent twice, the winners are the same.
            let (one, two) =
                tokio::join!(run_agency(&data[0], &address), run_agency(&data[1], &address));
            assert_eq!((one, two), (data[0].winners(), data[1].winners()));
        }
        stop(server).await;
        assert_eq!(stored_multiset(&bets_file), expected, "nothing stored twice");
    }
}

#[tokio::test]
async fn a_second_central_on_the_same_files_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let bets_file = dir.path().join("bets.csv");
    let (first, address) = start(&bets_file, 2, &[]).await;
    let mut agency = connect(&address, 1).await;
    agency.send_batch(1, &batch(1, 1, 10)).await.unwrap();
    let failure = refused(&bets_file, 2).await;
    let pid = first.child.id().unwrap();
    assert!(failure.contains("is locked by another central"), "{failure}");
    assert!(failure.contains(&format!("(process {pid})")), "{failure}");
    // The first central is unaffected.
    assert_eq!(agency.send_batch(2, &batch(1, 2, 10)).await.unwrap(), 10);
    agency.ping().await.unwrap();
    stop(first).await;
    assert_eq!(stored_multiset(&bets_file).len(), 20);
}

#[tokio::test]
async fn the_per_agency_limit_refuses_before_writing_and_is_logged_once() {
    let dir = tempfile::tempdir().unwrap();
    let bets_file = dir.path().join("bets.csv");
    let (server, address) = start(&bets_file, 2, &[("LOTTERY_MAX_BETS_PER_AGENCY", "250")]).await;
    let mut agency = connect(&address, 1).await;
    for seq in 1..=2 {
        agency.send_batch(seq, &batch(1, seq, 100)).await.unwrap();
    }
    let len = std::fs::metadata(&bets_file).unwrap().len();
    for _ in 0..3 {
        let err = agency.send_batch(3, &batch(1, 3, 100)).await.unwrap_err();
        let ClientError::Rejected { reason: RejectReason::Storage, message, .. } = &err else {
            panic!("{err}")
        };
        assert!(message.contains("LOTTERY_MAX_BETS_PER_AGENCY"), "{message}");
        assert_eq!(std::fs::metadata(&bets_file).unwrap().len(), len, "nothing written");
    }
    assert_eq!(agency.send_batch(3, &batch(1, 3, 50)).await.unwrap(), 50, "up to the limit");
    let mut other = connect(&address, 2).await;
    assert_eq!(other.send_batch(1, &batch(2, 1, 100)).await.unwrap(), 100, "other agencies go on");
    let lines = stop(server).await;
    let warnings: Vec<&String> =
        lines.iter().filter(|l| l.contains("action: agency_limit")).collect();
    assert_eq!(warnings.len(), 1, "{lines:#?}");
    assert!(warnings[0].contains("WARN") && warnings[0].contains("agency: 1"), "{}", warnings[0]);
    assert_eq!(stored_multiset(&bets_file).len(), 350);
}

#[tokio::test]
async fn the_free_space_floor_refuses_before_writing_and_is_logged_once() {
    let dir = tempfile::tempdir().unwrap();
    let bets_file = dir.path().join("bets.csv");
    // More than any disk has free: every batch is below the floor.
    let floor = [("LOTTERY_MIN_FREE_BYTES", "1152921504606846976")];
    let (server, address) = start(&bets_file, 2, &floor).await;
    let mut agency = connect(&address, 1).await;
    for _ in 0..3 {
        let err = agency.send_batch(1, &batch(1, 1, 10)).await.unwrap_err();
        let ClientError::Rejected { reason: RejectReason::Storage, message, .. } = &err else {
            panic!("{err}")
        };
        assert!(message.contains("LOTTERY_MIN_FREE_BYTES"), "{message}");
    }
    agency.ping().await.unwrap();
    let lines = stop(server).await;
    let warnings = lines.iter().filter(|l| l.contains("action: disk_space | result: fail")).count();
    assert_eq!(warnings, 1, "{lines:#?}");
    assert_eq!(std::fs::metadata(&bets_file).unwrap().len(), 0, "nothing written");
}

#[tokio::test]
async fn batch_zero_and_empty_batches_end_the_session_and_store_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let bets_file = dir.path().join("bets.csv");
    let (server, address) = start(&bets_file, 2, &[]).await;
    let malformed = |result: Result<u32, ClientError>| {
        let err = result.unwrap_err();
        assert!(matches!(err, ClientError::Server { code: ErrorCode::Malformed, .. }), "{err}");
    };
    malformed(connect(&address, 1).await.send_batch(0, &batch(1, 0, 3)).await);
    malformed(connect(&address, 1).await.send_batch(1, &[]).await);
    for (seq, bets) in [(0, batch(1, 0, 3)), (1, Vec::new())] {
        let mut agency = connect(&address, 1).await;
        agency.feed_batch(seq, bets).await.unwrap();
        agency.flush().await.unwrap();
        malformed(agency.receive_ack(seq).await);
    }
    let mut agency = connect(&address, 1).await;
    assert_eq!((agency.next_seq(), agency.stored_bets()), (1, 0));
    assert_eq!(agency.send_batch(1, &batch(1, 1, 3)).await.unwrap(), 3, "batch 1 is next");
    stop(server).await;
    assert_eq!(stored_multiset(&bets_file).len(), 3);
}

#[tokio::test]
async fn a_restart_after_the_draw_restores_it_without_a_second_sorteo_line() {
    let dir = tempfile::tempdir().unwrap();
    let bets_file = dir.path().join("bets.csv");
    let (server, address) = start(&bets_file, 1, &[]).await;
    let mut agency = connect(&address, 1).await;
    agency.send_batch(1, &[wire_bet("11", 7574), wire_bet("12", 1)]).await.unwrap();
    assert_eq!(within("winners", agency.winners()).await.unwrap(), ["11"]);
    let lines = stop(server).await;
    assert_eq!(lines.iter().filter(|l| l.contains("action: sorteo | result: success")).count(), 1);

    let (mut server, address) = start(&bets_file, 1, &[]).await;
    server.wait_for_line("action: sorteo_restaurado | result: success").await;
    let mut agency = connect(&address, 1).await;
    assert_eq!(within("winners", agency.winners()).await.unwrap(), ["11"]);
    let lines = stop(server).await;
    let draws: Vec<&String> = lines.iter().filter(|l| l.contains("action: sorteo |")).collect();
    assert!(draws.is_empty(), "{draws:#?}");
}
