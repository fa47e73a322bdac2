//! Schema version 6 (a row per batch, its bets as the bets file's rows) over a database a central
//! of version 5 made (a row per bet): the bets move into their batches in the migration's
//! transaction, the export gives the same bytes, a draw recorded before still reads back (its
//! receipts are the migrated rows'), and bets that are not their batches' are refused, the
//! database left at version 5. Run with the other database suites (`pg_virtualenv -t cargo test
//! --test postgres_migration`); without a server they skip, loudly.

mod common;

use common::postgres::{TestDb, test_database};
use common::within;
use lottery::config::ServerConfig;
use lottery::domain::{AgencyId, Bet, Receipt, Receipts};
use lottery::storage::postgres::PgStore;
use lottery::storage::{StorageError, StoreOptions, store_bets};
use sha2::Digest;

/// The schema of version 5, as centrals of version 5 made it (their migrations 1 to 5).
const VERSION_5: &str = "
    CREATE TABLE lottery_schema_version (
        version    integer PRIMARY KEY,
        applied_at timestamptz NOT NULL DEFAULT now()
    );
    INSERT INTO lottery_schema_version (version) VALUES (1), (2), (3), (4), (5);
    CREATE TABLE agencies (
        agency      integer PRIMARY KEY CHECK (agency > 0),
        epoch       bigint  NOT NULL DEFAULT 0,
        last_seq    bigint  NOT NULL DEFAULT 0 CHECK (last_seq >= 0),
        stored_bets bigint  NOT NULL DEFAULT 0 CHECK (stored_bets >= 0),
        ready       boolean NOT NULL DEFAULT false,
        central     text,
        active_at   timestamptz
    );
    CREATE TABLE batches (
        agency    integer NOT NULL REFERENCES agencies,
        seq       bigint  NOT NULL CHECK (seq > 0),
        position  bigint  GENERATED ALWAYS AS IDENTITY UNIQUE,
        bets      integer NOT NULL CHECK (bets > 0),
        stored_at timestamptz NOT NULL DEFAULT now(),
        PRIMARY KEY (agency, seq)
    );
    CREATE TABLE bets (
        agency     integer NOT NULL,
        seq        bigint  NOT NULL,
        idx        integer NOT NULL CHECK (idx >= 0),
        first_name text    NOT NULL,
        last_name  text    NOT NULL,
        document   text    NOT NULL,
        birthdate  date    NOT NULL,
        number     integer NOT NULL CHECK (number BETWEEN 0 AND 9999),
        PRIMARY KEY (agency, seq, idx)
    );
    CREATE TABLE draw (
        id       boolean PRIMARY KEY DEFAULT true CHECK (id),
        bets     bigint  NOT NULL,
        central  text    NOT NULL,
        drawn_at timestamptz NOT NULL DEFAULT now(),
        sha256   bytea CHECK (length(sha256) = 32)
    );
    CREATE TABLE lottery (
        id       boolean PRIMARY KEY DEFAULT true CHECK (id),
        agencies integer NOT NULL CHECK (agencies > 0)
    );
    CREATE INDEX bets_winning ON bets (agency, seq, idx) WHERE number = 7574;
    CREATE TABLE receipts (
        agency integer PRIMARY KEY CHECK (agency > 0),
        bets   bigint  NOT NULL CHECK (bets > 0),
        sha256 bytea   NOT NULL CHECK (length(sha256) = 32)
    );
    INSERT INTO lottery (agencies) VALUES (2);
    INSERT INTO agencies (agency, epoch, last_seq, stored_bets, ready)
        VALUES (1, 1, 2, 3, true), (2, 1, 1, 2, true);";

fn bet(agency: u32, first_name: &str, document: &str, number: u16) -> Bet {
    let latest = lottery::domain::latest_birthdate(lottery::domain::Checker::Central);
    let fields = [first_name, "Núñez", document, "1990-02-28", &number.to_string()];
    Bet::from_text(AgencyId::new(agency).unwrap(), fields, latest).unwrap()
}

/// The batches stored, in the order stored, `(agency, seq, bets)`: names that need quoting,
/// agencies interleaved, winners (7574) among them.
fn batches() -> Vec<(i32, i64, Vec<Bet>)> {
    vec![
        (1, 1, vec![bet(1, "José, María", "30904465", 7574), bet(1, "Ana \"la\" Paz", "12", 1)]),
        (2, 1, vec![bet(2, "Ana", "1", 7574), bet(2, "Bea", "0012345678", 9999)]),
        (1, 2, vec![bet(1, " leading space", "7", 7574)]),
    ]
}

/// A version 5 database holding `batches`, a row per bet.
async fn version_5(db: &TestDb, batches: &[(i32, i64, Vec<Bet>)]) {
    let client = db.client().await;
    client.batch_execute(VERSION_5).await.unwrap();
    for (agency, seq, bets) in batches {
        let count = bets.len() as i32;
        client
            .execute(
                "INSERT INTO batches (agency, seq, bets) VALUES ($1, $2, $3)",
                &[agency, seq, &count],
            )
            .await
            .unwrap();
        for (idx, b) in bets.iter().enumerate() {
            let (idx, number) = (idx as i32, i32::from(b.number.get()));
            client
                .execute(
                    "INSERT INTO bets VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
                    &[
                        agency,
                        seq,
                        &idx,
                        &b.first_name,
                        &b.last_name,
                        &b.document.to_string(),
                        &b.birthdate,
                        &number,
                    ],
                )
                .await
                .unwrap();
        }
    }
}

/// The bets file's rows of `batches`, in the order stored (the export), and `agency`'s alone.
fn rows(batches: &[(i32, i64, Vec<Bet>)], agency: Option<i32>) -> Vec<u8> {
    let mut out = Vec::new();
    for (_, _, bets) in batches.iter().filter(|(a, _, _)| agency.is_none_or(|k| k == *a)) {
        store_bets(&mut out, bets).unwrap();
    }
    out
}

fn receipt(batches: &[(i32, i64, Vec<Bet>)], agency: i32) -> Receipt {
    let bets: usize =
        batches.iter().filter(|(a, _, _)| *a == agency).map(|(_, _, b)| b.len()).sum();
    let sha256 = sha2::Sha256::digest(rows(batches, Some(agency))).into();
    Receipt { bets: bets as u64, sha256 }
}

async fn open(db: &TestDb) -> Result<PgStore, StorageError> {
    let url = db.url.clone();
    let config =
        ServerConfig::from_lookup(|var| (var == "LOTTERY_DATABASE_URL").then(|| url.clone()))
            .unwrap();
    let url = config.database_url.unwrap();
    within("open", PgStore::open(&url, StoreOptions::default(), "v6".into())).await.map(|s| s.0)
}

#[tokio::test]
async fn a_version_5_database_is_migrated_its_export_byte_identical_and_its_bets_a_view() {
    let Some(db) = test_database("migrate_from_5").await else { return };
    let batches = batches();
    version_5(&db, &batches).await;
    let store = open(&db).await.unwrap();
    assert_eq!(db.count("SELECT max(version)::bigint FROM lottery_schema_version").await, 6);
    let mut exported = Vec::new();
    assert_eq!(store.export(None, &mut exported).await.unwrap(), 5);
    assert_eq!(
        String::from_utf8(exported).unwrap(),
        String::from_utf8(rows(&batches, None)).unwrap()
    );
    // The view decodes the rows for SQL users.
    assert_eq!(db.count("SELECT count(*) FROM bets").await, 5);
    let found = "SELECT number::bigint FROM bets WHERE document = '0012345678' AND agency = 2";
    assert_eq!(db.count(found).await, 9999);
    assert_eq!(db.count("SELECT count(*) FROM bets WHERE number = 7574").await, 3);
    // The draw: the winners in the order stored, the receipts of the migrated rows.
    let (draw, recorded_now) = within("draw", store.draw()).await.unwrap();
    assert!(recorded_now);
    let one = AgencyId::new(1).unwrap();
    let winners: Vec<String> = draw.winners_for(one).iter().map(ToString::to_string).collect();
    assert_eq!(winners, ["30904465", "7"]);
    assert_eq!(draw.receipt_for(one), receipt(&batches, 1));
    assert_eq!(draw.receipt_for(AgencyId::new(2).unwrap()), receipt(&batches, 2));
    store.close().await;
}

/// A lottery drawn by a central of version 5 (its receipts recorded from the rows per bet): the
/// migrated database reads the draw back, its receipts the migrated rows' (else it would be
/// refused as corrupt), and exports the same bytes.
#[tokio::test]
async fn a_draw_recorded_before_the_migration_reads_back_the_same() {
    let Some(db) = test_database("migrate_drawn").await else { return };
    let batches = batches();
    version_5(&db, &batches).await;
    let receipts =
        Receipts::new([1, 2].map(|a| (AgencyId::new(a).unwrap(), receipt(&batches, a as i32))));
    let client = db.client().await;
    let digest = receipts.digest().sha256.to_vec();
    client
        .execute("INSERT INTO draw (bets, central, sha256) VALUES (5, 'v5', $1)", &[&digest])
        .await
        .unwrap();
    for (agency, r) in receipts.iter() {
        let (agency, bets, sha256) = (agency.get() as i32, r.bets as i64, r.sha256.to_vec());
        client
            .execute("INSERT INTO receipts VALUES ($1, $2, $3)", &[&agency, &bets, &sha256])
            .await
            .unwrap();
    }
    let store = open(&db).await.unwrap();
    let (draw, recorded_now) = within("draw", store.draw()).await.unwrap();
    assert!(!recorded_now, "the draw recorded by version 5 is read, not made again");
    assert_eq!(draw.receipts(), &receipts);
    let mut exported = Vec::new();
    store.export(None, &mut exported).await.unwrap();
    assert_eq!(exported, rows(&batches, None));
    store.close().await;
}

/// Bets that are not their batches' (here a batch whose bets are missing) are refused at start,
/// as the inconsistency it is, naming it; the migration rolls back: version 5, its bets table.
#[tokio::test]
async fn a_batch_without_its_bets_is_refused_and_the_database_left_at_version_5() {
    let Some(db) = test_database("migrate_refused").await else { return };
    let batches = batches();
    version_5(&db, &batches).await;
    let client = db.client().await;
    client.batch_execute("DELETE FROM bets WHERE agency = 2").await.unwrap();
    let refused = open(&db).await.unwrap_err();
    assert!(matches!(refused, StorageError::Corrupt { .. }), "{refused}");
    let text = refused.to_string();
    assert!(text.contains("version 5") && text.contains("1 batches have no bets"), "{text}");
    assert_eq!(db.count("SELECT max(version)::bigint FROM lottery_schema_version").await, 5);
    let table = "SELECT count(*) FROM pg_tables WHERE tablename = 'bets'";
    assert_eq!(db.count(table).await, 1);
    assert_eq!(db.count("SELECT count(*) FROM bets").await, 3);
}

/// The draw finishes each agency's receipt from the SHA-256 state its commits left in its row
/// (it does not hash its rows again) while its batches are as stored: a state changed behind the
/// store's back shows in the receipt; a batch row changed since stored sends the draw back to
/// the rows.
#[tokio::test]
async fn the_draw_finishes_the_receipts_from_the_state_the_commits_left() {
    let Some(db) = test_database("receipt_state").await else { return };
    let store = open(&db).await.unwrap();
    let agency = AgencyId::new(1).unwrap();
    let (_, epoch) = store.open_session(agency).await.unwrap();
    let batches: Vec<(i32, i64, Vec<Bet>)> = (1..=3)
        .map(|seq| (1, seq, vec![bet(1, "Ana", &seq.to_string(), 7574), bet(1, "Bea", "9", 1)]))
        .collect();
    for (_, seq, bets) in &batches {
        let stored = within("ack", store.submit(agency, epoch, *seq as u64, &bets[..])).await;
        assert_eq!(stored.unwrap(), lottery::storage::Stored::New);
    }
    let client = db.client().await;
    let fast = "SELECT count(*) FROM batches WHERE xmin::text::bigint = stored_xid % 4294967296";
    assert_eq!(db.count(fast).await, 3, "every batch as its commit stored it");
    // The state of the first batch's rows alone, as if the last two had not been hashed.
    let mut first = lottery::domain::ReceiptHasher::default();
    first.update(&rows(&batches[..1], None), 2);
    client.execute("UPDATE agencies SET receipt = $1", &[&first.state()]).await.unwrap();
    let mut expected = first.clone().finish();
    expected.bets = 6;
    store.mark_ready(agency, epoch).await.unwrap();
    let (draw, _) = within("draw", store.draw()).await.unwrap();
    assert_eq!(draw.receipt_for(agency), expected, "finished from the state, not the rows");
    store.close().await;
}
