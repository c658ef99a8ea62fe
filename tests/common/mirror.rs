//! Helpers for dual-write tests: a Tandem mirroring one MariaDB database to
//! another, catch-up waits and row-for-row comparison.
#![allow(dead_code)]

use super::*;
use mysql_async::prelude::*;
use mysql_async::{Conn, Row, Value};
use std::sync::Arc;
use std::time::Duration;
use tandem::frontend::RunningServer;
use tandem::mirror::runtime::Mirror;

pub struct MirrorEnv {
    pub primary: String,
    pub secondary: String,
    pub dir: tempfile::TempDir,
    pub server: RunningServer,
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
        init_logging();
        let primary = format!("tandem_m_{name}");
        let secondary = format!("tandem_m_{name}_next");
        fresh_database(&primary).await;
        fresh_database(&secondary).await;
        let dir = tempfile::tempdir().unwrap();
        let yaml = mirror_yaml(
            &primary,
            &secondary,
            secondary_port,
            &dir.path().join("journal"),
            &dir.path().join("rules"),
            migration_extra,
        );
        let cfg = tandem::config::parse(&yaml).expect("test config is valid");
        let server = tandem::frontend::start(cfg).await.expect("tandem starts");
        Self {
            primary,
            secondary,
            dir,
            server,
        }
    }

    pub fn mirror(&self) -> Arc<Mirror> {
        self.server.shared.mirror.load_full().expect("mirroring")
    }

    pub async fn proxy(&self) -> Conn {
        Conn::new(proxy_builder(self.server.addr, Some(&self.primary)))
            .await
            .expect("connect through tandem")
    }

    /// Creates a table on both sides (as a backfill would have).
    pub async fn create_both(&self, ddl: &str) {
        for db in [&self.primary, &self.secondary] {
            let mut c = Conn::new(direct_opts(db)).await.unwrap();
            c.query_drop(ddl).await.unwrap();
            c.disconnect().await.unwrap();
        }
    }

    pub async fn wait_caught_up(&self) {
        wait_caught_up(&self.mirror()).await
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
    let mut c = Conn::new(direct_opts(db)).await.unwrap();
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
