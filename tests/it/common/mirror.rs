//! Helpers for dual-write tests: a Tandem mirroring one MariaDB database to
//! another, catch-up waits and row-for-row comparison.

use super::*;
use mysql_async::prelude::*;
use mysql_async::{Conn, Row, Value};
use std::sync::Arc;
use std::time::Duration;
use tandem::mirror::runtime::Mirror;
use tandem::server::RunningServer;

pub struct MirrorEnv {
    pub primary: String,
    pub secondary: String,
    /// The port of the server that holds the secondary database.
    pub secondary_port: u16,
    /// The port of the server that holds the primary database.
    pub primary_port: u16,
    pub dir: tempfile::TempDir,
    pub server: RunningServer,
    /// The config file, when started from one (`start_with_admin`).
    pub cfg: Option<std::path::PathBuf>,
}

/// YAML for a mirroring Tandem (listen on an ephemeral port unless given).
pub fn mirror_yaml(
    primary: &str,
    secondary: &str,
    secondary_port: u16,
    journal: &std::path::Path,
    rules: &std::path::Path,
    migration_extra: &str,
) -> String {
    format!(
        r#"
listen: 127.0.0.1:0
users:
  - name: {USER}
    password: {PASSWORD}
backends:
  legacy:
    kind: mysql
    url: mysql://root@{MARIADB_HOST}:{MARIADB_PORT}/{primary}
  next:
    kind: mysql
    url: mysql://root@{MARIADB_HOST}:{secondary_port}/{secondary}
migration:
  primary: legacy
  secondary: next
  journal: {}
{migration_extra}
rules: {}
"#,
        journal.display(),
        rules.display()
    )
}

impl MirrorEnv {
    /// `migration_extra`: more keys of the `migration:` block, indented.
    pub async fn start(name: &str, migration_extra: &str) -> Self {
        Self::start_via(name, MARIADB_PORT, migration_extra).await
    }

    /// Mirrors to the secondary through `secondary_port` (e.g. a relay).
    pub async fn start_via(name: &str, secondary_port: u16, migration_extra: &str) -> Self {
        Self::launch(name, secondary_port, migration_extra, None).await
    }

    /// Started from a config file that also has an admin address (and
    /// `top_extra`, top-level keys), so `tandem verify` / `tandem backfill`
    /// run with that file find the running mirror.
    pub async fn start_with_admin(name: &str, top_extra: &str) -> Self {
        Self::launch(name, MARIADB_PORT, "", Some(top_extra)).await
    }

    /// Mirrors to a secondary database on another server (the test's own
    /// `mariadbd`), with an admin address like `start_with_admin`.
    pub async fn start_on(name: &str, server: &super::server::OwnServer, top_extra: &str) -> Self {
        let mut root = Conn::new(server.opts("mysql")).await.unwrap();
        root.query_drop(format!(
            "CREATE DATABASE IF NOT EXISTS `tandem_m_{name}_next`"
        ))
        .await
        .unwrap();
        root.disconnect().await.unwrap();
        Self::launch_full(name, server.port, server.port, "", Some(top_extra)).await
    }

    /// Mirrors from a primary database on the test's own `mariadbd` (its
    /// settings are the point) to one on the local server.
    pub async fn start_from(
        name: &str,
        server: &super::server::OwnServer,
        migration_extra: &str,
    ) -> Self {
        let mut root = Conn::new(server.opts("mysql")).await.unwrap();
        root.query_drop(format!("CREATE DATABASE IF NOT EXISTS `tandem_m_{name}`"))
            .await
            .unwrap();
        root.disconnect().await.unwrap();
        let mut env = Self::launch_inner(
            name,
            server.port,
            MARIADB_PORT,
            MARIADB_PORT,
            migration_extra,
            None,
        )
        .await;
        env.primary_port = server.port;
        env
    }

    pub async fn launch(
        name: &str,
        secondary_port: u16,
        migration_extra: &str,
        admin_file: Option<&str>,
    ) -> Self {
        Self::launch_full(
            name,
            secondary_port,
            MARIADB_PORT,
            migration_extra,
            admin_file,
        )
        .await
    }

    /// `secondary_port`: where Tandem reaches the secondary (maybe a
    /// relay); `secondary_server`: the server that holds its database.
    pub async fn launch_full(
        name: &str,
        secondary_port: u16,
        secondary_server: u16,
        migration_extra: &str,
        admin_file: Option<&str>,
    ) -> Self {
        Self::launch_inner(
            name,
            MARIADB_PORT,
            secondary_port,
            secondary_server,
            migration_extra,
            admin_file,
        )
        .await
    }

    async fn launch_inner(
        name: &str,
        primary_server: u16,
        secondary_port: u16,
        secondary_server: u16,
        migration_extra: &str,
        admin_file: Option<&str>,
    ) -> Self {
        init_logging();
        let primary = format!("tandem_m_{name}");
        let secondary = format!("tandem_m_{name}_next");
        if primary_server == MARIADB_PORT {
            fresh_database(&primary).await;
        }
        if secondary_server == MARIADB_PORT {
            fresh_database(&secondary).await;
        }
        let dir = tempfile::tempdir().unwrap();
        let yaml = mirror_yaml(
            &primary,
            &secondary,
            secondary_port,
            &dir.path().join("journal"),
            &dir.path().join("rules"),
            migration_extra,
        )
        .replace(
            &format!("{MARIADB_HOST}:{MARIADB_PORT}/{primary}\n"),
            &format!("{MARIADB_HOST}:{primary_server}/{primary}\n"),
        );
        let (cfg, file) = match admin_file {
            None => (tandem::config::parse(&yaml), None),
            Some(top) => {
                let file = dir.path().join("tandem.yaml");
                std::fs::write(&file, format!("admin: {}\n{top}{yaml}", free_addr())).unwrap();
                (tandem::config::load(&file), Some(file))
            }
        };
        let cfg = cfg.expect("test config is valid");
        let server = tandem::server::start(cfg).await.expect("tandem starts");
        Self {
            primary,
            secondary,
            secondary_port: secondary_server,
            primary_port: primary_server,
            dir,
            server,
            cfg: file,
        }
    }

    /// Runs `tandem <command>` with this env's config file, off the async
    /// threads: (exit code, stdout, stderr).
    pub async fn tool(&self, command: &'static str, args: &[&str]) -> (i32, String, String) {
        let cfg = self.cfg.clone().expect("started with start_with_admin");
        let args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
        tokio::task::spawn_blocking(move || {
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            tandem_tool(command, &cfg, &args)
        })
        .await
        .unwrap()
    }

    /// Transactions the applier dead-lettered so far.
    pub fn dead_lettered(&self) -> u64 {
        self.mirror()
            .applier
            .dead_lettered
            .load(std::sync::atomic::Ordering::Relaxed)
    }

    pub fn mirror(&self) -> Arc<Mirror> {
        self.server.shared.mirror.load_full().expect("mirroring")
    }

    pub async fn proxy(&self) -> Conn {
        Conn::new(proxy_builder(self.server.addr, Some(&self.primary)))
            .await
            .expect("connect through tandem")
    }

    /// Runs `ddl` (or any statement) directly on both sides, e.g. creating
    /// a table as a backfill would have.
    pub async fn create_both(&self, ddl: &str) {
        for (port, db) in [
            (self.primary_port, &self.primary),
            (self.secondary_port, &self.secondary),
        ] {
            let mut c = Conn::new(direct_opts_at(port, db)).await.unwrap();
            c.query_drop(ddl).await.unwrap();
            c.disconnect().await.unwrap();
        }
    }

    pub async fn wait_caught_up(&self) {
        wait_caught_up(&self.mirror()).await
    }

    /// Starts `tandem cutover <args>` (off the async threads) and returns
    /// once the cutover waits for open transactions (panics if it never
    /// does): its (exit code, stdout, stderr) come from the handle.
    pub async fn cutover_waiting(
        &self,
        args: &'static [&'static str],
    ) -> tokio::task::JoinHandle<(i32, String, String)> {
        let cfg = self.cfg.clone().expect("started with an admin address");
        let cutover = tokio::task::spawn_blocking(move || tandem_tool("cutover", &cfg, args));
        for _ in 0..500 {
            if self.server.shared.cutover.status_json()["state"] == "wait_transactions" {
                return cutover;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("the cutover never waited for open transactions");
    }

    /// `assert_same` for this env's two servers.
    pub async fn assert_same(&self, table: &str) -> usize {
        let a = rows_at(self.primary_port, &self.primary, table).await;
        let b = rows_at(self.secondary_port, &self.secondary, table).await;
        same_rows(table, a, b)
    }

    pub async fn stop(self) {
        self.server.shutdown().await;
        drop_databases(&[&self.primary, &self.secondary]).await;
    }
}

/// Waits until everything journaled has been applied (or panics after 60 s).
pub async fn wait_caught_up(m: &Mirror) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        let (behind, _) = m.lag();
        if behind == 0 {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "mirror did not catch up: {behind} LSNs behind"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// All rows of `table` ordered by its first column, as comparable values.
pub async fn rows(db: &str, table: &str) -> Vec<Vec<Value>> {
    rows_at(MARIADB_PORT, db, table).await
}

/// `rows` on the server at `port`, read in UTC (TIMESTAMP columns compare
/// as the instants they are, whatever the servers' zones).
pub async fn rows_at(port: u16, db: &str, table: &str) -> Vec<Vec<Value>> {
    let mut c = Conn::new(direct_opts_at(port, db)).await.unwrap();
    c.query_drop("SET time_zone = '+00:00'").await.unwrap();
    let rows: Vec<Row> = c
        .query(format!("SELECT * FROM `{table}` ORDER BY 1"))
        .await
        .unwrap();
    c.disconnect().await.unwrap();
    rows.into_iter().map(|r| r.unwrap()).collect()
}

/// Asserts both sides hold the same rows; returns the row count.
pub async fn assert_same(env_primary: &str, env_secondary: &str, table: &str) -> usize {
    let a = rows(env_primary, table).await;
    let b = rows(env_secondary, table).await;
    same_rows(table, a, b)
}

fn same_rows(table: &str, a: Vec<Vec<Value>>, b: Vec<Vec<Value>>) -> usize {
    if a != b {
        let only_a: Vec<_> = a.iter().filter(|r| !b.contains(r)).take(5).collect();
        let only_b: Vec<_> = b.iter().filter(|r| !a.contains(r)).take(5).collect();
        panic!(
            "{table}: primary {} rows, secondary {} rows\nonly on primary: {only_a:?}\nonly on secondary: {only_b:?}",
            a.len(),
            b.len()
        );
    }
    a.len()
}

/// Tables the randomized workload writes.
pub const WORKLOAD_TABLES: &[&str] = &["acct", "child", "kv"];

pub const WORKLOAD_SCHEMA: &[&str] = &[
    "CREATE TABLE acct (
        id BIGINT AUTO_INCREMENT PRIMARY KEY,
        x INT NOT NULL DEFAULT 0,
        u CHAR(36) NULL,
        r DOUBLE NULL,
        t DATETIME(6) NULL,
        created TIMESTAMP(6) NOT NULL DEFAULT CURRENT_TIMESTAMP(6),
        updated TIMESTAMP(6) NOT NULL DEFAULT CURRENT_TIMESTAMP(6) ON UPDATE CURRENT_TIMESTAMP(6)
    ) ENGINE=InnoDB",
    "CREATE TABLE child (
        id BIGINT AUTO_INCREMENT PRIMARY KEY,
        parent BIGINT NOT NULL,
        note VARCHAR(40) NOT NULL
    ) ENGINE=InnoDB",
    "CREATE TABLE kv (
        k INT PRIMARY KEY,
        v INT NOT NULL,
        hits INT NOT NULL DEFAULT 1,
        at TIMESTAMP(6) NOT NULL DEFAULT CURRENT_TIMESTAMP(6) ON UPDATE CURRENT_TIMESTAMP(6)
    ) ENGINE=InnoDB",
];

#[derive(Debug, Default, Clone, Copy)]
pub struct WorkloadReport {
    pub committed: u64,
    pub rolled_back: u64,
    /// Statements or commits the server refused (deadlocks, duplicates).
    pub failed: u64,
    /// Connections lost (Tandem restarted under the workload).
    pub disconnects: u64,
}

/// Runs `txns` transactions on each of `conns` connections through Tandem at
/// `addr`: autocommit and explicit, single- and multi-row auto-increment
/// inserts, x = x + 1 updates, deletes, upserts, REPLACE, NOW(6), UUID(),
/// RAND(), timestamp defaults, LAST_INSERT_ID(), 20 % rollbacks, savepoints
/// and server-side prepared statements. With `reconnect`, lost connections
/// are re-opened (for restarts under load) for up to a minute.
pub async fn run_workload(
    addr: std::net::SocketAddr,
    db: &str,
    conns: usize,
    txns: usize,
    seed: u64,
    reconnect: bool,
) -> WorkloadReport {
    let mut tasks = Vec::new();
    for i in 0..conns {
        let db = db.to_string();
        tasks.push(tokio::spawn(async move {
            worker(
                addr,
                &db,
                txns,
                seed.wrapping_add(i as u64 * 7919),
                reconnect,
            )
            .await
        }));
    }
    let mut total = WorkloadReport::default();
    for t in tasks {
        let r = t.await.unwrap();
        total.committed += r.committed;
        total.rolled_back += r.rolled_back;
        total.failed += r.failed;
        total.disconnects += r.disconnects;
    }
    total
}

pub async fn connect(addr: std::net::SocketAddr, db: &str, reconnect: bool) -> Conn {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        match Conn::new(proxy_builder(addr, Some(db))).await {
            Ok(c) => return c,
            Err(e) if reconnect && tokio::time::Instant::now() < deadline => {
                let _ = e;
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(e) => panic!("connect through tandem: {e}"),
        }
    }
}

pub fn is_disconnect(e: &mysql_async::Error) -> bool {
    !matches!(e, mysql_async::Error::Server(_))
}

async fn worker(
    addr: std::net::SocketAddr,
    db: &str,
    txns: usize,
    seed: u64,
    reconnect: bool,
) -> WorkloadReport {
    use rand::SeedableRng;
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let mut report = WorkloadReport::default();
    let mut c = connect(addr, db, reconnect).await;
    let mut done = 0;
    while done < txns {
        done += 1;
        let r = one_txn(&mut c, &mut rng).await;
        match r {
            Ok(true) => report.committed += 1,
            Ok(false) => report.rolled_back += 1,
            Err(e) if is_disconnect(&e) && reconnect => {
                report.disconnects += 1;
                c = connect(addr, db, reconnect).await;
            }
            Err(e) if is_disconnect(&e) => panic!("connection lost: {e}"),
            Err(_) => {
                report.failed += 1;
                // Leave no transaction open after a failed statement.
                if let Err(e) = c.query_drop("ROLLBACK").await {
                    if reconnect && is_disconnect(&e) {
                        report.disconnects += 1;
                        c = connect(addr, db, reconnect).await;
                    }
                }
            }
        }
    }
    let _ = c.disconnect().await;
    report
}

/// One transaction; Ok(true) committed, Ok(false) rolled back.
pub async fn one_txn(
    c: &mut Conn,
    rng: &mut rand::rngs::StdRng,
) -> Result<bool, mysql_async::Error> {
    one_txn_over(c, rng, 400, 200).await
}

/// `one_txn` on `acct` ids below `ids` and `kv` keys below `keys`.
pub async fn one_txn_over(
    c: &mut Conn,
    rng: &mut rand::rngs::StdRng,
    ids: u64,
    keys: u32,
) -> Result<bool, mysql_async::Error> {
    use rand::Rng;
    let id = rng.random_range(1..ids);
    let k = rng.random_range(1..keys);
    match rng.random_range(0..100u32) {
        0..=14 => {
            c.query_drop("INSERT INTO acct (x, u, r, t) VALUES (1, UUID(), RAND(), NOW(6))")
                .await?;
            c.query_drop("INSERT INTO child (parent, note) VALUES (LAST_INSERT_ID(), 'auto')")
                .await?;
        }
        15..=22 => {
            c.query_drop(
                "INSERT INTO acct (x, t) VALUES (2, NOW(6)), (3, CURRENT_TIMESTAMP(6)), (4, UTC_TIMESTAMP(6))",
            )
            .await?;
        }
        23..=30 => {
            c.query_drop(format!("UPDATE acct SET x = x + 1 WHERE id = {id}"))
                .await?;
        }
        31..=37 => {
            // Not commutative: the secondary only ends equal if it applied
            // the updates of each row in the primary's order.
            let step = rng.random_range(1..1000u32);
            c.query_drop(format!(
                "UPDATE acct SET x = (x * 3 + {step}) % 1000003 WHERE id = {id}"
            ))
            .await?;
            c.query_drop(format!(
                "UPDATE kv SET v = (v * 7 + {step}) % 1000003 WHERE k = {k}"
            ))
            .await?;
        }
        38..=42 => {
            c.query_drop(format!("DELETE FROM acct WHERE id = {id}"))
                .await?;
        }
        43..=52 => {
            c.query_drop(format!(
                "INSERT INTO kv (k, v) VALUES ({k}, 1) ON DUPLICATE KEY UPDATE v = v + 1, hits = hits + 1"
            ))
            .await?;
        }
        53..=57 => {
            c.query_drop(format!("REPLACE INTO kv (k, v) VALUES ({k}, {})", k * 10))
                .await?;
        }
        58..=67 => {
            let p = c
                .prep("UPDATE acct SET x = x + ?, r = ? WHERE id = ?")
                .await?;
            c.exec_drop(&p, (2, rng.random::<f64>(), id)).await?;
            let p = c
                .prep("INSERT INTO child (parent, note) VALUES (?, ?)")
                .await?;
            c.exec_drop(&p, (id, format!("p'{k}\\"))).await?;
        }
        _ => {
            // Explicit transaction, 20 % rolled back, sometimes a savepoint.
            c.query_drop("BEGIN").await?;
            c.query_drop(format!("UPDATE acct SET x = x + 1 WHERE id = {id}"))
                .await?;
            c.query_drop("INSERT INTO acct (x, u) VALUES (10, UUID())")
                .await?;
            if rng.random_bool(0.3) {
                c.query_drop("SAVEPOINT s1").await?;
                c.query_drop(format!(
                    "INSERT INTO kv (k, v) VALUES ({k}, 7) ON DUPLICATE KEY UPDATE v = v * 2"
                ))
                .await?;
                if rng.random_bool(0.5) {
                    c.query_drop("ROLLBACK TO SAVEPOINT s1").await?;
                }
            }
            let p = c
                .prep("INSERT INTO child (parent, note) VALUES (?, ?)")
                .await?;
            c.exec_drop(&p, (id, "in-txn")).await?;
            if rng.random_bool(0.2) {
                c.query_drop("ROLLBACK").await?;
                return Ok(false);
            }
            c.query_drop("COMMIT").await?;
        }
    }
    Ok(true)
}

/// The journal's records whose statements contain one of `needles`, as
/// lines (`lsn intent conn sql` / `lsn outcome of intent`), for a failed
/// test to print. The journal is copied first (the running server holds
/// its lock).
pub fn journal_lines_naming(journal: &std::path::Path, needles: &[String]) -> Vec<String> {
    use tandem::mirror::record::JournalRecord;
    let copy = tempfile::tempdir().unwrap();
    for e in std::fs::read_dir(journal).into_iter().flatten().flatten() {
        if e.file_name() != "LOCK" {
            let _ = std::fs::copy(e.path(), copy.path().join(e.file_name()));
        }
    }
    let Ok(j) = tandem::mirror::journal::Journal::open(copy.path(), 64 << 20) else {
        return vec!["(journal not readable)".into()];
    };
    let Ok(mut r) = j.reader(j.first_lsn()) else {
        return vec![];
    };
    let mut named = std::collections::HashSet::new();
    let mut out = Vec::new();
    while let Ok(Some((lsn, bytes))) = r.next_record() {
        match JournalRecord::decode(&bytes) {
            Ok(JournalRecord::Intent { txn, .. }) => {
                for s in &txn.statements {
                    let sql = String::from_utf8_lossy(&s.sql);
                    if needles.iter().any(|n| sql.contains(n.as_str())) {
                        named.insert(lsn);
                        out.push(format!("{lsn} intent conn {} {sql}", txn.conn_id));
                    }
                }
            }
            Ok(JournalRecord::Outcome {
                intent, committed, ..
            }) if named.contains(&intent) => {
                out.push(format!("{lsn} outcome of {intent}: committed {committed}"));
            }
            _ => {}
        }
    }
    out
}
