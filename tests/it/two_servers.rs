//! What only two servers that differ can show (each test starts its own
//! `mariadbd` as the secondary's server): time zones, here.

use crate::common::mirror::*;
use crate::common::server::OwnServer;
use crate::common::*;
use mysql_async::prelude::*;

/// A session whose `time_zone` is SYSTEM writes in the primary server's
/// own zone; replayed as the word SYSTEM, the secondary would use its own
/// (here +05:30) and store other DATETIME values. The offset of the
/// primary's zone is carried instead.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_in_the_system_zone_is_replayed_in_the_primarys_zone() {
    let server = OwnServer::start(&[], &[("TZ", "XYZ-05:30")]).await;
    let env = MirrorEnv::start_on("tzsystem", &server, "").await;
    env.create_both("CREATE TABLE t (id INT PRIMARY KEY, d DATETIME(6), ts TIMESTAMP(6) NULL)")
        .await;
    let mut s = mysql_async::Conn::new(server.opts("mysql")).await.unwrap();
    let (zone, offset): (String, i64) = s
        .query_first("SELECT @@time_zone, TIMESTAMPDIFF(MINUTE, UTC_TIMESTAMP(), NOW())")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        (zone.as_str(), offset),
        ("SYSTEM", 330),
        "the secondary's own zone"
    );
    let mut c = env.proxy().await;
    let zone: String = c.query_first("SELECT @@time_zone").await.unwrap().unwrap();
    assert_eq!(zone, "SYSTEM");
    c.query_drop(
        "INSERT INTO t VALUES (1, NOW(6), NOW(6)), (2, FROM_UNIXTIME(86400), FROM_UNIXTIME(86400))",
    )
    .await
    .unwrap();
    c.query_drop("BEGIN").await.unwrap();
    c.query_drop("UPDATE t SET d = FROM_UNIXTIME(172800) + INTERVAL 1 SECOND WHERE id = 2")
        .await
        .unwrap();
    c.query_drop("COMMIT").await.unwrap();
    env.wait_caught_up().await;
    assert_eq!(env.assert_same("t").await, 2);
    drop((c, s));
    env.stop().await;
}

/// Backfill and verify read and write in UTC: with the secondary's server
/// in another default zone (+05:00), copied TIMESTAMP values keep their
/// instant, verify finds the copy identical, and a TIMESTAMP that differs
/// by an hour is found.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backfill_and_verify_keep_timestamps_as_instants_across_zones() {
    let server = OwnServer::start(&["--default-time-zone=+05:00"], &[]).await;
    let env = MirrorEnv::start_on("tzcopy", &server, "").await;
    let mut p = mysql_async::Conn::new(direct_opts(&env.primary))
        .await
        .unwrap();
    p.query_drop(
        "CREATE TABLE t (id INT PRIMARY KEY, ts TIMESTAMP(6) NOT NULL, d DATETIME NOT NULL)",
    )
    .await
    .unwrap();
    p.query_drop(
        "INSERT INTO t VALUES (1, '2026-01-01 00:00:00.25', '2026-01-01 00:00:00'), \
         (2, '2026-07-01 12:30:00', '2026-07-01 12:30:00'), (3, FROM_UNIXTIME(1), FROM_UNIXTIME(1))",
    )
    .await
    .unwrap();
    let (code, out, err) = env.tool("backfill", &["--create-tables"]).await;
    assert_eq!(code, 0, "{out}\n{err}");
    assert_eq!(env.assert_same("t").await, 3);
    let (code, out, err) = env.tool("verify", &[]).await;
    assert_eq!(code, 0, "{out}\n{err}");
    let mut s = mysql_async::Conn::new(server.opts(&env.secondary))
        .await
        .unwrap();
    s.query_drop("UPDATE t SET ts = ts + INTERVAL 1 HOUR WHERE id = 2")
        .await
        .unwrap();
    let (code, out, err) = env.tool("verify", &[]).await;
    assert_eq!(code, 1, "{out}\n{err}");
    drop((p, s));
    env.stop().await;
}

/// Under `innodb_autoinc_lock_mode = 2` the ids an INSERT … SELECT takes
/// may interleave with other sessions' inserts, while replay gives it
/// consecutive ones from `SET INSERT_ID`: such a write runs staged (as the
/// INSERT … VALUES of its rows, whose ids are allocated at once) unless it
/// names the id column; plain multi-row inserts stay mirrored.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn insert_select_under_interleaved_auto_increment_runs_staged() {
    let server = OwnServer::start(&["--innodb-autoinc-lock-mode=2"], &[]).await;
    let env = MirrorEnv::start_from("autoinc2", &server, "").await;
    env.create_both("CREATE TABLE src (k INT PRIMARY KEY, v VARCHAR(10))")
        .await;
    env.create_both("CREATE TABLE t (id INT AUTO_INCREMENT PRIMARY KEY, v VARCHAR(10))")
        .await;
    let mut c = env.proxy().await;
    c.query_drop("INSERT INTO src VALUES (1, 'a'), (2, 'b'), (3, 'c')")
        .await
        .unwrap();
    c.query_drop("INSERT INTO t (v) VALUES ('x'), ('y')")
        .await
        .unwrap();
    c.query_drop("INSERT INTO t (v) SELECT v FROM src ORDER BY k")
        .await
        .unwrap();
    assert_eq!(c.affected_rows(), 3);
    c.query_drop("INSERT INTO t (id, v) SELECT k + 100, v FROM src ORDER BY k")
        .await
        .unwrap();
    env.wait_caught_up().await;
    assert_eq!(env.assert_same("t").await, 8);
    drop(c);
    env.stop().await;
}
