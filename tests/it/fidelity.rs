//! "The primary answers as if Tandem were not there": the same commands sent
//! directly to MariaDB and through Tandem produce the same bytes, values,
//! metadata, OK packets and errors.

use crate::common::raw::{default_caps, RawClient};
use crate::common::*;
use mysql_async::prelude::*;
use mysql_async::{Conn, Params, Row, Value};
use tandem::protocol::response::Expect;

const TYPES_DDL: &str = "CREATE TABLE types (
    id INT PRIMARY KEY AUTO_INCREMENT,
    c_tinyint TINYINT, c_utinyint TINYINT UNSIGNED, c_smallint SMALLINT, c_mediumint MEDIUMINT,
    c_int INT, c_uint INT UNSIGNED, c_bigint BIGINT, c_ubigint BIGINT UNSIGNED,
    c_float FLOAT, c_double DOUBLE, c_decimal DECIMAL(30,10), c_bit BIT(10), c_bool BOOLEAN,
    c_date DATE, c_time TIME(3), c_datetime DATETIME(6), c_timestamp TIMESTAMP(6) NULL, c_year YEAR,
    c_char CHAR(10), c_varchar VARCHAR(200), c_binary BINARY(4), c_varbinary VARBINARY(50),
    c_tinytext TINYTEXT, c_text TEXT, c_mediumtext MEDIUMTEXT, c_longtext LONGTEXT,
    c_tinyblob TINYBLOB, c_blob BLOB, c_mediumblob MEDIUMBLOB, c_longblob LONGBLOB,
    c_enum ENUM('a','b','c'), c_set SET('x','y','z'), c_json JSON,
    c_geometry POINT NULL, c_latin1 VARCHAR(20) CHARACTER SET latin1
)";

const TYPES_ROW: &str = "INSERT INTO types VALUES (NULL,
    -128, 255, -32768, -8388608, -2147483648, 4294967295, -9223372036854775808, 18446744073709551615,
    3.5, -2.2250738585072014e-308, '-12345678901234567890.0123456789', b'1010101010', TRUE,
    '2024-02-29', '-838:59:58.999', '2024-12-31 23:59:59.999999', '2038-01-19 03:14:07.123456', 2155,
    'char', 'varchär ☃', x'00ff10fe', x'deadbeef00',
    'tiny', 'text', 'medium', 'long',
    x'00', x'fffe', x'ff00ff', x'c328',
    'b', 'x,z', '{\"k\": [1, 2.5, null, \"s\"]}',
    ST_GeomFromText('POINT(1 2)'), 'café')";

async fn setup_types(env: &TestEnv) {
    let mut d = env.direct().await;
    d.query_drop("DROP TABLE IF EXISTS types").await.unwrap();
    d.query_drop(TYPES_DDL).await.unwrap();
    d.query_drop(TYPES_ROW).await.unwrap();
    // A row of NULLs (id generated).
    d.query_drop("INSERT INTO types (id) VALUES (NULL)")
        .await
        .unwrap();
    d.disconnect().await.unwrap();
}

/// Column metadata and rows, as a comparable value.
fn describe(rows: &[Row]) -> Vec<(Vec<String>, Vec<Value>)> {
    rows.iter()
        .map(|r| {
            let cols = r
                .columns_ref()
                .iter()
                .map(|c| {
                    format!(
                        "{}|{}|{}|{}|{}|{:?}|{:?}|{}|{}|{}",
                        c.name_str(),
                        c.org_name_str(),
                        c.table_str(),
                        c.org_table_str(),
                        c.schema_str(),
                        c.column_type(),
                        c.flags(),
                        c.decimals(),
                        c.character_set(),
                        c.column_length()
                    )
                })
                .collect();
            (cols, r.clone().unwrap())
        })
        .collect()
}

/// Recreates every table the byte-comparison test touches, so the direct
/// run and the proxied run start from identical state.
async fn setup_bytes_fixture(env: &TestEnv) {
    setup_types(env).await;
    let mut d = env.direct().await;
    d.query_drop("DROP PROCEDURE IF EXISTS two_results")
        .await
        .unwrap();
    d.query_drop(
        "CREATE PROCEDURE two_results() BEGIN SELECT 1 AS a; SELECT 'x' AS b, NULL AS c; END",
    )
    .await
    .unwrap();
    d.query_drop("DROP TABLE IF EXISTS uniq").await.unwrap();
    d.query_drop("CREATE TABLE uniq (id INT PRIMARY KEY AUTO_INCREMENT, v INT UNIQUE, n TINYINT)")
        .await
        .unwrap();
    d.disconnect().await.unwrap();
}

const BYTE_STATEMENTS: &[&str] = &[
    "SELECT * FROM types ORDER BY id",
    "SELECT 1, 'two', NULL, 3.0e0, NOW() IS NOT NULL",
    "SHOW COLUMNS FROM types",
    "SELECT * FROM no_such_table",
    "SELEC oops",
    "INSERT INTO uniq (v, n) VALUES (1, 1), (2, 2)",
    "INSERT INTO uniq (v, n) VALUES (1, 1)",
    "SET SESSION sql_mode = ''",
    "UPDATE uniq SET n = 1000 WHERE v = 1",
    "SHOW WARNINGS",
    "DELETE FROM uniq WHERE v = 2",
    "CALL two_results()",
    "SELECT 1; SELECT 2 AS two; UPDATE uniq SET n = n",
    "SELECT 1; SELECT * FROM nope; SELECT 3",
    "BEGIN",
    "INSERT INTO uniq (v) VALUES (10)",
    "ROLLBACK",
    "SET @a = 5",
    "SELECT @a",
    "DO 1",
    "",
];

/// Runs the whole command sequence on one connection; returns every response.
async fn byte_transcript(c: &mut RawClient) -> Vec<Vec<Vec<u8>>> {
    let mut out = Vec::new();
    for sql in BYTE_STATEMENTS {
        out.push(c.query(sql).await);
    }
    // Prepared statement: prepare (statement id masked), execute (binary rows).
    let mut prep = vec![0x16];
    prep.extend_from_slice(b"SELECT * FROM types WHERE id > ? ORDER BY id");
    let mut prepared = c.command(&prep, Expect::Prepare).await;
    let id = prepared[0][1..5].to_vec();
    prepared[0][1..5].copy_from_slice(&[0, 0, 0, 0]);
    out.push(prepared);
    let mut exec = vec![0x17];
    exec.extend_from_slice(&id);
    exec.push(0); // no cursor
    exec.extend_from_slice(&1u32.to_le_bytes());
    exec.push(0); // null bitmap for 1 param
    exec.push(1); // new params bound
    exec.extend_from_slice(&[0x08, 0x00]); // LONGLONG
    exec.extend_from_slice(&0i64.to_le_bytes());
    out.push(c.command(&exec, Expect::ResultSet).await);
    let mut fl = vec![0x04];
    fl.extend_from_slice(b"uniq\0");
    out.push(c.command(&fl, Expect::FieldList).await);
    out.push(c.command(&[0x0E], Expect::Single).await);
    // COM_SET_OPTION: multi-statements off, then a multi-statement fails.
    out.push(c.command(&[0x1B, 1, 0], Expect::Single).await);
    out.push(c.query("SELECT 1; SELECT 2").await);
    out.push(c.command(&[0x1B, 0, 0], Expect::Single).await);
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn raw_response_bytes_are_identical_to_direct() {
    let env = TestEnv::start("fid_bytes").await;
    for deprecate_eof in [false, true] {
        let caps = default_caps(deprecate_eof);
        setup_bytes_fixture(&env).await;
        let mut direct = RawClient::connect(
            (MARIADB_HOST, MARIADB_PORT),
            "root",
            "",
            Some(&env.db),
            caps,
            "mysql_native_password",
        )
        .await
        .unwrap();
        let expected = byte_transcript(&mut direct).await;
        setup_bytes_fixture(&env).await;
        let mut proxy = RawClient::connect(
            ("127.0.0.1", env.addr.port()),
            USER,
            PASSWORD,
            Some(&env.db),
            caps,
            "mysql_native_password",
        )
        .await
        .unwrap();
        // Same server version string in both greetings.
        let ver = |h: &[u8]| h[1..].split(|b| *b == 0).next().unwrap().to_vec();
        assert_eq!(ver(&direct.handshake), ver(&proxy.handshake));
        let got = byte_transcript(&mut proxy).await;
        assert_eq!(expected.len(), got.len());
        for (i, (a, b)) in expected.iter().zip(&got).enumerate() {
            let what = BYTE_STATEMENTS.get(i).copied().unwrap_or("(command)");
            assert_eq!(
                a, b,
                "response #{i} to {what:?} (deprecate_eof={deprecate_eof})"
            );
        }
        let stats = proxy.command(&[0x09], Expect::Single).await;
        assert!(String::from_utf8_lossy(&stats[0]).starts_with("Uptime"));
    }
    env.stop().await;
}

/// Prepare, execute with a read-only cursor, fetch in batches, close.
async fn cursor_transcript(c: &mut RawClient) -> Vec<Vec<Vec<u8>>> {
    let mut out = Vec::new();
    let mut prep = vec![0x16];
    prep.extend_from_slice(b"SELECT id, c_varchar, c_decimal FROM types ORDER BY id");
    let mut prepared = c.command(&prep, Expect::Prepare).await;
    let id = prepared[0][1..5].to_vec();
    prepared[0][1..5].copy_from_slice(&[0, 0, 0, 0]);
    out.push(prepared);
    let mut exec = vec![0x17];
    exec.extend_from_slice(&id);
    exec.push(1); // CURSOR_TYPE_READ_ONLY
    exec.extend_from_slice(&1u32.to_le_bytes());
    out.push(c.command(&exec, Expect::ResultSet).await);
    for _ in 0..2 {
        let mut fetch = vec![0x1C];
        fetch.extend_from_slice(&id);
        fetch.extend_from_slice(&1u32.to_le_bytes()); // one row per fetch
        out.push(c.command(&fetch, Expect::Fetch).await);
    }
    let mut reset = vec![0x1A];
    reset.extend_from_slice(&id);
    out.push(c.command(&reset, Expect::Single).await);
    let mut close = vec![0x19];
    close.extend_from_slice(&id);
    crate::common::raw::write_packet(&mut c.stream, 0, &close)
        .await
        .unwrap();
    out.push(c.query("SELECT 'after close'").await);
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_side_cursors_fetch_identically() {
    let env = TestEnv::start("fid_cursor").await;
    setup_types(&env).await;
    for deprecate_eof in [false, true] {
        let caps = default_caps(deprecate_eof);
        let mut direct = RawClient::connect(
            (MARIADB_HOST, MARIADB_PORT),
            "root",
            "",
            Some(&env.db),
            caps,
            "mysql_native_password",
        )
        .await
        .unwrap();
        let mut proxy = RawClient::connect(
            ("127.0.0.1", env.addr.port()),
            USER,
            PASSWORD,
            Some(&env.db),
            caps,
            "mysql_native_password",
        )
        .await
        .unwrap();
        let a = cursor_transcript(&mut direct).await;
        let b = cursor_transcript(&mut proxy).await;
        assert_eq!(a, b, "deprecate_eof={deprecate_eof}");
        assert!(a[2].len() > 1, "a fetch returned a row");
    }
    env.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn non_utf8_statement_bytes_pass_through_untouched() {
    let env = TestEnv::start("fid_binary").await;
    let mut p = RawClient::connect(
        ("127.0.0.1", env.addr.port()),
        USER,
        PASSWORD,
        Some(&env.db),
        default_caps(true),
        "mysql_native_password",
    )
    .await
    .unwrap();
    p.query("CREATE TABLE bin (b VARBINARY(10))").await;
    // Real non-UTF-8 bytes inside the statement, as PyMySQL/mysqlclient send.
    let mut raw = vec![0x03];
    raw.extend_from_slice(b"INSERT INTO bin VALUES (_binary'");
    raw.extend_from_slice(&[0xff, 0xfe, 0x80, 0xc3]);
    raw.extend_from_slice(b"')");
    let r = p.command(&raw, Expect::ResultSet).await;
    assert_eq!(r[0][0], 0x00, "insert of raw non-UTF-8 bytes succeeds");
    let mut d = env.direct().await;
    let v: Vec<u8> = d.query_first("SELECT b FROM bin").await.unwrap().unwrap();
    assert_eq!(v, vec![0xff, 0xfe, 0x80, 0xc3]);
    d.disconnect().await.unwrap();
    env.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_column_type_round_trips_text_and_binary() {
    let env = TestEnv::start("fid_types").await;
    setup_types(&env).await;
    let mut d = env.direct().await;
    let mut p = env.proxy().await;
    let sql = "SELECT * FROM types ORDER BY id";
    let text_d: Vec<Row> = d.query(sql).await.unwrap();
    let text_p: Vec<Row> = p.query(sql).await.unwrap();
    assert_eq!(text_p.len(), 2);
    assert_eq!(describe(&text_d), describe(&text_p));
    let bin_d: Vec<Row> = d.exec(sql, ()).await.unwrap();
    let bin_p: Vec<Row> = p.exec(sql, ()).await.unwrap();
    assert_eq!(describe(&bin_d), describe(&bin_p));
    // Spot-check values that proxies commonly mangle.
    let row = &text_p[0];
    let blob: Vec<u8> = row.get("c_blob").unwrap();
    assert_eq!(blob, vec![0xff, 0xfe]);
    let dec: String = row.get("c_decimal").unwrap();
    assert_eq!(dec, "-12345678901234567890.0123456789");
    let dt: String = row.get("c_datetime").unwrap();
    assert_eq!(dt, "2024-12-31 23:59:59.999999");
    let json: String = row.get("c_json").unwrap();
    assert!(json.contains("2.5"));
    let nulls = &text_p[1];
    assert!(matches!(nulls.as_ref(1), Some(Value::NULL)));
    d.disconnect().await.unwrap();
    p.disconnect().await.unwrap();
    env.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prepared_statements_with_every_parameter_type() {
    let env = TestEnv::start("fid_params").await;
    let mut p = env.proxy().await;
    p.query_drop(
        "CREATE TABLE params (id INT PRIMARY KEY AUTO_INCREMENT, i BIGINT, u BIGINT UNSIGNED,
         f DOUBLE, fl FLOAT, s VARCHAR(100), b LONGBLOB, d DATE, dt DATETIME(6), t TIME(6), n INT NULL)",
    )
    .await
    .unwrap();
    let values: Vec<Value> = vec![
        Value::Int(-42),
        Value::UInt(u64::MAX),
        Value::Double(1.5e300),
        Value::Float(2.5),
        Value::Bytes("héllo wörld".into()),
        Value::Bytes(vec![0, 0xff, 0xfe, 0x80]),
        Value::Date(2024, 2, 29, 0, 0, 0, 0),
        Value::Date(2024, 12, 31, 23, 59, 59, 999_999),
        Value::Time(true, 1, 2, 3, 4, 5),
        Value::NULL,
    ];
    p.exec_drop(
        "INSERT INTO params (i, u, f, fl, s, b, d, dt, t, n) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        Params::Positional(values.clone()),
    )
    .await
    .unwrap();
    assert_eq!(p.last_insert_id(), Some(1));
    assert_eq!(p.affected_rows(), 1);
    let row: Row = p
        .exec_first(
            "SELECT i, u, f, fl, s, b, d, dt, t, n FROM params WHERE id = ?",
            (1,),
        )
        .await
        .unwrap()
        .unwrap();
    let got = row.unwrap();
    assert_eq!(got[0], Value::Int(-42));
    assert_eq!(got[1], Value::UInt(u64::MAX));
    assert_eq!(got[2], Value::Double(1.5e300));
    assert_eq!(got[3], Value::Float(2.5));
    assert_eq!(got[4], Value::Bytes("héllo wörld".into()));
    assert_eq!(got[5], Value::Bytes(vec![0, 0xff, 0xfe, 0x80]));
    assert_eq!(got[6], Value::Date(2024, 2, 29, 0, 0, 0, 0));
    assert_eq!(got[7], Value::Date(2024, 12, 31, 23, 59, 59, 999_999));
    assert_eq!(got[8], Value::Time(true, 1, 2, 3, 4, 5));
    assert_eq!(got[9], Value::NULL);
    // Statement cache reuse, re-execution, and closing.
    for i in 0..20 {
        let n: Option<i64> = p.exec_first("SELECT ? + 1", (i,)).await.unwrap();
        assert_eq!(n, Some(i + 1));
    }
    let stmt = p.prep("SELECT ?").await.unwrap();
    p.close(stmt.clone()).await.unwrap();
    let err = p.exec_drop(&stmt, (1,)).await.unwrap_err();
    assert!(
        err.to_string().contains("Unknown prepared statement"),
        "{err}"
    );
    // Long data (COM_STMT_SEND_LONG_DATA is used by mysql_async for big params).
    let big = vec![b'z'; 3 * 1024 * 1024];
    p.exec_drop("INSERT INTO params (b) VALUES (?)", (big.clone(),))
        .await
        .unwrap();
    let back: Vec<u8> = p
        .exec_first("SELECT b FROM params WHERE id = LAST_INSERT_ID()", ())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(back, big);
    p.disconnect().await.unwrap();
    env.stop().await;
}

async fn error_of(c: &mut Conn, sql: &str) -> (u16, String, String) {
    match c.query_drop(sql).await.unwrap_err() {
        mysql_async::Error::Server(e) => (e.code, e.state, e.message),
        other => panic!("expected a server error for {sql}, got {other}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backend_errors_pass_through_with_codes() {
    let env = TestEnv::start("fid_errors").await;
    let mut d = env.direct().await;
    let mut p = env.proxy().await;
    d.query_drop("CREATE TABLE e (id INT PRIMARY KEY, v INT NOT NULL)")
        .await
        .unwrap();
    d.query_drop("INSERT INTO e VALUES (1, 1)").await.unwrap();
    for sql in [
        "INSERT INTO e VALUES (1, 1)",
        "SELECT * FROM missing",
        "SELECT nope FROM e",
        "SELEKT 1",
        "INSERT INTO e VALUES (2, NULL)",
        "SELECT id, IF(id = 1, (SELECT 1 UNION SELECT 2), 0) FROM e",
        "USE no_such_db",
        "SIGNAL SQLSTATE '45000' SET MESSAGE_TEXT = 'custom failure', MYSQL_ERRNO = 5001",
    ] {
        let a = error_of(&mut d, sql).await;
        let b = error_of(&mut p, sql).await;
        assert_eq!(a, b, "{sql}");
    }
    // The session is still usable after errors.
    let one: Option<i32> = p.query_first("SELECT 1").await.unwrap();
    assert_eq!(one, Some(1));
    d.disconnect().await.unwrap();
    p.disconnect().await.unwrap();
    env.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn error_in_the_middle_of_a_result_set() {
    let env = TestEnv::start("fid_midres").await;
    let mut p = env.proxy().await;
    p.query_drop("CREATE TABLE m (id INT PRIMARY KEY)")
        .await
        .unwrap();
    p.query_drop("INSERT INTO m SELECT seq FROM seq_1_to_5000")
        .await
        .unwrap();
    // Rows stream before the subquery fails at id 4000.
    let mut result = p
        .query_iter("SELECT id, IF(id = 4000, (SELECT 1 UNION SELECT 2), 0) FROM m ORDER BY id")
        .await
        .unwrap();
    let mut seen = 0;
    let err = loop {
        match result.next().await {
            Ok(Some(_)) => seen += 1,
            Ok(None) => panic!("expected an error mid-result"),
            Err(e) => break e,
        }
    };
    drop(result);
    assert!(
        err.to_string().contains("1242") || err.to_string().contains("more than 1 row"),
        "{err}"
    );
    assert!(seen > 0, "rows before the error reached the client");
    let ok: Option<i32> = p.query_first("SELECT 7").await.unwrap();
    assert_eq!(ok, Some(7));
    p.disconnect().await.unwrap();
    env.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ok_packets_carry_affected_rows_insert_ids_warnings_and_status() {
    let env = TestEnv::start("fid_ok").await;
    let mut p = env.proxy().await;
    p.query_drop("CREATE TABLE a (id INT PRIMARY KEY AUTO_INCREMENT, v TINYINT)")
        .await
        .unwrap();
    p.query_drop("SET SESSION auto_increment_increment = 5, auto_increment_offset = 3")
        .await
        .unwrap();
    p.query_drop("INSERT INTO a (v) VALUES (1), (2), (3)")
        .await
        .unwrap();
    assert_eq!(p.affected_rows(), 3);
    assert_eq!(p.last_insert_id(), Some(3));
    p.query_drop("SET SESSION sql_mode = ''").await.unwrap();
    p.query_drop("UPDATE a SET v = 1000").await.unwrap();
    assert_eq!(p.get_warnings(), 3);
    assert_eq!(p.affected_rows(), 3);
    p.query_drop("INSERT INTO a (id, v) VALUES (3, 9) ON DUPLICATE KEY UPDATE v = 9")
        .await
        .unwrap();
    assert_eq!(p.affected_rows(), 2);
    p.query_drop("BEGIN").await.unwrap();
    let in_trans: Option<i32> = p.query_first("SELECT @@in_transaction").await.unwrap();
    assert_eq!(in_trans, Some(1));
    p.query_drop("ROLLBACK").await.unwrap();
    p.disconnect().await.unwrap();
    env.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transactions_commit_and_rollback() {
    let env = TestEnv::start("fid_txn").await;
    let mut p = env.proxy().await;
    p.query_drop("CREATE TABLE t (id INT PRIMARY KEY, v INT) ENGINE=InnoDB")
        .await
        .unwrap();
    let mut tx = p.start_transaction(Default::default()).await.unwrap();
    tx.query_drop("INSERT INTO t VALUES (1, 1)").await.unwrap();
    tx.commit().await.unwrap();
    let mut tx = p.start_transaction(Default::default()).await.unwrap();
    tx.query_drop("INSERT INTO t VALUES (2, 2)").await.unwrap();
    tx.query_drop("SAVEPOINT s").await.unwrap();
    tx.query_drop("INSERT INTO t VALUES (3, 3)").await.unwrap();
    tx.query_drop("ROLLBACK TO SAVEPOINT s").await.unwrap();
    tx.rollback().await.unwrap();
    p.query_drop("SET autocommit = 0").await.unwrap();
    p.query_drop("INSERT INTO t VALUES (4, 4)").await.unwrap();
    p.query_drop("COMMIT").await.unwrap();
    p.query_drop("INSERT INTO t VALUES (5, 5)").await.unwrap();
    p.query_drop("ROLLBACK").await.unwrap();
    let ids: Vec<i32> = p.query("SELECT id FROM t ORDER BY id").await.unwrap();
    assert_eq!(ids, vec![1, 4]);
    // Visible from another connection too: committed on the primary.
    let mut d = env.direct().await;
    let ids: Vec<i32> = d.query("SELECT id FROM t ORDER BY id").await.unwrap();
    assert_eq!(ids, vec![1, 4]);
    d.disconnect().await.unwrap();
    p.disconnect().await.unwrap();
    env.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn use_and_set_persist_within_a_session() {
    let env = TestEnv::start("fid_session").await;
    let other = format!("{}_other", env.db);
    let mut d = env.direct().await;
    d.query_drop(format!("DROP DATABASE IF EXISTS `{other}`"))
        .await
        .unwrap();
    d.query_drop(format!("CREATE DATABASE `{other}`"))
        .await
        .unwrap();
    let mut p = env.proxy().await;
    p.query_drop(format!("USE `{other}`")).await.unwrap();
    p.query_drop("SET NAMES latin1").await.unwrap();
    p.query_drop("SET @v = 'kept', SESSION sql_mode = 'ANSI_QUOTES', time_zone = '+05:00'")
        .await
        .unwrap();
    p.query_drop("CREATE TEMPORARY TABLE tmp (x INT)")
        .await
        .unwrap();
    for _ in 0..3 {
        let row: (Option<String>, String, String, String, String) = p
            .query_first("SELECT DATABASE(), @@character_set_client, @v, @@sql_mode, @@time_zone")
            .await
            .unwrap()
            .unwrap();
        assert_eq!(
            row,
            (
                Some(other.clone()),
                "latin1".into(),
                "kept".into(),
                "ANSI_QUOTES".into(),
                "+05:00".into()
            )
        );
        let n: Option<i64> = p.query_first("SELECT COUNT(*) FROM tmp").await.unwrap();
        assert_eq!(n, Some(0));
    }
    // COM_INIT_DB (mysql_async's select_db) also sticks.
    p.query_drop(format!("USE `{}`", env.db)).await.unwrap();
    let db: Option<String> = p.query_first("SELECT DATABASE()").await.unwrap();
    assert_eq!(db.as_deref(), Some(env.db.as_str()));
    p.disconnect().await.unwrap();
    d.query_drop(format!("DROP DATABASE `{other}`"))
        .await
        .unwrap();
    d.disconnect().await.unwrap();
    env.stop().await;
}
