//! The agency's run: read the agency file, send it in pipelined batches over a [`Connection`],
//! resume from each new `Welcome` after a broken connection (with jittered backoff, at the next
//! central of the list), declare readiness and receive the winners.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{debug, error, info, warn};

use crate::config::{BetSource, ClientConfig};
use crate::domain::Receipt;

use super::ClientError;
use super::connection::Connection;
use super::failover::{Backoff, Centrals, pause};
use super::pacer::Pacer;
use super::progress::UploadProgress;
use super::reader::{Read, spawn_reader};

/// `future`'s output, or `Cancelled` if `token` is cancelled first.
async fn cancellable<F: Future>(
    token: &CancellationToken,
    future: F,
) -> Result<F::Output, ClientError> {
    token.run_until_cancelled(future).await.ok_or(ClientError::Cancelled)
}

/// What an agency's run did.
#[derive(Debug, Default)]
pub struct Outcome {
    /// The agency's winning documents.
    pub winners: Vec<String>,
    /// Bets acknowledged during this run (bets stored by an earlier run are not counted).
    pub sent_bets: u64,
    /// Each batch's time from being sent to being acknowledged.
    pub ack_latencies: Vec<Duration>,
    /// When the last batch was acknowledged and `ReadyForLottery` went out.
    pub uploaded_at: Option<std::time::Instant>,
    /// Connections that broke and were resumed.
    pub reconnects: u32,
    /// The central's receipt for the agency's bets (it matched the agency's own).
    pub receipt: Option<Receipt>,
    /// The highest batch sequence number acknowledged during this run (0: none yet).
    pub acked_seq: u64,
    /// Times a new session's `Welcome` said the central holds fewer batches than it had
    /// acknowledged (see [`check_resume`]).
    pub acknowledged_lost: u32,
}

/// Runs the agency: uploads every bet of `config.source`, then waits for and returns its winners.
/// Stops early, with `ClientError::Cancelled`, when `token` is cancelled.
///
/// Up to `config.batch_window` batches are in flight at once. When the connection breaks (the
/// central restarts, the network drops, the central cannot write for a moment, or it leaves a
/// wait unanswered for `config.read_timeout`) it reconnects with backoff, to the next central of
/// `config.server_addresses` (round robin; the same one when there is one), and resumes after
/// the bets the central's `Welcome` says it holds, re-reading its file from there. While uploading
/// it gives up when nothing was acknowledged for `config.connect_timeout`; waiting for the draw
/// never counts, only the time the central then stays unreachable after a break does.
///
/// # Errors
/// Any `ClientError`; batches acknowledged before it stay stored at the central.
pub async fn run(config: &ClientConfig, token: &CancellationToken) -> Result<Outcome, ClientError> {
    run_with_progress(config, token, &AtomicU64::new(0)).await
}

/// [`run`], adding every acknowledged bet to `acked_bets` as it goes (for progress displays).
///
/// # Errors
/// As [`run`].
pub async fn run_with_progress(
    config: &ClientConfig,
    token: &CancellationToken,
    acked_bets: &AtomicU64,
) -> Result<Outcome, ClientError> {
    let mut outcome = Outcome::default();
    let total = match &config.source {
        BetSource::File(path) => {
            let path = path.clone();
            tokio::task::spawn_blocking(move || super::progress::count_rows(&path))
                .await
                .unwrap_or(0)
        }
        BetSource::Single(_) => 1,
    };
    let mut progress = UploadProgress::new(total);
    let mut last_progress = Instant::now();
    let mut centrals = Centrals::new(&config.server_addresses);
    let mut backoff = Backoff::new(centrals.len());
    let mut pacer = Pacer::new(config.loop_period);
    loop {
        pacer.step(token).await?;
        let connect = Connection::connect_until(config, &mut centrals, token, &mut last_progress);
        let mut connection = connect.await?;
        check_resume(&connection, &mut outcome);
        let acked_before = outcome.ack_latencies.len();
        let session = session(
            &mut connection,
            config,
            token,
            acked_bets,
            &mut outcome,
            &mut progress,
            &mut pacer,
        );
        let error = match session.await {
            Ok(()) => {
                // The pause before exiting; a signal during it ends it early, nothing is lost.
                let _ = pacer.step(token).await;
                return Ok(outcome);
            }
            Err(e) if e.is_transient() => e,
            Err(e) => return Err(e),
        };
        // Once the central confirmed the agency is ready, waiting for the draw is progress.
        if outcome.ack_latencies.len() > acked_before || connection.ready_confirmed() {
            last_progress = Instant::now();
            backoff.reset();
        }
        let waited = last_progress.elapsed();
        if waited >= config.connect_timeout {
            return Err(ClientError::Stalled { waited, last: Box::new(error) });
        }
        outcome.reconnects += 1;
        // The connection broke: the next attempt goes to the next central of the list.
        let (address, next_address) = centrals.advance();
        let pause_for = backoff.next_pause();
        let retry_in_ms = pause_for.as_millis() as u64;
        warn!(action = "reconnect", result = "in_progress", address, next_address, retry_in_ms, error = %error);
        pause(pause_for, token).await?;
    }
}

/// Says loudly when a new session's `Welcome` starts at or before a batch the central had
/// acknowledged in this run: acknowledged bets were lost (a database failover to a standby that
/// had not received them, a store wiped). The agency still has them and sends them again from
/// where the `Welcome` says, which repairs the store; the line names both numbers so that the
/// loss is seen, never silent.
fn check_resume(connection: &Connection, outcome: &mut Outcome) {
    let next_seq = connection.next_seq();
    if next_seq > outcome.acked_seq {
        return;
    }
    outcome.acknowledged_lost += 1;
    error!(
        action = "resume",
        result = "fail",
        acked_seq = outcome.acked_seq,
        next_seq,
        stored_bets = connection.stored_bets(),
        error = "the central no longer holds batches it acknowledged: acknowledged bets were lost (a database failover to a standby that had not received them?); sending them again",
    );
}

/// Checks that `received` are exactly the agency's own winning documents (`own`, from its file):
/// never another agency's, none left out.
fn check_winners(received: &[String], mut own: Vec<String>) -> Result<(), ClientError> {
    let mut got = received.to_vec();
    got.sort_unstable();
    own.sort_unstable();
    if got == own {
        return Ok(());
    }
    let unknown: Vec<&String> = got.iter().filter(|d| own.binary_search(d).is_err()).collect();
    let example = unknown.first().map_or_else(
        || format!("{} of its own winners left out", own.len().saturating_sub(got.len())),
        |d| (*d).clone(),
    );
    Err(ClientError::WrongWinners {
        expected: own.len(),
        got: got.len(),
        unknown: unknown.len(),
        example,
    })
}

/// Compares the central's receipt with the agency's own (over the valid rows of its file, in
/// order) and logs `recibo`: `success` with the count and digest when they match; `fail` naming
/// both sides when they do not, and `ReceiptMismatch` (exit code 3).
fn check_receipt(own: &Receipt, central: &Receipt) -> Result<(), ClientError> {
    if own == central {
        info!(action = "recibo", result = "success", apuestas = own.bets, sha256 = %own.hex());
        return Ok(());
    }
    error!(
        action = "recibo",
        result = "fail",
        apuestas = own.bets,
        sha256 = %own.hex(),
        apuestas_central = central.bets,
        sha256_central = %central.hex(),
        error = "the central does not hold exactly the rows this agency's file says it sent",
    );
    Err(ClientError::ReceiptMismatch { ours: *own, central: *central })
}

/// One connection's share of the work: the bets the central does not hold yet, with up to
/// `batch_window` batches in flight, then the winners.
async fn session(
    connection: &mut Connection,
    config: &ClientConfig,
    token: &CancellationToken,
    acked_bets: &AtomicU64,
    outcome: &mut Outcome,
    progress: &mut UploadProgress,
    pacer: &mut Pacer,
) -> Result<(), ClientError> {
    let mut seq = connection.next_seq();
    let skip = connection.stored_bets();
    let mut batches = spawn_reader(config, skip);
    let window = config.batch_window.get();
    let mut in_flight: VecDeque<(u64, Instant)> = VecDeque::with_capacity(window);
    let mut in_flight_bets = 0u64;
    let mut reading = true;
    // A bad row stops the reading, but the batches before it are still acknowledged first.
    let mut failed = None;
    let first_ack = outcome.ack_latencies.len();
    let mut sent = 0u64;
    let mut own_winners = None;
    loop {
        while reading && in_flight.len() < window {
            let next = if in_flight.is_empty() {
                cancellable(token, batches.recv()).await?
            } else {
                match batches.try_recv() {
                    Ok(batch) => Some(batch),
                    Err(mpsc::error::TryRecvError::Empty) => break,
                    Err(mpsc::error::TryRecvError::Disconnected) => None,
                }
            };
            let batch = match next {
                Some(Ok(Read::Batch(batch))) => batch,
                Some(Ok(Read::End(whole))) => {
                    own_winners = Some(whole);
                    reading = false;
                    break;
                }
                Some(Err(e)) => {
                    failed = Some(e);
                    reading = false;
                    break;
                }
                None => {
                    reading = false;
                    break;
                }
            };
            in_flight_bets += batch.len() as u64;
            pacer.step(token).await?;
            connection.feed_batch(seq, batch).await?;
            if pacer.is_on() {
                cancellable(token, connection.flush()).await??;
            }
            in_flight.push_back((seq, Instant::now()));
            seq += 1;
        }
        cancellable(token, connection.flush()).await??;
        let Some(&(expected, sent_at)) = in_flight.front() else { break };
        let count = cancellable(token, connection.receive_ack(expected)).await??;
        in_flight.pop_front();
        outcome.acked_seq = outcome.acked_seq.max(expected);
        outcome.ack_latencies.push(sent_at.elapsed());
        acked_bets.fetch_add(u64::from(count), Ordering::Relaxed);
        sent += u64::from(count);
        outcome.sent_bets += u64::from(count);
        in_flight_bets = in_flight_bets.saturating_sub(u64::from(count));
        progress.update(skip + sent + in_flight_bets, skip + sent);
        debug!(action = "batch_enviado", result = "success", seq = expected, cantidad = count);
        if let BetSource::Single(bet) = &config.source {
            info!(action = "apuesta_enviada", result = "success", dni = %bet.document, numero = %bet.number);
        }
    }
    progress.finish();
    if let Some(e) = failed {
        return Err(e);
    }
    // This session's latencies, sorted for the percentiles in its upload line.
    let mut latencies = outcome.ack_latencies[first_ack..].to_vec();
    latencies.sort();
    let percentile = |p: usize| {
        let at = (latencies.len() * p / 100).min(latencies.len().saturating_sub(1));
        latencies.get(at).map_or(0.0, |d| d.as_secs_f64() * 1000.0)
    };
    info!(
        action = "upload",
        result = "success",
        batches = seq - 1,
        bets = skip + sent,
        resumed_after = skip,
        ack_p50_ms = format_args!("{:.2}", percentile(50)),
        ack_p99_ms = format_args!("{:.2}", percentile(99)),
        ack_max_ms = format_args!("{:.2}", percentile(100)),
    );
    outcome.uploaded_at = Some(std::time::Instant::now());
    // The reader ends every source it reads whole with its winning documents and receipt.
    let own = own_winners.ok_or(ClientError::ReadIncomplete)?;
    pacer.step(token).await?;
    let wait = connection.wait_for_draw(own.winners.len());
    let waited = cancellable(token, wait).await?;
    // The receipt comes before the winners, and decides first: when the central does not hold
    // exactly this agency's rows, its winners cannot be right either.
    match connection.receipt() {
        Some(central) => {
            outcome.receipt = Some(central);
            check_receipt(&own.receipt, &central)?;
        }
        None if waited.is_ok() => {
            let got = "Winners without a Receipt".to_owned();
            return Err(ClientError::Unexpected { expected: "Receipt", got });
        }
        None => {}
    }
    outcome.winners = waited?;
    check_winners(&outcome.winners, own.winners)?;
    // A whole period from the answer, however long the draw took to come.
    pacer.restart();
    pacer.step(token).await?;
    info!(
        action = "consulta_ganadores",
        result = "success",
        cant_ganadores = outcome.winners.len()
    );
    Ok(())
}
