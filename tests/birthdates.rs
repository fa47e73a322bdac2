//! One birthdate rule on both sides: an agency and a central in time zones 26 hours apart agree
//! on a bet dated "today" where the agency is.

mod common;

use common::{CLIENT_BIN, Process, SERVER_BIN, stored_multiset};

#[tokio::test]
async fn a_bet_dated_today_at_the_agency_is_stored_by_a_central_in_another_time_zone() {
    // UTC+14 (Kiribati) is always one or two calendar days ahead of UTC-12.
    let (agency_tz, central_tz) = ("<+14>-14", "<-12>12");
    let agency_today = (jiff::Timestamp::now() + jiff::SignedDuration::from_hours(14))
        .to_zoned(jiff::tz::TimeZone::UTC)
        .date();
    let dir = tempfile::tempdir().unwrap();
    let bets_file = dir.path().join("bets.csv");
    let env = [
        ("TZ", central_tz.to_owned()),
        ("SERVER_IP", "127.0.0.1".to_owned()),
        ("SERVER_PORT", "0".to_owned()),
        ("LOTTERY_AGENCIES", "1".to_owned()),
        ("BETS_FILE", bets_file.display().to_string()),
    ];
    let mut server = Process::start(SERVER_BIN, &env);
    let line = server.wait_for_line("action: listen | result: success").await;
    let address = line.rsplit("address: ").next().unwrap().trim().to_owned();
    let path = dir.path().join("agency-1.csv");
    std::fs::write(&path, format!("Ana,Paz,30904465,{agency_today},7574\n")).unwrap();
    let env = [
        ("TZ", agency_tz.to_owned()),
        ("CLI_ID", "1".to_owned()),
        ("CLI_SERVER_ADDRESS", address),
        ("CLI_DATA_FILE", path.display().to_string()),
        ("CLI_CONNECT_TIMEOUT", "10s".to_owned()),
    ];
    let (code, lines) = Process::start(CLIENT_BIN, &env).finish().await;
    assert_eq!(code, Some(0), "{lines:#?}");
    assert!(lines.iter().any(|l| l.ends_with("cant_ganadores: 1")), "{lines:#?}");
    server.signal("TERM");
    assert_eq!(server.finish().await.0, Some(0));
    let stored = format!("1|Ana|Paz|30904465|{agency_today}|7574");
    assert_eq!(stored_multiset(&bets_file), [stored]);
}

#[tokio::test]
async fn a_signed_number_is_a_bad_row() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("agency-1.csv");
    std::fs::write(&path, "Ana,Paz,1,2000-01-01,7574\nAna,Paz,2,2000-01-01,+5\n").unwrap();
    let env = [("CLI_ID", "1".to_owned()), ("CLI_DATA_FILE", path.display().to_string())];
    let (code, lines) = Process::start_with_args(CLIENT_BIN, &env, ["--check"]).finish().await;
    assert_eq!(code, Some(1), "{lines:#?}");
    let bad = lines.iter().find(|l| l.contains("line: 2")).unwrap_or_else(|| panic!("{lines:#?}"));
    assert!(bad.contains("invalid number \"+5\""), "{bad}");
    assert!(lines.iter().any(|l| l.contains("bad_rows: 1")), "{lines:#?}");
}
