//! Several centrals on one PostgreSQL database (issue 13). Each test makes a database of its own
//! on the server `PGHOST` names; without one they skip, loudly (see `common::postgres`). Run
//! them with `pg_virtualenv -t cargo test --locked --test postgres --test postgres_chaos`.

mod common;

use std::collections::HashMap;
use std::sync::Arc;

use common::postgres::{agency_env, exported, start_central, test_database};
use common::{AgencyData, CLIENT_BIN, Process, sorted, wire_bet, within};
use lottery::Connection;
use lottery::client::ClientError;
use lottery::config::ServerConfig;
use lottery::domain::{AgencyId, Bet};
use lottery::protocol::ErrorCode;
use lottery::storage::file::BetStore;
use lottery::storage::postgres::PgStore;
use lottery::storage::{StoreOptions, Stored};

#[tokio::test]
async fn two_centrals_on_one_database_serve_five_agencies_each_bet_once_one_draw() {
    let Some(db) = test_database("two_centrals").await else { return };
    let dir = tempfile::tempdir().unwrap();
    let (first, a) = start_central(&db, 0, 5).await;
    let (second, b) = start_central(&db, 0, 5).await;
    let data: Vec<AgencyData> =
        (1..=5).map(|agency| AgencyData::generate(dir.path(), agency, 20_500)).collect();
    // Half the agencies go to each central first.
    let agencies: Vec<Process> = data
        .iter()
        .map(|d| {
            let list = if d.agency % 2 == 1 { format!("{a},{b}") } else { format!("{b},{a}") };
            Process::start(CLIENT_BIN, &agency_env(&list, d))
        })
        .collect();
    for (agency, data) in agencies.into_iter().zip(&data) {
        let (code, lines) = agency.finish().await;
        assert_eq!(code, Some(0), "agency {}: {lines:#?}", data.agency);
        let winners = format!(
            "action: consulta_ganadores | result: success | cant_ganadores: {}",
            data.winners().len()
        );
        assert!(lines.iter().any(|l| l.ends_with(&winners)), "{winners} in {lines:#?}");
    }
    let mut draws = 0;
    let mut digests = Vec::new();
    for central in [first, second] {
        central.signal("TERM");
        let (code, lines) = central.finish().await;
        assert_eq!(code, Some(0), "{lines:#?}");
        draws += lines.iter().filter(|l| l.contains("action: sorteo | result: success")).count();
        // The draw's digest, recorded with it: the central that read it logs the same.
        let drawn = lines.iter().filter(|l| l.contains("action: sorteo"));
        digests.extend(drawn.map(|l| l.rsplit("| sha256: ").next().unwrap().to_owned()));
        let password = db.url.split("password=").nth(1).unwrap().split(' ').next().unwrap();
        assert!(
            !password.is_empty() && lines.iter().all(|l| !l.contains(password)),
            "password logged"
        );
    }
    assert_eq!(draws, 1, "one central recorded the draw");
    assert_eq!(digests.len(), 2, "{digests:?}");
    assert!(digests[0].len() == 64 && digests[0] == digests[1], "{digests:?}");
    assert_eq!(db.count("SELECT count(*) FROM draw").await, 1);
    let total: usize = data.iter().map(|d| d.rows.len()).sum();
    assert!(total >= 100_000);
    assert_eq!(db.count("SELECT count(*) FROM bets").await, total as i64);
    let expected = sorted(data.iter().flat_map(AgencyData::stored_rows).collect());
    assert_eq!(exported(&db, dir.path()).await, expected, "each bet exactly once");
}

/// The stores' API with the same batches in the same order: the export of the database is the
/// file store's bets file, byte for byte, and the draw the same.
#[tokio::test]
async fn the_export_is_byte_identical_to_the_file_store_for_the_same_batches() {
    let Some(db) = test_database("export_identical").await else { return };
    let dir = tempfile::tempdir().unwrap();
    let url = database_url(&db.url);
    let (pg, _) = PgStore::open(&url, StoreOptions::default(), "test".into()).await.unwrap();
    let (file, _) = BetStore::open(dir.path().join("bets.csv"), true).await.unwrap();
    let data: Vec<AgencyData> =
        (1..=3).map(|agency| AgencyData::generate(dir.path(), agency, 700)).collect();
    let latest = lottery::domain::latest_birthdate(lottery::domain::Checker::Central);
    let mut epochs = HashMap::new();
    for d in &data {
        let agency = AgencyId::new(d.agency).unwrap();
        let (progress, epoch) = pg.open_session(agency).await.unwrap();
        assert_eq!(progress.last_seq, 0);
        epochs.insert(d.agency, epoch);
    }
    // Batches of the three agencies interleaved, names with commas and quotes included.
    let batches: Vec<Vec<Bet>> = data
        .iter()
        .map(|d| {
            d.rows
                .iter()
                .map(|r| {
                    let fields = [
                        &*r.first_name,
                        &r.last_name,
                        &r.document,
                        &r.birthdate,
                        &r.number.to_string(),
                    ];
                    Bet::from_text(AgencyId::new(d.agency).unwrap(), fields, latest).unwrap()
                })
                .collect()
        })
        .collect();
    for seq in 1..=7u64 {
        for (d, bets) in data.iter().zip(&batches) {
            let agency = AgencyId::new(d.agency).unwrap();
            let chunk = &bets[(seq as usize - 1) * 100..seq as usize * 100];
            let file_ack = within("file ack", file.submit(agency, seq, chunk)).await.unwrap();
            let pg_ack = pg.submit(agency, epochs[&d.agency], seq, chunk);
            assert_eq!(
                (file_ack, within("pg ack", pg_ack).await.unwrap()),
                (Stored::New, Stored::New)
            );
        }
    }
    let mut from_pg = Vec::new();
    pg.export(None, &mut from_pg).await.unwrap();
    file.close().await;
    let from_file = std::fs::read(dir.path().join("bets.csv")).unwrap();
    assert_eq!(from_pg.len(), from_file.len());
    assert!(from_pg == from_file, "the export differs from the bets file");
    let (draw, recorded_now) = pg.draw().await.unwrap();
    assert!(recorded_now);
    let file_draw = lottery::domain::Draw::from_bets(
        lottery::storage::load_bets(&dir.path().join("bets.csv")).unwrap(),
    )
    .unwrap();
    // The receipts: both_stores_give_the_same_receipts_and_the_same_draw_digest.
    assert_eq!(draw.with_receipts(Default::default()), file_draw);
    pg.close().await;
}

/// The same agency connected to two centrals at once: the newer session (on the other central)
/// fences the older one, whose batch and ReadyForLottery are refused and not stored.
#[tokio::test]
async fn a_session_fenced_by_a_newer_one_on_another_central_stores_nothing() {
    let Some(db) = test_database("fencing").await else { return };
    let (first, a) = start_central(&db, 0, 1).await;
    let (second, b) = start_central(&db, 0, 1).await;
    let agency = AgencyId::new(1).unwrap();
    let mut old = within("connect", Connection::connect(&a, agency, None)).await.unwrap();
    assert_eq!(within("batch 1", old.send_batch(1, &[wire_bet("101", 1)])).await.unwrap(), 1);

    let mut new = within("connect", Connection::connect(&b, agency, None)).await.unwrap();
    assert_eq!((new.next_seq(), new.stored_bets()), (2, 1), "resumes after batch 1");
    let refused = within("fenced batch", old.send_batch(2, &[wire_bet("102", 7574)])).await;
    match refused {
        Err(ClientError::Server { code: ErrorCode::SessionReplaced, message }) => {
            assert!(message.contains("newer session"), "{message}");
        }
        other => panic!("the fenced session's batch must be refused: {other:?}"),
    }
    assert_eq!(db.count("SELECT count(*) FROM bets WHERE document = '102'").await, 0);

    // The newer session goes on; then one newer still, back on the first central, fences it
    // before its ReadyForLottery.
    assert_eq!(within("batch 2", new.send_batch(2, &[wire_bet("202", 7574)])).await.unwrap(), 1);
    let mut newest = within("connect", Connection::connect(&a, agency, None)).await.unwrap();
    assert_eq!(newest.next_seq(), 3);
    match within("fenced ready", new.winners()).await {
        Err(ClientError::Server { code: ErrorCode::SessionReplaced, .. }) => {}
        other => panic!("the fenced session's ReadyForLottery must be refused: {other:?}"),
    }
    assert_eq!(db.count("SELECT count(*) FROM agencies WHERE ready").await, 0);
    let winners = within("winners", newest.winners()).await.unwrap();
    assert_eq!(winners, ["202"]);
    assert_eq!(db.count("SELECT count(*) FROM bets").await, 2);
    assert_eq!(db.count("SELECT count(*) FROM draw").await, 1);
    for central in [first, second] {
        central.signal("TERM");
        let (code, lines) = central.finish().await;
        assert_eq!(code, Some(0), "{lines:#?}");
    }
}

/// Every agency's ReadyForLottery released at once, half at each central: one draw, recorded by
/// one central, and each agency gets its own winners. Several rounds, each on a new database.
#[tokio::test]
async fn ready_at_both_centrals_at_once_yields_exactly_one_draw() {
    const AGENCIES: u32 = 6;
    for round in 0..4 {
        let Some(db) = test_database(&format!("draw_race_{round}")).await else { return };
        let (first, a) = start_central(&db, 0, AGENCIES).await;
        let (second, b) = start_central(&db, 0, AGENCIES).await;
        let release = Arc::new(tokio::sync::Barrier::new(AGENCIES as usize));
        let mut agencies = Vec::new();
        for id in 1..=AGENCIES {
            let address = if id % 2 == 0 { a.clone() } else { b.clone() };
            let release = release.clone();
            agencies.push(tokio::spawn(async move {
                let agency = AgencyId::new(id).unwrap();
                let mut connection = Connection::connect(&address, agency, None).await.unwrap();
                let winner = format!("{id}000");
                let batch = [wire_bet(&winner, 7574), wire_bet(&format!("{id}001"), 1)];
                connection.send_batch(1, &batch).await.unwrap();
                release.wait().await;
                (connection.winners().await.unwrap(), winner)
            }));
        }
        for agency in agencies {
            let (winners, own) = within("winners", agency).await.unwrap();
            assert_eq!(winners, [own], "round {round}");
        }
        assert_eq!(db.count("SELECT count(*) FROM draw").await, 1, "round {round}");
        assert_eq!(db.count("SELECT bets FROM draw").await, 2 * i64::from(AGENCIES));
        let mut recorded = 0;
        for central in [first, second] {
            central.signal("TERM");
            let (code, lines) = central.finish().await;
            assert_eq!(code, Some(0), "{lines:#?}");
            recorded +=
                lines.iter().filter(|l| l.contains("action: sorteo | result: success")).count();
            let restored = lines.iter().filter(|l| l.contains("action: sorteo_restaurado")).count();
            assert!(recorded + restored >= 1, "{lines:#?}");
        }
        assert_eq!(recorded, 1, "round {round}: one central records the draw");
    }
}

/// `url` as a central reads `LOTTERY_DATABASE_URL`.
fn database_url(url: &str) -> lottery::config::DatabaseUrl {
    let config =
        ServerConfig::from_lookup(|var| (var == "LOTTERY_DATABASE_URL").then(|| url.to_owned()))
            .unwrap();
    config.database_url.unwrap()
}

/// A store of its own on `db`, as a central opens it.
async fn open_store(db: &common::postgres::TestDb, central: &str) -> PgStore {
    let url = database_url(&db.url);
    within("open", PgStore::open(&url, StoreOptions::default(), central.into())).await.unwrap().0
}

fn store_bet(agency: u32, document: &str, number: u16) -> Bet {
    let latest = lottery::domain::latest_birthdate(lottery::domain::Checker::Central);
    let fields = ["Ana", "Núñez", document, "1990-02-28", &number.to_string()];
    Bet::from_text(AgencyId::new(agency).unwrap(), fields, latest).unwrap()
}

/// Once the draw is recorded, no batch is stored, on any central, whatever its agency: the file
/// store refuses them (`AgencyClosed`), and a bet stored after the draw is one the draw missed
/// (and every later re-read of the draw fails on the count). Agency 2 here has a session but
/// never declared itself ready: one central drew without it (a central with a smaller
/// LOTTERY_AGENCIES, or an agency outside them).
#[tokio::test]
async fn no_batch_is_stored_after_the_draw_on_any_central() {
    let Some(db) = test_database("after_the_draw").await else { return };
    let a = open_store(&db, "a").await;
    let b = open_store(&db, "b").await;
    let (one, two) = (AgencyId::new(1).unwrap(), AgencyId::new(2).unwrap());
    let (_, epoch_one) = a.open_session(one).await.unwrap();
    let (_, epoch_two) = b.open_session(two).await.unwrap();
    let stored = within("batch", a.submit(one, epoch_one, 1, &[store_bet(1, "11", 7574)])).await;
    assert_eq!(stored.unwrap(), Stored::New);
    a.mark_ready(one, epoch_one).await.unwrap();
    let (draw, recorded_now) = a.draw().await.unwrap();
    assert!(recorded_now);
    assert_eq!(draw.bets(), 1);

    let late = within("late batch", b.submit(two, epoch_two, 1, &[store_bet(2, "21", 7574)])).await;
    assert!(
        matches!(late, Err(lottery::storage::StorageError::AgencyClosed { .. })),
        "no bets after the draw: {late:?}"
    );
    assert_eq!(db.count("SELECT count(*) FROM bets").await, 1);
    let (again, recorded_now) = b.draw().await.unwrap();
    assert!(!recorded_now);
    assert_eq!(again, draw);
    a.close().await;
    b.close().await;
}

/// The draw racing a group commit: a group that starts while the draw's transaction is open
/// waits for it, then sees the draw and stores nothing. (The draw's transaction is played here
/// by the test, holding the lock the draw takes against groups until the group is seen waiting
/// for it.)
#[tokio::test]
async fn a_group_racing_the_draw_waits_for_it_and_stores_nothing() {
    let Some(db) = test_database("group_racing_draw").await else { return };
    let store = open_store(&db, "a").await;
    let agency = AgencyId::new(1).unwrap();
    let (_, epoch) = store.open_session(agency).await.unwrap();
    let mut drawer = db.client().await;
    let draw = drawer.transaction().await.unwrap();
    let lock = lottery::storage::postgres::COMMIT_LOCK;
    draw.execute("SELECT pg_advisory_xact_lock($1)", &[&lock]).await.unwrap();
    let ack = store.submit(agency, epoch, 1, &[store_bet(1, "11", 7574)]);
    let watcher = db.client().await;
    within("the group waits for the draw's lock", async {
        let waiting = "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted";
        while watcher.query_one(waiting, &[]).await.unwrap().get::<_, i64>(0) == 0 {
            tokio::task::yield_now().await;
        }
    })
    .await;
    draw.execute("INSERT INTO draw (bets, central) VALUES (0, 'test')", &[]).await.unwrap();
    draw.commit().await.unwrap();
    let late = within("ack", ack).await;
    assert!(
        matches!(late, Err(lottery::storage::StorageError::AgencyClosed { .. })),
        "no bets after the draw: {late:?}"
    );
    assert_eq!(db.count("SELECT count(*) FROM bets").await, 0);
    store.close().await;
}

/// A database whose schema is newer than this central's is refused at once, as the permanent
/// error it is (not retried for a minute as if the database were still starting), naming the
/// versions.
#[tokio::test]
async fn a_newer_schema_is_refused_at_once_naming_its_version() {
    let Some(db) = test_database("newer_schema").await else { return };
    open_store(&db, "a").await.close().await;
    let client = db.client().await;
    client.batch_execute("INSERT INTO lottery_schema_version (version) VALUES (99)").await.unwrap();
    let url = database_url(&db.url);
    let refused = PgStore::open(&url, StoreOptions::default(), "b".into()).await.unwrap_err();
    assert!(
        !matches!(refused, lottery::storage::StorageError::Database { .. }),
        "a newer schema is not a database that cannot be reached yet: {refused}"
    );
    let text = refused.to_string();
    assert!(text.contains("version 99") && text.contains("newer"), "{text}");
}

/// Centrals sharing a database must agree on LOTTERY_AGENCIES: one with fewer draws without the
/// others' last agencies (their bets then missed, their later batches refused), one with more
/// never completes its barrier (its agencies wait for a draw that came). The first central
/// records the number; one with another is refused at start-up, naming both.
#[tokio::test]
async fn a_central_with_another_lottery_agencies_is_refused() {
    let Some(db) = test_database("agencies_differ").await else { return };
    let a = open_store(&db, "a").await;
    a.claim_agencies(5).await.unwrap();
    let b = open_store(&db, "b").await;
    let refused = b.claim_agencies(6).await.unwrap_err();
    assert!(
        matches!(
            refused,
            lottery::storage::StorageError::AgenciesDiffer { recorded: 5, ours: 6, .. }
        ),
        "{refused}"
    );
    let text = refused.to_string();
    assert!(text.contains("LOTTERY_AGENCIES"), "{text}");
    b.claim_agencies(5).await.unwrap();
    a.close().await;
    b.close().await;

    // The central process: refused at start-up, exit 1, the reason logged.
    let (first, _) = start_central(&db, 0, 5).await;
    let other = common::postgres::spawn_central(&db, 0, 6);
    let (code, lines) = other.finish().await;
    assert_eq!(code, Some(1), "{lines:#?}");
    assert!(
        lines
            .iter()
            .any(|l| l.contains("action: server | result: fail") && l.contains("LOTTERY_AGENCIES")),
        "{lines:#?}"
    );
    first.signal("TERM");
    assert_eq!(first.finish().await.0, Some(0));
}

/// Several centrals starting at once on an empty database: one creates the schema and records
/// LOTTERY_AGENCIES, the others find them; every one starts.
#[tokio::test]
async fn centrals_starting_together_on_an_empty_database_all_start() {
    let Some(db) = test_database("start_together").await else { return };
    let mut centrals: Vec<Process> =
        (0..4).map(|_| common::postgres::spawn_central(&db, 0, 3)).collect();
    for central in &mut centrals {
        common::postgres::central_address(central).await;
        central.wait_for_line("action: database | result: success").await;
    }
    // Every migration applied once: version 4 is the draw's receipts, 5 the agencies' central
    // (the status page), 6 a row per batch.
    assert_eq!(db.count("SELECT count(*) FROM lottery_schema_version").await, 6);
    assert_eq!(db.count("SELECT agencies::bigint FROM lottery").await, 3);
    for central in centrals {
        central.signal("TERM");
        let (code, lines) = central.finish().await;
        assert_eq!(code, Some(0), "{lines:#?}");
    }
}

/// Agencies whose `Hello` waits for their rows (held by a transaction that is not stalled, so
/// the fence leaves it alone) occupy the central's session connections; the group commit must
/// not wait behind them: another agency's batch is stored and acknowledged meanwhile.
#[tokio::test]
async fn hellos_waiting_for_their_rows_do_not_starve_the_group_commit() {
    let Some(db) = test_database("pool_starved").await else { return };
    let store = Arc::new(open_store(&db, "a").await);
    let agencies: Vec<AgencyId> = (1..=5).map(|a| AgencyId::new(a).unwrap()).collect();
    let mut epochs = Vec::new();
    for &agency in &agencies {
        epochs.push(store.open_session(agency).await.unwrap().1);
    }
    // Agencies 1..=4's rows held by a transaction busy waiting for a lock of the test's.
    let gate = db.client().await;
    gate.execute("SELECT pg_advisory_lock(42)", &[]).await.unwrap();
    let mut holder = db.client().await;
    let holder = tokio::spawn(async move {
        let tx = holder.transaction().await.unwrap();
        tx.execute("SELECT 1 FROM agencies WHERE agency <= 4 FOR UPDATE", &[]).await.unwrap();
        tx.execute("SELECT pg_advisory_xact_lock(42)", &[]).await.unwrap();
        tx.commit().await.unwrap();
    });
    let watcher = db.client().await;
    let count = async |sql: &str| watcher.query_one(sql, &[]).await.unwrap().get::<_, i64>(0);
    within("the holder has the rows", async {
        while count("SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted")
            .await
            == 0
        {
            tokio::task::yield_now().await;
        }
    })
    .await;
    let hellos: Vec<_> = agencies[..4]
        .iter()
        .map(|&agency| {
            let store = store.clone();
            tokio::spawn(async move { store.open_session(agency).await.map(|(_, e)| e) })
        })
        .collect();
    within("four Hellos waiting for their rows at once", async {
        let waiting = "SELECT count(*) FROM pg_stat_activity WHERE application_name = \
                       'lottery-server' AND wait_event_type = 'Lock'";
        while count(waiting).await < 4 {
            tokio::task::yield_now().await;
        }
    })
    .await;
    let ack = store.submit(agencies[4], epochs[4], 1, &[store_bet(5, "51", 7574)]);
    assert_eq!(within("agency 5's batch", ack).await.unwrap(), Stored::New);
    gate.execute("SELECT pg_advisory_unlock(42)", &[]).await.unwrap();
    within("holder", holder).await.unwrap();
    for hello in hellos {
        within("hello", hello).await.unwrap().unwrap();
    }
}

/// `ReadyForLottery` whose agency's row is held by a central that stopped talking to the
/// database mid-transaction (here a session of the test, idle in its transaction): the holder
/// is ended as for `Hello`, and the agency is recorded ready, instead of the central's
/// connection waiting for the row for as long as the holder lives (a frozen central's kernel
/// keeps its connection open).
#[tokio::test]
async fn ready_behind_a_stalled_holder_of_its_row_ends_the_holder() {
    let Some(db) = test_database("ready_stalled").await else { return };
    let store = open_store(&db, "a").await;
    let agency = AgencyId::new(1).unwrap();
    let (_, epoch) = store.open_session(agency).await.unwrap();
    let mut holder = db.client().await;
    let stalled = holder.transaction().await.unwrap();
    stalled.execute("SELECT 1 FROM agencies WHERE agency = 1 FOR UPDATE", &[]).await.unwrap();
    let newly_ready = within("ready", store.mark_ready(agency, epoch)).await.unwrap();
    assert!(newly_ready);
    assert!(stalled.commit().await.is_err(), "the stalled holder's session was ended");
    assert_eq!(db.count("SELECT count(*) FROM agencies WHERE ready").await, 1);
    store.close().await;
}

/// A database that refuses the central (no such database here) is reported at once, not retried
/// for a minute as if it were still starting; the password shows nowhere.
#[tokio::test]
async fn a_database_that_refuses_the_central_is_reported_at_once() {
    let Some(db) = test_database("refused").await else { return };
    let url = db.url.replace(&format!("dbname={}", db.name), "dbname=no_such_lottery_database");
    let (failed, lines) = stops_at_once_with_lines(&url).await;
    assert!(failed.contains("refused this central"), "{failed}");
    assert!(failed.contains("no_such_lottery_database"), "{failed}");
    let password = url.split("password=").nth(1).unwrap().split(' ').next().unwrap();
    assert!(lines.iter().all(|l| !l.contains(password)), "password logged: {lines:#?}");
}

/// The rule that decides a batch is written once (`storage::decide`); both stores apply it. The
/// same table of batches through the face, [`Store`], against the bets file and the database:
/// the same answer to each, the same progress after, and nothing stored once ready.
#[tokio::test]
async fn both_stores_decide_the_table_of_batches_alike() {
    use lottery::storage::decide::{Answer, TABLE, TABLE_LIMIT};
    use lottery::storage::{Location, Store};
    let Some(db) = test_database("decide_table").await else { return };
    let dir = tempfile::tempdir().unwrap();
    let url = database_url(&db.url);
    let options = StoreOptions { max_bets_per_agency: TABLE_LIMIT, ..StoreOptions::default() };
    let locations = [
        Location::File(dir.path().join("bets.csv")),
        Location::Database { url, central: "table".into() },
    ];
    let agency = AgencyId::new(1).unwrap();
    for location in locations {
        let (store, _) = within("open", Store::open(location, options)).await.unwrap();
        let where_ = store.location();
        let (_, epoch) = store.open_session(agency).await.unwrap();
        for (i, &((seq, count), expected)) in TABLE.iter().enumerate() {
            let bets: Vec<Bet> = (0..count).map(|n| store_bet(1, &format!("{i}{n}"), 1)).collect();
            let answer = within("batch", store.submit(agency, epoch, seq, &bets[..])).await;
            assert_eq!(Answer::of(&answer), expected, "{where_}: batch {seq} of {count} bets");
        }
        let progress = store.agencies().await.unwrap();
        assert_eq!(progress.len(), 1, "{where_}");
        assert_eq!((progress[0].1.last_seq, progress[0].1.stored_bets), (3, 10), "{where_}");
        store.mark_ready(agency, epoch).await.unwrap();
        let late = within("late", store.submit(agency, epoch, 4, &[store_bet(1, "9", 1)])).await;
        assert_eq!(Answer::of(&late), Answer::Closed, "{where_}");
        store.close().await;
    }
}

/// The same batches through both stores' face give every agency the same receipt, equal to the
/// SHA-256 of its `export --agency K`, and the same draw digest; a second central reading the
/// recorded draw gets them from the database, the same.
#[tokio::test]
async fn both_stores_give_the_same_receipts_and_the_same_draw_digest() {
    use lottery::storage::{Location, Store};
    use sha2::{Digest, Sha256};
    let Some(db) = test_database("receipts_alike").await else { return };
    let dir = tempfile::tempdir().unwrap();
    let url = database_url(&db.url);
    let options = StoreOptions::default();
    let locations = [
        Location::File(dir.path().join("bets.csv")),
        Location::Database { url: url.clone(), central: "receipts".into() },
    ];
    let agencies: Vec<AgencyId> = (1..=3).map(|a| AgencyId::new(a).unwrap()).collect();
    // Names that need quoting included; batches of the agencies interleaved.
    let bet = |agency: u32, seq: u64, n: u64| {
        let latest = lottery::domain::latest_birthdate(lottery::domain::Checker::Central);
        let name = ["Ana", "José, María", "Ana \"la\" Paz", "Núñez"][(n % 4) as usize];
        let document = format!("{agency}{seq}{n}");
        let number = if n % 5 == 0 { "7574" } else { "12" };
        let fields = [name, "O'Brien", &document, "1990-02-28", number];
        Bet::from_text(AgencyId::new(agency).unwrap(), fields, latest).unwrap()
    };
    let mut draws = Vec::new();
    for location in locations {
        let (store, _) = within("open", Store::open(location.clone(), options)).await.unwrap();
        let where_ = store.location();
        let mut epochs = HashMap::new();
        for &agency in &agencies {
            epochs.insert(agency, store.open_session(agency).await.unwrap().1);
        }
        for seq in 1..=4u64 {
            for &agency in &agencies {
                let bets: Vec<Bet> =
                    (0..seq * agency.get() as u64).map(|n| bet(agency.get(), seq, n)).collect();
                let ack = store.submit(agency, epochs[&agency], seq, &bets[..]);
                assert_eq!(within("ack", ack).await.unwrap(), Stored::New, "{where_}");
            }
        }
        for &agency in &agencies {
            store.mark_ready(agency, epochs[&agency]).await.unwrap();
        }
        let drawn = within("draw", store.draw()).await.unwrap();
        assert!(drawn.recorded_now, "{where_}");
        store.close().await;
        // What an auditor reproduces with export --agency K - | sha256sum.
        let mut digests = Vec::new();
        for &agency in &agencies {
            let mut rows = Vec::new();
            Store::export(location.clone(), options, Some(agency), &mut rows).await.unwrap();
            let receipt = drawn.draw.receipt_for(agency);
            let expected: [u8; 32] = Sha256::digest(&rows).into();
            assert_eq!(receipt.sha256, expected, "{where_}: agency {agency}");
            assert_eq!(receipt.bets, 10 * u64::from(agency.get()), "{where_}: agency {agency}");
            digests.extend_from_slice(&expected);
        }
        let digest: [u8; 32] = Sha256::digest(&digests).into();
        assert_eq!(drawn.draw.digest().sha256, digest, "{where_}");
        draws.push(drawn.draw);
    }
    assert_eq!(draws[0], draws[1], "both stores: the same winners, receipts and digest");
    // Another central reads the recorded draw: the same receipts, from the database.
    let other = open_store(&db, "other").await;
    let (again, recorded_now) = within("draw again", other.draw()).await.unwrap();
    assert!(!recorded_now);
    assert_eq!(again, draws[1]);
    other.close().await;
}

/// A draw recorded by a central of before receipts (schema 3: no digest in its row) is read by
/// this one with receipts computed from the bets as they are, and nothing is recorded again.
#[tokio::test]
async fn a_draw_recorded_before_receipts_gets_them_from_the_stored_bets() {
    use sha2::Digest;
    let Some(db) = test_database("receipts_old_draw").await else { return };
    let pg = open_store(&db, "new").await;
    let agency = AgencyId::new(1).unwrap();
    let (_, epoch) = pg.open_session(agency).await.unwrap();
    let bets: Vec<Bet> = (0..3).map(|n| store_bet(1, &format!("{n}"), 7574)).collect();
    assert_eq!(within("ack", pg.submit(agency, epoch, 1, &bets[..])).await.unwrap(), Stored::New);
    pg.mark_ready(agency, epoch).await.unwrap();
    let old = "INSERT INTO draw (bets, central) VALUES (3, 'a central of before receipts')";
    db.client().await.execute(old, &[]).await.unwrap();
    let (draw, recorded_now) = within("draw", pg.draw()).await.unwrap();
    assert!(!recorded_now);
    let mut rows = Vec::new();
    pg.export(Some(agency), &mut rows).await.unwrap();
    let expected: [u8; 32] = sha2::Sha256::digest(&rows).into();
    assert_eq!((draw.receipt_for(agency).bets, draw.receipt_for(agency).sha256), (3, expected));
    assert_eq!(draw.winners_for(agency).len(), 3);
    assert_eq!(db.count("SELECT count(*) FROM receipts").await, 0, "nothing recorded again");
    pg.close().await;
}

/// A bet changed or deleted in the database after the draw was recorded: a central reading the
/// recorded draw (another central, or this one restarted) never hands out a receipt that the
/// stored rows no longer reproduce (`export --agency K - | sha256sum`): it refuses the draw as
/// corrupt, as the file store refuses a bets file changed since its draw.
#[tokio::test]
async fn a_row_changed_after_the_draw_is_never_vouched_for_by_a_recorded_receipt() {
    use sha2::Digest;
    for (name, tamper) in [
        // Each batch keeps its bets as the bets file's rows: bet 1 (document 11) changed, or
        // taken out of its batch's rows (its count with it).
        (
            "receipts_after_update",
            "UPDATE batches SET rows = convert_to(replace(convert_from(rows, 'UTF8'), ',11,', \
             ',13,'), 'UTF8') WHERE agency = 1 AND seq = 1",
        ),
        (
            "receipts_after_delete",
            "UPDATE batches SET rows = convert_to(regexp_replace(convert_from(rows, 'UTF8'), \
             E'[^\\n]*,11,[^\\n]*\\n', ''), 'UTF8'), bets = 2 WHERE agency = 1 AND seq = 1",
        ),
    ] {
        let Some(db) = test_database(name).await else { return };
        let pg = open_store(&db, "first").await;
        let agency = AgencyId::new(1).unwrap();
        let (_, epoch) = pg.open_session(agency).await.unwrap();
        // Bet 1 does not win: the winners stay the same, only the receipt can tell.
        let bets = [store_bet(1, "10", 7574), store_bet(1, "11", 12), store_bet(1, "12", 7574)];
        assert_eq!(
            within("ack", pg.submit(agency, epoch, 1, &bets[..])).await.unwrap(),
            Stored::New
        );
        pg.mark_ready(agency, epoch).await.unwrap();
        let (_, recorded_now) = within("draw", pg.draw()).await.unwrap();
        assert!(recorded_now);
        pg.close().await;
        assert_eq!(db.client().await.execute(tamper, &[]).await.unwrap(), 1, "{tamper}");
        let other = open_store(&db, "second").await;
        let mut rows = Vec::new();
        other.export(Some(agency), &mut rows).await.unwrap();
        let stored: [u8; 32] = sha2::Sha256::digest(&rows).into();
        match within("draw again", other.draw()).await {
            Err(lottery::storage::StorageError::Corrupt { .. }) => {}
            Ok((draw, _)) => assert_eq!(
                draw.receipt_for(agency).sha256,
                stored,
                "{tamper}: the receipt sent is not the stored rows'"
            ),
            Err(e) => panic!("{tamper}: {e}"),
        }
        other.close().await;
    }
}

/// A bet changed in the database behind the centrals' backs (here an UPDATE) after its agency
/// was acknowledged and before the draw: the acknowledgements said nothing, the receipt does.
#[tokio::test]
async fn a_row_changed_in_the_database_before_the_draw_fails_the_agencys_receipt() {
    let Some(db) = test_database("receipt_tampered").await else { return };
    let dir = tempfile::tempdir().unwrap();
    let (mut central, address) = start_central(&db, 0, 2).await;
    let first = AgencyData::generate(dir.path(), 1, 1_000);
    let second = AgencyData::generate(dir.path(), 2, 300);
    let tampered = Process::start(CLIENT_BIN, &agency_env(&address, &first));
    central.wait_for_line("action: ready_for_lottery | result: success | agency: 1").await;
    let changed = db
        .client()
        .await
        .execute(
            "UPDATE batches SET rows = convert_to(regexp_replace(convert_from(rows, 'UTF8'), \
             '^1,[^,]*,', '1,Mallory,'), 'UTF8') WHERE agency = 1 AND seq = 1",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(changed, 1);
    let (code, lines) = Process::start(CLIENT_BIN, &agency_env(&address, &second)).finish().await;
    assert_eq!(code, Some(0), "agency 2: {lines:#?}");
    assert!(lines.iter().any(|l| l.contains("action: recibo | result: success | apuestas: 300 |")));
    let (code, lines) = tampered.finish().await;
    assert_eq!(code, Some(3), "agency 1: {lines:#?}");
    let fail = lines.iter().find(|l| l.contains("action: recibo | result: fail")).unwrap();
    assert!(fail.contains("| apuestas: 1000 |") && fail.contains("| apuestas_central: 1000 |"));
    central.signal("TERM");
    let (code, lines) = central.finish().await;
    assert_eq!(code, Some(0), "{lines:#?}");
    let sorteo = lines.iter().find(|l| l.contains("action: sorteo | result: success")).unwrap();
    assert!(sorteo.contains("| apuestas: 1300 |") && sorteo.contains("| sha256: "), "{sorteo}");
}

/// A role of its own on `db`, logging in with a password, `ALTER ROLE … SET` each of
/// `settings`, owning the database when `owner`: returns its `LOTTERY_DATABASE_URL`.
async fn role_on(db: &common::postgres::TestDb, owner: bool, settings: &[&str]) -> String {
    let role = format!("{}_role", db.name).chars().rev().take(63).collect::<String>();
    let role: String = role.chars().rev().collect();
    let admin = db.client().await;
    admin
        .batch_execute(&format!("CREATE ROLE \"{role}\" LOGIN PASSWORD 'role-secret'"))
        .await
        .unwrap();
    if owner {
        let own = format!("ALTER DATABASE \"{}\" OWNER TO \"{role}\"", db.name);
        admin.batch_execute(&own).await.unwrap();
    }
    for setting in settings {
        admin.batch_execute(&format!("ALTER ROLE \"{role}\" SET {setting}")).await.unwrap();
    }
    let user = db.url.split("user=").nth(1).unwrap().split(' ').next().unwrap();
    let password = db.url.split("password=").nth(1).unwrap().split(' ').next().unwrap();
    db.url.replacen(&format!("user={user}"), &format!("user={role}"), 1).replacen(
        &format!("password={password}"),
        "password=role-secret",
        1,
    )
}

/// A central on `url`, expected to stop at once: its failure line.
async fn stops_at_once(url: &str) -> String {
    stops_at_once_with_lines(url).await.0
}

/// [`stops_at_once`], and every line the central logged.
async fn stops_at_once_with_lines(url: &str) -> (String, Vec<String>) {
    let env = [
        ("SERVER_IP", "127.0.0.1".to_owned()),
        ("SERVER_PORT", "0".to_owned()),
        ("LOTTERY_DATABASE_URL", url.to_owned()),
    ];
    let (code, lines) = Process::start(common::SERVER_BIN, &env).finish().await;
    assert_eq!(code, Some(1), "{lines:#?}");
    assert!(
        !lines.iter().any(|l| l.contains("action: database | result: in_progress")),
        "a permanent error is not retried: {lines:#?}"
    );
    (common::line_with(&lines, "action: server | result: fail").to_owned(), lines)
}

/// Errors waiting does not fix — a role without the right to create tables, a table of the same
/// name with another shape, a garbage schema version table, a read-only role — stop the central
/// at once with the database's own words and SQLSTATE, instead of a minute of retries as if the
/// database were down (while agencies' Hellos went unanswered).
#[tokio::test]
async fn permanent_database_errors_stop_the_central_at_once_in_the_databases_words() {
    let Some(db) = test_database("no_create").await else { return };
    let url = role_on(&db, false, &[]).await;
    let failed = stops_at_once(&url).await;
    assert!(failed.contains("permission denied for schema public (SQLSTATE 42501)"), "{failed}");
    assert!(failed.contains("Waiting does not fix this"), "{failed}");

    let Some(db) = test_database("read_only_role").await else { return };
    let url = role_on(&db, true, &["default_transaction_read_only = on"]).await;
    let failed = stops_at_once(&url).await;
    let read_only = "cannot execute CREATE TABLE in a read-only transaction (SQLSTATE 25006)";
    assert!(failed.contains(read_only), "{failed}");

    let Some(db) = test_database("foreign_table").await else { return };
    db.client().await.batch_execute("CREATE TABLE agencies (agency text)").await.unwrap();
    let failed = stops_at_once(&db.url).await;
    let exists = "relation \\\"agencies\\\" already exists (SQLSTATE 42P07)";
    assert!(failed.contains(exists) || failed.contains(&exists.replace('\\', "")), "{failed}");

    let Some(db) = test_database("garbage_version").await else { return };
    let garbage = "CREATE TABLE lottery_schema_version (version text, applied_at timestamptz);
                   INSERT INTO lottery_schema_version VALUES ('garbage', now())";
    db.client().await.batch_execute(garbage).await.unwrap();
    let failed = stops_at_once(&db.url).await;
    assert!(failed.contains("(SQLSTATE 42804)"), "{failed}");
}

/// With `statement_timeout` on the central's role, a group whose statement times out — held
/// before its `COPY` by the lock the draw takes, or inside it by a row of the same key another
/// transaction holds — fails with that cause, SQLSTATE included, and the next groups are
/// stored: nothing of the failed transaction lingers on the committer's connection.
#[tokio::test]
async fn after_a_statement_timeout_the_next_group_is_stored() {
    let Some(db) = test_database("statement_timeout").await else { return };
    let url = role_on(&db, true, &["statement_timeout = '300ms'"]).await;
    let url = database_url(&url);
    let open = PgStore::open(&url, StoreOptions::default(), "a".into());
    let store = within("open", open).await.unwrap().0;
    let agency = AgencyId::new(1).unwrap();
    let (_, epoch) = store.open_session(agency).await.unwrap();
    let mut drawer = db.client().await;
    let draw = drawer.transaction().await.unwrap();
    let lock = lottery::storage::postgres::COMMIT_LOCK;
    draw.execute("SELECT pg_advisory_xact_lock($1)", &[&lock]).await.unwrap();
    let timed_out = within("ack", store.submit(agency, epoch, 1, &[store_bet(1, "11", 1)])).await;
    let error = timed_out.unwrap_err().to_string();
    assert!(error.contains("statement timeout (SQLSTATE 57014)"), "{error}");
    draw.rollback().await.unwrap();
    for seq in 1..=3 {
        let bet = store_bet(1, &format!("1{seq}"), 1);
        let stored = within("ack", store.submit(agency, epoch, seq, &[bet])).await;
        assert_eq!(stored.unwrap(), Stored::New, "batch {seq}");
    }
    // Inside COPY: its fourth batch waits on the same key, inserted by a transaction the test
    // holds open.
    let mut holder = db.client().await;
    let hold = holder.transaction().await.unwrap();
    let same_key = "INSERT INTO batches (agency, seq, bets, rows) VALUES (1, 4, 1, '\\x00')";
    hold.batch_execute(same_key).await.unwrap();
    let bets: Vec<Bet> = (0..2000).map(|i| store_bet(1, &format!("4{i}"), 1)).collect();
    let timed_out = within("ack", store.submit(agency, epoch, 4, &bets[..])).await;
    let error = timed_out.unwrap_err().to_string();
    assert!(error.contains("statement timeout (SQLSTATE 57014)"), "{error}");
    hold.rollback().await.unwrap();
    for seq in 4..=5 {
        let stored = within("ack", store.submit(agency, epoch, seq, &bets[..])).await;
        assert_eq!(stored.unwrap(), Stored::New, "batch {seq}");
    }
    assert_eq!(db.count("SELECT count(*) FROM bets").await, 3 + 2 * 2000);
    store.close().await;
}

/// The central forces `synchronous_commit = on` on its connections: against a role whose
/// default is `off`, the committer's own connection reads `on`, and the start-up line says so.
#[tokio::test]
async fn the_committer_runs_with_synchronous_commit_on_whatever_the_roles_default() {
    let Some(db) = test_database("synchronous_commit").await else { return };
    let url = role_on(&db, true, &["synchronous_commit = off"]).await;
    let (as_role, connection) = tokio_postgres::connect(&url, tokio_postgres::NoTls).await.unwrap();
    tokio::spawn(connection);
    let default: String = as_role.query_one("SHOW synchronous_commit", &[]).await.unwrap().get(0);
    assert_eq!(default, "off", "the role's default, on a connection of its own");
    let env = [
        ("SERVER_IP", "127.0.0.1".to_owned()),
        ("SERVER_PORT", "0".to_owned()),
        ("LOTTERY_DATABASE_URL", url),
    ];
    let mut central = Process::start(common::SERVER_BIN, &env);
    let opened = central.wait_for_line("action: database | result: success").await;
    assert!(opened.contains("synchronous_commit: on"), "{opened}");
    central.signal("TERM");
    assert_eq!(central.finish().await.0, Some(0));
}
