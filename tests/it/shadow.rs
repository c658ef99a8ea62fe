//! Shadow reads (`migration.reads: shadow`): sampled reads also run on the
//! secondary in the background; equal answers count as compared, a row
//! changed behind Tandem's back on the secondary shows up as a mismatch for
//! its table, and the client always gets the primary's answer.

use crate::common::mirror::*;
use crate::common::*;
use mysql_async::prelude::*;
use mysql_async::Conn;
use std::sync::atomic::Ordering;
use std::time::Duration;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shadow_reads_compare_and_count_mismatches_per_table() {
    let env = MirrorEnv::launch(
        "sh_reads",
        MARIADB_PORT,
        "  reads: shadow\n  shadow_sample_percent: 100\n",
        None,
    )
    .await;
    env.create_both("CREATE TABLE item (id INT PRIMARY KEY, name VARCHAR(20), price DECIMAL(8,2))")
        .await;
    env.create_both("CREATE TABLE other (id INT PRIMARY KEY, v INT)")
        .await;
    let mut c = env.proxy().await;
    c.query_drop("INSERT INTO item VALUES (1, 'a', 1.50), (2, 'b', 2.00), (3, 'c', 3.25)")
        .await
        .unwrap();
    c.query_drop("INSERT INTO other VALUES (1, 10)")
        .await
        .unwrap();
    env.wait_caught_up().await;
    let stats = env.server.shared.shadow.clone();

    // Equal data: every sampled read compares equal (rows in any order).
    for i in 0..20 {
        let rows: Vec<(i32, String)> = c
            .query(format!(
                "SELECT id, name FROM item WHERE id <= {} ORDER BY id DESC",
                1 + i % 3
            ))
            .await
            .unwrap();
        assert!(!rows.is_empty());
    }
    // Samples are skipped while every shadow slot is busy (a loaded host):
    // read on until 21 were compared.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while stats.compared.load(Ordering::Relaxed) < 21 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out: 21 shadow reads compared ({} skipped)",
            stats.skipped.load(Ordering::Relaxed)
        );
        let _: Vec<i32> = c.query("SELECT id FROM item").await.unwrap();
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(stats.mismatched.load(Ordering::Relaxed), 0);
    // Never shadowed: volatile reads, and reads naming the primary's
    // database (on the secondary's connection, in the same server here,
    // they would read the primary again).
    let before = stats.compared.load(Ordering::Relaxed) + stats.skipped.load(Ordering::Relaxed);
    for sql in [
        "SELECT NOW(6) FROM item LIMIT 1".to_string(),
        format!("SELECT id FROM {}.item", env.primary),
    ] {
        c.query_drop(sql).await.unwrap();
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(
        stats.compared.load(Ordering::Relaxed) + stats.skipped.load(Ordering::Relaxed),
        before
    );

    // A change behind Tandem's back on the secondary: reads of that table
    // mismatch, the client still sees the primary's rows.
    let mut direct = Conn::new(direct_opts(&env.secondary)).await.unwrap();
    direct
        .query_drop("UPDATE item SET price = 9.99 WHERE id = 2")
        .await
        .unwrap();
    // (Read on until 5 were compared: a busy host skips samples.)
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while stats.mismatched.load(Ordering::Relaxed) < 5 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out: mismatches counted"
        );
        let p: Option<String> = c
            .query_first("SELECT price FROM item WHERE id = 2")
            .await
            .unwrap();
        assert_eq!(p.as_deref(), Some("2.00"));
        let _: Option<i32> = c
            .query_first("SELECT v FROM other WHERE id = 1")
            .await
            .unwrap();
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    let by = stats.by_table.lock().unwrap().clone();
    let mismatched = stats.mismatched.load(Ordering::Relaxed);
    assert_eq!(by.get("item"), Some(&mismatched), "{by:?}");
    assert!(!by.contains_key("other"), "{by:?}");
    assert_eq!(stats.errors.load(Ordering::Relaxed), 0);
    direct.disconnect().await.unwrap();
    c.disconnect().await.unwrap();
    env.stop().await;
}
