//! What the failover suites share (`tests/postgres_failover.rs`, `tests/postgres_fencing.rs`):
//! seeded kill points, the central's next line of a kind, agencies run as processes, and the
//! checks at the end (every agency's winners, one draw, every bet once).

use std::time::Duration;

use super::postgres::{TestDb, agency_env, exported};
use super::{AgencyData, CLIENT_BIN, Process, sorted};

pub const ACK: &str = "action: apuesta_recibida | result: success";

/// A small seeded generator (splitmix64): the kill points, replayable from the seed.
pub struct SplitMix(pub u64);

impl SplitMix {
    pub fn up_to(&mut self, max: u64) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        (z ^ (z >> 31)) % (max + 1)
    }
}

pub fn chaos_seed() -> u64 {
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
pub async fn next_line(
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
pub fn start_agencies(
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
pub fn check_agencies(results: &[(Option<i32>, Vec<String>)], data: &[AgencyData]) {
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
pub async fn check_database(db: &TestDb, dir: &std::path::Path, data: &[AgencyData]) {
    assert_eq!(db.count("SELECT count(*) FROM draw").await, 1);
    let total: usize = data.iter().map(|d| d.rows.len()).sum();
    assert_eq!(db.count("SELECT count(*) FROM bets").await, total as i64);
    let expected = sorted(data.iter().flat_map(AgencyData::stored_rows).collect());
    assert_eq!(exported(db, dir).await, expected, "each bet exactly once");
}
