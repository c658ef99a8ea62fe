//! The database's privileges, not Tandem's: a proxy user with a
//! `backend_user` acts on the backend as that account, so its GRANTs
//! confine it exactly as they confine it on a direct connection (same
//! error code and message), across COM_CHANGE_USER too.

use crate::common::*;
use mysql_async::prelude::*;
use mysql_async::{ChangeUserOpts, Conn};

const ACCOUNT: &str = "tandem_it_ro";
const ACCOUNT_PW: &str = "ro-pass-1";

async fn root() -> Conn {
    Conn::new(direct_opts("mysql")).await.unwrap()
}

async fn create_account(db: &str) {
    let mut r = root().await;
    for host in ["%", "localhost", "127.0.0.1"] {
        r.query_drop(format!("DROP USER IF EXISTS '{ACCOUNT}'@'{host}'"))
            .await
            .unwrap();
        r.query_drop(format!(
            "CREATE USER '{ACCOUNT}'@'{host}' IDENTIFIED BY '{ACCOUNT_PW}'"
        ))
        .await
        .unwrap();
        r.query_drop(format!("GRANT SELECT ON `{db}`.* TO '{ACCOUNT}'@'{host}'"))
            .await
            .unwrap();
    }
    r.disconnect().await.unwrap();
}

async fn drop_account() {
    let mut r = root().await;
    for host in ["%", "localhost", "127.0.0.1"] {
        let _ = r
            .query_drop(format!("DROP USER IF EXISTS '{ACCOUNT}'@'{host}'"))
            .await;
    }
    r.disconnect().await.unwrap();
}

fn err_of(r: Result<(), mysql_async::Error>) -> (u16, String) {
    match r {
        Err(mysql_async::Error::Server(e)) => (e.code, e.message),
        other => panic!("expected a server error, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_user_confined_by_grants_is_equally_confined_through_tandem() {
    init_logging();
    let db = "tandem_it_priv";
    fresh_database(db).await;
    let mut r = Conn::new(direct_opts(db)).await.unwrap();
    r.query_drop("CREATE TABLE t (id INT PRIMARY KEY)")
        .await
        .unwrap();
    r.query_drop("INSERT INTO t VALUES (1)").await.unwrap();
    r.disconnect().await.unwrap();
    create_account(db).await;
    let dir = tempfile::tempdir().unwrap();
    let pw = dir.path().join("ro.password");
    std::fs::write(&pw, format!("{ACCOUNT_PW}\n")).unwrap();
    let yaml = format!(
        r#"
listen: 127.0.0.1:0
users:
  - name: reader
    password: reader-pw
    backend_user: {ACCOUNT}
    backend_password_file: {}
  - name: wrongpw
    password: wrongpw-pw
    backend_user: {ACCOUNT}
    backend_password: not-the-password
  - name: {USER}
    password: {PASSWORD}
backends:
  legacy:
    kind: mysql
    url: mysql://root@{MARIADB_HOST}:{MARIADB_PORT}/{db}
migration:
  primary: legacy
rules: ./rules
"#,
        pw.display()
    );
    let server = tandem::server::start(tandem::config::parse(&yaml).unwrap())
        .await
        .unwrap();
    let login = |user: &str, pass: &str| {
        proxy_builder(server.addr, Some(db))
            .user(Some(user))
            .pass(Some(pass))
    };
    let direct = mysql_async::OptsBuilder::default()
        .ip_or_hostname(MARIADB_HOST)
        .tcp_port(MARIADB_PORT)
        .user(Some(ACCOUNT))
        .pass(Some(ACCOUNT_PW))
        .db_name(Some(db))
        .prefer_socket(false);

    let mut via = Conn::new(login("reader", "reader-pw")).await.unwrap();
    let mut dir_c = Conn::new(direct).await.unwrap();
    let who: Option<String> = via.query_first("SELECT CURRENT_USER()").await.unwrap();
    assert!(who.unwrap().starts_with(&format!("{ACCOUNT}@")));
    let n: Option<i64> = via.query_first("SELECT COUNT(*) FROM t").await.unwrap();
    assert_eq!(n, Some(1));
    for sql in [
        "DROP TABLE t",
        "INSERT INTO t VALUES (2)",
        "CREATE TABLE u (i INT)",
    ] {
        let through = err_of(via.query_drop(sql).await);
        let directly = err_of(dir_c.query_drop(sql).await);
        assert_eq!(through, directly, "{sql}");
    }
    dir_c.disconnect().await.unwrap();

    // COM_CHANGE_USER moves the session to the other user's account and
    // back, as a direct connection would.
    let mut c = Conn::new(login(USER, PASSWORD)).await.unwrap();
    c.query_drop("CREATE TABLE made_as_root (i INT)")
        .await
        .unwrap();
    c.change_user(
        ChangeUserOpts::default()
            .with_user(Some("reader".into()))
            .with_pass(Some("reader-pw".into()))
            .with_db_name(Some(db.into())),
    )
    .await
    .unwrap();
    let (code, _) = err_of(c.query_drop("DROP TABLE made_as_root").await);
    assert_eq!(code, 1142);
    c.change_user(
        ChangeUserOpts::default()
            .with_user(Some(USER.into()))
            .with_pass(Some(PASSWORD.into()))
            .with_db_name(Some(db.into())),
    )
    .await
    .unwrap();
    c.query_drop("DROP TABLE made_as_root").await.unwrap();

    // A wrong backend password: the database's own refusal.
    let e = Conn::new(login("wrongpw", "wrongpw-pw")).await.unwrap_err();
    assert!(
        matches!(&e, mysql_async::Error::Server(s) if s.code == 1045),
        "{e}"
    );
    drop((via, c));
    server.shutdown().await;

    // What start-up and the cutover preflight check: the account logs in
    // but cannot write Tandem's commit markers; the GRANT to run is named.
    let backend = tandem::config::parse(&yaml)
        .unwrap()
        .primary_backend()
        .clone();
    let mut r = root().await;
    r.query_drop("CREATE DATABASE IF NOT EXISTS tandem")
        .await
        .unwrap();
    r.query_drop(
        "CREATE TABLE IF NOT EXISTS tandem.commit_marker (db VARCHAR(64) NOT NULL, \
         token BIGINT UNSIGNED NOT NULL, PRIMARY KEY (db, token)) ENGINE=InnoDB",
    )
    .await
    .unwrap();
    r.disconnect().await.unwrap();
    let account = tandem::config::Account {
        user: ACCOUNT.into(),
        password: tandem::config::Secret::new(ACCOUNT_PW),
    };
    let t = std::time::Duration::from_secs(5);
    let markers = "`tandem`.`commit_marker`";
    let problem = tandem::backend::accounts::check(&backend, &account, Some(markers), t)
        .await
        .expect("a problem");
    assert!(
        problem.contains("cannot write Tandem's commit markers")
            && problem.contains(&format!(
                "GRANT SELECT, INSERT ON `tandem`.* TO '{ACCOUNT}'"
            )),
        "{problem}"
    );
    assert_eq!(
        tandem::backend::accounts::check(&backend, &account, None, t).await,
        None
    );
    let wrong = tandem::config::Account {
        user: ACCOUNT.into(),
        password: tandem::config::Secret::new("nope"),
    };
    let problem = tandem::backend::accounts::check(&backend, &wrong, None, t)
        .await
        .expect("a problem");
    assert!(problem.contains("cannot be used"), "{problem}");
    // `tandem check-config` says the same, with the primary reachable.
    let mirrored = yaml.replace(
        "  primary: legacy\n",
        &format!(
            "  primary: legacy\n  secondary: next\n  journal: {}\n",
            dir.path().join("journal").display()
        ),
    ).replace(
        "backends:\n",
        &format!("backends:\n  next:\n    kind: mysql\n    url: mysql://root@{MARIADB_HOST}:{MARIADB_PORT}/{db}_next\n"),
    );
    let cfg = dir.path().join("tandem.yaml");
    std::fs::create_dir_all(dir.path().join("rules")).unwrap();
    std::fs::write(&cfg, &mirrored).unwrap();
    let (code, out, err) = tandem_tool("check-config", &cfg, &[]);
    assert_eq!(code, 1, "{out}{err}");
    assert!(
        err.contains(&format!(
            "GRANT SELECT, INSERT ON `tandem`.* TO '{ACCOUNT}'"
        )),
        "{err}"
    );
    drop_account().await;
}

/// The cutover preflight compares each backend account's grants on the
/// current primary with those on the target (the primary's database named
/// as the target's): what the target lacks is named, and the cutover is
/// refused until it is granted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grants_missing_on_the_cutover_target_are_named() {
    const USER_GR: &str = "tandem_it_gr";
    let (p, s) = ("tandem_it_gr_p", "tandem_it_gr_p_next");
    fresh_database(p).await;
    fresh_database(s).await;
    let mut r = root().await;
    for host in ["%", "localhost", "127.0.0.1"] {
        for sql in [
            format!("DROP USER IF EXISTS '{USER_GR}'@'{host}'"),
            format!("CREATE USER '{USER_GR}'@'{host}' IDENTIFIED BY 'gr-pass'"),
            format!("GRANT SELECT, INSERT, UPDATE ON `{p}`.* TO '{USER_GR}'@'{host}'"),
            format!("GRANT SELECT ON `{s}`.* TO '{USER_GR}'@'{host}'"),
        ] {
            r.query_drop(sql).await.unwrap();
        }
    }
    let backend = |db: &str| {
        let yaml = format!(
            "backends:\n  b:\n    kind: mysql\n    url: mysql://root@{MARIADB_HOST}:{MARIADB_PORT}/{db}\nmigration:\n  primary: b\nrules: /nonexistent\n"
        );
        tandem::config::parse(&yaml)
            .unwrap()
            .primary_backend()
            .clone()
    };
    let (from, mut to) = (backend(p), backend(s));
    to.name = "next".into();
    let account = tandem::config::Account {
        user: USER_GR.into(),
        password: tandem::config::Secret::new("gr-pass"),
    };
    let t = std::time::Duration::from_secs(5);
    let problem = tandem::backend::accounts::compare_grants(&from, &to, &account, t)
        .await
        .expect("grants differ");
    assert!(
        problem.contains(&format!("GRANT SELECT, INSERT, UPDATE ON `{s}`.*"))
            && problem.contains("lacks on next"),
        "{problem}"
    );
    for host in ["%", "localhost", "127.0.0.1"] {
        r.query_drop(format!(
            "GRANT INSERT, UPDATE ON `{s}`.* TO '{USER_GR}'@'{host}'"
        ))
        .await
        .unwrap();
    }
    assert_eq!(
        tandem::backend::accounts::compare_grants(&from, &to, &account, t).await,
        None
    );
    for host in ["%", "localhost", "127.0.0.1"] {
        let _ = r
            .query_drop(format!("DROP USER IF EXISTS '{USER_GR}'@'{host}'"))
            .await;
    }
    r.disconnect().await.unwrap();
    drop_databases(&[p, s]).await;
}
