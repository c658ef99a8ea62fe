//! The randomized differential test of the mirror: concurrent sessions
//! with a random isolation level per transaction (the server's default
//! REPEATABLE READ, READ COMMITTED, READ UNCOMMITTED, SERIALIZABLE), the
//! shapes the exactness fixes are about (LIMIT and ORDER BY writes, writes
//! keyed under READ COMMITTED, upserts, generated values, rollbacks,
//! prepared statements), DDL through Tandem during the load, SIGKILLs of
//! Tandem and cuts of the secondary at random moments. Then the primary
//! and the secondary are compared row for row and definition for
//! definition.
//!
//! Short in `make test`; `make soak` runs it longer. The seed is printed
//! (`TANDEM_SOAK_SEED` replays the same choices; the interleaving of the
//! sessions is the host's).

use crate::common::child::*;
use crate::common::mirror::*;
use crate::common::relay::Relay;
use crate::common::*;
use mysql_async::prelude::*;
use mysql_async::Conn;
use rand::{Rng, SeedableRng};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

const LEVELS: &[&str] = &[
    "REPEATABLE READ",
    "READ COMMITTED",
    "READ UNCOMMITTED",
    "SERIALIZABLE",
];

/// Shapes beyond the shared workload's: writes whose rows depend on more
/// than their locks (keyed by Tandem), at whatever level is in force.
async fn keyed_shape(
    c: &mut Conn,
    rng: &mut rand::rngs::StdRng,
) -> Result<bool, mysql_async::Error> {
    let n = rng.random_range(1..50u32);
    match rng.random_range(0..5u32) {
        0 => {
            c.query_drop(format!(
                "UPDATE acct SET x = x + {n} WHERE x < {} ORDER BY x LIMIT 3",
                n * 10
            ))
            .await?
        }
        1 => {
            c.query_drop(format!("DELETE FROM kv WHERE v % 7 = {} LIMIT 2", n % 7))
                .await?
        }
        2 => {
            c.query_drop(format!(
                "UPDATE kv SET v = v * 2 + {n} WHERE v BETWEEN {n} AND {}",
                n + 40
            ))
            .await?
        }
        3 => {
            c.query_drop("BEGIN").await?;
            c.query_drop(format!("UPDATE acct SET x = x - 1 WHERE x > {n} LIMIT 2"))
                .await?;
            c.query_drop(format!(
                "INSERT INTO kv (k, v) VALUES ({}, {n}) ON DUPLICATE KEY UPDATE v = v + {n}",
                n + 300
            ))
            .await?;
            if rng.random_bool(0.2) {
                c.query_drop("ROLLBACK").await?;
                return Ok(false);
            }
            c.query_drop("COMMIT").await?;
        }
        _ => {
            c.query_drop(format!(
                "DELETE FROM child WHERE parent = {n} ORDER BY id LIMIT 1"
            ))
            .await?
        }
    }
    Ok(true)
}

/// One session: a random level for each transaction (and now and then
/// for the session), then a shared-workload transaction or a keyed shape.
async fn session(addr: std::net::SocketAddr, db: String, txns: u64, seed: u64) -> (u64, u64) {
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let mut c = connect(addr, &db, true).await;
    let (mut committed, mut failed) = (0, 0);
    for _ in 0..txns {
        let level = LEVELS[rng.random_range(0..LEVELS.len())];
        let scope = if rng.random_bool(0.1) { "SESSION " } else { "" };
        let r = async {
            c.query_drop(format!("SET {scope}TRANSACTION ISOLATION LEVEL {level}"))
                .await?;
            if rng.random_bool(0.3) {
                keyed_shape(&mut c, &mut rng).await
            } else {
                one_txn(&mut c, &mut rng).await
            }
        }
        .await;
        match r {
            Ok(_) => committed += 1,
            Err(e) if is_disconnect(&e) => c = connect(addr, &db, true).await,
            // Deadlocks, duplicates, writes refused as unsafe under
            // READ COMMITTED: nothing of them may reach either side.
            Err(_) => {
                failed += 1;
                if let Err(e) = c.query_drop("ROLLBACK").await {
                    if is_disconnect(&e) {
                        c = connect(addr, &db, true).await;
                    }
                }
            }
        }
    }
    let _ = c.disconnect().await;
    (committed, failed)
}

/// DDL through Tandem while the sessions write: defaults that change what
/// later inserts store, columns and indexes added and dropped.
async fn ddl_session(
    addr: std::net::SocketAddr,
    db: String,
    seed: u64,
    stop: Arc<AtomicBool>,
) -> u64 {
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let mut c = connect(addr, &db, true).await;
    let mut ran = 0;
    while !stop.load(Ordering::Relaxed) {
        tokio::time::sleep(Duration::from_millis(rng.random_range(100..400))).await;
        let n = rng.random_range(1..6u32);
        let sql = match rng.random_range(0..5u32) {
            0 => format!("ALTER TABLE kv ALTER COLUMN hits SET DEFAULT {n}"),
            1 => format!(
                "ALTER TABLE acct ADD COLUMN IF NOT EXISTS extra{n} INT NOT NULL DEFAULT {n}"
            ),
            2 => format!("ALTER TABLE acct DROP COLUMN IF EXISTS extra{n}"),
            3 => format!("CREATE INDEX IF NOT EXISTS ix{n} ON kv (v)"),
            _ => format!("DROP INDEX IF EXISTS ix{n} ON kv"),
        };
        match c.query_drop(&sql).await {
            Ok(()) => ran += 1,
            Err(e) if is_disconnect(&e) => c = connect(addr, &db, true).await,
            Err(_) => {}
        }
    }
    let _ = c.disconnect().await;
    ran
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn randomized_isolation_ddl_kills_and_cuts_end_identical() {
    init_logging();
    let seed = env_u64("TANDEM_SOAK_SEED", rand::random::<u32>() as u64);
    let txns = env_u64("TANDEM_SOAK_TXNS", 120);
    let rounds = env_u64("TANDEM_SOAK_ROUNDS", 2);
    let conns = 8;
    eprintln!("soak: seed {seed} ({conns} sessions x {txns} transactions, {rounds} kills and cuts); replay with TANDEM_SOAK_SEED={seed}");
    let primary = "tandem_m_soak";
    let secondary = "tandem_m_soak_next";
    let relay = Relay::start(format!("{MARIADB_HOST}:{MARIADB_PORT}").parse().unwrap()).await;
    let mut tandem =
        ChildTandem::start_via(primary, secondary, WORKLOAD_SCHEMA, relay.addr.port()).await;
    let (listen, admin) = (tandem.listen, tandem.admin);
    let stop = Arc::new(AtomicBool::new(false));
    let mut sessions = Vec::new();
    for i in 0..conns {
        let s = seed.wrapping_mul(31).wrapping_add(i);
        sessions.push(tokio::spawn(session(listen, primary.to_string(), txns, s)));
    }
    let ddl = tokio::spawn(ddl_session(
        listen,
        primary.to_string(),
        seed ^ 0xD1,
        stop.clone(),
    ));
    // Chaos at moments the seed picks, measured in journaled transactions
    // (a fast host finishes the load in seconds).
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed ^ 0xC4);
    let step = (conns * txns / (rounds + 2)).max(1);
    for _ in 0..rounds {
        let at = step + rng.random_range(0..step.min(50));
        if !wait_more_journaled(admin, at).await {
            break;
        }
        if rng.random_bool(0.5) {
            eprintln!("soak: cut the secondary at ~{at}");
            relay.cut();
            tokio::time::sleep(Duration::from_millis(rng.random_range(100..600))).await;
            relay.restore();
        } else {
            eprintln!("soak: SIGKILL Tandem at ~{at}");
            tandem.kill();
            tokio::time::sleep(Duration::from_millis(rng.random_range(50..400))).await;
            tandem.restart().await;
            wait_listening(admin).await;
        }
    }
    let (mut committed, mut failed) = (0, 0);
    for s in sessions {
        let (c, f) = s.await.unwrap();
        committed += c;
        failed += f;
    }
    stop.store(true, Ordering::Relaxed);
    let ddls = ddl.await.unwrap();
    eprintln!("soak: {committed} transactions ended, {failed} refused or failed, {ddls} DDL");
    wait_listening(admin).await;
    let status = wait_caught_up_http(admin).await;
    let log = || std::fs::read_to_string(&tandem.log).unwrap_or_default();
    for t in WORKLOAD_TABLES {
        assert_same(primary, secondary, t).await;
    }
    for t in WORKLOAD_TABLES {
        let def = |db: &'static str| async move {
            let mut d = Conn::new(direct_opts(db)).await.unwrap();
            let r: Option<(String, String)> = d
                .query_first(format!("SHOW CREATE TABLE {t}"))
                .await
                .unwrap();
            d.disconnect().await.unwrap();
            r.map(|(_, s)| tandem::mirror::ddl::normalize(Some(s.as_bytes())))
        };
        assert_eq!(
            def(primary).await,
            def(secondary).await,
            "definition of {t} (seed {seed})"
        );
    }
    assert_eq!(
        status["mirror"]["dead_lettered"],
        0,
        "seed {seed}\n{}",
        log()
    );
    assert_eq!(
        status["mirror"]["divergent_tables"],
        serde_json::json!({}),
        "seed {seed}"
    );
    assert!(committed > 0);
    tandem.kill();
    drop_databases(&[primary, secondary]).await;
}

/// Waits until the Tandem behind `admin` has journaled `step` more
/// transactions; false when the load stops first.
async fn wait_more_journaled(admin: std::net::SocketAddr, step: u64) -> bool {
    let journaled = || async {
        let (_, _, body) = http(admin, "GET", "/status").await;
        let v: serde_json::Value = serde_json::from_str(&body).unwrap_or_default();
        v["mirror"]["journaled"].as_u64().unwrap_or(0)
    };
    let target = journaled().await + step;
    let (mut last, mut still) = (0, 0);
    loop {
        let now = journaled().await;
        if now >= target {
            return true;
        }
        still = if now == last { still + 1 } else { 0 };
        if still > 100 {
            return false;
        }
        last = now;
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
