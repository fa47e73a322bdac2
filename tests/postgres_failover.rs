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

use common::pg_proxy::{Lose, PgProxy};
use common::postgres::{TestDb, agency_env, central_address, exported, spawn_central};
use common::replicated::Replicated;
use common::{AgencyData, CLIENT_BIN, Process, sorted, within};
use lottery::storage::postgres::COMMIT_LOCK;

static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

const AGENCIES: u32 = 5;

/// Failovers during the upload (one more comes during the draw).
const FAILOVERS: usize = 5;

/// A kill comes after the central's k-th acknowledgement since the last failover, k in 1..=6.
const MAX_ACKS: u64 = 6;

const ACK: &str = "action: apuesta_recibida | result: success";

/// A small seeded generator (splitmix64): the kill points, replayable from the seed.
struct SplitMix(u64);

impl SplitMix {
    fn up_to(&mut self, max: u64) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        (z ^ (z >> 31)) % (max + 1)
    }
}

fn chaos_seed() -> u64 {
    let seed = match std::env::var("CHAOS_SEED") {
        Ok(text) => text.trim().parse().unwrap_or_else(|_| {
            panic!("CHAOS_SEED={text:?} is invalid: expected an unsigned 64-bit integer")
        }),
        Err(_) => std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64),
    };
    println!("chaos seed: {seed} (replay with CHAOS_SEED={seed})");
    seed
}

/// The central's next line containing `needle`; `None` when the agencies all finished first.
async fn next_line(
    central: &mut Process,
    needle: &str,
    agencies: &tokio::task::JoinHandle<Vec<(Option<i32>, Vec<String>)>>,
) -> Option<String> {
    loop {
        if agencies.is_finished() {
            return None;
        }
        let line = tokio::time::timeout(Duration::from_millis(200), central.lines.recv()).await;
        match line {
            Ok(Some(line)) => {
                central.seen.push(line.clone());
                if line.contains(needle) {
                    return Some(line);
                }
            }
            Ok(None) => panic!("the central ended: {:#?}", central.seen),
            // Not a pause for timing: a look at whether the agencies are done.
            Err(_) => {}
        }
    }
}

/// Starts the agencies of `data` on `address`; the task ends with every one's exit code and
/// lines.
fn start_agencies(
    data: &[AgencyData],
    address: &str,
    extra: &[(&'static str, &str)],
) -> tokio::task::JoinHandle<Vec<(Option<i32>, Vec<String>)>> {
    let processes: Vec<Process> = data
        .iter()
        .map(|d| {
            let mut env = agency_env(address, d);
            env.retain(|(k, _)| !extra.iter().any(|(e, _)| e == k));
            env.extend(extra.iter().map(|(k, v)| (*k, (*v).to_owned())));
            Process::start(CLIENT_BIN, &env)
        })
        .collect();
    tokio::spawn(async move {
        let mut results = Vec::new();
        for agency in processes {
            let limit = Duration::from_secs(240);
            let result = tokio::time::timeout(limit, agency.finish()).await;
            results.push(result.unwrap_or_else(|_| panic!("an agency still runs after {limit:?}")));
        }
        results
    })
}

/// Every agency exited 0 with its own winners.
fn check_agencies(results: &[(Option<i32>, Vec<String>)], data: &[AgencyData]) {
    for ((code, lines), data) in results.iter().zip(data) {
        assert_eq!(*code, Some(0), "agency {}: {lines:#?}", data.agency);
        let winners = format!(
            "action: consulta_ganadores | result: success | cant_ganadores: {}",
            data.winners().len()
        );
        assert!(lines.iter().any(|l| l.ends_with(&winners)), "{winners} in {lines:#?}");
    }
}

/// One draw, every bet of `data` stored once.
async fn check_database(db: &TestDb, dir: &std::path::Path, data: &[AgencyData]) {
    assert_eq!(db.count("SELECT count(*) FROM draw").await, 1);
    let total: usize = data.iter().map(|d| d.rows.len()).sum();
    assert_eq!(db.count("SELECT count(*) FROM bets").await, total as i64);
    let expected = sorted(data.iter().flat_map(AgencyData::stored_rows).collect());
    assert_eq!(exported(db, dir).await, expected, "each bet exactly once");
}

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
