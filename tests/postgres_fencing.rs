//! Failover at its edges (issue 23), on the replicated servers of `tests/common/replicated.rs`:
//!
//! - the old primary coming back **writable** after the standby was promoted, listed first in
//!   the central's URL: the central refuses it for its older timeline (a running central that
//!   saw the new one, and one started afterwards, which surveys every host), and nothing is
//!   written there;
//! - the standby promoted, the primary killed with `kill -9`, while a central is inside a
//!   group's `COPY` (held there by the proxy of `tests/common/pg_proxy.rs`): the group is not
//!   committed, the agency's retry is decided by `(agency, seq)`, every bet is stored once;
//! - and, on `pg_virtualenv`'s server, a server that cannot say its timeline (the role may not
//!   run `pg_control_system()`) used unchecked, said once.
//!
//! They run with the other database suites (`PGHOST` or `LOTTERY_REQUIRE_POSTGRES`), one at a
//! time ([`SERIAL`]); the kill point of the first comes from `CHAOS_SEED` (printed).

mod common;

use common::failover::{
    ACK, SplitMix, chaos_seed, check_agencies, check_database, next_line, start_agencies,
};
use common::pg_proxy::PgProxy;
use common::postgres::{TestDb, central_address, spawn_central};
use common::replicated::{DATABASE, Replicated, USER};
use common::{AgencyData, Process, within};
use lottery::storage::postgres::COMMIT_LOCK;

static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

const AGENCIES: u32 = 5;

/// A central on a free port storing in `db`, once it has opened the database.
async fn start_central(db: &TestDb, agencies: u32) -> (Process, String) {
    let mut central = spawn_central(db, 0, agencies);
    let address = central_address(&mut central).await;
    central.wait_for_line("action: database | result: success").await;
    (central, address)
}

/// The database on node `i` alone.
fn one_server(cluster: &Replicated, i: usize) -> TestDb {
    let port = cluster.nodes[i].port;
    let url = format!("host=127.0.0.1 port={port} user={USER} dbname={DATABASE} sslmode=disable");
    TestDb { url, name: DATABASE.into() }
}

/// Whether the server takes writes, and its timeline.
async fn role(db: &TestDb) -> (bool, i64) {
    let sql = "SELECT NOT pg_is_in_recovery(),
        ('x' || substr(pg_walfile_name(pg_current_wal_lsn()), 1, 8))::bit(32)::bigint";
    let row = db.client().await.query_one(sql, &[]).await.unwrap();
    (row.get(0), row.get(1))
}

/// Everything a central could have written: bets, batches, sessions (epochs), progress, ready
/// flags, the draw.
async fn footprint(db: &TestDb) -> i64 {
    db.count(
        "SELECT (SELECT count(*) FROM bets) + (SELECT count(*) FROM batches)
            + (SELECT count(*) FROM draw)
            + (SELECT coalesce(sum(epoch + last_seq + stored_bets + ready::int), 0)
               FROM agencies)::bigint",
    )
    .await
}

#[tokio::test]
async fn an_old_primary_back_writable_after_a_failover_takes_no_bet() {
    let _serial = SERIAL.lock().await;
    let Some(mut cluster) = Replicated::start("fencing_old_primary", true).await else { return };
    // `url()` lists node 0, the first primary, first.
    let old = cluster.primary;
    let db = TestDb { url: cluster.url(), name: DATABASE.into() };
    let mut rng = SplitMix(chaos_seed());
    let dir = tempfile::tempdir().unwrap();
    let (mut central, address) = start_central(&db, AGENCIES).await;
    let data: Vec<AgencyData> =
        (1..=AGENCIES).map(|agency| AgencyData::generate(dir.path(), agency, 3_000)).collect();
    let extra = [
        ("CLI_BATCH_MAXAMOUNT", "10"),
        ("CLI_LOOP_PERIOD", "25ms"),
        ("CLI_CONNECT_TIMEOUT", "120s"),
    ];
    let agencies = start_agencies(&data, &address, &extra);
    let acks = 1 + rng.up_to(5);
    for _ in 0..acks {
        assert!(next_line(&mut central, ACK, &agencies).await.is_some(), "finished early");
    }
    println!("failover after {acks} acknowledgements");
    cluster.kill_primary().await;
    cluster.promote().await;
    // No standby left: the promoted server acknowledges alone (as Patroni does without
    // `synchronous_mode_strict`).
    cluster.go_alone().await;
    let new = cluster.primary;
    // The draw waits for the groups in flight (a shared COMMIT_LOCK): the test holds one on the
    // promoted server until the old primary is back and checked, so the agencies cannot finish
    // before, and the draw (with its ready flags, a write of every agency) always comes after.
    let holder = one_server(&cluster, new).client().await;
    holder.execute("SELECT pg_advisory_lock_shared($1)", &[&COMMIT_LOCK]).await.unwrap();
    // The central reaches the promoted server, on timeline 2, and stores there.
    loop {
        let seen = next_line(&mut central, "action: database_timeline", &agencies).await;
        if seen.expect("the agencies finished before the failover ended").ends_with("timeline: 2") {
            break;
        }
    }
    assert!(next_line(&mut central, ACK, &agencies).await.is_some(), "finished early");
    // The old primary comes back as it was, a primary, acknowledging commits on its own.
    cluster.restart_alone(old).await;
    let (old_db, new_db) = (one_server(&cluster, old), one_server(&cluster, new));
    assert_eq!(role(&old_db).await, (true, 1), "the old primary takes writes, on timeline 1");
    assert_eq!(role(&new_db).await, (true, 2), "the promoted one too, on timeline 2");
    let before = footprint(&old_db).await;
    // Every connection of the central to the promoted server ends: each new one tries the old
    // primary first.
    let ended = new_db
        .count(
            "SELECT count(*) FILTER (WHERE pg_terminate_backend(pid)) FROM pg_stat_activity
             WHERE application_name = 'lottery-server'",
        )
        .await;
    assert!(ended > 0, "the central had connections to the promoted server");
    let old_host = format!("host: 127.0.0.1:{}", cluster.nodes[old].port);
    let refused = "action: database | result: fail";
    // Bounded: the agencies cannot finish while the draw is held.
    let line = within("a refusal", next_line(&mut central, refused, &agencies)).await;
    let line = line.expect("a refusal");
    assert!(line.contains(&old_host) && line.contains("| timeline: 1 |"), "{line}");
    assert!(line.contains("newest_timeline: 2"), "{line}");
    // A central started now never saw the failover: it surveys every host at start.
    let (second, _) = start_central(&db, AGENCIES).await;
    let line = common::line_with(&second.seen, refused);
    assert!(line.contains(&old_host) && line.contains("newest_timeline: 2"), "{line}");
    second.signal("TERM");
    let (code, lines) = second.finish().await;
    assert_eq!(code, Some(0), "{lines:#?}");
    drop(holder);

    let results = within("the agencies", agencies).await.unwrap();
    check_agencies(&results, &data);
    central.signal("TERM");
    let (code, lines) = central.finish().await;
    assert_eq!(code, Some(0), "{lines:#?}");
    assert_eq!(footprint(&old_db).await, before, "nothing was written to the old primary");
    check_database(&new_db, dir.path(), &data).await;
}

#[tokio::test]
async fn the_standby_promoted_while_a_central_is_inside_copy_loses_and_doubles_nothing() {
    let _serial = SERIAL.lock().await;
    let Some(mut cluster) = Replicated::start("fencing_in_copy", true).await else { return };
    // The central reaches the primary through the proxy, the standby directly.
    let primary = format!("127.0.0.1:{}", cluster.nodes[cluster.primary].port);
    let proxy = PgProxy::start(primary.parse().unwrap()).await;
    let url = format!(
        "host=127.0.0.1,127.0.0.1 port={},{} user={USER} dbname={DATABASE} \
         target_session_attrs=read-write sslmode=disable",
        proxy.port,
        cluster.nodes[cluster.standby()].port
    );
    let db = TestDb { url, name: DATABASE.into() };
    let dir = tempfile::tempdir().unwrap();
    let (mut central, address) = start_central(&db, 1).await;
    let data = [AgencyData::generate(dir.path(), 1, 600)];
    let extra = [("CLI_BATCH_MAXAMOUNT", "10"), ("CLI_LOOP_PERIOD", "5ms")];
    let agencies = start_agencies(&data, &address, &extra);
    assert!(next_line(&mut central, ACK, &agencies).await.is_some(), "finished at once");
    // The next group's COPY waits at its first row; the primary dies under it, the standby is
    // promoted, then the COPY's bytes go on to the dead server.
    proxy.hold_copy();
    within("a COPY held", proxy.caught.notified()).await;
    cluster.kill_primary().await;
    cluster.promote().await;
    proxy.release();
    let failed = "action: apuesta_recibida | result: fail";
    let failed = next_line(&mut central, failed, &agencies).await.expect("a refused batch");
    let seq: u64 =
        failed.rsplit("seq: ").next().unwrap().split(' ').next().unwrap().parse().unwrap();
    // The promoted server is synchronous: its commits wait for a standby.
    cluster.rebuild_standby().await;
    // Never committed (its transaction died with the server): the agency's new session starts
    // at the batch, which is resent and stored on the promoted server.
    let hello = "action: hello | result: success | agency: 1";
    let hello = next_line(&mut central, hello, &agencies).await.expect("a new session");
    let next_seq: u64 =
        hello.rsplit("next_seq: ").next().unwrap().split(' ').next().unwrap().parse().unwrap();
    assert_eq!(next_seq, seq, "the held group was not stored: {failed} → {hello}");
    let stored = format!("agency: 1 | seq: {seq}");
    let line = next_line(&mut central, &stored, &agencies).await.expect("the batch resent");
    assert!(line.contains(ACK), "{line}");
    let results = within("the agency", agencies).await.unwrap();
    check_agencies(&results, &data);
    check_database(&one_server(&cluster, cluster.primary), dir.path(), &data).await;
    drop(central);
}

/// A server that cannot say where it is (here the role may not run `pg_control_system()`, as on
/// some managed databases) is used unchecked, said once, rather than not at all.
#[tokio::test]
async fn a_server_that_cannot_tell_its_timeline_is_used_unchecked_and_said_once() {
    let Some(db) = common::postgres::test_database("fencing_unchecked").await else { return };
    let role: String = format!("{}_r", db.name).chars().rev().take(63).collect();
    let role: String = role.chars().rev().collect();
    let admin = db.client().await;
    let setup = format!(
        "CREATE ROLE \"{role}\" LOGIN PASSWORD 'role-secret';
         ALTER DATABASE \"{}\" OWNER TO \"{role}\";
         REVOKE EXECUTE ON FUNCTION pg_control_system() FROM PUBLIC;",
        db.name
    );
    admin.batch_execute(&setup).await.unwrap();
    let user = db.url.split("user=").nth(1).unwrap().split(' ').next().unwrap();
    let password = db.url.split("password=").nth(1).unwrap().split(' ').next().unwrap();
    let url = db.url.replacen(&format!("user={user}"), &format!("user={role}"), 1).replacen(
        &format!("password={password}"),
        "password=role-secret",
        1,
    );
    let limited = TestDb { url, name: db.name.clone() };
    let (central, _) = start_central(&limited, 1).await;
    central.signal("TERM");
    let (code, lines) = central.finish().await;
    assert_eq!(code, Some(0), "{lines:#?}");
    let unchecked: Vec<&String> =
        lines.iter().filter(|l| l.contains("action: database_timeline | result: fail")).collect();
    assert_eq!(unchecked.len(), 1, "said once: {lines:#?}");
    assert!(
        unchecked[0].contains("permission denied for function pg_control_system"),
        "{lines:#?}"
    );
    assert!(unchecked[0].contains("(SQLSTATE 42501)"), "{lines:#?}");
}
