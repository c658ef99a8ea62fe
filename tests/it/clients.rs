//! Real client programs against Tandem: the `mariadb` CLI (output compared
//! with a direct connection), sysbench, and the `tandem` binary itself.

use crate::common::*;
use std::process::{Command, Output, Stdio};

fn mariadb(port: u16, user: &str, password: &str, db: &str, args: &[&str], stdin: &str) -> Output {
    let mut child = Command::new("mariadb")
        .args([
            "--protocol=TCP",
            "-h127.0.0.1",
            &format!("-P{port}"),
            &format!("-u{user}"),
        ])
        .args(if password.is_empty() {
            vec![]
        } else {
            vec![format!("-p{password}")]
        })
        .arg(db)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("the mariadb client is installed (make test installs it)");
    use std::io::Write;
    child
        .stdin
        .take()
        .unwrap()
        .write_all(stdin.as_bytes())
        .unwrap();
    child.wait_with_output().unwrap()
}

const SCRIPT: &str = r#"
CREATE TABLE cli (id INT PRIMARY KEY AUTO_INCREMENT, name VARCHAR(50), price DECIMAL(10,2), at DATETIME(6), doc JSON, b BLOB);
INSERT INTO cli (name, price, at, doc, b) VALUES
  ('widget', 9.99, '2024-01-02 03:04:05.123456', '{"a": 1}', x'00ff'),
  ('gadget ☃', NULL, NULL, NULL, NULL);
SELECT * FROM cli ORDER BY id;
SELECT COUNT(*), SUM(price) FROM cli;
UPDATE cli SET price = price * 2 WHERE id = 1;
SELECT ROW_COUNT(), LAST_INSERT_ID();
SHOW CREATE TABLE cli;
DELIMITER //
CREATE PROCEDURE twice() BEGIN SELECT 'first' AS r; SELECT 'second' AS r; END //
DELIMITER ;
CALL twice();
SELECT DATABASE(), @@autocommit;
START TRANSACTION;
INSERT INTO cli (name) VALUES ('rolled back');
ROLLBACK;
SELECT name FROM cli ORDER BY id;
SELECT * FROM does_not_exist;
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mariadb_cli_output_matches_direct() {
    let env = TestEnv::start("cli_mariadb").await;
    let port = env.addr.port();
    let db = env.db.clone();
    let run = move |port: u16, user: &'static str, pw: &'static str, db: String| {
        tokio::task::spawn_blocking(move || {
            mariadb(port, user, pw, &db, &["--table", "--force"], SCRIPT)
        })
    };
    let direct = run(MARIADB_PORT, "root", "", db.clone()).await.unwrap();
    // Reset the database so the proxied run starts from the same state.
    let mut d = env.direct().await;
    use mysql_async::prelude::Queryable;
    d.query_drop("DROP TABLE cli").await.unwrap();
    d.query_drop("DROP PROCEDURE twice").await.unwrap();
    d.disconnect().await.unwrap();
    let proxied = run(port, USER, PASSWORD, db).await.unwrap();
    let out_d = String::from_utf8_lossy(&direct.stdout);
    let out_p = String::from_utf8_lossy(&proxied.stdout);
    assert!(
        out_d.contains("widget") && out_d.contains("second"),
        "{out_d}"
    );
    assert_eq!(out_d, out_p);
    let err_d = String::from_utf8_lossy(&direct.stderr);
    let err_p = String::from_utf8_lossy(&proxied.stderr);
    assert!(err_p.contains("ERROR 1146 (42S02)"), "{err_p}");
    assert_eq!(err_d, err_p);
    assert_eq!(direct.status.code(), proxied.status.code());

    // Wrong password through the CLI.
    let bad = tokio::task::spawn_blocking(move || {
        mariadb(port, USER, "nope", "", &["-e", "SELECT 1"], "")
    })
    .await
    .unwrap();
    assert!(!bad.status.success());
    assert!(String::from_utf8_lossy(&bad.stderr).contains("ERROR 1045 (28000)"));
    env.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sysbench_oltp_read_write_through_tandem() {
    raise_server_limits().await;
    let env = TestEnv::start("cli_sysbench").await;
    let port = env.addr.port().to_string();
    let db = env.db.clone();
    let out = tokio::task::spawn_blocking(move || {
        let common = [
            "--db-driver=mysql".to_string(),
            "--mysql-host=127.0.0.1".into(),
            format!("--mysql-port={port}"),
            format!("--mysql-user={USER}"),
            format!("--mysql-password={PASSWORD}"),
            format!("--mysql-db={db}"),
            "--tables=2".into(),
            "--table-size=2000".into(),
        ];
        let prepare = Command::new("sysbench")
            .arg("oltp_read_write")
            .args(&common)
            .arg("prepare")
            .output()
            .expect("sysbench is installed (make test installs it)");
        assert!(
            prepare.status.success(),
            "prepare: {}",
            String::from_utf8_lossy(&prepare.stderr)
        );
        Command::new("sysbench")
            .arg("oltp_read_write")
            .args(&common)
            .args(["--threads=4", "--time=5", "--report-interval=0"])
            .arg("run")
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let field = |name: &str| -> f64 {
        stdout
            .lines()
            .find(|l| l.trim_start().starts_with(name))
            .and_then(|l| l.split(':').nth(1))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("no {name} in sysbench output:\n{stdout}"))
    };
    assert!(field("transactions:") > 0.0, "{stdout}");
    // sysbench exits non-zero on any error outside its retry list; the
    // "ignored errors" it retries are deadlocks between its own threads
    // (ER_LOCK_DEADLOCK), which MariaDB raises the same way without Tandem.
    let retried = field("ignored errors:");
    assert!(retried <= field("transactions:") / 10.0, "{stdout}");
    assert_eq!(field("reconnects:"), 0.0, "{stdout}");
    env.stop().await;
}

#[test]
fn check_config_reports_every_error_and_exit_code() {
    let bin = env!("CARGO_BIN_EXE_tandem");
    let ok = Command::new(bin)
        .args(["check-config", "--config", "config/tandem.yaml"])
        .output()
        .unwrap();
    assert!(
        ok.status.success(),
        "{}",
        String::from_utf8_lossy(&ok.stderr)
    );
    assert!(String::from_utf8_lossy(&ok.stdout).contains("ok"));
    let ok = Command::new(bin)
        .args(["check-config", "--config", "config/example.yaml"])
        .output()
        .unwrap();
    assert!(ok.status.success(), "the operator example must validate");
    // The PostgreSQL demo: the offline tools take it, serving does not.
    let pg = Command::new(bin)
        .args(["check-config", "--config", "config/postgres.yaml"])
        .output()
        .unwrap();
    assert_eq!(pg.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&pg.stderr).contains("cannot mirror writes into PostgreSQL yet")
    );
    let ddl = Command::new(bin)
        .args([
            "schema",
            "--to",
            "postgres",
            "--config",
            "config/postgres.yaml",
        ])
        .output()
        .unwrap();
    assert!(
        ddl.status.success(),
        "{}",
        String::from_utf8_lossy(&ddl.stderr)
    );
    assert!(String::from_utf8_lossy(&ddl.stdout).contains("CREATE TABLE \"public\".\"orders\""));

    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad.yaml");
    std::fs::write(
        &bad,
        "listen: nowhere\nbackends:\n  a: { kind: mysql, url: \"mysql://root@h/db\", pool: 0 }\nmigration: { primary: b }\n",
    )
    .unwrap();
    let out = Command::new(bin)
        .args(["check-config", "--config"])
        .arg(&bad)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("3 error(s)"), "{err}");
    for needle in ["listen", "backends.a.pool", "migration.primary"] {
        assert!(err.contains(needle), "{err}");
    }
    let missing = Command::new(bin)
        .args(["check-config", "--config", "/nonexistent/tandem.yaml"])
        .output()
        .unwrap();
    assert_eq!(missing.status.code(), Some(1));
}

#[test]
fn serve_refuses_an_invalid_config() {
    let bin = env!("CARGO_BIN_EXE_tandem");
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad.yaml");
    std::fs::write(&bad, "backends: {}\nmigration: { primary: x }\n").unwrap();
    let out = Command::new(bin)
        .args(["serve", "--config"])
        .arg(&bad)
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("migration.primary"));
}

/// Peak resident memory of a process, from /proc.
fn peak_rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1).map(|v| v.parse().unwrap_or(0)))
        })
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn results_stream_through_bounded_memory() {
    use mysql_async::prelude::Queryable;
    let env = TestEnv::start("cli_memory").await;
    let mut d = env.direct().await;
    d.query_drop("CREATE TABLE wide (id INT PRIMARY KEY, pad VARCHAR(2000))")
        .await
        .unwrap();
    // ~200 MB of rows.
    d.query_drop(
        "INSERT INTO wide SELECT seq, REPEAT(CHAR(65 + seq % 26), 2000) FROM seq_1_to_100000",
    )
    .await
    .unwrap();
    d.disconnect().await.unwrap();
    // Run the real binary so its memory is measured alone.
    let dir = tempfile::tempdir().unwrap();
    let port = free_addr().port();
    let cfg = dir.path().join("t.yaml");
    std::fs::write(
        &cfg,
        format!(
            "listen: 127.0.0.1:{port}\nusers: [{{ name: {USER}, password: {PASSWORD} }}]\nbackends:\n  legacy: {{ kind: mysql, url: \"mysql://root@127.0.0.1:{MARIADB_PORT}/{}\" }}\nmigration: {{ primary: legacy }}\nrules: ./rules\n",
            env.db
        ),
    )
    .unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_tandem"))
        .args(["serve", "--config"])
        .arg(&cfg)
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let addr: std::net::SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let mut conn = None;
    for _ in 0..50 {
        if let Ok(c) = mysql_async::Conn::new(proxy_builder(addr, Some(&env.db))).await {
            conn = Some(c);
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    let mut c = conn.expect("tandem binary accepts connections");
    let before = peak_rss_kib(child.id());
    let mut bytes = 0usize;
    let mut rows = 0usize;
    let mut r = c.query_iter("SELECT id, pad FROM wide").await.unwrap();
    r.for_each(|row: mysql_async::Row| {
        let pad: Vec<u8> = row.get(1).unwrap();
        bytes += pad.len();
        rows += 1;
    })
    .await
    .unwrap();
    drop(r);
    let peak = peak_rss_kib(child.id());
    c.disconnect().await.unwrap();
    let _ = child.kill();
    let _ = child.wait();
    eprintln!("tandem peak RSS {peak} KiB (before the query {before} KiB) relaying {bytes} bytes");
    assert_eq!(rows, 100_000);
    assert_eq!(bytes, 200_000_000);
    assert!(
        peak < 48 * 1024,
        "peak RSS {peak} KiB (before the query {before} KiB) while relaying 200 MB"
    );
    env.stop().await;
}

/// MariaDB's extended metadata (`format=json`, the geometry type), which
/// drivers use to turn JSON columns into objects, reaches the client as
/// directly: Tandem offers the capability when the primary does and
/// relays the column definitions byte for byte. With mirroring on, a
/// write reading a user variable (whose value Tandem reads back through
/// such a column definition) is mirrored as before.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mariadb_extended_metadata_reaches_the_client() {
    use crate::common::mirror::*;
    use mysql_async::prelude::Queryable;
    let env = MirrorEnv::start("cli_extmeta", "").await;
    let ddl = "CREATE TABLE t (id INT PRIMARY KEY, j JSON, p POINT, n INT)";
    env.create_both(ddl).await;
    let port = env.server.addr.port();
    let db = env.primary.clone();
    let script = "INSERT INTO t VALUES (1, '{\"a\": 1}', POINT(1, 2), 7);\n\
                  SET @n := (SELECT n FROM t WHERE id = 1);\n\
                  INSERT INTO t VALUES (2, NULL, NULL, @n + 1);\n\
                  SELECT id, j, p FROM t WHERE id = 1;\n";
    let proxied = {
        let db = db.clone();
        tokio::task::spawn_blocking(move || {
            mariadb(
                port,
                USER,
                PASSWORD,
                &db,
                &["--column-type-info", "-t"],
                script,
            )
        })
        .await
        .unwrap()
    };
    let out_p = String::from_utf8_lossy(&proxied.stdout).into_owned();
    assert!(
        proxied.status.success(),
        "{}",
        String::from_utf8_lossy(&proxied.stderr)
    );
    let mut d = mysql_async::Conn::new(direct_opts(&db)).await.unwrap();
    d.query_drop("DELETE FROM t").await.unwrap();
    d.disconnect().await.unwrap();
    let direct = tokio::task::spawn_blocking(move || {
        mariadb(
            MARIADB_PORT,
            "root",
            "",
            &db,
            &["--column-type-info", "-t"],
            script,
        )
    })
    .await
    .unwrap();
    let out_d = String::from_utf8_lossy(&direct.stdout);
    assert!(out_d.contains("BLOB (format=json)"), "{out_d}");
    assert!(out_d.contains("GEOMETRY (type=point)"), "{out_d}");
    assert_eq!(out_p, out_d);
    env.wait_caught_up().await;
    let n: Option<i32> = mysql_async::Conn::new(direct_opts(&env.secondary))
        .await
        .unwrap()
        .query_first("SELECT n FROM t WHERE id = 2")
        .await
        .unwrap();
    assert_eq!(n, Some(8));
    env.stop().await;
}
