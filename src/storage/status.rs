//! [`LotteryRecord`]: the whole lottery as its store holds it, for the status page — every
//! agency's durable progress and, with a store several centrals share, which central each one is
//! on. Counts and names of centrals only: never a bet.

use super::AgencyProgress;
use crate::domain::AgencyId;

/// One agency as the store holds it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AgencyRecord {
    pub agency: AgencyId,
    pub progress: AgencyProgress,
    /// A store several centrals share: the central that took the agency's last session.
    pub central: Option<String>,
    /// A store several centrals share: when the agency was last heard from (its `Hello` or a
    /// stored batch) on any central, in milliseconds since the Unix epoch.
    pub active_at_ms: Option<i64>,
}

/// Every agency the store holds, counted.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RecordTotals {
    /// Agencies ready.
    pub ready: u32,
    pub bets: u64,
    pub batches: u64,
}

/// The whole lottery as its store holds it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LotteryRecord {
    /// The agencies the store has heard of, in agency order, up to the number asked for.
    pub agencies: Vec<AgencyRecord>,
    /// Every agency's, counted.
    pub totals: RecordTotals,
    /// A store several centrals share: when the draw was recorded (milliseconds since the Unix
    /// epoch) and by which central.
    pub drawn: Option<(i64, String)>,
}
