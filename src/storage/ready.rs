//! [`ReadyFeed`]: what a store several centrals share tells a central of the agencies that
//! became ready on any of them, so its barrier counts them too.
//!
//! The database store's listener puts each agency a `lottery_ready` notification names into the
//! feed's inbox, and marks the inbox *missed* whenever a notification may have been lost (at
//! every (re)connection, or a payload it cannot read): the central then re-reads every ready
//! agency. So one notification costs the central one agency, not a re-read of all of them: at
//! thousands of agencies a re-read per notification would be quadratic.

use std::sync::{Arc, Mutex as StdMutex, PoisonError};
use std::time::Duration;

use tokio::sync::watch;

use crate::domain::AgencyId;

/// How often a central re-reads every ready agency of a shared store, besides the news of its
/// feed: what a lost notification costs at most.
pub const READY_POLL: Duration = Duration::from_secs(1);

/// Most agencies the inbox keeps between two takes; past it, it says *missed* instead.
const INBOX_MAX: usize = 1 << 16;

/// What a central takes from its feed.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct ReadyNews {
    /// Agencies that became ready, as they were told (an agency may appear more than once).
    pub agencies: Vec<AgencyId>,
    /// Some news may have been lost: re-read every ready agency.
    pub missed: bool,
}

/// Where a shared store's listener puts what it hears.
#[derive(Debug)]
pub(crate) struct ReadyInbox {
    news: StdMutex<ReadyNews>,
    changed: watch::Sender<u64>,
}

impl ReadyInbox {
    /// An inbox that starts *missed*: nothing has been heard yet.
    pub(crate) fn new() -> Arc<Self> {
        let news = ReadyNews { agencies: Vec::new(), missed: true };
        Arc::new(Self { news: StdMutex::new(news), changed: watch::channel(0).0 })
    }

    /// `agency` became ready (on some central).
    pub(crate) fn ready(&self, agency: AgencyId) {
        let mut news = self.news.lock().unwrap_or_else(PoisonError::into_inner);
        if news.agencies.len() < INBOX_MAX {
            news.agencies.push(agency);
        } else {
            news.missed = true;
        }
        drop(news);
        self.changed.send_modify(|n| *n += 1);
    }

    /// News may have been lost.
    pub(crate) fn missed(&self) {
        self.news.lock().unwrap_or_else(PoisonError::into_inner).missed = true;
        self.changed.send_modify(|n| *n += 1);
    }

    /// A feed of this inbox.
    pub(crate) fn feed(self: &Arc<Self>) -> ReadyFeed {
        ReadyFeed { changed: self.changed.subscribe(), inbox: self.clone() }
    }
}

/// The agencies that became ready on any central sharing the store, as they are told.
#[derive(Debug)]
pub struct ReadyFeed {
    changed: watch::Receiver<u64>,
    inbox: Arc<ReadyInbox>,
}

impl ReadyFeed {
    /// Waits until there is news (news that came before the last take wakes it once more,
    /// with nothing new to take).
    pub async fn changed(&mut self) {
        // The feed holds the inbox, and with it the sender: the channel never closes.
        let _ = self.changed.changed().await;
    }

    /// Takes the news so far.
    pub fn take(&self) -> ReadyNews {
        std::mem::take(&mut *self.inbox.news.lock().unwrap_or_else(PoisonError::into_inner))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_feed_hands_each_agency_once_and_says_when_news_was_missed() {
        let inbox = ReadyInbox::new();
        let feed = inbox.feed();
        assert!(feed.take().missed, "nothing heard yet: re-read");
        let (one, two) = (AgencyId::new(1).unwrap(), AgencyId::new(2).unwrap());
        inbox.ready(one);
        inbox.ready(two);
        assert_eq!(feed.take(), ReadyNews { agencies: vec![one, two], missed: false });
        assert_eq!(feed.take(), ReadyNews::default());
        inbox.missed();
        assert!(feed.take().missed);
    }

    #[tokio::test]
    async fn news_wakes_the_feed() {
        let inbox = ReadyInbox::new();
        let mut feed = inbox.feed();
        inbox.ready(AgencyId::new(3).unwrap());
        feed.changed().await;
        assert_eq!(feed.take().agencies, [AgencyId::new(3).unwrap()]);
    }
}
