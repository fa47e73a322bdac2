//! `lottery-server`: the central. Reads its configuration (flags, environment, `config.ini`), binds, and serves
//! until SIGTERM or Ctrl-C. Exit codes: 0 after a clean shutdown, 1 on a runtime failure, 2 on
//! a bad configuration.
//!
//! `lottery-server --help` lists these subcommands and every setting with its flag, variable and
//! default.
//! `lottery-server export OUTPUT` writes the stored bets (from the bets file or the database the
//! same settings name) to OUTPUT (`-`: standard output) as the original bets file: exit 0 if so;
//! `export --agency K OUTPUT`, agency K's rows only (their SHA-256 is agency K's receipt).
//! `lottery-server verify [BETS_FILE]` checks the bets file and its journal as a start would
//! (every group's rows against their check), changing nothing: exit 0 if whole, 1 naming the
//! first damage.
//! `lottery-server healthcheck [settings…]` instead checks the central the same settings (flags,
//! environment, config file) describe, on 127.0.0.1 or on `SERVER_IP` when that is one address
//! (the container health check): with `HTTP_ADDR`, that its `/readyz` answers 200 (recovery done,
//! the store reachable); else that it answers a protocol `Ping`. Exit 0 if so.

use std::process::ExitCode;

use anyhow::Context;
use lottery::config::{self, ServerConfig};
use lottery::signal::ShutdownSignals;
use lottery::{client, server, telemetry};
use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn};

lottery::use_mimalloc!();

fn main() -> ExitCode {
    lottery::memory::without_huge_pages();
    let rust_log = std::env::var("RUST_LOG").ok();
    let healthcheck_only = std::env::args().nth(1).as_deref() == Some("healthcheck");
    if std::env::args().nth(1).as_deref() == Some("export") {
        return export();
    }
    if std::env::args().nth(1).as_deref() == Some("verify") {
        return verify();
    }
    let loaded = if healthcheck_only {
        // The central's own flags (a compose `command:` repeated in its healthcheck's `test:`).
        let settings = std::iter::once("lottery-server".into()).chain(std::env::args_os().skip(2));
        ServerConfig::load(settings, config::env_lookup)
    } else {
        ServerConfig::load_from_process()
    };
    let config = match loaded {
        Ok(config) => config,
        Err(e) => return ExitCode::from(e.report()),
    };
    if healthcheck_only {
        return healthcheck(&config);
    }
    telemetry::init(config.logging_level, rust_log.as_deref());
    info!(
        action = "config",
        result = "success",
        port = config.port,
        listen_backlog = config.listen_backlog,
        logging_level = %config.logging_level,
        agencies = config.agencies,
        ip = %config.ip,
        bets_file = %config.bets_file.display(),
        batch_max_bets = config.batch_max_bets,
        fsync = config.fsync,
        max_connections = config.max_connections,
        max_pending_hellos = config.max_pending_hellos,
        max_frame_bytes = config.max_frame_bytes,
        hello_timeout = ?config.hello_timeout,
        read_timeout = ?config.read_timeout,
        write_timeout = ?config.write_timeout,
        agency_tokens = config.agency_tokens.as_ref().map_or(0, |t| t.len()),
        max_bets_per_agency = config.max_bets_per_agency,
        min_free_bytes = config.min_free_bytes,
        metrics_agency_labels = config.metrics_agency_labels,
    );
    for (older, current) in &config.deprecated {
        warn!(
            action = "config_deprecated",
            result = "success",
            setting = older,
            use_instead = current,
            note = "the older name still works, for now"
        );
    }
    let result = tokio::runtime::Runtime::new()
        .context("cannot start the Tokio runtime")
        .and_then(|runtime| runtime.block_on(serve(config)));
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            error!(action = "server", result = "fail", error = %chain(&e));
            ExitCode::FAILURE
        }
    }
}

/// The error and its causes, each once (library errors already name their source).
fn chain(error: &anyhow::Error) -> String {
    let mut text = error.to_string();
    for cause in error.chain().skip(1) {
        let cause = cause.to_string();
        if !text.contains(&cause) {
            text = format!("{text}: {cause}");
        }
    }
    text
}

/// `lottery-server export [--agency K] OUTPUT [settings…]`: the stored bets as the original
/// bets file (agency K's only, with `--agency`).
fn export() -> ExitCode {
    let mut args = std::env::args_os().skip(2).peekable();
    let agency = match export_agency(&mut args) {
        Ok(agency) => agency,
        Err(e) => {
            eprintln!("export: {e}");
            return ExitCode::from(2);
        }
    };
    let Some(output) = args.next().filter(|o| !o.to_string_lossy().starts_with("--")) else {
        eprintln!(
            "usage: lottery-server export [--agency K] OUTPUT [settings…]\n\
             writes the stored bets as the original bets file to OUTPUT (- for standard output), \
             reading them from LOTTERY_DATABASE_URL's database, or else BETS_FILE; with \
             --agency K, agency K's rows only, in the order it sent them (their SHA-256 is its \
             receipt)"
        );
        return ExitCode::from(2);
    };
    let settings = std::iter::once("lottery-server".into()).chain(args);
    let config = match ServerConfig::load(settings, config::env_lookup) {
        Ok(config) => config,
        Err(e) => return ExitCode::from(e.report()),
    };
    let output = std::path::PathBuf::from(output);
    let to_stdout = output.as_os_str() == "-";
    if !to_stdout && config.database_url.is_none() && same_file(&output, &config.bets_file) {
        eprintln!("export: {} is the bets file itself; give another OUTPUT", output.display());
        return ExitCode::from(2);
    }
    let run = async {
        if to_stdout {
            let mut out = std::io::BufWriter::new(std::io::stdout().lock());
            server::export(&config, agency, &mut out).await.map_err(anyhow::Error::from)
        } else {
            // Written beside OUTPUT and renamed over it once whole: never a half-written export.
            let mut partial = output.clone().into_os_string();
            partial.push(format!(".partial-{}", std::process::id()));
            let partial = std::path::PathBuf::from(partial);
            let file = std::fs::File::create(&partial)
                .with_context(|| format!("cannot create {}", partial.display()))?;
            let mut out = std::io::BufWriter::new(file);
            let written = server::export(&config, agency, &mut out).await;
            let finished = written.map_err(anyhow::Error::from).and_then(|bytes| {
                let file = out.into_inner().context("cannot write the export")?;
                file.sync_all().context("cannot sync the export")?;
                std::fs::rename(&partial, &output)
                    .with_context(|| format!("cannot rename it to {}", output.display()))?;
                Ok(bytes)
            });
            if finished.is_err() {
                let _ = std::fs::remove_file(&partial);
            }
            finished
        }
    };
    let result = tokio::runtime::Runtime::new()
        .context("cannot start the Tokio runtime")
        .and_then(|runtime| runtime.block_on(run));
    match result {
        Ok(bytes) => {
            eprintln!(
                "action: export | result: success | output: {} | bytes: {bytes}",
                output.display()
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("action: export | result: fail | error: {}", chain(&e));
            ExitCode::FAILURE
        }
    }
}

/// `export`'s `--agency K` (or `--agency=K`), when it comes first: the agency whose rows to
/// export.
fn export_agency(
    args: &mut std::iter::Peekable<impl Iterator<Item = std::ffi::OsString>>,
) -> Result<Option<lottery::domain::AgencyId>, String> {
    let Some(first) = args.peek().map(|a| a.to_string_lossy().into_owned()) else {
        return Ok(None);
    };
    let value = if first == "--agency" {
        args.next();
        args.next().map(|v| v.to_string_lossy().into_owned())
    } else if let Some(value) = first.strip_prefix("--agency=") {
        let value = value.to_owned();
        args.next();
        Some(value)
    } else {
        return Ok(None);
    };
    let value = value.ok_or("--agency needs an agency number (1, 2, …)")?;
    lottery::domain::AgencyId::parse(&value)
        .map(Some)
        .map_err(|e| format!("--agency {value:?}: expected an agency number (1, 2, …): {e}"))
}

/// `lottery-server verify [BETS_FILE] [settings…]`: checks a bets file and its journal without
/// starting a central, changing nothing.
fn verify() -> ExitCode {
    let mut args = std::env::args_os().skip(2).peekable();
    let path = args.next_if(|a| !a.to_string_lossy().starts_with("--"));
    let settings = std::iter::once("lottery-server".into()).chain(args);
    let mut config = match ServerConfig::load(settings, config::env_lookup) {
        Ok(config) => config,
        Err(e) => return ExitCode::from(e.report()),
    };
    if let Some(path) = path {
        config.bets_file = path.into();
    }
    let path = config.bets_file.display().to_string();
    if !config.bets_file.exists() {
        eprintln!(
            "action: verify | result: fail | path: {path} | error: there is no bets file at {path}"
        );
        return ExitCode::FAILURE;
    }
    let started = std::time::Instant::now();
    let result = tokio::runtime::Builder::new_current_thread()
        .build()
        .context("cannot start the Tokio runtime")
        .and_then(|runtime| runtime.block_on(server::verify(&config)).map_err(anyhow::Error::from));
    match result {
        Ok(v) => {
            eprintln!(
                "action: verify | result: success | path: {path} | bytes: {} | bets: {} | \
                 batches: {} | groups_checked: {} | adopted: {} | journal_converted: {} | \
                 cut_bets_bytes: {} | cut_journal_bytes: {} | ready: {} | drawn: {} | ms: {} | \
                 rewritten_bets_bytes: {}",
                v.bytes,
                v.bets,
                v.batches,
                v.groups_checked,
                v.adopted,
                v.journal_converted,
                v.cut_bets_bytes,
                v.cut_journal_bytes,
                v.ready,
                v.drawn,
                started.elapsed().as_millis(),
                v.rewritten_bets_bytes
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("action: verify | result: fail | path: {path} | error: {}", chain(&e));
            ExitCode::FAILURE
        }
    }
}

/// Whether `a` and `b` name the same existing file.
fn same_file(a: &std::path::Path, b: &std::path::Path) -> bool {
    match (std::fs::canonicalize(a), std::fs::canonicalize(b)) {
        (Ok(a), Ok(b)) => a == b,
        _ => false,
    }
}

/// How long the health check waits for its `Pong`.
const HEALTHCHECK_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(3);

/// `lottery-server healthcheck [settings…]`: with the HTTP listener configured, whether the
/// central says it can store (`/readyz`); else whether it answers a protocol `Ping`.
fn healthcheck(config: &ServerConfig) -> ExitCode {
    // Where the central listens: loopback when it listens everywhere, else its own address
    // (`SERVER_IP = server` listens on the container's address only).
    let local = |ip: std::net::IpAddr| match ip {
        ip if !ip.is_unspecified() => ip,
        std::net::IpAddr::V4(_) => std::net::Ipv4Addr::LOCALHOST.into(),
        std::net::IpAddr::V6(_) => std::net::Ipv6Addr::LOCALHOST.into(),
    };
    let http = config.http_addr.filter(|a| a.port() != 0);
    let address = match http {
        Some(http) => std::net::SocketAddr::new(local(http.ip()), http.port()),
        None => std::net::SocketAddr::new(local(config.ip), config.port),
    };
    let check = async {
        let asked = async {
            match http {
                Some(_) => readyz(address).await,
                None => client::ping(&address.to_string()).await.map_err(|e| e.to_string()),
            }
        };
        tokio::time::timeout(HEALTHCHECK_TIMEOUT, asked).await
    };
    let result = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map(|rt| rt.block_on(check));
    let asked = if http.is_some() { "an answer from /readyz" } else { "a Pong" };
    match result {
        Ok(Ok(Ok(()))) => ExitCode::SUCCESS,
        Ok(Ok(Err(e))) => {
            eprintln!("healthcheck: {e}");
            ExitCode::FAILURE
        }
        Ok(Err(_)) => {
            eprintln!("healthcheck: no {asked} from {address} within {HEALTHCHECK_TIMEOUT:?}");
            ExitCode::FAILURE
        }
        Err(e) => {
            eprintln!("healthcheck: cannot start the runtime: {e}");
            ExitCode::FAILURE
        }
    }
}

/// `GET /readyz` at `address`: `Ok` for a `200`, else what the central said.
async fn readyz(address: std::net::SocketAddr) -> Result<(), String> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let fail = |e: std::io::Error| format!("{address}: {e}");
    let mut stream = tokio::net::TcpStream::connect(address).await.map_err(fail)?;
    stream
        .write_all(b"GET /readyz HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        .await
        .map_err(fail)?;
    let mut answer = Vec::new();
    // The answer is a few lines; a central that sends more is not one.
    stream.take(4096).read_to_end(&mut answer).await.map_err(fail)?;
    let answer = String::from_utf8_lossy(&answer);
    if answer.starts_with("HTTP/1.1 200 ") {
        return Ok(());
    }
    let status = answer.lines().next().unwrap_or("no answer");
    let body = answer.split_once("\r\n\r\n").map_or("", |(_, body)| body.trim());
    Err(format!("http://{address}/readyz: {status}: {body}"))
}

async fn serve(config: ServerConfig) -> anyhow::Result<()> {
    // One socket per connection place and one per agency waiting for the draw.
    let sockets = config.max_connections.get() as u64 + u64::from(config.agencies.get());
    let files = lottery::open_files::raise(sockets + lottery::open_files::RESERVED);
    let limit = files.limit.map_or_else(|| "unlimited".to_owned(), |n| n.to_string());
    if files.enough() {
        info!(action = "open_files", result = "success", limit = %limit, needed = files.needed);
    } else {
        warn!(action = "open_files", result = "fail", limit = %limit, needed = files.needed, error = "the hard limit of open files (ulimit -Hn) is below LOTTERY_MAX_CONNECTIONS + LOTTERY_AGENCIES: connections past it are refused by the system; raise it (compose: ulimits.nofile)");
    }
    // Installed before the address is announced: whoever saw it may signal at once.
    let signals = ShutdownSignals::install().context("cannot install signal handlers")?;
    let listener = server::bind(&config)?;
    let address = listener.local_addr().context("cannot read the bound address")?;
    info!(action = "listen", result = "success", address = %address);
    let token = CancellationToken::new();
    signals.cancel_on_signal(token.clone());
    server::run(listener, config, token).await?;
    Ok(())
}
