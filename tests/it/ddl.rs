//! DDL while mirroring: where it falls among the writes around it, and
//! what the secondary gets when the primary's answer is an error after a
//! partial effect or is lost in a crash.

use crate::common::child::*;
use crate::common::mirror::*;
use crate::common::*;
use mysql_async::prelude::*;
use mysql_async::Conn;
use std::time::Duration;

/// Waits until a connection on the primary waits for a metadata lock.
async fn wait_for_mdl_waiter() {
    let mut root = Conn::new(direct_opts("mysql")).await.unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let n: Option<u64> = root
            .query_first(
                "SELECT COUNT(*) FROM information_schema.PROCESSLIST \
                 WHERE STATE LIKE 'Waiting for table metadata lock%'",
            )
            .await
            .unwrap();
        if n.unwrap_or(0) > 0 {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no session waits for the metadata lock"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    root.disconnect().await.unwrap();
}

/// The recipe: A inserts (taking the column's old default) in an
/// open transaction; B's ALTER … SET DEFAULT waits for A's metadata lock;
/// A commits. The primary ran A's insert before the ALTER, so row 5 has
/// the old default there. Journaled before it waited, the ALTER was
/// replayed first and row 5 took the new default on the secondary. Under
/// the DDL's table lock it is journaled after A, and a write after it (7)
/// takes the new default on both sides.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_transaction_that_commits_while_a_ddl_waits_is_replayed_before_it() {
    let env = MirrorEnv::start("ddlwait", "").await;
    env.create_both("CREATE TABLE t (id INT PRIMARY KEY, st VARCHAR(10) NOT NULL DEFAULT 'old')")
        .await;
    let mut a = env.proxy().await;
    a.query_drop("BEGIN").await.unwrap();
    a.query_drop("INSERT INTO t (id) VALUES (5)").await.unwrap();
    let mut b = env.proxy().await;
    let alter = tokio::spawn(async move {
        b.query_drop("ALTER TABLE t ALTER COLUMN st SET DEFAULT 'new'")
            .await
            .unwrap();
        b
    });
    wait_for_mdl_waiter().await;
    a.query_drop("COMMIT").await.unwrap();
    let b = alter.await.unwrap();
    a.query_drop("INSERT INTO t (id) VALUES (7)").await.unwrap();
    env.wait_caught_up().await;
    let rows: Vec<(i32, String)> = Conn::new(direct_opts(&env.secondary))
        .await
        .unwrap()
        .query("SELECT id, st FROM t ORDER BY id")
        .await
        .unwrap();
    assert_eq!(rows, vec![(5, "old".to_string()), (7, "new".to_string())]);
    assert_eq!(assert_same(&env.primary, &env.secondary, "t").await, 2);
    drop((a, b));
    env.stop().await;
}

/// Writes that wait behind a DDL's lock run after it on both sides, and
/// the client's own statements keep working after Tandem's UNLOCK: its
/// status (autocommit, no transaction) is what the server says.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_queued_behind_a_ddl_are_replayed_after_it() {
    let env = MirrorEnv::start("ddlqueue", "").await;
    env.create_both("CREATE TABLE t (id INT PRIMARY KEY, st VARCHAR(10) NOT NULL DEFAULT 'old')")
        .await;
    let mut holder = env.proxy().await;
    holder.query_drop("BEGIN").await.unwrap();
    holder
        .query_drop("INSERT INTO t (id) VALUES (1)")
        .await
        .unwrap();
    let mut b = env.proxy().await;
    let alter = tokio::spawn(async move {
        b.query_drop("ALTER TABLE t ALTER COLUMN st SET DEFAULT 'new'")
            .await
            .unwrap();
        b
    });
    wait_for_mdl_waiter().await;
    // These wait for the ALTER (a pending exclusive lock blocks them).
    let mut writers = Vec::new();
    for id in 10..14 {
        let mut c = env.proxy().await;
        writers.push(tokio::spawn(async move {
            c.query_drop(format!("INSERT INTO t (id) VALUES ({id})"))
                .await
                .unwrap();
            c
        }));
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    holder.query_drop("COMMIT").await.unwrap();
    let mut b = alter.await.unwrap();
    for w in writers {
        drop(w.await.unwrap());
    }
    b.query_drop("INSERT INTO t (id) VALUES (20)")
        .await
        .unwrap();
    let in_txn: Option<u8> = b.query_first("SELECT @@in_transaction").await.unwrap();
    assert_eq!(in_txn, Some(0));
    env.wait_caught_up().await;
    assert_eq!(assert_same(&env.primary, &env.secondary, "t").await, 6);
    drop((holder, b));
    env.stop().await;
}

/// `DROP TABLE a, nosuch` drops `a` on the primary and answers 1051. It
/// was journaled as failed, so the secondary kept `a`. Now the tables it
/// dropped anyway are dropped on the secondary too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_multi_table_drop_that_fails_part_way_drops_the_same_tables_on_the_secondary() {
    let env = MirrorEnv::start("ddlpartial", "").await;
    env.create_both("CREATE TABLE a (id INT PRIMARY KEY)").await;
    env.create_both("CREATE TABLE keep (id INT PRIMARY KEY)")
        .await;
    let mut c = env.proxy().await;
    let err = c
        .query_drop("DROP TABLE a, nosuch, keep")
        .await
        .unwrap_err();
    assert!(err.to_string().contains("nosuch"), "{err}");
    c.query_drop("CREATE TABLE after_it (id INT)")
        .await
        .unwrap();
    env.wait_caught_up().await;
    let tables = |db: String| async move {
        let mut d = Conn::new(direct_opts(&db)).await.unwrap();
        let t: Vec<String> = d.query("SHOW TABLES").await.unwrap();
        d.disconnect().await.unwrap();
        t
    };
    let on_primary = tables(env.primary.clone()).await;
    assert!(!on_primary.contains(&"a".to_string()), "{on_primary:?}");
    assert_eq!(tables(env.secondary.clone()).await, on_primary);
    assert_eq!(
        env.mirror()
            .applier
            .dead_lettered
            .load(std::sync::atomic::Ordering::Relaxed),
        0
    );
    drop(c);
    env.stop().await;
}

/// A DDL journaled but left without an answer by a crash is settled from
/// the primary's table definitions at start-up: `DROP TABLE x` that never
/// reached the primary is skipped (it used to be applied, dropping x on
/// the secondary only), and `DROP TABLE y` that did is applied.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_in_doubt_ddl_is_settled_from_the_primarys_table_definitions() {
    use tandem::mirror::ddl;
    use tandem::mirror::journal::Journal;
    use tandem::mirror::record::{JournalRecord, MirrorStatement, MirrorTxn, Pins};
    let primary = "tandem_m_ddldoubt";
    let secondary = "tandem_m_ddldoubt_next";
    let schema = [
        "CREATE TABLE x (id INT PRIMARY KEY)",
        "CREATE TABLE y (id INT PRIMARY KEY)",
    ];
    let mut tandem = ChildTandem::start(primary, secondary, &schema).await;
    wait_listening(tandem.admin).await;
    wait_caught_up_http(tandem.admin).await;
    tandem.kill();

    let mut p = Conn::new(direct_opts(primary)).await.unwrap();
    let intent = |table: &str, token: u64| JournalRecord::Intent {
        token,
        txn: MirrorTxn {
            committed_at_us: tandem::mirror::now_us(),
            conn_id: 1,
            statements: vec![MirrorStatement {
                db: None,
                sql: format!("DROP TABLE {table}").into_bytes(),
                tables: vec![table.to_string()],
                ddl: true,
                pins: Pins::default(),
                session: Default::default(),
            }],
        },
    };
    let before = |defs: Vec<Option<Vec<u8>>>| ddl::checked_token(ddl::fingerprint(&defs));
    let x_token = before(
        ddl::definitions(&mut p, Some(primary), &["x".to_string()])
            .await
            .unwrap(),
    );
    let y_token = before(
        ddl::definitions(&mut p, Some(primary), &["y".to_string()])
            .await
            .unwrap(),
    );
    // y's DROP reached the primary before the crash; x's did not.
    p.query_drop("DROP TABLE y").await.unwrap();
    p.disconnect().await.unwrap();
    let mut j = Journal::open(&tandem.journal(), 64 * 1024).unwrap();
    let never = j.append(&intent("x", x_token).encode()).unwrap();
    let ran = j.append(&intent("y", y_token).encode()).unwrap();
    j.sync().unwrap();
    drop(j);

    tandem.restart().await;
    wait_listening(tandem.admin).await;
    let status = wait_caught_up_http(tandem.admin).await;
    let mut s = Conn::new(direct_opts(secondary)).await.unwrap();
    let tables: Vec<String> = s.query("SHOW TABLES").await.unwrap();
    s.disconnect().await.unwrap();
    let log = std::fs::read_to_string(&tandem.log).unwrap_or_default();
    assert_eq!(
        tables,
        vec!["x".to_string()],
        "mirror: {}\nlog:\n{log}",
        status["mirror"]
    );
    for (lsn, verdict) in [(never, "committed=false"), (ran, "committed=true")] {
        assert!(
            log.lines().any(|l| l.contains("in-doubt DDL resolved")
                && l.contains(&format!("lsn={lsn}"))
                && l.contains(verdict)),
            "no resolution of LSN {lsn} in the log:\n{log}"
        );
    }
    assert_eq!(status["mirror"]["dead_lettered"], 0);
    tandem.kill();
    drop_databases(&[primary, secondary]).await;
}

/// MariaDB DDL that sqlparser does not parse was forwarded without being
/// journaled when its tables could not be named: the secondary silently
/// kept the old schema. Its tables now come from its tokens; one whose
/// target cannot be told follows `unsafe_writes`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ddl_sqlparser_cannot_parse_reaches_the_secondary() {
    let env = MirrorEnv::start("ddlunparsed", "").await;
    env.create_both("CREATE TABLE t (id INT PRIMARY KEY)").await;
    let mut c = env.proxy().await;
    for sql in [
        "ALTER TABLE t ADD COLUMN IF NOT EXISTS c INT DEFAULT 7",
        "ALTER ONLINE TABLE t ADD COLUMN d INT",
        "ALTER TABLE t ALGORITHM=INPLACE, LOCK=NONE, ADD INDEX ic (c)",
        "CREATE OR REPLACE TABLE u (id INT PRIMARY KEY, v VARCHAR(3))",
        "CREATE SEQUENCE s START WITH 10",
        "ALTER SEQUENCE s RESTART 50",
    ] {
        c.query_drop(sql).await.unwrap();
    }
    c.query_drop("INSERT INTO t (id) VALUES (1)").await.unwrap();
    env.wait_caught_up().await;
    let defs = |db: String| async move {
        let mut d = Conn::new(direct_opts(&db)).await.unwrap();
        let mut out = Vec::new();
        for t in ["t", "u", "s"] {
            let row: Option<(String, String)> = d
                .query_first(format!("SHOW CREATE TABLE {t}"))
                .await
                .unwrap();
            out.push(row.unwrap().1);
        }
        let next: Option<i64> = d.query_first("SELECT NEXTVAL(s)").await.unwrap();
        d.disconnect().await.unwrap();
        (out, next)
    };
    let (p, s) = (
        defs(env.primary.clone()).await,
        defs(env.secondary.clone()).await,
    );
    assert_eq!(p, s);
    assert_eq!(s.1, Some(50));
    assert_eq!(assert_same(&env.primary, &env.secondary, "t").await, 1);
    drop(c);
    env.stop().await;
}

/// An ALTER that cannot finish on the secondary (its table is locked
/// there) stalled the whole applier: every table's writes waited behind
/// it, and under `journal_full: block` the application's writes with them.
/// A DDL on a table is a barrier for that table only: another table's
/// writes reach the secondary meanwhile, and the table's own writes wait
/// for the ALTER and land after it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_blocked_alter_holds_up_only_its_own_table() {
    let env = MirrorEnv::start("ddlbarrier", "").await;
    env.create_both("CREATE TABLE big (id INT PRIMARY KEY, v INT)")
        .await;
    env.create_both("CREATE TABLE other (id INT PRIMARY KEY)")
        .await;
    let mut s = Conn::new(direct_opts(&env.secondary)).await.unwrap();
    s.query_drop("LOCK TABLES big READ").await.unwrap();
    let mut c = env.proxy().await;
    c.query_drop("ALTER TABLE big ADD COLUMN w INT NOT NULL DEFAULT 7")
        .await
        .unwrap();
    c.query_drop("INSERT INTO big (id, v) VALUES (1, 1)")
        .await
        .unwrap();
    for id in 1..=20 {
        c.query_drop(format!("INSERT INTO other VALUES ({id})"))
            .await
            .unwrap();
    }
    let mut d = Conn::new(direct_opts(&env.secondary)).await.unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let n: Option<u64> = d.query_first("SELECT COUNT(*) FROM other").await.unwrap();
        if n == Some(20) {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "other's writes waited behind big's ALTER ({n:?} of 20 applied)"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let cols: Option<u64> = d
        .query_first(
            "SELECT COUNT(*) FROM information_schema.COLUMNS \
             WHERE TABLE_SCHEMA = DATABASE() AND TABLE_NAME = 'big'",
        )
        .await
        .unwrap();
    assert_eq!(cols, Some(2), "the ALTER ran although big was locked");
    s.query_drop("UNLOCK TABLES").await.unwrap();
    env.wait_caught_up().await;
    assert_eq!(assert_same(&env.primary, &env.secondary, "big").await, 1);
    assert_eq!(assert_same(&env.primary, &env.secondary, "other").await, 20);
    drop((c, d, s));
    env.stop().await;
}

/// A view whose table is gone cannot be locked (ER_VIEW_INVALID), so
/// dropping or replacing it runs without the lock, as directly: a test
/// suite's teardown drops such views.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_view_whose_table_is_gone_can_be_dropped() {
    let env = MirrorEnv::start("ddlbrokenview", "").await;
    let mut c = env.proxy().await;
    for sql in [
        "CREATE TABLE t (id INT PRIMARY KEY)",
        "CREATE VIEW v AS SELECT id FROM t",
        "CREATE VIEW w AS SELECT id FROM t",
        "DROP TABLE t",
        "DROP VIEW IF EXISTS v",
        "CREATE OR REPLACE VIEW w AS SELECT 1 AS one",
    ] {
        c.query_drop(sql)
            .await
            .unwrap_or_else(|e| panic!("{sql}: {e}"));
    }
    env.wait_caught_up().await;
    for db in [&env.primary, &env.secondary] {
        let mut d = Conn::new(direct_opts(db)).await.unwrap();
        let views: Vec<String> = d
            .query(
                "SELECT TABLE_NAME FROM information_schema.VIEWS WHERE TABLE_SCHEMA = DATABASE()",
            )
            .await
            .unwrap();
        assert_eq!(views, vec!["w".to_string()], "{db}");
        let one: Option<i32> = d.query_first("SELECT one FROM w").await.unwrap();
        assert_eq!(one, Some(1));
        d.disconnect().await.unwrap();
    }
    drop(c);
    env.stop().await;
}
