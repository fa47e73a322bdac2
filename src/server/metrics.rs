//! Prometheus metrics for whoever runs the central: the HTTP listener (`HTTP_ADDR`, off by
//! default; see `http/`) serves `GET /metrics` in the Prometheus text format, rendered by
//! `metrics-exporter-prometheus` from the recorder [`install`] returns.
//!
//! [`METRICS`] is the one table of every metric: its name, type, unit and help (docs/operations.md
//! lists their labels too). The
//! rest of the central records through the small functions below, which name it by its
//! constant, so each name is written once (the commit histogram's in `storage`, which records
//! it). [`install`] describes every metric (`# HELP`, `# TYPE`) and gives each one its first
//! value, so every family is there from the first scrape; [`render`] reads the store's gauges
//! (free bytes, pools) and renders.
//!
//! The `agency` label: with `LOTTERY_AGENCIES` at most `METRICS_AGENCY_LABELS`, the per-agency
//! metrics have one series per agency (six at most each); above it, one series summed over
//! the agencies, and no `lottery_agency_ready`.

use std::sync::OnceLock;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use metrics::{
    Counter, Unit, counter, describe_counter, describe_gauge, describe_histogram, gauge, histogram,
};
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use tracing::warn;

use crate::config::ServerConfig;
use crate::domain::AgencyId;
use crate::protocol::PROTOCOL_VERSION;
use crate::storage::{COMMIT_SECONDS_METRIC, Store};

/// Latency buckets, in seconds: from half a millisecond to two seconds.
const BUCKETS: [f64; 12] = [0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0];

pub(super) const BUILD_INFO: &str = "lottery_build_info";
pub(super) const AGENCIES_EXPECTED: &str = "lottery_agencies_expected";
pub(super) const AGENCIES_READY: &str = "lottery_agencies_ready";
pub(super) const AGENCY_READY: &str = "lottery_agency_ready";
pub(super) const DRAW_DONE: &str = "lottery_draw_done";
pub(super) const BETS_STORED: &str = "lottery_bets_stored_total";
pub(super) const BETS_REJECTED: &str = "lottery_bets_rejected_total";
pub(super) const BATCHES: &str = "lottery_batches_total";
pub(super) const BATCH_ACK_SECONDS: &str = "lottery_batch_ack_seconds";
pub(super) const CONNECTIONS_OPEN: &str = "lottery_connections_open";
pub(super) const CONNECTIONS_REFUSED: &str = "lottery_connections_refused_total";
pub(super) const TOKEN_FAILURES: &str = "lottery_token_failures_total";
pub(super) const FREE_BYTES: &str = "lottery_store_free_bytes";
pub(super) const MIN_FREE_BYTES: &str = "lottery_store_min_free_bytes";
pub(super) const POOL_CONNECTIONS: &str = "lottery_db_pool_connections";
pub(super) const POOL_MAX_CONNECTIONS: &str = "lottery_db_pool_max_connections";
pub(super) const POOL_WAITING: &str = "lottery_db_pool_waiting_tasks";

/// A metric's type, as Prometheus names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Kind {
    Counter,
    Gauge,
    Histogram,
}

/// One row of [`METRICS`].
#[derive(Debug, Clone, Copy)]
pub(super) struct Metric {
    pub(super) name: &'static str,
    pub(super) kind: Kind,
    /// Its unit; the name ends with it (`_seconds`, `_bytes`), as Prometheus's conventions ask.
    pub(super) unit: Option<Unit>,
    pub(super) help: &'static str,
}

const fn metric(name: &'static str, kind: Kind, unit: Option<Unit>, help: &'static str) -> Metric {
    Metric { name, kind, unit, help }
}

/// Every metric the central exports.
pub(super) const METRICS: &[Metric] = &[
    metric(
        BUILD_INFO,
        Kind::Gauge,
        None,
        "Always 1; the labels say which build runs and on which store (file or postgres).",
    ),
    metric(
        AGENCIES_EXPECTED,
        Kind::Gauge,
        Some(Unit::Count),
        "Agencies that must be ready before the draw (LOTTERY_AGENCIES).",
    ),
    metric(
        AGENCIES_READY,
        Kind::Gauge,
        Some(Unit::Count),
        "Agencies this central counts in its draw barrier (with PostgreSQL, those it has heard of).",
    ),
    metric(
        AGENCY_READY,
        Kind::Gauge,
        None,
        "1 once the agency is ready for the draw (only with the agency label).",
    ),
    metric(DRAW_DONE, Kind::Gauge, None, "1 once the draw has run, else 0."),
    metric(
        BETS_STORED,
        Kind::Counter,
        Some(Unit::Count),
        "Bets stored by this central, acknowledged to their agency.",
    ),
    metric(BETS_REJECTED, Kind::Counter, Some(Unit::Count), "Bets in batches refused as invalid."),
    metric(
        BATCHES,
        Kind::Counter,
        Some(Unit::Count),
        "Batches answered, by result: stored, duplicate (a retry), rejected.",
    ),
    metric(
        BATCH_ACK_SECONDS,
        Kind::Histogram,
        Some(Unit::Seconds),
        "Time from a batch read to its acknowledgement ready to send.",
    ),
    metric(
        COMMIT_SECONDS_METRIC,
        Kind::Histogram,
        Some(Unit::Seconds),
        "Time of one group commit: the file store's writes and fsyncs, or PostgreSQL's transaction.",
    ),
    metric(
        CONNECTIONS_OPEN,
        Kind::Gauge,
        Some(Unit::Count),
        "Agency connections open (within LOTTERY_MAX_CONNECTIONS).",
    ),
    metric(
        CONNECTIONS_REFUSED,
        Kind::Counter,
        Some(Unit::Count),
        "Connections refused or closed before a session started, by reason.",
    ),
    metric(
        TOKEN_FAILURES,
        Kind::Counter,
        Some(Unit::Count),
        "Hellos refused for a missing or wrong agency token.",
    ),
    metric(
        FREE_BYTES,
        Kind::Gauge,
        Some(Unit::Bytes),
        "File store: free bytes on the bets file's filesystem at the last group commit (or start).",
    ),
    metric(
        MIN_FREE_BYTES,
        Kind::Gauge,
        Some(Unit::Bytes),
        "File store: the free-space floor below which batches are refused (LOTTERY_MIN_FREE_BYTES).",
    ),
    metric(
        POOL_CONNECTIONS,
        Kind::Gauge,
        Some(Unit::Count),
        "PostgreSQL: connections of each pool (queries, commit), by state: idle or in_use.",
    ),
    metric(
        POOL_MAX_CONNECTIONS,
        Kind::Gauge,
        Some(Unit::Count),
        "PostgreSQL: most connections each pool opens.",
    ),
    metric(
        POOL_WAITING,
        Kind::Gauge,
        Some(Unit::Count),
        "PostgreSQL: tasks waiting for a connection of each pool.",
    ),
];

/// Why a connection was refused, or closed before its session started: the
/// `lottery_connections_refused_total` reasons, a closed set.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Refusal {
    /// Over `LOTTERY_MAX_CONNECTIONS`: told `Busy`.
    ConnectionBudget,
    /// The oldest connection without `Hello`, closed (`Busy`) for a newer one
    /// (`LOTTERY_MAX_PENDING_HELLOS`).
    PendingHellos,
    /// No `Hello` within `LOTTERY_HELLO_TIMEOUT`.
    HelloTimeout,
    /// A first message that is not a `Hello` this central takes: another protocol version, an
    /// agency outside 1..=N, a frame that is not a message, something else first.
    BadHello,
    /// A missing or wrong agency token.
    Token,
}

impl Refusal {
    const ALL: [Refusal; 5] = [
        Self::ConnectionBudget,
        Self::PendingHellos,
        Self::HelloTimeout,
        Self::BadHello,
        Self::Token,
    ];

    /// The `reason` label.
    pub(super) fn label(self) -> &'static str {
        match self {
            Self::ConnectionBudget => "connection_budget",
            Self::PendingHellos => "pending_hellos",
            Self::HelloTimeout => "hello_timeout",
            Self::BadHello => "bad_hello",
            Self::Token => "token",
        }
    }
}

/// Whether the per-agency metrics carry the `agency` label (set by [`start`]).
static AGENCY_LABELS: AtomicBool = AtomicBool::new(false);

/// The process's recorder, installed with every metric described (`# HELP`, `# TYPE`) by the
/// first caller: several centrals in one process (the tests) share it. `None` (logged) when
/// another recorder was installed first.
pub(super) fn recorder() -> Option<PrometheusHandle> {
    static HANDLE: OnceLock<Option<PrometheusHandle>> = OnceLock::new();
    HANDLE.get_or_init(install).clone()
}

fn install() -> Option<PrometheusHandle> {
    let builder = PrometheusBuilder::new().set_buckets(&BUCKETS).ok()?;
    let handle = match builder.install_recorder() {
        Ok(handle) => handle,
        Err(e) => {
            warn!(action = "metrics", result = "fail", error = %e);
            return None;
        }
    };
    for m in METRICS {
        let (name, help) = (m.name, m.help);
        match (m.kind, m.unit) {
            (Kind::Counter, Some(unit)) => describe_counter!(name, unit, help),
            (Kind::Counter, None) => describe_counter!(name, help),
            (Kind::Gauge, Some(unit)) => describe_gauge!(name, unit, help),
            (Kind::Gauge, None) => describe_gauge!(name, help),
            (Kind::Histogram, Some(unit)) => describe_histogram!(name, unit, help),
            (Kind::Histogram, None) => describe_histogram!(name, help),
        }
    }
    Some(handle)
}

/// Gives every metric its first value for a central of `config`, so every family is there from
/// the first scrape (the store's gauges from the store's first [`refresh`]). Called as the HTTP
/// listener starts, before the store opens and the lottery restores the agencies that were ready
/// before a restart: they count.
pub(super) fn start(config: &ServerConfig) {
    let labelled = config.agencies.get() <= config.metrics_agency_labels;
    AGENCY_LABELS.store(labelled, Ordering::Relaxed);
    let store_kind = if config.database_url.is_some() { "postgres" } else { "file" };
    let version = env!("CARGO_PKG_VERSION");
    let protocol_version = PROTOCOL_VERSION.to_string();
    let build = gauge!(BUILD_INFO, "version" => version, "protocol_version" => protocol_version,
        "store" => store_kind);
    build.set(1.0);
    gauge!(AGENCIES_EXPECTED).set(f64::from(config.agencies.get()));
    gauge!(AGENCIES_READY).increment(0.0);
    gauge!(DRAW_DONE).increment(0.0);
    gauge!(CONNECTIONS_OPEN).increment(0.0);
    for refusal in Refusal::ALL {
        counter!(CONNECTIONS_REFUSED, "reason" => refusal.label()).absolute(0);
    }
    counter!(TOKEN_FAILURES).absolute(0);
    if !labelled {
        counter!(BETS_STORED).absolute(0);
        counter!(BETS_REJECTED).absolute(0);
        for result in ["stored", "duplicate", "rejected"] {
            counter!(BATCHES, "result" => result).absolute(0);
        }
    }
    // Registered: rendered (empty) before their first sample.
    let _ = histogram!(BATCH_ACK_SECONDS);
    let _ = histogram!(COMMIT_SECONDS_METRIC);
}

/// Every metric rendered: one scrape's body. The store's gauges are as [`refresh`] last read
/// them (the status board does, once a second).
pub(super) fn render(handle: &PrometheusHandle) -> String {
    handle.run_upkeep();
    handle.render()
}

/// Reads the store's gauges: free bytes, the database pools.
pub(super) fn refresh(store: &Store) {
    let gauges = store.gauges();
    if let Some(free) = gauges.free_bytes {
        gauge!(FREE_BYTES).set(free as f64);
    }
    if let Some(floor) = gauges.min_free_bytes {
        gauge!(MIN_FREE_BYTES).set(floor as f64);
    }
    for pool in gauges.pools {
        let in_use = pool.open.saturating_sub(pool.idle);
        gauge!(POOL_CONNECTIONS, "pool" => pool.pool, "state" => "idle").set(pool.idle as f64);
        gauge!(POOL_CONNECTIONS, "pool" => pool.pool, "state" => "in_use").set(in_use as f64);
        gauge!(POOL_MAX_CONNECTIONS, "pool" => pool.pool).set(pool.max as f64);
        gauge!(POOL_WAITING, "pool" => pool.pool).set(pool.waiting as f64);
    }
}

/// The counter `name` of `agency` (with `labels` besides): labelled by agency while
/// `METRICS_AGENCY_LABELS` allows it, else the one series summed over the agencies.
pub(super) fn agency_counter(
    name: &'static str,
    agency: AgencyId,
    labels: &[(&'static str, &'static str)],
) -> Counter {
    let mut all = Vec::with_capacity(labels.len() + 1);
    if AGENCY_LABELS.load(Ordering::Relaxed) {
        all.push(metrics::Label::new("agency", agency.to_string()));
    }
    all.extend(labels.iter().map(|&(key, value)| metrics::Label::new(key, value)));
    counter!(name, all)
}

/// Counts a connection refused, or closed before its session started.
pub(super) fn refused(refusal: Refusal) {
    counter!(CONNECTIONS_REFUSED, "reason" => refusal.label()).increment(1);
}

/// Counts a `Hello` refused for its token.
pub(super) fn token_failure() {
    counter!(TOKEN_FAILURES).increment(1);
}

/// A connection opened (`1.0`) or closed (`-1.0`).
pub(super) fn connections_open(change: f64) {
    gauge!(CONNECTIONS_OPEN).increment(change);
}

/// Records a batch's time from read to acknowledgement.
pub(super) fn batch_acked(elapsed: Duration) {
    histogram!(BATCH_ACK_SECONDS).record(elapsed.as_secs_f64());
}

/// `agency` is ready: `ready` agencies are, in this central's barrier.
pub(super) fn agency_ready(agency: AgencyId, ready: usize) {
    gauge!(AGENCIES_READY).set(ready as f64);
    if AGENCY_LABELS.load(Ordering::Relaxed) {
        gauge!(AGENCY_READY, "agency" => agency.to_string()).set(1.0);
    }
}

/// The draw has run.
pub(super) fn draw_done() {
    gauge!(DRAW_DONE).set(1.0);
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Prometheus's naming conventions: the unit, in its base form, ends the name; a counter's
    /// name ends `_total`; nothing else does; every metric has help; no name twice.
    #[test]
    fn every_metric_is_named_as_prometheus_asks() {
        let mut names = std::collections::HashSet::new();
        for m in METRICS {
            assert!(names.insert(m.name), "{} twice", m.name);
            assert!(m.name.starts_with("lottery_") && !m.help.is_empty(), "{}", m.name);
            let base = m.name.strip_suffix("_total");
            assert_eq!(base.is_some(), m.kind == Kind::Counter, "{}", m.name);
            let base = base.unwrap_or(m.name);
            match m.unit {
                Some(Unit::Seconds) => assert!(base.ends_with("_seconds"), "{}", m.name),
                Some(Unit::Bytes) => assert!(base.ends_with("_bytes"), "{}", m.name),
                Some(Unit::Count) | None => {}
                Some(unit) => {
                    panic!("{}: a unit Prometheus has no base name for: {unit:?}", m.name)
                }
            }
        }
    }

    #[test]
    fn the_operations_doc_lists_every_metric() {
        let doc = include_str!("../../docs/operations.md");
        for m in METRICS {
            assert!(doc.contains(&format!("| `{}`", m.name)), "{} in docs/operations.md", m.name);
        }
    }
}
