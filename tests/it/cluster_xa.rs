//! Cross-shard transactions: all or nothing across shards (XA two-phase
//! commit, `cross_shard_transactions: xa`, the default), through real
//! MariaDB shards (one on a `mariadbd` of the test's own), with Tandem
//! crashed at each step of the commit and a shard server killed before
//! its PREPARE.

use crate::cluster::Cluster;
use crate::common::child::spawn_tandem_with;
use crate::common::{self, free_addr, proxy_builder, wait_listening};
use mysql_async::prelude::*;
use mysql_async::{Conn, Opts};
use rand::{Rng, SeedableRng};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// The shard a `users` id lives on.
fn shard_of(config: &std::path::Path, id: u64) -> usize {
    let cfg = tandem::config::load(config).unwrap();
    let c = cfg.cluster().unwrap().clone();
    tandem::router::shard::shard_of(
        &c,
        &c.tables["users"].placement,
        &tandem::router::shard::KeyType::Int,
        &tandem::router::shard::Canon::Int(id as i128),
    )
    .unwrap()
}

/// `n` user ids, each on another shard, in shard order of appearance.
pub fn users_on_distinct_shards(config: &std::path::Path, n: usize) -> Vec<(u64, usize)> {
    let mut out: Vec<(u64, usize)> = Vec::new();
    for id in 1..1000u64 {
        let s = shard_of(config, id);
        if !out.iter().any(|(_, t)| *t == s) {
            out.push((id, s));
            if out.len() == n {
                break;
            }
        }
    }
    assert_eq!(out.len(), n, "{n} shards with a user each");
    out
}

/// The prepared XA branches of the cluster `config` serves on the server
/// behind `opts` (other tests' clusters share the server).
async fn prepared_of(config: &std::path::Path, opts: &Opts) -> Vec<String> {
    let tag = tandem::shard_tools::xa::cluster_tag(&tandem::config::load(config).unwrap());
    prepared_branches(opts)
        .await
        .into_iter()
        .filter(|x| x.starts_with(&format!("'{tag}")))
        .collect()
}

/// Tandem's prepared XA branches on the server behind `opts`.
async fn prepared_branches(opts: &Opts) -> Vec<String> {
    let mut c = Conn::new(opts.clone()).await.unwrap();
    let rows: Vec<mysql_async::Row> = c.query("XA RECOVER FORMAT='SQL'").await.unwrap();
    c.disconnect().await.unwrap();
    rows.into_iter()
        .filter(|r| r.get::<i64, _>(0) == Some(tandem::shard_tools::xa::FORMAT_ID as i64))
        .map(|r| String::from_utf8_lossy(&r.get::<Vec<u8>, _>(3).unwrap()).into_owned())
        .collect()
}

/// Polls until no shard server holds a prepared branch of the cluster.
async fn wait_no_prepared(config: &std::path::Path, shards: &[Opts]) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        let mut left = Vec::new();
        for o in shards {
            left.extend(prepared_of(config, o).await);
        }
        if left.is_empty() {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "prepared branches left behind: {left:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

async fn balance(opts: &Opts, id: u64) -> Option<String> {
    let mut c = Conn::new(opts.clone()).await.unwrap();
    let b: Option<String> = c
        .query_first(format!(
            "SELECT CAST(balance AS CHAR) FROM users WHERE id = {id}"
        ))
        .await
        .unwrap();
    c.disconnect().await.unwrap();
    b
}

/// Transfers between random users through a 4-shard Tandem (one shard on
/// a server of its own), on 8 connections: the sum of balances never
/// changes, checked while they run by a reader whose locking reads span
/// every shard, and at the end; no prepared branch is left behind.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transfers_across_shards_keep_the_sum() {
    let cl = Cluster::start("xa_transfers", true).await;
    let users = 200u64;
    let transfers: u64 = std::env::var("TANDEM_XA_TRANSFERS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(10_000);
    let mut t = cl.proxy().await;
    let values: Vec<String> = (1..=users)
        .map(|i| format!("({i}, 'u{i}', 1000.00)"))
        .collect();
    // One statement over every shard: itself a cross-shard transaction.
    t.query_drop(format!(
        "INSERT INTO users (id, name, balance) VALUES {}",
        values.join(", ")
    ))
    .await
    .unwrap();
    assert_eq!(t.affected_rows(), users);
    let total = format!("{}.00", users * 1000);
    let stop = Arc::new(AtomicBool::new(false));
    let checks = Arc::new(AtomicU64::new(0));
    let reader = {
        let (stop, checks, addr, total) = (stop.clone(), checks.clone(), cl.addr, total.clone());
        tokio::spawn(async move {
            let mut c = Conn::new(proxy_builder(addr, Some("app"))).await.unwrap();
            c.query_drop("SET SESSION innodb_lock_wait_timeout = 1")
                .await
                .unwrap();
            while !stop.load(Ordering::Relaxed) {
                let r = async {
                    c.query_drop("BEGIN").await?;
                    let s: Option<String> = c
                        .query_first("SELECT SUM(balance) FROM users LOCK IN SHARE MODE")
                        .await?;
                    c.query_drop("COMMIT").await?;
                    Ok::<_, mysql_async::Error>(s)
                };
                match r.await {
                    Ok(s) => {
                        assert_eq!(
                            s.as_deref(),
                            Some(total.as_str()),
                            "a reader saw half a transfer"
                        );
                        checks.fetch_add(1, Ordering::Relaxed);
                    }
                    // Deadlocks and lock waits with the transfers.
                    Err(mysql_async::Error::Server(e)) if e.code == 1213 || e.code == 1205 => {
                        let _ = c.query_drop("ROLLBACK").await;
                    }
                    Err(e) => panic!("reader: {e}"),
                }
                // Its locks stall the transfers: now and then.
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
            c.disconnect().await.unwrap();
        })
    };
    let started = std::time::Instant::now();
    let mut writers = Vec::new();
    let conns = 8u64;
    for w in 0..conns {
        let addr = cl.addr;
        writers.push(tokio::spawn(async move {
            let mut rng = rand::rngs::StdRng::seed_from_u64(w);
            let mut c = Conn::new(proxy_builder(addr, Some("app"))).await.unwrap();
            c.query_drop("SET SESSION innodb_lock_wait_timeout = 2")
                .await
                .unwrap();
            let (mut done, mut retried) = (0u64, 0u64);
            while done < transfers / conns {
                let a = rng.random_range(1..=users);
                let b = rng.random_range(1..=users);
                if a == b {
                    continue;
                }
                let amount = rng.random_range(1..50u32);
                let r = async {
                    c.query_drop("BEGIN").await?;
                    c.query_drop(format!(
                        "UPDATE users SET balance = balance - {amount} WHERE id = {a}"
                    ))
                    .await?;
                    c.query_drop(format!(
                        "UPDATE users SET balance = balance + {amount} WHERE id = {b}"
                    ))
                    .await?;
                    c.query_drop("COMMIT").await
                };
                match r.await {
                    Ok(()) => done += 1,
                    Err(mysql_async::Error::Server(e)) if e.code == 1213 || e.code == 1205 => {
                        retried += 1;
                        let _ = c.query_drop("ROLLBACK").await;
                    }
                    Err(e) => panic!("transfer {a} -> {b}: {e}"),
                }
            }
            c.disconnect().await.unwrap();
            (done, retried)
        }));
    }
    let (mut done, mut retried) = (0, 0);
    for w in writers {
        let (d, r) = w.await.unwrap();
        done += d;
        retried += r;
    }
    let took = started.elapsed();
    stop.store(true, Ordering::Relaxed);
    reader.await.unwrap();
    eprintln!(
        "xa: {done} transfers in {took:?} ({retried} retried), {} consistent reads",
        checks.load(Ordering::Relaxed)
    );
    assert!(
        checks.load(Ordering::Relaxed) > 0,
        "the reader checked the sum"
    );
    let sum: Option<String> = t
        .query_first("SELECT SUM(balance) FROM users")
        .await
        .unwrap();
    assert_eq!(sum.as_deref(), Some(total.as_str()));
    // Shard by shard, directly: every branch committed.
    let mut direct = 0f64;
    for o in &cl.shards {
        let mut c = Conn::new(o.clone()).await.unwrap();
        let s: Option<f64> = c
            .query_first("SELECT CAST(COALESCE(SUM(balance), 0) AS DOUBLE) FROM users")
            .await
            .unwrap();
        direct += s.unwrap_or(0.0);
        c.disconnect().await.unwrap();
    }
    assert_eq!(direct, (users * 1000) as f64);
    for o in &cl.shards {
        assert!(prepared_of(&cl.config, o).await.is_empty());
    }
    let commits = cl.server.shared.metrics.xa_commits.get();
    assert!(commits > 0, "cross-shard commits counted");
    t.disconnect().await.unwrap();
    cl.stop().await;
}

/// `cross_shard_transactions: reject`: a write that would reach a second
/// shard inside a transaction is refused, the transaction stays open and
/// usable, and ROLLBACK ends it on every shard.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reject_refuses_the_second_shard_and_keeps_the_transaction() {
    let cl =
        Cluster::start_with("xa_reject", false, "    cross_shard_transactions: reject\n").await;
    let ids = users_on_distinct_shards(&cl.config, 2);
    let (a, b) = (ids[0].0, ids[1].0);
    let mut t = cl.proxy().await;
    t.query_drop(format!(
        "INSERT INTO users (id, name) VALUES ({a}, 'a'), ({b}, 'b')"
    ))
    .await
    .unwrap();
    t.query_drop("BEGIN").await.unwrap();
    t.query_drop(format!("UPDATE users SET name = 'x' WHERE id = {a}"))
        .await
        .unwrap();
    let e = t
        .query_drop(format!("UPDATE users SET name = 'y' WHERE id = {b}"))
        .await
        .unwrap_err();
    let msg = e.to_string();
    assert!(
        msg.contains("cross_shard_transactions: reject") && msg.contains("still open"),
        "{msg}"
    );
    let seen: Option<String> = t
        .query_first(format!("SELECT name FROM users WHERE id = {a}"))
        .await
        .unwrap();
    assert_eq!(seen.as_deref(), Some("x"), "the transaction is still open");
    t.query_drop("ROLLBACK").await.unwrap();
    let after: Vec<String> = t
        .query("SELECT name FROM users ORDER BY name")
        .await
        .unwrap();
    assert_eq!(after, vec!["a", "b"]);
    t.disconnect().await.unwrap();
    cl.stop().await;
}

/// A `tandem serve` child over the cluster config at `config`, on fixed
/// ports, with `TANDEM_FAILPOINT` set to `failpoint` when given.
struct ChildCluster {
    child: std::process::Child,
    listen: std::net::SocketAddr,
    config: std::path::PathBuf,
    log: std::path::PathBuf,
}

impl ChildCluster {
    async fn start(config: &std::path::Path, failpoint: Option<&str>) -> ChildCluster {
        let listen = free_addr();
        let yaml = std::fs::read_to_string(config)
            .unwrap()
            .replace("listen: 127.0.0.1:0", &format!("listen: {listen}"))
            .replace("admin: 127.0.0.1:0\n", "");
        let fixed = config.with_file_name(format!("child-{}.yaml", listen.port()));
        std::fs::write(&fixed, yaml).unwrap();
        let log = config.with_file_name("child.log");
        let mut c = ChildCluster {
            child: spawn_tandem_with(&fixed, &log, failpoint),
            listen,
            config: fixed,
            log,
        };
        c.wait().await;
        c
    }

    async fn wait(&mut self) {
        wait_listening(self.listen).await;
    }

    async fn restart(&mut self) {
        let _ = self.child.wait();
        self.child = spawn_tandem_with(&self.config, &self.log, None);
        self.wait().await;
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for ChildCluster {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Tandem crashes at each step of a cross-shard commit (after the
/// PREPAREs, after the decision, after the first XA COMMIT) and starts
/// again: the transaction is all or nothing — nothing when the decision
/// was not taken, everything once it was — and no prepared branch is left
/// behind. The same for a reference-table write, one statement on every
/// shard.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crash_at_each_step_of_the_commit_leaves_all_or_nothing() {
    common::init_logging();
    let (config, shards, dbs, _dir, _own) = Cluster::prepare("xa_crash", false, "").await;
    let ids = users_on_distinct_shards(&config, 3);
    for (round, failpoint) in [
        "xa-after-prepare",
        "xa-after-decision",
        "xa-after-first-commit",
    ]
    .iter()
    .enumerate()
    {
        // Three users on three shards, 100.00 each, written directly.
        let users = ids.clone();
        for (id, s) in &users {
            let mut c = Conn::new(shards[*s].clone()).await.unwrap();
            c.query_drop(format!(
                "REPLACE INTO users (id, name, balance) VALUES ({id}, 'u', 100.00)"
            ))
            .await
            .unwrap();
            c.query_drop(format!("DELETE FROM categories WHERE id = {}", round + 1))
                .await
                .unwrap();
            c.disconnect().await.unwrap();
        }
        let mut tandem = ChildCluster::start(&config, Some(failpoint)).await;
        let mut t = Conn::new(proxy_builder(tandem.listen, Some("app")))
            .await
            .unwrap();
        t.query_drop("BEGIN").await.unwrap();
        t.query_drop(format!(
            "UPDATE users SET balance = balance - 10 WHERE id = {}",
            users[0].0
        ))
        .await
        .unwrap();
        for (id, _) in &users[1..] {
            t.query_drop(format!(
                "UPDATE users SET balance = balance + 5 WHERE id = {id}"
            ))
            .await
            .unwrap();
        }
        // A branch whose write changed nothing is prepared too.
        t.query_drop("UPDATE users SET balance = 0 WHERE id = -1 AND name = 'none'")
            .await
            .unwrap();
        let e = t.query_drop("COMMIT").await;
        assert!(e.is_err(), "{failpoint}: Tandem died during COMMIT");
        drop(t);
        let _ = tandem.child.wait();
        assert!(tandem.log().contains(&format!("failpoint {failpoint}")));
        // The crash left prepared branches for the resolver.
        let left = prepared_of(&config, &shards[0]).await;
        // Every written shard but the anchor's holds an XA branch.
        let cfg = tandem::config::load(&config).unwrap();
        let c = cfg.cluster().unwrap().clone();
        let none_shard = tandem::router::shard::shard_of(
            &c,
            &c.tables["users"].placement,
            &tandem::router::shard::KeyType::Int,
            &tandem::router::shard::Canon::Int(-1),
        )
        .unwrap();
        let mut written: std::collections::BTreeSet<usize> =
            users[1..].iter().map(|(_, s)| *s).collect();
        written.insert(none_shard);
        written.remove(&users[0].1);
        let expected = written.len() - usize::from(*failpoint == "xa-after-first-commit");
        assert_eq!(left.len(), expected, "{failpoint}: {left:?}");
        // Another cluster's prepared branch on the same server (same
        // format id, another tag): never this resolver's to settle.
        let foreign = format!(
            "'ffffffff{round:032x}','0',{}",
            tandem::shard_tools::xa::FORMAT_ID
        );
        let mut other = Conn::new(shards[0].clone()).await.unwrap();
        other
            .query_drop(format!("XA START {foreign}"))
            .await
            .unwrap();
        other
            .query_drop(format!(
                "INSERT INTO categories VALUES ({}, 'other')",
                900 + round
            ))
            .await
            .unwrap();
        for q in ["END", "PREPARE"] {
            other.query_drop(format!("XA {q} {foreign}")).await.unwrap();
        }
        other.disconnect().await.unwrap();
        tandem.restart().await;
        wait_no_prepared(&config, &shards[..1]).await;
        let mut other = Conn::new(shards[0].clone()).await.unwrap();
        other
            .query_drop(format!("XA ROLLBACK {foreign}"))
            .await
            .expect("the other cluster's branch was left alone");
        other.disconnect().await.unwrap();
        let committed = *failpoint != "xa-after-prepare";
        let want = |first: bool| -> Option<String> {
            Some(match (committed, first) {
                (false, _) => "100.00".to_string(),
                (true, true) => "90.00".to_string(),
                (true, false) => "105.00".to_string(),
            })
        };
        for (i, (id, s)) in users.iter().enumerate() {
            assert_eq!(
                balance(&shards[*s], *id).await,
                want(i == 0),
                "{failpoint}: user {id} on shard {s}\n{}",
                tandem.log()
            );
        }
        // A reference-table write is one statement on every shard.
        drop(tandem);
        let mut tandem = ChildCluster::start(&config, Some(failpoint)).await;
        let mut t = Conn::new(proxy_builder(tandem.listen, Some("app")))
            .await
            .unwrap();
        let cat = round + 1;
        let e = t
            .query_drop(format!("INSERT INTO categories VALUES ({cat}, 'c')"))
            .await;
        assert!(e.is_err(), "{failpoint}: Tandem died during the write");
        drop(t);
        let _ = tandem.child.wait();
        tandem.restart().await;
        wait_no_prepared(&config, &shards[..1]).await;
        let mut on = 0;
        for o in &shards {
            let mut c = Conn::new(o.clone()).await.unwrap();
            let n: Option<u64> = c
                .query_first(format!("SELECT COUNT(*) FROM categories WHERE id = {cat}"))
                .await
                .unwrap();
            on += n.unwrap_or(0);
            c.disconnect().await.unwrap();
        }
        let want = if committed { shards.len() as u64 } else { 0 };
        assert_eq!(
            on, want,
            "{failpoint}: the reference row on every shard or none"
        );
    }
    for db in &dbs {
        common::drop_databases(&[db.as_str()]).await;
    }
}

/// A shard server that dies before its PREPARE: the transaction rolls back
/// on every other shard and the client gets an error that says so.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shard_server_lost_before_prepare_rolls_back_everywhere() {
    let mut cl = Cluster::start("xa_lost", true).await;
    let ids = users_on_distinct_shards(&cl.config, 4);
    let on = |s: usize| ids.iter().find(|(_, t)| *t == s).unwrap().0;
    let (a, d) = (on(0), on(3));
    let mut t = cl.proxy().await;
    t.query_drop(format!(
        "INSERT INTO users (id, name, balance) VALUES ({a}, 'a', 100), ({d}, 'd', 100)"
    ))
    .await
    .unwrap();
    t.query_drop("BEGIN").await.unwrap();
    t.query_drop(format!("UPDATE users SET balance = 0 WHERE id = {a}"))
        .await
        .unwrap();
    t.query_drop(format!("UPDATE users SET balance = 0 WHERE id = {d}"))
        .await
        .unwrap();
    cl.own.as_mut().unwrap().kill();
    let e = t.query_drop("COMMIT").await.unwrap_err();
    let msg = e.to_string();
    assert!(
        msg.contains("rolled back on every shard") && msg.contains("s3"),
        "{msg}"
    );
    assert_eq!(balance(&cl.shards[0], a).await.as_deref(), Some("100.00"));
    assert!(prepared_of(&cl.config, &cl.shards[0]).await.is_empty());
    drop(t);
    cl.stop().await;
}

/// `shard_key_updates: move`: an UPDATE of a row's shard key moves the row
/// to its new shard (with the other columns the SET computes), in one
/// atomic transaction; a duplicate key there refuses the whole statement;
/// ROLLBACK undoes a move; a table without the setting refuses it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shard_key_updates_move_rows_atomically_or_are_refused() {
    let prepared = Cluster::prepare("xa_move", false, "").await;
    let rules = prepared.0.with_file_name("rules").join("app.yaml");
    let text = std::fs::read_to_string(&rules).unwrap().replace(
        "users: { shard_key: id }",
        "users: { shard_key: id, shard_key_updates: move }",
    );
    std::fs::write(&rules, text).unwrap();
    let cl = Cluster::start_prepared(prepared).await;
    let ids = users_on_distinct_shards(&cl.config, 3);
    let ((a, sa), (b, sb), (c, _)) = (ids[0], ids[1], ids[2]);
    let mut t = cl.proxy().await;
    t.query_drop(format!(
        "INSERT INTO users (id, name, balance) VALUES ({a}, 'a', 10), ({c}, 'c', 30)"
    ))
    .await
    .unwrap();
    // Moved, with the SET's other columns computed as one database would.
    t.query_drop(format!(
        "UPDATE users SET id = {b}, balance = balance + 1 WHERE id = {a}"
    ))
    .await
    .unwrap();
    assert_eq!(t.affected_rows(), 1);
    let on = |s: usize, id: u64| {
        let o = cl.shards[s].clone();
        async move {
            let mut d = Conn::new(o).await.unwrap();
            let r: Option<(String, String)> = d
                .query_first(format!(
                    "SELECT name, CAST(balance AS CHAR) FROM users WHERE id = {id}"
                ))
                .await
                .unwrap();
            d.disconnect().await.unwrap();
            r
        }
    };
    assert_eq!(on(sa, a).await, None, "gone from its old shard");
    assert_eq!(on(sb, b).await, Some(("a".into(), "11.00".into())));
    // ROLLBACK undoes a move inside a transaction.
    t.query_drop("BEGIN").await.unwrap();
    t.query_drop(format!("UPDATE users SET id = {a} WHERE id = {b}"))
        .await
        .unwrap();
    let seen: Option<String> = t
        .query_first(format!("SELECT name FROM users WHERE id = {a}"))
        .await
        .unwrap();
    assert_eq!(
        seen.as_deref(),
        Some("a"),
        "the transaction sees the moved row"
    );
    t.query_drop("ROLLBACK").await.unwrap();
    assert_eq!(on(sb, b).await, Some(("a".into(), "11.00".into())));
    assert_eq!(on(sa, a).await, None);
    // A duplicate key on the new shard refuses the whole statement.
    let e = t
        .query_drop(format!("UPDATE users SET id = {c} WHERE id = {b}"))
        .await
        .unwrap_err();
    assert!(
        matches!(e, mysql_async::Error::Server(ref s) if s.code == 1062),
        "{e:?}"
    );
    assert_eq!(on(sb, b).await, Some(("a".into(), "11.00".into())));
    // Several rows on several shards move at once; the count is the sum.
    t.query_drop("UPDATE users SET id = id + 100000, name = CONCAT(name, '!')")
        .await
        .unwrap();
    assert_eq!(t.affected_rows(), 2);
    let rows: Vec<(u64, String)> = t
        .query("SELECT id, name FROM users ORDER BY id")
        .await
        .unwrap();
    assert_eq!(
        rows,
        vec![
            (
                b.min(c) + 100000,
                if b < c { "a!" } else { "c!" }.to_string()
            ),
            (
                b.max(c) + 100000,
                if b < c { "c!" } else { "a!" }.to_string()
            )
        ]
    );
    for (id, _) in &rows {
        let s = shard_of(&cl.config, *id);
        assert!(
            on(s, *id).await.is_some(),
            "row {id} on the shard its key names"
        );
    }
    // Without the setting: refused, naming it.
    let e = t
        .query_drop("UPDATE bids SET user_id = 5 WHERE id = 1")
        .await
        .unwrap_err();
    assert!(e.to_string().contains("shard_key_updates: move"), "{e}");
    t.disconnect().await.unwrap();
    cl.stop().await;
}
