//! caching_sha2_password, MySQL 8 connectors' default: Tandem serves it
//! to clients (fast path, full path over TLS, full path by RSA in clear)
//! and speaks it to backends that ask for it. The backend side is tested
//! end to end against Tandem's own server side: a Tandem in front of a
//! Tandem in front of MariaDB, with mysql_async and PyMySQL as clients.

use crate::common::pki::Pki;
use crate::common::*;
use mysql_async::prelude::*;
use mysql_async::{Conn, OptsBuilder, SslOpts};
use tandem::metrics::PathLabel;
use tandem::server::RunningServer;

/// `*` + SHA1(SHA1(password)) as MariaDB prints it.
async fn native_hash(password: &str) -> String {
    let mut c = Conn::new(direct_opts("mysql")).await.unwrap();
    let h: String = c
        .exec_first("SELECT PASSWORD(?)", (password,))
        .await
        .unwrap()
        .unwrap();
    c.disconnect().await.unwrap();
    h
}

/// A Tandem announcing caching_sha2_password in front of `backend_url`:
/// `app` has a plain-text password (its SHA-256 verifier is known at
/// once), `hashed` and `hashed2` only a native hash (a full
/// authentication first, then the cache).
async fn sha2_front(backend_url: &str, tls: Option<&Pki>) -> RunningServer {
    init_logging();
    let hash = native_hash("hashed-pass").await;
    let tls = tls.map_or(String::new(), |p| {
        format!(
            "tls:\n  cert: {}\n  key: {}\n",
            p.server_cert.display(),
            p.server_key.display()
        )
    });
    let yaml = format!(
        r#"
listen: 127.0.0.1:0
auth_plugin: caching_sha2_password
{tls}users:
  - name: {USER}
    password: {PASSWORD}
  - name: hashed
    password_hash: "{hash}"
  - name: hashed2
    password_hash: "{hash}"
backends:
  b:
    kind: mysql
    url: "{backend_url}"
migration:
  primary: b
rules: ./rules
"#
    );
    tandem::server::start(tandem::config::parse(&yaml).expect("valid config"))
        .await
        .expect("tandem starts")
}

fn logins(s: &RunningServer, path: &'static str) -> u64 {
    s.shared
        .metrics
        .sha2_logins
        .get_or_create(&PathLabel { path })
        .get()
}

fn client(s: &RunningServer, user: &str, password: &str, db: &str) -> OptsBuilder {
    proxy_builder(s.addr, Some(db))
        .user(Some(user))
        .pass(Some(password))
}

async fn answer(opts: OptsBuilder) -> Result<i64, mysql_async::Error> {
    let mut c = Conn::new(opts).await?;
    let v: i64 = c.query_first("SELECT 6*7").await?.unwrap_or_default();
    c.disconnect().await?;
    Ok(v)
}

/// mysql_async answers the greeting with caching_sha2_password: a known
/// verifier takes the fast path; a native hash alone takes the full path
/// (RSA in clear, the password itself over TLS) and then the fast one; a
/// wrong password gets the server's error either way.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_log_in_by_every_caching_sha2_path() {
    let db = "tandem_sha2_paths";
    fresh_database(db).await;
    let url = format!("mysql://root@{MARIADB_HOST}:{MARIADB_PORT}/{db}");
    let s = sha2_front(&url, None).await;

    assert_eq!(answer(client(&s, USER, PASSWORD, db)).await.unwrap(), 42);
    assert_eq!(logins(&s, "fast"), 1);
    assert_eq!(
        answer(client(&s, "hashed", "hashed-pass", db))
            .await
            .unwrap(),
        42
    );
    assert_eq!((logins(&s, "full_rsa"), logins(&s, "fast")), (1, 1));
    answer(client(&s, "hashed", "hashed-pass", db))
        .await
        .unwrap();
    assert_eq!((logins(&s, "full_rsa"), logins(&s, "fast")), (1, 2));
    for (user, password) in [("hashed", "wrong"), (USER, "wrong"), ("nobody", "x")] {
        match answer(client(&s, user, password, db)).await {
            Err(mysql_async::Error::Server(e)) => {
                assert_eq!(e.code, 1045, "{user}: {e}");
                assert!(e.message.starts_with("Access denied for user"), "{e}");
            }
            other => panic!("{user}/{password}: expected ERROR 1045, got {other:?}"),
        }
    }
    assert_eq!((logins(&s, "full_rsa"), logins(&s, "fast")), (1, 2));
    // COM_CHANGE_USER answers with the same plugin.
    let mut c = Conn::new(client(&s, USER, PASSWORD, db)).await.unwrap();
    c.change_user(
        mysql_async::ChangeUserOpts::default()
            .with_user(Some("hashed".into()))
            .with_pass(Some("hashed-pass".into())),
    )
    .await
    .unwrap();
    let v: i64 = c.query_first("SELECT 6*7").await.unwrap().unwrap();
    assert_eq!(v, 42);
    assert_eq!((logins(&s, "full_rsa"), logins(&s, "fast")), (1, 4));
    c.disconnect().await.unwrap();
    s.shutdown().await;

    // Over TLS the full path carries the password itself.
    let pki = Pki::new();
    let s = sha2_front(&url, Some(&pki)).await;
    let ssl = SslOpts::default()
        .with_root_certs(vec![pki.ca.clone().into()])
        .with_disable_built_in_roots(true);
    let tls_client = || client(&s, "hashed", "hashed-pass", db).ssl_opts(Some(ssl.clone()));
    assert_eq!(answer(tls_client()).await.unwrap(), 42);
    answer(tls_client()).await.unwrap();
    assert_eq!(
        (
            logins(&s, "full_tls"),
            logins(&s, "fast"),
            logins(&s, "full_rsa")
        ),
        (1, 1, 0)
    );
    let mut c = Conn::new(tls_client()).await.unwrap();
    let (_, v): (String, String) = c
        .query_first("SHOW STATUS LIKE 'Ssl_version'")
        .await
        .unwrap()
        .unwrap();
    assert!(v.is_empty(), "Tandem's own TLS is not the backend's: {v:?}");
    c.disconnect().await.unwrap();
    s.shutdown().await;
    drop_databases(&[db]).await;
}

/// Tandem as the client of a backend that asks for caching_sha2_password
/// (here a Tandem): the full path by RSA, then the fast path for the
/// pool's next connections, and the full path over TLS under `ssl-mode`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tandem_logs_in_to_a_backend_that_asks_for_caching_sha2() {
    let db = "tandem_sha2_backend";
    fresh_database(db).await;
    let pki = Pki::new();
    let url = format!("mysql://root@{MARIADB_HOST}:{MARIADB_PORT}/{db}");
    let inner = sha2_front(&url, Some(&pki)).await;
    let port = inner.addr.port();
    let outer = |url: String| async move {
        let yaml = format!(
            "listen: 127.0.0.1:0\nusers:\n  - name: {USER}\n    password: {PASSWORD}\n\
             backends:\n  b:\n    kind: mysql\n    url: \"{url}\"\n\
             migration:\n  primary: b\nrules: ./rules\n"
        );
        tandem::server::start(tandem::config::parse(&yaml).unwrap())
            .await
            .unwrap()
    };
    let plain = outer(format!("mysql://hashed:hashed-pass@127.0.0.1:{port}/{db}")).await;
    // Two sessions at once: two backend logins.
    let (a, b) = tokio::join!(
        Conn::new(proxy_builder(plain.addr, Some(db))),
        Conn::new(proxy_builder(plain.addr, Some(db)))
    );
    let (mut a, mut b) = (a.unwrap(), b.unwrap());
    a.query_drop("CREATE TABLE t (id INT PRIMARY KEY)")
        .await
        .unwrap();
    b.query_drop("INSERT INTO t VALUES (1), (2)").await.unwrap();
    let n: i64 = a
        .query_first("SELECT COUNT(*) FROM t")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(n, 2);
    let who: String = b
        .query_first("SELECT CURRENT_USER()")
        .await
        .unwrap()
        .unwrap();
    assert!(
        who.starts_with("root@"),
        "the inner Tandem's backend account: {who}"
    );
    // The first logins (at start and of the two sessions, at once) found
    // nothing cached: the full path, by RSA. The next is fast.
    let full = logins(&inner, "full_rsa");
    let fast = logins(&inner, "fast");
    assert!(full >= 1, "{full}");
    let mut c = Conn::new(proxy_builder(plain.addr, Some(db)))
        .await
        .unwrap();
    c.query_drop("DO 1").await.unwrap();
    assert_eq!(
        (logins(&inner, "full_rsa"), logins(&inner, "fast")),
        (full, fast + 1)
    );
    drop((a, b, c));
    plain.shutdown().await;

    let ca = pki.ca.display();
    let secure = outer(format!(
        "mysql://hashed2:hashed-pass@127.0.0.1:{port}/{db}?ssl-mode=verify-identity&ssl-ca={ca}"
    ))
    .await;
    let mut first = Conn::new(proxy_builder(secure.addr, Some(db)))
        .await
        .unwrap();
    let n: i64 = first
        .query_first("SELECT COUNT(*) FROM t")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(n, 2);
    // (Start-up's login and the session's may both find nothing cached.)
    let full = logins(&inner, "full_tls");
    assert!(full >= 1, "{full}");
    let fast = logins(&inner, "fast");
    // A second session while the first holds its backend connection: a
    // new backend login, on the fast path.
    let mut second = Conn::new(proxy_builder(secure.addr, Some(db)))
        .await
        .unwrap();
    second.query_drop("DO 1").await.unwrap();
    drop((first, second));
    assert_eq!(
        (logins(&inner, "full_tls"), logins(&inner, "fast")),
        (full, fast + 1)
    );
    secure.shutdown().await;

    // A wrong password: the inner Tandem's refusal reaches the client.
    let wrong = outer(format!("mysql://hashed:nope@127.0.0.1:{port}/{db}")).await;
    let e = match Conn::new(proxy_builder(wrong.addr, Some(db))).await {
        Ok(_) => panic!("logged in with a wrong backend password"),
        Err(e) => e.to_string(),
    };
    assert!(e.contains("Access denied for user 'hashed'"), "{e}");
    wrong.shutdown().await;
    inner.shutdown().await;
    drop_databases(&[db]).await;
}

/// PyMySQL (caching_sha2_password in Python) through every path: RSA
/// (with the cryptography package; TLS, which PyMySQL would use whenever
/// offered, turned off), then fast, and over TLS.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pymysql_logs_in_with_caching_sha2() {
    let db = "tandem_sha2_pymysql";
    fresh_database(db).await;
    let pki = Pki::new();
    let url = format!("mysql://root@{MARIADB_HOST}:{MARIADB_PORT}/{db}");
    let s = sha2_front(&url, Some(&pki)).await;
    let script = r#"
import pymysql, sys
port, ca, db = int(sys.argv[1]), sys.argv[2], sys.argv[3]
def login(user, **kw):
    c = pymysql.connect(host="127.0.0.1", port=port, user=user, password="hashed-pass", database=db, **kw)
    cur = c.cursor()
    cur.execute("SELECT 6*7")
    print(user, c._auth_plugin_name, cur.fetchone()[0])
    c.close()
login("hashed", ssl_disabled=True)
login("hashed", ssl_disabled=True)
login("hashed2", ssl={"ca": ca})
try:
    pymysql.connect(host="127.0.0.1", port=port, user="hashed", password="nope", database=db, ssl_disabled=True)
except pymysql.err.OperationalError as e:
    print("refused", e.args[0])
"#;
    let args = vec![
        s.addr.port().to_string(),
        pki.ca.display().to_string(),
        db.to_string(),
    ];
    let (ok, text) = python(script, args).await;
    assert!(ok, "{text}");
    assert_eq!(
        text.matches("caching_sha2_password 42").count(),
        3,
        "{text}"
    );
    assert!(text.contains("refused 1045"), "{text}");
    assert_eq!(
        (
            logins(&s, "full_rsa"),
            logins(&s, "fast"),
            logins(&s, "full_tls")
        ),
        (1, 1, 1)
    );
    s.shutdown().await;
    drop_databases(&[db]).await;
}
