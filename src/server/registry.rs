//! The session registry, [`Registry`]: which connection is each agency's session, so an agency
//! has one at a time (the file store's fencing; a shared store fences by epoch as well).

use std::collections::HashMap;
use std::sync::{Arc, Mutex as StdMutex, PoisonError};
use std::time::Duration;

use tokio::sync::{Mutex, OwnedMutexGuard};
use tokio_util::sync::CancellationToken;
use tracing::warn;

use crate::domain::AgencyId;

/// How long a new session of an agency waits for the one it replaces to finish its batch.
const TAKEOVER_TIMEOUT: Duration = Duration::from_secs(10);

/// Which connection is each agency's session. One agency has one live session: a newer
/// connection (after a network cut the old one may linger, half open) fences the older one,
/// whose batch in flight finishes first, so two connections never interleave batches.
#[derive(Debug, Default)]
pub(crate) struct Registry(StdMutex<HashMap<AgencyId, Slot>>);

#[derive(Debug)]
struct Slot {
    /// Held by the live session for as long as it lives.
    lock: Arc<Mutex<()>>,
    holder: Option<CancellationToken>,
}

impl Registry {
    /// Makes the connection with `token` the agency's session: cancels the current one and waits
    /// (up to `TAKEOVER_TIMEOUT`) for it to end. The guard is the session's; `None` when the old
    /// one did not end in time (e.g. stuck writing to a peer that never reads, which the write
    /// timeout ends soon): the store's own lock and sequence checks still keep its batches
    /// apart, so the new session goes ahead.
    pub(crate) async fn claim(
        &self,
        agency: AgencyId,
        token: &CancellationToken,
    ) -> Option<OwnedMutexGuard<()>> {
        let (lock, previous) = {
            let mut slots = self.0.lock().unwrap_or_else(PoisonError::into_inner);
            let slot = slots
                .entry(agency)
                .or_insert_with(|| Slot { lock: Arc::new(Mutex::new(())), holder: None });
            (slot.lock.clone(), slot.holder.replace(token.clone()))
        };
        if let Some(previous) = previous {
            previous.cancel();
        }
        let claimed = tokio::time::timeout(TAKEOVER_TIMEOUT, lock.lock_owned()).await.ok();
        if claimed.is_none() {
            warn!(action = "hello", result = "in_progress", agency = %agency, error = "the previous session did not end in time");
        }
        claimed
    }
}
