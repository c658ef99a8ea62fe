//! The mirror journal's size limit, with the secondary cut off (through a
//! relay the test controls) so the journal fills up:
//! - `journal_full: block`: writes wait, then get a clear error and do not
//!   run (autocommit and COMMIT alike); once the secondary is back they
//!   succeed again and both sides end identical;
//! - `journal_full: degrade`: writes keep succeeding unmirrored, their table
//!   is marked divergent, `dropped` stays 0, and `verify --repair` makes the
//!   secondary equal and clears the mark.

use crate::common::mirror::*;
use crate::common::relay::Relay;
use crate::common::*;
use mysql_async::prelude::*;
use mysql_async::Conn;
use std::sync::atomic::Ordering;
use tandem::mirror::sync::MirrorSync;

const TABLE: &str =
    "CREATE TABLE t (id BIGINT AUTO_INCREMENT PRIMARY KEY, body VARCHAR(2000) NOT NULL)";

fn insert() -> String {
    format!("INSERT INTO t (body) VALUES ('{}')", "x".repeat(1500))
}

async fn count(db: &str) -> i64 {
    let mut c = Conn::new(direct_opts(db)).await.unwrap();
    let n: i64 = c
        .query_first("SELECT COUNT(*) FROM t")
        .await
        .unwrap()
        .unwrap();
    c.disconnect().await.unwrap();
    n
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn full_journal_blocks_then_refuses_and_recovers() {
    let relay = Relay::start(format!("{MARIADB_HOST}:{MARIADB_PORT}").parse().unwrap()).await;
    let env = MirrorEnv::start_via(
        "jfull_b",
        relay.addr.port(),
        "  journal_max_size: 1MiB\n  journal_full: block\n  journal_full_timeout: 300ms\n",
    )
    .await;
    env.create_both(TABLE).await;
    let m = env.mirror();
    let mut c = env.proxy().await;
    relay.cut();
    let mut ok = 0i64;
    let refused = loop {
        match c.query_drop(insert()).await {
            Ok(()) => ok += 1,
            Err(e) => break e,
        }
        assert!(ok < 5000, "the journal never filled up");
    };
    let msg = refused.to_string();
    assert!(msg.contains("mirror journal is full"), "{msg}");
    assert_eq!(
        count(&env.primary).await,
        ok,
        "the refused write did not run"
    );
    // A transaction's COMMIT is refused too, and nothing of it commits.
    c.query_drop("BEGIN").await.unwrap();
    c.query_drop(insert()).await.unwrap();
    let e = c.query_drop("COMMIT").await.unwrap_err();
    assert!(e.to_string().contains("mirror journal is full"), "{e}");
    let in_txn: i64 = c
        .query_first("SELECT @@in_transaction")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(in_txn, 0);
    assert_eq!(count(&env.primary).await, ok);
    assert!(m.stats.journal_full_refused.load(Ordering::Relaxed) >= 2);

    // The secondary comes back: the applier frees room, writes run again.
    relay.restore();
    wait_caught_up(&m).await;
    c.query_drop(insert()).await.unwrap();
    wait_caught_up(&m).await;
    assert_eq!(
        assert_same(&env.primary, &env.secondary, "t").await as i64,
        ok + 1
    );
    assert_eq!(m.stats.dropped.load(Ordering::Relaxed), 0);
    assert!(m.divergent().is_empty(), "{:?}", m.divergent());
    c.disconnect().await.unwrap();
    env.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn full_journal_degrades_marks_divergent_and_verify_repairs() {
    let relay = Relay::start(format!("{MARIADB_HOST}:{MARIADB_PORT}").parse().unwrap()).await;
    let env = MirrorEnv::start_via(
        "jfull_d",
        relay.addr.port(),
        "  journal_max_size: 1MiB\n  journal_full: degrade\n",
    )
    .await;
    env.create_both(TABLE).await;
    let m = env.mirror();
    let mut c = env.proxy().await;
    relay.cut();
    let mut n = 0;
    while m.stats.journal_full_degraded.load(Ordering::Relaxed) < 20 {
        c.query_drop(insert()).await.unwrap();
        n += 1;
        assert!(n < 5000, "the journal never filled up");
    }
    // Transactions commit unmirrored as well.
    c.query_drop("BEGIN").await.unwrap();
    c.query_drop(insert()).await.unwrap();
    c.query_drop("COMMIT").await.unwrap();
    assert_eq!(count(&env.primary).await, n + 1, "every write ran");
    assert!(m.divergent().contains_key("t"), "{:?}", m.divergent());
    assert_eq!(m.stats.dropped.load(Ordering::Relaxed), 0);

    relay.restore();
    wait_caught_up(&m).await;
    assert!(
        count(&env.secondary).await < n + 1,
        "degraded writes were not mirrored"
    );
    let cfg = env.server.shared.config.load_full();
    let opts = tandem::verify::VerifyOptions {
        repair: true,
        ..Default::default()
    };
    let report = tandem::verify::run(&cfg, &opts, &MirrorSync::InProcess(m.clone()))
        .await
        .unwrap();
    assert!(report.identical, "{}", tandem::verify::render(&report));
    assert!(report.tables[0].repaired > 0);
    assert_same(&env.primary, &env.secondary, "t").await;
    assert!(m.divergent().is_empty(), "repair cleared the mark");
    c.disconnect().await.unwrap();
    env.stop().await;
}

/// A journal whose disk is short of `journal_min_free` counts as full
/// before an fsync can fail: under `block` an autocommit write and a
/// COMMIT are refused, saying so, and nothing of them runs on the primary;
/// under `degrade` they run and the table is marked. (The minimum here is
/// far above any disk, which is the same to Tandem as a disk filling up.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_disk_short_of_journal_min_free_counts_as_full() {
    let env = MirrorEnv::start(
        "jdisk_b",
        "  journal_min_free: 100000TiB\n  journal_full: block\n  journal_full_timeout: 100ms\n",
    )
    .await;
    env.create_both(TABLE).await;
    let mut c = env.proxy().await;
    let e = c.query_drop(insert()).await.unwrap_err().to_string();
    assert!(e.contains("journal_min_free"), "{e}");
    c.query_drop("BEGIN").await.unwrap();
    c.query_drop(insert()).await.unwrap();
    let e = c.query_drop("COMMIT").await.unwrap_err().to_string();
    assert!(e.contains("journal_min_free"), "{e}");
    assert_eq!(count(&env.primary).await, 0, "nothing ran");
    drop(c);
    env.stop().await;

    let env = MirrorEnv::start(
        "jdisk_d",
        "  journal_min_free: 100000TiB\n  journal_full: degrade\n",
    )
    .await;
    env.create_both(TABLE).await;
    let mut c = env.proxy().await;
    c.query_drop(insert()).await.unwrap();
    assert_eq!(count(&env.primary).await, 1);
    assert!(env.mirror().divergent().contains_key("t"));
    drop(c);
    env.stop().await;
}

/// The journal's disk really fills up (a 1 MiB tmpfs; the free-space
/// check is off, so nothing stops writes before the disk does) while the
/// secondary is locked, so nothing is applied or truncated. Before, an
/// intent whose write failed was still committed on the primary, and its
/// bytes, queued in the writer, reached the journal later as an intent
/// without an outcome: the applier waited for it forever. Now under
/// `block` the write is rolled back and the client hears why; the failed
/// records are void to the applier, which catches up once the secondary
/// is unlocked; and once applied segments are deleted, writes succeed
/// again and both sides are identical.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_journal_whose_disk_fills_refuses_writes_and_never_hangs_the_applier() {
    use crate::common::child::*;
    let primary = "tandem_m_diskfull";
    let secondary = "tandem_m_diskfull_next";
    let tandem = ChildTandem::start_with(
        primary,
        secondary,
        &["CREATE TABLE t (id INT PRIMARY KEY, body MEDIUMTEXT NOT NULL)"],
        "  journal_max_size: 2MiB\n  journal_min_free: 0\n  journal_full: block\n",
        Some(1024),
    )
    .await;
    wait_listening(tandem.admin).await;
    let mut s = Conn::new(direct_opts(secondary)).await.unwrap();
    s.query_drop("LOCK TABLES t WRITE").await.unwrap();
    let mut c = Conn::new(proxy_builder(tandem.listen, Some(primary)))
        .await
        .unwrap();
    let body = "y".repeat(16_000);
    let (mut ok, mut failed) = (Vec::new(), Vec::new());
    for id in 1..=400 {
        let sql = format!("INSERT INTO t VALUES ({id}, '{body}')");
        let r = if id % 2 == 0 {
            c.query_drop(&sql).await
        } else {
            c.query_drop("BEGIN").await.unwrap();
            c.query_drop(&sql).await.unwrap();
            c.query_drop("COMMIT").await
        };
        match r {
            Ok(()) => ok.push(id),
            Err(e) => {
                assert!(
                    e.to_string().contains("journal could not be written"),
                    "{id}: {e}"
                );
                failed.push(id);
                if failed.len() >= 6 {
                    break;
                }
            }
        }
    }
    assert!(
        !ok.is_empty() && failed.len() >= 6,
        "ok {ok:?} failed {failed:?}"
    );
    let on_primary: Vec<i32> = Conn::new(direct_opts(primary))
        .await
        .unwrap()
        .query("SELECT id FROM t ORDER BY id")
        .await
        .unwrap();
    assert_eq!(on_primary, ok, "a refused write committed on the primary");
    s.query_drop("UNLOCK TABLES").await.unwrap();
    let status = wait_caught_up_http(tandem.admin).await;
    assert_eq!(status["mirror"]["dead_lettered"], 0);
    // Applied segments are deleted; then the journal takes writes again.
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(30);
    let next = failed.last().unwrap() + 1000;
    loop {
        let sql = format!("INSERT INTO t VALUES ({next}, 'after')");
        match c.query_drop(&sql).await {
            Ok(()) => break,
            Err(e) if tokio::time::Instant::now() < deadline => {
                assert!(e.to_string().contains("journal"), "{e}");
                tokio::time::sleep(std::time::Duration::from_millis(200)).await;
            }
            Err(e) => panic!(
                "the journal never took writes again: {e}\nlog:\n{}",
                std::fs::read_to_string(&tandem.log).unwrap_or_default()
            ),
        }
    }
    wait_caught_up_http(tandem.admin).await;
    assert_same(primary, secondary, "t").await;
    drop((c, s, tandem));
    drop_databases(&[primary, secondary]).await;
}
