//! Dual-write semantics through Tandem against real MariaDB primary and
//! secondary databases: what is mirrored, when, with which values.

use crate::common::child::*;
use crate::common::mirror::*;
use crate::common::*;
use mysql_async::prelude::*;
use mysql_async::{Conn, TxOpts};

const ITEMS: &str = "CREATE TABLE items (
    id BIGINT AUTO_INCREMENT PRIMARY KEY,
    name VARCHAR(64) NOT NULL,
    qty INT NOT NULL DEFAULT 0,
    u CHAR(36) NULL,
    r DOUBLE NULL,
    at DATETIME(6) NULL,
    created TIMESTAMP(6) NOT NULL DEFAULT CURRENT_TIMESTAMP(6),
    updated TIMESTAMP(6) NOT NULL DEFAULT CURRENT_TIMESTAMP(6) ON UPDATE CURRENT_TIMESTAMP(6),
    UNIQUE KEY (name)
) ENGINE=InnoDB";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn committed_writes_reach_the_secondary_with_the_primarys_values() {
    let env = MirrorEnv::start("basic", "").await;
    env.create_both(ITEMS).await;
    let mut c = env.proxy().await;
    // Autocommit writes: generated ids, time, UUID, RAND, defaults.
    c.query_drop("INSERT INTO items (name, u, r, at) VALUES ('a', UUID(), RAND(), NOW(6))")
        .await
        .unwrap();
    assert_eq!(c.last_insert_id(), Some(1));
    c.query_drop("INSERT INTO items (name, at) VALUES ('b', SYSDATE(6)), ('c', UTC_TIMESTAMP(6)), ('d', CURRENT_TIMESTAMP(6))")
        .await
        .unwrap();
    c.query_drop("UPDATE items SET qty = qty + 1 WHERE name IN ('a', 'b')")
        .await
        .unwrap();
    c.query_drop("INSERT INTO items (name, qty) VALUES ('a', 5) ON DUPLICATE KEY UPDATE qty = qty + VALUES(qty)")
        .await
        .unwrap();
    c.query_drop("REPLACE INTO items (name, qty) VALUES ('c', 9)")
        .await
        .unwrap();
    c.query_drop("INSERT INTO items (name, qty) VALUES ('e', LAST_INSERT_ID())")
        .await
        .unwrap();
    // The client sees autocommit status, not Tandem's wrapping transaction.
    let in_txn: u8 = c
        .query_first("SELECT @@in_transaction")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(in_txn, 0);
    // A failed statement mirrors nothing and reaches the client unchanged.
    let err = c
        .query_drop("INSERT INTO items (name) VALUES ('a')")
        .await
        .unwrap_err();
    assert!(err.to_string().contains("Duplicate entry"), "{err}");

    // Explicit transactions: committed ones together, rolled back ones not.
    let mut tx = c.start_transaction(TxOpts::default()).await.unwrap();
    tx.query_drop("INSERT INTO items (name) VALUES ('t1')")
        .await
        .unwrap();
    tx.query_drop("UPDATE items SET qty = 100 WHERE name = 'b'")
        .await
        .unwrap();
    tx.commit().await.unwrap();
    let mut tx = c.start_transaction(TxOpts::default()).await.unwrap();
    tx.query_drop("INSERT INTO items (name) VALUES ('rolled')")
        .await
        .unwrap();
    tx.rollback().await.unwrap();
    // Savepoints.
    c.query_drop("BEGIN").await.unwrap();
    c.query_drop("INSERT INTO items (name) VALUES ('s1')")
        .await
        .unwrap();
    c.query_drop("SAVEPOINT sp").await.unwrap();
    c.query_drop("INSERT INTO items (name) VALUES ('s2')")
        .await
        .unwrap();
    c.query_drop("ROLLBACK TO SAVEPOINT sp").await.unwrap();
    c.query_drop("INSERT INTO items (name) VALUES ('s3')")
        .await
        .unwrap();
    c.query_drop("COMMIT").await.unwrap();
    // autocommit = 0 transactions.
    c.query_drop("SET autocommit = 0").await.unwrap();
    c.query_drop("INSERT INTO items (name) VALUES ('ac0')")
        .await
        .unwrap();
    c.query_drop("COMMIT").await.unwrap();
    c.query_drop("INSERT INTO items (name) VALUES ('ac0-rolled')")
        .await
        .unwrap();
    c.query_drop("ROLLBACK").await.unwrap();
    c.query_drop("INSERT INTO items (name) VALUES ('ac0-implicit')")
        .await
        .unwrap();
    // Turning autocommit back on commits the open transaction.
    c.query_drop("SET autocommit = 1").await.unwrap();

    // Server-side prepared statements with bound values.
    let stmt = c
        .prep("INSERT INTO items (name, qty, r, at) VALUES (?, ?, ?, ?)")
        .await
        .unwrap();
    c.exec_drop(&stmt, ("p1", 7, 0.1f64, "2024-01-02 03:04:05.678901"))
        .await
        .unwrap();
    c.exec_drop(
        &stmt,
        ("it's \\ \"quoted\"", -3, None::<f64>, None::<String>),
    )
    .await
    .unwrap();
    c.exec_drop(
        "UPDATE items SET qty = qty * ?, u = UUID() WHERE name = ?",
        (3, "p1"),
    )
    .await
    .unwrap_err(); // UUID() in UPDATE is unsafe: rejected by default
    c.exec_drop("UPDATE items SET qty = qty * ? WHERE name = ?", (3, "p1"))
        .await
        .unwrap();
    c.exec_drop("INSERT INTO items (name, u) VALUES (?, UUID())", ("pu",))
        .await
        .unwrap();
    c.exec_drop("DELETE FROM items WHERE name = ?", ("d",))
        .await
        .unwrap();

    // DDL in order with the data around it.
    c.query_drop("ALTER TABLE items ADD COLUMN note VARCHAR(20) NOT NULL DEFAULT 'x'")
        .await
        .unwrap();
    c.query_drop("UPDATE items SET note = 'after-ddl' WHERE name = 'a'")
        .await
        .unwrap();
    c.query_drop("CREATE TABLE made_here (id INT PRIMARY KEY, v INT)")
        .await
        .unwrap();
    c.query_drop("INSERT INTO made_here VALUES (1, 2)")
        .await
        .unwrap();
    // Reads are not mirrored (and need no secondary).
    let _: Vec<u64> = c.query("SELECT id FROM items").await.unwrap();
    c.disconnect().await.unwrap();

    env.wait_caught_up().await;
    let n = assert_same(&env.primary, &env.secondary, "items").await;
    assert!(n >= 10, "{n} rows");
    assert_same(&env.primary, &env.secondary, "made_here").await;
    let names: Vec<String> = {
        let mut d = Conn::new(direct_opts(&env.secondary)).await.unwrap();
        let v = d.query("SELECT name FROM items ORDER BY id").await.unwrap();
        d.disconnect().await.unwrap();
        v
    };
    for absent in ["rolled", "s2", "ac0-rolled"] {
        assert!(
            !names.contains(&absent.to_string()),
            "{absent} mirrored: {names:?}"
        );
    }
    for present in ["t1", "s1", "s3", "ac0", "ac0-implicit", "p1", "pu"] {
        assert!(
            names.contains(&present.to_string()),
            "{present} missing: {names:?}"
        );
    }
    let m = env.mirror();
    assert_eq!(
        m.stats.dropped.load(std::sync::atomic::Ordering::Relaxed),
        0
    );
    assert!(m.divergent().is_empty(), "{:?}", m.divergent());
    env.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unsafe_writes_are_rejected_with_the_reason() {
    let env = MirrorEnv::start("unsafe_reject", "").await;
    env.create_both("CREATE TABLE t (id INT PRIMARY KEY, v INT)")
        .await;
    env.create_both("CREATE TABLE heap (v INT)").await;
    env.create_both("CREATE TABLE ai (id INT AUTO_INCREMENT PRIMARY KEY, v INT)")
        .await;
    let mut c = env.proxy().await;
    c.query_drop("INSERT INTO t VALUES (1, 1), (2, 2)")
        .await
        .unwrap();
    for (sql, needle) in [
        ("UPDATE heap SET v = 0 LIMIT 1", "LIMIT picks rows"),
        ("DELETE FROM heap LIMIT 1", "no primary key"),
        ("SET @x = 5", ""),
        ("UPDATE t SET v = (@x := 1)", "assigns a user variable"),
        ("INSERT INTO t VALUES (3, UUID_SHORT())", "UUID_SHORT"),
        // (Without RETURNING it runs staged: tests/it/staged.rs.)
        (
            "INSERT INTO ai (v) SELECT v FROM heap RETURNING id",
            "INSERT ... SELECT",
        ),
    ] {
        let r = c.query_drop(sql).await;
        if needle.is_empty() {
            r.unwrap();
            continue;
        }
        let e = r.unwrap_err().to_string();
        assert!(
            e.contains(needle) && e.contains("unsafe_writes"),
            "{sql}: {e}"
        );
    }
    // Nothing was executed on the primary. (A LIMIT write on a keyed
    // table is mirrored: `exactness::limit_writes_…`.)
    let mut d = Conn::new(direct_opts(&env.primary)).await.unwrap();
    let n: u64 = d
        .query_first("SELECT COUNT(*) FROM t")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(n, 2);
    let v: Vec<(i32, i32)> = d.query("SELECT id, v FROM t ORDER BY id").await.unwrap();
    assert_eq!(v, vec![(1, 1), (2, 2)]);
    d.disconnect().await.unwrap();
    c.disconnect().await.unwrap();
    env.wait_caught_up().await;
    assert_same(&env.primary, &env.secondary, "t").await;
    assert!(env.mirror().divergent().is_empty());
    env.stop().await;
}

/// Names qualified with the primary's database (`db.t`) are applied to the
/// secondary's database. The secondary here is on the same server, where
/// `db.t` unchanged would write the primary's table a second time.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn names_qualified_with_the_primarys_database_are_applied_to_the_secondarys() {
    let env = MirrorEnv::start("qualified", "").await;
    let p = env.primary.clone();
    env.create_both("CREATE TABLE t (id INT PRIMARY KEY, v INT)")
        .await;
    let mut c = env.proxy().await;
    for sql in [
        format!("INSERT INTO {p}.t VALUES (1, 10), (2, 20)"),
        format!("UPDATE `{p}`.t SET v = v + 1 WHERE {p}.t.id = 1"),
        format!("CREATE TABLE {p}.q (id INT PRIMARY KEY, n INT)"),
        format!("INSERT INTO {p}.q VALUES (1, 5)"),
        format!("UPDATE {p}.q SET n = n * 2"),
    ] {
        c.query_drop(&sql).await.unwrap();
    }
    let mut tx = c.start_transaction(TxOpts::default()).await.unwrap();
    tx.exec_drop(format!("DELETE FROM {p}.t WHERE id = ?"), (2,))
        .await
        .unwrap();
    tx.commit().await.unwrap();
    // The name also used as an alias: which `x.v` is meant cannot be told.
    let e = c
        .query_drop(format!("UPDATE t AS {p} SET {p}.v = 0 WHERE {p}.id = 1"))
        .await
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("cannot tell which to rename") && e.contains("unsafe_writes is reject"),
        "{e}"
    );
    c.disconnect().await.unwrap();
    env.wait_caught_up().await;
    let mut d = Conn::new(direct_opts(&p)).await.unwrap();
    let v: Vec<(i32, i32)> = d.query("SELECT id, v FROM t ORDER BY id").await.unwrap();
    assert_eq!(v, vec![(1, 11)], "applied once to the primary's table");
    let n: Vec<i32> = d.query("SELECT n FROM q").await.unwrap();
    assert_eq!(n, vec![10]);
    d.disconnect().await.unwrap();
    assert_same(&env.primary, &env.secondary, "t").await;
    assert_same(&env.primary, &env.secondary, "q").await;
    assert!(env.mirror().divergent().is_empty());
    assert_eq!(
        env.mirror()
            .applier
            .dead_lettered
            .load(std::sync::atomic::Ordering::Relaxed),
        0
    );
    env.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unsafe_writes_run_on_the_primary_only_and_mark_the_table() {
    let env = MirrorEnv::start("unsafe_po", "  unsafe_writes: primary_only").await;
    env.create_both("CREATE TABLE t (id INT PRIMARY KEY, v INT)")
        .await;
    env.create_both("CREATE TABLE ok (id INT PRIMARY KEY)")
        .await;
    env.create_both("CREATE TABLE xa (id INT PRIMARY KEY)")
        .await;
    let mut c = env.proxy().await;
    c.query_drop("INSERT INTO t VALUES (1, 1), (2, 2)")
        .await
        .unwrap();
    c.query_drop("SET @x = 7").await.unwrap();
    c.query_drop("UPDATE t SET v = (@x := 8) WHERE id = 1")
        .await
        .unwrap();
    c.query_drop("INSERT INTO ok VALUES (1)").await.unwrap();
    // An XA transaction is mirrored (tests/it/xa.rs).
    c.query_drop("XA START 'x'").await.unwrap();
    c.query_drop("INSERT INTO xa VALUES (1)").await.unwrap();
    c.query_drop("XA END 'x'").await.unwrap();
    c.query_drop("XA COMMIT 'x' ONE PHASE").await.unwrap();
    c.disconnect().await.unwrap();
    env.wait_caught_up().await;
    let d = env.mirror().divergent();
    assert!(!d.contains_key("xa"), "{d:?}");
    assert_same(&env.primary, &env.secondary, "xa").await;
    assert!(d.contains_key("t"), "{d:?}");
    assert!(!d.contains_key("ok"), "{d:?}");
    assert_same(&env.primary, &env.secondary, "ok").await;
    let m = env.mirror();
    assert_eq!(
        m.stats
            .unsafe_primary_only
            .load(std::sync::atomic::Ordering::Relaxed),
        1
    );
    env.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn randomized_concurrent_workload_ends_identical() {
    let env = MirrorEnv::start("random", "").await;
    for ddl in WORKLOAD_SCHEMA {
        env.create_both(ddl).await;
    }
    let report = run_workload(env.server.addr, &env.primary, 8, 1250, 42, false).await;
    eprintln!("workload: {report:?}");
    assert!(report.committed + report.rolled_back + report.failed >= 10_000);
    assert!(report.rolled_back > 500, "{report:?}");
    env.wait_caught_up().await;
    for t in WORKLOAD_TABLES {
        let n = assert_same(&env.primary, &env.secondary, t).await;
        eprintln!("{t}: {n} rows identical");
    }
    let m = env.mirror();
    assert_eq!(
        m.stats.dropped.load(std::sync::atomic::Ordering::Relaxed),
        0
    );
    assert_eq!(
        m.applier
            .dead_lettered
            .load(std::sync::atomic::Ordering::Relaxed),
        0
    );
    assert!(m.divergent().is_empty(), "{:?}", m.divergent());
    assert_eq!(
        m.applier
            .plain_fallbacks
            .load(std::sync::atomic::Ordering::Relaxed),
        0,
        "every group of the workload applied as MariaDB compound blocks"
    );
    eprintln!(
        "apply connections busy at once, at most: {}",
        m.applier
            .parallel_peak
            .load(std::sync::atomic::Ordering::Relaxed)
    );
    // /status counts the journal's fsyncs (group commit: transactions per
    // fsync).
    let journaled = m.stats.committed.load(std::sync::atomic::Ordering::Relaxed);
    let fsyncs = m.journal.fsyncs();
    eprintln!("journal: {journaled} transactions, {fsyncs} fsyncs");
    assert!(fsyncs > 0);
    assert!(m.status_json()["journal_fsyncs"].as_u64().unwrap_or(0) >= fsyncs);
    env.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn secondary_cut_off_mid_run_catches_up_identical() {
    let relay = crate::common::relay::Relay::start(
        format!("{MARIADB_HOST}:{MARIADB_PORT}").parse().unwrap(),
    )
    .await;
    let env = MirrorEnv::start_via("cut", relay.addr.port(), "").await;
    for ddl in WORKLOAD_SCHEMA {
        env.create_both(ddl).await;
    }
    let addr = env.server.addr;
    let db = env.primary.clone();
    let load = tokio::spawn(async move { run_workload(addr, &db, 8, 400, 7, false).await });
    // Cut after a share of the 3200 transactions, by progress rather than
    // time (a fast host runs the whole workload in a few seconds).
    let m = env.mirror();
    let journaled = || m.stats.committed.load(std::sync::atomic::Ordering::Relaxed);
    while journaled() < 600 {
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    relay.cut();
    // The primary keeps serving while the secondary is unreachable.
    while journaled() < 1400 {
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    tokio::time::sleep(std::time::Duration::from_secs(1)).await;
    assert!(m.lag().0 > 0, "nothing queued while the secondary was away");
    relay.restore();
    let report = load.await.unwrap();
    eprintln!("workload: {report:?}");
    env.wait_caught_up().await;
    for t in WORKLOAD_TABLES {
        assert_same(&env.primary, &env.secondary, t).await;
    }
    assert!(m.applier.retried.load(std::sync::atomic::Ordering::Relaxed) > 0);
    assert_eq!(
        m.applier
            .dead_lettered
            .load(std::sync::atomic::Ordering::Relaxed),
        0
    );
    assert!(m.divergent().is_empty(), "{:?}", m.divergent());
    env.stop().await;
}

/// A backlog of transactions that overlap on a few rows, applied by four
/// connections at once: every row ends as on the primary, which with these
/// non-commutative updates needs each row's updates in the primary's order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn parallel_apply_keeps_each_rows_order() {
    let relay = crate::common::relay::Relay::start(
        format!("{MARIADB_HOST}:{MARIADB_PORT}").parse().unwrap(),
    )
    .await;
    let env = MirrorEnv::start_via("parallel", relay.addr.port(), "  apply_workers: 4").await;
    env.create_both("CREATE TABLE ord (id INT PRIMARY KEY, x BIGINT NOT NULL, n INT NOT NULL)")
        .await;
    env.create_both("INSERT INTO ord (id, x, n) SELECT seq, seq, 0 FROM seq_1_to_24")
        .await;
    env.create_both("CREATE TABLE kv2 (id BIGINT PRIMARY KEY, v BIGINT NOT NULL)")
        .await;
    // Nothing can be applied until the relay is restored: the whole
    // workload becomes one backlog.
    relay.cut();
    let mut tasks = Vec::new();
    for conn in 0..8u64 {
        let addr = env.server.addr;
        let db = env.primary.clone();
        tasks.push(tokio::spawn(async move {
            use rand::{Rng, SeedableRng};
            let mut rng = rand::rngs::StdRng::seed_from_u64(1000 + conn);
            let mut c = Conn::new(proxy_builder(addr, Some(&db))).await.unwrap();
            for i in 0..120u64 {
                let (a, b) = (rng.random_range(1..=24u32), rng.random_range(1..=24u32));
                let k = rng.random_range(1..=40u32);
                let step = conn * 1000 + i;
                let sqls = [
                    format!(
                        "UPDATE ord SET x = (x * 3 + {step}) % 1000003, n = n + 1 WHERE id = {a}"
                    ),
                    format!("UPDATE ord SET x = (x * 5 + {step}) % 1000003 WHERE id = {b}"),
                    format!(
                        "INSERT INTO kv2 (id, v) VALUES ({k}, {step}) \
                         ON DUPLICATE KEY UPDATE v = (v * 7 + VALUES(v)) % 1000003"
                    ),
                ];
                if i % 3 == 0 {
                    // Autocommit statements.
                    for sql in &sqls {
                        c.query_drop(sql).await.unwrap();
                    }
                } else {
                    let r: Result<(), mysql_async::Error> = async {
                        let mut tx = c.start_transaction(TxOpts::default()).await?;
                        for sql in &sqls {
                            tx.query_drop(sql).await?;
                        }
                        if i % 5 == 0 {
                            tx.query_drop(format!("DELETE FROM kv2 WHERE id = {}", k + 1))
                                .await?;
                        }
                        tx.commit().await
                    }
                    .await;
                    // Deadlocks between the connections are rolled back on
                    // the primary and mirror nothing.
                    if let Err(e) = r {
                        eprintln!("conn {conn} txn {i}: {e}");
                    }
                }
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let m = env.mirror();
    assert!(m.lag().0 > 100, "no backlog built up: {:?}", m.lag());
    relay.restore();
    env.wait_caught_up().await;
    for t in ["ord", "kv2"] {
        let n = assert_same(&env.primary, &env.secondary, t).await;
        eprintln!("{t}: {n} rows identical");
    }
    let peak = m
        .applier
        .parallel_peak
        .load(std::sync::atomic::Ordering::Relaxed);
    eprintln!("apply connections busy at once, at most: {peak}");
    assert!(peak >= 2, "parallel apply never overlapped: {peak}");
    assert_eq!(
        m.applier
            .dead_lettered
            .load(std::sync::atomic::Ordering::Relaxed),
        0
    );
    env.stop().await;
}

/// Polls /status until this process has journaled `n` transactions.
async fn wait_journaled(admin: std::net::SocketAddr, n: u64) {
    wait_listening(admin).await;
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(60);
    loop {
        let (_, _, body) = http(admin, "GET", "/status").await;
        let v: serde_json::Value = serde_json::from_str(&body).unwrap_or_default();
        if v["mirror"]["journaled"].as_u64().unwrap_or(0) >= n {
            return;
        }
        assert!(tokio::time::Instant::now() < deadline, "no progress: {v}");
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tandem_sigkilled_mid_run_and_restarted_loses_and_repeats_nothing() {
    init_logging();
    let primary = "tandem_m_kill";
    let secondary = "tandem_m_kill_next";
    let mut tandem = ChildTandem::start(primary, secondary, WORKLOAD_SCHEMA).await;
    let (listen, admin) = (tandem.listen, tandem.admin);
    let load = tokio::spawn(async move { run_workload(listen, primary, 8, 500, 99, true).await });
    for _ in 0..2 {
        // Killed once this process has journaled a share of the 4000
        // transactions (not after a fixed time: a fast host finishes the
        // whole workload in a few seconds).
        wait_journaled(admin, 700).await;
        tandem.kill();
        tokio::time::sleep(std::time::Duration::from_millis(300)).await;
        tandem.restart().await;
    }
    let report = load.await.unwrap();
    eprintln!("workload: {report:?}");
    assert!(report.disconnects > 0, "the kills did not hit the workload");
    // The last restart may still be recovering (its MySQL port is bound
    // before the admin API starts).
    wait_listening(admin).await;
    let status = wait_caught_up_http(admin).await;
    eprintln!("mirror: {}", status["mirror"]);
    for t in WORKLOAD_TABLES {
        assert_same(primary, secondary, t).await;
    }
    assert_eq!(status["mirror"]["dropped"], 0);
    assert_eq!(status["mirror"]["dead_lettered"], 0);
    assert_eq!(status["mirror"]["divergent_tables"], serde_json::json!({}));
    assert_eq!(status["mirror"]["plain_fallbacks"], 0);
    tandem.kill();
    if std::env::var("TANDEM_LOG").is_ok() {
        eprintln!(
            "{}",
            std::fs::read_to_string(&tandem.log).unwrap_or_default()
        );
    }
    drop_databases(&[primary, secondary]).await;
}

/// Outcome records are not fsynced on their own (the next intent's fsync
/// covers them), so a power cut can lose the outcome of a transaction that
/// committed, or leave an intent whose COMMIT never ran. After the restart
/// the primary's commit markers decide: applied iff the marker row exists.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn intents_whose_outcome_was_lost_are_settled_from_the_markers() {
    use tandem::mirror::journal::Journal;
    use tandem::mirror::record::{JournalRecord, MirrorStatement, MirrorTxn, Pins};
    let primary = "tandem_m_lost";
    let secondary = "tandem_m_lost_next";
    let mut tandem = ChildTandem::start(
        primary,
        secondary,
        &["CREATE TABLE t (id INT PRIMARY KEY, v VARCHAR(40) NOT NULL)"],
    )
    .await;
    let (listen, admin) = (tandem.listen, tandem.admin);
    let mut c = Conn::new(proxy_builder(listen, Some(primary)))
        .await
        .unwrap();
    c.query_drop("INSERT INTO t VALUES (1, 'autocommit')")
        .await
        .unwrap();
    c.query_drop("BEGIN").await.unwrap();
    c.query_drop("INSERT INTO t VALUES (2, 'transaction')")
        .await
        .unwrap();
    c.query_drop("COMMIT").await.unwrap();
    drop(c);
    wait_listening(admin).await;
    wait_caught_up_http(admin).await;
    tandem.kill();

    // What a power cut leaves: transaction 3 committed on the primary with
    // its marker, transaction 4 never did; both intents are durable, their
    // outcomes are gone.
    // Tokens above any the killed process handed out: a marker clean-up it
    // sent just before the kill may still run on the server, and deletes
    // only tokens below its own.
    let token = tandem::mirror::now_us() as u64 + 1_000_000_000_000;
    let mut p = Conn::new(direct_opts(primary)).await.unwrap();
    p.query_drop("BEGIN").await.unwrap();
    p.query_drop("INSERT INTO t VALUES (3, 'committed, outcome lost')")
        .await
        .unwrap();
    p.query_drop(format!(
        "INSERT INTO tandem.commit_marker (db, token) VALUES (DATABASE(), {token})"
    ))
    .await
    .unwrap();
    p.query_drop("COMMIT").await.unwrap();
    p.disconnect().await.unwrap();
    let intent = |token: u64, id: u32, v: &str| JournalRecord::Intent {
        token,
        txn: MirrorTxn {
            committed_at_us: tandem::mirror::now_us(),
            conn_id: 1,
            statements: vec![MirrorStatement {
                // The primary URL's database is recorded as None.
                db: None,
                sql: format!("INSERT INTO t VALUES ({id}, '{v}')").into_bytes(),
                tables: vec!["t".to_string()],
                ddl: false,
                pins: Pins::default(),
                session: Default::default(),
            }],
        },
    };
    let mut j = Journal::open(&tandem.journal(), 64 * 1024).unwrap();
    let committed = j
        .append(&intent(token, 3, "committed, outcome lost").encode())
        .unwrap();
    let never = j
        .append(&intent(token + 1, 4, "never committed").encode())
        .unwrap();
    j.sync().unwrap();
    drop(j);

    tandem.restart().await;
    wait_listening(admin).await;
    let status = wait_caught_up_http(admin).await;
    let ids: Vec<(u32, String)> = Conn::new(direct_opts(secondary))
        .await
        .unwrap()
        .query("SELECT id, v FROM t ORDER BY id")
        .await
        .unwrap();
    let ids: Vec<u32> = ids.into_iter().map(|(id, _)| id).collect();
    assert_eq!(
        ids,
        vec![1, 2, 3],
        "mirror: {}\nlog:\n{}",
        status["mirror"],
        std::fs::read_to_string(&tandem.log).unwrap_or_default()
    );
    assert_same(primary, secondary, "t").await;
    let text = std::fs::read_to_string(&tandem.log).unwrap_or_default();
    for (lsn, verdict) in [(committed, "committed=true"), (never, "committed=false")] {
        assert!(
            text.lines().any(|l| l.contains("in-doubt intent resolved")
                && l.contains(&format!("lsn={lsn}"))
                && l.contains(verdict)),
            "no resolution of LSN {lsn} in the log:\n{text}"
        );
    }
    assert_eq!(status["mirror"]["dead_lettered"], 0);
    tandem.kill();
    drop_databases(&[primary, secondary]).await;
}

/// A and B update rows 1 and 2 in opposite orders; InnoDB rolls one of them
/// back with a deadlock (1213). Returns (survivor, victim).
async fn deadlock(mut a: Conn, mut b: Conn, round: i32) -> (Conn, Conn) {
    for c in [&mut a, &mut b] {
        c.query_drop("BEGIN").await.unwrap();
    }
    a.query_drop(format!("UPDATE acct SET v = v + {round} WHERE id = 1"))
        .await
        .unwrap();
    b.query_drop(format!(
        "UPDATE acct SET v = v + {} WHERE id = 2",
        10 * round
    ))
    .await
    .unwrap();
    let (ra, rb) = tokio::join!(
        a.query_drop(format!("UPDATE acct SET v = v + {round} WHERE id = 2")),
        async {
            tokio::time::sleep(std::time::Duration::from_millis(300)).await;
            b.query_drop(format!(
                "UPDATE acct SET v = v + {} WHERE id = 1",
                10 * round
            ))
            .await
        }
    );
    match (ra, rb) {
        (Ok(()), Err(e)) => {
            assert!(e.to_string().contains("Deadlock"), "{e}");
            (a, b)
        }
        (Err(e), Ok(())) => {
            assert!(e.to_string().contains("Deadlock"), "{e}");
            (b, a)
        }
        other => panic!("expected one deadlock: {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_a_deadlock_rolled_back_are_not_mirrored_whatever_the_client_sends_next() {
    let env = MirrorEnv::start("deadlock", "").await;
    env.create_both("CREATE TABLE acct (id INT PRIMARY KEY, v INT NOT NULL)")
        .await;
    let mut c = env.proxy().await;
    c.query_drop("INSERT INTO acct VALUES (1, 0), (2, 0), (3, 0)")
        .await
        .unwrap();
    c.disconnect().await.unwrap();
    let (a, b) = (env.proxy().await, env.proxy().await);
    // The victim commits as if nothing happened (the server has no
    // transaction left; its COMMIT commits nothing).
    let (mut s, mut v) = deadlock(a, b, 1).await;
    v.query_drop("COMMIT").await.unwrap();
    s.query_drop("COMMIT").await.unwrap();
    // The victim starts again with BEGIN (which would commit an open
    // transaction) and writes something else.
    let (mut s, mut v) = deadlock(s, v, 2).await;
    v.query_drop("BEGIN").await.unwrap();
    v.query_drop("UPDATE acct SET v = v + 100 WHERE id = 3")
        .await
        .unwrap();
    v.query_drop("COMMIT").await.unwrap();
    s.query_drop("COMMIT").await.unwrap();
    // With autocommit off the victim's next write opens a new transaction
    // by itself.
    for c in [&mut s, &mut v] {
        c.query_drop("SET autocommit = 0").await.unwrap();
    }
    let (mut s, mut v) = deadlock(s, v, 3).await;
    v.query_drop("UPDATE acct SET v = v + 1000 WHERE id = 3")
        .await
        .unwrap();
    v.query_drop("COMMIT").await.unwrap();
    s.query_drop("COMMIT").await.unwrap();
    // A lock wait timeout rolls back only its statement (the default
    // innodb_rollback_on_timeout): what the transaction wrote before it
    // commits and is mirrored.
    v.query_drop("SET innodb_lock_wait_timeout = 1")
        .await
        .unwrap();
    s.query_drop("UPDATE acct SET v = v + 7 WHERE id = 1")
        .await
        .unwrap();
    v.query_drop("UPDATE acct SET v = v + 7000 WHERE id = 3")
        .await
        .unwrap();
    let e = v
        .query_drop("UPDATE acct SET v = v + 7 WHERE id = 1")
        .await
        .unwrap_err();
    assert!(e.to_string().contains("Lock wait timeout"), "{e}");
    v.query_drop("COMMIT").await.unwrap();
    s.query_drop("COMMIT").await.unwrap();
    s.disconnect().await.unwrap();
    v.disconnect().await.unwrap();
    env.wait_caught_up().await;
    let mut d = Conn::new(direct_opts(&env.secondary)).await.unwrap();
    let v3: i32 = d
        .query_first("SELECT v FROM acct WHERE id = 3")
        .await
        .unwrap()
        .unwrap();
    d.disconnect().await.unwrap();
    assert_eq!(v3, 8100, "the surviving transactions' writes to row 3");
    assert_same(&env.primary, &env.secondary, "acct").await;
    assert!(
        env.mirror().divergent().is_empty(),
        "{:?}",
        env.mirror().divergent()
    );
    env.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_transaction_holds_one_marker_row_from_its_first_write_to_its_commit() {
    // The marker row (what an in-doubt commit is settled by) goes in with
    // a transaction's first mirrored write. Under REPEATABLE READ the
    // session's count of marker rows is its snapshot plus its own rows,
    // so it moves only with this transaction's marker.
    let env = MirrorEnv::start("marker_rows", "").await;
    env.create_both("CREATE TABLE t (id INT PRIMARY KEY, v VARCHAR(20) NOT NULL)")
        .await;
    let mut c = env.proxy().await;
    c.query_drop("INSERT INTO t VALUES (1, 'seed')")
        .await
        .unwrap();
    async fn markers(c: &mut Conn) -> u64 {
        c.query_first("SELECT COUNT(*) FROM tandem.commit_marker WHERE db = DATABASE()")
            .await
            .unwrap()
            .unwrap()
    }
    // Rolled back to a savepoint from before the first write: the marker
    // went with it, and the next write brings another.
    c.query_drop("BEGIN").await.unwrap();
    let base = markers(&mut c).await;
    c.query_drop("SAVEPOINT a").await.unwrap();
    c.query_drop("INSERT INTO t VALUES (2, 'rolled back')")
        .await
        .unwrap();
    assert_eq!(markers(&mut c).await, base + 1);
    c.query_drop("ROLLBACK TO SAVEPOINT a").await.unwrap();
    assert_eq!(markers(&mut c).await, base);
    c.query_drop("INSERT INTO t VALUES (3, 'after savepoint')")
        .await
        .unwrap();
    assert_eq!(markers(&mut c).await, base + 1);
    c.query_drop("COMMIT").await.unwrap();
    // A first write that fails keeps the marker; the next one adds none.
    c.query_drop("BEGIN").await.unwrap();
    let base = markers(&mut c).await;
    c.query_drop("INSERT INTO t VALUES (1, 'duplicate')")
        .await
        .unwrap_err();
    assert_eq!(markers(&mut c).await, base + 1);
    c.query_drop("INSERT INTO t VALUES (4, 'after error')")
        .await
        .unwrap();
    assert_eq!(markers(&mut c).await, base + 1);
    // A savepoint after the first write keeps it.
    c.query_drop("SAVEPOINT b").await.unwrap();
    c.query_drop("INSERT INTO t VALUES (5, 'rolled back')")
        .await
        .unwrap();
    c.query_drop("ROLLBACK TO SAVEPOINT b").await.unwrap();
    assert_eq!(markers(&mut c).await, base + 1);
    c.query_drop("COMMIT").await.unwrap();
    // BEGIN commits a transaction whose only write failed, marker row
    // and all; the next transaction gets a marker of its own.
    c.query_drop("BEGIN").await.unwrap();
    c.query_drop("INSERT INTO t VALUES (1, 'duplicate')")
        .await
        .unwrap_err();
    c.query_drop("BEGIN").await.unwrap();
    let base = markers(&mut c).await;
    c.query_drop("INSERT INTO t VALUES (8, 'next transaction')")
        .await
        .unwrap();
    assert_eq!(markers(&mut c).await, base + 1);
    c.query_drop("COMMIT").await.unwrap();
    // A rolled-back transaction leaves no marker row behind.
    c.query_drop("BEGIN").await.unwrap();
    c.query_drop("INSERT INTO t VALUES (6, 'rolled back')")
        .await
        .unwrap();
    c.query_drop("ROLLBACK").await.unwrap();
    // autocommit = 0: the marker opens the transaction with the write.
    c.query_drop("SET autocommit = 0").await.unwrap();
    let base = markers(&mut c).await;
    c.query_drop("INSERT INTO t VALUES (7, 'autocommit off')")
        .await
        .unwrap();
    assert_eq!(markers(&mut c).await, base + 1);
    c.query_drop("COMMIT").await.unwrap();
    c.disconnect().await.unwrap();
    env.wait_caught_up().await;
    assert_same(&env.primary, &env.secondary, "t").await;
    let ids: Vec<u32> = {
        let mut d = Conn::new(direct_opts(&env.secondary)).await.unwrap();
        let v = d.query("SELECT id FROM t ORDER BY id").await.unwrap();
        d.disconnect().await.unwrap();
        v
    };
    assert_eq!(ids, vec![1, 3, 4, 7, 8]);
    assert!(
        env.mirror().divergent().is_empty(),
        "{:?}",
        env.mirror().divergent()
    );
    env.stop().await;
}

/// Polls until the applier stopped on its own; returns why.
async fn wait_stopped(m: &tandem::mirror::runtime::Mirror) -> String {
    for _ in 0..600 {
        if let Some(why) = m.applier.stopped.lock().unwrap().clone() {
            return why;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    panic!("the applier did not stop");
}

/// `apply_errors: halt`: a transaction the secondary refuses stops the
/// applier before it (recorded as "halted", nothing skipped), while the
/// primary keeps taking writes; once the operator fixes the secondary,
/// `tandem resume` applies from that transaction on and the copy is exact.
/// Switched to `continue` by a reload, the running applier dead-letters.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn apply_errors_halt_stops_before_a_refused_transaction_until_resumed() {
    use std::sync::atomic::Ordering::Relaxed;
    let env = MirrorEnv::launch("halt", MARIADB_PORT, "  apply_errors: halt", Some("")).await;
    env.create_both("CREATE TABLE u (id INT PRIMARY KEY, v INT NOT NULL)")
        .await;
    let mut sec = Conn::new(direct_opts(&env.secondary)).await.unwrap();
    // A row only the secondary has: mirroring id 5 hits a duplicate key.
    sec.query_drop("INSERT INTO u VALUES (5, 0)").await.unwrap();
    let mut c = env.proxy().await;
    c.query_drop("INSERT INTO u VALUES (1, 1)").await.unwrap();
    c.query_drop("INSERT INTO u VALUES (5, 5)").await.unwrap();
    let m = env.mirror();
    let why = wait_stopped(&m).await;
    assert!(
        why.contains("halted before LSN") && why.contains("Duplicate entry"),
        "{why}"
    );
    // The primary keeps serving; these wait in the journal.
    c.query_drop("INSERT INTO u VALUES (6, 6)").await.unwrap();
    c.query_drop("UPDATE u SET v = v + 10 WHERE id IN (1, 5)")
        .await
        .unwrap();
    assert!(m.lag().0 >= 3, "lag {:?}", m.lag());
    assert_eq!(m.applier.dead_lettered.load(Relaxed), 0);
    assert!(m.divergent().is_empty(), "{:?}", m.divergent());
    let dead_letter = env.dir.path().join("journal/dead-letter.jsonl");
    let entries = || -> Vec<serde_json::Value> {
        std::fs::read_to_string(&dead_letter)
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    };
    let e = entries();
    assert_eq!(e.len(), 1, "{e:?}");
    assert_eq!(e[0]["action"], "halted");
    assert_eq!(e[0]["statements"][0], "INSERT INTO u VALUES (5, 5)");
    let (code, out, _) = env.tool("status", &[]).await;
    assert_eq!(code, 0);
    assert!(out.contains("APPLIER STOPPED: halted before LSN"), "{out}");
    let admin = env.server.shared.config.load().admin.unwrap();
    let (_, _, metrics) = http(admin, "GET", "/metrics").await;
    assert!(
        metrics.contains("tandem_mirror_applier_stopped 1"),
        "{metrics}"
    );
    // A cutover now would lose the backlog: refused.
    let (code, _, err) = env.tool("cutover", &[]).await;
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("applier stopped"), "{err}");

    // Resumed without a fix: it halts at the same transaction again.
    let (code, _, err) = env.tool("resume", &[]).await;
    assert_eq!(code, 0, "{err}");
    let again = wait_stopped(&m).await;
    assert_eq!(
        again.split(':').next(),
        why.split(':').next(),
        "same LSN: {again}"
    );

    // The operator removes the stray row; resume applies everything.
    sec.query_drop("DELETE FROM u WHERE id = 5").await.unwrap();
    let (code, out, err) = env.tool("resume", &[]).await;
    assert_eq!(code, 0, "{out}{err}");
    env.wait_caught_up().await;
    assert_eq!(assert_same(&env.primary, &env.secondary, "u").await, 3);
    assert!(m.applier.stopped.lock().unwrap().is_none());
    let (code, _, err) = env.tool("resume", &[]).await;
    assert_eq!(code, 1);
    assert!(err.contains("running"), "{err}");
    let (_, _, metrics) = http(admin, "GET", "/metrics").await;
    assert!(
        metrics.contains("tandem_mirror_applier_stopped 0"),
        "{metrics}"
    );

    // `continue` by a reload: the running applier dead-letters the next one.
    let cfg = env.cfg.clone().unwrap();
    let text = std::fs::read_to_string(&cfg).unwrap();
    std::fs::write(
        &cfg,
        text.replace("apply_errors: halt", "apply_errors: continue"),
    )
    .unwrap();
    let (code, _, body) = http(admin, "POST", "/reload").await;
    assert_eq!(code, 200, "{body}");
    sec.query_drop("INSERT INTO u VALUES (7, 0)").await.unwrap();
    c.query_drop("INSERT INTO u VALUES (7, 7)").await.unwrap();
    c.query_drop("INSERT INTO u VALUES (8, 8)").await.unwrap();
    env.wait_caught_up().await;
    assert!(m.applier.stopped.lock().unwrap().is_none());
    assert_eq!(m.applier.dead_lettered.load(Relaxed), 1);
    assert!(m.divergent().contains_key("u"), "{:?}", m.divergent());
    let e = entries();
    assert_eq!(
        e.iter()
            .map(|e| e["action"].as_str().unwrap())
            .collect::<Vec<_>>(),
        ["halted", "halted", "skipped"]
    );
    let ids: Vec<i32> = sec.query("SELECT id FROM u ORDER BY id").await.unwrap();
    assert_eq!(ids, vec![1, 5, 6, 7, 8]);
    c.disconnect().await.unwrap();
    sec.disconnect().await.unwrap();
    env.stop().await;
}

/// A mirroring Tandem whose host dies without closing its connections
/// (here: a relay that stops relaying and keeps them open) holds its lock
/// only until the server's idle timeout for lock connections ends them;
/// then a replacement starts without anyone running KILL.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_mirror_hosts_lock_is_released_by_the_server() {
    init_logging();
    let (primary, secondary) = ("tandem_m_silent", "tandem_m_silent_next");
    fresh_database(primary).await;
    fresh_database(secondary).await;
    let relay = crate::common::relay::Relay::start(
        format!("{MARIADB_HOST}:{MARIADB_PORT}").parse().unwrap(),
    )
    .await;
    let dir = tempfile::tempdir().unwrap();
    let config = |port: u16, name: &str| {
        let yaml = mirror_yaml(
            primary,
            secondary,
            port,
            &dir.path().join(name).join("journal"),
            &dir.path().join(name).join("rules"),
            "",
        )
        .replace(
            &format!(":{MARIADB_PORT}/{primary}\n"),
            &format!(":{port}/{primary}\n"),
        );
        tandem::config::parse(&yaml).unwrap()
    };
    let first = tandem::server::start(config(relay.addr.port(), "first"))
        .await
        .expect("first starts");
    relay.freeze();
    let frozen_at = std::time::Instant::now();
    let mut refused = 0;
    let second = loop {
        match tandem::server::start(config(MARIADB_PORT, "second")).await {
            Ok(s) => break s,
            Err(e) => {
                let e = e.to_string();
                assert!(
                    e.contains("another Tandem mirrors database tandem_m_silent"),
                    "{e}"
                );
                assert!(
                    e.contains("the server drops its lock after 30 s without a ping"),
                    "{e}"
                );
                refused += 1;
                assert!(
                    frozen_at.elapsed() < std::time::Duration::from_secs(90),
                    "the silent holder's lock was never released: {e}"
                );
                tokio::time::sleep(std::time::Duration::from_secs(1)).await;
            }
        }
    };
    assert!(
        refused > 0,
        "the lock was held while the first one was silent"
    );
    eprintln!(
        "second Tandem started {:?} after the first went silent ({refused} refusals)",
        frozen_at.elapsed()
    );
    second.shutdown().await;
    relay.cut();
    first.shutdown().await;
    drop_databases(&[primary, secondary]).await;
}

/// A second Tandem mirroring the same databases (two replicas started with
/// one config) would mix commit markers and applied positions: it is
/// refused at start, naming the lock's holder, and starts once the first
/// one is gone. One whose secondary alone is taken is refused too, and so
/// is one with other databases that names the first one's journal.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_tandem_cannot_mirror_the_same_databases() {
    let env = MirrorEnv::start("guard", "").await;
    let other = tempfile::tempdir().unwrap();
    let second = |primary: &str, secondary: &str| {
        tandem::config::parse(&mirror_yaml(
            primary,
            secondary,
            MARIADB_PORT,
            &other.path().join("journal"),
            &other.path().join("rules"),
            "",
        ))
        .unwrap()
    };
    let e = tandem::server::start(second(&env.primary, &env.secondary))
        .await
        .err()
        .expect("refused");
    let e = e.to_string();
    eprintln!("{e}");
    assert!(
        e.contains("another Tandem mirrors database tandem_m_guard ")
            && e.contains("lock 'tandem_mirror:tandem_m_guard' is held by connection "),
        "{e}"
    );
    // Another primary, the same secondary.
    fresh_database("tandem_m_guard_other").await;
    let e = tandem::server::start(second("tandem_m_guard_other", &env.secondary))
        .await
        .err()
        .expect("refused")
        .to_string();
    assert!(e.contains("mirrors database tandem_m_guard_next"), "{e}");
    // Other databases, the same journal directory: two writers would give
    // out the same LSNs.
    fresh_database("tandem_m_guard_other_next").await;
    let journal = env.dir.path().join("journal");
    let yaml = mirror_yaml(
        "tandem_m_guard_other",
        "tandem_m_guard_other_next",
        MARIADB_PORT,
        &journal,
        &other.path().join("rules"),
        "",
    );
    let e = tandem::server::start(tandem::config::parse(&yaml).unwrap())
        .await
        .err()
        .expect("refused")
        .to_string();
    assert!(
        e.contains(&format!(
            "journal {}: in use by another Tandem (process {})",
            journal.display(),
            std::process::id()
        )) && e.contains("needs a journal directory of its own"),
        "{e}"
    );

    let (primary, secondary) = (env.primary.clone(), env.secondary.clone());
    env.server.shutdown().await;
    let server = tandem::server::start(second(&primary, &secondary))
        .await
        .expect("starts once the first one stopped");
    server.shutdown().await;
    drop_databases(&[
        &primary,
        &secondary,
        "tandem_m_guard_other",
        "tandem_m_guard_other_next",
    ])
    .await;
}

/// Tandem killed while an apply connection's transaction waits on the
/// secondary (here for a row lock a test connection holds): that
/// connection lives on and commits once the lock goes. The restarted
/// applier must not read the stored position before then, or it applies
/// the same transaction a second time (the soak test found `v = v + n`
/// applied twice after kills, one run in five at 8 × 500).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_waits_for_the_previous_appliers_commit() {
    let primary = "tandem_m_applywait";
    let secondary = "tandem_m_applywait_next";
    let schema = ["CREATE TABLE kv (k INT PRIMARY KEY, v INT)"];
    let mut tandem = ChildTandem::start(primary, secondary, &schema).await;
    let mut c = Conn::new(proxy_builder(tandem.listen, Some(primary)))
        .await
        .unwrap();
    c.query_drop("INSERT INTO kv VALUES (1, 0)").await.unwrap();
    wait_caught_up_http(tandem.admin).await;
    let mut holder = Conn::new(direct_opts(secondary)).await.unwrap();
    holder.query_drop("BEGIN").await.unwrap();
    holder
        .query_drop("SELECT * FROM kv WHERE k = 1 FOR UPDATE")
        .await
        .unwrap();
    c.query_drop("UPDATE kv SET v = v + 1 WHERE k = 1")
        .await
        .unwrap();
    drop(c);
    // The applier's transaction is on the secondary, waiting for the row.
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    tandem.kill();
    tandem.restart().await;
    wait_listening(tandem.admin).await;
    tokio::time::sleep(std::time::Duration::from_millis(700)).await;
    holder.query_drop("COMMIT").await.unwrap();
    holder.disconnect().await.unwrap();
    let status = wait_caught_up_http(tandem.admin).await;
    assert_eq!(status["mirror"]["dead_lettered"], 0, "{status}");
    assert_eq!(assert_same(primary, secondary, "kv").await, 1);
    tandem.kill();
    drop_databases(&[primary, secondary]).await;
}
