//! Findings of the review of issue 11's fixes, each as a test of what must hold. The ones that
//! fail on the reviewed main are `#[ignore = "finding: …"]` so the suite stays green; run them
//! with `cargo test --locked --test review_findings -- --ignored`.

mod common;

use std::path::{Path, PathBuf};
use std::time::Duration;

use common::{AgencyData, Process, SERVER_BIN, stored_multiset, wire_bet, within};
use futures::{SinkExt, StreamExt};
use lottery::client;
use lottery::protocol::{
    ClientCodec, ClientMessage, PROTOCOL_VERSION, ServerCodec, ServerMessage, WireBet,
};
use lottery::{AgencyId, Connection};
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use tokio_util::codec::Framed;
use tokio_util::sync::CancellationToken;

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

async fn start(bets_file: &Path, agencies: u32, extra: &[(&str, &str)]) -> (Process, String) {
    let mut server = Process::start(SERVER_BIN, &server_env(bets_file, agencies, extra));
    let line = server.wait_for_line("action: listen | result: success").await;
    let address = line.rsplit("address: ").next().unwrap().trim().to_owned();
    (server, address)
}

async fn stop(server: Process) -> Vec<String> {
    server.signal("TERM");
    let (code, lines) = server.finish().await;
    assert_eq!(code, Some(0), "{lines:#?}");
    lines
}

/// Starts the central on `bets_file` and returns `Err(failure line)` when it refuses to start,
/// or `Ok(recovery line)` (the central then stopped again) when it starts.
async fn try_start(bets_file: &Path, agencies: u32) -> Result<String, String> {
    let mut server = Process::start(SERVER_BIN, &server_env(bets_file, agencies, &[]));
    loop {
        let Some(line) = within("a start-up line", server.lines.recv()).await else {
            let (code, lines) = server.finish().await;
            panic!("the central ended ({code:?}) without a recovery or failure line: {lines:#?}");
        };
        server.seen.push(line.clone());
        if line.contains("action: server | result: fail") {
            let (code, _) = server.finish().await;
            assert_eq!(code, Some(1), "{line}");
            return Err(line);
        }
        if line.contains("action: recovery | result: success") {
            stop(server).await;
            return Ok(line);
        }
    }
}

async fn connect(address: &str, agency: u32) -> Connection {
    within("connect", Connection::connect(address, AgencyId::new(agency).unwrap(), None))
        .await
        .unwrap()
}

fn batch(agency: u32, seq: u64, count: usize) -> Vec<WireBet> {
    (0..count).map(|i| wire_bet(&format!("{agency}{seq:03}{i:03}"), 1 + i as u16)).collect()
}

struct Acknowledged {
    _dir: tempfile::TempDir,
    bets_file: PathBuf,
    journal: PathBuf,
    bets: Vec<u8>,
    records: Vec<u8>,
}

/// A bets file with 3,000 acknowledged bets (30 batches of agency 1) and its journal, the
/// central stopped.
async fn acknowledged() -> Acknowledged {
    let dir = tempfile::tempdir().unwrap();
    let bets_file = dir.path().join("bets.csv");
    let (server, address) = start(&bets_file, 2, &[]).await;
    let mut agency = connect(&address, 1).await;
    for seq in 1..=30 {
        assert_eq!(agency.send_batch(seq, &batch(1, seq, 100)).await.unwrap(), 100);
    }
    drop(agency);
    stop(server).await;
    let journal = dir.path().join("bets.csv.journal");
    let (bets, records) = (std::fs::read(&bets_file).unwrap(), std::fs::read(&journal).unwrap());
    assert_eq!(stored_multiset(&bets_file).len(), 3000);
    Acknowledged { _dir: dir, bets_file, journal, bets, records }
}

/// The first `n` lines of `text`, line ends included.
fn first_lines(text: &[u8], n: usize) -> Vec<u8> {
    let end = text.iter().enumerate().filter(|(_, b)| **b == b'\n').nth(n - 1).unwrap().0 + 1;
    text[..end].to_vec()
}

/// A journal line with a valid check field, as the central writes them.
fn checked_line(text: &str) -> String {
    format!("{text} #{:08x}\n", crc32fast::hash(text.as_bytes()))
}

/// Finding 1 (critical). Every batch record of a journal lost, or the journal restored from an
/// older backup (as the central's own error hint suggests), or cut at an odd offset: recovery
/// takes the bets file's extra bytes for one unacknowledged group commit (up to 1 MiB) and cuts
/// them, logging `action: recovery | result: success`. 3,000 acknowledged bets became 0 (journal
/// = its header line, or cut at byte 25) and 1,350 (journal = its first 10 lines).
#[tokio::test]
async fn a_journal_that_lost_records_of_acknowledged_batches_stops_start_up() {
    let files = acknowledged().await;
    for (what, journal) in [
        ("the journal's header line only", first_lines(&files.records, 1)),
        ("the journal cut at byte 25", files.records[..25].to_vec()),
        ("an older backup of the journal (10 lines)", first_lines(&files.records, 10)),
    ] {
        std::fs::write(&files.bets_file, &files.bets).unwrap();
        std::fs::write(&files.journal, &journal).unwrap();
        let outcome = try_start(&files.bets_file, 2).await;
        let rows = stored_multiset(&files.bets_file).len();
        assert!(outcome.is_err(), "{what}: started and kept {rows} of 3000 rows: {outcome:?}");
        assert_eq!(std::fs::read(&files.bets_file).unwrap(), files.bets, "{what}: nothing cut");
    }
}

/// Finding 3 (low). A `draw` record whose bet count contradicts the batches before it (a line
/// appended from another journal) is accepted at start-up (`drawn: true`); the contradiction
/// shows only when every agency has declared ready and the draw is restored: `DrawFailed`.
#[tokio::test]
async fn a_draw_record_that_contradicts_the_batches_stops_start_up() {
    let files = acknowledged().await;
    let end = files.bets.len();
    let journal = [&files.records[..], checked_line(&format!("draw 5 {end}")).as_bytes()].concat();
    std::fs::write(&files.journal, &journal).unwrap();
    let outcome = try_start(&files.bets_file, 2).await;
    assert!(outcome.is_err(), "a draw over 5 bets, with 3000 recorded: {outcome:?}");
}

/// Finding 4 (low). A `batch` record that adds bets but no bytes (`end` equal to the previous
/// one) is accepted: the agency is credited a bet that is not in the file, so when it resumes it
/// skips its next bet, which is then never stored.
#[tokio::test]
async fn a_batch_record_with_bets_and_no_bytes_stops_start_up() {
    let files = acknowledged().await;
    let end = files.bets.len();
    let phantom = checked_line(&format!("batch 2 1 1 {end} -"));
    let journal = [&files.records[..], phantom.as_bytes()].concat();
    std::fs::write(&files.journal, &journal).unwrap();
    let outcome = try_start(&files.bets_file, 2).await;
    assert!(outcome.is_err(), "agency 2 credited 1 bet it has not stored: {outcome:?}");
}

/// Finding 4b (low). A journal where an agency's batch follows its own `ready` record (the store
/// never writes that: a ready agency's batches are refused) is accepted at start-up.
#[tokio::test]
async fn a_batch_after_its_agencys_ready_record_stops_start_up() {
    let files = acknowledged().await;
    let text = String::from_utf8(files.records.clone()).unwrap();
    let mut lines: Vec<String> = text.lines().map(str::to_owned).collect();
    // Agency 1 declared ready before its last batch.
    let last = lines.pop().unwrap();
    lines.push(checked_line("ready 1").trim_end().to_owned());
    lines.push(last);
    std::fs::write(&files.journal, lines.join("\n") + "\n").unwrap();
    let outcome = try_start(&files.bets_file, 2).await;
    assert!(outcome.is_err(), "batch 30 stored after agency 1 was ready: {outcome:?}");
}

/// Finding 5 (low). A duplicated batch line is refused (good), but the message reads backwards:
/// "agency 1 batch 5 follows batch 6" for a second batch 5 where batch 6 was expected.
#[tokio::test]
async fn a_duplicated_batch_line_is_named_as_such() {
    let files = acknowledged().await;
    let text = String::from_utf8(files.records.clone()).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    // Line 6 was batch 5 in the reviewed journal format; in format 3 (a group line before each
    // group's batch lines) it is group 3's line. Written twice, either is refused, naming line 7.
    // (The sequence message itself is checked in storage::journal's unit tests.)
    let mut damaged: Vec<&str> = lines[..6].to_vec();
    damaged.push(lines[5]);
    damaged.extend(&lines[6..]);
    std::fs::write(&files.journal, damaged.join("\n") + "\n").unwrap();
    let failure = try_start(&files.bets_file, 2).await.unwrap_err();
    assert!(failure.contains("line 7"), "{failure}");
    assert!(!failure.contains("batch 5 follows batch 6"), "reads backwards: {failure}");
    assert!(failure.contains("Nothing was changed"), "as every other refusal says: {failure}");
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
    let (server, address) = start(&bets_file, 1, &extra).await;
    let mut idle = Vec::new();
    for _ in 0..50 {
        idle.push(TcpStream::connect(&address).await.unwrap());
    }
    // The central closes every one but the last two; wait until it has.
    for stream in idle.drain(..48) {
        let mut frames = Framed::new(stream, ClientCodec::new());
        while let Some(Ok(_)) = within("an evicted connection closing", frames.next()).await {}
    }
    let lines = stop(server).await;
    let each: Vec<&String> =
        lines.iter().filter(|l| l.contains("this one, the oldest, was closed")).collect();
    assert!(each.len() <= 5, "{} lines for 48 evictions: {:#?}", each.len(), &each[..3]);
}

/// A listener on 127.0.0.1:0 handing every accepted connection to `serve`, each in its task.
async fn fake_central<F, Fut>(serve: F) -> String
where
    F: Fn(Framed<TcpStream, ServerCodec>) -> Fut + Send + 'static,
    Fut: Future<Output = ()> + Send + 'static,
{
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap().to_string();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            tokio::spawn(serve(Framed::new(stream, ServerCodec::new())));
        }
    });
    address
}

/// Reads `Hello`, answers `Welcome` for a fresh agency, acknowledges every batch until
/// `ReadyForLottery`; returns the documents it was sent.
async fn take_everything(frames: &mut Framed<TcpStream, ServerCodec>) -> Vec<String> {
    let hello = frames.next().await;
    assert!(matches!(hello, Some(Ok(ClientMessage::Hello { .. }))), "{hello:?}");
    let welcome = ServerMessage::Welcome { version: PROTOCOL_VERSION, next_seq: 1, stored_bets: 0 };
    frames.send(welcome).await.unwrap();
    let mut documents = Vec::new();
    while let Some(Ok(message)) = frames.next().await {
        match message {
            ClientMessage::Batch { seq, bets } => {
                let count = bets.len() as u32;
                documents.extend(bets.into_iter().map(|b| b.document));
                frames.send(ServerMessage::BatchAccepted { seq, count }).await.unwrap();
            }
            ClientMessage::ReadyForLottery => break,
            _ => {}
        }
    }
    documents
}

fn short_deadlines(data: &AgencyData, address: &str) -> lottery::config::ClientConfig {
    let mut config = data.client_config(address.parse().unwrap());
    config.read_timeout = Duration::from_millis(300);
    config.connect_timeout = Duration::from_secs(2);
    config
}

/// Held: a central that answers garbage bytes after `Welcome` (or after the uploads) does not
/// make the agency hang: it fails at once, naming the bad frame.
#[tokio::test]
async fn garbage_from_the_central_ends_the_agency_without_a_hang() {
    let dir = tempfile::tempdir().unwrap();
    let data = AgencyData::generate(dir.path(), 1, 120);
    let address = fake_central(|mut frames| async move {
        let _ = frames.next().await;
        let welcome =
            ServerMessage::Welcome { version: PROTOCOL_VERSION, next_seq: 1, stored_bets: 0 };
        frames.send(welcome).await.unwrap();
        let _ = frames.get_mut().write_all(&[0xff; 64]).await;
        std::future::pending::<()>().await;
    })
    .await;
    let config = short_deadlines(&data, &address);
    let err = within("agency", client::run(&config, &CancellationToken::new())).await.unwrap_err();
    assert!(!err.is_transient(), "{err}");
}

/// Finding 6 (low). The agency takes whatever `Winners` the central sends: documents it never
/// sent, more winners than bets, without limit (a central streaming `Winners { last: false }`
/// grows the agency's memory for as long as it likes, and answers every `Ping`).
#[tokio::test]
async fn winners_the_agency_never_sent_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let data = AgencyData::generate(dir.path(), 1, 120);
    let address = fake_central(|mut frames| async move {
        let sent = take_everything(&mut frames).await;
        let documents: Vec<String> = (0..=sent.len()).map(|i| format!("9{i:07}")).collect();
        let _ = frames.send(ServerMessage::Winners { documents, last: true }).await;
        std::future::pending::<()>().await;
    })
    .await;
    let config = short_deadlines(&data, &address);
    let outcome = within("agency", client::run(&config, &CancellationToken::new())).await;
    let winners = outcome.as_ref().map(|o| o.winners.len());
    assert!(outcome.is_err(), "{winners:?} winners for 120 bets, none of them its own");
}

/// Finding 7 (low). Adoption kept a last row without its line end and completed it. A bets file
/// without a journal whose last row has no line end is what a crash mid-write leaves (the journal
/// having been moved away, as the refusals suggest): a row torn inside its number field still
/// parses (`…,7574` cut to `…,75`), was adopted as a bet with the wrong number, and counted as
/// stored, so the agency never resent the real one: a winner was lost. The central writes every
/// row whole with its `\r\n`, so such a row is a torn write, never acknowledged: adoption cuts
/// it (logged as `cut_bets_bytes`) and does not count it; the agency resumes after its adopted
/// rows and resends it.
#[tokio::test]
async fn adoption_cuts_a_last_row_without_its_line_end() {
    let dir = tempfile::tempdir().unwrap();
    let bets_file = dir.path().join("bets.csv");
    let whole = "1,Ana,Paz,11,1990-01-01,1\r\n";
    let rows = format!("{whole}1,Ana,Paz,12,1990-01-01,75");
    std::fs::write(&bets_file, &rows).unwrap();
    let (mut server, address) = start(&bets_file, 2, &[]).await;
    let recovery = server.wait_for_line("action: recovery").await;
    let cut = rows.len() - whole.len();
    assert!(recovery.contains("adopted: true"), "{recovery}");
    assert!(recovery.contains(&format!("cut_bets_bytes: {cut} |")), "{recovery}");
    let mut agency = connect(&address, 1).await;
    assert_eq!((agency.next_seq(), agency.stored_bets()), (1, 1), "the torn row is not counted");
    assert_eq!(std::fs::read_to_string(&bets_file).unwrap(), whole, "the torn row is cut");
    // The agency resends it, whole.
    assert_eq!(agency.send_batch(1, &[wire_bet("12", 7574)]).await.unwrap(), 1);
    drop(agency);
    stop(server).await;
    assert_eq!(stored_multiset(&bets_file).len(), 2);
}

/// Finding 8 (low). Group commits refused by the free-space floor (nothing written, nothing
/// synced) are counted as commits with two fsyncs each in the shutdown line (`commits`,
/// `fsyncs`) and in `BetStore::stats`: the counter is bumped before the write is attempted.
#[tokio::test]
async fn refused_group_commits_are_not_counted_as_commits() {
    let dir = tempfile::tempdir().unwrap();
    let bets_file = dir.path().join("bets.csv");
    let floor = [("LOTTERY_MIN_FREE_BYTES", "1152921504606846976")];
    let (server, address) = start(&bets_file, 2, &floor).await;
    let mut agency = connect(&address, 1).await;
    for _ in 0..3 {
        assert!(agency.send_batch(1, &batch(1, 1, 10)).await.is_err());
    }
    drop(agency);
    let lines = stop(server).await;
    let closed = lines.iter().find(|l| l.contains("step: bets file closed")).unwrap();
    assert!(closed.contains("commits: 0 | fsyncs: 0"), "nothing was written: {closed}");
}
