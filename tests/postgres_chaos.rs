//! Chaos on several centrals sharing one PostgreSQL database (issue 13): centrals killed with
//! `kill -9` at seeded random points while five agencies upload through both, and the database
//! itself stopped and started in the middle of the uploads. Afterwards every agency has its
//! winners, every bet is stored exactly once, and there is one draw.
//!
//! Run them with `pg_virtualenv -t cargo test --locked --test postgres_chaos` (without a database
//! they skip, loudly). The kill points come from `CHAOS_SEED` (printed; random when unset), so a
//! failing run can be replayed. The tests of this binary take turns ([`SERIAL`]): the database
//! restart cuts every connection to the cluster, and the chaos test's timing is its own.

mod common;

use std::time::Duration;

use common::postgres::{Cluster, TestDb, agency_env, central_address, exported, spawn_central};
use common::{AgencyData, CLIENT_BIN, Process, sorted, within};
use lottery::storage::postgres::{COMMIT_LOCK, DRAW_LOCK};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// One test of this binary at a time.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

const AGENCIES: u32 = 5;

/// Kills of each central in the chaos test.
const KILLS: usize = 20;

/// A kill comes after the victim's k-th acknowledgement, k in 1..=MAX_ACKS, or (k = 0) right
/// after it answers a `Hello`.
const MAX_ACKS: u64 = 6;

/// The longest an agency may take in these tests (they reconnect many times).
const AGENCY_LIMIT: Duration = Duration::from_secs(240);

/// A small seeded generator (splitmix64): the kill points, replayable from the seed.
struct SplitMix(u64);

impl SplitMix {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// A number in 0..=`max`.
    fn up_to(&mut self, max: u64) -> u64 {
        self.next() % (max + 1)
    }
}

/// `CHAOS_SEED`, or a fresh seed; printed either way.
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

/// What ends the wait before a kill.
#[derive(Debug, Clone, Copy)]
enum Trigger {
    /// The victim answered a `Hello`.
    Hello,
    /// The victim acknowledged this many new batches.
    Acks(u64),
}

impl Trigger {
    fn draw(rng: &mut SplitMix) -> Self {
        match rng.up_to(MAX_ACKS) {
            0 => Self::Hello,
            k => Self::Acks(k),
        }
    }
}

/// A central process the test kills and restarts, always on the same port.
struct Central {
    name: &'static str,
    port: u16,
    process: Process,
    /// Where in `process.seen` the current wait started counting.
    mark: usize,
    /// Every line of its earlier (killed) processes.
    history: Vec<String>,
    kills: usize,
}

impl Central {
    /// Starts a central on a free port and waits until it serves.
    async fn start(name: &'static str, db: &TestDb) -> (Self, String) {
        let mut process = spawn_central(db, 0, AGENCIES);
        let address = central_address(&mut process).await;
        let port = address.rsplit(':').next().and_then(|p| p.parse().ok()).unwrap();
        let mut central = Self { name, port, process, mark: 0, history: Vec::new(), kills: 0 };
        central.wait_until_serving().await;
        (central, address)
    }

    /// Waits until this process has opened the database (a restarted one may still be starting).
    async fn wait_until_serving(&mut self) {
        let listen = format!("action: listen | result: success | address: 127.0.0.1:{}", self.port);
        self.process.wait_for_line(&listen).await;
        self.process.wait_for_line("action: database | result: success").await;
    }

    /// From now on, lines count towards the next trigger; earlier ones do not.
    fn arm(&mut self) {
        while let Ok(line) = self.process.lines.try_recv() {
            self.process.seen.push(line);
        }
        self.mark = self.process.seen.len();
    }

    /// Waits, from the last [`Central::arm`], for `trigger`; `false` when the agencies all
    /// finished first.
    async fn wait_for(&mut self, trigger: Trigger, done: &CancellationToken) -> bool {
        let mut acks = 0;
        let mut next = self.mark;
        loop {
            while let Some(line) = self.process.seen.get(next) {
                next += 1;
                let fired = match trigger {
                    Trigger::Hello => line.contains("action: hello | result: success"),
                    Trigger::Acks(k) => {
                        acks +=
                            u64::from(line.contains("action: apuesta_recibida | result: success"));
                        acks >= k
                    }
                };
                if fired {
                    return true;
                }
            }
            let line = tokio::select! {
                line = self.process.lines.recv() => line,
                () = done.cancelled() => return false,
            };
            let Some(line) = line else {
                panic!("central {} ended: {:#?}", self.name, self.process.seen)
            };
            self.process.seen.push(line);
        }
    }

    /// `kill -9`, then a new process on the same port (not waited for).
    async fn kill_and_restart(&mut self, db: &TestDb) {
        self.process.child.start_kill().unwrap();
        within("the killed central's exit", self.process.child.wait()).await.unwrap();
        let killed = std::mem::replace(&mut self.process, spawn_central(db, self.port, AGENCIES));
        self.history.extend(killed.seen);
        self.mark = 0;
        self.kills += 1;
    }

    /// Stops it (SIGTERM), checks it stopped cleanly, and returns every line of every process.
    async fn stop(mut self) -> Vec<String> {
        self.process.signal("TERM");
        let name = self.name;
        let (code, lines) = self.process.finish().await;
        assert_eq!(code, Some(0), "central {name}: {lines:#?}");
        self.history.extend(lines);
        self.history
    }
}

/// The agencies; `done` is cancelled once every one has exited (or the wait failed).
struct Agencies {
    done: CancellationToken,
    results: JoinHandle<Vec<(Option<i32>, Vec<String>)>>,
}

impl Agencies {
    /// Starts the agencies of `data`, half of them listing `a` first, half `b`.
    fn start(data: &[AgencyData], a: &str, b: &str, extra: &[(&'static str, &str)]) -> Self {
        let list = |d: &AgencyData| {
            if d.agency % 2 == 1 { format!("{a},{b}") } else { format!("{b},{a}") }
        };
        Self::start_with(data, list, extra)
    }

    /// Starts the agencies of `data`, each with the centrals `list` gives it.
    fn start_with(
        data: &[AgencyData],
        list: impl Fn(&AgencyData) -> String,
        extra: &[(&'static str, &str)],
    ) -> Self {
        let processes: Vec<Process> = data
            .iter()
            .map(|d| {
                let mut env = agency_env(&list(d), d);
                env.retain(|(k, _)| !extra.iter().any(|(e, _)| e == k));
                env.extend(extra.iter().map(|(k, v)| (*k, (*v).to_owned())));
                Process::start(CLIENT_BIN, &env)
            })
            .collect();
        let done = CancellationToken::new();
        let guard = done.clone().drop_guard();
        let results = tokio::spawn(async move {
            let _done = guard;
            let mut results = Vec::new();
            for mut agency in processes {
                let status = tokio::time::timeout(AGENCY_LIMIT, agency.child.wait()).await;
                let Ok(status) = status else {
                    while let Ok(line) = agency.lines.try_recv() {
                        agency.seen.push(line);
                    }
                    panic!("an agency still runs after {AGENCY_LIMIT:?}: {:#?}", agency.seen)
                };
                while let Some(line) = within("agency output", agency.lines.recv()).await {
                    agency.seen.push(line);
                }
                results.push((status.unwrap().code(), agency.seen));
            }
            results
        });
        Self { done, results }
    }

    /// Every agency exited 0 with its own winners.
    async fn check(self, data: &[AgencyData]) {
        let results = self.results.await.unwrap();
        for ((code, lines), data) in results.iter().zip(data) {
            assert_eq!(*code, Some(0), "agency {}: {lines:#?}", data.agency);
            let winners = format!(
                "action: consulta_ganadores | result: success | cant_ganadores: {}",
                data.winners().len()
            );
            assert!(lines.iter().any(|l| l.ends_with(&winners)), "{winners} in {lines:#?}");
        }
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

/// Two centrals, A and B, each `kill -9`ed 20 times at seeded random points and restarted on its
/// port while five agencies upload through both. The kills take turns: agencies stay on a
/// central while it works, so after A dies they are all on B, and A, back, would serve nobody
/// until B fails; killing B next sends them all to A, which is killed next, and so on. Each kill
/// thus lands on the central every agency is talking to: mid-batch, mid-`COMMIT`, right after a
/// `Hello`. Before each kill the other central is serving, so the agencies always have one to go
/// to (and reconnect while the killed one comes back).
#[tokio::test]
async fn centrals_killed_at_random_points_lose_nothing_and_store_nothing_twice() {
    let _serial = SERIAL.lock().await;
    let Some(db) = common::postgres::test_database("chaos_kills").await else { return };
    let mut rng = SplitMix(chaos_seed());
    let dir = tempfile::tempdir().unwrap();
    let (a, a_address) = Central::start("A", &db).await;
    let (b, b_address) = Central::start("B", &db).await;
    let data: Vec<AgencyData> =
        (1..=AGENCIES).map(|agency| AgencyData::generate(dir.path(), agency, 10_000)).collect();
    // Small batches, paced (each agency takes at least 1,000 × 20 ms), so the upload outlasts
    // 40 kills and restarts (about 10 s here).
    let extra = [
        ("CLI_BATCH_MAXAMOUNT", "10"),
        ("CLI_LOOP_PERIOD", "20ms"),
        ("CLI_CONNECT_TIMEOUT", "120s"),
    ];
    let mut centrals = [a, b];
    // A's first trigger counts from before the agencies' first Hello.
    centrals[0].arm();
    let agencies = Agencies::start(&data, &a_address, &b_address, &extra);
    let started = std::time::Instant::now();
    for round in 0..2 * KILLS {
        let trigger = Trigger::draw(&mut rng);
        let (first, second) = centrals.split_at_mut(1);
        let (victim, other) = if round % 2 == 0 {
            (&mut first[0], &mut second[0])
        } else {
            (&mut second[0], &mut first[0])
        };
        if !victim.wait_for(trigger, &agencies.done).await {
            break;
        }
        // The agencies leaving the victim must find the other central serving; its lines from
        // here on are what its own kill counts.
        other.wait_until_serving().await;
        other.arm();
        println!("kill {} of {} after {trigger:?}", victim.kills + 1, victim.name);
        victim.kill_and_restart(&db).await;
    }
    let kills = centrals.each_ref().map(|c| c.kills);
    println!("{kills:?} kills in {:?}", started.elapsed());
    agencies.check(&data).await;
    assert_eq!(kills, [KILLS, KILLS], "the agencies finished before every kill");
    let [a, b] = centrals;
    for central in [a, b] {
        central.stop().await;
    }
    check_database(&db, dir.path(), &data).await;
}

/// Two centrals and five agencies uploading; once batches are being acknowledged, the database
/// stops at once (as in a crash), central A is killed and restarted while it is down (so it has to
/// wait for the database to open), and the database comes back. The centrals report the
/// failures, the agencies retry and finish: every bet once, one draw, the right winners.
#[tokio::test]
async fn a_database_restart_mid_upload_loses_nothing_and_stores_nothing_twice() {
    let _serial = SERIAL.lock().await;
    let test = "database_restart";
    let Some(db) = common::postgres::test_database(test).await else { return };
    let Some(cluster) = Cluster::regress(test).await else { return };
    let dir = tempfile::tempdir().unwrap();
    let (mut a, a_address) = Central::start("A", &db).await;
    let (mut b, b_address) = Central::start("B", &db).await;
    let data: Vec<AgencyData> =
        (1..=AGENCIES).map(|agency| AgencyData::generate(dir.path(), agency, 6_000)).collect();
    // Paced, so they are still uploading when the database goes down.
    let extra = [
        ("CLI_BATCH_MAXAMOUNT", "20"),
        ("CLI_LOOP_PERIOD", "10ms"),
        ("CLI_CONNECT_TIMEOUT", "120s"),
    ];
    let agencies = Agencies::start(&data, &a_address, &b_address, &extra);
    a.arm();
    b.arm();
    assert!(a.wait_for(Trigger::Acks(10), &agencies.done).await, "agencies finished at once");
    assert!(b.wait_for(Trigger::Acks(10), &agencies.done).await, "agencies finished at once");
    cluster.stop_immediately().await;
    a.kill_and_restart(&db).await;
    // A, restarted while the database is down, keeps trying to open it.
    a.process.wait_for_line("action: database | result: in_progress").await;
    cluster.start().await;
    a.wait_until_serving().await;
    agencies.check(&data).await;
    let lines: Vec<String> = [a.stop().await, b.stop().await].concat();
    let failed_commit = "action: group_commit | result: fail";
    assert!(
        lines.iter().any(|l| l.contains(failed_commit)),
        "{failed_commit} while the database was down: {lines:#?}"
    );
    check_database(&db, dir.path(), &data).await;
}

/// The database goes down while the centrals are running the draw (each one's draw waits for
/// the lock the test holds, then its connection is cut): each central reports the failure and
/// tries again once the database is back, so the agencies, waiting for their winners, get them.
#[tokio::test]
async fn a_database_outage_during_the_draw_delays_it_and_every_agency_gets_its_winners() {
    let _serial = SERIAL.lock().await;
    let test = "draw_outage";
    let Some(db) = common::postgres::test_database(test).await else { return };
    let Some(cluster) = Cluster::regress(test).await else { return };
    let dir = tempfile::tempdir().unwrap();
    let (a, a_address) = Central::start("A", &db).await;
    let (b, b_address) = Central::start("B", &db).await;
    let holder = db.client().await;
    holder.execute("SELECT pg_advisory_lock($1)", &[&DRAW_LOCK]).await.unwrap();
    let data: Vec<AgencyData> =
        (1..=AGENCIES).map(|agency| AgencyData::generate(dir.path(), agency, 500)).collect();
    let agencies = Agencies::start(&data, &a_address, &b_address, &[]);
    // Both centrals' draws waiting for the lock: every agency is ready, no draw recorded yet.
    let waiting = "SELECT count(*) FROM pg_stat_activity
                   WHERE datname = current_database() AND wait_event = 'advisory'";
    let watcher = db.client().await;
    within("both centrals' draws waiting for the lock", async {
        loop {
            let row = watcher.query_one(waiting, &[]).await.unwrap();
            if row.get::<_, i64>(0) == 2 {
                break;
            }
            tokio::task::yield_now().await;
        }
    })
    .await;
    cluster.stop_immediately().await;
    cluster.start().await;
    agencies.check(&data).await;
    let lines: Vec<String> = [a.stop().await, b.stop().await].concat();
    let failed = lines.iter().filter(|l| l.contains("action: sorteo | result: fail")).count();
    assert!(failed >= 2, "each central's draw failed at least once: {lines:#?}");
    let drawn = lines.iter().filter(|l| l.contains("action: sorteo | result: success")).count();
    assert_eq!(drawn, 1, "one central recorded the draw: {lines:#?}");
    check_database(&db, dir.path(), &data).await;
}

/// A central frozen (`SIGSTOP`, as a machine that hangs or drops off the network) in the middle
/// of a group commit holds its agencies' rows locked: the database ends its transaction once it
/// has waited `IDLE_IN_TRANSACTION_TIMEOUT` for it, so the other central takes the agencies over
/// and they finish there.
#[tokio::test]
async fn a_central_frozen_between_statements_of_its_transaction_does_not_stall_the_other() {
    let _serial = SERIAL.lock().await;

    let Some(db) = common::postgres::test_database("frozen_between").await else { return };
    let dir = tempfile::tempdir().unwrap();
    let (mut a, a_address) = Central::start("A", &db).await;
    let (b, b_address) = Central::start("B", &db).await;
    let data: Vec<AgencyData> =
        (1..=AGENCIES).map(|agency| AgencyData::generate(dir.path(), agency, 6_000)).collect();
    // Every agency on A first, so any transaction of a central in the database is A's.
    let extra = [
        ("CLI_BATCH_MAXAMOUNT", "20"),
        ("CLI_READ_TIMEOUT", "2s"),
        ("CLI_CONNECT_TIMEOUT", "120s"),
    ];
    let agencies = Agencies::start_with(&data, |_| format!("{a_address},{b_address}"), &extra);
    let watcher = db.client().await;
    // Once every statement in flight has finished, a central's backend still `active` is one
    // waiting for the rest of its COPY data from the frozen central.
    let busy = "SELECT count(*) FROM pg_stat_activity
                WHERE datname = current_database() AND application_name = 'lottery-server'
                  AND state = 'active' AND wait_event IS DISTINCT FROM 'ClientRead'";
    // Agency rows locked by a transaction caught in the state wanted.
    let locked = "SELECT count(*) FROM agencies g
                  JOIN pg_locks l ON l.locktype = 'transactionid' AND l.transactionid = g.xmax
                       AND l.granted
                  JOIN pg_stat_activity a ON a.pid = l.pid
                  WHERE a.state = $1 AND a.wait_event = 'ClientRead'";
    let state = "idle in transaction";
    let mut tries = 0;
    loop {
        tries += 1;
        a.arm();
        assert!(a.wait_for(Trigger::Acks(1), &agencies.done).await, "agencies finished early");
        a.process.signal("STOP");
        within("A's backends to settle", async {
            while watcher.query_one(busy, &[]).await.unwrap().get::<_, i64>(0) > 0 {
                tokio::task::yield_now().await;
            }
        })
        .await;
        let found = watcher.query_one(locked, &[&state]).await.unwrap().get::<_, i64>(0) > 0;
        if found {
            break;
        }
        a.process.signal("CONT");
        assert!(tries < 200, "A was never caught between statements");
    }
    println!("A frozen between statements after {tries} tries");
    agencies.check(&data).await;
    a.process.signal("CONT");
    let lines: Vec<String> = [a.stop().await, b.stop().await].concat();
    assert_eq!(
        lines.iter().filter(|l| l.contains("action: sorteo | result: success")).count(),
        1,
        "{lines:#?}"
    );
    check_database(&db, dir.path(), &data).await;
}

/// Waits until `sql` (a count) returns more than zero.
async fn until_some(watcher: &tokio_postgres::Client, what: &str, sql: &str) {
    within(what, async {
        while watcher.query_one(sql, &[]).await.unwrap().get::<_, i64>(0) == 0 {
            tokio::task::yield_now().await;
        }
    })
    .await;
}

/// Relation locks of this database on `table`: `granted` or waited for.
fn table_locks(table: &str, granted: bool) -> String {
    format!(
        "SELECT count(*) FROM pg_locks l JOIN pg_class c ON c.oid = l.relation
         WHERE l.database = (SELECT oid FROM pg_database WHERE datname = current_database())
           AND c.relname = '{table}' AND l.granted = {granted}"
    )
}

/// A central frozen (`SIGSTOP`) inside its group's `COPY`, caught there every time: the test
/// holds the `batches` table (`SHARE` mode) so that the group's `COPY` waits for it, holding its
/// agencies' rows; the central is frozen then, and the table released, so the database accepts
/// the `COPY` and waits for its data from a central that sends nothing, with no timeout. The
/// agencies move to the other central, whose `Hello`s wait for their rows and end the frozen
/// transaction once its central has not been heard from for `IDLE_IN_TRANSACTION_TIMEOUT`
/// (`action: fence`): one draw, every bet once, every agency its winners.
#[tokio::test]
async fn a_central_frozen_inside_copy_does_not_stall_the_other() {
    let _serial = SERIAL.lock().await;
    let Some(db) = common::postgres::test_database("frozen_inside_copy").await else { return };
    let dir = tempfile::tempdir().unwrap();
    let (a, a_address) = Central::start("A", &db).await;
    let (b, b_address) = Central::start("B", &db).await;
    let data: Vec<AgencyData> =
        (1..=AGENCIES).map(|agency| AgencyData::generate(dir.path(), agency, 2_000)).collect();
    let mut holder = db.client().await;
    let table = holder.transaction().await.unwrap();
    table.batch_execute("LOCK TABLE batches IN SHARE MODE").await.unwrap();
    // Every agency on A first, so the transaction caught is A's.
    let extra = [
        ("CLI_BATCH_MAXAMOUNT", "100"),
        ("CLI_READ_TIMEOUT", "2s"),
        ("CLI_CONNECT_TIMEOUT", "120s"),
    ];
    let agencies = Agencies::start_with(&data, |_| format!("{a_address},{b_address}"), &extra);
    let watcher = db.client().await;
    until_some(&watcher, "A's COPY waiting for the table", &table_locks("batches", false)).await;
    a.process.signal("STOP");
    table.rollback().await.unwrap();
    // The database took the COPY and waits for its data, A's agency rows locked.
    let inside_copy = "SELECT count(*) FROM agencies g
                       JOIN pg_locks l ON l.locktype = 'transactionid'
                            AND l.transactionid = g.xmax AND l.granted
                       JOIN pg_stat_activity s ON s.pid = l.pid
                       WHERE s.state = 'active' AND s.wait_event = 'ClientRead'
                         AND s.query LIKE 'COPY batches%'";
    until_some(&watcher, "A frozen inside COPY", inside_copy).await;
    agencies.check(&data).await;
    a.process.signal("CONT");
    let lines: Vec<String> = [a.stop().await, b.stop().await].concat();
    let drawn = lines.iter().filter(|l| l.contains("action: sorteo | result: success")).count();
    assert_eq!(drawn, 1, "{lines:#?}");
    let fenced = "action: fence | result: success";
    assert!(lines.iter().any(|l| l.contains(fenced)), "{fenced} in {lines:#?}");
    check_database(&db, dir.path(), &data).await;
}

/// A central killed (`kill -9`) inside the draw itself, caught there every time: its draw waits
/// at the start for the lock groups hold (the test holds it too), then, let go, inserts the
/// `draw` row and waits to record the receipts, for the `receipts` table the test now holds. Killed
/// there, its transaction never commits; restarted, it draws again: one `draw` row, one
/// `sorteo`, every bet once, every agency its winners.
#[tokio::test]
async fn a_central_killed_inside_the_draw_draws_once_when_back() {
    let _serial = SERIAL.lock().await;
    let Some(db) = common::postgres::test_database("killed_inside_draw").await else { return };
    let dir = tempfile::tempdir().unwrap();
    let (mut a, a_address) = Central::start("A", &db).await;
    let data: Vec<AgencyData> =
        (1..=AGENCIES).map(|agency| AgencyData::generate(dir.path(), agency, 500)).collect();
    let groups = db.client().await;
    groups.execute("SELECT pg_advisory_lock_shared($1)", &[&COMMIT_LOCK]).await.unwrap();
    let extra = [("CLI_CONNECT_TIMEOUT", "120s")];
    let agencies = Agencies::start_with(&data, |_| a_address.clone(), &extra);
    let watcher = db.client().await;
    let draw_waits = "SELECT count(*) FROM pg_locks
                      WHERE locktype = 'advisory' AND NOT granted AND mode = 'ExclusiveLock'";
    until_some(&watcher, "the draw waiting for the groups' lock", draw_waits).await;
    let mut holder = db.client().await;
    let table = holder.transaction().await.unwrap();
    table.batch_execute("LOCK TABLE receipts IN ACCESS EXCLUSIVE MODE").await.unwrap();
    groups.execute("SELECT pg_advisory_unlock_shared($1)", &[&COMMIT_LOCK]).await.unwrap();
    // The draw row inserted, not committed; the draw waiting to record the receipts.
    until_some(&watcher, "the draw row inserted", &table_locks("draw", true)).await;
    until_some(&watcher, "the draw recording receipts", &table_locks("receipts", false)).await;
    a.kill_and_restart(&db).await;
    table.rollback().await.unwrap();
    a.wait_until_serving().await;
    agencies.check(&data).await;
    let lines = a.stop().await;
    let drawn = lines.iter().filter(|l| l.contains("action: sorteo | result: success")).count();
    assert_eq!(drawn, 1, "{lines:#?}");
    assert_eq!(restarts(&lines), 1, "{lines:#?}");
    check_database(&db, dir.path(), &data).await;
}

/// How many processes of a central started: its `listen` lines, less one.
fn restarts(lines: &[String]) -> usize {
    lines.iter().filter(|l| l.contains("action: listen | result: success")).count() - 1
}
