//! `INSERT … SELECT` shapes whose row order Tandem cannot pin, and those
//! writing a table without transactions from one with them, run staged
//! (issue 26): compared with the same statements sent straight to a
//! reference database, and the secondary with the primary.

use crate::common::mirror::*;
use crate::common::*;
use mysql_async::prelude::*;
use mysql_async::Conn;

const SCHEMA: &[&str] = &[
    "CREATE TABLE src (id INT AUTO_INCREMENT PRIMARY KEY, v INT, f FLOAT, k VARCHAR(10))",
    "INSERT INTO src (v, f, k) SELECT seq % 7, seq + 0.0000001, CONCAT('k', seq % 4) FROM seq_1_to_30",
    "CREATE TABLE bag (v INT, k VARCHAR(10))",
    "INSERT INTO bag SELECT seq % 5, CONCAT('b', seq) FROM seq_1_to_12",
    "CREATE TABLE numbered (n INT AUTO_INCREMENT PRIMARY KEY, v INT, f FLOAT, \
     note VARCHAR(10) NOT NULL DEFAULT 'none')",
    "CREATE TABLE tally (k VARCHAR(10) PRIMARY KEY, c INT NOT NULL)",
    "CREATE TABLE log (id INT AUTO_INCREMENT PRIMARY KEY, v INT, k VARCHAR(10)) ENGINE=MyISAM",
];

/// The client's view of one statement: affected rows and info, or the
/// error's code.
async fn answer(c: &mut Conn, sql: &str) -> Result<(u64, String), u16> {
    match c.query_drop(sql).await {
        Ok(()) => Ok((c.affected_rows(), c.info().to_string())),
        Err(mysql_async::Error::Server(e)) => Err(e.code),
        Err(e) => panic!("{sql}: {e}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn insert_select_whose_order_cannot_be_pinned_runs_staged() {
    let env = MirrorEnv::start("staged", "").await;
    let reference = "tandem_staged_ref";
    fresh_database(reference).await;
    let mut d = Conn::new(direct_opts(reference)).await.unwrap();
    for ddl in SCHEMA {
        env.create_both(ddl).await;
        d.query_drop(*ddl).await.unwrap();
    }
    let mut c = env.proxy().await;
    let statements = [
        // Group order, a join's order, DISTINCT, a source without a key.
        "INSERT INTO numbered (v) SELECT v FROM src GROUP BY v",
        "INSERT INTO numbered (v, f) SELECT s.v, s.f FROM src s JOIN src t ON t.id = s.id + 1 WHERE s.v > 3",
        "INSERT INTO numbered (v) SELECT DISTINCT v % 3 FROM src",
        "INSERT INTO numbered (v, note) SELECT v, k FROM bag",
        // Which duplicate wins.
        "INSERT IGNORE INTO tally SELECT k, COUNT(*) FROM src GROUP BY k",
        "INSERT INTO tally SELECT k, 1 FROM bag ON DUPLICATE KEY UPDATE c = c + VALUES(c)",
        "REPLACE INTO tally SELECT k, v FROM bag WHERE v > 2",
        // A table without transactions written from one with them.
        "INSERT INTO log (v, k) SELECT v, k FROM src WHERE v < 3",
        // No row: the server's own answer.
        "INSERT INTO numbered (v) SELECT v FROM src WHERE v > 1000 GROUP BY v",
        // The server's error, nothing written.
        "INSERT INTO numbered (v, note) SELECT v, NULL FROM src GROUP BY v",
        "INSERT INTO numbered (v) SELECT nope FROM src GROUP BY v",
    ];
    for sql in statements {
        let got = answer(&mut c, sql).await;
        let want = answer(&mut d, sql).await;
        assert_eq!(got, want, "{sql}");
    }
    // Prepared: run as its rendered text, staged.
    for (sql, v) in [
        (
            "INSERT INTO numbered (v) SELECT v FROM src WHERE v > ? GROUP BY v",
            4,
        ),
        ("INSERT INTO log (v, k) SELECT v, k FROM src WHERE v = ?", 6),
    ] {
        for conn in [&mut c, &mut d] {
            conn.exec_drop(sql, (v,)).await.unwrap();
        }
        assert_eq!(c.affected_rows(), d.affected_rows(), "{sql}");
    }
    // In a transaction rolled back, nothing stays; committed, it does.
    for end in ["ROLLBACK", "COMMIT"] {
        for conn in [&mut c, &mut d] {
            conn.query_drop("BEGIN").await.unwrap();
            conn.query_drop("INSERT INTO numbered (v) SELECT v * 100 FROM src GROUP BY v")
                .await
                .unwrap();
            conn.query_drop(end).await.unwrap();
        }
    }
    // The rows and their order (ids may leave other gaps: InnoDB reserves
    // ids for an INSERT … SELECT in growing blocks, for INSERT … VALUES
    // exactly), FLOATs to the bit.
    for (table, sql) in [
        (
            "numbered",
            "SELECT v, CAST(f AS DOUBLE), note FROM numbered ORDER BY n",
        ),
        ("tally", "SELECT * FROM tally ORDER BY k"),
        ("log", "SELECT v, k FROM log ORDER BY id"),
    ] {
        let through: Vec<mysql_async::Row> = c.query(sql).await.unwrap();
        let direct: Vec<mysql_async::Row> = d.query(sql).await.unwrap();
        let values = |r: Vec<mysql_async::Row>| {
            r.into_iter()
                .map(|r| r.unwrap())
                .collect::<Vec<Vec<mysql_async::Value>>>()
        };
        assert_eq!(values(through), values(direct), "{table}");
    }
    env.wait_caught_up().await;
    assert_eq!(env.assert_same("numbered").await, 43);
    for t in ["tally", "log"] {
        env.assert_same(t).await;
    }
    assert_eq!(env.dead_lettered(), 0);
    drop((c, d));
    drop_databases(&[reference]).await;
    env.stop().await;
}
