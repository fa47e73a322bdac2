//! [`Shared`]: the state every connection task shares.

use std::sync::{Arc, Mutex as StdMutex};

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
}

impl Shared {
    pub(crate) fn new(config: ServerConfig, store: Arc<Store>, lottery: Arc<Lottery>) -> Self {
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
        }
    }
}
