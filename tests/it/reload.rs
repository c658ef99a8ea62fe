//! Hot reload: bad edits are rejected whole while traffic flows; good edits
//! (users, rules, pools) apply without dropping connections; file changes,
//! POST /reload and SIGHUP all go through the same path.

use crate::common::*;
use mysql_async::prelude::*;
use mysql_async::Conn;
use std::path::Path;
use std::time::Duration;

/// Admin call with a JSON answer (Null when the body is not JSON).
async fn call(addr: std::net::SocketAddr, method: &str, path: &str) -> (u16, serde_json::Value) {
    let (code, _, body) = http(addr, method, path).await;
    (
        code,
        serde_json::from_str(&body).unwrap_or(serde_json::Value::Null),
    )
}

fn config_text(
    db: &str,
    listen: &str,
    admin: &str,
    rules: &Path,
    extra_user: bool,
    pool: usize,
) -> String {
    let user = if extra_user {
        "  - { name: late, password: late-pw }\n"
    } else {
        ""
    };
    format!(
        "listen: {listen}\nadmin: {admin}\nusers:\n  - {{ name: {USER}, password: {PASSWORD} }}\n{user}backends:\n  legacy: {{ kind: mysql, url: \"mysql://root@127.0.0.1:{MARIADB_PORT}/{db}\", pool: {pool} }}\nmigration: {{ primary: legacy }}\nrules: {}\n",
        rules.display()
    )
}

/// Writes like an editor: to a temp file, then renamed over the original.
fn save(path: &Path, text: &str) {
    let tmp = path.with_extension("tmp~");
    std::fs::write(&tmp, text).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

/// One write on the long-lived client connection.
async fn traffic(c: &mut Conn, n: &mut i32) {
    *n += 1;
    c.query_drop(format!("INSERT INTO orders VALUES ({n})"))
        .await
        .unwrap();
}

async fn login(
    addr: std::net::SocketAddr,
    user: &str,
    pass: &str,
) -> Result<Conn, mysql_async::Error> {
    Conn::new(proxy_builder(addr, None).user(Some(user)).pass(Some(pass))).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reload_rejects_bad_edits_and_applies_good_ones_without_dropping_clients() {
    init_logging();
    let env = TestEnv::start("reload_api").await; // creates the database
    let db = env.db.clone();
    let dir = tempfile::tempdir().unwrap();
    let rules = dir.path().join("rules");
    std::fs::create_dir(&rules).unwrap();
    std::fs::write(rules.join("t.yaml"), "tables: { orders: {} }\n").unwrap();
    let path = dir.path().join("tandem.yaml");
    std::fs::write(
        &path,
        config_text(&db, "127.0.0.1:0", "127.0.0.1:0", &rules, false, 8),
    )
    .unwrap();
    let server = tandem::server::start(tandem::config::load(&path).unwrap())
        .await
        .unwrap();
    let (addr, admin) = (server.addr, server.admin_addr.unwrap());
    let shared = server.shared.clone();

    let mut client = Conn::new(proxy_builder(addr, Some(&db))).await.unwrap();
    client
        .query_drop("CREATE TABLE orders (id INT PRIMARY KEY)")
        .await
        .unwrap();
    let mut n = 0;
    traffic(&mut client, &mut n).await;

    // 1. Syntax error: rejected, running config stays, error visible.
    save(&path, "listen: [unclosed\n");
    let (code, body) = call(admin, "POST", "/reload").await;
    assert_eq!(code, 422, "{body}");
    assert!(
        body["errors"][0].as_str().unwrap().starts_with("config:"),
        "{body}"
    );
    traffic(&mut client, &mut n).await;
    let (_, status) = call(admin, "GET", "/status").await;
    assert_eq!(status["config"]["last_reload"]["ok"], false);
    assert_eq!(status["config"]["version"], 1);

    // 2. Settings that cannot change live are named; nothing half-applies.
    save(
        &path,
        &config_text(&db, "127.0.0.1:1", "127.0.0.1:0", &rules, true, 8),
    );
    let (code, body) = call(admin, "POST", "/reload").await;
    assert_eq!(code, 422);
    let errors = body["errors"].to_string();
    assert!(errors.contains("listen: cannot change"), "{errors}");
    assert!(
        login(addr, "late", "late-pw").await.is_err(),
        "the user part was not applied either"
    );
    traffic(&mut client, &mut n).await;

    // 3. A good edit through the file watcher: new user, smaller pool.
    save(
        &path,
        &config_text(&db, "127.0.0.1:0", "127.0.0.1:0", &rules, true, 4),
    );
    let mut late = None;
    for _ in 0..100 {
        if let Ok(c) = login(addr, "late", "late-pw").await {
            late = Some(c);
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let late = late.expect("the watcher applied the new user");
    late.disconnect().await.unwrap();
    assert_eq!(shared.config.load().backends["legacy"].pool, 4);
    traffic(&mut client, &mut n).await;

    // 4. Rules edit applies without dropping the connection.
    std::fs::write(
        rules.join("t.yaml"),
        "tables: { orders: { mirror: false } }\n",
    )
    .unwrap();
    for _ in 0..100 {
        if !shared.config.load().rules.mirrored("orders") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(!shared.config.load().rules.mirrored("orders"));
    // A bad rules file is rejected like a bad config.
    std::fs::write(rules.join("bad.yaml"), "tables: { x: { mirorr: true } }\n").unwrap();
    let (code, body) = call(admin, "POST", "/reload").await;
    assert_eq!(code, 422);
    assert!(body["errors"].to_string().contains("bad.yaml"), "{body}");
    std::fs::remove_file(rules.join("bad.yaml")).unwrap();

    traffic(&mut client, &mut n).await;
    let count: Option<i64> = client
        .query_first("SELECT COUNT(*) FROM orders")
        .await
        .unwrap();
    assert_eq!(
        count,
        Some(n as i64),
        "every write through the reloads succeeded on one connection"
    );
    let (_, _, metrics) = http(admin, "GET", "/metrics").await;
    let failed: f64 = metrics
        .lines()
        .find_map(|l| l.strip_prefix("tandem_config_reloads_failed_total "))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("{metrics}"));
    // Three rejected via the API; the watcher may have rejected the same
    // bad saves too.
    assert!(failed >= 3.0, "{metrics}");
    client.disconnect().await.unwrap();
    server.shutdown().await;
    env.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_reloads_the_binary() {
    let env = TestEnv::start("reload_hup").await;
    let dir = tempfile::tempdir().unwrap();
    let rules = dir.path().join("rules");
    std::fs::create_dir(&rules).unwrap();
    let (listen, admin) = (free_addr(), free_addr());
    let path = dir.path().join("tandem.yaml");
    std::fs::write(
        &path,
        config_text(
            &env.db,
            &listen.to_string(),
            &admin.to_string(),
            &rules,
            false,
            4,
        ),
    )
    .unwrap();
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_tandem"))
        .args(["serve", "--config"])
        .arg(&path)
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    wait_listening(admin).await;
    let pid = child.id().to_string();
    let hup = std::process::Command::new("kill")
        .args(["-HUP", &pid])
        .status()
        .unwrap();
    assert!(hup.success());
    let mut trigger = serde_json::Value::Null;
    for _ in 0..100 {
        let (_, status) = call(admin, "GET", "/status").await;
        trigger = status["config"]["last_reload"]["trigger"].clone();
        if trigger == "signal" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(trigger, "signal");
    // Still serving after the signal.
    let c = Conn::new(proxy_builder(listen, Some(&env.db)))
        .await
        .unwrap();
    c.disconnect().await.unwrap();
    let _ = child.kill();
    let _ = child.wait();
    env.stop().await;
}

/// Other files in the config's directory (a log written beside it, which
/// every reload's own log line would change again) do not trigger reloads;
/// an edit of the config still does.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn files_beside_the_config_do_not_trigger_reloads() {
    init_logging();
    let env = TestEnv::start("reload_beside").await;
    let dir = tempfile::tempdir().unwrap();
    let rules = dir.path().join("rules");
    std::fs::create_dir(&rules).unwrap();
    let path = dir.path().join("tandem.yaml");
    std::fs::write(
        &path,
        config_text(&env.db, "127.0.0.1:0", "127.0.0.1:0", &rules, false, 8),
    )
    .unwrap();
    let server = tandem::server::start(tandem::config::load(&path).unwrap())
        .await
        .unwrap();
    let shared = server.shared.clone();
    // Let the watcher settle, then write a "log" beside the config and a
    // non-rules file in the rules directory for a while.
    tokio::time::sleep(Duration::from_millis(400)).await;
    let log = dir.path().join("tandem.log");
    for i in 0..12 {
        std::fs::write(&log, format!("line {i}\n")).unwrap();
        std::fs::write(rules.join("notes.txt"), format!("{i}")).unwrap();
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert!(
        shared.last_reload.lock().unwrap().is_none(),
        "reloaded: {:?}",
        shared.last_reload.lock().unwrap()
    );
    // A real edit still reloads.
    save(
        &path,
        &config_text(&env.db, "127.0.0.1:0", "127.0.0.1:0", &rules, false, 4),
    );
    // The config is published before the reload's status is recorded:
    // wait for both.
    for _ in 0..100 {
        if shared.config.load().backends["legacy"].pool == 4
            && shared.last_reload.lock().unwrap().is_some()
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(shared.config.load().backends["legacy"].pool, 4);
    let last = shared.last_reload.lock().unwrap().clone().unwrap();
    assert_eq!((last.trigger, last.ok), ("file", true));
    server.shutdown().await;
    env.stop().await;
}
