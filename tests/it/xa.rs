//! XA transactions through a mirroring Tandem: journaled at XA PREPARE,
//! settled by their decision wherever it is made (the same session,
//! another session through Tandem, a client of the primary directly, after
//! a restart of Tandem), never guessed.

use crate::common::child::{wait_caught_up_http, ChildTandem};
use crate::common::mirror::*;
use crate::common::*;
use mysql_async::prelude::*;
use mysql_async::Conn;

/// Prepares branch `xid` (xids are server-wide: each test its own).
async fn prepared(c: &mut Conn, xid: &str, id: i32) {
    for sql in [
        format!("XA START '{xid}'"),
        format!("INSERT INTO x VALUES ({id}, 1)"),
        format!("UPDATE x SET v = v + 1 WHERE id = {id}"),
        format!("XA END '{xid}'"),
        format!("XA PREPARE '{xid}'"),
    ] {
        c.query_drop(&sql)
            .await
            .unwrap_or_else(|e| panic!("{sql}: {e}"));
    }
}

/// Rolls back branches a failed earlier run of a test left prepared (they
/// would hold locks on its tables for ever).
async fn forget_branches(prefix: &str) {
    let mut d = Conn::new(direct_opts("mysql")).await.unwrap();
    let rows: Vec<mysql_async::Row> = d.query("XA RECOVER").await.unwrap();
    for r in rows {
        let xid: String = r.get(3).unwrap_or_default();
        if xid.starts_with(prefix) {
            d.query_drop(format!("XA ROLLBACK '{xid}'")).await.unwrap();
        }
    }
    d.disconnect().await.unwrap();
}

async fn xa_recover(db: &str) -> Vec<String> {
    let mut d = Conn::new(direct_opts(db)).await.unwrap();
    let rows: Vec<mysql_async::Row> = d.query("XA RECOVER").await.unwrap();
    d.disconnect().await.unwrap();
    rows.into_iter()
        .map(|r| r.get::<String, _>(3).unwrap_or_default())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn xa_transactions_are_mirrored_as_they_are_decided() {
    forget_branches("t1").await;
    let env = MirrorEnv::start("xa", "").await;
    env.create_both("CREATE TABLE x (id INT PRIMARY KEY, v INT)")
        .await;
    let mut a = env.proxy().await;
    // Prepared and committed in the session.
    prepared(&mut a, "t1a", 1).await;
    a.query_drop("XA COMMIT 't1a'").await.unwrap();
    // Prepared and rolled back.
    prepared(&mut a, "t1b", 2).await;
    a.query_drop("XA ROLLBACK 't1b'").await.unwrap();
    // One phase.
    a.query_drop("XA START 't1c'").await.unwrap();
    a.query_drop("INSERT INTO x VALUES (3, 3)").await.unwrap();
    a.query_drop("XA END 't1c'").await.unwrap();
    a.query_drop("XA COMMIT 't1c' ONE PHASE").await.unwrap();
    // Rolled back before it was prepared.
    a.query_drop("XA START 't1g'").await.unwrap();
    a.query_drop("INSERT INTO x VALUES (7, 7)").await.unwrap();
    a.query_drop("XA END 't1g'").await.unwrap();
    a.query_drop("XA ROLLBACK 't1g'").await.unwrap();
    // Prepared, then the session ends: decided by another session through
    // Tandem, and by clients of the primary directly.
    prepared(&mut a, "t1d", 4).await;
    a.disconnect().await.unwrap();
    let mut a = env.proxy().await;
    prepared(&mut a, "t1e", 5).await;
    a.disconnect().await.unwrap();
    let mut a = env.proxy().await;
    prepared(&mut a, "t1f", 6).await;
    a.disconnect().await.unwrap();
    let mut b = env.proxy().await;
    // The xid written another way names the same branch.
    b.query_drop("XA COMMIT X'743164', '', 1").await.unwrap();
    let mut d = Conn::new(direct_opts(&env.primary)).await.unwrap();
    d.query_drop("XA COMMIT 't1e'").await.unwrap();
    d.query_drop("XA ROLLBACK 't1f'").await.unwrap();
    d.disconnect().await.unwrap();
    // Ordinary transactions go on beside them.
    b.query_drop("INSERT INTO x VALUES (8, 8)").await.unwrap();
    env.wait_caught_up().await;
    assert_eq!(env.assert_same("x").await, 5);
    let ids: Vec<(i32, i32)> = b.query("SELECT id, v FROM x ORDER BY id").await.unwrap();
    assert_eq!(ids, [(1, 2), (3, 3), (4, 2), (5, 2), (8, 8)]);
    assert!(!xa_recover(&env.primary)
        .await
        .iter()
        .any(|x| x.starts_with("t1")));
    assert!(env.mirror().divergent().is_empty());
    drop(b);
    env.stop().await;
}

/// Tandem killed while a branch is prepared: its start-up does not wait
/// for the branch's decision (which holds the marker row locked), and the
/// decision, made later directly on the primary, still reaches the
/// secondary.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_branch_prepared_before_a_restart_is_settled_when_decided() {
    forget_branches("t2").await;
    let primary = "tandem_m_xarestart";
    let secondary = "tandem_m_xarestart_next";
    let schema = ["CREATE TABLE x (id INT PRIMARY KEY, v INT)"];
    let mut tandem = ChildTandem::start(primary, secondary, &schema).await;
    wait_listening(tandem.admin).await;
    let mut c = Conn::new(proxy_builder(tandem.listen, Some(primary)))
        .await
        .unwrap();
    prepared(&mut c, "t2r", 1).await;
    tandem.kill();
    drop(c);
    let started = std::time::Instant::now();
    tandem.restart().await;
    wait_listening(tandem.admin).await;
    assert!(
        started.elapsed() < std::time::Duration::from_secs(20),
        "start-up waited for the prepared branch"
    );
    assert!(xa_recover(primary).await.contains(&"t2r".to_string()));
    let mut d = Conn::new(direct_opts(primary)).await.unwrap();
    d.query_drop("XA COMMIT 't2r'").await.unwrap();
    d.disconnect().await.unwrap();
    let mut s = Conn::new(direct_opts(secondary)).await.unwrap();
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let rows: Vec<(i32, i32)> = s.query("SELECT id, v FROM x").await.unwrap();
        if rows == [(1, 2)] {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "not mirrored: {rows:?}; log:\n{}",
            std::fs::read_to_string(&tandem.log).unwrap_or_default()
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    s.disconnect().await.unwrap();
    let status = wait_caught_up_http(tandem.admin).await;
    assert_eq!(status["mirror"]["dead_lettered"], 0, "{status}");
    tandem.kill();
    drop_databases(&[primary, secondary]).await;
}
