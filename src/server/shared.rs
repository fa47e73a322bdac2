//! [`Shared`]: the state every connection task shares.

use std::sync::{Arc, Mutex as StdMutex};

use super::activity::Activity;
use super::lottery::Lottery;
use super::newcomers::{Newcomers, Throttle};
use super::registry::Registry;
use super::session::Rules;
use crate::config::ServerConfig;
use crate::storage::Store;

/// State every connection task shares, behind one `Arc`.
#[derive(Debug)]
pub(crate) struct Shared {
    pub(crate) config: ServerConfig,
    pub(crate) rules: Rules,
    pub(crate) store: Arc<Store>,
    pub(crate) registry: Registry,
    pub(crate) newcomers: Arc<Newcomers>,
    /// Connections without `Hello` that ended with an error: one WARN line a second for all.
    pub(crate) stranger_failures: StdMutex<Throttle>,
    pub(crate) lottery: Arc<Lottery>,
    /// Which agencies have a session here, and when each was last heard from (the status page).
    pub(crate) activity: Arc<Activity>,
}

impl Shared {
    pub(crate) fn new(
        config: ServerConfig,
        store: Arc<Store>,
        lottery: Arc<Lottery>,
        activity: Arc<Activity>,
    ) -> Self {
        let rules = Rules::from_config(&config);
        let newcomers = Newcomers::new(config.max_pending_hellos.get());
        Self {
            config,
            rules,
            store,
            registry: Registry::default(),
            newcomers,
            stranger_failures: StdMutex::default(),
            lottery,
            activity,
        }
    }
}
