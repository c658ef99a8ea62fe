//! TLS to backends and the authentication plugins backends ask for. Each
//! test starts its own `mariadbd` (with certificates made here, or with
//! MariaDB's ed25519 plugin); the shared server is never reconfigured.
//! Accounts created `REQUIRE SSL` make every connection Tandem opens prove
//! it is encrypted: one in clear would be refused by the server.

use crate::common::mirror::{rows_at, wait_caught_up};
use crate::common::pki::Pki;
use crate::common::server::OwnServer;
use crate::common::*;
use mysql_async::prelude::*;
use mysql_async::Conn;
use mysql_common::constants::CapabilityFlags;
use std::time::Duration;
use tandem::backend::{BackendConn, BackendError};

async fn tls_server(pki: &Pki) -> OwnServer {
    let args = pki.server_args();
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    OwnServer::start(&args, &[]).await
}

async fn as_root(server: &OwnServer, sql: &[&str]) {
    let mut c = Conn::new(server.opts("mysql")).await.unwrap();
    for s in sql {
        c.query_drop(*s).await.unwrap();
    }
    c.disconnect().await.unwrap();
}

/// The backend `url` as Tandem would use it.
fn backend(url: &str) -> Result<tandem::config::BackendConfig, String> {
    let yaml = format!(
        "backends:\n  b:\n    kind: mysql\n    url: \"{url}\"\nmigration:\n  primary: b\nrules: ./rules\n"
    );
    tandem::config::parse(&yaml)
        .map(|c| c.backends["b"].clone())
        .map_err(|e| format!("{e:#}"))
}

/// Connects as the relay's pools do, then as Tandem's own mysql_async
/// connections do; both must agree. Ok: the server's `Ssl_version` (empty
/// in clear).
async fn connect_both_ways(b: &tandem::config::BackendConfig) -> Result<String, String> {
    let relay = BackendConn::connect(
        b,
        CapabilityFlags::CLIENT_PROTOCOL_41 | CapabilityFlags::CLIENT_DEPRECATE_EOF,
        0,
        None,
        Duration::from_secs(10),
    )
    .await;
    let own = async {
        let mut c = tandem::backend::own_conn(tandem::backend::own_opts(b).await).await?;
        let v: Option<(String, String)> = c.query_first("SHOW STATUS LIKE 'Ssl_version'").await?;
        c.disconnect().await?;
        Ok::<_, mysql_async::Error>(v.map(|(_, v)| v).unwrap_or_default())
    }
    .await;
    match (relay, own) {
        (Ok(mut r), Ok(v)) => {
            r.query("DO 1").await.map_err(|e| e.to_string())?;
            assert_eq!(
                r.wire.is_tls(),
                !v.is_empty(),
                "relay and own connections agree"
            );
            Ok(v)
        }
        (Err(a), Err(b)) => Err(format!("relay: {a}; own: {b}")),
        (a, b) => panic!(
            "the relay's and Tandem's own connections disagree: {:?} vs {:?}",
            a.map(|_| ()),
            b
        ),
    }
}

/// Each `ssl-mode` accepts what it should and refuses the rest, alike for
/// the relay's connections and Tandem's own: the server's certificate is
/// for 127.0.0.1 and db.test, signed by `ca`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_ssl_mode_accepts_and_refuses_what_mysql_clients_do() {
    init_logging();
    let pki = Pki::new();
    let server = tls_server(&pki).await;
    as_root(
        &server,
        &[
            "CREATE USER 'tls_app'@'%' IDENTIFIED BY 'tls-pass' REQUIRE SSL",
            "GRANT ALL ON *.* TO 'tls_app'@'%'",
            "CREATE USER 'plain'@'%' IDENTIFIED BY 'plain-pass'",
            "GRANT SELECT ON mysql.* TO 'plain'@'%'",
        ],
    )
    .await;
    let port = server.port;
    let (ca, rogue) = (pki.ca.display(), pki.rogue_ca.display());
    let user = "tls_app:tls-pass";
    for (host, query, expect) in [
        ("127.0.0.1", "ssl-mode=required".to_string(), Ok(())),
        (
            "127.0.0.1",
            format!("ssl-mode=verify-identity&ssl-ca={ca}"),
            Ok(()),
        ),
        (
            "localhost",
            format!("ssl-mode=verify-ca&ssl-ca={ca}"),
            Ok(()),
        ),
        // The certificate is not for `localhost`.
        (
            "localhost",
            format!("ssl-mode=verify-identity&ssl-ca={ca}"),
            Err("certificate"),
        ),
        // Signed by another CA.
        (
            "127.0.0.1",
            format!("ssl-mode=verify-ca&ssl-ca={rogue}"),
            Err("certificate"),
        ),
        // In clear, the server refuses an account that requires SSL.
        ("127.0.0.1", "ssl-mode=disabled".to_string(), Err("1045")),
    ] {
        let b = backend(&format!("mysql://{user}@{host}:{port}/mysql?{query}")).unwrap();
        let got = connect_both_ways(&b).await;
        match (expect, &got) {
            (Ok(()), Ok(v)) => assert!(v.starts_with("TLSv1."), "{host} {query}: {v:?}"),
            (Err(what), Err(e)) => assert!(
                e.matches(what).count() >= 2,
                "{host} {query}: both refusals name {what:?}: {e}"
            ),
            _ => panic!("{host} {query}: expected {expect:?}, got {got:?}"),
        }
    }
    // Tandem's own connections alone (as in `tandem backfill`): verify-ca
    // of a certificate for another name.
    let b = backend(&format!(
        "mysql://{user}@localhost:{port}/mysql?ssl-mode=verify-ca&ssl-ca={ca}"
    ))
    .unwrap();
    let mut c = tandem::backend::own_conn(tandem::backend::own_opts(&b).await)
        .await
        .expect("verify-ca accepts a certificate for another name");
    c.query_drop("DO 1").await.unwrap();
    c.disconnect().await.unwrap();
    // An account without REQUIRE SSL is in clear unless the URL asks.
    let b = backend(&format!("mysql://plain:plain-pass@127.0.0.1:{port}/mysql")).unwrap();
    assert_eq!(connect_both_ways(&b).await, Ok(String::new()));

    // A server that offers no TLS (the shared one): refused, not in clear.
    let b = backend(&format!(
        "mysql://root@{MARIADB_HOST}:{MARIADB_PORT}/mysql?ssl-mode=required"
    ))
    .unwrap();
    let relay = BackendConn::connect(
        &b,
        CapabilityFlags::CLIENT_PROTOCOL_41,
        0,
        None,
        Duration::from_secs(10),
    )
    .await;
    match relay {
        Err(BackendError::Unsupported(m)) => {
            assert!(m.contains("does not offer TLS"), "{m}")
        }
        other => panic!("expected a refusal, got {:?}", other.map(|_| ())),
    }
    assert!(
        tandem::backend::own_conn(tandem::backend::own_opts(&b).await)
            .await
            .is_err()
    );
}

/// Misspelt or incomplete TLS options are configuration errors, never a
/// connection silently left in clear.
#[test]
fn backend_tls_options_are_checked_when_the_config_loads() {
    for (query, says) in [
        ("ssl_mode=verify-ca", "needs ssl-ca"),
        ("ssl-mode=verify-identity", "needs ssl-ca"),
        ("ssl-mode=secure", "not one of disabled, required"),
        ("sslca=/x.pem&ssl-mode=required", "unknown option"),
        ("ssl-ca=/x.pem", "ssl-mode is disabled"),
        (
            "ssl-mode=verify-ca&ssl-ca=/nonexistent/ca.pem",
            "/nonexistent/ca.pem",
        ),
        (
            "ssl-mode=required&ssl-cert=/c.pem",
            "ssl-cert and ssl-key go together",
        ),
    ] {
        let e = backend(&format!("mysql://u@127.0.0.1/db?{query}")).unwrap_err();
        assert!(e.contains(says), "{query}: {e}");
        assert!(e.contains("backends.b.url"), "{query}: {e}");
    }
    let b = backend("mysql://u@127.0.0.1/db?ssl-mode=disabled").unwrap();
    assert!(b.tls.is_none());
}

/// A mirroring Tandem whose two backends accept only TLS logins: the
/// relay's pools, shadow reads, backfill, the applier and verify all
/// connect, so every path that opens a backend connection uses the URL's
/// TLS settings.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_mirror_between_tls_only_backends_copies_mirrors_and_verifies() {
    init_logging();
    let pki = Pki::new();
    let server = tls_server(&pki).await;
    let port = server.port;
    as_root(
        &server,
        &[
            "CREATE USER 'tls_app'@'%' IDENTIFIED BY 'tls-pass' REQUIRE SSL",
            "GRANT ALL ON *.* TO 'tls_app'@'%'",
            "CREATE DATABASE app",
            "CREATE DATABASE app_next",
            "CREATE TABLE app.t (id INT PRIMARY KEY, v VARCHAR(20))",
            "INSERT INTO app.t SELECT seq, CONCAT('row ', seq) FROM seq_1_to_200",
        ],
    )
    .await;
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("rules")).unwrap();
    let ca = pki.ca.display();
    let file = dir.path().join("tandem.yaml");
    std::fs::write(
        &file,
        format!(
            r#"
listen: 127.0.0.1:0
admin: {admin}
users:
  - name: {USER}
    password: {PASSWORD}
backends:
  legacy:
    kind: mysql
    url: "mysql://tls_app:tls-pass@127.0.0.1:{port}/app?ssl-mode=verify-identity&ssl-ca={ca}"
  next:
    kind: mysql
    url: "mysql://tls_app:tls-pass@127.0.0.1:{port}/app_next?ssl-mode=verify-ca&ssl-ca={ca}"
migration:
  primary: legacy
  secondary: next
  journal: {journal}
  reads: shadow
  shadow_sample_percent: 100
rules: {rules}
"#,
            admin = free_addr(),
            journal = dir.path().join("journal").display(),
            rules = dir.path().join("rules").display(),
        ),
    )
    .unwrap();
    let cfg = tandem::config::load(&file).expect("config is valid");
    let running = tandem::server::start(cfg).await.expect("tandem starts");
    let tool = |cmd: &'static str, args: &'static [&'static str]| {
        let file = file.clone();
        tokio::task::spawn_blocking(move || tandem_tool(cmd, &file, args))
    };
    let (code, out, err) = tool("backfill", &["--create-tables"]).await.unwrap();
    assert_eq!(code, 0, "{out}\n{err}");

    let mut c = Conn::new(proxy_builder(running.addr, Some("app")))
        .await
        .unwrap();
    let (_, version): (String, String) = c
        .query_first("SHOW STATUS LIKE 'Ssl_version'")
        .await
        .unwrap()
        .unwrap();
    assert!(version.starts_with("TLSv1."), "{version:?}");
    c.query_drop("UPDATE t SET v = CONCAT(v, '!') WHERE id % 7 = 0")
        .await
        .unwrap();
    c.query_drop("INSERT INTO t VALUES (201, 'through tandem')")
        .await
        .unwrap();
    let mirror = running.shared.mirror.load_full().expect("mirroring");
    wait_caught_up(&mirror).await;
    for i in 1..=5 {
        let rows: Vec<(i32, String)> = c
            .query(format!("SELECT id, v FROM t WHERE id <= {i}"))
            .await
            .unwrap();
        assert_eq!(rows.len(), i);
    }
    assert_eq!(
        rows_at(port, "app", "t").await,
        rows_at(port, "app_next", "t").await
    );
    let (code, out, err) = tool("verify", &[]).await.unwrap();
    assert_eq!(code, 0, "{out}\n{err}");
    // The shadow read compared on a TLS connection to the secondary.
    let shadow = running.shared.shadow.clone();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while shadow.compared.load(std::sync::atomic::Ordering::Relaxed) == 0 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "no shadow read: {}",
            shadow.status_json()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(
        shadow.mismatched.load(std::sync::atomic::Ordering::Relaxed),
        0
    );
    drop(c);
    running.shutdown().await;
}

/// Backends whose accounts use MariaDB's `ed25519` plugin: the relay's
/// connections (through an auth switch) and Tandem's own log in; a wrong
/// password gets the server's refusal.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backend_accounts_on_ed25519_log_in() {
    init_logging();
    let server = OwnServer::start(&[], &[]).await;
    as_root(
        &server,
        &[
            "INSTALL SONAME 'auth_ed25519'",
            "CREATE USER 'ed'@'%' IDENTIFIED VIA ed25519 USING PASSWORD('ed-secret')",
            "GRANT ALL ON *.* TO 'ed'@'%'",
            "CREATE DATABASE app",
        ],
    )
    .await;
    let port = server.port;
    let b = backend(&format!("mysql://ed:ed-secret@127.0.0.1:{port}/app")).unwrap();
    // Many logins: each has a fresh nonce, and one in 256 ends in a zero
    // byte (which mysql_common takes for a terminator; see `own_conn`).
    for _ in 0..300 {
        assert_eq!(connect_both_ways(&b).await, Ok(String::new()));
    }
    let wrong = backend(&format!("mysql://ed:nope@127.0.0.1:{port}/app")).unwrap();
    let e = connect_both_ways(&wrong).await.unwrap_err();
    assert_eq!(e.matches("1045").count(), 2, "{e}");

    let yaml = format!(
        "listen: 127.0.0.1:0\nusers:\n  - name: {USER}\n    password: {PASSWORD}\n\
         backends:\n  b:\n    kind: mysql\n    url: \"mysql://ed:ed-secret@127.0.0.1:{port}/app\"\n\
         migration:\n  primary: b\nrules: ./rules\n"
    );
    let running = tandem::server::start(tandem::config::parse(&yaml).unwrap())
        .await
        .unwrap();
    let mut c = Conn::new(proxy_builder(running.addr, Some("app")))
        .await
        .unwrap();
    let who: String = c
        .query_first("SELECT CURRENT_USER()")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(who, "ed@%");
    drop(c);
    running.shutdown().await;
}
