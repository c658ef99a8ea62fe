//! Cutover and rollback (real MariaDB on both sides, real clients):
//! - a one-line edit of `migration.primary` flips the roles under an
//!   8-connection read/write workload, `tandem cutover` flips them back, and
//!   no client sees an error; every acknowledged write is on both databases
//!   afterwards, which are identical; sessions keep their prepared
//!   statements and session variables across the move;
//! - a cutover to an unreachable target is refused;
//! - a cutover whose open transaction or drain outlasts
//!   `cutover_timeout` aborts and leaves everything as it was.

use crate::common::mirror::*;
use crate::common::relay::Relay;
use crate::common::*;
use mysql_async::prelude::*;
use mysql_async::Conn;
use rand::{Rng, SeedableRng};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

const WORKERS: usize = 8;

/// What one worker saw acknowledged.
#[derive(Default, Debug)]
struct Acked {
    /// (worker, seq) of every acknowledged insert into `ev`.
    rows: Vec<(i64, i64)>,
    /// Acknowledged increments of this worker's `ctr` row.
    increments: i64,
    /// DATABASE() answers seen, in order (where writes went).
    databases: Vec<String>,
    errors: Vec<String>,
    reads: u64,
}

async fn setup(env: &MirrorEnv) {
    env.create_both(
        "CREATE TABLE ev (id BIGINT AUTO_INCREMENT PRIMARY KEY, w INT NOT NULL, seq INT NOT NULL, \
         note VARCHAR(40), at DATETIME(6) NOT NULL DEFAULT CURRENT_TIMESTAMP(6), UNIQUE KEY (w, seq)) ENGINE=InnoDB",
    )
    .await;
    env.create_both("CREATE TABLE ctr (w INT PRIMARY KEY, n BIGINT NOT NULL) ENGINE=InnoDB")
        .await;
    env.create_both("INSERT INTO ctr SELECT seq, 0 FROM seq_0_to_7")
        .await;
}

/// One client: session state set once (user variable, time zone), then a
/// random mix of autocommit inserts, explicit transactions, prepared
/// inserts (statement ids cached by the driver) and reads, until `stop`.
async fn worker(addr: std::net::SocketAddr, db: String, w: i64, stop: Arc<AtomicBool>) -> Acked {
    let mut rng = rand::rngs::StdRng::seed_from_u64(w as u64 * 31 + 7);
    let mut acked = Acked::default();
    let mut c = Conn::new(proxy_builder(addr, Some(&db))).await.unwrap();
    c.query_drop(format!("SET @tag = 'w{w}'")).await.unwrap();
    c.query_drop("SET SESSION time_zone = '+03:00'")
        .await
        .unwrap();
    let mut seq = 0i64;
    let mut n = 0u64;
    while !stop.load(Ordering::Relaxed) {
        n += 1;
        let r: Result<(), mysql_async::Error> = async {
            match rng.random_range(0..10u32) {
                0..=2 => {
                    seq += 1;
                    c.query_drop(format!(
                        "INSERT INTO ev (w, seq, note) VALUES ({w}, {seq}, 'w{w}')"
                    ))
                    .await?;
                    acked.rows.push((w, seq));
                }
                3..=4 => {
                    seq += 1;
                    c.query_drop("BEGIN").await?;
                    c.query_drop(format!(
                        "INSERT INTO ev (w, seq, note) VALUES ({w}, {seq}, 'w{w}')"
                    ))
                    .await?;
                    c.query_drop(format!("UPDATE ctr SET n = n + 1 WHERE w = {w}"))
                        .await?;
                    c.query_drop("COMMIT").await?;
                    acked.rows.push((w, seq));
                    acked.increments += 1;
                }
                5..=6 => {
                    seq += 1;
                    c.exec_drop(
                        "INSERT INTO ev (w, seq, note) VALUES (?, ?, ?)",
                        (w, seq, format!("w{w}")),
                    )
                    .await?;
                    acked.rows.push((w, seq));
                }
                7 => {
                    let got: Option<i64> = c
                        .exec_first("SELECT COUNT(*) FROM ev WHERE w = ?", (w,))
                        .await?;
                    assert!(got.is_some());
                    acked.reads += 1;
                }
                _ => {
                    let (d, tag, tz): (String, Option<String>, String) = c
                        .query_first("SELECT DATABASE(), @tag, @@session.time_zone")
                        .await?
                        .unwrap();
                    assert_eq!(
                        tag.as_deref(),
                        Some(format!("w{w}").as_str()),
                        "@tag survived"
                    );
                    assert_eq!(tz, "+03:00", "time_zone survived");
                    if acked.databases.last() != Some(&d) {
                        acked.databases.push(d);
                    }
                    acked.reads += 1;
                }
            }
            Ok(())
        }
        .await;
        if let Err(e) = r {
            acked.errors.push(format!("worker {w} op {n}: {e}"));
            let _ = c.query_drop("ROLLBACK").await;
        }
    }
    let _ = c.disconnect().await;
    acked
}

async fn wait_for_primary(env: &MirrorEnv, name: &str) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while env.server.shared.config.load().primary != name {
        assert!(
            tokio::time::Instant::now() < deadline,
            "no cutover to {name}: {}",
            env.server.shared.cutover.status_json()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn count(db: &str, sql: &str) -> i64 {
    let mut c = Conn::new(direct_opts(db)).await.unwrap();
    let n: i64 = c.query_first(sql).await.unwrap().unwrap();
    c.disconnect().await.unwrap();
    n
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cutover_and_rollback_under_load_lose_nothing() {
    let env = MirrorEnv::start_with_admin("co_load", "").await;
    setup(&env).await;
    let file = env.cfg.clone().unwrap();
    let admin = env.server.admin_addr.unwrap();

    let stop = Arc::new(AtomicBool::new(false));
    let mut tasks = Vec::new();
    for w in 0..WORKERS as i64 {
        tasks.push(tokio::spawn(worker(
            env.server.addr,
            env.primary.clone(),
            w,
            stop.clone(),
        )));
    }
    tokio::time::sleep(Duration::from_millis(1500)).await;

    // The one-line edit: primary: legacy -> next (secondary keeps saying
    // `next`, which now means "the previous primary").
    let text = std::fs::read_to_string(&file).unwrap();
    let edited = text.replacen("primary: legacy", "primary: next", 1);
    assert_ne!(text, edited);
    std::fs::write(&file, edited).unwrap();
    wait_for_primary(&env, "next").await;
    {
        let cfg = env.server.shared.config.load();
        assert_eq!(cfg.secondary.as_deref(), Some("legacy"));
        assert!(env.mirror().mirrors_to("legacy"));
    }
    // A restart would find the same roles (recorded beside the journal).
    let restart = tandem::config::load_for_start(&file).expect("config after the flip starts");
    assert_eq!(restart.primary, "next");
    assert_eq!(restart.secondary.as_deref(), Some("legacy"));
    tokio::time::sleep(Duration::from_millis(1500)).await;

    // Writes after the flip land on the new primary: a fresh session sees
    // the new primary's database.
    {
        let mut c = env.proxy().await;
        let d: String = c.query_first("SELECT DATABASE()").await.unwrap().unwrap();
        assert_eq!(d, env.secondary);
        c.disconnect().await.unwrap();
    }

    // Rollback: the same operation the other way, through the CLI.
    let (code, out, err) = env.tool("cutover", &["--to", "legacy"]).await;
    assert_eq!(code, 0, "{out}\n{err}");
    assert!(out.contains("legacy is the primary"), "{out}");
    assert_eq!(env.server.shared.config.load().primary, "legacy");
    let text = std::fs::read_to_string(&file).unwrap();
    assert!(
        text.contains("primary: legacy"),
        "the file records the rollback:\n{text}"
    );
    tokio::time::sleep(Duration::from_millis(1500)).await;

    stop.store(true, Ordering::Relaxed);
    let mut all = Vec::new();
    for t in tasks {
        all.push(t.await.unwrap());
    }
    let errors: Vec<&String> = all.iter().flat_map(|a| a.errors.iter()).collect();
    assert!(errors.is_empty(), "client-visible errors: {errors:#?}");
    // Every session moved to next and back (seen through DATABASE()).
    for (w, a) in all.iter().enumerate() {
        assert!(
            a.databases.contains(&env.secondary) && a.databases.last() == Some(&env.primary),
            "worker {w} saw {:?}",
            a.databases
        );
    }

    env.wait_caught_up().await;
    let n = assert_same(&env.primary, &env.secondary, "ev").await;
    assert_same(&env.primary, &env.secondary, "ctr").await;
    let acked: usize = all.iter().map(|a| a.rows.len()).sum();
    assert_eq!(n, acked, "every acknowledged insert is there, nothing else");
    for (w, a) in all.iter().enumerate() {
        let mut c = Conn::new(direct_opts(&env.primary)).await.unwrap();
        let seqs: Vec<i64> = c
            .query(format!(
                "SELECT seq FROM ev WHERE w = {w} AND note = 'w{w}' ORDER BY seq"
            ))
            .await
            .unwrap();
        let mut want: Vec<i64> = a.rows.iter().map(|(_, s)| *s).collect();
        want.sort();
        assert_eq!(seqs, want, "worker {w}: its rows");
        let inc: i64 = c
            .query_first(format!("SELECT n FROM ctr WHERE w = {w}"))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(inc, a.increments, "worker {w}: committed increments");
        c.disconnect().await.unwrap();
    }

    // Status and metrics tell the story.
    let (_, _, body) = http(admin, "GET", "/status").await;
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    let history = v["cutover"]["history"].as_array().unwrap();
    assert_eq!(history.len(), 2, "{body}");
    assert!(history.iter().all(|h| h["ok"] == true), "{body}");
    assert_eq!(history[0]["trigger"], "file");
    assert_eq!(history[1]["trigger"], "api");
    for h in history {
        let phases: Vec<&str> = h["phases"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p[0].as_str().unwrap())
            .collect();
        assert_eq!(
            phases,
            ["preflight", "wait_transactions", "drain", "swap", "events"]
        );
    }
    assert_eq!(v["primary"], "legacy");
    assert_eq!(v["secondary"], "next");
    assert_eq!(v["mirror"]["dropped"], 0);
    let (_, _, metrics) = http(admin, "GET", "/metrics").await;
    assert!(metrics.contains("tandem_cutovers_total 2"), "{metrics}");
    assert!(
        metrics.contains("tandem_cutover_phase_seconds_count{phase=\"drain\"} 2"),
        "{metrics}"
    );
    assert!(
        metrics.contains("tandem_statement_duration_seconds_bucket"),
        "{metrics}"
    );
    let (code, out, err) = env.tool("status", &[]).await;
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains("primary:    legacy") && out.contains("next -> legacy by api"),
        "{out}"
    );
    env.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cutover_to_an_unreachable_target_is_refused() {
    let relay = Relay::start(format!("{MARIADB_HOST}:{MARIADB_PORT}").parse().unwrap()).await;
    let env = MirrorEnv::launch("co_unreach", relay.addr.port(), "", Some("")).await;
    setup(&env).await;
    let mut c = env.proxy().await;
    c.query_drop("INSERT INTO ev (w, seq) VALUES (1, 1)")
        .await
        .unwrap();
    env.wait_caught_up().await;
    relay.cut();
    let (code, _, err) = env.tool("cutover", &[]).await;
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("refused") && err.contains("next"), "{err}");
    // Nothing changed: same primary, the file untouched, writes still work.
    assert_eq!(env.server.shared.config.load().primary, "legacy");
    let text = std::fs::read_to_string(env.cfg.as_ref().unwrap()).unwrap();
    assert!(text.contains("primary: legacy"));
    c.query_drop("INSERT INTO ev (w, seq) VALUES (1, 2)")
        .await
        .unwrap();
    relay.restore();
    env.wait_caught_up().await;
    assert_eq!(assert_same(&env.primary, &env.secondary, "ev").await, 2);
    c.disconnect().await.unwrap();
    env.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cutover_aborts_and_restores_when_it_cannot_finish_in_time() {
    let env = MirrorEnv::launch(
        "co_abort",
        MARIADB_PORT,
        "  cutover_timeout: 1s\n  cutover_max_lag: 1h\n",
        Some(""),
    )
    .await;
    setup(&env).await;
    let admin = env.server.admin_addr.unwrap();

    // 1. A transaction that stays open past the timeout.
    let mut open = env.proxy().await;
    open.query_drop("BEGIN").await.unwrap();
    open.query_drop("INSERT INTO ev (w, seq) VALUES (0, 1)")
        .await
        .unwrap();
    let other_addr = env.server.addr;
    let db = env.primary.clone();
    let fenced_writer = tokio::spawn(async move {
        // Arrives while the fence is closed: waits, then runs on legacy.
        tokio::time::sleep(Duration::from_millis(300)).await;
        let mut c = Conn::new(proxy_builder(other_addr, Some(&db)))
            .await
            .unwrap();
        let t = std::time::Instant::now();
        c.query_drop("INSERT INTO ev (w, seq) VALUES (1, 1)")
            .await
            .unwrap();
        let waited = t.elapsed();
        c.disconnect().await.unwrap();
        waited
    });
    let started = std::time::Instant::now();
    let (code, _, err) = env.tool("cutover", &["--to", "next"]).await;
    assert_eq!(code, 1, "{err}");
    assert!(
        err.contains("aborted") && err.contains("still open"),
        "{err}"
    );
    assert!(started.elapsed() < Duration::from_secs(10));
    let waited = fenced_writer.await.unwrap();
    assert!(
        waited >= Duration::from_millis(300),
        "the write waited at the fence ({waited:?})"
    );
    assert_eq!(env.server.shared.config.load().primary, "legacy");
    open.query_drop("COMMIT").await.unwrap();
    let d: String = open
        .query_first("SELECT DATABASE()")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(d, env.primary, "the session stayed on legacy");

    // 2. A drain that cannot finish: the secondary's row is locked, so the
    // applier waits.
    let mut blocker = Conn::new(direct_opts(&env.secondary)).await.unwrap();
    blocker.query_drop("BEGIN").await.unwrap();
    blocker
        .query_drop("SELECT * FROM ctr WHERE w = 3 FOR UPDATE")
        .await
        .unwrap();
    open.query_drop("UPDATE ctr SET n = n + 1 WHERE w = 3")
        .await
        .unwrap();
    let (code, _, body) = http(admin, "POST", "/cutover").await;
    assert_eq!(code, 409, "{body}");
    assert!(body.contains("did not drain"), "{body}");
    assert_eq!(env.server.shared.config.load().primary, "legacy");
    assert!(
        env.mirror().mirrors_to("next"),
        "the mirror still feeds next"
    );
    blocker.query_drop("ROLLBACK").await.unwrap();
    blocker.disconnect().await.unwrap();
    open.query_drop("UPDATE ctr SET n = n + 1 WHERE w = 3")
        .await
        .unwrap();
    env.wait_caught_up().await;
    assert_same(&env.primary, &env.secondary, "ev").await;
    assert_same(&env.primary, &env.secondary, "ctr").await;
    assert_eq!(
        count(&env.primary, "SELECT n FROM ctr WHERE w = 3").await,
        2
    );

    let v: serde_json::Value =
        serde_json::from_str(&http(admin, "GET", "/status").await.2).unwrap();
    let history = v["cutover"]["history"].as_array().unwrap();
    assert_eq!(history.len(), 2);
    assert!(history.iter().all(|h| h["ok"] == false));
    assert_eq!(v["cutover"]["state"], "idle");
    assert_eq!(v["cutover"]["fence_closed"], false);
    open.disconnect().await.unwrap();
    env.stop().await;
}

/// A raw client's prepared statement survives the move: the id it holds
/// stays valid, and an execute that relies on parameter types sent before
/// the cutover (new_params_bound_flag = 0) still gets them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prepared_statement_ids_and_types_survive_a_cutover() {
    use crate::common::raw::{default_caps, RawClient};
    use tandem::protocol::response::Expect;
    let env = MirrorEnv::launch("co_stmt", MARIADB_PORT, "", Some("")).await;
    let mut raw = RawClient::connect(
        ("127.0.0.1", env.server.addr.port()),
        USER,
        PASSWORD,
        Some(&env.primary),
        default_caps(true),
        "mysql_native_password",
    )
    .await
    .unwrap();
    let mut prep = vec![0x16];
    prep.extend_from_slice(b"SELECT CAST(? AS SIGNED) * 2 AS v, DATABASE() AS d");
    let ok = raw.command(&prep, Expect::Prepare).await;
    assert_eq!(ok[0][0], 0x00, "{ok:?}");
    let id = u32::from_le_bytes([ok[0][1], ok[0][2], ok[0][3], ok[0][4]]);
    let execute = |with_types: bool| {
        let mut p = vec![0x17];
        p.extend_from_slice(&id.to_le_bytes());
        p.extend_from_slice(&[0, 1, 0, 0, 0, 0]); // flags, iterations, null bitmap
        if with_types {
            p.extend_from_slice(&[1, 0x08, 0x00]); // LONGLONG, signed
        } else {
            p.push(0);
        }
        p.extend_from_slice(&21i64.to_le_bytes());
        p
    };
    let before = raw.command(&execute(true), Expect::ResultSet).await;
    let again = raw.command(&execute(false), Expect::ResultSet).await;
    assert_eq!(before, again);

    let (code, out, err) = env.tool("cutover", &[]).await;
    assert_eq!(code, 0, "{out}{err}");
    let after = raw.command(&execute(false), Expect::ResultSet).await;
    assert_ne!(after.last().unwrap()[0], 0xFF, "{after:?}");
    // Same value, the new primary's database.
    let row = |r: &Vec<Vec<u8>>| r[r.len() - 2].clone();
    let text = String::from_utf8_lossy(&row(&after)).into_owned();
    assert!(text.contains(&env.secondary), "{text:?}");
    assert_eq!(row(&before)[..10], row(&after)[..10], "v = 42 on both");

    // An id the client never got: Tandem's own ERR 1243, connection usable.
    let mut bogus = execute(true);
    bogus[1..5].copy_from_slice(&999u32.to_le_bytes());
    let e = raw.command(&bogus, Expect::ResultSet).await;
    assert_eq!(crate::common::raw::err_of(&e[0]).0, 1243);
    let q = raw.query("SELECT 1").await;
    assert_ne!(q[0][0], 0xFF);
    env.stop().await;
}

/// `LAST_INSERT_ID()` and `FOUND_ROWS()` answer after a session moved to
/// the new primary what they answered before it: the values are read on
/// the connection the session leaves and given to the new one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn last_insert_id_and_found_rows_survive_a_session_move() {
    let env = MirrorEnv::launch("co_lastid", MARIADB_PORT, "", Some("")).await;
    env.create_both("CREATE TABLE t (id INT AUTO_INCREMENT PRIMARY KEY, v INT)")
        .await;
    let mut c = env.proxy().await;
    c.query_drop("INSERT INTO t (v) VALUES (1), (2), (3), (4), (5)")
        .await
        .unwrap();
    c.query_drop("INSERT INTO t (v) VALUES (6)").await.unwrap();
    let _: Vec<i32> = c
        .query("SELECT SQL_CALC_FOUND_ROWS id FROM t ORDER BY id LIMIT 2")
        .await
        .unwrap();
    let (code, out, err) = env.tool("cutover", &[]).await;
    assert_eq!(code, 0, "{out}{err}");
    let got: Option<(u64, u64, String)> = c
        .query_first("SELECT LAST_INSERT_ID(), FOUND_ROWS(), DATABASE()")
        .await
        .unwrap();
    assert_eq!(
        got,
        Some((6, 6, env.secondary.clone())),
        "moved, with its values"
    );
    drop(c);
    env.stop().await;
}

/// After a cutover the roles survive a restart (the config says
/// `primary: next`, `secondary: next`; `roles.json` names the previous
/// primary), and a config reverted by hand while Tandem was down is refused
/// at start instead of splitting the brain.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn roles_survive_a_restart_and_a_contradicting_config_is_refused() {
    let env = MirrorEnv::launch("co_restart", MARIADB_PORT, "", Some("")).await;
    setup(&env).await;
    let file = env.cfg.clone().unwrap();
    let text = std::fs::read_to_string(&file).unwrap();
    std::fs::write(&file, text.replacen("primary: legacy", "primary: next", 1)).unwrap();
    wait_for_primary(&env, "next").await;
    let MirrorEnv {
        primary,
        secondary,
        dir,
        server,
        ..
    } = env;
    server.shutdown().await;

    let cfg = tandem::config::load_for_start(&file).expect("restart after the flip");
    assert_eq!(
        (cfg.primary.as_str(), cfg.secondary.as_deref()),
        ("next", Some("legacy"))
    );
    let server = tandem::server::start(cfg).await.expect("restarts");
    let mut c = Conn::new(proxy_builder(server.addr, Some(&primary)))
        .await
        .unwrap();
    c.query_drop("INSERT INTO ev (w, seq, note) VALUES (5, 1, 'after restart')")
        .await
        .unwrap();
    let d: String = c.query_first("SELECT DATABASE()").await.unwrap().unwrap();
    assert_eq!(d, secondary, "writes go to next");
    c.disconnect().await.unwrap();
    wait_caught_up(&server.shared.mirror.load_full().unwrap()).await;
    assert_eq!(
        count(&primary, "SELECT COUNT(*) FROM ev WHERE w = 5").await,
        1,
        "mirrored back to legacy"
    );
    server.shutdown().await;

    // Reverted by hand while stopped: refused, with both names.
    let text = std::fs::read_to_string(&file).unwrap();
    std::fs::write(&file, text.replacen("primary: next", "primary: legacy", 1)).unwrap();
    let err = tandem::config::load_for_start(&file)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("last cutover") && err.contains("\"next\""),
        "{err}"
    );
    drop(dir);
    drop_databases(&[&primary, &secondary]).await;
}

/// A session holding a named lock (GET_LOCK) holds the cutover like an
/// open transaction: the lock would exclude nobody on the other server.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_named_lock_holds_the_cutover_until_released() {
    let env = MirrorEnv::launch(
        "co_glock",
        MARIADB_PORT,
        "  cutover_timeout: 1s\n",
        Some(""),
    )
    .await;
    let mut c = env.proxy().await;
    let got: Option<i64> = c
        .query_first("SELECT GET_LOCK('tandem_job', 5)")
        .await
        .unwrap();
    assert_eq!(got, Some(1));
    let (code, _, err) = env.tool("cutover", &[]).await;
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("still open"), "{err}");
    let released: Option<i64> = c
        .query_first("SELECT RELEASE_LOCK('tandem_job')")
        .await
        .unwrap();
    assert_eq!(released, Some(1));
    let (code, out, err) = env.tool("cutover", &[]).await;
    assert_eq!(code, 0, "{out}{err}");
    let d: String = c.query_first("SELECT DATABASE()").await.unwrap().unwrap();
    assert_eq!(d, env.secondary, "moved once the lock was released");
    c.disconnect().await.unwrap();
    env.stop().await;
}

/// Statements that name their tables with a database name: either
/// migration database's name means the current primary's, before and
/// after a cutover, in plain queries and in prepared statements (prepared
/// again for the new primary), so such a write never lands in the other
/// database past the mirror; each row is on both sides exactly once. A
/// statement where the other name is also an alias is refused with a clear
/// error and runs nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn qualified_names_follow_the_primary_across_a_cutover() {
    let env = MirrorEnv::launch("co_qual", MARIADB_PORT, "", Some("")).await;
    env.create_both("CREATE TABLE q (id INT PRIMARY KEY, src VARCHAR(20)) ENGINE=InnoDB")
        .await;
    let (p, s) = (env.primary.clone(), env.secondary.clone());
    let mut c = env.proxy().await;
    // Before: the secondary's name is renamed to the primary's.
    c.query_drop(format!("INSERT INTO `{s}`.q VALUES (1, 'named secondary')"))
        .await
        .unwrap();
    c.query_drop(format!("INSERT INTO {p}.q VALUES (2, 'named primary')"))
        .await
        .unwrap();
    let ins = c
        .prep(format!("INSERT INTO {p}.q VALUES (?, 'prepared')"))
        .await
        .unwrap();
    c.exec_drop(&ins, (3,)).await.unwrap();
    let e = c
        .query_drop(format!(
            "UPDATE q AS {s} SET {s}.src = 'x' WHERE {s}.id = 1"
        ))
        .await
        .unwrap_err()
        .to_string();
    assert!(e.contains("cannot tell which to rename"), "{e}");

    let (code, out, err) = env.tool("cutover", &[]).await;
    assert_eq!(code, 0, "{out}{err}");
    // After: the old primary's name means the new primary's database.
    c.query_drop(format!("INSERT INTO {p}.q VALUES (4, 'named old primary')"))
        .await
        .unwrap();
    c.exec_drop(&ins, (5,)).await.unwrap();
    let db: String = c.query_first("SELECT DATABASE()").await.unwrap().unwrap();
    assert_eq!(db, s, "the session moved to the new primary");
    env.wait_caught_up().await;
    for side in [&p, &s] {
        let ids: Vec<i64> = Conn::new(direct_opts(side))
            .await
            .unwrap()
            .query("SELECT id FROM q ORDER BY id")
            .await
            .unwrap();
        assert_eq!(ids, vec![1, 2, 3, 4, 5], "rows in {side}");
    }
    assert_same(&p, &s, "q").await;
    assert_eq!(count(&s, "SELECT COUNT(*) FROM q WHERE src = 'x'").await, 0);
    drop(c);
    env.stop().await;
}

/// A cutover that gives up names the sessions it waited for: which
/// session, its user and address, what it holds and for how long.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cutover_that_gives_up_names_the_sessions_it_waited_for() {
    let env = MirrorEnv::launch(
        "co_holders",
        MARIADB_PORT,
        "  cutover_timeout: 1s\n",
        Some(""),
    )
    .await;
    env.create_both("CREATE TABLE t (id INT PRIMARY KEY) ENGINE=InnoDB")
        .await;
    let mut locker = env.proxy().await;
    let got: Option<i64> = locker
        .query_first("SELECT GET_LOCK('tandem_holders', 5)")
        .await
        .unwrap();
    assert_eq!(got, Some(1));
    let mut writer = env.proxy().await;
    writer.query_drop("BEGIN").await.unwrap();
    writer.query_drop("INSERT INTO t VALUES (1)").await.unwrap();
    let (code, _, err) = env.tool("cutover", &[]).await;
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("holds a named lock (GET_LOCK)"), "{err}");
    assert!(err.contains("is in a transaction"), "{err}");
    assert!(err.contains(&format!("({USER}@127.0.0.1:")), "{err}");
    writer.query_drop("ROLLBACK").await.unwrap();
    locker
        .query_drop("SELECT RELEASE_LOCK('tandem_holders')")
        .await
        .unwrap();
    drop((locker, writer));
    env.stop().await;
}

/// A session whose XA branch is prepared on the primary holds the fence
/// until its XA COMMIT (only its own connection can finish the branch): a
/// cutover waits for it and, given up, names it; the commit then lands on
/// the primary it was prepared on, and the next cutover goes through.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_prepared_xa_branch_holds_the_cutover_until_its_commit() {
    let env = MirrorEnv::launch(
        "co_xaheld",
        MARIADB_PORT,
        "  cutover_timeout: 1s\n",
        Some(""),
    )
    .await;
    env.create_both("CREATE TABLE t (id INT PRIMARY KEY) ENGINE=InnoDB")
        .await;
    env.create_both("INSERT INTO t VALUES (1)").await;
    // A branch a failed run of this test left prepared.
    let mut root = Conn::new(direct_opts(&env.primary)).await.unwrap();
    let _ = root.query_drop("XA ROLLBACK 'held'").await;
    drop(root);
    let mut c = env.proxy().await;
    // A branch that only locks (nothing for the mirror to hold it by).
    for q in [
        "XA START 'held'",
        "SELECT * FROM t WHERE id = 1 FOR UPDATE",
        "XA END 'held'",
        "XA PREPARE 'held'",
    ] {
        c.query_drop(q).await.unwrap();
    }
    let (code, _, err) = env.tool("cutover", &[]).await;
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("holds a prepared XA branch"), "{err}");
    c.query_drop("XA COMMIT 'held'").await.unwrap();
    // A failed XA COMMIT (an unknown xid) releases nothing it did not hold.
    assert!(c.query_drop("XA COMMIT 'nope'").await.is_err());
    let (code, out, err) = env.tool("cutover", &[]).await;
    assert_eq!(code, 0, "{out}{err}");
    // The session moves to the new primary for its next statement.
    let db: String = c.query_first("SELECT DATABASE()").await.unwrap().unwrap();
    assert_eq!(db, env.secondary);
    env.wait_caught_up().await;
    assert_eq!(assert_same(&env.primary, &env.secondary, "t").await, 1);
    drop(c);
    env.stop().await;
}

/// With a grace period (`tandem cutover --end-holders-after`), sessions
/// still holding the fence after it are ended: their backend connection
/// is killed (the server rolls their transaction back and frees their
/// locks) and their client is disconnected; the cutover then completes
/// and names them. Their uncommitted writes exist on neither side.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cutover_ends_sessions_still_holding_after_the_grace_period() {
    let env = MirrorEnv::launch(
        "co_endholders",
        MARIADB_PORT,
        "  cutover_timeout: 1s\n",
        Some(""),
    )
    .await;
    env.create_both("CREATE TABLE t (id INT PRIMARY KEY) ENGINE=InnoDB")
        .await;
    env.create_both("CREATE TABLE u (id INT PRIMARY KEY) ENGINE=InnoDB")
        .await;
    let (p, s) = (env.primary.clone(), env.secondary.clone());
    let mut locker = env.proxy().await;
    let got: Option<i64> = locker
        .query_first("SELECT GET_LOCK('tandem_endholders', 5)")
        .await
        .unwrap();
    assert_eq!(got, Some(1));
    let mut writer = env.proxy().await;
    writer.query_drop("BEGIN").await.unwrap();
    writer.query_drop("INSERT INTO t VALUES (1)").await.unwrap();
    let mut tables = env.proxy().await;
    tables.query_drop("LOCK TABLES u WRITE").await.unwrap();
    let mut committed = env.proxy().await;
    committed
        .query_drop("INSERT INTO t VALUES (2)")
        .await
        .unwrap();
    let (code, out, err) = env
        .tool(
            "cutover",
            &["--wait", "10s", "--end-holders-after", "300ms"],
        )
        .await;
    assert_eq!(code, 0, "{out}{err}");
    assert_eq!(
        out.matches("ended after the grace period").count(),
        3,
        "{out}"
    );
    assert!(out.contains("holds a named lock (GET_LOCK)"), "{out}");
    for (name, c) in [
        ("locker", &mut locker),
        ("writer", &mut writer),
        ("tables", &mut tables),
    ] {
        let r = c.query_drop("SELECT 1").await;
        assert!(r.is_err(), "{name}'s connection was closed");
    }
    // The lock is free on the old primary, the row never committed.
    let mut old = Conn::new(direct_opts(&p)).await.unwrap();
    let free: Option<i64> = old
        .query_first("SELECT IS_FREE_LOCK('tandem_endholders')")
        .await
        .unwrap();
    assert_eq!(free, Some(1));
    old.disconnect().await.unwrap();
    let mut c = env.proxy().await;
    c.query_drop("INSERT INTO t VALUES (3)").await.unwrap();
    for db in [&p, &s] {
        let ids: Vec<i32> = Conn::new(direct_opts(db))
            .await
            .unwrap()
            .query("SELECT id FROM t ORDER BY id")
            .await
            .unwrap();
        if db == &s {
            assert_eq!(ids, vec![2, 3], "the new primary has the new write");
        } else {
            assert_eq!(ids[0], 2, "the ended transaction's row is on neither side");
        }
    }
    drop((c, committed));
    env.stop().await;
}

/// Events created through Tandem were refused while mirroring. Now they
/// reach the secondary disabled there (`DISABLE ON SLAVE`: they must not
/// run on both servers), and a cutover moves them with the primary:
/// enabled on the new one, disabled the same way on the old one. A
/// disabled event stays disabled on both; one created directly on the
/// primary only is left running there and named in the report.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scheduled_events_are_mirrored_disabled_and_move_with_the_primary() {
    let env = MirrorEnv::launch("co_events", MARIADB_PORT, "", Some("")).await;
    env.create_both("CREATE TABLE t (id INT PRIMARY KEY, n INT)")
        .await;
    let (p, s) = (env.primary.clone(), env.secondary.clone());
    let mut c = env.proxy().await;
    // Far in the future: they never fire during the test.
    for sql in [
        "CREATE EVENT tick ON SCHEDULE EVERY 1 DAY STARTS '2030-01-01 00:00:00' DO UPDATE t SET n = n + 1",
        "CREATE EVENT tock ON SCHEDULE EVERY 1 DAY STARTS '2030-01-01' ENABLE COMMENT 'do' DO UPDATE t SET n = n + 2",
        "CREATE EVENT off ON SCHEDULE EVERY 1 DAY STARTS '2030-01-01' DISABLE DO DELETE FROM t",
    ] {
        c.query_drop(sql).await.unwrap();
    }
    Conn::new(direct_opts(&p))
        .await
        .unwrap()
        .query_drop(
            "CREATE EVENT only_here ON SCHEDULE EVERY 1 DAY STARTS '2030-01-01' DO DELETE FROM t",
        )
        .await
        .unwrap();
    env.wait_caught_up().await;
    let statuses = |db: String| async move {
        let mut d = Conn::new(direct_opts(&db)).await.unwrap();
        let v: Vec<(String, String)> = d
            .query("SELECT EVENT_NAME, STATUS FROM information_schema.EVENTS WHERE EVENT_SCHEMA = DATABASE() ORDER BY 1")
            .await
            .unwrap();
        d.disconnect().await.unwrap();
        v.into_iter()
            .map(|(e, st)| format!("{e}:{st}"))
            .collect::<Vec<_>>()
    };
    assert_eq!(
        statuses(p.clone()).await,
        [
            "off:DISABLED",
            "only_here:ENABLED",
            "tick:ENABLED",
            "tock:ENABLED"
        ]
    );
    assert_eq!(
        statuses(s.clone()).await,
        [
            "off:DISABLED",
            "tick:SLAVESIDE_DISABLED",
            "tock:SLAVESIDE_DISABLED"
        ]
    );

    let (code, out, err) = env.tool("cutover", &[]).await;
    assert_eq!(code, 0, "{out}{err}");
    assert_eq!(
        statuses(s.clone()).await,
        ["off:DISABLED", "tick:ENABLED", "tock:ENABLED"]
    );
    assert_eq!(
        statuses(p.clone()).await,
        [
            "off:DISABLED",
            "only_here:ENABLED",
            "tick:SLAVESIDE_DISABLED",
            "tock:SLAVESIDE_DISABLED"
        ]
    );
    let status = env.server.shared.cutover.status_json().to_string();
    assert!(
        status.contains(r#""events_moved":["tick","tock"]"#)
            && status.contains(r#""events_left":["only_here"]"#),
        "{status}"
    );
    // Rollback moves them back.
    let (code, out, err) = env.tool("cutover", &[]).await;
    assert_eq!(code, 0, "{out}{err}");
    assert_eq!(
        statuses(p.clone()).await,
        [
            "off:DISABLED",
            "only_here:ENABLED",
            "tick:ENABLED",
            "tock:ENABLED"
        ]
    );
    assert_eq!(
        statuses(s.clone()).await,
        [
            "off:DISABLED",
            "tick:SLAVESIDE_DISABLED",
            "tock:SLAVESIDE_DISABLED"
        ]
    );
    drop(c);
    env.stop().await;
}

/// The CLI reads the admin token from the same config: `tandem cutover`
/// and `tandem verify` (which asks the running mirror where it stands)
/// work against a server that requires it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cli_sends_the_admin_token_from_the_config() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("admin.token");
    std::fs::write(&file, "cli-token-42\n").unwrap();
    let env =
        MirrorEnv::start_with_admin("co_token", &format!("admin_token_file: {}", file.display()))
            .await;
    env.create_both("CREATE TABLE t (id INT PRIMARY KEY)").await;
    let mut c = env.proxy().await;
    c.query_drop("INSERT INTO t VALUES (1)").await.unwrap();
    let (code, out, err) = env.tool("verify", &[]).await;
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        out.contains("settled with the running mirror"),
        "verify did not reach the mirror: {out}{err}"
    );
    let (code, out, err) = env.tool("cutover", &[]).await;
    assert_eq!(code, 0, "{out}{err}");
    assert_eq!(env.server.shared.config.load().primary, "next");
    drop(c);
    env.stop().await;
}

/// A transaction that commits while the cutover waits for it and is then
/// refused by the target (dead-lettered: a row someone wrote there
/// directly) is not on the target: the cutover aborts after its drain,
/// names the table, and the old primary stays.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_transaction_dead_lettered_during_the_cutover_aborts_it() {
    let env = MirrorEnv::launch("co_dead", MARIADB_PORT, "", Some("")).await;
    env.create_both("CREATE TABLE t (id INT PRIMARY KEY, v INT) ENGINE=InnoDB")
        .await;
    let mut s = Conn::new(direct_opts(&env.secondary)).await.unwrap();
    s.query_drop("INSERT INTO t VALUES (1, -1)").await.unwrap();
    let mut writer = env.proxy().await;
    writer.query_drop("BEGIN").await.unwrap();
    writer
        .query_drop("INSERT INTO t VALUES (1, 1)")
        .await
        .unwrap();
    let cutover = env.cutover_waiting(&["--wait", "20s"]).await;
    writer.query_drop("COMMIT").await.unwrap();
    let (code, out, err) = cutover.await.unwrap();
    assert_eq!(code, 1, "{out}{err}");
    assert!(
        err.contains("marked divergent during the cutover") && err.contains("t (dead-lettered"),
        "{err}"
    );
    assert_eq!(env.server.shared.config.load().primary, "legacy");
    // The session goes on on the old primary, where its row is.
    let v: Option<i64> = writer
        .query_first("SELECT v FROM t WHERE id = 1")
        .await
        .unwrap();
    assert_eq!(v, Some(1));
    writer.disconnect().await.unwrap();
    s.disconnect().await.unwrap();
    env.stop().await;
}
