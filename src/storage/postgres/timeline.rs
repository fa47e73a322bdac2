//! Every connection the central makes (the pools', the committer's, the ready listener's) goes
//! through [`Hosts`]: the hosts of the connection string tried one by one, in order, each with
//! the same settings, TLS and timeouts, keeping the first that takes writes (as
//! `target_session_attrs=read-write` does) **and is not on an older timeline** than the newest
//! this central has seen for the same database system.
//!
//! A standby promoted by a failover starts a new timeline (its WAL file names begin with it);
//! the old primary, if it comes back as it was (not as a standby), is still writable but on the
//! old timeline: its data stopped at the failover. Without this check a central whose URL lists
//! it first would commit acknowledged bets there, which the promoted server (and every other
//! central) never sees. A refused server counts as one that does not take writes: the next host
//! is tried, and when none is left the connection fails with SQLSTATE 25006 (read-only), which
//! the store treats as a failover in progress (start-up waits, a group is refused with
//! `Storage`, the agencies retry).
//!
//! What a central cannot know on its own: a newer timeline it never reached. So at start-up, and
//! at each start-up retry, it [`survey`](Hosts::survey)s every host of the URL and remembers the
//! newest timeline among those that take writes; after that, every connection it makes raises
//! what it knows. An old primary that comes back before the central has reached the new one
//! (the new one unreachable to it at start-up, or the old one back before any of a running
//! central's connections tried the new one) is taken: see docs/postgres.md; deciding which
//! server is the primary is the failover manager's job (Patroni's leader key).

use std::collections::HashMap;
use std::sync::Mutex as StdMutex;
use std::sync::PoisonError;
use std::sync::atomic::{AtomicBool, Ordering};

use futures::future::BoxFuture;
use tokio_postgres::config::Host;
use tokio_postgres::tls::MakeTlsConnect;
use tokio_postgres::{Client, Config, Socket};
use tokio_postgres_rustls::MakeRustlsConnect;
use tracing::{info, warn};

use super::tls;

/// A connection's I/O half, driven by whoever holds it (the pool's task, the ready listener).
pub(super) type Link =
    tokio_postgres::Connection<Socket, <MakeRustlsConnect as MakeTlsConnect<Socket>>::Stream>;

/// The server's database system identifier and its current timeline, `NULL` on a standby
/// (which `target_session_attrs=read-write` refuses before; without it a standby is used as the
/// driver would, unchecked: it takes no writes anyway). The timeline is the one WAL is inserted
/// on, so a freshly promoted server shows its new one before its end-of-recovery checkpoint
/// (`pg_control_checkpoint()` would still show the old one).
const WHERE_AM_I: &str = "SELECT (SELECT system_identifier FROM pg_control_system()),
    CASE WHEN NOT pg_is_in_recovery()
        THEN ('x' || substr(pg_walfile_name(pg_current_wal_lsn()), 1, 8))::bit(32)::bigint END";

/// A server's place in its database system's history.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Place {
    /// `pg_control_system()`'s identifier: a primary and its standbys share it.
    pub(super) system: i64,
    pub(super) timeline: i64,
}

/// The hosts of the connection string, and the newest timeline seen of each database system.
#[derive(Debug)]
pub(super) struct Hosts {
    /// One configuration per host, in the connection string's order, with how logs show it.
    each: Vec<(String, Config)>,
    tls: tls::Connector,
    /// The newest timeline seen, per system identifier.
    newest: StdMutex<HashMap<i64, i64>>,
    /// Whether a server could not say where it is (said once).
    unfenced: AtomicBool,
}

impl Hosts {
    /// The hosts of `config` (every other setting copied to each), connected with `tls`.
    pub(super) fn new(config: &Config, tls: tls::Connector) -> Self {
        Self {
            each: split(config),
            tls,
            newest: StdMutex::default(),
            unfenced: AtomicBool::new(false),
        }
    }

    /// A connection to the first host that takes writes and is on the newest timeline this
    /// central knows of its database system.
    ///
    /// # Errors
    /// The last host's failure, as the driver reports it; for a host refused for its timeline,
    /// an error with SQLSTATE 25006 naming the host and both timelines.
    pub(super) async fn connect(&self) -> Result<(Client, Link), tokio_postgres::Error> {
        let mut last = None;
        for (host, config) in &self.each {
            let (client, mut link) = match config.connect(self.tls.0.clone()).await {
                Ok(connected) => connected,
                Err(e) => {
                    last = Some(e);
                    continue;
                }
            };
            let place = match where_am_i(&client, &mut link).await {
                Ok(Some(place)) => place,
                Ok(None) => return Ok((client, link)),
                Err(e) => match e.as_db_error() {
                    // The server cannot say (a role without the functions, an engine without
                    // them): not fenced, said once, rather than no connection at all.
                    Some(db) => {
                        self.unfenced_once(host, db);
                        return Ok((client, link));
                    }
                    None => {
                        last = Some(e);
                        continue;
                    }
                },
            };
            let Some(newest) = self.behind(host, place) else {
                return Ok((client, link));
            };
            warn!(
                action = "database",
                result = "fail",
                host = %host,
                system_identifier = place.system,
                timeline = place.timeline,
                newest_timeline = newest,
                error = "the server is on an older timeline than another that took writes: an old primary back after a failover; refused, as if it were read-only",
            );
            last = Some(refuse(&client, link, host, place, newest).await);
        }
        // `split` makes at least one configuration, and every one that is not returned sets it.
        Err(last.expect("at least one host was tried"))
    }

    /// Connects to every host at once and remembers the newest timeline among those that take
    /// writes; hosts that cannot be reached, or are standbys, are passed over. With one host
    /// there is nothing to compare: no connection is made.
    pub(super) async fn survey(&self) {
        if self.each.len() < 2 {
            return;
        }
        let places = self.each.iter().map(|(host, config)| async move {
            let (client, mut link) = config.connect(self.tls.0.clone()).await.ok()?;
            let place = where_am_i(&client, &mut link).await.ok()??;
            Some((host, place))
        });
        let mut places: Vec<_> =
            futures::future::join_all(places).await.into_iter().flatten().collect();
        // The newest first: it is the one logged.
        places.sort_by_key(|(_, place)| std::cmp::Reverse(place.timeline));
        for (host, place) in places {
            self.behind(host, place);
        }
    }

    /// Says, the first time only, that a server could not tell its timeline.
    fn unfenced_once(&self, host: &str, db: &tokio_postgres::error::DbError) {
        if self.unfenced.swap(true, Ordering::Relaxed) {
            return;
        }
        let error = format!("{}: {} (SQLSTATE {})", db.severity(), db.message(), db.code().code());
        let consequence =
            "its timeline is not checked: an old primary back after a failover is not told apart";
        warn!(action = "database_timeline", result = "fail", host = %host, error = %error, consequence);
    }

    /// `None` when `place` is on the newest timeline known of its system (which it may raise),
    /// else that newest timeline.
    fn behind(&self, host: &str, place: Place) -> Option<i64> {
        let mut newest = self.newest.lock().unwrap_or_else(PoisonError::into_inner);
        let known = newest.entry(place.system).or_insert(0);
        if place.timeline < *known {
            return Some(*known);
        }
        if place.timeline > *known {
            *known = place.timeline;
            info!(action = "database_timeline", result = "success", host = %host, system_identifier = place.system, timeline = place.timeline);
        }
        None
    }
}

/// Makes every connection of a pool through [`Hosts`].
#[derive(Debug)]
pub(super) struct Connector(pub(super) std::sync::Arc<Hosts>);

impl deadpool_postgres::Connect for Connector {
    fn connect(
        &self,
        _config: &Config,
    ) -> BoxFuture<'_, Result<(Client, tokio::task::JoinHandle<()>), tokio_postgres::Error>> {
        Box::pin(async move {
            let (client, link) = self.0.connect().await?;
            let task = tokio::spawn(async move {
                if let Err(e) = link.await {
                    warn!(target: "deadpool.postgres", "Connection error: {}", e);
                }
            });
            Ok((client, task))
        })
    }
}

/// Runs `query` on `client` while driving its connection (nothing else does yet).
async fn drive<T>(
    link: &mut Link,
    query: impl Future<Output = Result<T, tokio_postgres::Error>>,
) -> Result<T, tokio_postgres::Error> {
    let mut query = std::pin::pin!(query);
    tokio::select! {
        done = &mut query => return done,
        ended = &mut *link => ended?,
    }
    // The connection closed: the query's answer will not come, and it says so.
    query.await
}

/// Where the server is in its history; `None` on a standby.
async fn where_am_i(
    client: &Client,
    link: &mut Link,
) -> Result<Option<Place>, tokio_postgres::Error> {
    let row = drive(link, client.query_one(WHERE_AM_I, &[])).await?;
    let system = row.try_get(0)?;
    Ok(row.try_get::<_, Option<i64>>(1)?.map(|timeline| Place { system, timeline }))
}

/// The refusal of `host` as an error of the driver's, raised by the server itself (the driver's
/// errors cannot be made outside it): SQLSTATE 25006, which the store already treats as a
/// server that does not take writes during a failover.
async fn refuse(
    client: &Client,
    mut link: Link,
    host: &str,
    place: Place,
    newest: i64,
) -> tokio_postgres::Error {
    let message = format!(
        "{host} is on timeline {} of database system {}, older than timeline {newest} this \
         central has seen: an old primary back after a failover, refused",
        place.timeline, place.system
    )
    .replace('\'', "''");
    let raise = format!(
        "DO $fence$ BEGIN RAISE EXCEPTION '%', '{message}' USING ERRCODE = '25006'; END $fence$"
    );
    match drive(&mut link, client.batch_execute(&raise)).await {
        Err(e) => e,
        // `RAISE EXCEPTION` always fails; should the server not, the connection is dropped
        // and the driver's own "connection closed" is the refusal.
        Ok(()) => {
            drop(link);
            let closed = client.simple_query("").await.err();
            // Holds: a client whose connection is gone fails every query without sending it.
            closed.expect("a client without its connection fails")
        }
    }
}

/// One configuration per host of `config` (its `host`/`hostaddr` and its port, or the one port
/// for all), each with every other setting of `config`; `config` itself when the hosts and
/// ports do not pair up (the driver then says why).
fn split(config: &Config) -> Vec<(String, Config)> {
    let (hosts, addrs, ports) = (config.get_hosts(), config.get_hostaddrs(), config.get_ports());
    let count = hosts.len().max(addrs.len());
    let pairs = (hosts.is_empty() || addrs.is_empty() || hosts.len() == addrs.len())
        && (ports.len() <= 1 || ports.len() == count);
    if count == 0 || !pairs {
        return vec![("the database".to_owned(), config.clone())];
    }
    (0..count)
        .map(|i| {
            let mut one = settings(config);
            let port = ports.get(i).or_else(|| ports.first()).copied();
            let mut shown = String::new();
            match hosts.get(i) {
                Some(Host::Tcp(name)) => {
                    one.host(name);
                    shown.push_str(name);
                }
                Some(Host::Unix(path)) => {
                    one.host_path(path);
                    shown.push_str(&path.display().to_string());
                }
                None => {}
            }
            if let Some(addr) = addrs.get(i) {
                one.hostaddr(*addr);
                if shown.is_empty() {
                    shown = addr.to_string();
                }
            }
            if let Some(port) = port {
                one.port(port);
            }
            shown = format!("{shown}:{}", port.unwrap_or(5432));
            (shown, one)
        })
        .collect()
}

/// Every setting of `config` but its hosts and ports.
fn settings(config: &Config) -> Config {
    let mut one = Config::new();
    if let Some(user) = config.get_user() {
        one.user(user);
    }
    if let Some(password) = config.get_password() {
        one.password(password);
    }
    if let Some(dbname) = config.get_dbname() {
        one.dbname(dbname);
    }
    if let Some(options) = config.get_options() {
        one.options(options);
    }
    if let Some(name) = config.get_application_name() {
        one.application_name(name);
    }
    if let Some(timeout) = config.get_connect_timeout() {
        one.connect_timeout(*timeout);
    }
    if let Some(timeout) = config.get_tcp_user_timeout() {
        one.tcp_user_timeout(*timeout);
    }
    if let Some(interval) = config.get_keepalives_interval() {
        one.keepalives_interval(interval);
    }
    if let Some(retries) = config.get_keepalives_retries() {
        one.keepalives_retries(retries);
    }
    one.ssl_mode(config.get_ssl_mode())
        .ssl_negotiation(config.get_ssl_negotiation())
        .keepalives(config.get_keepalives())
        .keepalives_idle(config.get_keepalives_idle())
        .target_session_attrs(config.get_target_session_attrs())
        .channel_binding(config.get_channel_binding())
        .load_balance_hosts(config.get_load_balance_hosts());
    one
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hosts(url: &str) -> Vec<String> {
        let config: Config = url.parse().unwrap();
        split(&config).into_iter().map(|(shown, _)| shown).collect()
    }

    #[test]
    fn each_host_gets_its_own_port_or_the_one_port() {
        let two = "host=pg1,pg2 port=5433,5434 user=u dbname=d target_session_attrs=read-write";
        assert_eq!(hosts(two), ["pg1:5433", "pg2:5434"]);
        assert_eq!(hosts("host=pg1,pg2 port=6000 user=u"), ["pg1:6000", "pg2:6000"]);
        assert_eq!(hosts("postgresql://u:p@pg1:1,pg2:2/d"), ["pg1:1", "pg2:2"]);
        assert_eq!(hosts("host=pg1 user=u"), ["pg1:5432"]);
        // Hosts and ports that do not pair up: left whole, for the driver to refuse.
        assert_eq!(hosts("host=a,b,c port=1,2 user=u"), ["the database"]);
    }

    #[test]
    fn every_other_setting_is_copied_to_each_host() {
        let url = "host=pg1,pg2 port=1,2 user=u password=secret dbname=d options='-c a=b' \
                   application_name=app connect_timeout=7 target_session_attrs=read-write \
                   sslmode=disable keepalives_idle=9";
        let whole: Config = url.parse().unwrap();
        for (_, one) in split(&whole) {
            assert_eq!(one.get_user(), Some("u"));
            assert_eq!(one.get_password(), Some(&b"secret"[..]));
            assert_eq!(one.get_dbname(), Some("d"));
            assert_eq!(one.get_options(), Some("-c a=b"));
            assert_eq!(one.get_application_name(), Some("app"));
            assert_eq!(one.get_connect_timeout(), whole.get_connect_timeout());
            assert_eq!(one.get_target_session_attrs(), whole.get_target_session_attrs());
            assert_eq!(one.get_ssl_mode(), whole.get_ssl_mode());
            assert_eq!(one.get_keepalives_idle(), whole.get_keepalives_idle());
            assert_eq!(one.get_hosts().len(), 1);
            assert_eq!(one.get_ports().len(), 1);
        }
    }

    #[test]
    fn an_older_timeline_of_the_same_system_is_behind() {
        let tls = super::super::tls::connector(&crate::config::DatabaseTls {
            mode: crate::config::SslMode::Disable,
            roots: crate::config::RootCerts::System,
        });
        let Ok(tls) = tls else { return };
        let hosts = Hosts::new(&"host=a user=u".parse().unwrap(), tls);
        let at = |system, timeline| Place { system, timeline };
        assert_eq!(hosts.behind("a", at(7, 1)), None);
        assert_eq!(hosts.behind("b", at(7, 2)), None, "a newer timeline is taken");
        assert_eq!(hosts.behind("a", at(7, 1)), Some(2), "the older one is refused from then on");
        assert_eq!(hosts.behind("b", at(7, 2)), None);
        assert_eq!(hosts.behind("c", at(9, 1)), None, "another system is not compared");
    }
}
