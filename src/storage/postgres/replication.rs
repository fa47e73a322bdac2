//! What the primary reports of its standbys, logged at start (`replication: synchronous |
//! asynchronous | none`): whether an acknowledged batch is on a second server.

/// Whether an acknowledged batch is on a second server: what the primary reports at start.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Replication {
    /// `synchronous_standby_names` is set: a `COMMIT` returns once a standby has its WAL
    /// (`synchronous_commit = on`, which every connection forces).
    Synchronous,
    /// Standbys stream from the server but none is synchronous: a failover may lose what they
    /// had not received yet.
    Asynchronous,
    /// No standby: the server is the one copy.
    None,
}

impl std::fmt::Display for Replication {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Synchronous => "synchronous",
            Self::Asynchronous => "asynchronous",
            Self::None => "none",
        })
    }
}

impl Replication {
    /// What the server reports of its standbys: `synchronous_standby_names` set, or standbys
    /// streaming from it (`pg_stat_replication`), or neither.
    pub(super) async fn read(
        client: &tokio_postgres::Client,
    ) -> Result<Self, tokio_postgres::Error> {
        let names: String =
            client.query_one("SHOW synchronous_standby_names", &[]).await?.try_get(0)?;
        if !names.trim().is_empty() {
            return Ok(Self::Synchronous);
        }
        let standbys: i64 =
            client.query_one("SELECT count(*) FROM pg_stat_replication", &[]).await?.try_get(0)?;
        Ok(if standbys > 0 { Self::Asynchronous } else { Self::None })
    }
}
