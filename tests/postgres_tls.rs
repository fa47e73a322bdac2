//! TLS to PostgreSQL, as the connection string's `sslmode` asks (docs/postgres.md, "TLS"): a
//! central started against a `pg_virtualenv` cluster that serves a certificate these tests make
//! (a CA of their own, and a certificate for `localhost` it signs). Run them with
//! `LOTTERY_REQUIRE_POSTGRES=1 pg_virtualenv -t cargo test --test postgres_tls`; without a
//! cluster the tests that need one skip, loudly. They change the cluster's certificate (`ALTER
//! SYSTEM`, then a reload), so they use only a throwaway `pg_virtualenv` cluster.

mod common;

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use common::Process;
use common::postgres::{TestDb, test_database};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::OnceCell;

/// The certificates, in a directory the server can read.
struct Certificates {
    _dir: tempfile::TempDir,
    /// The CA that signed the server's certificate.
    ca: PathBuf,
    /// Another CA, which signed nothing the server has.
    other_ca: PathBuf,
}

type Issuer = rcgen::CertifiedIssuer<'static, rcgen::KeyPair>;

fn ca(name: &str) -> Issuer {
    let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    params.distinguished_name.push(rcgen::DnType::CommonName, name);
    params.key_usages = vec![rcgen::KeyUsagePurpose::KeyCertSign, rcgen::KeyUsagePurpose::CrlSign];
    rcgen::CertifiedIssuer::self_signed(params, rcgen::KeyPair::generate().unwrap()).unwrap()
}

/// Makes the certificates and has the cluster serve the one for `localhost` (once per run).
/// `None` when there is no `pg_virtualenv` cluster (said on stderr; a failure under
/// `LOTTERY_REQUIRE_POSTGRES`).
async fn certificates(test: &str) -> Option<&'static Certificates> {
    static ONCE: OnceCell<Option<Certificates>> = OnceCell::const_new();
    ONCE.get_or_init(|| async {
        let admin = test_database(&format!("tls_{test}")).await?;
        if std::env::var_os("PG_CLUSTER_CONF_ROOT").is_none() {
            assert!(
                std::env::var_os("LOTTERY_REQUIRE_POSTGRES").is_none(),
                "the TLS tests change the server's certificate: run them under pg_virtualenv"
            );
            let message = format!(
                "\n!!! SKIPPED {test}: the TLS tests change the server's certificate, so they \
                 run only on a pg_virtualenv cluster (PG_CLUSTER_CONF_ROOT is unset).\n"
            );
            let _ = std::io::Write::write_all(&mut std::io::stderr(), message.as_bytes());
            return None;
        }
        Some(serve_certificate(&admin).await)
    })
    .await
    .as_ref()
}

async fn serve_certificate(admin: &TestDb) -> Certificates {
    let dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let (ca, other) = (ca("lottery test CA"), ca("another CA"));
    let key = rcgen::KeyPair::generate().unwrap();
    let params = rcgen::CertificateParams::new(vec!["localhost".to_owned()]).unwrap();
    let certificate = params.signed_by(&key, &ca).unwrap();
    let write = |name: &str, text: &str| {
        let path = dir.path().join(name);
        std::fs::write(&path, text).unwrap();
        path
    };
    let (cert_file, key_file) =
        (write("server.crt", &certificate.pem()), write("server.key", &key.serialize_pem()));
    let certs = Certificates {
        ca: write("ca.pem", &ca.pem()),
        other_ca: write("other-ca.pem", &other.pem()),
        _dir: dir,
    };
    // The server reads its key only if it owns it and no one else may read it.
    let client = admin.client().await;
    let data: String = client.query_one("SHOW data_directory", &[]).await.unwrap().get(0);
    let owner = std::fs::metadata(&data).unwrap();
    for file in [&cert_file, &key_file] {
        std::os::unix::fs::chown(file, Some(owner.uid()), Some(owner.gid())).unwrap();
    }
    std::fs::set_permissions(&key_file, std::fs::Permissions::from_mode(0o600)).unwrap();
    let set = |name: &str, value: &Path| format!("ALTER SYSTEM SET {name} = '{}'", value.display());
    for statement in [set("ssl_cert_file", &cert_file), set("ssl_key_file", &key_file)] {
        client.batch_execute(&statement).await.unwrap();
    }
    client.batch_execute("ALTER SYSTEM SET ssl = on").await.unwrap();
    client.batch_execute("SELECT pg_reload_conf()").await.unwrap();
    // The server has reloaded when a new session sees the new file (the postmaster reloads its
    // TLS context with its configuration, before it starts the next session).
    let wanted = cert_file.display().to_string();
    common::within("the server to serve the new certificate", async {
        loop {
            let row = admin.client().await.query_one("SHOW ssl_cert_file", &[]).await.unwrap();
            if row.get::<_, String>(0) == wanted {
                break;
            }
            tokio::task::yield_now().await;
        }
    })
    .await;
    certs
}

/// A central started with `LOTTERY_DATABASE_URL` = `url`.
fn central(url: &str) -> Process {
    let env = [
        ("SERVER_IP", "127.0.0.1".to_owned()),
        ("SERVER_PORT", "0".to_owned()),
        ("LOTTERY_DATABASE_URL", url.to_owned()),
        ("BETS_FILE", "/nonexistent/never-opened.csv".to_owned()),
    ];
    Process::start(common::SERVER_BIN, &env)
}

/// `db`'s connection string on `host` (TCP: a Unix socket has no TLS), with `extra`.
fn url_on(db: &TestDb, host: &str, extra: &str) -> String {
    let host_part = db.url.split(' ').next().unwrap();
    format!("{} {extra}", db.url.replacen(host_part, &format!("host={host}"), 1))
}

/// Starts a central on `url` and checks it opened `db` over TLS: its own sessions are
/// encrypted, as the server sees them (`pg_stat_ssl`).
async fn opens_encrypted(db: &TestDb, url: &str) {
    let mut central = central(url);
    central.wait_for_line("action: database | result: success").await;
    let encrypted: i64 = db
        .client()
        .await
        .query_one(
            "SELECT count(*) FROM pg_stat_ssl JOIN pg_stat_activity USING (pid)
             WHERE application_name = 'lottery-server' AND datname = $1 AND ssl",
            &[&db.name],
        )
        .await
        .unwrap()
        .get(0);
    assert!(encrypted >= 1, "no encrypted session of the central on {}", db.name);
    central.signal("TERM");
    let (code, lines) = central.finish().await;
    assert_eq!(code, Some(0), "{lines:#?}");
}

/// Starts a central on `url`; it must stop at once (exit 1, no retry) with a line containing
/// every one of `words`. Returns that line.
async fn refused(url: &str, words: &[&str]) -> String {
    let (code, lines) = central(url).finish().await;
    assert_eq!(code, Some(1), "{lines:#?}");
    assert!(
        !lines.iter().any(|l| l.contains("action: database | result: in_progress")),
        "a TLS refusal is not retried: {lines:#?}"
    );
    let failed = common::line_with(&lines, "action: server | result: fail").to_owned();
    for word in words {
        assert!(failed.contains(word), "{word:?} not in {failed}");
    }
    let password = url.split("password=").nth(1).and_then(|p| p.split(' ').next());
    if let Some(password) = password {
        assert!(lines.iter().all(|l| !l.contains(password)), "password logged: {lines:#?}");
    }
    failed
}

#[tokio::test]
async fn require_encrypts_without_checking_the_certificate() {
    let Some(_) = certificates("require").await else { return };
    let Some(db) = test_database("tls_require").await else { return };
    // No root is given: the test CA is nowhere the central could trust it.
    opens_encrypted(&db, &url_on(&db, "localhost", "sslmode=require")).await;
    // The default, prefer, takes TLS when the server offers it (as libpq does).
    opens_encrypted(&db, &url_on(&db, "localhost", "")).await;
}

#[tokio::test]
async fn verify_full_connects_with_the_right_root_and_host_name() {
    let Some(certs) = certificates("verify_full").await else { return };
    let Some(db) = test_database("tls_verify_full").await else { return };
    let root = format!("sslrootcert={}", certs.ca.display());
    opens_encrypted(&db, &url_on(&db, "localhost", &format!("sslmode=verify-full {root}"))).await;
    // verify-ca checks the chain only: another name for the same server passes.
    opens_encrypted(&db, &url_on(&db, "127.0.0.1", &format!("sslmode=verify-ca {root}"))).await;
}

#[tokio::test]
async fn verify_full_refuses_a_wrong_root_or_host_name_at_once() {
    let Some(certs) = certificates("verify_full_refuses").await else { return };
    let Some(db) = test_database("tls_refused").await else { return };
    let other = format!("sslmode=verify-full sslrootcert={}", certs.other_ca.display());
    refused(
        &url_on(&db, "localhost", &other),
        &["TLS failed", "invalid peer certificate: UnknownIssuer", "check sslmode and sslrootcert"],
    )
    .await;
    // The right root, but the certificate is for localhost, not 127.0.0.1.
    let right = format!("sslmode=verify-full sslrootcert={}", certs.ca.display());
    refused(&url_on(&db, "127.0.0.1", &right), &["TLS failed", "not valid for name", "127.0.0.1"])
        .await;
    // verify-ca with a root that signed nothing of the server's: the chain fails too.
    let other_ca = format!("sslmode=verify-ca sslrootcert={}", certs.other_ca.display());
    refused(&url_on(&db, "127.0.0.1", &other_ca), &["TLS failed", "UnknownIssuer"]).await;
}

/// A server that answers every TLS request with `N` (no TLS), as a PostgreSQL server without
/// `ssl` does; one connection at a time. Returns its port.
async fn server_without_tls() -> u16 {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        while let Ok((mut socket, _)) = listener.accept().await {
            // SSLRequest: length 8, code 80877103.
            let mut request = [0; 8];
            if socket.read_exact(&mut request).await.is_ok()
                && request == [0, 0, 0, 8, 4, 210, 22, 47]
            {
                let _ = socket.write_all(b"N").await;
            }
            // Then whatever follows (a startup message, under prefer) is left unanswered.
            let _ = socket.read(&mut [0; 64]).await;
        }
    });
    port
}

#[tokio::test]
async fn require_against_a_server_without_tls_fails_clearly() {
    let port = server_without_tls().await;
    let url =
        format!("host=127.0.0.1 port={port} user=u password=hunter2 dbname=d sslmode=require");
    refused(&url, &["TLS failed", "server does not support TLS"]).await;
    let url = format!("postgresql://u:hunter2@127.0.0.1:{port}/d?sslmode=verify-full");
    refused(&url, &["TLS failed", "server does not support TLS", "postgresql://u:***@"]).await;
}

#[tokio::test]
async fn a_root_file_that_cannot_be_used_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("missing.pem");
    let url =
        format!("host=127.0.0.1 port=1 sslmode=verify-full sslrootcert={}", missing.display());
    refused(
        &url,
        &[
            "TLS failed",
            &format!("sslrootcert={}: cannot read its certificates", missing.display()),
        ],
    )
    .await;
    let empty = dir.path().join("empty.pem");
    std::fs::write(&empty, "not a certificate\n").unwrap();
    let url = format!("host=127.0.0.1 port=1 sslmode=verify-ca sslrootcert={}", empty.display());
    refused(&url, &[&format!("sslrootcert={} holds no usable certificate", empty.display())]).await;
}

#[tokio::test]
async fn an_unknown_sslmode_is_a_configuration_error_naming_it() {
    let url = "postgresql://u:hunter2@127.0.0.1:1/d?sslmode=verify_full";
    let env = [("LOTTERY_DATABASE_URL", url.to_owned())];
    let (code, lines) = Process::start(common::SERVER_BIN, &env).finish().await;
    assert_eq!(code, Some(2), "{lines:#?}");
    let failed = common::line_with(&lines, "action: config | result: fail");
    assert!(failed.contains(r#"(sslmode="verify_full" is invalid"#), "{failed}");
    assert!(failed.contains("verify-ca or verify-full"), "{failed}");
    assert!(!failed.contains("hunter2"), "{failed}");
}
