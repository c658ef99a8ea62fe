//! `tandem verify` and `tandem backfill` while the application keeps writing
//! through a mirroring Tandem (real MariaDB on both sides, the real binary
//! as the tool, talking to the server's admin API):
//! - verify under a concurrent workload reports identical, every run (no
//!   false positives), and still finds and repairs differences made behind
//!   Tandem's back;
//! - a 1M-row backfill while writers hammer the rows at the copy frontier
//!   (updates, deletes, inserts) ends identical: no stale row, no deleted
//!   row brought back.

use crate::common::mirror::*;
use crate::common::*;
use mysql_async::prelude::*;
use mysql_async::Conn;
use rand::{Rng, SeedableRng};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

async fn checksum(db: &str, table: &str) -> (i64, Option<i64>) {
    let mut c = Conn::new(direct_opts(db)).await.unwrap();
    let n: i64 = c
        .query_first(format!("SELECT COUNT(*) FROM `{table}`"))
        .await
        .unwrap()
        .unwrap();
    let (_, sum): (String, Option<i64>) = c
        .query_first(format!("CHECKSUM TABLE `{table}`"))
        .await
        .unwrap()
        .unwrap();
    c.disconnect().await.unwrap();
    (n, sum)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verify_under_load_has_no_false_positives_and_repairs() {
    let env = MirrorEnv::start_with_admin("if_vfy", "").await;
    for ddl in WORKLOAD_SCHEMA {
        env.create_both(ddl).await;
    }
    env.create_both("CREATE TABLE quiet (id INT PRIMARY KEY, v VARCHAR(20))")
        .await;
    env.create_both("INSERT INTO quiet SELECT seq, CONCAT('v', seq) FROM seq_1_to_3000")
        .await;

    // 8 connections write through Tandem while verify runs over and over.
    let addr = env.server.addr;
    let db = env.primary.clone();
    let load = tokio::spawn(async move { run_workload(addr, &db, 8, 800, 11, false).await });
    let mut runs = 0;
    let mut rechecked = 0u64;
    let json = env.dir.path().join("v.json");
    let json_arg = json.display().to_string();
    while !load.is_finished() || runs < 2 {
        let (code, out, err) = env
            .tool(
                "verify",
                &[
                    "--tables",
                    "acct,child,kv,quiet",
                    "--chunk-size",
                    "300",
                    "--json",
                    &json_arg,
                ],
            )
            .await;
        assert_eq!(
            code, 0,
            "verify under load reported a difference:\n{out}\n{err}"
        );
        assert!(out.contains("settled with the running mirror"), "{out}");
        let report: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
        rechecked += report["tables"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| t["rechecked"].as_u64().unwrap())
            .sum::<u64>();
        runs += 1;
    }
    let w = load.await.unwrap();
    assert!(w.committed > 3000, "{w:?}");
    assert!(
        rechecked > 0,
        "the workload never made a chunk differ in flight ({runs} runs): the test proves nothing"
    );

    // The last report reached the server's /status.
    let admin = env.server.admin_addr.unwrap();
    let (_, _, status) = http(admin, "GET", "/status").await;
    let status: serde_json::Value = serde_json::from_str(&status).unwrap();
    assert_eq!(status["verify"]["identical"], true, "{status}");

    // Differences made behind Tandem's back are found while writes flow,
    // and --repair fixes them.
    let mut s = Conn::new(direct_opts(&env.secondary)).await.unwrap();
    s.query_drop("UPDATE quiet SET v = 'tampered' WHERE id = 7")
        .await
        .unwrap();
    s.query_drop("DELETE FROM quiet WHERE id = 2500")
        .await
        .unwrap();
    s.query_drop("INSERT INTO quiet VALUES (5000, 'extra')")
        .await
        .unwrap();
    let addr = env.server.addr;
    let db = env.primary.clone();
    let load = tokio::spawn(async move { run_workload(addr, &db, 4, 200, 12, false).await });
    let (code, out, _) = env.tool("verify", &["--chunk-size", "300"]).await;
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains("missing on secondary: 1 (keys 2500)")
            && out.contains("extra on secondary: 1 (keys 5000)")
            && out.contains("changed: 1 (keys 7)"),
        "{out}"
    );
    let (code, out, err) = env
        .tool("verify", &["--repair", "--chunk-size", "300"])
        .await;
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("repaired (3 rows)"), "{out}");
    load.await.unwrap();
    wait_caught_up(&env.server.shared.mirror.load_full().unwrap()).await;
    for t in WORKLOAD_TABLES.iter().chain(&["quiet"]) {
        assert_same(&env.primary, &env.secondary, t).await;
    }
    s.disconnect().await.unwrap();
    env.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backfill_of_a_million_rows_under_writes_ends_identical() {
    let env = MirrorEnv::start_with_admin("if_bf", "").await;
    env.create_both(
        "CREATE TABLE big (id INT PRIMARY KEY AUTO_INCREMENT, k INT NOT NULL, c VARCHAR(60) NOT NULL,
         pad CHAR(40) NOT NULL DEFAULT 'p')",
    )
    .await;
    // Rows that existed before mirroring: on the primary only.
    let mut p = Conn::new(direct_opts(&env.primary)).await.unwrap();
    p.query_drop("INSERT INTO big (id, k, c) SELECT seq, seq % 1000, CONCAT('row ', seq) FROM seq_1_to_1000000")
        .await
        .unwrap();
    p.disconnect().await.unwrap();

    // Writers aim at the rows just ahead of the copy (read from the
    // backfill's checkpoint): updates, deletes and inserts that race it.
    let stop = Arc::new(AtomicBool::new(false));
    let ops = Arc::new(AtomicU64::new(0));
    let mut writers = Vec::new();
    for w in 0..4u64 {
        let (stop, ops) = (stop.clone(), ops.clone());
        let mut c = env.proxy().await;
        let mut s = Conn::new(direct_opts(&env.secondary)).await.unwrap();
        writers.push(tokio::spawn(async move {
            let mut rng = rand::rngs::StdRng::seed_from_u64(w);
            let mut frontier = 0i64;
            let mut n = 0u64;
            while !stop.load(Ordering::Relaxed) {
                if n.is_multiple_of(20) {
                    let last: Option<Option<String>> = s
                        .query_first(
                            "SELECT last_key FROM tandem.backfill_checkpoint WHERE db = DATABASE() AND table_name = 'big'",
                        )
                        .await
                        .unwrap_or(None);
                    frontier = last.flatten().and_then(|k| k.trim_matches('\'').parse().ok()).unwrap_or(0);
                }
                let id = frontier + rng.random_range(1..8000i64);
                let sql = match rng.random_range(0..10) {
                    0..=4 => format!(
                        "UPDATE big SET k = k + 1, c = CONCAT('upd ', {id}) WHERE id = {id}"
                    ),
                    5..=7 => format!("DELETE FROM big WHERE id = {id}"),
                    _ => format!("INSERT INTO big (k, c) VALUES ({id}, 'new')"),
                };
                match c.query_drop(sql).await {
                    Ok(()) => {}
                    // Gap locks of deletes and inserts at the end of the
                    // table can deadlock each other, as they would directly.
                    Err(mysql_async::Error::Server(e)) if e.code == 1213 || e.code == 1205 => {}
                    Err(e) => panic!("writer: {e}"),
                }
                n += 1;
                ops.fetch_add(1, Ordering::Relaxed);
                // Paced: a steady application load, not a CPU hog on 2 cores.
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            c.disconnect().await.unwrap();
            s.disconnect().await.unwrap();
        }));
    }
    let (code, out, err) = env
        .tool("backfill", &["--tables", "big", "--chunk-size", "5000"])
        .await;
    stop.store(true, Ordering::Relaxed);
    for w in writers {
        w.await.unwrap();
    }
    assert_eq!(code, 0, "{out}\n{err}");
    eprintln!("{out}");
    assert!(out.contains("done"), "{out}");
    let rechecked: u64 = out
        .lines()
        .find(|l| l.contains("chunks re-checked"))
        .and_then(|l| l.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or(0);
    assert!(
        rechecked > 0 && ops.load(Ordering::Relaxed) > 1000,
        "writes raced the copy and chunks were re-checked: {out}"
    );
    wait_caught_up(&env.server.shared.mirror.load_full().unwrap()).await;
    let (a, b) = (
        checksum(&env.primary, "big").await,
        checksum(&env.secondary, "big").await,
    );
    if a != b {
        // What differs, and every journaled statement naming those ids.
        let mut c = Conn::new(direct_opts(&env.primary)).await.unwrap();
        let rows: Vec<mysql_async::Row> = c
            .query(format!(
                "SELECT p.id, p.k, p.c, s.k, s.c FROM `{}`.big p LEFT JOIN `{}`.big s USING (id) \
                 WHERE s.id IS NULL OR p.k <> s.k OR p.c <> s.c LIMIT 20",
                env.primary, env.secondary
            ))
            .await
            .unwrap();
        c.disconnect().await.unwrap();
        let rows: Vec<Vec<String>> = rows
            .into_iter()
            .map(|r| r.unwrap().into_iter().map(|v| v.as_sql(false)).collect())
            .collect();
        let needles: Vec<String> = rows
            .iter()
            .map(|r| r[0].trim_matches('\'').to_string())
            .flat_map(|id| [format!("= {id}"), format!("'upd ', {id})")])
            .collect();
        // The tool's log (chunk by chunk at TANDEM_LOG=tandem::backfill=debug).
        let kept = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("backfill-stderr.log");
        let _ = std::fs::write(&kept, &err);
        let journal = journal_lines_naming(&env.dir.path().join("journal"), &needles);
        panic!(
            "row count and CHECKSUM TABLE of primary and secondary: {a:?} vs {b:?}\n\
             rows (id, k, c on the primary; k, c on the secondary): {rows:?}\n\
             journal:\n{}\nbackfill:\n{out}\nits log: {}",
            journal.join("\n"),
            kept.display()
        );
    }
    let (code, out, _) = env.tool("verify", &["--tables", "big"]).await;
    assert_eq!(code, 0, "{out}");
    env.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_verifies_periodically() {
    let env =
        MirrorEnv::start_with_admin("if_per", "verify:\n  every: 1s\n  chunk_size: 100\n").await;
    env.create_both("CREATE TABLE t (id INT PRIMARY KEY, v INT)")
        .await;
    env.create_both("INSERT INTO t SELECT seq, seq FROM seq_1_to_500")
        .await;
    let admin = env.server.admin_addr.unwrap();
    let status = |want: bool| async move {
        for _ in 0..100 {
            tokio::time::sleep(Duration::from_millis(100)).await;
            let (_, _, body) = http(admin, "GET", "/status").await;
            let v: serde_json::Value = serde_json::from_str(&body).unwrap();
            if v["verify"]["identical"] == want {
                return v;
            }
        }
        panic!("periodic verify never reported identical = {want}");
    };
    let v = status(true).await;
    assert_eq!(v["verify"]["tables"][0]["table"], "t");
    let mut s = Conn::new(direct_opts(&env.secondary)).await.unwrap();
    s.query_drop("UPDATE t SET v = -1 WHERE id = 42")
        .await
        .unwrap();
    let v = status(false).await;
    assert_eq!(
        v["verify"]["tables"][0]["changed"],
        serde_json::json!(["42"])
    );
    s.disconnect().await.unwrap();
    env.stop().await;
}

/// `verify --repair` clears a table's divergent mark only when the mark
/// was made before the table's pass began: a mark made during the pass
/// (here an unmirrorable write run on the primary only while the pass
/// waits for the secondary's table) may name rows the pass already read.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verify_repair_keeps_marks_made_during_its_pass() {
    let env = MirrorEnv::launch(
        "if_marks",
        MARIADB_PORT,
        "  unsafe_writes: primary_only",
        Some(""),
    )
    .await;
    env.create_both("CREATE TABLE t (id INT PRIMARY KEY, v INT)")
        .await;
    env.create_both("INSERT INTO t SELECT seq, seq FROM seq_1_to_1000")
        .await;
    let mut c = env.proxy().await;
    // Assigning a variable as it runs cannot be replayed: primary only.
    c.query_drop("UPDATE t SET v = (@x := 8) WHERE id = 1")
        .await
        .unwrap();
    env.wait_caught_up().await;
    let m = env.mirror();
    assert!(m.divergent().contains_key("t"));

    // A repair with nothing marked meanwhile clears the mark.
    let (code, out, _) = env.tool("verify", &["--repair", "--tables", "t"]).await;
    assert_eq!(code, 0, "{out}");
    assert!(!m.divergent().contains_key("t"), "{out}");

    c.query_drop("UPDATE t SET v = (@x := 9) WHERE id = 2")
        .await
        .unwrap();
    assert!(m.divergent().contains_key("t"));
    // The next pass waits for the secondary's table (another session
    // holds it with LOCK TABLES … WRITE); meanwhile the table is marked
    // again.
    let mut s = Conn::new(direct_opts(&env.secondary)).await.unwrap();
    s.query_drop("LOCK TABLES t WRITE").await.unwrap();
    let cfg = env.cfg.clone().unwrap();
    let verify = tokio::task::spawn_blocking(move || {
        tandem_tool("verify", &cfg, &["--repair", "--tables", "t"])
    });
    let mut p = Conn::new(direct_opts(&env.primary)).await.unwrap();
    let mut waiting = 0;
    for _ in 0..500 {
        waiting = p
            .query_first(
                "SELECT COUNT(*) FROM information_schema.PROCESSLIST
                 WHERE STATE LIKE 'Waiting for table metadata lock' AND INFO LIKE 'SELECT COUNT(*)%'",
            )
            .await
            .unwrap()
            .unwrap_or(0);
        if waiting > 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(waiting, 1, "verify's pass waits for the secondary's table");
    let before = m.position().mark_seq;
    c.query_drop("UPDATE t SET v = (@x := 10) WHERE id = 3")
        .await
        .unwrap();
    assert!(m.position().mark_seq > before, "marked during the pass");
    s.query_drop("UNLOCK TABLES").await.unwrap();
    let (code, out, err) = verify.await.unwrap();
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        m.divergent().contains_key("t"),
        "a mark made during the pass stays:\n{out}"
    );
    c.disconnect().await.unwrap();
    s.disconnect().await.unwrap();
    p.disconnect().await.unwrap();
    env.stop().await;
}

/// A re-check never holds the primary's rows while the secondary applies
/// a DDL: with a table rebuild running on the secondary (slow there, the
/// secondary's copy is large), `verify --repair` of another table waits
/// for it before locking, so the primary's rows stay free (a session
/// updating them with a 1 s lock wait never times out) and the repair
/// still happens.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_recheck_holds_no_primary_lock_while_a_ddl_applies() {
    let env = MirrorEnv::start_with_admin("if_ddl", "").await;
    env.create_both("CREATE TABLE t (id INT PRIMARY KEY, v INT)")
        .await;
    env.create_both("INSERT INTO t SELECT seq, seq FROM seq_1_to_100")
        .await;
    env.create_both("CREATE TABLE big (id INT PRIMARY KEY, c CHAR(100) NOT NULL DEFAULT '')")
        .await;
    let mut s = Conn::new(direct_opts(&env.secondary)).await.unwrap();
    s.query_drop("INSERT INTO big (id) SELECT seq FROM seq_1_to_600000")
        .await
        .unwrap();
    s.query_drop("UPDATE t SET v = -5 WHERE id = 5")
        .await
        .unwrap();
    let mut c = env.proxy().await;
    c.query_drop("ALTER TABLE big FORCE").await.unwrap();
    let cfg = env.cfg.clone().unwrap();
    let verify = tokio::task::spawn_blocking(move || {
        tandem_tool("verify", &cfg, &["--repair", "--tables", "t"])
    });
    let mut p = Conn::new(direct_opts(&env.primary)).await.unwrap();
    p.query_drop("SET SESSION innodb_lock_wait_timeout = 1")
        .await
        .unwrap();
    let mut updates = 0;
    while !verify.is_finished() {
        p.query_drop("UPDATE t SET v = v WHERE id = 5")
            .await
            .unwrap_or_else(|e| panic!("the primary's row was held: {e}"));
        updates += 1;
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let (code, out, err) = verify.await.unwrap();
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("repaired (1 rows)"), "{out}");
    assert!(updates > 0);
    env.wait_caught_up().await;
    for c in [&mut p, &mut s] {
        let v: Option<i64> = c.query_first("SELECT v FROM t WHERE id = 5").await.unwrap();
        assert_eq!(v, Some(5));
    }
    c.disconnect().await.unwrap();
    s.disconnect().await.unwrap();
    p.disconnect().await.unwrap();
    env.stop().await;
}
