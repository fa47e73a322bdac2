//! Prometheus metrics for whoever runs the central: the HTTP listener (`HTTP_ADDR`, off by
//! default; see `http/`) serves `GET /metrics` in the Prometheus text format, rendered by
//! `metrics-exporter-prometheus` from the recorder [`install`] returns.
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

use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use tracing::warn;

/// Latency buckets, in seconds: from half a millisecond to a second.
const BUCKETS: [f64; 12] = [0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0];

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
