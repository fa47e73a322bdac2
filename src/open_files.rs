//! The process's limit of open files (`RLIMIT_NOFILE`), raised to what the central may hold.
//!
//! A central holds one socket per connection: up to `LOTTERY_MAX_CONNECTIONS` uploading (or not
//! yet past `Hello`) and one per agency waiting for the draw (`LOTTERY_AGENCIES`: a waiting
//! agency gives its connection place up, see `server/handler.rs`), plus its own files, database
//! connections and the metrics listener. Many systems start processes with a soft limit of 1,024
//! and a much higher hard one; the central raises its soft limit toward the hard one (never
//! above it: raising the hard limit needs privileges) and says so at start, and warns when even
//! the hard limit is short of what it may need.

/// Open files the central keeps besides its agencies' sockets: the bets file and journal,
/// database connections, listeners, standard streams, the runtime's own.
pub const RESERVED: u64 = 64;

/// What [`raise`] found and did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OpenFiles {
    /// The soft limit now in force (`None`: unlimited).
    pub limit: Option<u64>,
    /// The soft limit before (`None`: unlimited).
    pub before: Option<u64>,
    /// What was asked for.
    pub needed: u64,
}

impl OpenFiles {
    /// Whether the limit in force covers what is needed.
    pub fn enough(&self) -> bool {
        self.limit.is_none_or(|limit| limit >= self.needed)
    }
}

/// Raises the soft limit of open files to `needed` if it is lower, up to the hard limit.
/// On systems without the call nothing changes, and the answer says the limit is unknown.
pub fn raise(needed: u64) -> OpenFiles {
    #[cfg(unix)]
    {
        use rustix::process::{Resource, getrlimit, setrlimit};
        let limits = getrlimit(Resource::Nofile);
        let before = limits.current;
        let wanted = match (before, limits.maximum) {
            (Some(soft), _) if soft >= needed => None,
            (Some(_), Some(hard)) => Some(needed.min(hard)),
            (Some(_), None) => Some(needed),
            (None, _) => None,
        };
        let limit = match wanted {
            Some(soft) => {
                let new = rustix::process::Rlimit { current: Some(soft), ..limits };
                match setrlimit(Resource::Nofile, new) {
                    Ok(()) => Some(soft),
                    Err(_) => before,
                }
            }
            None => before,
        };
        OpenFiles { limit, before, needed }
    }
    #[cfg(not(unix))]
    OpenFiles { limit: None, before: None, needed }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_limit_is_never_lowered_and_covers_a_small_need() {
        let small = raise(16);
        assert!(small.enough(), "{small:?}");
        assert_eq!(small.limit, small.before, "no change when it already covers the need");
    }
}
