//! Prometheus metrics for whoever runs the central: `METRICS_ADDR` (off by default) serves
//! `GET /metrics` in the Prometheus text format, rendered by `metrics-exporter-prometheus`.
//!
//! | metric | kind | labels |
//! |---|---|---|
//! | `lottery_bets_stored_total` | counter | `agency` |
//! | `lottery_bets_rejected_total` | counter | `agency` |
//! | `lottery_batches_total` | counter | `agency`, `result` = stored, duplicate, rejected |
//! | `lottery_connections_open` | gauge | |
//! | `lottery_agencies_ready` | gauge | |
//! | `lottery_draw_done` | gauge (0 or 1) | |
//! | `lottery_batch_ack_seconds` | histogram: batch read → acknowledgement ready | |
//! | `lottery_commit_seconds` | histogram: one group commit's writes and fsyncs | |

use std::time::Duration;

use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{debug, warn};

/// Latency buckets, in seconds: from half a millisecond to a second.
const BUCKETS: [f64; 12] = [0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0];
/// Most bytes of a scrape request read.
const MAX_REQUEST: usize = 8 * 1024;
/// Time a scraper has to send its request.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);

/// Installs the process-wide recorder. `None` (logged) when one is already installed.
pub(super) fn install() -> Option<PrometheusHandle> {
    let builder = PrometheusBuilder::new().set_buckets(&BUCKETS).ok()?;
    match builder.install_recorder() {
        Ok(handle) => Some(handle),
        Err(e) => {
            warn!(action = "metrics", result = "fail", error = %e);
            None
        }
    }
}

/// Serves scrapes on `listener` until `token` is cancelled, each connection a tracked task.
pub(super) async fn serve(
    listener: TcpListener,
    handle: PrometheusHandle,
    tracker: TaskTracker,
    token: CancellationToken,
) {
    loop {
        let accepted = tokio::select! {
            () = token.cancelled() => return,
            accepted = listener.accept() => accepted,
        };
        match accepted {
            Ok((stream, _)) => {
                tracker.spawn(answer(stream, handle.clone()));
            }
            Err(e) => {
                debug!(action = "metrics", result = "fail", error = %e);
                // Like the agencies' accept loop: out of file descriptors must not spin a core.
                if !super::listener::pause_after_accept_error(&e, &token).await {
                    return;
                }
            }
        }
    }
}

async fn answer(mut stream: TcpStream, handle: PrometheusHandle) {
    let mut request = Vec::with_capacity(512);
    let read = tokio::time::timeout(REQUEST_TIMEOUT, async {
        let mut chunk = [0; 1024];
        while !request.windows(4).any(|w| w == b"\r\n\r\n") && request.len() < MAX_REQUEST {
            match stream.read(&mut chunk).await {
                Ok(0) | Err(_) => return false,
                Ok(n) => request.extend_from_slice(&chunk[..n]),
            }
        }
        true
    });
    if !matches!(read.await, Ok(true)) {
        return;
    }
    let scrape = request.starts_with(b"GET /metrics ") || request.starts_with(b"GET / ");
    let response = if scrape {
        handle.run_upkeep();
        let body = handle.render();
        format!(
            "HTTP/1.1 200 OK\r\nContent-Type: text/plain; version=0.0.4\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        )
    } else {
        "HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n".to_owned()
    };
    let _ = tokio::time::timeout(REQUEST_TIMEOUT, stream.write_all(response.as_bytes())).await;
}
