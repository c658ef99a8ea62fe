//! `tandem backfill` while the application writes through a mirroring
//! Tandem, aimed at what a copy in key order cannot see on its own: upserts
//! and increments of rows not copied yet, rows moved into the range already
//! copied, writes that read rows not copied yet, a table the mirror wrote
//! before the copy and nobody writes during it, and a secondary column that
//! cannot hold the primary's values. Each ends identical with no repair
//! afterwards, or stops loudly.

use crate::common::mirror::*;
use crate::common::*;
use mysql_async::prelude::*;
use mysql_async::Conn;
use std::time::Duration;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backfill_beside_upserts_and_key_moves_ends_identical() {
    let env = MirrorEnv::start_with_admin("bf_live", "").await;
    env.create_both(
        "CREATE TABLE hits (id INT PRIMARY KEY, hits INT NOT NULL, c VARCHAR(40) NOT NULL DEFAULT '')",
    )
    .await;
    env.create_both("CREATE TABLE quiet (id INT PRIMARY KEY, n INT NOT NULL)")
        .await;
    // Rows that existed before mirroring: on the primary only.
    let mut p = Conn::new(direct_opts(&env.primary)).await.unwrap();
    p.query_drop("INSERT INTO hits SELECT seq, 100, CONCAT('row ', seq) FROM seq_1_to_20000")
        .await
        .unwrap();
    p.query_drop("INSERT INTO quiet SELECT seq, 100 FROM seq_1_to_3000")
        .await
        .unwrap();
    p.disconnect().await.unwrap();

    // Before the copy, through Tandem: an upsert of a row the secondary
    // does not have yet writes a fresh row there (1, not 101).
    let mut c = env.proxy().await;
    for sql in [
        "INSERT INTO hits (id, hits) VALUES (15000, 1) ON DUPLICATE KEY UPDATE hits = hits + 1",
        "INSERT INTO quiet (id, n) VALUES (2500, 1) ON DUPLICATE KEY UPDATE n = n + 1",
        "UPDATE quiet SET n = n + 1 WHERE id = 2600",
    ] {
        c.query_drop(sql).await.unwrap();
    }
    env.wait_caught_up().await;

    // During the copy, once it is past id 5000: rows not copied yet move
    // into the copied range (negative ids), a write copies rows it reads
    // from the range not copied yet, and one more upsert lands ahead.
    let mut s = Conn::new(direct_opts(&env.secondary)).await.unwrap();
    let racer = tokio::spawn(async move {
        for _ in 0..2000 {
            let last: Option<Option<String>> = s
                .query_first(
                    "SELECT last_key FROM tandem.backfill_checkpoint WHERE db = DATABASE() AND table_name = 'hits'",
                )
                .await
                .unwrap_or(None);
            let at: i64 = last
                .flatten()
                .and_then(|k| k.trim_matches('\'').parse().ok())
                .unwrap_or(0);
            if at >= 5000 {
                assert!(at < 15000, "the copy was too fast to race ({at})");
                for sql in [
                    "UPDATE hits SET id = -id WHERE id BETWEEN 19990 AND 19999",
                    "INSERT INTO hits (id, hits, c) SELECT id - 40000, hits, c FROM hits WHERE id BETWEEN 19980 AND 19989 ORDER BY id",
                    "INSERT INTO hits (id, hits) VALUES (18000, 1) ON DUPLICATE KEY UPDATE hits = hits + 1",
                ] {
                    c.query_drop(sql).await.unwrap();
                }
                c.disconnect().await.unwrap();
                s.disconnect().await.unwrap();
                return true;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        false
    });
    let (code, out, err) = env
        .tool(
            "backfill",
            &[
                "--tables",
                "hits,quiet",
                "--chunk-size",
                "500",
                "--rate",
                "8000",
            ],
        )
        .await;
    assert!(
        racer.await.unwrap(),
        "the copy never passed id 5000:\n{out}\n{err}"
    );
    assert_eq!(code, 0, "{out}\n{err}");
    assert!(out.contains("compared again whole"), "{out}");
    env.wait_caught_up().await;
    let (code, out, _) = env.tool("verify", &["--tables", "hits,quiet"]).await;
    assert_eq!(code, 0, "identical without a repair:\n{out}");
    assert_eq!(env.assert_same("hits").await, 20010);
    env.assert_same("quiet").await;
    env.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backfill_refuses_values_the_secondary_would_change() {
    let env = MirrorEnv::start_with_admin("bf_lossy", "").await;
    let mut p = Conn::new(direct_opts(&env.primary)).await.unwrap();
    let mut s = Conn::new(direct_opts(&env.secondary)).await.unwrap();
    p.query_drop("CREATE TABLE narrow (id INT PRIMARY KEY, c VARCHAR(20), n INT)")
        .await
        .unwrap();
    s.query_drop("CREATE TABLE narrow (id INT PRIMARY KEY, c VARCHAR(5), n TINYINT)")
        .await
        .unwrap();
    p.query_drop("INSERT INTO narrow VALUES (1, 'short', 1), (2, 'far too long', 2)")
        .await
        .unwrap();
    let (code, out, err) = env.tool("backfill", &["--tables", "narrow"]).await;
    assert_ne!(code, 0, "{out}\n{err}");
    assert!(
        out.contains("cannot hold narrow's rows") && out.contains("1265"),
        "{out}"
    );
    let n: Option<i64> = s.query_first("SELECT COUNT(*) FROM narrow").await.unwrap();
    assert_eq!(n, Some(0), "nothing of the refused chunk is kept");
    p.disconnect().await.unwrap();
    s.disconnect().await.unwrap();
    env.stop().await;
}

/// The scenario of a real migration: 300k rows exist before mirroring;
/// eight connections run the mixed workload (upserts, REPLACE, increments,
/// order-dependent updates, deletes, transactions with rollbacks and
/// savepoints, prepared statements) over the whole table through Tandem
/// for the whole backfill; then `tandem verify`, without `--repair`, finds
/// the two sides identical. Throughput and the time paused for mirror lag
/// are printed (never asserted).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backfill_under_a_mixed_workload_needs_no_repair() {
    use rand::SeedableRng;
    use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
    use std::sync::Arc;
    // Knobs for `scripts/backfill-under-load.sh` (throughput in release).
    let knob = |name: &str, default: u64| {
        std::env::var(name)
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(default)
    };
    let rows = knob("TANDEM_BACKFILL_ROWS", 300_000);
    let pause = Duration::from_millis(knob("TANDEM_BACKFILL_LOAD_PAUSE_MS", 0));
    let env = MirrorEnv::start_with_admin("bf_mixed", "").await;
    for ddl in WORKLOAD_SCHEMA {
        env.create_both(ddl).await;
    }
    let mut p = Conn::new(direct_opts(&env.primary)).await.unwrap();
    for sql in [
        format!("INSERT INTO acct (id, x, u, r, t) SELECT seq, seq % 1000, UUID(), RAND(seq), NOW(6) FROM seq_1_to_{rows}"),
        "INSERT INTO kv (k, v) SELECT seq, seq FROM seq_1_to_20000".to_string(),
        format!("INSERT INTO child (parent, note) SELECT seq % {rows} + 1, CONCAT('pre ', seq) FROM seq_1_to_50000"),
    ] {
        p.query_drop(sql).await.unwrap();
    }
    p.disconnect().await.unwrap();

    let stop = Arc::new(AtomicBool::new(false));
    let (committed, failed) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let mut writers = Vec::new();
    for w in 0..8u64 {
        let (stop, committed, failed) = (stop.clone(), committed.clone(), failed.clone());
        let mut c = env.proxy().await;
        writers.push(tokio::spawn(async move {
            let mut rng = rand::rngs::StdRng::seed_from_u64(100 + w);
            while !stop.load(Ordering::Relaxed) {
                if !pause.is_zero() {
                    tokio::time::sleep(pause).await;
                }
                match one_txn_over(&mut c, &mut rng, rows, 20_000).await {
                    Ok(_) => {
                        committed.fetch_add(1, Ordering::Relaxed);
                    }
                    Err(mysql_async::Error::Server(_)) => {
                        // Deadlocks and duplicates, as directly.
                        failed.fetch_add(1, Ordering::Relaxed);
                        c.query_drop("ROLLBACK").await.unwrap();
                    }
                    Err(e) => panic!("writer: {e}"),
                }
            }
            c.disconnect().await.unwrap();
        }));
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (code, out, err) = env.tool("backfill", &[]).await;
    stop.store(true, Ordering::Relaxed);
    for w in writers {
        w.await.unwrap();
    }
    assert_eq!(code, 0, "{out}\n{err}");
    eprintln!(
        "{out}workload: {} transactions committed or rolled back, {} refused by the server",
        committed.load(Ordering::Relaxed),
        failed.load(Ordering::Relaxed)
    );
    assert!(committed.load(Ordering::Relaxed) > 100, "writes flowed");
    env.wait_caught_up().await;
    let status = env.mirror().status_json();
    assert_eq!(
        status["dead_lettered"], 0,
        "no mirrored write met a row the copy put there first: {status}"
    );
    let (code, out, _) = env.tool("verify", &[]).await;
    assert_eq!(code, 0, "identical without a repair:\n{out}");
    for t in WORKLOAD_TABLES {
        env.assert_same(t).await;
    }
    env.stop().await;
}

/// Views, routines, triggers and events that exist only on the primary:
/// `tandem verify` lists each with the statement to run, a cutover is
/// refused naming them, `tandem backfill --create-tables` creates them on
/// the secondary (with the secondary's database in their text, the event
/// disabled there), and then verify is identical and the cutover goes
/// through, moving the event with the primary.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backfill_copies_views_routines_triggers_and_events() {
    let env = MirrorEnv::start_with_admin("bf_objects", "").await;
    let mut p = Conn::new(direct_opts(&env.primary)).await.unwrap();
    for sql in [
        "CREATE TABLE t (id INT PRIMARY KEY, v INT NOT NULL, seen INT NOT NULL DEFAULT 0)",
        "INSERT INTO t (id, v) SELECT seq, seq FROM seq_1_to_100",
        "CREATE FUNCTION f_double(x INT) RETURNS INT DETERMINISTIC RETURN x * 2",
        "CREATE VIEW v_t AS SELECT id, f_double(v) AS w FROM t",
        "CREATE VIEW v_top AS SELECT id FROM v_t WHERE w > 190",
        "CREATE PROCEDURE p_bump(n INT) UPDATE t SET v = v + n WHERE id = 1",
        "CREATE TRIGGER t_bi BEFORE INSERT ON t FOR EACH ROW SET NEW.seen = 1",
        "CREATE EVENT e_tick ON SCHEDULE EVERY 1 HOUR DO UPDATE t SET seen = seen + 1 WHERE id = 2",
    ] {
        p.query_drop(sql).await.unwrap();
    }
    let (code, out, _) = env.tool("verify", &[]).await;
    assert_ne!(code, 0, "{out}");
    for line in [
        "view v_t: missing on the secondary",
        "function f_double: missing on the secondary",
        "procedure p_bump: missing on the secondary",
        "trigger t_bi: missing on the secondary",
        "event e_tick: missing on the secondary",
        "on the secondary run: CREATE",
    ] {
        assert!(out.contains(line), "{line}:\n{out}");
    }
    let (code, _, err) = env.tool("cutover", &[]).await;
    assert_eq!(code, 1, "{err}");
    assert!(
        err.contains("schema objects differ") && err.contains("trigger t_bi"),
        "{err}"
    );

    let (code, out, err) = env.tool("backfill", &["--create-tables"]).await;
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("view v_top: created"), "{out}");
    let mut s = Conn::new(direct_opts(&env.secondary)).await.unwrap();
    let (_, view): (String, String) = s
        .query_first("SHOW CREATE VIEW v_t")
        .await
        .unwrap()
        .map(|r: mysql_async::Row| (r.get(0).unwrap(), r.get(1).unwrap()))
        .unwrap();
    assert!(!view.contains(&format!("`{}`.", env.primary)), "{view}");
    let status: Option<String> = s
        .query_first("SELECT STATUS FROM information_schema.EVENTS WHERE EVENT_SCHEMA = DATABASE()")
        .await
        .unwrap();
    assert_eq!(status.as_deref(), Some("SLAVESIDE_DISABLED"));
    let n: Option<i64> = s.query_first("SELECT COUNT(*) FROM v_top").await.unwrap();
    assert_eq!(n, Some(5));

    let (code, out, _) = env.tool("verify", &[]).await;
    assert_eq!(code, 0, "{out}");
    // Mirrored writes fire the secondary's trigger as the primary's.
    let mut c = env.proxy().await;
    c.query_drop("INSERT INTO t (id, v) VALUES (101, 1)")
        .await
        .unwrap();
    c.query_drop("CALL p_bump(5)").await.ok();
    env.wait_caught_up().await;
    env.assert_same("t").await;
    let (code, out, err) = env.tool("cutover", &[]).await;
    assert_eq!(code, 0, "{out}{err}");
    let status: Option<String> = s
        .query_first("SELECT STATUS FROM information_schema.EVENTS WHERE EVENT_SCHEMA = DATABASE()")
        .await
        .unwrap();
    assert_eq!(status.as_deref(), Some("ENABLED"), "the event moved");
    drop(c);
    p.disconnect().await.unwrap();
    s.disconnect().await.unwrap();
    env.stop().await;
}
