//! [`Activity`]: which agencies have a session on this central now, and when each was last
//! heard from here — what the status page shows besides what the store holds.

use std::collections::HashMap;
use std::sync::{Arc, Mutex as StdMutex, PoisonError};
use std::time::{SystemTime, UNIX_EPOCH};

use crate::domain::AgencyId;

/// Agencies' sessions on this central, shared by every connection and the status page.
#[derive(Debug, Default)]
pub(crate) struct Activity(StdMutex<HashMap<AgencyId, Seen>>);

/// What this central saw of one agency.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Seen {
    /// Its connections that said `Hello` and have not ended (a newer one fences an older one,
    /// which may linger for a moment: more than one then).
    pub(crate) sessions: u32,
    /// When it last said `Hello` or had a batch read, in milliseconds since the Unix epoch.
    pub(crate) last_ms: i64,
}

/// An agency's session on this central while it lives: dropping it ends the session.
#[derive(Debug)]
pub(crate) struct Presence {
    activity: Arc<Activity>,
    agency: AgencyId,
}

impl Activity {
    /// `agency` said `Hello` on a connection; the session lasts as long as the [`Presence`].
    pub(crate) fn arrive(self: &Arc<Self>, agency: AgencyId) -> Presence {
        let mut seen = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        let entry = seen.entry(agency).or_default();
        entry.sessions += 1;
        entry.last_ms = now_ms();
        Presence { activity: self.clone(), agency }
    }

    /// `agency` was heard from (a batch read).
    pub(crate) fn touch(&self, agency: AgencyId) {
        let mut seen = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        seen.entry(agency).or_default().last_ms = now_ms();
    }

    /// What this central saw of every agency it heard from.
    pub(crate) fn snapshot(&self) -> HashMap<AgencyId, Seen> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner).clone()
    }
}

impl Drop for Presence {
    fn drop(&mut self) {
        let mut seen = self.activity.0.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(entry) = seen.get_mut(&self.agency) {
            entry.sessions = entry.sessions.saturating_sub(1);
            entry.last_ms = now_ms();
        }
    }
}

/// Now, in milliseconds since the Unix epoch (0 for a clock set before it).
pub(crate) fn now_ms() -> i64 {
    let since = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default();
    i64::try_from(since.as_millis()).unwrap_or(i64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_session_lasts_as_long_as_its_presence() {
        let activity = Arc::new(Activity::default());
        let agency = AgencyId::new(3).unwrap();
        let first = activity.arrive(agency);
        let second = activity.arrive(agency);
        assert_eq!(activity.snapshot()[&agency].sessions, 2);
        drop(first);
        assert_eq!(activity.snapshot()[&agency].sessions, 1);
        drop(second);
        let seen = activity.snapshot()[&agency];
        assert_eq!(seen.sessions, 0);
        assert!(seen.last_ms > 0);
    }
}
