//! Crashes that lose the bets file's unsynced tail. The journal carries every group's rows and is
//! the one file synced before an acknowledgement; the bets file is synced only at the draw, at
//! close and before a compaction. A `kill -9` keeps the page cache, so it loses nothing by
//! itself: these tests stop the real central at one point of a group commit or of a compaction
//! (`LOTTERY_TEST_STOP_AT`), kill it there, and then cut or zero the bets file back to its last
//! synced length (which the central's `test_stop` line reports), as a power loss would leave it.
//! The restarted central must hold every acknowledged bet, byte for byte, rewrite what was lost
//! from the journal, and, once the agencies finish, hold each bet exactly once.

mod common;

use std::path::Path;

use common::proxy::Proxy;
use common::{AgencyData, CLIENT_BIN, Process, sorted, start_server_with, stored_multiset, within};
use tokio::task::JoinSet;

/// What the test does to the bets file after the kill, past its last synced length.
#[derive(Debug, Clone, Copy)]
enum Loss {
    /// Cut back to it.
    Cut,
    /// Zeros from there to its end.
    Zeros,
}

/// A field of a log line, as a number.
fn field(line: &str, name: &str) -> u64 {
    let value =
        line.split(&format!("| {name}: ")).nth(1).unwrap_or_else(|| panic!("{name} in {line}"));
    value.split(' ').next().unwrap().trim().parse().unwrap_or_else(|_| panic!("{name} in {line}"))
}

fn lose_tail(bets_file: &Path, synced: u64, loss: Loss) {
    let file = std::fs::OpenOptions::new().write(true).open(bets_file).unwrap();
    let len = file.metadata().unwrap().len();
    match loss {
        Loss::Cut => file.set_len(synced).unwrap(),
        Loss::Zeros => {
            use std::os::unix::fs::FileExt;
            let zeros = vec![0u8; (len - synced.min(len)) as usize];
            file.write_all_at(&zeros, synced.min(len)).unwrap();
        }
    }
}

/// Three agencies upload through a proxy; the central stops at `point` (its `nth` time there),
/// is killed, loses its bets file's unsynced tail (and, stopped before the journal's sync, the
/// group's journal write too), and is started again; the agencies finish against it.
async fn crash_at(point: &str, nth: u32, loss: Loss, compact_bytes: &str) {
    let dir = tempfile::tempdir().unwrap();
    let bets_file = dir.path().join("bets.csv");
    let journal = dir.path().join("bets.csv.journal");
    let data: Vec<AgencyData> =
        (1..=3).map(|a| AgencyData::generate(dir.path(), a, 2000 + 7 * a as usize)).collect();
    let proxy = Proxy::start().await;
    let stop = format!("{point}:{nth}");
    let vars = [
        ("LOTTERY_AGENCIES", "3"),
        ("LOTTERY_TEST_STOP_AT", stop.as_str()),
        ("LOTTERY_JOURNAL_COMPACT_BYTES", compact_bytes),
    ];
    let (mut server, address) = start_server_with(&bets_file, &vars).await;
    proxy.set_backend(address.parse().unwrap());
    let mut clients = JoinSet::new();
    for agency in &data {
        let env = [
            ("CLI_ID", agency.agency.to_string()),
            ("CLI_SERVER_ADDRESS", proxy.addr.to_string()),
            ("CLI_DATA_FILE", agency.path.display().to_string()),
            ("CLI_BATCH_MAXAMOUNT", "50".to_owned()),
            // One batch in flight per agency: a group holds at most three batches, so there are
            // at least 40 groups whatever the timing (each agency sends 40 batches or more).
            ("CLI_BATCH_WINDOW", "1".to_owned()),
            ("CLI_CONNECT_TIMEOUT", "60s".to_owned()),
        ];
        let (id, expected) = (agency.agency, agency.winners().len());
        let client = Process::start(CLIENT_BIN, &env);
        clients.spawn(async move { (id, expected, client.finish().await) });
    }
    let stopped = server.wait_for_line("action: test_stop | result: success").await;
    server.signal("KILL");
    let _ = within("killed central", server.finish()).await;
    let (synced, group_start) =
        (field(&stopped, "bets_synced_bytes"), field(&stopped, "group_start"));
    // Every batch acknowledged before the stop is in the first `group_start` bytes.
    let acknowledged = std::fs::read(&bets_file).unwrap()[..group_start as usize].to_vec();
    assert!(synced <= group_start, "{stopped}");
    lose_tail(&bets_file, synced, loss);
    if point == "journal_written" {
        // Not synced yet: a power loss may lose the group's journal write too.
        let journal_start = field(&stopped, "journal_start");
        std::fs::OpenOptions::new()
            .write(true)
            .open(&journal)
            .unwrap()
            .set_len(journal_start)
            .unwrap();
    }

    let (mut server, address) = start_server_with(&bets_file, &[("LOTTERY_AGENCIES", "3")]).await;
    let recovery = server.wait_for_line("action: recovery |").await;
    let bytes = field(&recovery, "bytes");
    assert!(bytes >= group_start, "acknowledged bets kept: {recovery}");
    let rewritten = field(&recovery, "rewritten_bets_bytes");
    let lost = group_start - synced.min(group_start);
    assert!(rewritten >= lost, "what the bets file lost is rewritten: {recovery}");
    let now = std::fs::read(&bets_file).unwrap();
    assert!(now[..group_start as usize] == acknowledged[..], "acknowledged rows, byte for byte");
    if point != "journal_written" && !point.starts_with("compaction") {
        assert!(bytes > group_start, "the group was synced in the journal: kept: {recovery}");
    }
    proxy.set_backend(address.parse().unwrap());
    while let Some(done) = within("agencies", clients.join_next()).await {
        let (id, expected, (code, seen)) = done.unwrap();
        assert_eq!(code, Some(0), "agency {id}: {seen:#?}");
        let winners =
            format!("action: consulta_ganadores | result: success | cant_ganadores: {expected}");
        assert!(seen.iter().any(|l| l.ends_with(&winners)), "agency {id}: {winners}");
    }
    server.signal("TERM");
    assert_eq!(within("last central", server.finish()).await.0, Some(0));
    let expected = sorted(data.iter().flat_map(AgencyData::stored_rows).collect());
    assert_eq!(stored_multiset(&bets_file), expected, "{point}: every bet exactly once");
    let compacted = std::fs::read(&journal).unwrap();
    assert!(!String::from_utf8_lossy(&compacted).contains(" rows #"), "compacted at close");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crash_after_the_journal_write_before_its_sync() {
    crash_at("journal_written", 5, Loss::Cut, "67108864").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crash_after_the_journal_sync_before_the_rows() {
    crash_at("journal_synced", 5, Loss::Zeros, "67108864").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crash_with_the_rows_half_written() {
    crash_at("rows_half_written", 6, Loss::Cut, "67108864").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crash_with_the_rows_written_before_the_acknowledgement() {
    crash_at("rows_written", 7, Loss::Zeros, "67108864").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crash_inside_a_compaction_before_the_rename() {
    crash_at("compaction_written", 2, Loss::Cut, "40000").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crash_inside_a_compaction_after_the_rename() {
    crash_at("compaction_renamed", 2, Loss::Zeros, "40000").await;
}

/// Between compactions, the journal carries rows the bets file has not synced; after a few
/// compactions, a stop later loses several groups' rows at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crash_after_compactions_loses_several_groups_and_all_are_rewritten() {
    crash_at("rows_written", 30, Loss::Cut, "40000").await;
}
