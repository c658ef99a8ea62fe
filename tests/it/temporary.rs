//! Temporary tables through a mirroring Tandem (issue 26): they live on the
//! primary only, and a write to real tables that reads one carries a copy
//! of it to the secondary inside its journaled transaction.

use crate::common::mirror::*;
use crate::common::*;
use mysql_async::prelude::*;
use mysql_async::Conn;

/// Each table's rows in forms that show every bit of the stored value
/// (FLOAT through DOUBLE, strings as hex, TIMESTAMP as the instant).
async fn exact_rows(db: &str, sql: &str) -> Vec<Vec<mysql_async::Value>> {
    let mut c = Conn::new(direct_opts(db)).await.unwrap();
    let rows: Vec<mysql_async::Row> = c.query(sql).await.unwrap();
    c.disconnect().await.unwrap();
    rows.into_iter().map(|r| r.unwrap()).collect()
}

async fn assert_exactly_same(env: &MirrorEnv, sql: &str) -> usize {
    let a = exact_rows(&env.primary, sql).await;
    let b = exact_rows(&env.secondary, sql).await;
    assert_eq!(a, b, "{sql}");
    a.len()
}

const ORDERS: &str =
    "SELECT id, v, HEX(note), CAST(f AS DOUBLE), UNIX_TIMESTAMP(ts), b + 0, e, HEX(j) \
                      FROM orders ORDER BY id";

/// INSERT … SELECT, multi-table UPDATE, DELETE with a subquery and an
/// UPDATE whose SET reads a temporary table: each is mirrored with a copy
/// of the table (values that text would round: a FLOAT's seven digits,
/// latin1 bytes, a TIMESTAMP written under +05:30, BIT, ENUM, JSON), in
/// and out of transactions; a rolled-back one leaves nothing; two
/// sessions' temporary tables of one name never meet; the real table the
/// copy hides on the secondary is written as itself afterwards.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_reading_temporary_tables_carry_them_to_the_secondary() {
    let env = MirrorEnv::start("tempcarry", "").await;
    env.create_both(
        "CREATE TABLE orders (id INT PRIMARY KEY, v INT, note VARCHAR(20) CHARACTER SET latin1, \
         f FLOAT, ts TIMESTAMP(6) NULL, b BIT(3), e ENUM('x','y'), j JSON)",
    )
    .await;
    env.create_both("CREATE TABLE tmp (id INT PRIMARY KEY, v INT)")
        .await;
    env.create_both("CREATE TABLE items (id INT AUTO_INCREMENT PRIMARY KEY, v INT)")
        .await;
    let mut a = env.proxy().await;
    let mut b = env.proxy().await;
    a.query_drop("SET time_zone = '+05:30'").await.unwrap();
    let temp = "CREATE TEMPORARY TABLE tmp (id INT PRIMARY KEY, v INT, \
                note VARCHAR(20) CHARACTER SET latin1, f FLOAT, ts TIMESTAMP(6) NULL, b BIT(3), \
                e ENUM('x','y'), j JSON, g INT AS (v * 2) VIRTUAL)";
    for c in [&mut a, &mut b] {
        c.query_drop(temp).await.unwrap();
    }
    a.query_drop(
        "INSERT INTO tmp (id, v, note, f, ts, b, e, j) VALUES \
         (1, 1, _latin1 X'E9', 1.0000001, '2024-03-31 02:30:00.123456', b'101', 'y', '{\"k\": [1, 2.5]}'), \
         (2, 2, 'it''s', 16777217, NULL, b'0', 'x', NULL), \
         (3, 3, '', 3.40282e38, '1970-01-01 05:30:01', NULL, NULL, '\"\"')",
    )
    .await
    .unwrap();
    b.query_drop("INSERT INTO tmp (id, v) VALUES (10, 100), (11, 110)")
        .await
        .unwrap();
    // Interleaved: each session's copy holds its own rows.
    a.query_drop("INSERT INTO orders (id, v, note, f, ts, b, e, j) SELECT id, v, note, f, ts, b, e, j FROM tmp")
        .await
        .unwrap();
    b.query_drop("INSERT INTO orders (id, v) SELECT id, v FROM tmp")
        .await
        .unwrap();
    a.query_drop("UPDATE orders JOIN tmp USING (id) SET orders.v = tmp.g + orders.v")
        .await
        .unwrap();
    b.query_drop("BEGIN").await.unwrap();
    b.query_drop("UPDATE orders SET v = (SELECT MAX(v) FROM tmp) WHERE id = 10")
        .await
        .unwrap();
    b.query_drop("DELETE FROM orders WHERE id IN (SELECT id FROM tmp WHERE v > 105)")
        .await
        .unwrap();
    b.query_drop("COMMIT").await.unwrap();
    a.query_drop("BEGIN").await.unwrap();
    a.query_drop("DELETE FROM orders WHERE id IN (SELECT id FROM tmp)")
        .await
        .unwrap();
    a.query_drop("ROLLBACK").await.unwrap();
    // An auto-increment target: with ORDER BY the ids are the same on
    // both sides.
    a.query_drop("INSERT INTO items (v) SELECT v FROM tmp ORDER BY id")
        .await
        .unwrap();
    // Without ORDER BY, Tandem orders by the temporary table's key.
    b.query_drop("INSERT INTO items (v) SELECT v FROM tmp WHERE v > 0")
        .await
        .unwrap();
    // The real `tmp` (hidden by the copy on the secondary while a carried
    // write ran) is itself again: a session without a temporary table
    // writes it.
    let mut c = env.proxy().await;
    c.query_drop("INSERT INTO tmp VALUES (7, 7)").await.unwrap();
    env.wait_caught_up().await;
    assert_eq!(assert_exactly_same(&env, ORDERS).await, 4);
    let got: Vec<(i32, i32)> = a
        .query("SELECT id, v FROM orders ORDER BY id")
        .await
        .unwrap();
    assert_eq!(got, vec![(1, 3), (2, 6), (3, 9), (10, 110)]);
    let f: Vec<(i32, f64)> = a
        .query("SELECT id, CAST(f AS DOUBLE) FROM orders WHERE f IS NOT NULL ORDER BY id")
        .await
        .unwrap();
    assert_eq!(f[0].1, 1.0000001192092896, "{f:?}");
    assert_eq!(f[1].1, 16777216.0, "{f:?}");
    assert_eq!(assert_same(&env.primary, &env.secondary, "items").await, 5);
    assert_eq!(assert_same(&env.primary, &env.secondary, "tmp").await, 1);
    assert_eq!(env.dead_lettered(), 0);
    drop((a, b, c));
    env.stop().await;
}

/// What is not carried follows unsafe_writes (here: refused, saying why),
/// and writes to temporary tables alone are not mirrored (even when one
/// hides a real table of the same name).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn temporary_tables_stay_on_the_primary_and_what_is_not_carried_is_refused() {
    let env = MirrorEnv::start("temptables", "").await;
    env.create_both("CREATE TABLE orders (id INT PRIMARY KEY, v INT)")
        .await;
    let mut c = env.proxy().await;
    c.query_drop("CREATE TEMPORARY TABLE orders (id INT PRIMARY KEY, v INT)")
        .await
        .unwrap();
    c.query_drop("INSERT INTO orders VALUES (1, 1)")
        .await
        .unwrap();
    c.query_drop("UPDATE orders SET v = 10 WHERE id = 1")
        .await
        .unwrap();
    c.query_drop("DROP TEMPORARY TABLE orders").await.unwrap();
    c.query_drop("INSERT INTO orders VALUES (2, 2)")
        .await
        .unwrap();
    c.query_drop("CREATE TEMPORARY TABLE shapes (id INT PRIMARY KEY, p POINT)")
        .await
        .unwrap();
    c.query_drop("INSERT INTO shapes VALUES (3, POINT(1, 2))")
        .await
        .unwrap();
    let err = c
        .query_drop("INSERT INTO orders SELECT id, 0 FROM shapes")
        .await
        .unwrap_err();
    assert!(
        err.to_string().contains("temporary table `shapes`")
            && err.to_string().contains("type point"),
        "{err}"
    );
    let err = c
        .query_drop(format!(
            "INSERT INTO orders SELECT id, 0 FROM {}.shapes",
            env.primary
        ))
        .await
        .unwrap_err();
    assert!(err.to_string().contains("with a database"), "{err}");
    env.wait_caught_up().await;
    assert_eq!(assert_same(&env.primary, &env.secondary, "orders").await, 1);
    drop(c);
    env.stop().await;
}

/// A carried write the secondary refuses is dead-lettered; the copy it
/// created on the apply connection does not outlive it there (it would
/// hide the real table of that name from every later write).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_carried_write_leaves_no_copy_on_the_apply_connection() {
    let env = MirrorEnv::start("tempfail", "  apply_workers: 1\n").await;
    env.create_both("CREATE TABLE tmp (id INT PRIMARY KEY, v INT)")
        .await;
    env.create_both("CREATE TABLE t (id INT PRIMARY KEY, v INT)")
        .await;
    // The secondary's `t` refuses what the primary's takes.
    let mut s = Conn::new(direct_opts(&env.secondary)).await.unwrap();
    s.query_drop("ALTER TABLE t ADD CHECK (v < 100)")
        .await
        .unwrap();
    let mut c = env.proxy().await;
    c.query_drop("CREATE TEMPORARY TABLE tmp (id INT PRIMARY KEY, v INT)")
        .await
        .unwrap();
    c.query_drop("INSERT INTO tmp VALUES (1, 500)")
        .await
        .unwrap();
    c.query_drop("INSERT INTO t SELECT * FROM tmp")
        .await
        .unwrap();
    env.wait_caught_up().await;
    assert_eq!(env.dead_lettered(), 1);
    let mut other = env.proxy().await;
    other
        .query_drop("INSERT INTO tmp VALUES (2, 2)")
        .await
        .unwrap();
    other.query_drop("UPDATE tmp SET v = 3").await.unwrap();
    env.wait_caught_up().await;
    assert_eq!(assert_same(&env.primary, &env.secondary, "tmp").await, 1);
    s.disconnect().await.unwrap();
    drop((c, other));
    env.stop().await;
}

/// Server-side prepared statements meet temporary tables as queries do:
/// a prepared CREATE TEMPORARY TABLE is the session's own, a prepared
/// write to it is not mirrored (not even into the real table of that name
/// on the secondary), and a prepared write reading it carries it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prepared_statements_meet_temporary_tables_as_queries_do() {
    let env = MirrorEnv::start("tempprep", "").await;
    env.create_both("CREATE TABLE tmp (id INT PRIMARY KEY, v INT)")
        .await;
    env.create_both("CREATE TABLE t (id INT PRIMARY KEY, v INT)")
        .await;
    let mut c = env.proxy().await;
    c.exec_drop("CREATE TEMPORARY TABLE tmp (id INT PRIMARY KEY, v INT)", ())
        .await
        .unwrap();
    c.exec_drop("INSERT INTO tmp VALUES (?, ?)", (1, 10))
        .await
        .unwrap();
    c.exec_drop("INSERT INTO tmp VALUES (?, ?)", (2, 20))
        .await
        .unwrap();
    c.exec_drop("INSERT INTO t SELECT id, v + ? FROM tmp", (5,))
        .await
        .unwrap();
    c.exec_drop(
        "UPDATE t JOIN tmp USING (id) SET t.v = t.v + tmp.v WHERE tmp.id = ?",
        (2,),
    )
    .await
    .unwrap();
    c.exec_drop("DROP TEMPORARY TABLE tmp", ()).await.unwrap();
    c.exec_drop("INSERT INTO tmp VALUES (?, ?)", (3, 30))
        .await
        .unwrap();
    env.wait_caught_up().await;
    let got: Vec<(i32, i32)> = c.query("SELECT id, v FROM t ORDER BY id").await.unwrap();
    assert_eq!(got, vec![(1, 15), (2, 45)]);
    assert_eq!(assert_same(&env.primary, &env.secondary, "t").await, 2);
    assert_eq!(assert_same(&env.primary, &env.secondary, "tmp").await, 1);
    assert_eq!(env.dead_lettered(), 0);
    drop(c);
    env.stop().await;
}
