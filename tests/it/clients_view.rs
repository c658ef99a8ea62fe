//! What the application sees, compared with the same steps sent straight
//! to MariaDB (issue 26).

use crate::common::raw::RawClient;
use crate::common::*;
use mysql_async::prelude::*;
use std::time::Duration;
use tokio::io::AsyncReadExt;

/// Reads until the peer closes; returns what came before the close, or
/// None when the connection is still open after `within`.
async fn closed_within(c: &mut RawClient, within: Duration) -> Option<Vec<u8>> {
    let mut got = Vec::new();
    let read = async {
        let mut buf = [0u8; 4096];
        loop {
            match c.stream.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => got.extend_from_slice(&buf[..n]),
            }
        }
    };
    tokio::time::timeout(within, read).await.ok()?;
    Some(got)
}

/// A backend the server closes while the client is idle (here its
/// `wait_timeout`) closes the client's connection too, as a direct
/// connection is closed: a pool that waits for the close event must not
/// keep a dead session forever.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_the_server_times_out_closes_as_a_direct_one_does() {
    let env = TestEnv::start("idle_timeout").await;
    let direct_addr = format!("{MARIADB_HOST}:{MARIADB_PORT}").parse().unwrap();
    let mut direct = RawClient::login(direct_addr, "root", "", &env.db).await;
    let mut proxied = RawClient::login(env.addr, USER, PASSWORD, &env.db).await;
    for c in [&mut direct, &mut proxied] {
        let ok = c.query("SET SESSION wait_timeout = 1").await;
        assert_eq!(ok[0][0], 0x00, "{ok:?}");
    }
    let limit = Duration::from_secs(20);
    let direct_saw = closed_within(&mut direct, limit).await;
    assert!(
        direct_saw.is_some(),
        "the server closes an idle session after wait_timeout"
    );
    let proxied_saw = closed_within(&mut proxied, limit).await;
    assert_eq!(
        proxied_saw, direct_saw,
        "through Tandem the client sees the close (and whatever the server said) as directly"
    );
    env.stop().await;
}

/// KILL of the session's backend thread by another connection, while the
/// client is idle: the client's connection closes at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_killed_on_the_server_while_idle_closes_the_client() {
    let env = TestEnv::start("idle_kill").await;
    let mut proxied = RawClient::login(env.addr, USER, PASSWORD, &env.db).await;
    let ok = proxied.query("SET @tandem_idle_kill = 1").await;
    assert_eq!(ok[0][0], 0x00, "{ok:?}");
    // Every server thread in this test's database but the killer's own:
    // the session's backend connection among them.
    let mut admin = env.direct().await;
    let me: u64 = admin
        .query_first("SELECT CONNECTION_ID()")
        .await
        .unwrap()
        .unwrap();
    let ids: Vec<u64> = admin
        .exec(
            "SELECT ID FROM information_schema.PROCESSLIST WHERE DB = ? AND ID <> ?",
            (&env.db, me),
        )
        .await
        .unwrap();
    assert!(!ids.is_empty());
    for id in ids {
        let _ = admin.query_drop(format!("KILL {id}")).await;
    }
    assert!(
        closed_within(&mut proxied, Duration::from_secs(20))
            .await
            .is_some(),
        "the client's connection stays open on a killed session"
    );
    admin.disconnect().await.unwrap();
    env.stop().await;
}

/// Statements that do not commit in MySQL leave the open transaction open
/// through a mirroring Tandem too: a ROLLBACK after them rolls back the
/// write before them, as it does directly. (Tandem used to journal and
/// commit the transaction first.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn statements_that_do_not_commit_leave_the_transaction_open() {
    use crate::common::mirror::*;
    let env = MirrorEnv::start("nocommit", "").await;
    env.create_both("CREATE TABLE t (id INT PRIMARY KEY)").await;
    let steps = [
        "CREATE TEMPORARY TABLE scratch (i INT)",
        "DROP TEMPORARY TABLE IF EXISTS scratch",
        "DO 1",
        "SET autocommit = 0",
        "SET @@autocommit = OFF",
        "/* only a comment */",
    ];
    let mut direct = mysql_async::Conn::new(direct_opts(&env.primary))
        .await
        .unwrap();
    direct
        .query_drop("CREATE TABLE t_direct (id INT PRIMARY KEY)")
        .await
        .unwrap();
    let mut c = env.proxy().await;
    for (i, step) in steps.iter().enumerate() {
        for (conn, table) in [(&mut direct, "t_direct"), (&mut c, "t")] {
            conn.query_drop("SET autocommit = 1").await.unwrap();
            conn.query_drop("BEGIN").await.unwrap();
            conn.query_drop(format!("INSERT INTO {table} VALUES ({i})"))
                .await
                .unwrap();
            if let Err(e) = conn.query_drop(*step).await {
                // A comment alone is an empty query to the server.
                assert!(e.to_string().contains("Query was empty"), "{step}: {e}");
            }
            conn.query_drop("ROLLBACK").await.unwrap();
        }
        let kept = |db: String, table: &'static str| async move {
            let mut d = mysql_async::Conn::new(direct_opts(&db)).await.unwrap();
            let n: u64 = d
                .query_first(format!("SELECT COUNT(*) FROM {table}"))
                .await
                .unwrap()
                .unwrap();
            d.disconnect().await.unwrap();
            n
        };
        assert_eq!(
            kept(env.primary.clone(), "t").await,
            kept(env.primary.clone(), "t_direct").await,
            "after {step}: through Tandem the ROLLBACK must undo what it undoes directly"
        );
    }
    env.wait_caught_up().await;
    assert_same(&env.primary, &env.secondary, "t").await;
    drop(c);
    direct.disconnect().await.unwrap();
    env.stop().await;
}

/// Under LOCK TABLES a mirroring Tandem cannot wrap a write in the
/// transaction its journal needs (BEGIN would release the client's table
/// locks, as it used to do silently): the write follows unsafe_writes
/// (here: refused, saying why), the client's locks stay held, and after
/// UNLOCK TABLES writes are mirrored again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_under_lock_tables_keep_the_locks_and_follow_unsafe_writes() {
    use crate::common::mirror::*;
    let env = MirrorEnv::start("locktables", "").await;
    env.create_both("CREATE TABLE t (id INT PRIMARY KEY)").await;
    let mut c = env.proxy().await;
    c.query_drop("LOCK TABLES t WRITE").await.unwrap();
    let err = c.query_drop("INSERT INTO t VALUES (1)").await.unwrap_err();
    assert!(
        err.to_string().contains("LOCK TABLES is in effect"),
        "{err}"
    );
    // The table is still locked for everyone else.
    let mut other = mysql_async::Conn::new(direct_opts(&env.primary))
        .await
        .unwrap();
    other
        .query_drop("SET SESSION lock_wait_timeout = 1")
        .await
        .unwrap();
    let blocked = other.query_drop("INSERT INTO t VALUES (9)").await;
    assert!(blocked.is_err(), "the client's table lock was released");
    c.query_drop("UNLOCK TABLES").await.unwrap();
    c.query_drop("INSERT INTO t VALUES (2)").await.unwrap();
    env.wait_caught_up().await;
    assert_eq!(assert_same(&env.primary, &env.secondary, "t").await, 1);
    other.disconnect().await.unwrap();
    drop(c);
    env.stop().await;
}

/// SQL-level prepared statements through a mirroring Tandem: EXECUTE of
/// text that only reads works as it does directly; EXECUTE of a write runs
/// as its text with the USING values in place (user variables carried by
/// value) and is mirrored; text Tandem never saw (from a variable) or a
/// `LIMIT ?` follows unsafe_writes (here: refused, saying why).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sql_level_prepared_statements_run_and_writes_are_mirrored() {
    use crate::common::mirror::*;
    let env = MirrorEnv::start("sqlprepare", "").await;
    env.create_both("CREATE TABLE t (id INT PRIMARY KEY, n INT NOT NULL, s VARCHAR(10))")
        .await;
    env.create_both("INSERT INTO t VALUES (1, 0, NULL), (2, 0, NULL), (3, 0, NULL)")
        .await;
    let mut c = env.proxy().await;
    c.query_drop("PREPARE r FROM 'SELECT COUNT(*) FROM t WHERE id > ?'")
        .await
        .unwrap();
    c.query_drop("SET @a = 1").await.unwrap();
    let n: Option<i64> = c.query_first("EXECUTE r USING @a").await.unwrap();
    assert_eq!(n, Some(2));
    c.query_drop("DEALLOCATE PREPARE r").await.unwrap();
    c.query_drop("PREPARE w FROM 'UPDATE t SET n = n + ?, s = ? WHERE id = ?'")
        .await
        .unwrap();
    c.query_drop("SET @s = 'é,x'").await.unwrap();
    c.query_drop("EXECUTE w USING @a, @s, 1").await.unwrap();
    assert_eq!(c.affected_rows(), 1);
    c.query_drop("SET @a = 41").await.unwrap();
    c.query_drop("BEGIN").await.unwrap();
    c.query_drop("EXECUTE w USING @a + 1, CONCAT(@s, '!'), 2")
        .await
        .unwrap();
    c.query_drop("COMMIT").await.unwrap();
    c.query_drop("PREPARE i FROM 'INSERT INTO t VALUES (?, ?, ?)'")
        .await
        .unwrap();
    c.query_drop("EXECUTE i USING 4, @a, NULL").await.unwrap();
    let got: Vec<(i32, i32, Option<String>)> =
        c.query("SELECT id, n, s FROM t ORDER BY id").await.unwrap();
    assert_eq!(
        got,
        vec![
            (1, 1, Some("é,x".into())),
            (2, 42, Some("é,x!".into())),
            (3, 0, None),
            (4, 41, None)
        ]
    );
    c.query_drop("SET @text = 'DELETE FROM t WHERE id = 3'")
        .await
        .unwrap();
    c.query_drop("PREPARE v FROM @text").await.unwrap();
    let err = c.query_drop("EXECUTE v").await.unwrap_err();
    assert!(err.to_string().contains("from a variable"), "{err}");
    c.query_drop("PREPARE l FROM 'DELETE FROM t ORDER BY id LIMIT ?'")
        .await
        .unwrap();
    let err = c.query_drop("EXECUTE l USING 1").await.unwrap_err();
    assert!(err.to_string().contains("LIMIT"), "{err}");
    env.wait_caught_up().await;
    assert_eq!(env.assert_same("t").await, 4);
    drop(c);
    env.stop().await;
}

/// Tandem's bookkeeping lives in a database of its own: the application's
/// schema shows only its own tables, a reset that drops every table of it
/// loses nothing of Tandem's, and if Tandem's database is dropped anyway,
/// writes go on (it is created again, loudly) instead of failing one by one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bookkeeping_stays_out_of_the_schema_and_survives_being_dropped() {
    use crate::common::mirror::*;
    init_logging();
    let book = "tandem_it_bookkeeping";
    // An earlier run cut short may have left it with another journal's
    // position.
    drop_databases(&[book]).await;
    let env = MirrorEnv::start("bookkeeping", &format!("  bookkeeping_database: {book}")).await;
    env.create_both("CREATE TABLE t (id INT PRIMARY KEY, v INT NOT NULL)")
        .await;
    let mut c = env.proxy().await;
    c.query_drop("INSERT INTO t VALUES (1, 1)").await.unwrap();
    c.query_drop("BEGIN").await.unwrap();
    c.query_drop("INSERT INTO t VALUES (2, 2)").await.unwrap();
    c.query_drop("COMMIT").await.unwrap();
    env.wait_caught_up().await;
    let tables: Vec<String> = c.query("SHOW TABLES").await.unwrap();
    assert_eq!(tables, vec!["t".to_string()]);
    // A test suite's reset: drop every table of the schema, create anew.
    for t in tables {
        c.query_drop(format!("DROP TABLE `{t}`")).await.unwrap();
    }
    c.query_drop("CREATE TABLE t (id INT PRIMARY KEY, v INT NOT NULL)")
        .await
        .unwrap();
    c.query_drop("INSERT INTO t VALUES (3, 3)").await.unwrap();
    // Tandem's own database dropped behind its back (same server: the
    // primary's markers and the secondary's position both go).
    let mut d = mysql_async::Conn::new(direct_opts(&env.primary))
        .await
        .unwrap();
    d.query_drop(format!("DROP DATABASE {book}")).await.unwrap();
    c.query_drop("INSERT INTO t VALUES (4, 4)").await.unwrap();
    c.query_drop("BEGIN").await.unwrap();
    c.query_drop("UPDATE t SET v = v + 10").await.unwrap();
    c.query_drop("COMMIT").await.unwrap();
    d.query_drop(format!("DROP DATABASE {book}")).await.unwrap();
    c.query_drop("BEGIN").await.unwrap();
    c.query_drop("INSERT INTO t VALUES (5, 5)").await.unwrap();
    c.query_drop("COMMIT").await.unwrap();
    env.wait_caught_up().await;
    assert_eq!(assert_same(&env.primary, &env.secondary, "t").await, 3);
    let markers: u64 = d
        .query_first(format!(
            "SELECT COUNT(*) FROM information_schema.TABLES WHERE TABLE_SCHEMA = '{book}'"
        ))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(markers, 5, "every bookkeeping table is back");
    assert!(
        env.mirror().divergent().is_empty(),
        "{:?}",
        env.mirror().divergent()
    );
    d.query_drop(format!("DROP DATABASE IF EXISTS {book}"))
        .await
        .unwrap();
    drop((c, d));
    env.stop().await;
}

/// The client's own diagnostics after mirrored writes: `ROW_COUNT()` and
/// `SHOW WARNINGS` answer for the client's statement, not for the
/// statements Tandem runs around it (its marker insert, COMMIT, `SET
/// TIMESTAMP = DEFAULT`). Compared step by step with a direct connection.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn row_count_and_warnings_after_mirrored_writes_are_the_clients() {
    use crate::common::mirror::*;
    let env = MirrorEnv::start("diagnostics", "").await;
    let (direct_db, mut d) = direct_twin(
        &env,
        &["CREATE TABLE t (id INT PRIMARY KEY, v INT NOT NULL, at DATETIME NULL)"],
    )
    .await;
    let mut c = env.proxy().await;
    let steps: &[(&str, bool)] = &[
        ("INSERT INTO t (id, v) VALUES (1, 1), (2, 2), (3, 3)", false),
        ("SELECT ROW_COUNT()", true),
        ("INSERT IGNORE INTO t (id, v) VALUES (1, 9), (4, 4)", false),
        ("SHOW WARNINGS", true),
        ("SELECT ROW_COUNT() AS rc", true),
        ("UPDATE t SET v = v + 1 WHERE id < 3", false),
        ("SELECT ROW_COUNT()", true),
        ("UPDATE t SET v = v WHERE id = 1", false),
        ("SELECT ROW_COUNT()", true),
        ("BEGIN", false),
        ("UPDATE t SET at = NOW() WHERE id <= 2", false),
        ("SELECT ROW_COUNT()", true),
        ("INSERT IGNORE INTO t (id, v) VALUES (2, 0)", false),
        ("SHOW WARNINGS", true),
        ("COMMIT", false),
        ("DELETE FROM t WHERE id = 4", false),
        ("SELECT ROW_COUNT(), 1 + ROW_COUNT() AS b", true),
        ("SELECT ROW_COUNT()", true),
    ];
    run_compared(&mut c, &mut d, steps).await;
    // A failed autocommit write: ROW_COUNT() is -1, as directly.
    for conn in [&mut c, &mut d] {
        conn.query_drop("INSERT INTO t (id, v) VALUES (1, 1)")
            .await
            .unwrap_err();
        let rc: i64 = conn
            .query_first("SELECT ROW_COUNT()")
            .await
            .unwrap()
            .unwrap();
        assert_eq!(rc, -1);
    }
    // In a prepared statement too (its parameters kept), after an
    // autocommit write and after one in a transaction.
    for wrap in [false, true] {
        let mut seen = Vec::new();
        for conn in [&mut c, &mut d] {
            if wrap {
                conn.query_drop("BEGIN").await.unwrap();
            }
            conn.query_drop("UPDATE t SET v = v + 1 WHERE id <= 3")
                .await
                .unwrap();
            let stmt = conn.prep("SELECT ROW_COUNT(), ? + 1 AS x").await.unwrap();
            let mut r = conn.exec_iter(&stmt, (41,)).await.unwrap();
            let names: Vec<String> = r
                .columns()
                .map(|cs| cs.iter().map(|c| c.name_str().into_owned()).collect())
                .unwrap_or_default();
            let rows: Vec<(i64, i64)> = r.collect().await.unwrap();
            drop(r);
            conn.close(stmt).await.unwrap();
            if wrap {
                conn.query_drop("COMMIT").await.unwrap();
            }
            seen.push((names, rows));
        }
        assert_eq!(
            seen[0], seen[1],
            "prepared ROW_COUNT(), transaction: {wrap}"
        );
        assert_eq!(seen[0].1, vec![(3, 42)]);
    }
    env.wait_caught_up().await;
    assert_same(&env.primary, &env.secondary, "t").await;
    drop((c, d));
    drop_databases(&[&direct_db]).await;
    env.stop().await;
}

/// A database beside the mirror's for the same steps sent directly:
/// `ddl` runs on both mirror sides and on it; its name and a connection.
async fn direct_twin(
    env: &crate::common::mirror::MirrorEnv,
    ddl: &[&str],
) -> (String, mysql_async::Conn) {
    let direct_db = format!("{}_direct", env.primary);
    fresh_database(&direct_db).await;
    let mut d = mysql_async::Conn::new(direct_opts(&direct_db))
        .await
        .unwrap();
    for s in ddl {
        env.create_both(s).await;
        d.query_drop(*s).await.unwrap();
    }
    (direct_db, d)
}

/// Runs each step through Tandem (`c`) and directly (`d`); where a step
/// says so, both answers (column names and rows) must be equal.
async fn run_compared(
    c: &mut mysql_async::Conn,
    d: &mut mysql_async::Conn,
    steps: &[(&str, bool)],
) {
    for (sql, compare) in steps {
        let got = read_all(c, sql).await;
        let want = read_all(d, sql).await;
        if *compare {
            assert_eq!(got, want, "{sql}");
        }
    }
}

/// Column names and rows of a statement's result, as text.
async fn read_all(c: &mut mysql_async::Conn, sql: &str) -> (Vec<String>, Vec<Vec<String>>) {
    let mut r = c.query_iter(sql).await.unwrap();
    let names = r
        .columns()
        .map(|cs| cs.iter().map(|c| c.name_str().into_owned()).collect())
        .unwrap_or_default();
    let rows: Vec<mysql_async::Row> = r.collect().await.unwrap();
    let rows = rows
        .into_iter()
        .map(|row| row.unwrap().into_iter().map(|v| v.as_sql(false)).collect())
        .collect();
    (names, rows)
}

/// User variables in writes, as applications use them: set by SET or by
/// `SELECT … INTO`, read by later writes (autocommit, in a transaction,
/// prepared), of every type a variable holds. The secondary gets the
/// primary's values. A DOUBLE (no exact text form) and an assignment
/// inside a write still follow `unsafe_writes`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_reading_user_variables_are_mirrored_with_their_values() {
    use crate::common::mirror::*;
    let env = MirrorEnv::start("uservars", "").await;
    env.create_both(
        "CREATE TABLE t (id INT PRIMARY KEY, n BIGINT, d DECIMAL(20,6), s VARCHAR(20), b VARBINARY(8), at DATETIME(6))",
    )
    .await;
    let mut c = env.proxy().await;
    c.query_drop("SET @x := 41, @d := 1.5, @s := 'Zoë', @b := X'00FF', @nothing := NULL")
        .await
        .unwrap();
    c.query_drop("INSERT INTO t VALUES (@x + 1, @x, @d * 3, @s, @b, @nothing)")
        .await
        .unwrap();
    c.query_drop("SELECT MAX(id) INTO @m FROM t").await.unwrap();
    c.query_drop("BEGIN").await.unwrap();
    c.query_drop("INSERT INTO t (id, n) VALUES (@m + 1, @m)")
        .await
        .unwrap();
    c.query_drop("SET @s = CONCAT(@s, '!')").await.unwrap();
    c.query_drop("UPDATE t SET s = @s WHERE id = @m + 1")
        .await
        .unwrap();
    c.query_drop("COMMIT").await.unwrap();
    c.exec_drop("UPDATE t SET n = n + @x + ? WHERE id = @m", (1,))
        .await
        .unwrap();
    c.query_drop("SET @f = 0.1e0").await.unwrap();
    for (sql, needle) in [
        ("UPDATE t SET d = @f WHERE id = 42", "DOUBLE"),
        ("UPDATE t SET n = (@k := @k + 1)", "assigns a user variable"),
    ] {
        let e = c.query_drop(sql).await.unwrap_err().to_string();
        assert!(
            e.contains(needle) && e.contains("unsafe_writes"),
            "{sql}: {e}"
        );
    }
    env.wait_caught_up().await;
    assert_eq!(assert_same(&env.primary, &env.secondary, "t").await, 2);
    let s: String = c
        .query_first("SELECT s FROM t WHERE id = 43")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(s, "Zoë!");
    assert!(
        env.mirror().divergent().is_empty(),
        "{:?}",
        env.mirror().divergent()
    );
    drop(c);
    env.stop().await;
}

/// `FOUND_ROWS()` after Tandem's own reads on the session (the settings a
/// first write carries, a keyed write's locking read, LAST_INSERT_ID(),
/// user variables) answers what it answers directly: rewritten in
/// statements that keep the server's value, given back to the server
/// before statements Tandem cannot rewrite (a subquery, a prepared
/// statement); a write reading it through a variable is mirrored with the
/// client's value.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn found_rows_after_mirrored_writes_is_the_clients() {
    use crate::common::mirror::*;
    let env = MirrorEnv::start("found_rows", "").await;
    let (direct_db, mut d) = direct_twin(
        &env,
        &[
            "CREATE TABLE t (id INT AUTO_INCREMENT PRIMARY KEY, v INT NOT NULL)",
            "CREATE TABLE log (id INT AUTO_INCREMENT PRIMARY KEY, n BIGINT)",
        ],
    )
    .await;
    let mut c = env.proxy().await;
    let steps: &[(&str, bool)] = &[
        (
            "INSERT INTO t (v) VALUES (1), (2), (3), (4), (5), (6), (7)",
            false,
        ),
        (
            "SELECT SQL_CALC_FOUND_ROWS * FROM t ORDER BY id LIMIT 2",
            true,
        ),
        // The first write of the session reads its settings.
        ("UPDATE t SET v = v + 1 WHERE id = 1", false),
        ("SELECT FOUND_ROWS()", true),
        (
            "SELECT SQL_CALC_FOUND_ROWS * FROM t ORDER BY id LIMIT 3",
            true,
        ),
        // A keyed write (LIMIT) reads the keys it locks.
        ("UPDATE t SET v = v + 1 ORDER BY id LIMIT 2", false),
        ("SET @n = FOUND_ROWS()", false),
        ("INSERT INTO log (n) VALUES (@n)", false),
        ("SELECT FOUND_ROWS() AS f, 1 + FOUND_ROWS()", true),
        (
            "SELECT SQL_CALC_FOUND_ROWS * FROM t WHERE id > 2 LIMIT 1",
            true,
        ),
        ("INSERT INTO t (v) VALUES (LAST_INSERT_ID())", false),
        ("BEGIN", false),
        ("SET @x := 5", false),
        ("INSERT INTO t (v) VALUES (@x)", false),
        ("SET @f = FOUND_ROWS()", false),
        ("COMMIT", false),
        ("SELECT @f", true),
        ("SELECT SQL_CALC_FOUND_ROWS * FROM t LIMIT 0", true),
        ("UPDATE t SET v = v + 1 ORDER BY id LIMIT 1", false),
        // A subquery: the server is given the value back first.
        ("SET @g = (SELECT FOUND_ROWS())", false),
        ("SELECT @g", true),
        ("SELECT FOUND_ROWS()", true),
    ];
    run_compared(&mut c, &mut d, steps).await;
    // A prepared statement reads the server's value, which is given back.
    for conn in [&mut c, &mut d] {
        conn.query_drop("SELECT SQL_CALC_FOUND_ROWS * FROM t LIMIT 1")
            .await
            .unwrap();
        conn.query_drop("UPDATE t SET v = v + 1 ORDER BY id LIMIT 1")
            .await
            .unwrap();
    }
    let want: Option<u64> = d.exec_first("SELECT FOUND_ROWS()", ()).await.unwrap();
    let got: Option<u64> = c.exec_first("SELECT FOUND_ROWS()", ()).await.unwrap();
    assert_eq!(got, want);
    env.wait_caught_up().await;
    assert_same(&env.primary, &env.secondary, "t").await;
    assert_same(&env.primary, &env.secondary, "log").await;
    let logged: Vec<u64> = c.query("SELECT n FROM log ORDER BY id").await.unwrap();
    let direct: Vec<u64> = d.query("SELECT n FROM log ORDER BY id").await.unwrap();
    assert_eq!(logged, direct);
    drop((c, d));
    drop_databases(&[&direct_db]).await;
    env.stop().await;
}

/// Every result set of a multi-statement packet, as text.
async fn read_results(
    c: &mut mysql_async::Conn,
    sql: &str,
) -> Result<Vec<(u64, Vec<Vec<String>>)>, String> {
    let mut r = c.query_iter(sql).await.map_err(|e| e.to_string())?;
    let mut out = Vec::new();
    loop {
        let rows: Vec<mysql_async::Row> = r.collect().await.map_err(|e| e.to_string())?;
        let rows = rows
            .into_iter()
            .map(|row| row.unwrap().into_iter().map(|v| v.as_sql(false)).collect())
            .collect();
        out.push((r.affected_rows(), rows));
        if r.is_empty() {
            break;
        }
    }
    Ok(out)
}

/// A multi-statement packet with writes (refused while mirroring before)
/// runs statement by statement: the client gets the same results as
/// directly, one per statement; the first error stops the packet and the
/// statements before it stand; every write reaches the secondary with
/// its own pinned values.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn multi_statement_packets_with_writes_are_mirrored() {
    use crate::common::mirror::*;
    let env = MirrorEnv::start("multi", "").await;
    let (direct_db, mut d) = direct_twin(
        &env,
        &["CREATE TABLE t (id INT AUTO_INCREMENT PRIMARY KEY, v INT NOT NULL, at DATETIME(6) NULL)"],
    )
    .await;
    let mut c = env.proxy().await;
    let packets = [
        "INSERT INTO t (v) VALUES (1), (2); INSERT INTO t (v) VALUES (3); SELECT LAST_INSERT_ID(), ROW_COUNT()",
        "UPDATE t SET v = v * 10 WHERE id > 1; SELECT id, v FROM t ORDER BY id",
        "BEGIN; INSERT INTO t (v, at) VALUES (4, NOW(6)); SAVEPOINT a; INSERT INTO t (v) VALUES (5); ROLLBACK TO a; COMMIT",
        "DELETE FROM t WHERE v = 4; SELECT COUNT(*) FROM t; /* last */ DO 1",
        // The second statement fails: the first stands, the third never runs.
        "INSERT INTO t (v) VALUES (6); INSERT INTO t (id, v) VALUES (1, 0); INSERT INTO t (v) VALUES (7)",
        "SELECT id, v FROM t ORDER BY id",
    ];
    for sql in packets {
        let got = read_results(&mut c, sql).await;
        let want = read_results(&mut d, sql).await;
        match (&got, &want) {
            (Ok(g), Ok(w)) => assert_eq!(g, w, "{sql}"),
            (Err(g), Err(w)) => assert_eq!(g, w, "{sql}"),
            _ => panic!("{sql}: through Tandem {got:?}, directly {want:?}"),
        }
    }
    env.wait_caught_up().await;
    assert_eq!(assert_same(&env.primary, &env.secondary, "t").await, 4);
    assert_eq!(env.dead_lettered(), 0);
    drop((c, d));
    drop_databases(&[&direct_db]).await;
    env.stop().await;
}
