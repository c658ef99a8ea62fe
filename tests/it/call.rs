//! CALL of a stored procedure through a mirroring Tandem (issue 26):
//! replayed with the pinned time when its body is known to write the same
//! rows on the secondary, refused saying why otherwise.

use crate::common::mirror::*;
use crate::common::*;
use mysql_async::prelude::*;
use mysql_async::Conn;

const TRANSFER: &str = "CREATE PROCEDURE transfer(a INT, b INT, amt DECIMAL(10,2), ref INT)
BEGIN
  DECLARE bal DECIMAL(10,2);
  SELECT balance INTO bal FROM acct WHERE id = a FOR UPDATE;
  IF bal < amt THEN
    SIGNAL SQLSTATE '45000' SET MESSAGE_TEXT = 'insufficient funds';
  END IF;
  UPDATE acct SET balance = balance - amt, at = NOW(6) WHERE id = a;
  UPDATE acct SET balance = balance + amt, at = NOW(6) WHERE id = b;
  INSERT INTO ledger (id, acct, amount) VALUES (ref, a, -amt), (ref + 1, b, amt);
  INSERT INTO audit (acct, balance) SELECT id, balance FROM acct WHERE id IN (a, b);
END";

/// A procedure that reads under locks and writes keyed rows, the time
/// from NOW(6): replayed, in and out of transactions; one that fails
/// half-way (a duplicate in its third write) leaves nothing of itself on
/// either side; the secondary equals the primary.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_whose_body_replays_alike_is_mirrored() {
    let env = MirrorEnv::start("call", "").await;
    env.create_both(
        "CREATE TABLE acct (id INT PRIMARY KEY, balance DECIMAL(10,2), at DATETIME(6))",
    )
    .await;
    env.create_both("INSERT INTO acct VALUES (1, 100, NULL), (2, 100, NULL)")
        .await;
    env.create_both(
        "CREATE TABLE ledger (id INT PRIMARY KEY, acct INT, amount DECIMAL(10,2), \
         at DATETIME(6) DEFAULT CURRENT_TIMESTAMP(6))",
    )
    .await;
    env.create_both("CREATE TABLE audit (acct INT, balance DECIMAL(10,2))")
        .await;
    let mut c = env.proxy().await;
    // Created through Tandem: the secondary gets it too.
    c.query_drop(TRANSFER).await.unwrap();
    c.query_drop("CALL transfer(1, 2, 10.00, 100)")
        .await
        .unwrap();
    c.query_drop("BEGIN").await.unwrap();
    c.query_drop("CALL transfer(2, 1, 5.00, 200)")
        .await
        .unwrap();
    c.query_drop("UPDATE acct SET balance = balance + 1 WHERE id = 1")
        .await
        .unwrap();
    // Fails at its ledger insert (ref 100 is there), after both UPDATEs.
    let err = c
        .query_drop("CALL transfer(1, 2, 7.00, 100)")
        .await
        .unwrap_err();
    assert!(err.to_string().contains("Duplicate entry"), "{err}");
    c.query_drop("COMMIT").await.unwrap();
    // Under autocommit too: nothing of it stays.
    let err = c
        .query_drop("CALL transfer(2, 1, 3.00, 200)")
        .await
        .unwrap_err();
    assert!(err.to_string().contains("Duplicate entry"), "{err}");
    // A body that returns rows: the client gets them, as directly.
    c.query_drop(
        "CREATE PROCEDURE deposit(a INT, amt DECIMAL(10,2)) BEGIN \
         UPDATE acct SET balance = balance + amt WHERE id = a; \
         SELECT id, CAST(balance AS CHAR) FROM acct WHERE id = a; END",
    )
    .await
    .unwrap();
    let rows: Vec<(i32, String)> = c.query("CALL deposit(1, 0.50)").await.unwrap();
    assert_eq!(rows, vec![(1, "96.50".to_string())]);
    // Prepared, it would run as text and answer rows in the wrong
    // protocol: refused.
    let err = c
        .exec_drop("CALL deposit(?, ?)", (1, "0.50"))
        .await
        .unwrap_err();
    assert!(err.to_string().contains("returns rows"), "{err}");
    // Prepared: replayed as its rendered text.
    c.exec_drop("CALL transfer(?, ?, ?, ?)", (2, 1, "2.00", 400))
        .await
        .unwrap();
    let err = c
        .query_drop("CALL transfer(1, 2, 1000.00, 300)")
        .await
        .unwrap_err();
    assert!(err.to_string().contains("insufficient funds"), "{err}");
    let balances: Vec<(i32, String)> = c
        .query("SELECT id, CAST(balance AS CHAR) FROM acct ORDER BY id")
        .await
        .unwrap();
    assert_eq!(
        balances,
        vec![(1, "98.50".to_string()), (2, "103.00".to_string())]
    );
    env.wait_caught_up().await;
    assert_eq!(env.assert_same("acct").await, 2);
    assert_eq!(env.assert_same("ledger").await, 6);
    assert_eq!(env.assert_same("audit").await, 6);
    let stamped: Option<i64> = c
        .query_first("SELECT COUNT(*) FROM acct WHERE at IS NOT NULL")
        .await
        .unwrap();
    assert_eq!(stamped, Some(2));
    assert_eq!(env.dead_lettered(), 0);
    drop(c);
    env.stop().await;
}

/// Procedures whose replay could write other rows are refused, saying
/// why; a procedure that differs on the secondary fails the apply loudly
/// (dead-lettered) instead of writing other rows there.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_that_may_replay_otherwise_is_refused_or_fails_loudly() {
    let env = MirrorEnv::start("call_refused", "").await;
    env.create_both("CREATE TABLE t (id INT PRIMARY KEY, v INT)")
        .await;
    env.create_both("INSERT INTO t VALUES (1, 0)").await;
    env.create_both("CREATE TABLE ids (id INT AUTO_INCREMENT PRIMARY KEY, v INT)")
        .await;
    let mut c = env.proxy().await;
    for (ddl, call, why) in [
        (
            "CREATE PROCEDURE unlocked() BEGIN DECLARE x INT; \
             SELECT v INTO x FROM t WHERE id = 1; UPDATE t SET v = x + 1 WHERE id = 1; END",
            "CALL unlocked()",
            "consistent read",
        ),
        (
            "CREATE PROCEDURE numbered() BEGIN INSERT INTO ids (v) VALUES (1); END",
            "CALL numbered()",
            "AUTO_INCREMENT",
        ),
        (
            "CREATE PROCEDURE commits() BEGIN UPDATE t SET v = 5; COMMIT; END",
            "CALL commits()",
            "COMMIT",
        ),
        (
            "CREATE PROCEDURE setv(x INT) BEGIN UPDATE t SET v = x WHERE id = 1; END",
            "CALL setv((SELECT MAX(id) FROM ids))",
            "arguments read rows",
        ),
    ] {
        c.query_drop(ddl).await.unwrap();
        let err = c.query_drop(call).await.unwrap_err();
        assert!(
            err.to_string().contains("CALL") && err.to_string().contains(why),
            "{call}: {err}"
        );
    }
    // The same name, another body on the secondary (made there directly).
    c.query_drop("CREATE PROCEDURE bump() BEGIN UPDATE t SET v = v + 1 WHERE id = 1; END")
        .await
        .unwrap();
    env.wait_caught_up().await;
    let mut s = Conn::new(direct_opts(&env.secondary)).await.unwrap();
    s.query_drop("DROP PROCEDURE bump").await.unwrap();
    s.query_drop("CREATE PROCEDURE bump() BEGIN UPDATE t SET v = v + 100 WHERE id = 1; END")
        .await
        .unwrap();
    c.query_drop("CALL bump()").await.unwrap();
    env.wait_caught_up().await;
    assert_eq!(env.dead_lettered(), 1);
    let v: Option<i32> = s.query_first("SELECT v FROM t WHERE id = 1").await.unwrap();
    assert_eq!(v, Some(0), "the other body did not run");
    s.disconnect().await.unwrap();
    drop(c);
    env.stop().await;
}
