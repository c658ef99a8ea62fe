//! Shared helpers for wire tests: a Tandem started in-process on
//! 127.0.0.1:0 in front of the local MariaDB, each test in its own database
//! so tests run in parallel.

pub mod child;
pub mod mirror;
pub mod pki;
pub mod raw;
pub mod relay;
pub mod server;

use mysql_async::prelude::*;
use mysql_async::{Conn, Opts, OptsBuilder};
use std::net::SocketAddr;
use tandem::server::RunningServer;

pub const MARIADB_HOST: &str = "127.0.0.1";
pub const MARIADB_PORT: u16 = 3306;
pub const USER: &str = "app";
pub const PASSWORD: &str = "app-secret";

/// Options for a direct connection to MariaDB (root).
pub fn direct_opts(db: &str) -> Opts {
    direct_opts_at(MARIADB_PORT, db)
}

/// Options for a direct connection (root) to the local server on `port`.
pub fn direct_opts_at(port: u16, db: &str) -> Opts {
    OptsBuilder::default()
        .ip_or_hostname(MARIADB_HOST)
        .tcp_port(port)
        .user(Some("root"))
        .db_name(Some(db))
        .prefer_socket(false)
        .into()
}

/// Options for a connection through Tandem.
pub fn proxy_builder(addr: SocketAddr, db: Option<&str>) -> OptsBuilder {
    OptsBuilder::default()
        .ip_or_hostname(addr.ip().to_string())
        .tcp_port(addr.port())
        .user(Some(USER))
        .pass(Some(PASSWORD))
        .db_name(db)
        // Without this, mysql_async would find MariaDB's unix socket and
        // bypass the proxy.
        .prefer_socket(false)
}

pub struct TestEnv {
    pub db: String,
    pub server: RunningServer,
    pub addr: SocketAddr,
}

impl TestEnv {
    /// Creates database `tandem_<name>` (fresh) and starts Tandem on it.
    pub async fn start(name: &str) -> Self {
        Self::start_with(name, "").await
    }

    /// As `start`, with extra YAML appended under the top level.
    pub async fn start_with(name: &str, extra_yaml: &str) -> Self {
        Self::start_full(name, 64, extra_yaml).await
    }

    pub async fn start_full(name: &str, pool: usize, extra_yaml: &str) -> Self {
        init_logging();
        let db = format!("tandem_{name}");
        fresh_database(&db).await;
        let yaml = format!(
            r#"
listen: 127.0.0.1:0
users:
  - name: {USER}
    password: {PASSWORD}
  - name: other
    password_hash: "*5BCB3E6AC345B435C7C2E6B7949A04CE6F6563D3"
backends:
  legacy:
    kind: mysql
    url: mysql://root@{MARIADB_HOST}:{MARIADB_PORT}/{db}
    pool: {pool}
migration:
  primary: legacy
rules: ./rules
{extra_yaml}
"#
        );
        let cfg = tandem::config::parse(&yaml).expect("test config is valid");
        let server = tandem::server::start(cfg).await.expect("tandem starts");
        let addr = server.addr;
        Self { db, server, addr }
    }

    pub async fn proxy(&self) -> Conn {
        Conn::new(proxy_builder(self.addr, Some(&self.db)))
            .await
            .expect("connect through tandem")
    }

    pub async fn direct(&self) -> Conn {
        Conn::new(direct_opts(&self.db))
            .await
            .expect("connect to MariaDB")
    }

    pub async fn stop(self) {
        self.server.shutdown().await;
        if let Ok(mut root) = Conn::new(direct_opts("mysql")).await {
            let _ = root
                .query_drop(format!("DROP DATABASE IF EXISTS `{}`", self.db))
                .await;
            let _ = root.disconnect().await;
        }
    }
}

/// Raises server limits the heavier tests need (idempotent; only raises).
pub async fn raise_server_limits() {
    let mut root = Conn::new(direct_opts("mysql")).await.unwrap();
    let (conns, packet): (u64, u64) = root
        .query_first("SELECT @@global.max_connections, @@global.max_allowed_packet")
        .await
        .unwrap()
        .unwrap();
    if conns < 1200 {
        root.query_drop("SET GLOBAL max_connections = 1200")
            .await
            .unwrap();
    }
    if packet < 64 * 1024 * 1024 {
        root.query_drop("SET GLOBAL max_allowed_packet = 67108864")
            .await
            .unwrap();
    }
    root.disconnect().await.unwrap();
}

/// Logs from the in-process server when TANDEM_LOG is set (e.g. `tandem=debug`).
pub fn init_logging() {
    if let Ok(filter) = std::env::var("TANDEM_LOG") {
        let _ = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::new(filter))
            .with_test_writer()
            .try_init();
    }
}

/// Drops and recreates database `name` on the local MariaDB, with its
/// rows in Tandem's bookkeeping database (an earlier run's position would
/// belong to another journal).
pub async fn fresh_database(name: &str) {
    let mut root = Conn::new(direct_opts("mysql"))
        .await
        .expect("MariaDB on 127.0.0.1:3306");
    root.query_drop(format!("DROP DATABASE IF EXISTS `{name}`"))
        .await
        .unwrap();
    forget_bookkeeping(&mut root, name).await;
    root.query_drop(format!("CREATE DATABASE `{name}`"))
        .await
        .unwrap();
    root.disconnect().await.unwrap();
}

/// A minimal HTTP/1.1 request for admin API tests: (status, content type, body).
pub async fn http(addr: SocketAddr, method: &str, path: &str) -> (u16, String, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    let req = format!(
        "{method} {path} HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
    );
    s.write_all(req.as_bytes()).await.unwrap();
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).await.unwrap();
    let text = String::from_utf8(raw).unwrap();
    let (head, body) = text.split_once("\r\n\r\n").unwrap();
    let code = head.split_whitespace().nth(1).unwrap().parse().unwrap();
    let ctype = head
        .lines()
        .find(|l| l.to_ascii_lowercase().starts_with("content-type:"))
        .unwrap_or_default()
        .to_string();
    (code, ctype, body.to_string())
}

/// Writes a config whose primary and secondary are two local MariaDB
/// databases (for the offline tools); returns its path.
pub fn two_database_config(
    dir: &std::path::Path,
    primary: &str,
    secondary: &str,
) -> std::path::PathBuf {
    let cfg = dir.join("t.yaml");
    std::fs::write(
        &cfg,
        format!(
            "backends:\n  legacy: {{ kind: mysql, url: \"mysql://root@127.0.0.1:{MARIADB_PORT}/{primary}\" }}\n  next: {{ kind: mysql, url: \"mysql://root@127.0.0.1:{MARIADB_PORT}/{secondary}\" }}\nmigration: {{ primary: legacy, secondary: next }}\nrules: {}\n",
            dir.join("rules").display()
        ),
    )
    .unwrap();
    cfg
}

/// Runs `tandem <command> --config <cfg> <args>`: (exit code, stdout, stderr).
pub fn tandem_tool(command: &str, cfg: &std::path::Path, args: &[&str]) -> (i32, String, String) {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_tandem"))
        .args([command, "--config"])
        .arg(cfg)
        .args(args)
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Drops test databases.
pub async fn drop_databases(names: &[&str]) {
    let mut root = Conn::new(direct_opts("mysql")).await.unwrap();
    for db in names {
        root.query_drop(format!("DROP DATABASE IF EXISTS `{db}`"))
            .await
            .unwrap();
        forget_bookkeeping(&mut root, db).await;
    }
    root.disconnect().await.unwrap();
}

/// Deletes database `name`'s rows from Tandem's bookkeeping tables (the
/// default `tandem` database), if there are any.
async fn forget_bookkeeping(root: &mut Conn, name: &str) {
    for t in [
        "commit_marker",
        "apply_position",
        "applied_lsn",
        "backfill_checkpoint",
        "effect_pending",
        "sequences",
        "cluster_placement",
    ] {
        match root
            .query_drop(format!("DELETE FROM tandem.{t} WHERE db = '{name}'"))
            .await
        {
            Ok(()) => {}
            Err(mysql_async::Error::Server(e)) if e.code == 1146 || e.code == 1049 => {}
            Err(e) => panic!("{e}"),
        }
    }
}

/// Runs `python3 -c script args…` off the async threads: whether it
/// succeeded, and its stdout then stderr.
pub async fn python(script: &'static str, args: Vec<String>) -> (bool, String) {
    let out = tokio::task::spawn_blocking(move || {
        std::process::Command::new("python3")
            .arg("-c")
            .arg(script)
            .args(args)
            .output()
            .expect("python3 runs")
    })
    .await
    .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

/// A local address nothing listens on right now (for a child `tandem serve`).
pub fn free_addr() -> SocketAddr {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
}

/// Waits until something accepts TCP connections on `addr` (panics after 15 s).
pub async fn wait_listening(addr: SocketAddr) {
    for _ in 0..300 {
        if tokio::net::TcpStream::connect(addr).await.is_ok() {
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    panic!("nothing listens on {addr}");
}
