//! Database failover without Docker (issue 23): a central given both servers of a primary and a
//! synchronous standby (`host=…,… port=…,… target_session_attrs=read-write`), the primary killed
//! with `kill -9` at seeded points while five agencies upload and once while the central draws,
//! the standby promoted each time (as a failover manager would) and a new standby rebuilt from
//! it on the dead one's port. Every acknowledged bet is stored exactly once, there is one draw,
//! and every agency gets its winners.
//!
//! The servers come from Debian's PostgreSQL binaries (`tests/common/replicated.rs`). Like the
//! other database suites they run under `pg_virtualenv` (`PGHOST` set; they do not use its
//! server) or with `LOTTERY_REQUIRE_POSTGRES=1`, else skip loudly; without the binaries they
//! skip, or fail under `LOTTERY_REQUIRE_POSTGRES=1`. The kill points come
//! from `CHAOS_SEED` (printed; random when unset), so a failing run can be replayed. The tests of
//! this binary take turns ([`SERIAL`]): they measure.

mod common;

use std::time::{Duration, Instant};

use common::failover::{
    ACK, SplitMix, chaos_seed, check_agencies, check_database, next_line, start_agencies,
};
use common::pg_proxy::{Lose, PgProxy};
use common::postgres::{TestDb, central_address, spawn_central};
use common::replicated::Replicated;
use common::{AgencyData, Process, within};
use lottery::storage::postgres::COMMIT_LOCK;

static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

const AGENCIES: u32 = 5;

/// Failovers during the upload (one more comes during the draw).
const FAILOVERS: usize = 5;

/// A kill comes after the central's k-th acknowledgement since the last failover, k in 1..=6.
const MAX_ACKS: u64 = 6;

/// A central on a free port storing in `cluster`, once it has opened the database.
async fn start_central(db: &TestDb) -> (Process, String) {
    let mut central = spawn_central(db, 0, AGENCIES);
    let address = central_address(&mut central).await;
    central.wait_for_line("action: database | result: success").await;
    (central, address)
}

/// Kill the primary, promote the standby, rebuild a standby: the failover manager's work.
async fn fail_over(cluster: &mut Replicated) {
    cluster.kill_primary().await;
    cluster.promote().await;
    cluster.rebuild_standby().await;
}

#[tokio::test]
async fn primaries_killed_during_the_upload_and_the_draw_lose_no_acknowledged_bet() {
    let _serial = SERIAL.lock().await;
    let test = "failover_kills";
    let Some(mut cluster) = Replicated::start(test, true).await else { return };
    let db = TestDb { url: cluster.url(), name: common::replicated::DATABASE.into() };
    let mut rng = SplitMix(chaos_seed());
    let dir = tempfile::tempdir().unwrap();
    let (mut central, address) = start_central(&db).await;
    let opened = common::line_with(&central.seen, "action: database | result: success").to_owned();
    assert!(opened.contains("| replication: synchronous"), "{opened}");
    let data: Vec<AgencyData> =
        (1..=AGENCIES).map(|agency| AgencyData::generate(dir.path(), agency, 3_000)).collect();
    // Small batches, paced, so the upload outlasts the failovers.
    let extra = [
        ("CLI_BATCH_MAXAMOUNT", "10"),
        ("CLI_LOOP_PERIOD", "20ms"),
        ("CLI_CONNECT_TIMEOUT", "120s"),
    ];
    let agencies = start_agencies(&data, &address, &extra);
    let mut outages = Vec::new();
    for round in 0..FAILOVERS {
        let acks = 1 + rng.up_to(MAX_ACKS - 1);
        for _ in 0..acks {
            let seen = next_line(&mut central, ACK, &agencies).await;
            assert!(seen.is_some(), "the agencies finished before failover {}", round + 1);
        }
        let killed = Instant::now();
        println!("failover {} after {acks} acknowledgements", round + 1);
        fail_over(&mut cluster).await;
        let seen = next_line(&mut central, ACK, &agencies).await;
        assert!(seen.is_some(), "the agencies finished before an acknowledgement");
        outages.push(killed.elapsed());
    }
    println!("from the primary's death to the next acknowledgement: {outages:?}");
    // The draw waits for the groups in flight (a shared COMMIT_LOCK); the test holds one, so the
    // draw, once every agency is ready, waits inside its transaction; the primary dies there.
    let holder = cluster.client(cluster.primary, common::replicated::DATABASE).await;
    holder.execute("SELECT pg_advisory_lock_shared($1)", &[&COMMIT_LOCK]).await.unwrap();
    let watcher = cluster.client(cluster.primary, common::replicated::DATABASE).await;
    let waiting = "SELECT 1 FROM pg_locks WHERE locktype = 'advisory' AND NOT granted";
    let deadline = Instant::now() + Duration::from_secs(200);
    while watcher.query_opt(waiting, &[]).await.unwrap().is_none() {
        assert!(Instant::now() < deadline, "the draw never waited for the lock");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    println!("failover during the draw");
    fail_over(&mut cluster).await;
    let results = within("the agencies", agencies).await.unwrap();
    check_agencies(&results, &data);
    central.signal("TERM");
    let (code, lines) = central.finish().await;
    assert_eq!(code, Some(0), "{lines:#?}");
    let draw = "action: sorteo | result: fail";
    assert!(lines.iter().any(|l| l.contains(draw)), "{draw}: the draw was cut: {lines:#?}");
    check_database(&db, dir.path(), &data).await;
}

/// One small unpaced run through a synchronous standby, one through an asynchronous one: the
/// throughput each gives on this machine (printed; no timed assertion).
#[tokio::test]
async fn throughput_with_a_synchronous_standby_and_with_an_asynchronous_one() {
    let _serial = SERIAL.lock().await;
    for synchronous in [true, false] {
        let test = "failover_throughput";
        let Some(cluster) = Replicated::start(test, synchronous).await else { return };
        let db = TestDb { url: cluster.url(), name: common::replicated::DATABASE.into() };
        let dir = tempfile::tempdir().unwrap();
        let (central, address) = start_central(&db).await;
        let mode = if synchronous { "synchronous" } else { "asynchronous" };
        let opened = common::line_with(&central.seen, "action: database | result: success");
        assert!(opened.contains(&format!("| replication: {mode}")), "{opened}");
        let data: Vec<AgencyData> =
            (1..=AGENCIES).map(|agency| AgencyData::generate(dir.path(), agency, 2_000)).collect();
        // Small batches: many group commits, each waiting for the standby when synchronous.
        let extra = [("CLI_BATCH_MAXAMOUNT", "10")];
        let started = Instant::now();
        let agencies = start_agencies(&data, &address, &extra);
        let results = within("the agencies", agencies).await.unwrap();
        let elapsed = started.elapsed();
        check_agencies(&results, &data);
        let bets = 2_000 * AGENCIES;
        let rate = f64::from(bets) / elapsed.as_secs_f64();
        println!("{mode} standby: {bets} bets in {elapsed:?}: {rate:.0} bets/s");
        check_database(&db, dir.path(), &data).await;
        drop(central);
    }
}

/// A group whose `COMMIT` result is lost (the connection cut right after the proxy forwarded it,
/// or instead of forwarding it) is in doubt: the central refuses its batch (`Storage`), the
/// agency opens a new session, and the `(agency, seq)` rule decides: the `Welcome` puts it past
/// the batch when the `COMMIT` happened (found stored, not sent again), at it when not (resent
/// and stored). Either way every bet is stored once.
#[tokio::test]
async fn a_group_whose_commit_result_was_lost_is_resolved_by_the_agencys_retry() {
    let _serial = SERIAL.lock().await;
    for lose in [Lose::Answer, Lose::Commit] {
        let test = "failover_in_doubt";
        let Some(cluster) = Replicated::start(test, true).await else { return };
        let primary = format!("127.0.0.1:{}", cluster.nodes[cluster.primary].port);
        let proxy = PgProxy::start(primary.parse().unwrap()).await;
        let url = format!(
            "host=127.0.0.1 port={} user={} dbname={} sslmode=disable",
            proxy.port,
            common::replicated::USER,
            common::replicated::DATABASE
        );
        let db = TestDb { url, name: common::replicated::DATABASE.into() };
        let dir = tempfile::tempdir().unwrap();
        let mut central = spawn_central(&db, 0, 1);
        let address = central_address(&mut central).await;
        central.wait_for_line("action: database | result: success").await;
        let data = [AgencyData::generate(dir.path(), 1, 600)];
        let extra = [("CLI_BATCH_MAXAMOUNT", "10"), ("CLI_LOOP_PERIOD", "5ms")];
        let agencies = start_agencies(&data, &address, &extra);
        assert!(next_line(&mut central, ACK, &agencies).await.is_some(), "finished at once");
        proxy.arm(lose);
        within("the lost COMMIT", proxy.caught.notified()).await;
        let failed = "action: apuesta_recibida | result: fail";
        let failed = next_line(&mut central, failed, &agencies).await.expect("a refused batch");
        let seq = failed.rsplit("seq: ").next().unwrap().split(' ').next().unwrap().to_owned();
        let seq: u64 = seq.parse().unwrap();
        // The agency reconnects after the refusal; the Welcome says where the database is: past
        // the batch when its COMMIT happened (it is not sent again), at it when not (it is
        // resent and stored).
        let hello = "action: hello | result: success | agency: 1";
        let hello = next_line(&mut central, hello, &agencies).await.expect("a new session");
        let next_seq: u64 =
            hello.rsplit("next_seq: ").next().unwrap().split(' ').next().unwrap().parse().unwrap();
        let retried = match lose {
            Lose::Answer => {
                // The group may have held later batches of the agency too (pipelined): all stored.
                assert!(next_seq > seq, "committed, so stored: {hello}");
                hello.clone()
            }
            Lose::Commit => {
                assert_eq!(next_seq, seq, "rolled back, so not stored: {hello}");
                let stored = format!("agency: 1 | seq: {seq}");
                let line =
                    next_line(&mut central, &stored, &agencies).await.expect("the batch resent");
                assert!(line.contains("action: apuesta_recibida | result: success"), "{line}");
                line
            }
        };
        println!("{lose:?} lost: {failed} → {retried}");
        let results = within("the agency", agencies).await.unwrap();
        check_agencies(&results, &data);
        check_database(&db, dir.path(), &data).await;
        drop(central);
    }
}
