//! TLS for application connections: offered only when configured, the
//! `mariadb` CLI logs in over it and runs queries, and plain-text logins
//! are refused where the config requires TLS (for everyone, or per user)
//! with the server's own errors. Certificates are made here with openssl.

use crate::common::*;
use mysql_async::prelude::*;
use mysql_async::Conn;
use std::path::{Path, PathBuf};

/// A self-signed certificate for 127.0.0.1 (its own CA) and its key.
fn certificate(dir: &Path, name: &str) -> (PathBuf, PathBuf) {
    let cert = dir.join(format!("{name}.pem"));
    let key = dir.join(format!("{name}.key"));
    let out = std::process::Command::new("openssl")
        .args([
            "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
        ])
        .args(["-subj", &format!("/CN={name}"), "-addext"])
        .arg("subjectAltName=IP:127.0.0.1")
        .arg("-keyout")
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .output()
        .expect("openssl runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    (cert, key)
}

async fn start(name: &str, tls: &str) -> (tandem::server::RunningServer, String) {
    init_logging();
    let db = format!("tandem_{name}");
    fresh_database(&db).await;
    let yaml = format!(
        r#"
listen: 127.0.0.1:0
users:
  - name: {USER}
    password: {PASSWORD}
  - name: secure
    password: s3cure-pass
    require_tls: true
backends:
  legacy:
    kind: mysql
    url: mysql://root@{MARIADB_HOST}:{MARIADB_PORT}/{db}
migration:
  primary: legacy
rules: ./rules
{tls}
"#
    );
    let cfg = tandem::config::parse(&yaml).expect("test config is valid");
    (tandem::server::start(cfg).await.expect("tandem starts"), db)
}

/// The `mariadb` CLI over TLS, verifying the certificate; its stdout.
fn cli(port: u16, user: &str, password: &str, ca: &Path, sql: &str) -> (bool, String) {
    let out = std::process::Command::new("mariadb")
        .args(["-h127.0.0.1", &format!("-P{port}"), &format!("-u{user}")])
        .arg(format!("-p{password}"))
        .arg("--ssl")
        .arg(format!("--ssl-ca={}", ca.display()))
        .arg("--ssl-verify-server-cert")
        .args(["-e", sql])
        .output()
        .expect("mariadb runs");
    (
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_log_in_over_tls_and_plain_text_is_refused_where_required() {
    let dir = tempfile::tempdir().unwrap();
    let (cert, key) = certificate(dir.path(), "tandem");
    let tls = format!(
        "tls:\n  cert: {}\n  key: {}\n",
        cert.display(),
        key.display()
    );
    let (server, db) = start("tls_clients", &tls).await;
    let port = server.addr.port();

    // Over TLS, certificate verified: the session reports its cipher and
    // queries run.
    let (ok, out) = cli(port, USER, PASSWORD, &cert, "status; SELECT 6*7 AS answer");
    assert!(ok, "{out}");
    assert!(out.contains("Cipher in use is"), "{out}");
    assert!(out.contains("42"), "{out}");
    // A user that requires TLS logs in over it ...
    let (ok, out) = cli(port, "secure", "s3cure-pass", &cert, "SELECT 1");
    assert!(ok, "{out}");
    // ... and is refused in plain text, as the server refuses a REQUIRE
    // SSL account.
    let plain = |user: &str, pass: &str| {
        mysql_async::OptsBuilder::default()
            .ip_or_hostname("127.0.0.1")
            .tcp_port(port)
            .user(Some(user))
            .pass(Some(pass))
            .db_name(Some(db.clone()))
            .prefer_socket(false)
    };
    let e = Conn::new(plain("secure", "s3cure-pass")).await.unwrap_err();
    assert!(
        matches!(&e, mysql_async::Error::Server(s) if s.code == 1045),
        "{e}"
    );
    // Others may still use plain text here.
    let mut c = Conn::new(plain(USER, PASSWORD)).await.unwrap();
    let v: Option<i64> = c.query_first("SELECT 1").await.unwrap();
    assert_eq!(v, Some(1));
    c.disconnect().await.unwrap();
    server.shutdown().await;

    // `require: true`: every plain-text login gets MySQL's
    // require_secure_transport error; TLS still works.
    let (server, db) = start("tls_required", &format!("{tls}  require: true\n")).await;
    let port = server.addr.port();
    let opts = mysql_async::OptsBuilder::default()
        .ip_or_hostname("127.0.0.1")
        .tcp_port(port)
        .user(Some(USER))
        .pass(Some(PASSWORD))
        .db_name(Some(db))
        .prefer_socket(false);
    let e = Conn::new(opts).await.unwrap_err();
    assert!(
        matches!(&e, mysql_async::Error::Server(s) if s.code == 3159),
        "{e}"
    );
    let (ok, out) = cli(port, USER, PASSWORD, &cert, "SELECT 1");
    assert!(ok, "{out}");
    server.shutdown().await;
}

/// A certificate swap is a config reload: new logins get the new
/// certificate (a client that trusts only the old one is refused), while
/// a session that logged in over the old one keeps working.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_certificate_swap_reaches_new_logins_and_spares_open_sessions() {
    use std::io::Write;
    init_logging();
    let db = "tandem_tls_swap";
    fresh_database(db).await;
    let dir = tempfile::tempdir().unwrap();
    let (old_cert, old_key) = certificate(dir.path(), "old");
    let (new_cert, new_key) = certificate(dir.path(), "new");
    let live_cert = dir.path().join("live.pem");
    let live_key = dir.path().join("live.key");
    std::fs::copy(&old_cert, &live_cert).unwrap();
    std::fs::copy(&old_key, &live_key).unwrap();
    let path = dir.path().join("tandem.yaml");
    std::fs::write(
        &path,
        format!(
            "listen: 127.0.0.1:0\nadmin: 127.0.0.1:0\nusers:\n  - {{ name: {USER}, password: {PASSWORD} }}\n\
             backends:\n  legacy: {{ kind: mysql, url: \"mysql://root@127.0.0.1:{MARIADB_PORT}/{db}\" }}\n\
             migration: {{ primary: legacy }}\nrules: {}\ntls:\n  cert: {}\n  key: {}\n",
            dir.path().join("rules").display(),
            live_cert.display(),
            live_key.display()
        ),
    )
    .unwrap();
    let server = tandem::server::start(tandem::config::load(&path).unwrap())
        .await
        .unwrap();
    let (port, admin) = (server.addr.port(), server.admin_addr.unwrap());
    // A session over the old certificate, kept open across the swap.
    let mut open = std::process::Command::new("mariadb")
        .args(["-h127.0.0.1", &format!("-P{port}"), &format!("-u{USER}")])
        .arg(format!("-p{PASSWORD}"))
        .arg("--ssl")
        .arg(format!("--ssl-ca={}", old_cert.display()))
        .arg("--ssl-verify-server-cert")
        .arg("--batch")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = open.stdin.take().unwrap();
    writeln!(stdin, "SELECT 'before' AS step;").unwrap();
    stdin.flush().unwrap();
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;

    std::fs::copy(&new_cert, &live_cert).unwrap();
    std::fs::copy(&new_key, &live_key).unwrap();
    let (code, _, body) = http(admin, "POST", "/reload").await;
    assert_eq!(code, 200, "{body}");

    let (ok, out) = cli(port, USER, PASSWORD, &new_cert, "SELECT 1");
    assert!(ok, "a new login with the new certificate: {out}");
    let (ok, out) = cli(port, USER, PASSWORD, &old_cert, "SELECT 1");
    assert!(
        !ok,
        "a client trusting only the old certificate got in: {out}"
    );
    writeln!(stdin, "SELECT 'after' AS step;").unwrap();
    drop(stdin);
    let out = tokio::task::spawn_blocking(move || open.wait_with_output().unwrap())
        .await
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(text.contains("before") && text.contains("after"), "{text}");
    server.shutdown().await;
}

/// PyMySQL (a pure-Python driver on Python's own TLS) logs in over TLS
/// with the certificate verified, negotiates TLS 1.2 or later, and runs
/// queries; asked for nothing newer than TLS 1.1 it is refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pymysql_logs_in_over_tls() {
    let dir = tempfile::tempdir().unwrap();
    let (cert, key) = certificate(dir.path(), "tandem");
    let tls = format!(
        "tls:\n  cert: {}\n  key: {}\n  require: true\n",
        cert.display(),
        key.display()
    );
    let (server, db) = start("tls_pymysql", &tls).await;
    let script = r#"
import pymysql, ssl, sys
port, ca, user, password, db = int(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4], sys.argv[5]
c = pymysql.connect(host="127.0.0.1", port=port, user=user, password=password, database=db, ssl={"ca": ca})
print("version", c._sock.version())
cur = c.cursor()
cur.execute("SELECT 6*7")
print("answer", cur.fetchone()[0])
c.close()
ctx = ssl.create_default_context(cafile=ca)
ctx.minimum_version = ssl.TLSVersion.TLSv1
ctx.maximum_version = ssl.TLSVersion.TLSv1_1
try:
    pymysql.connect(host="127.0.0.1", port=port, user=user, password=password, ssl=ctx)
    print("old TLS accepted")
except Exception as e:
    print("old TLS refused")
"#;
    let args = vec![
        server.addr.port().to_string(),
        cert.display().to_string(),
        USER.to_string(),
        PASSWORD.to_string(),
        db.clone(),
    ];
    let (ok, text) = python(script, args).await;
    assert!(ok, "{text}");
    assert!(
        text.contains("version TLSv1.2") || text.contains("version TLSv1.3"),
        "{text}"
    );
    assert!(text.contains("answer 42"), "{text}");
    assert!(text.contains("old TLS refused"), "{text}");
    server.shutdown().await;
}
