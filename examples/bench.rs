//! The load benchmark: N agencies upload generated bets to a fresh central on 127.0.0.1, with
//! durable acknowledgements on, through the real client code; the results are verified.
//!
//! ```sh
//! cargo run --release --example bench -- --agencies 10 --bets-per-agency 1000000
//! cargo run --release --example bench -- --agencies 5 --bets-per-agency 15740 --window 1
//! ```
//! Options: `--agencies N` (10), `--bets-per-agency M` (100000), `--batch B` (150),
//! `--window W` (8), `--no-fsync` (measure what durability costs), `--max-connections N` (each
//! central's `LOTTERY_MAX_CONNECTIONS`; fewer than the agencies tests that the draw still
//! comes), `--data-dir DIR`
//! (`target/bench-data`; generated files are reused), `--postgres` (store in a new database on
//! the PostgreSQL server `PGHOST`/`PGPORT`/`PGUSER`/`PGPASSWORD` name, as `pg_virtualenv` sets
//! them; it is dropped afterwards), `--centrals C` (with `--postgres`: C centrals share the
//! database, default 2; agency i lists them starting at central i mod C).
//!
//! ```sh
//! pg_virtualenv -t -o fsync=on cargo run --release --example bench -- --postgres \
//!     --agencies 10 --bets-per-agency 200000
//! ```
//!
//! Each central runs in a child process (this same binary, `--serve`), so its peak RSS is its
//! own. Prints total bets, wall time, bets/s, batch-ack latency p50/p99/max, draw time (last
//! `ReadyForLottery` → last `Winners`), fsyncs, and each central's peak RSS and open files.
//! Exits 1 if any agency's winners or the stored count are wrong, 2 on bad arguments.

use std::io::{BufRead, BufReader, IsTerminal, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use lottery::client::{self, Outcome};
use lottery::config::{ClientConfig, ServerConfig};
use lottery::datagen;
use tokio_util::sync::CancellationToken;

// The binaries' allocator, so the figures are theirs.
lottery::use_mimalloc!();

struct Args {
    agencies: u32,
    bets: usize,
    batch: usize,
    window: usize,
    fsync: bool,
    data_dir: PathBuf,
    postgres: bool,
    centrals: usize,
    /// `LOTTERY_MAX_CONNECTIONS` of each central; `None`: the default.
    max_connections: Option<usize>,
}

fn parse_args() -> Result<Args, String> {
    let mut args = Args {
        agencies: 10,
        bets: 100_000,
        batch: 150,
        window: 8,
        fsync: true,
        data_dir: PathBuf::from("target/bench-data"),
        postgres: false,
        centrals: 0,
        max_connections: None,
    };
    let mut words = std::env::args().skip(1);
    while let Some(word) = words.next() {
        let mut value = |name: &str| words.next().ok_or_else(|| format!("{name} needs a value"));
        let number = |name: &str, text: String| {
            text.parse::<usize>()
                .ok()
                .filter(|n| *n > 0)
                .ok_or_else(|| format!("{name} {text:?} is not a whole number of 1 or more"))
        };
        match word.as_str() {
            "--agencies" => args.agencies = number("--agencies", value("--agencies")?)? as u32,
            "--bets-per-agency" => {
                args.bets = number("--bets-per-agency", value("--bets-per-agency")?)?
            }
            "--batch" => args.batch = number("--batch", value("--batch")?)?,
            "--window" => args.window = number("--window", value("--window")?)?,
            "--no-fsync" => args.fsync = false,
            "--data-dir" => args.data_dir = PathBuf::from(value("--data-dir")?),
            "--postgres" => args.postgres = true,
            "--centrals" => args.centrals = number("--centrals", value("--centrals")?)?,
            "--max-connections" => {
                let name = "--max-connections";
                args.max_connections = Some(number(name, value(name)?)?);
            }
            other => return Err(format!("unknown argument {other:?}")),
        }
    }
    match (args.postgres, args.centrals) {
        (false, 0 | 1) => args.centrals = 1,
        (false, _) => {
            return Err("--centrals needs --postgres: one central owns a bets file".into());
        }
        (true, 0) => args.centrals = 2,
        (true, _) => {}
    }
    Ok(args)
}

fn main() -> ExitCode {
    lottery::memory::without_huge_pages();
    if std::env::args().nth(1).as_deref() == Some("--serve") {
        return serve();
    }
    let args = match parse_args() {
        Ok(args) => args,
        Err(e) => {
            eprintln!("bench: {e}");
            return ExitCode::from(2);
        }
    };
    match run(&args) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(e) => {
            eprintln!("bench: {e}");
            ExitCode::FAILURE
        }
    }
}

/// The child: a central configured by the environment; prints its address, then its counters
/// when stdin closes.
fn serve() -> ExitCode {
    let served = tokio::runtime::Runtime::new().map_err(|e| e.to_string()).and_then(|runtime| {
        runtime.block_on(async {
            let config = ServerConfig::from_env().map_err(|e| e.to_string())?;
            lottery::telemetry::init(tracing::Level::INFO, None);
            let listener = lottery::server::bind(&config).map_err(|e| e.to_string())?;
            let address = listener.local_addr().map_err(|e| e.to_string())?;
            println!("LISTENING {address}");
            let token = CancellationToken::new();
            let stop = token.clone();
            std::thread::spawn(move || {
                let _ = std::io::stdin().read_to_end(&mut Vec::new());
                stop.cancel();
            });
            lottery::server::run(listener, config, token).await.map_err(|e| e.to_string())
        })
    });
    match served {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("bench central: {e}");
            ExitCode::FAILURE
        }
    }
}

fn generate(args: &Args) -> Result<Vec<(PathBuf, Vec<String>)>, String> {
    std::fs::create_dir_all(&args.data_dir)
        .map_err(|e| format!("{}: {e}", args.data_dir.display()))?;
    let mut agencies = Vec::new();
    for agency in 1..=args.agencies {
        let path = args.data_dir.join(format!("agency-{agency}-{}.csv", args.bets));
        let rows = || datagen::agency_rows(agency, args.bets, 2026);
        let winners: Vec<String> = rows().filter(|r| r.wins()).map(|r| r.document).collect();
        if !path.exists() {
            let partial = path.with_extension("partial");
            datagen::write_agency_file(&partial, rows()).map_err(|e| e.to_string())?;
            std::fs::rename(&partial, &path).map_err(|e| e.to_string())?;
        }
        agencies.push((path, winners));
    }
    Ok(agencies)
}

fn run(args: &Args) -> Result<bool, String> {
    let started = Instant::now();
    let agencies = generate(args)?;
    let total = u64::from(args.agencies) * args.bets as u64;
    eprintln!(
        "data: {} agencies × {} bets ready in {:.1?}",
        args.agencies,
        args.bets,
        started.elapsed()
    );

    let work = tempfile::tempdir().map_err(|e| e.to_string())?;
    let bets_file = work.path().join("bets.csv");
    let runtime = tokio::runtime::Runtime::new().map_err(|e| e.to_string())?;
    let database = if args.postgres { Some(runtime.block_on(Database::create())?) } else { None };
    let mut centrals = Vec::new();
    for _ in 0..args.centrals {
        let mut env = vec![
            ("SERVER_IP", "127.0.0.1".to_owned()),
            ("SERVER_PORT", "0".to_owned()),
            ("LOTTERY_AGENCIES", args.agencies.to_string()),
            ("BETS_FILE", bets_file.display().to_string()),
            ("LOTTERY_FSYNC", args.fsync.to_string()),
            ("LOTTERY_BATCH_MAX_BETS", args.batch.max(500).to_string()),
            (
                "LOTTERY_MAX_CONNECTIONS",
                args.max_connections.map_or_else(String::new, |n| n.to_string()),
            ),
        ];
        if let Some(database) = &database {
            env.push(("LOTTERY_DATABASE_URL", database.url.clone()));
        }
        // Passed through, to measure what compaction costs (the central's env is cleared).
        if let Ok(bytes) = std::env::var("LOTTERY_JOURNAL_COMPACT_BYTES") {
            env.push(("LOTTERY_JOURNAL_COMPACT_BYTES", bytes));
        }
        centrals.push(Central::start(&env)?);
    }
    let addresses: Vec<String> = centrals.iter().map(|c| c.address.clone()).collect();

    let acked = Arc::new(AtomicU64::new(0));
    let t0 = Instant::now();
    let progress = spawn_progress(acked.clone(), total, t0);
    let pids: Vec<u32> = centrals.iter().map(|c| c.child.id()).collect();
    let descriptors = spawn_fd_sampler(pids);
    let results: Vec<(Result<Outcome, String>, Instant)> = runtime.block_on(async {
        let mut tasks = tokio::task::JoinSet::new();
        for (i, (path, _)) in agencies.iter().enumerate() {
            let first = i % addresses.len();
            let list = [&addresses[first..], &addresses[..first]].concat().join(",");
            let env = [
                ("CLI_ID", (i + 1).to_string()),
                ("CLI_SERVER_ADDRESS", list),
                ("CLI_DATA_FILE", path.display().to_string()),
                ("CLI_BATCH_MAXAMOUNT", args.batch.to_string()),
                ("CLI_BATCH_WINDOW", args.window.to_string()),
            ];
            let config = ClientConfig::from_lookup(|name| {
                env.iter().find(|(k, _)| *k == name).map(|(_, v)| v.clone())
            })
            .map_err(|e| e.to_string());
            let acked = acked.clone();
            tasks.spawn(async move {
                let outcome = match config {
                    Ok(config) => {
                        client::run_with_progress(&config, &CancellationToken::new(), &acked)
                            .await
                            .map_err(|e| e.to_string())
                    }
                    Err(e) => Err(e),
                };
                (i, outcome, Instant::now())
            });
        }
        let mut results: Vec<_> =
            (0..agencies.len()).map(|_| (Err("not run".into()), t0)).collect();
        while let Some(done) = tasks.join_next().await {
            if let Ok((i, outcome, at)) = done {
                results[i] = (outcome, at);
            }
        }
        results
    });
    let wall = t0.elapsed();
    progress.store(u64::MAX, Ordering::Relaxed);
    SAMPLING_DONE.store(true, Ordering::Relaxed);
    let peak_fds = descriptors.join().unwrap_or_default();

    let peaks: Vec<Option<f64>> =
        centrals.iter().map(|c| peak_rss_kib(c.child.id()).map(|k| k as f64 / 1024.0)).collect();
    let counters: Vec<String> = centrals.into_iter().map(Central::stop).collect();

    let mut ok = true;
    let mut latencies = Vec::new();
    let (mut last_upload, mut last_winners) = (t0, t0);
    for (i, ((outcome, done_at), (_, expected))) in results.into_iter().zip(&agencies).enumerate() {
        match outcome {
            Ok(outcome) => {
                if &outcome.winners != expected {
                    eprintln!(
                        "WRONG: agency {} got {} winners, expected {}",
                        i + 1,
                        outcome.winners.len(),
                        expected.len()
                    );
                    ok = false;
                }
                latencies.extend(outcome.ack_latencies);
                last_upload = last_upload.max(outcome.uploaded_at.unwrap_or(done_at));
                last_winners = last_winners.max(done_at);
            }
            Err(e) => {
                eprintln!("FAILED: agency {}: {e}", i + 1);
                ok = false;
            }
        }
    }
    let stored = match &database {
        Some(database) => runtime.block_on(database.count_and_drop())?,
        None => count_lines(&bets_file).map_err(|e| e.to_string())?,
    };
    if stored != total {
        eprintln!("WRONG: the store holds {stored} bets, expected {total}");
        ok = false;
    }
    latencies.sort();
    let at = |p: usize| {
        let i = (latencies.len() * p / 100).min(latencies.len().saturating_sub(1));
        latencies.get(i).map_or(0.0, |d| d.as_secs_f64() * 1000.0)
    };
    let field = |name: &str| {
        let values = counters.iter().map(|line| {
            line.split(" | ")
                .find_map(|f| f.strip_prefix(&format!("{name}: ")))
                .and_then(|v| v.parse::<u64>().ok())
                .unwrap_or(0)
        });
        values.sum::<u64>().to_string()
    };
    let upload = last_upload.duration_since(t0);
    println!("agencies:         {}", args.agencies);
    println!(
        "store:            {}",
        if args.postgres {
            format!("PostgreSQL, {} centrals sharing it", args.centrals)
        } else {
            "bets file + journal".to_owned()
        }
    );
    println!(
        "bets:             {total} (stored {stored}, verified: {})",
        if ok { "yes" } else { "NO" }
    );
    println!("batch / window:   {} / {}", args.batch, args.window);
    let durable = match (args.fsync, args.postgres) {
        (_, true) => "on (COMMIT, synchronous_commit = on)",
        (true, false) => "on (fdatasync)",
        (false, false) => "OFF",
    };
    println!("durable acks:     {durable}");
    println!(
        "wall time:        {:.3} s (first bet sent → last winners received)",
        wall.as_secs_f64()
    );
    println!(
        "upload:           {:.3} s, {:.0} bets/s",
        upload.as_secs_f64(),
        total as f64 / upload.as_secs_f64()
    );
    println!(
        "batch ack:        p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms ({} batches)",
        at(50),
        at(99),
        at(100),
        latencies.len()
    );
    println!(
        "draw:             {:.1} ms (last ReadyForLottery → last Winners)",
        last_winners.duration_since(last_upload).as_secs_f64() * 1000.0
    );
    println!("commits / fsyncs: {} / {}", field("commits"), field("fsyncs"));
    let peaks: Vec<String> =
        peaks.iter().map(|p| p.map_or("unknown".into(), |m| format!("{m:.1} MiB"))).collect();
    println!("central peak RSS: {}", peaks.join(", "));
    let fds: Vec<String> = peak_fds.iter().map(u64::to_string).collect();
    println!("central peak fds: {} (open files, sampled every 20 ms)", fds.join(", "));
    Ok(ok)
}

/// A central child process.
struct Central {
    child: std::process::Child,
    address: String,
    /// Its log's last counters line (`commits: … | fsyncs: …`), once it has stopped.
    counters: std::thread::JoinHandle<String>,
}

impl Central {
    fn start(env: &[(&str, String)]) -> Result<Self, String> {
        let mut child = Command::new(std::env::current_exe().map_err(|e| e.to_string())?)
            .arg("--serve")
            .env_clear()
            .envs(env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .map_err(|e| format!("cannot start the central: {e}"))?;
        let mut lines = BufReader::new(child.stdout.take().ok_or("no stdout")?).lines();
        let address = loop {
            let line = lines.next().ok_or("the central exited")?.map_err(|e| e.to_string())?;
            if let Some(address) = line.strip_prefix("LISTENING ") {
                break address.to_owned();
            }
        };
        // Drain the central's log as it runs (a full pipe would stall it); keep its counters.
        let counters = std::thread::spawn(move || {
            lines
                .map_while(Result::ok)
                .filter(|l| l.contains("fsyncs: "))
                .last()
                .unwrap_or_default()
        });
        Ok(Self { child, address, counters })
    }

    /// Stops it (closing its stdin) and returns its counters line.
    fn stop(mut self) -> String {
        drop(self.child.stdin.take());
        let counters = self.counters.join().unwrap_or_default();
        let _ = self.child.wait();
        counters
    }
}

/// A new database on the PostgreSQL server the `PG*` variables name.
struct Database {
    admin: String,
    name: String,
    url: String,
}

impl Database {
    async fn create() -> Result<Self, String> {
        let var = |k: &str| std::env::var(k).unwrap_or_default();
        if var("PGHOST").is_empty() {
            return Err("--postgres needs PGHOST, PGPORT, PGUSER, PGPASSWORD: run it under \
                        `pg_virtualenv -t -o fsync=on`"
                .into());
        }
        let base = format!(
            "host={} port={} user={} password={}",
            var("PGHOST"),
            var("PGPORT"),
            var("PGUSER"),
            var("PGPASSWORD")
        );
        let name = format!("lottery_bench_{}", std::process::id());
        let admin = format!("{base} dbname=postgres");
        let client = connect(&admin).await?;
        client
            .batch_execute(&format!("CREATE DATABASE {name}"))
            .await
            .map_err(|e| e.to_string())?;
        let fsync = client.query_one("SHOW fsync", &[]).await.map_err(|e| e.to_string())?;
        eprintln!("database {name}: fsync = {}", fsync.get::<_, String>(0));
        Ok(Self { url: format!("{base} dbname={name}"), admin, name })
    }

    /// The bets stored (each batch's count: the `bets` view would decode every row), then the
    /// database dropped.
    async fn count_and_drop(&self) -> Result<u64, String> {
        let client = connect(&self.url).await?;
        let count = "SELECT coalesce(sum(bets), 0)::bigint FROM batches";
        let row = client.query_one(count, &[]).await;
        let stored = row.map_err(|e| e.to_string())?.get::<_, i64>(0);
        drop(client);
        let admin = connect(&self.admin).await?;
        let drop = format!("DROP DATABASE {} WITH (FORCE)", self.name);
        admin.batch_execute(&drop).await.map_err(|e| e.to_string())?;
        Ok(u64::try_from(stored).unwrap_or(0))
    }
}

async fn connect(url: &str) -> Result<tokio_postgres::Client, String> {
    let (client, connection) =
        tokio_postgres::connect(url, tokio_postgres::NoTls).await.map_err(|e| e.to_string())?;
    tokio::spawn(async move {
        let _ = connection.await;
    });
    Ok(client)
}

/// Prints progress until the returned flag is set to `u64::MAX`: a live line on a terminal,
/// a plain line per 10% otherwise.
fn spawn_progress(acked: Arc<AtomicU64>, total: u64, t0: Instant) -> Arc<AtomicU64> {
    let stop = Arc::new(AtomicU64::new(0));
    let done = stop.clone();
    std::thread::spawn(move || {
        let tty = std::io::stderr().is_terminal();
        let mut next_tenth = 1;
        while done.load(Ordering::Relaxed) != u64::MAX {
            std::thread::sleep(Duration::from_millis(if tty { 200 } else { 100 }));
            let n = acked.load(Ordering::Relaxed);
            let rate = n as f64 / t0.elapsed().as_secs_f64().max(1e-9);
            if tty {
                eprint!(
                    "\ruploaded {n}/{total} bets ({:.0}%), {rate:.0} bets/s   ",
                    100.0 * n as f64 / total as f64
                );
                let _ = std::io::stderr().flush();
            } else if n * 10 >= total * next_tenth && next_tenth <= 10 {
                eprintln!("progress: {n}/{total} bets acknowledged, {rate:.0} bets/s");
                next_tenth = n * 10 / total + 1;
            }
        }
        if tty {
            eprintln!();
        }
    });
    stop
}

/// Samples each central's open files every 20 ms until the agencies are done (the progress
/// thread's flag), and returns each one's most.
fn spawn_fd_sampler(pids: Vec<u32>) -> std::thread::JoinHandle<Vec<u64>> {
    std::thread::spawn(move || {
        let mut peaks = vec![0u64; pids.len()];
        let open = |pid: u32| std::fs::read_dir(format!("/proc/{pid}/fd")).map_or(0, |d| d.count());
        loop {
            let mut alive = false;
            for (peak, pid) in peaks.iter_mut().zip(&pids) {
                let n = open(*pid) as u64;
                alive |= n > 0;
                *peak = (*peak).max(n);
            }
            if !alive || SAMPLING_DONE.load(Ordering::Relaxed) {
                return peaks;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    })
}

/// Set once the agencies are done: the fd sampler stops.
static SAMPLING_DONE: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

fn peak_rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

fn count_lines(path: &Path) -> std::io::Result<u64> {
    let mut file = std::fs::File::open(path)?;
    let mut buf = vec![0; 1 << 20];
    let mut lines = 0;
    loop {
        let n = file.read(&mut buf)?;
        if n == 0 {
            return Ok(lines);
        }
        lines += buf[..n].iter().filter(|b| **b == b'\n').count() as u64;
    }
}
