//! Every stored byte checked: a row changed on disk in the middle of the bets file (an
//! acknowledged group, not the last) is named by `lottery-server verify`, refused by `export`
//! and by start-up, and nothing is changed; `export` never changes the store.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use common::{SERVER_BIN, start_server_process, wire_bet, within};
use lottery::protocol::WireBet;
use lottery::{AgencyId, Connection};

/// What a run of the binary printed on stderr, and its exit code.
async fn run(args: &[&str], bets_file: &Path) -> (Option<i32>, String) {
    let output = tokio::process::Command::new(SERVER_BIN)
        .args(args)
        .env_clear()
        .env("BETS_FILE", bets_file)
        .env("LOTTERY_AGENCIES", "2")
        .kill_on_drop(true)
        .output();
    let output = within(&format!("lottery-server {args:?}"), output).await.unwrap();
    (output.status.code(), String::from_utf8_lossy(&output.stderr).into_owned())
}

/// Batch `seq` of agency 1: 100 bets, the sixth of them on the winning number.
fn batch(seq: u64) -> Vec<WireBet> {
    let number = |i: u16| if i == 5 { 7574 } else { 1 + i };
    (0..100).map(|i| wire_bet(&format!("1{seq:03}{i:03}"), number(i))).collect()
}

/// A stopped central's bets file: agency 1's 30 acknowledged batches, one group each.
async fn stored(dir: &Path) -> PathBuf {
    let bets_file = dir.join("bets.csv");
    let (server, address) = start_server_process(&bets_file, 2).await;
    let connect = Connection::connect(&address, AgencyId::new(1).unwrap(), None);
    let mut agency = within("connect", connect).await.unwrap();
    for seq in 1..=30 {
        assert_eq!(within("ack", agency.send_batch(seq, &batch(seq))).await.unwrap(), 100);
    }
    drop(agency);
    server.signal("TERM");
    assert_eq!(server.finish().await.0, Some(0));
    bets_file
}

#[tokio::test]
async fn a_changed_row_in_an_acknowledged_group_is_named_and_nothing_starts_from_it() {
    let dir = tempfile::tempdir().unwrap();
    let bets_file = stored(dir.path()).await;
    let intact = std::fs::read(&bets_file).unwrap();

    // Batch 10's winner, 7574, becomes 7575: every row still reads as a valid bet.
    let mut bets = intact.clone();
    let winner = bets.windows(7).enumerate().filter(|(_, w)| w == b",7574\r\n").nth(9).unwrap().0;
    bets[winner + 4] = b'5';
    let row = bets[..winner].iter().rposition(|b| *b == b'\n').unwrap() + 1;
    std::fs::write(&bets_file, &bets).unwrap();
    let journal = std::fs::read(dir.path().join("bets.csv.journal")).unwrap();
    let named = format!("byte {row}, in agency 1's batch 10");

    let server = common::Process::start(
        SERVER_BIN,
        &[
            ("SERVER_IP", "127.0.0.1".to_owned()),
            ("SERVER_PORT", "0".to_owned()),
            ("LOTTERY_AGENCIES", "2".to_owned()),
            ("BETS_FILE", bets_file.display().to_string()),
        ],
    );
    let (code, lines) = server.finish().await;
    assert_eq!(code, Some(1), "the central does not start from damaged rows: {lines:#?}");
    let failure = common::line_with(&lines, "action: server | result: fail");
    assert!(failure.contains(&named), "{failure}");
    assert!(failure.contains("Nothing was changed"), "{failure}");

    let output = dir.path().join("export.csv");
    let (code, report) = run(&["export", output.to_str().unwrap()], &bets_file).await;
    assert_eq!(code, Some(1), "{report}");
    assert!(report.contains(&named), "{report}");
    assert!(!output.exists(), "no export of damaged rows");

    let (code, report) = run(&["verify"], &bets_file).await;
    assert_eq!(code, Some(1), "{report}");
    for needed in [
        &format!("{} is inconsistent", bets_file.display()),
        "the group recorded at line",
        &named,
        "recorded document 1010005 as a winner; the batch now has number 7575",
        "Nothing was changed",
    ] {
        assert!(report.contains(needed), "{needed:?} in {report}");
    }
    assert!(std::fs::read(&bets_file).unwrap() == bets, "the bets file as it was");
    let journal_now = std::fs::read(dir.path().join("bets.csv.journal")).unwrap();
    assert!(journal_now == journal, "the journal as it was");

    std::fs::write(&bets_file, &intact).unwrap();
    let (code, report) = run(&["verify"], &bets_file).await;
    assert_eq!(code, Some(0), "{report}");
    assert!(report.contains("bets: 3000 | batches: 30 | groups_checked: 30"), "{report}");
}

#[tokio::test]
async fn export_without_a_journal_changes_nothing_even_in_a_read_only_directory() {
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store");
    std::fs::create_dir(&store).unwrap();
    let bets_file = stored(&store).await;
    std::fs::remove_file(store.join("bets.csv.journal")).unwrap();
    // A torn last row: a start would cut it; the export leaves it out, and the file as it is.
    let mut bets = std::fs::read(&bets_file).unwrap();
    let whole = bets.clone();
    bets.extend_from_slice(b"1,Ana,Paz,77");
    std::fs::write(&bets_file, &bets).unwrap();
    std::fs::set_permissions(&store, std::fs::Permissions::from_mode(0o555)).unwrap();
    let writable = std::fs::write(store.join("probe"), b"").is_ok();

    let output = dir.path().join("export.csv");
    let (code, report) = run(&["export", output.to_str().unwrap()], &bets_file).await;
    let left = |store: &Path| {
        let mut left: Vec<_> =
            std::fs::read_dir(store).unwrap().map(|e| e.unwrap().file_name()).collect();
        left.sort();
        left
    };
    let expected: Vec<std::ffi::OsString> =
        if writable { vec!["bets.csv".into(), "probe".into()] } else { vec!["bets.csv".into()] };
    let after_export = left(&store);
    let (verified, verify_report) = run(&["verify"], &bets_file).await;
    std::fs::set_permissions(&store, std::fs::Permissions::from_mode(0o755)).unwrap();
    assert_eq!(code, Some(0), "{report}");
    assert_eq!(after_export, expected, "the export wrote no journal, created nothing");
    assert!(std::fs::read(&output).unwrap() == whole, "the export is the whole rows");
    assert_eq!(verified, Some(0), "{verify_report}");
    assert!(verify_report.contains("adopted: true"), "{verify_report}");
    assert!(verify_report.contains("cut_bets_bytes: 12"), "{verify_report}");
    assert_eq!(left(&store), expected, "verify wrote nothing either");
    assert!(std::fs::read(&bets_file).unwrap() == bets, "the bets file as it was");
}
