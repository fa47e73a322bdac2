//! [`Status`]: what `/status.json` answers and the page shows, built from the store's record of
//! the lottery, this central's sessions and the draw. Counts, times and names of centrals only:
//! no bettor's name, document or birthdate ever enters it (its types have no field for one).

use std::collections::{HashMap, VecDeque};
use std::time::Instant;

use serde::Serialize;

use super::super::activity::Seen;
use crate::domain::{AgencyId, Draw};
use crate::storage::LotteryRecord;

/// The most agency rows one status carries (the totals count every agency): a page of 100,000
/// rows a second would cost the central more than it tells anyone.
pub(super) const MAX_ROWS: u32 = 1000;

/// Seconds of ingest the chart shows.
pub(super) const RATE_WINDOW: usize = 60;

/// The lottery as the page shows it.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct Status {
    /// Goes up by one each time the status is rebuilt: the page marks what it rendered with it.
    pub(super) version: u64,
    /// `starting` (recovery), `collecting`, `drawn`, `failed` or `stopping`.
    pub(super) phase: &'static str,
    /// This central's name.
    pub(super) central: String,
    /// Whether other centrals share the store: the numbers are then the whole lottery's.
    pub(super) shared_store: bool,
    /// Whether the store answered the last time it was read.
    pub(super) store_reachable: bool,
    /// Why it did not, when it did not.
    pub(super) store_error: Option<String>,
    /// When this status was built, in milliseconds since the Unix epoch.
    pub(super) generated_at_ms: i64,
    pub(super) totals: Totals,
    /// One row per expected agency, in agency order, at most [`MAX_ROWS`].
    pub(super) agencies: Vec<AgencyRow>,
    /// Expected agencies past [`MAX_ROWS`], counted in the totals but without a row.
    pub(super) agencies_not_shown: u32,
    pub(super) rate: Rate,
    pub(super) draw: DrawView,
}

#[derive(Debug, Clone, Default, Serialize)]
pub(super) struct Totals {
    pub(super) agencies_expected: u32,
    pub(super) agencies_connected: u32,
    pub(super) agencies_ready: u32,
    pub(super) bets: u64,
    pub(super) batches: u64,
}

/// One agency.
#[derive(Debug, Clone, Serialize)]
pub(super) struct AgencyRow {
    pub(super) agency: u32,
    /// It has a session on this central now.
    pub(super) connected: bool,
    /// The central that took its last session (a shared store), else none.
    pub(super) central: Option<String>,
    pub(super) bets: u64,
    pub(super) batches: u64,
    pub(super) ready: bool,
    /// When it was last heard from (here or, with a shared store, anywhere), in milliseconds
    /// since the Unix epoch; none before its first `Hello`.
    pub(super) last_activity_ms: Option<i64>,
    /// Its winners, counted, once the draw has run.
    pub(super) winners: Option<usize>,
}

/// Bets stored per second over the last minute, oldest first.
#[derive(Debug, Clone, Default, Serialize)]
pub(super) struct Rate {
    pub(super) per_second: Vec<u64>,
    pub(super) last_minute: u64,
}

/// Where the draw is.
#[derive(Debug, Clone, Default, Serialize)]
pub(super) struct DrawView {
    /// `waiting`, `drawn` or `failed`.
    pub(super) state: &'static str,
    /// Expected agencies not ready yet.
    pub(super) waiting_for: u32,
    /// When it was drawn (the database's record, else when this central published it).
    pub(super) drawn_at_ms: Option<i64>,
    /// The central that recorded it (a shared store).
    pub(super) drawn_by: Option<String>,
    pub(super) bets: Option<u64>,
    pub(super) winners: Option<usize>,
    pub(super) error: Option<String>,
}

/// The draw as this central knows it.
#[derive(Debug, Clone)]
pub(super) enum DrawSeen {
    Pending,
    /// Drawn; when this central first saw it, in milliseconds since the Unix epoch.
    Done(std::sync::Arc<Draw>, i64),
    Failed(String),
}

/// Everything a status is built from.
pub(super) struct Inputs<'a> {
    pub(super) version: u64,
    pub(super) central: &'a str,
    pub(super) shared_store: bool,
    pub(super) expected: u32,
    pub(super) now_ms: i64,
    /// The store's record, or why it could not be read (the last record read is used then).
    pub(super) record: &'a LotteryRecord,
    pub(super) store_error: Option<String>,
    pub(super) seen: &'a HashMap<AgencyId, Seen>,
    pub(super) draw: &'a DrawSeen,
    pub(super) rate: Rate,
}

/// The status these inputs describe.
pub(super) fn build(inputs: &Inputs<'_>) -> Status {
    let records: HashMap<u32, _> =
        inputs.record.agencies.iter().map(|r| (r.agency.get(), r)).collect();
    let drawn = match inputs.draw {
        DrawSeen::Done(draw, _) => Some(draw),
        _ => None,
    };
    let counted = inputs.record.totals;
    let connected = |seen: &Seen| seen.sessions > 0;
    let totals = Totals {
        agencies_expected: inputs.expected,
        agencies_connected: inputs.seen.values().filter(|s| connected(s)).count() as u32,
        agencies_ready: counted.ready,
        bets: counted.bets,
        batches: counted.batches,
    };
    let mut agencies = Vec::new();
    for agency in 1..=inputs.expected.min(MAX_ROWS) {
        let record = records.get(&agency);
        let id = AgencyId::new(agency).ok();
        let seen = id.and_then(|id| inputs.seen.get(&id));
        let progress = record.map(|r| r.progress).unwrap_or_default();
        let connected = seen.is_some_and(connected);
        let heard = [seen.map(|s| s.last_ms), record.and_then(|r| r.active_at_ms)];
        agencies.push(AgencyRow {
            agency,
            connected,
            central: record.and_then(|r| r.central.clone()),
            bets: progress.stored_bets,
            batches: progress.last_seq,
            ready: progress.ready,
            last_activity_ms: heard.into_iter().flatten().max(),
            winners: drawn.zip(id).map(|(draw, id)| draw.winners_for(id).len()),
        });
    }
    let waiting_for = inputs.expected.saturating_sub(totals.agencies_ready);
    let (state, draw) = match inputs.draw {
        DrawSeen::Pending => ("waiting", DrawView { waiting_for, ..DrawView::default() }),
        DrawSeen::Done(draw, seen_at) => {
            let recorded = inputs.record.drawn.clone();
            let view = DrawView {
                waiting_for: 0,
                drawn_at_ms: Some(recorded.as_ref().map_or(*seen_at, |(at, _)| *at)),
                drawn_by: recorded.map(|(_, by)| by),
                bets: Some(draw.bets()),
                winners: Some(draw.total_winners()),
                ..DrawView::default()
            };
            ("drawn", view)
        }
        DrawSeen::Failed(error) => {
            ("failed", DrawView { waiting_for, error: Some(error.clone()), ..DrawView::default() })
        }
    };
    Status {
        version: inputs.version,
        phase: match state {
            "waiting" => "collecting",
            other => other,
        },
        central: inputs.central.to_owned(),
        shared_store: inputs.shared_store,
        store_reachable: inputs.store_error.is_none(),
        store_error: inputs.store_error.clone(),
        generated_at_ms: inputs.now_ms,
        totals,
        agencies,
        agencies_not_shown: inputs.expected.saturating_sub(MAX_ROWS),
        rate: inputs.rate.clone(),
        draw: DrawView { state, ..draw },
    }
}

/// A status before the store is open (start-up recovery) or once the central is stopping.
pub(super) fn placeholder(
    version: u64,
    phase: &'static str,
    central: &str,
    expected: u32,
) -> Status {
    Status {
        version,
        phase,
        central: central.to_owned(),
        shared_store: false,
        store_reachable: false,
        store_error: None,
        generated_at_ms: super::super::activity::now_ms(),
        totals: Totals { agencies_expected: expected, ..Totals::default() },
        agencies: Vec::new(),
        agencies_not_shown: 0,
        rate: Rate::default(),
        draw: DrawView { state: "waiting", waiting_for: expected, ..DrawView::default() },
    }
}

/// The stored-bets total sampled about once a second, for the ingest chart.
#[derive(Debug, Default)]
pub(super) struct RateHistory(VecDeque<(Instant, u64)>);

impl RateHistory {
    /// Records `total` bets stored at `at` and returns the rate over the last minute: bets per
    /// second between consecutive samples.
    pub(super) fn sample(&mut self, at: Instant, total: u64) -> Rate {
        self.0.push_back((at, total));
        while self.0.len() > RATE_WINDOW + 1 {
            self.0.pop_front();
        }
        let samples: Vec<_> = self.0.iter().copied().collect();
        let per_second: Vec<u64> = samples
            .windows(2)
            .map(|pair| {
                let (earlier, later) = (pair[0], pair[1]);
                let seconds = later.0.duration_since(earlier.0).as_secs_f64().max(0.001);
                (later.1.saturating_sub(earlier.1) as f64 / seconds).round() as u64
            })
            .collect();
        let last_minute = match (samples.first(), samples.last()) {
            (Some(first), Some(last)) => last.1.saturating_sub(first.1),
            _ => 0,
        };
        Rate { per_second, last_minute }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::storage::{AgencyProgress, AgencyRecord, RecordTotals};

    fn record(agency: u32, bets: u64, batches: u64, ready: bool) -> AgencyRecord {
        AgencyRecord {
            agency: AgencyId::new(agency).unwrap(),
            progress: AgencyProgress { last_seq: batches, stored_bets: bets, ready },
            central: None,
            active_at_ms: None,
        }
    }

    #[test]
    fn every_expected_agency_has_a_row_and_the_totals_count_them_all() {
        let record = LotteryRecord {
            agencies: vec![record(1, 300, 3, true), record(3, 50, 1, false)],
            totals: RecordTotals { ready: 1, bets: 350, batches: 4 },
            drawn: None,
        };
        let seen = HashMap::from([(AgencyId::new(3).unwrap(), Seen { sessions: 1, last_ms: 7 })]);
        let inputs = Inputs {
            version: 4,
            central: "here",
            shared_store: false,
            expected: 3,
            now_ms: 9,
            record: &record,
            store_error: None,
            seen: &seen,
            draw: &DrawSeen::Pending,
            rate: Rate::default(),
        };
        let status = build(&inputs);
        assert_eq!((status.version, status.phase, status.draw.state), (4, "collecting", "waiting"));
        assert_eq!(status.agencies.len(), 3);
        let rows: Vec<_> = status.agencies.iter().map(|r| (r.bets, r.ready, r.connected)).collect();
        assert_eq!(rows, [(300, true, false), (0, false, false), (50, false, true)]);
        assert_eq!(status.agencies[2].last_activity_ms, Some(7));
        assert_eq!((status.totals.bets, status.totals.batches), (350, 4));
        assert_eq!((status.totals.agencies_ready, status.draw.waiting_for), (1, 2));
        assert_eq!(status.totals.agencies_connected, 1);
    }

    #[test]
    fn past_the_row_cap_agencies_are_counted_from_the_store_without_rows() {
        let record = LotteryRecord {
            totals: RecordTotals { ready: 1, bets: 10, batches: 1 },
            ..LotteryRecord::default()
        };
        let seen = HashMap::new();
        let inputs = Inputs {
            version: 1,
            central: "here",
            shared_store: false,
            expected: MAX_ROWS + 10,
            now_ms: 0,
            record: &record,
            store_error: Some("down".into()),
            seen: &seen,
            draw: &DrawSeen::Pending,
            rate: Rate::default(),
        };
        let status = build(&inputs);
        assert_eq!(status.agencies.len(), MAX_ROWS as usize);
        assert_eq!((status.agencies_not_shown, status.totals.bets), (10, 10));
        assert!(!status.store_reachable);
    }

    #[test]
    fn the_rate_is_bets_per_second_between_samples_over_a_minute() {
        let mut history = RateHistory::default();
        let start = Instant::now();
        assert_eq!(history.sample(start, 0).per_second, Vec::<u64>::new());
        let rate = history.sample(start + Duration::from_secs(1), 500);
        assert_eq!((rate.per_second, rate.last_minute), (vec![500], 500));
        let rate = history.sample(start + Duration::from_secs(3), 1500);
        assert_eq!(rate.per_second, [500, 500]);
        for second in 4..100 {
            history.sample(start + Duration::from_secs(second), 1500);
        }
        let rate = history.sample(start + Duration::from_secs(100), 1600);
        assert_eq!(rate.per_second.len(), RATE_WINDOW);
        assert_eq!((rate.per_second.last(), rate.last_minute), (Some(&100), 100));
    }
}
