//! Writes to tables without transactions (MyISAM) through a mirroring
//! Tandem: mirrored by their effect, with the ids the primary generated and
//! the errors statements ended in after changing rows, in the order the
//! primary ran them; one whose answer was lost is skipped loudly.

use crate::common::child::{wait_caught_up_http, ChildTandem};
use crate::common::mirror::*;
use crate::common::*;
use mysql_async::prelude::*;
use mysql_async::Conn;

/// What the mirror has dead-lettered or marked, for assertions.
fn quiet(env: &MirrorEnv) -> (u64, std::collections::BTreeMap<String, String>) {
    let m = env.mirror();
    let dead = m.status_json()["dead_lettered"].as_u64().unwrap_or(0);
    (dead, m.divergent())
}

/// A journaled effect intent: `sql` writing `table` (no answer yet).
fn effect_intent(sql: &str, table: &str) -> tandem::mirror::record::JournalRecord {
    use tandem::mirror::record::{JournalRecord, MirrorStatement, MirrorTxn, Pins};
    JournalRecord::Intent {
        token: tandem::mirror::effect::EFFECT_TOKEN,
        txn: MirrorTxn {
            committed_at_us: tandem::mirror::now_us(),
            conn_id: 1,
            statements: vec![MirrorStatement {
                db: None,
                sql: sql.as_bytes().to_vec(),
                tables: vec![table.to_string()],
                ddl: false,
                pins: Pins::default(),
                session: Default::default(),
            }],
        },
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn myisam_writes_are_mirrored_with_their_ids_errors_and_defaults() {
    let env = MirrorEnv::start("myisam_effect", "").await;
    let mut c = env.proxy().await;
    c.query_drop(
        "CREATE TABLE t (id INT AUTO_INCREMENT PRIMARY KEY, name VARCHAR(20) UNIQUE, n INT, \
         at DATETIME(6) DEFAULT CURRENT_TIMESTAMP(6)) ENGINE=MyISAM",
    )
    .await
    .unwrap();
    c.query_drop("INSERT INTO t (name, n) VALUES ('a', 1)")
        .await
        .unwrap();
    assert_eq!(c.last_insert_id(), Some(1));
    c.query_drop("INSERT INTO t (name, n) VALUES ('b', 2), ('c', 3)")
        .await
        .unwrap();
    c.query_drop("INSERT INTO t (id, name, n) VALUES (100, 'd', 4)")
        .await
        .unwrap();
    c.query_drop("INSERT INTO t (name, n) VALUES ('e', 5)")
        .await
        .unwrap();
    assert_eq!(c.last_insert_id(), Some(101));
    // Fails on its second row with the first one kept (no rollback in
    // MyISAM): the secondary must end the same way.
    let e = c
        .query_drop("INSERT INTO t (name, n) VALUES ('f', 6), ('a', 7), ('g', 8)")
        .await
        .unwrap_err();
    assert!(e.to_string().contains("1062"), "{e}");
    c.query_drop("INSERT IGNORE INTO t (name, n) VALUES ('a', 9), ('h', 10)")
        .await
        .unwrap();
    c.query_drop("REPLACE INTO t (name, n) VALUES ('c', 30)")
        .await
        .unwrap();
    c.query_drop("UPDATE t SET n = n * 2 WHERE n > 2")
        .await
        .unwrap();
    let rc: i64 = c.query_first("SELECT ROW_COUNT()").await.unwrap().unwrap();
    assert!(rc > 0, "ROW_COUNT() is the client's: {rc}");
    c.query_drop("DELETE FROM t WHERE name = 'b'")
        .await
        .unwrap();
    // RETURNING answers with rows; the ids still travel.
    let back: Vec<(i32, String)> = c
        .query("INSERT INTO t (name, n) VALUES ('r1', 1), ('r2', 2) RETURNING id, name")
        .await
        .unwrap();
    assert_eq!(back, [(105, "r1".to_string()), (106, "r2".to_string())]);
    // In a transaction that rolls back, the MyISAM write stays.
    c.query_drop("BEGIN").await.unwrap();
    c.query_drop("INSERT INTO t (name, n) VALUES ('kept', 11)")
        .await
        .unwrap();
    c.query_drop("ROLLBACK").await.unwrap();
    // User variables travel with the write.
    c.query_drop("SET @x := 41").await.unwrap();
    c.query_drop("INSERT INTO t (name, n) VALUES ('uv', @x + 1)")
        .await
        .unwrap();
    // Under LOCK TABLES (no BEGIN is needed, so the locks stay).
    c.query_drop("LOCK TABLES t WRITE").await.unwrap();
    c.query_drop("INSERT INTO t (name, n) VALUES ('locked', 12)")
        .await
        .unwrap();
    c.query_drop("UPDATE t SET n = n + 1 WHERE name = 'locked'")
        .await
        .unwrap();
    c.query_drop("UNLOCK TABLES").await.unwrap();
    // A statement that fails before touching a row.
    assert!(c
        .query_drop("UPDATE t SET nope = 1")
        .await
        .unwrap_err()
        .to_string()
        .contains("1054"));
    // Writes that read other MyISAM tables: the latest rows on both sides.
    c.query_drop("CREATE TABLE src (id INT PRIMARY KEY, n INT) ENGINE=MyISAM")
        .await
        .unwrap();
    c.query_drop("INSERT INTO src VALUES (1, 10), (2, 20), (3, 30)")
        .await
        .unwrap();
    c.query_drop("INSERT INTO t (name, n) SELECT CONCAT('s', id), n FROM src ORDER BY id")
        .await
        .unwrap();
    c.query_drop("UPDATE t JOIN src ON t.n = src.n SET t.n = t.n + src.id, src.n = src.n + 1")
        .await
        .unwrap();
    c.query_drop("UPDATE t, src SET t.n = src.n WHERE t.name = 'a' AND src.id = 1")
        .await
        .unwrap();
    c.query_drop("DELETE FROM t WHERE n IN (SELECT n + 1 FROM src WHERE id = 2)")
        .await
        .unwrap();
    // Refused by the primary before touching a row: nothing to apply,
    // even where the secondary would not refuse it (its table has drifted).
    c.query_drop("CREATE TABLE z (id INT PRIMARY KEY) ENGINE=MyISAM")
        .await
        .unwrap();
    env.wait_caught_up().await;
    let mut s = Conn::new(direct_opts(&env.secondary)).await.unwrap();
    s.query_drop("ALTER TABLE z ADD COLUMN nope INT")
        .await
        .unwrap();
    assert!(c
        .query_drop("INSERT INTO z (id, nope) VALUES (1, 1)")
        .await
        .unwrap_err()
        .to_string()
        .contains("1054"));
    env.wait_caught_up().await;
    let z: Vec<i32> = s.query("SELECT id FROM z").await.unwrap();
    assert!(z.is_empty(), "{z:?}");
    s.disconnect().await.unwrap();
    assert_eq!(env.assert_same("src").await, 3);
    let n = env.assert_same("t").await;
    assert_eq!(n, 12, "rows");
    assert_eq!(quiet(&env), (0, Default::default()));
    drop(c);
    env.stop().await;
}

/// Sessions updating one MyISAM row with writes that do not commute
/// (`v = v * 3 + k`) and copying it into another MyISAM table: the
/// secondary ends with the primary's rows only if the writes, and the
/// reads among them, are applied in the order the primary ran them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_myisam_writes_keep_the_primarys_order() {
    let env = MirrorEnv::start("myisam_order", "").await;
    let mut c = env.proxy().await;
    c.query_drop("CREATE TABLE c (id INT PRIMARY KEY, v BIGINT) ENGINE=MyISAM")
        .await
        .unwrap();
    c.query_drop(
        "CREATE TABLE log (id INT AUTO_INCREMENT PRIMARY KEY, who INT, v BIGINT) ENGINE=MyISAM",
    )
    .await
    .unwrap();
    c.query_drop("INSERT INTO c VALUES (1, 1)").await.unwrap();
    let mut tasks = Vec::new();
    for k in 1..=4 {
        let addr = env.server.addr;
        let db = env.primary.clone();
        tasks.push(tokio::spawn(async move {
            let mut s = Conn::new(proxy_builder(addr, Some(&db))).await.unwrap();
            for i in 0..40 {
                s.query_drop(format!(
                    "UPDATE c SET v = (v * 3 + {k}) % 1000000007 WHERE id = 1"
                ))
                .await
                .unwrap();
                // Reads the row the others update: the value it copies
                // is the same on both sides only if the reads and the
                // updates interleave alike.
                s.query_drop(format!(
                    "INSERT INTO log (who, v) SELECT {k}, v + {i} FROM c WHERE id = 1 ORDER BY id"
                ))
                .await
                .unwrap();
            }
            s.disconnect().await.unwrap();
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    env.wait_caught_up().await;
    assert_eq!(env.assert_same("c").await, 1);
    assert_eq!(env.assert_same("log").await, 160);
    assert_eq!(quiet(&env), (0, Default::default()));
    drop(c);
    env.stop().await;
}

/// A write to a MyISAM table journaled but left without its answer (Tandem
/// killed between the two records): nothing says whether it ran on the
/// primary, so at start it is skipped and its table marked divergent,
/// never applied or dropped in silence. Likewise one the applier had begun
/// on the secondary (its `effect_pending` row) without storing its
/// position: it is not run a second time.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unanswered_myisam_write_is_marked_at_start() {
    use tandem::mirror::journal::Journal;
    use tandem::mirror::record::JournalRecord;
    let primary = "tandem_m_effectdoubt";
    let secondary = "tandem_m_effectdoubt_next";
    let schema = [
        "CREATE TABLE m (id INT PRIMARY KEY) ENGINE=MyISAM",
        "CREATE TABLE n (id INT PRIMARY KEY) ENGINE=MyISAM",
    ];
    let mut tandem = ChildTandem::start(primary, secondary, &schema).await;
    wait_listening(tandem.admin).await;
    wait_caught_up_http(tandem.admin).await;
    tandem.kill();
    let mut j = Journal::open(&tandem.journal(), 64 * 1024).unwrap();
    let rec = effect_intent("INSERT INTO m VALUES (1)", "m");
    j.append(&rec.encode()).unwrap();
    // A second one, answered on the primary, that the applier had begun
    // to run on the secondary when it stopped (its pending row says so).
    let other = effect_intent("INSERT INTO n VALUES (2)", "n");
    let begun = j.append(&other.encode()).unwrap();
    let answer = JournalRecord::Effect {
        intent: begun,
        insert_id: None,
        error: None,
        at_us: tandem::mirror::now_us(),
    };
    j.append(&answer.encode()).unwrap();
    j.sync().unwrap();
    drop(j);
    let mut s = Conn::new(direct_opts(secondary)).await.unwrap();
    s.query_drop(format!(
        "REPLACE INTO tandem.effect_pending (db, lsn) VALUES ('{secondary}', {begun})"
    ))
    .await
    .unwrap();
    s.disconnect().await.unwrap();
    tandem.restart().await;
    wait_listening(tandem.admin).await;
    let status = wait_caught_up_http(tandem.admin).await;
    let divergent = &status["mirror"]["divergent_tables"];
    assert!(
        divergent["m"]
            .as_str()
            .is_some_and(|r| r.contains("without transactions")),
        "{status}"
    );
    assert_eq!(rows(secondary, "m").await.len(), 0, "not applied");
    assert!(divergent["n"].is_string(), "{status}");
    assert_eq!(status["mirror"]["dead_lettered"], 1, "{status}");
    let dead = std::fs::read_to_string(tandem.journal().join("dead-letter.jsonl")).unwrap();
    assert!(
        dead.contains("whether it ran on the secondary is unknown"),
        "{dead}"
    );
    assert_eq!(rows(secondary, "n").await.len(), 0, "not run twice");
    tandem.kill();
    drop_databases(&[primary, secondary]).await;
}

/// DDL beside writes to a MyISAM table: each write is wholly before or
/// after the DDL in the journal, as on the primary. Here a column's default
/// changes while a session inserts rows that take it: an insert journaled
/// before the ALTER but run after it has the new default on the primary,
/// and must not be applied before the ALTER on the secondary.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ddl_beside_myisam_writes_keeps_their_order() {
    let env = MirrorEnv::start("myisam_ddl", "").await;
    let mut c = env.proxy().await;
    c.query_drop("CREATE TABLE m (id INT PRIMARY KEY, y INT DEFAULT 0) ENGINE=MyISAM")
        .await
        .unwrap();
    let addr = env.server.addr;
    let db = env.primary.clone();
    let writer = tokio::spawn(async move {
        let mut s = Conn::new(proxy_builder(addr, Some(&db))).await.unwrap();
        for i in 0..400 {
            s.query_drop(format!("INSERT INTO m (id) VALUES ({i})"))
                .await
                .unwrap();
        }
        s.disconnect().await.unwrap();
    });
    for d in 1..=20 {
        c.query_drop(format!("ALTER TABLE m ALTER COLUMN y SET DEFAULT {d}"))
            .await
            .unwrap();
    }
    writer.await.unwrap();
    env.wait_caught_up().await;
    assert_eq!(env.assert_same("m").await, 400);
    assert_eq!(quiet(&env), (0, Default::default()));
    drop(c);
    env.stop().await;
}

/// Tandem SIGKILLed while a session inserts into a MyISAM table, at a
/// moment that varies by round, then restarted. The kill cuts at most one
/// insert: the secondary's table is the primary's, or it is marked
/// divergent and lacks at most that one row — never different otherwise.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kill_during_myisam_writes_leaves_the_table_identical_or_marked() {
    let primary = "tandem_m_effectkill";
    let secondary = "tandem_m_effectkill_next";
    let schema: Vec<String> = (0..4)
        .map(|r| {
            format!("CREATE TABLE m{r} (id INT AUTO_INCREMENT PRIMARY KEY, v INT) ENGINE=MyISAM")
        })
        .collect();
    let schema: Vec<&str> = schema.iter().map(String::as_str).collect();
    let mut tandem = ChildTandem::start(primary, secondary, &schema).await;
    let mut marked = 0;
    for round in 0..4u64 {
        wait_listening(tandem.admin).await;
        let table = format!("m{round}");
        let addr = tandem.listen;
        let t = table.clone();
        let writer = tokio::spawn(async move {
            let mut s = Conn::new(proxy_builder(addr, Some(primary))).await.unwrap();
            for i in 0.. {
                let sql = format!("INSERT INTO {t} (v) VALUES ({i})");
                if s.query_drop(sql).await.is_err() {
                    return; // the kill
                }
            }
        });
        tokio::time::sleep(std::time::Duration::from_millis(100 + 37 * round)).await;
        tandem.kill();
        writer.await.unwrap();
        tandem.restart().await;
        wait_listening(tandem.admin).await;
        let status = wait_caught_up_http(tandem.admin).await;
        let (a, b) = (rows(primary, &table).await, rows(secondary, &table).await);
        assert!(!a.is_empty(), "round {round}: the writer ran");
        if status["mirror"]["divergent_tables"][&table].is_string() {
            // Loud. The kill cut off at most one insert on each side: one
            // between its intent and its answer (it ran on the primary or
            // did not), and one the applier had begun (dead-lettered: it
            // ran on the secondary or did not). Nothing else differs.
            marked += 1;
            assert!(
                status["mirror"]["dead_lettered"].as_u64() <= Some(1),
                "{status}"
            );
            let missing = a.iter().filter(|r| !b.contains(r)).count();
            assert!(
                b.iter().all(|r| a.contains(r)),
                "round {round}: rows only on the secondary"
            );
            assert!(missing <= 2, "round {round}: {missing} rows missing");
        } else {
            assert_eq!(status["mirror"]["dead_lettered"], 0, "{status}");
            assert_eq!(a, b, "round {round}: not marked, so identical");
        }
    }
    eprintln!("rounds that ended marked divergent: {marked} of 4");
    tandem.kill();
    drop_databases(&[primary, secondary]).await;
}

/// An INSERT the applier had begun when Tandem stopped (its
/// `effect_pending` row) is settled by its generated id when it can be: its
/// row on the secondary means it ran (not run again), no row means it did
/// not (run now). Neither is marked divergent.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_begun_insert_is_settled_by_its_generated_id() {
    use tandem::mirror::journal::Journal;
    use tandem::mirror::record::JournalRecord;
    let primary = "tandem_m_effectbegun";
    let secondary = "tandem_m_effectbegun_next";
    let schema = ["CREATE TABLE a (id INT AUTO_INCREMENT PRIMARY KEY, v INT) ENGINE=MyISAM"];
    let mut tandem = ChildTandem::start(primary, secondary, &schema).await;
    for (id, v, ran) in [(7, 1, false), (9, 2, true)] {
        wait_listening(tandem.admin).await;
        wait_caught_up_http(tandem.admin).await;
        tandem.kill();
        let mut j = Journal::open(&tandem.journal(), 64 * 1024).unwrap();
        let intent = effect_intent(&format!("INSERT INTO a (v) VALUES ({v})"), "a");
        let lsn = j.append(&intent.encode()).unwrap();
        let answer = JournalRecord::Effect {
            intent: lsn,
            insert_id: Some(id),
            error: None,
            at_us: tandem::mirror::now_us(),
        };
        j.append(&answer.encode()).unwrap();
        j.sync().unwrap();
        drop(j);
        let mut s = Conn::new(direct_opts(secondary)).await.unwrap();
        if ran {
            s.query_drop(format!("INSERT INTO a VALUES ({id}, {v})"))
                .await
                .unwrap();
        }
        s.query_drop(format!(
            "REPLACE INTO tandem.effect_pending (db, lsn) VALUES ('{secondary}', {lsn})"
        ))
        .await
        .unwrap();
        s.disconnect().await.unwrap();
        tandem.restart().await;
        wait_listening(tandem.admin).await;
        let status = wait_caught_up_http(tandem.admin).await;
        assert_eq!(status["mirror"]["dead_lettered"], 0, "{status}");
        assert!(
            status["mirror"]["divergent_tables"]
                .as_object()
                .is_none_or(|d| d.is_empty()),
            "{status}"
        );
    }
    let mut s = Conn::new(direct_opts(secondary)).await.unwrap();
    let got: Vec<(i32, i32)> = s.query("SELECT id, v FROM a ORDER BY id").await.unwrap();
    assert_eq!(got, [(7, 1), (9, 2)]);
    s.disconnect().await.unwrap();
    tandem.kill();
    drop_databases(&[primary, secondary]).await;
}
