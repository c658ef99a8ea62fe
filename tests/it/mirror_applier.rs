//! The applier against a real MariaDB secondary: pinned values reproduce the
//! primary's, transactions apply atomically and exactly once across
//! restarts and connection loss, permanent failures are dead-lettered.

use crate::common::relay::Relay;
use crate::common::*;
use mysql_async::prelude::*;
use mysql_async::Conn;
use std::sync::atomic::Ordering;
use std::time::Duration;
use tandem::config::ApplyErrors;
use tandem::config::{BackendConfig, BackendKind};
use tandem::mirror::applier::{Applier, ApplierConfig, ApplierStats};
use tandem::mirror::journal::{Journal, Lsn};
use tandem::mirror::record::{MirrorStatement, MirrorTxn, Pins};
use tandem::mirror::JournalHandle;
use tokio_util::sync::CancellationToken;

struct Fixture {
    db: String,
    dir: tempfile::TempDir,
    journal: JournalHandle,
    port: u16,
    /// `migration.apply_batch_wait`.
    batch_wait: Duration,
    attempt_timeout: Duration,
}

async fn fixture(name: &str) -> Fixture {
    let db = format!("tandem_{name}");
    fresh_database(&db).await;
    let dir = tempfile::tempdir().unwrap();
    let j = Journal::open(&dir.path().join("journal"), 4096).unwrap();
    let (journal, _thread) = JournalHandle::spawn(j, 1024);
    Fixture {
        db,
        dir,
        journal,
        port: MARIADB_PORT,
        batch_wait: Duration::from_millis(10),
        attempt_timeout: Duration::from_secs(5),
    }
}

impl Fixture {
    /// The secondary's backend as the applier sees it.
    fn backend(&self) -> BackendConfig {
        BackendConfig {
            name: "next".into(),
            kind: BackendKind::Mysql,
            host: "127.0.0.1".into(),
            port: self.port,
            user: "root".into(),
            password: String::new(),
            database: Some(self.db.clone()),
            pool: 4,
            bookkeeping: "tandem".into(),
            tls: None,
            schema: None,
        }
    }

    fn applier(&self, policy: ApplyErrors) -> Applier {
        let secondary = self.backend();
        Applier::new(
            ApplierConfig {
                secondary,
                journal_dir: self.dir.path().join("journal"),
                dead_letter: self.dir.path().join("dead-letter.jsonl"),
                on_permanent_error: tandem::mirror::applier::ErrorPolicy::new(policy),
                attempt_timeout: self.attempt_timeout,
                workers: 4,
                batch_wait: self.batch_wait,
            },
            self.journal.clone(),
        )
    }

    /// Starts an applier; returns its stats, stop token and task.
    fn spawn(
        &self,
        policy: ApplyErrors,
    ) -> (
        std::sync::Arc<ApplierStats>,
        CancellationToken,
        tokio::task::JoinHandle<Result<(), tandem::mirror::applier::ApplierError>>,
    ) {
        let a = self.applier(policy);
        let stats = a.stats();
        let stop = CancellationToken::new();
        let task = tokio::spawn(a.run(stop.clone()));
        (stats, stop, task)
    }

    async fn append(&self, txn: MirrorTxn) -> Lsn {
        self.journal.append(txn.encode()).await.unwrap()
    }

    async fn direct(&self) -> Conn {
        Conn::new(direct_opts(&self.db)).await.unwrap()
    }

    /// Drops the test's database (a failed test keeps it, to look at).
    async fn done(self) {
        drop_databases(&[&self.db]).await;
    }
}

fn stmt(db: &str, sql: &str, tables: &[&str]) -> MirrorStatement {
    MirrorStatement {
        db: Some(db.to_string()),
        sql: sql.as_bytes().to_vec(),
        tables: tables.iter().map(|t| t.to_string()).collect(),
        ddl: false,
        pins: Pins::default(),
        session: Default::default(),
    }
}

fn ddl(db: &str, sql: &str) -> MirrorTxn {
    let mut s = stmt(db, sql, &[]);
    s.ddl = true;
    txn(vec![s])
}

/// id, v, ts as text, r, li
type TRow = (i32, String, String, Option<f64>, Option<i64>);

fn txn(statements: Vec<MirrorStatement>) -> MirrorTxn {
    MirrorTxn {
        committed_at_us: 1_700_000_000_000_000,
        conn_id: 1,
        statements,
    }
}

async fn wait_applied(stats: &ApplierStats, lsn: Lsn) {
    for _ in 0..600 {
        if stats.applied_lsn.load(Ordering::Relaxed) >= lsn {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!(
        "applier stuck at {} (wanted {lsn})",
        stats.applied_lsn.load(Ordering::Relaxed)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pinned_values_and_transactions_apply_as_on_the_primary() {
    let f = fixture("apply_pins").await;
    let db = f.db.clone();
    f.append(ddl(
        &db,
        "CREATE TABLE t (id INT AUTO_INCREMENT PRIMARY KEY, v VARCHAR(20),
         ts DATETIME(6) DEFAULT CURRENT_TIMESTAMP(6), r DOUBLE, li BIGINT)",
    ))
    .await;
    let ts = 1_704_067_200_123_456; // 2024-01-01 00:00:00.123456 UTC
    let mut ins = stmt(&db, "INSERT INTO t (v) VALUES ('a'), ('b')", &["t"]);
    ins.pins = Pins {
        timestamp_us: Some(ts),
        insert_id: Some(100),
        ..Default::default()
    };
    ins.session = std::sync::Arc::new(vec![("time_zone".into(), "'+00:00'".into())]);
    f.append(txn(vec![ins])).await;
    let upd = stmt(
        &db,
        "UPDATE t SET v = CONCAT(v, '!') WHERE id = 100",
        &["t"],
    );
    let mut rnd = stmt(
        &db,
        "INSERT INTO t (v, r, li) VALUES ('c', RAND(), LAST_INSERT_ID())",
        &["t"],
    );
    rnd.pins = Pins {
        timestamp_us: Some(ts + 1),
        insert_id: Some(200),
        last_insert_id: Some(100),
        rand_seeds: Some((12345, 67890)),
    };
    let last = f.append(txn(vec![upd, rnd])).await;
    // A rolled-back-on-primary transaction never reaches the journal; nothing to add.
    let (stats, stop, task) = f.spawn(ApplyErrors::Halt);
    wait_applied(&stats, last).await;
    stop.cancel();
    task.await.unwrap().unwrap();

    let mut d = f.direct().await;
    d.query_drop("SET time_zone = '+00:00'").await.unwrap();
    let rows: Vec<TRow> = d
        .query("SELECT id, v, CAST(ts AS CHAR), r, li FROM t ORDER BY id")
        .await
        .unwrap();
    assert_eq!(rows.len(), 3);
    assert_eq!((rows[0].0, rows[0].1.as_str()), (100, "a!"));
    assert_eq!((rows[1].0, rows[1].1.as_str()), (101, "b"));
    assert_eq!(rows[0].2, "2024-01-01 00:00:00.123456");
    assert_eq!(rows[2].0, 200);
    assert_eq!(rows[2].2, "2024-01-01 00:00:00.123457");
    assert_eq!(rows[2].4, Some(100), "LAST_INSERT_ID() pinned");
    let expected_rand: Option<f64> = d
        .query_first("SET @@rand_seed1 = 12345, @@rand_seed2 = 67890; SELECT RAND()")
        .await
        .ok()
        .flatten();
    let expected_rand = match expected_rand {
        Some(v) => v,
        None => {
            d.query_drop("SET @@rand_seed1 = 12345, @@rand_seed2 = 67890")
                .await
                .unwrap();
            d.query_first("SELECT RAND()").await.unwrap().unwrap()
        }
    };
    assert_eq!(
        rows[2].3,
        Some(expected_rand),
        "RAND() seeded as on the primary"
    );
    let pos: Option<u64> = d
        .query_first("SELECT lsn FROM tandem.apply_position WHERE db = DATABASE()")
        .await
        .unwrap();
    assert_eq!(pos, Some(last));
    assert_eq!(stats.applied.load(Ordering::Relaxed), 3);
    d.disconnect().await.unwrap();
    f.done().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exactly_once_across_restarts_and_killed_connections() {
    let f = fixture("apply_once").await;
    let db = f.db.clone();
    // No primary key: a transaction applied twice would show as a duplicate.
    f.append(ddl(&db, "CREATE TABLE c (n INT, m INT)")).await;
    let mut last = 0;
    for i in 1..=300 {
        // Two statements per transaction: partial application would show too.
        last = f
            .append(txn(vec![
                stmt(&db, &format!("INSERT INTO c VALUES ({i}, 0)"), &["c"]),
                stmt(&db, &format!("UPDATE c SET m = 1 WHERE n = {i}"), &["c"]),
            ]))
            .await;
    }
    let mut d = f.direct().await;
    for round in 0..6 {
        let (stats, stop, task) = f.spawn(ApplyErrors::Halt);
        tokio::time::sleep(Duration::from_millis(40 + round * 30)).await;
        if round % 2 == 1 {
            // Kill the applier's connection behind its back.
            let ids: Vec<u64> = d
                .query(format!(
                    "SELECT ID FROM information_schema.PROCESSLIST WHERE DB = '{db}' AND ID <> CONNECTION_ID()"
                ))
                .await
                .unwrap();
            for id in ids {
                let _ = d.query_drop(format!("KILL {id}")).await;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        stop.cancel();
        task.await.unwrap().unwrap();
        let _ = stats;
    }
    let (stats, stop, task) = f.spawn(ApplyErrors::Halt);
    wait_applied(&stats, last).await;
    stop.cancel();
    task.await.unwrap().unwrap();
    let (count, distinct, all_updated): (i64, i64, i64) = d
        .query_first("SELECT COUNT(*), COUNT(DISTINCT n), SUM(m) FROM c")
        .await
        .unwrap()
        .unwrap();
    assert_eq!((count, distinct, all_updated), (300, 300, 300));
    d.disconnect().await.unwrap();
    f.done().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn secondary_cut_off_and_restored_loses_nothing() {
    let mut f = fixture("apply_cut").await;
    let relay = Relay::start(format!("127.0.0.1:{MARIADB_PORT}").parse().unwrap()).await;
    f.port = relay.addr.port();
    let db = f.db.clone();
    f.append(ddl(&db, "CREATE TABLE k (n INT PRIMARY KEY)"))
        .await;
    let (stats, stop, task) = f.spawn(ApplyErrors::Halt);
    let mut last = 0;
    for i in 1..=200 {
        last = f
            .append(txn(vec![stmt(
                &db,
                &format!("INSERT INTO k VALUES ({i})"),
                &["k"],
            )]))
            .await;
        if i == 60 {
            relay.cut();
        }
        if i == 140 {
            tokio::time::sleep(Duration::from_millis(400)).await;
            relay.restore();
        }
    }
    wait_applied(&stats, last).await;
    assert!(
        stats.retried.load(Ordering::Relaxed) > 0,
        "the cut was noticed and retried"
    );
    stop.cancel();
    task.await.unwrap().unwrap();
    let mut d = f.direct().await;
    let (count, sum): (i64, i64) = d
        .query_first("SELECT COUNT(*), SUM(n) FROM k")
        .await
        .unwrap()
        .unwrap();
    assert_eq!((count, sum), (200, 200 * 201 / 2));
    d.disconnect().await.unwrap();
    f.done().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn permanent_errors_are_dead_lettered_and_marked_divergent() {
    let f = fixture("apply_dead").await;
    let db = f.db.clone();
    f.append(ddl(&db, "CREATE TABLE u (id INT PRIMARY KEY)"))
        .await;
    f.append(txn(vec![stmt(&db, "INSERT INTO u VALUES (1)", &["u"])]))
        .await;
    // Row 1 exists on the secondary already: duplicate key, permanent.
    let bad = f
        .append(txn(vec![
            stmt(&db, "INSERT INTO u VALUES (2)", &["u"]),
            stmt(&db, "INSERT INTO u VALUES (1)", &["u"]),
        ]))
        .await;
    let last = f
        .append(txn(vec![stmt(&db, "INSERT INTO u VALUES (3)", &["u"])]))
        .await;
    let (stats, stop, task) = f.spawn(ApplyErrors::Continue);
    wait_applied(&stats, last).await;
    stop.cancel();
    task.await.unwrap().unwrap();
    assert_eq!(stats.dead_lettered.load(Ordering::Relaxed), 1);
    assert_eq!(
        stats.plain_fallbacks.load(Ordering::Relaxed),
        0,
        "a statement that fails in both forms is not a refused compound form"
    );
    assert!(stats.divergent_tables.lock().unwrap().contains("u"));
    let dl = std::fs::read_to_string(f.dir.path().join("dead-letter.jsonl")).unwrap();
    let entry: serde_json::Value = serde_json::from_str(dl.lines().next().unwrap()).unwrap();
    assert_eq!(entry["lsn"], bad);
    assert!(entry["reason"]
        .as_str()
        .unwrap()
        .contains("Duplicate entry"));
    let mut d = f.direct().await;
    let ids: Vec<i32> = d.query("SELECT id FROM u ORDER BY id").await.unwrap();
    assert_eq!(
        ids,
        vec![1, 3],
        "the failed transaction left nothing half-applied"
    );

    // Halt policy stops at the bad transaction.
    d.query_drop("UPDATE tandem.apply_position SET lsn = 2 WHERE db = DATABASE()")
        .await
        .unwrap();
    let (stats, _stop, task) = f.spawn(ApplyErrors::Halt);
    let r = tokio::time::timeout(Duration::from_secs(30), task)
        .await
        .unwrap()
        .unwrap();
    assert!(
        matches!(r, Err(tandem::mirror::applier::ApplierError::Halted { lsn, .. }) if lsn == bad)
    );
    assert_eq!(stats.applied_lsn.load(Ordering::Relaxed), 2);
    d.disconnect().await.unwrap();
    f.done().await;
}

/// Groups go to MariaDB as `BEGIN NOT ATOMIC … END` blocks, which the
/// server parses whole before running: a session change between two
/// statements of one transaction must still govern how the later ones are
/// parsed, and a statement a block refuses is applied as plain statements.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn session_changes_inside_a_group_and_statements_a_block_refuses_apply_as_on_the_primary() {
    let f = fixture("apply_compound").await;
    let db = f.db.clone();
    f.append(ddl(
        &db,
        "CREATE TABLE s (id INT PRIMARY KEY, v VARCHAR(40))",
    ))
    .await;
    let with_mode = |sql: &str, mode: &str| {
        let mut st = stmt(&db, sql, &["s"]);
        st.session = std::sync::Arc::new(vec![("sql_mode".into(), format!("'{mode}'"))]);
        st
    };
    let mixed = f
        .append(txn(vec![
            // Default quoting: "…" is a string, \ escapes.
            with_mode(r#"INSERT INTO s VALUES (1, "dq\\n")"#, ""),
            // ANSI_QUOTES: "…" names a table or column.
            with_mode(
                r#"INSERT INTO "s" ("id", "v") VALUES (2, 'ansi')"#,
                "ANSI_QUOTES",
            ),
            // NO_BACKSLASH_ESCAPES: a backslash is just a character.
            with_mode(
                r"INSERT INTO s VALUES (3, 'back\slash')",
                "NO_BACKSLASH_ESCAPES",
            ),
            with_mode(r"INSERT INTO s VALUES (4, 'back\slash')", ""),
        ]))
        .await;
    let (stats, stop, task) = f.spawn(ApplyErrors::Halt);
    wait_applied(&stats, mixed).await;
    assert_eq!(stats.plain_fallbacks.load(Ordering::Relaxed), 0);
    // UNLOCK TABLES is refused inside a stored program, fine outside.
    let refused = f
        .append(txn(vec![
            stmt(&db, "INSERT INTO s VALUES (5, 'before')", &["s"]),
            stmt(&db, "UNLOCK TABLES", &[]),
            stmt(&db, "INSERT INTO s VALUES (6, 'after')", &["s"]),
        ]))
        .await;
    let last = f
        .append(txn(vec![stmt(
            &db,
            "INSERT INTO s VALUES (7, 'next')",
            &["s"],
        )]))
        .await;
    wait_applied(&stats, last).await;
    stop.cancel();
    task.await.unwrap().unwrap();
    assert!(refused < last);
    assert_eq!(stats.plain_fallbacks.load(Ordering::Relaxed), 1);
    assert_eq!(stats.dead_lettered.load(Ordering::Relaxed), 0);
    let mut d = f.direct().await;
    let rows: Vec<(i32, String)> = d.query("SELECT id, v FROM s ORDER BY id").await.unwrap();
    let want: Vec<(i32, String)> = [
        (1, "dq\\n"),
        (2, "ansi"),
        (3, "back\\slash"),
        (4, "backslash"),
        (5, "before"),
        (6, "after"),
        (7, "next"),
    ]
    .iter()
    .map(|(i, v)| (*i, v.to_string()))
    .collect();
    assert_eq!(rows, want);
    d.disconnect().await.unwrap();
    f.done().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ddl_replayed_after_a_crash_is_taken_as_applied() {
    let f = fixture("apply_ddl").await;
    let db = f.db.clone();
    f.append(ddl(&db, "CREATE TABLE v (id INT PRIMARY KEY)"))
        .await;
    let last = f
        .append(txn(vec![stmt(&db, "INSERT INTO v VALUES (7)", &["v"])]))
        .await;
    let (stats, stop, task) = f.spawn(ApplyErrors::Halt);
    wait_applied(&stats, 1).await;
    stop.cancel();
    task.await.unwrap().unwrap();
    // As if Tandem crashed after the DDL ran but before its position was stored.
    let mut d = f.direct().await;
    d.query_drop("UPDATE tandem.apply_position SET lsn = 0 WHERE db = DATABASE()")
        .await
        .unwrap();
    d.query_drop("DELETE FROM v").await.unwrap();
    let (stats, stop, task) = f.spawn(ApplyErrors::Halt);
    wait_applied(&stats, last).await;
    stop.cancel();
    task.await.unwrap().unwrap();
    let ids: Vec<i32> = d.query("SELECT id FROM v").await.unwrap();
    assert_eq!(ids, vec![7]);
    assert_eq!(stats.dead_lettered.load(Ordering::Relaxed), 0);
    d.disconnect().await.unwrap();
    f.done().await;
}

/// What a crash in the middle of parallel apply leaves on the secondary:
/// a stored position below some intents that other connections already
/// committed, with those LSNs in the applied table. A restart applies the
/// gaps and the rest, and none of the recorded ones again. The state is
/// written in an earlier build's layout (`_tandem_position` and
/// `_tandem_applied` in the secondary's own database), so this also shows
/// that an upgrade adopts it into Tandem's database and drops the old
/// tables.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_after_out_of_order_apply_skips_what_was_applied() {
    let f = fixture("apply_sparse").await;
    let db = f.db.clone();
    let mut d = f.direct().await;
    d.query_drop("CREATE TABLE c (id INT PRIMARY KEY, n INT NOT NULL)")
        .await
        .unwrap();
    d.query_drop("INSERT INTO c VALUES (1, 0), (2, 0), (3, 0), (4, 0), (5, 0), (6, 0)")
        .await
        .unwrap();
    let mut lsns = Vec::new();
    for id in 1..=6 {
        let sql = format!("UPDATE c SET n = n + 1 WHERE id = {id}");
        lsns.push(f.append(txn(vec![stmt(&db, &sql, &["c"])])).await);
    }
    // Applied before the "crash": everything up to the first, and the
    // third and fifth out of order (as another connection would have).
    for i in [0usize, 2, 4] {
        d.query_drop(format!("UPDATE c SET n = n + 1 WHERE id = {}", i + 1))
            .await
            .unwrap();
    }
    d.query_drop(
        "CREATE TABLE _tandem_position (id TINYINT PRIMARY KEY, lsn BIGINT UNSIGNED NOT NULL,
           committed_at_us BIGINT NOT NULL,
           applied_at TIMESTAMP(6) NOT NULL DEFAULT CURRENT_TIMESTAMP(6) ON UPDATE CURRENT_TIMESTAMP(6))",
    )
    .await
    .unwrap();
    d.query_drop("CREATE TABLE _tandem_applied (lsn BIGINT UNSIGNED PRIMARY KEY)")
        .await
        .unwrap();
    d.query_drop(format!(
        "INSERT INTO _tandem_position (id, lsn, committed_at_us) VALUES (1, {}, 0), (3, {}, 0)",
        lsns[0],
        lsns[0] - 1
    ))
    .await
    .unwrap();
    d.query_drop(format!(
        "INSERT INTO _tandem_applied VALUES ({}), ({}), ({})",
        lsns[0] - 1,
        lsns[2],
        lsns[4]
    ))
    .await
    .unwrap();
    let (stats, stop, task) = f.spawn(ApplyErrors::Halt);
    wait_applied(&stats, lsns[5]).await;
    stop.cancel();
    task.await.unwrap().unwrap();
    let rows: Vec<(i32, i32)> = d.query("SELECT id, n FROM c ORDER BY id").await.unwrap();
    assert_eq!(
        rows,
        (1..=6).map(|id| (id, 1)).collect::<Vec<_>>(),
        "each update exactly once"
    );
    assert_eq!(stats.applied.load(Ordering::Relaxed), 3);
    let stored: Option<u64> = d
        .query_first("SELECT MAX(lsn) FROM tandem.apply_position WHERE db = DATABASE()")
        .await
        .unwrap();
    assert_eq!(stored, Some(lsns[5]));
    let left: Vec<String> = d
        .query("SELECT TABLE_NAME FROM information_schema.TABLES WHERE TABLE_SCHEMA = DATABASE() AND TABLE_NAME LIKE '\\_tandem%'")
        .await
        .unwrap();
    assert!(left.is_empty(), "{left:?}");
    d.disconnect().await.unwrap();
    f.done().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transactions_wait_for_a_fuller_group_until_someone_waits_for_them() {
    let mut f = fixture("apply_batch").await;
    // Longer than the test: only a full group or a hurry starts one.
    f.batch_wait = Duration::from_secs(3600);
    let db = f.db.clone();
    let mut d = f.direct().await;
    d.query_drop("CREATE TABLE b (id INT PRIMARY KEY, n INT NOT NULL)")
        .await
        .unwrap();
    let (stats, stop, task) = f.spawn(ApplyErrors::Halt);
    let insert = |id: i32| {
        txn(vec![stmt(
            &db,
            &format!("INSERT INTO b VALUES ({id}, 0)"),
            &["b"],
        )])
    };
    let hurry = |lsn: Lsn| {
        stats.hurry_to.store(lsn, Ordering::Relaxed);
        stats.hurry.notify_one();
    };
    let count = |c: &std::sync::atomic::AtomicU64| c.load(Ordering::Relaxed);
    // One transaction alone waits for company until someone waits for
    // it (a cutover's drain, verify, backfill: `Mirror::hurry`).
    let mut last = f.append(insert(1)).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(count(&stats.applied), 0, "applied without waiting");
    hurry(last);
    wait_applied(&stats, last).await;
    assert_eq!((count(&stats.applied), count(&stats.groups)), (1, 1));
    // A full group (16 independent transactions) goes at once, as one
    // secondary transaction, however slowly they came.
    for id in 2..=17 {
        last = f.append(insert(id)).await;
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    wait_applied(&stats, last).await;
    assert_eq!((count(&stats.applied), count(&stats.groups)), (17, 2));
    // Three more wait again.
    for id in 18..=20 {
        last = f.append(insert(id)).await;
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(count(&stats.applied), 17, "applied without waiting");
    hurry(last);
    wait_applied(&stats, last).await;
    assert_eq!((count(&stats.applied), count(&stats.groups)), (20, 3));
    stop.cancel();
    task.await.unwrap().unwrap();
    let n: Option<i64> = d.query_first("SELECT COUNT(*) FROM b").await.unwrap();
    assert_eq!(n, Some(20));
    d.disconnect().await.unwrap();
    f.done().await;
}

/// An attempt that outlives `attempt_timeout` is given up, but what it sent
/// may still be running on the secondary (here: waiting for a row lock)
/// and commit later. The retry must not apply the transaction again: the
/// old connection's thread is ended before the retry reads the position.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_timed_out_attempt_still_running_on_the_secondary_is_not_applied_twice() {
    let mut f = fixture("apply_slow").await;
    f.attempt_timeout = Duration::from_millis(500);
    let mut d = f.direct().await;
    d.query_drop("CREATE TABLE t (id INT PRIMARY KEY, n INT NOT NULL)")
        .await
        .unwrap();
    d.query_drop("INSERT INTO t VALUES (1, 0)").await.unwrap();
    // Another session holds the row the transaction updates.
    let mut holder = f.direct().await;
    holder.query_drop("BEGIN").await.unwrap();
    holder
        .query_drop("SELECT * FROM t WHERE id = 1 FOR UPDATE")
        .await
        .unwrap();
    let (stats, stop, task) = f.spawn(ApplyErrors::Continue);
    let db = f.db.clone();
    let lsn = f
        .append(txn(vec![stmt(
            &db,
            "UPDATE t SET n = n + 1 WHERE id = 1",
            &["t"],
        )]))
        .await;
    // Several attempts time out while the row is held.
    for _ in 0..400 {
        if stats.retried.load(Ordering::Relaxed) >= 3 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(stats.retried.load(Ordering::Relaxed) >= 3);
    holder.query_drop("COMMIT").await.unwrap();
    wait_applied(&stats, lsn).await;
    // An attempt given up on but still alive would commit now.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let n: i32 = d
        .query_first("SELECT n FROM t WHERE id = 1")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(n, 1, "the transaction was applied {n} times");
    stop.cancel();
    let _ = task.await;
    d.disconnect().await.unwrap();
    holder.disconnect().await.unwrap();
    f.done().await;
}

/// A secondary whose stored position is above the end of a journal that
/// starts at LSN 1 (a new journal: the migration started over, its
/// database dropped and created again, which no longer takes Tandem's rows
/// with it) is applied from the journal's start, not refused and not
/// skipped.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_journal_is_applied_from_its_start_whatever_an_earlier_one_stored() {
    let f = fixture("apply_new_journal").await;
    let db = f.db.clone();
    let mut d = f.direct().await;
    d.query_drop("CREATE TABLE n (id INT PRIMARY KEY)")
        .await
        .unwrap();
    // An earlier journal's position, far above this one's end.
    tandem::mirror::bookkeeping::ensure(&mut d, &f.backend())
        .await
        .unwrap();
    d.query_drop(
        "INSERT INTO tandem.apply_position (db, id, lsn, committed_at_us) VALUES (DATABASE(), 1, 100000, 0)",
    )
    .await
    .unwrap();
    let mut last = 0;
    for id in 1..=3 {
        let sql = format!("INSERT INTO n VALUES ({id})");
        last = f.append(txn(vec![stmt(&db, &sql, &["n"])])).await;
    }
    let (stats, stop, task) = f.spawn(ApplyErrors::Halt);
    wait_applied(&stats, last).await;
    stop.cancel();
    task.await.unwrap().unwrap();
    let ids: Vec<i32> = d.query("SELECT id FROM n ORDER BY id").await.unwrap();
    assert_eq!(ids, vec![1, 2, 3]);
    let stored: Option<u64> = d
        .query_first("SELECT MAX(lsn) FROM tandem.apply_position WHERE db = DATABASE()")
        .await
        .unwrap();
    assert_eq!(stored, Some(last));
    d.disconnect().await.unwrap();
    f.done().await;
}
