//! Shard routing: Tandem in front of a 4-shard cluster (three databases on
//! the shared MariaDB, one on a `mariadbd` of the test's own) answers as
//! one database would. The differential test runs one deterministic
//! workload through Tandem and against one reference database and
//! compares every answer; afterwards every row must be on the shard
//! `tandem shard-of` names.

use crate::common::server::OwnServer;
use crate::common::{self, direct_opts, proxy_builder, tandem_tool};
use mysql_async::prelude::*;
use mysql_async::{Conn, Opts, Row};
use rand::{Rng, SeedableRng};
use std::net::SocketAddr;
use std::path::PathBuf;
use tandem::server::RunningServer;

const SCHEMA: &[&str] = &[
    "CREATE TABLE users (id BIGINT PRIMARY KEY, name VARCHAR(40) NOT NULL, \
     balance DECIMAL(14,2) NOT NULL DEFAULT 0)",
    "CREATE TABLE auctions (id BIGINT PRIMARY KEY, seller_id BIGINT NOT NULL, \
     title VARCHAR(80), category_id INT, KEY (seller_id))",
    "CREATE TABLE bids (id BIGINT AUTO_INCREMENT PRIMARY KEY, user_id BIGINT NOT NULL, \
     auction_id BIGINT, amount DECIMAL(12,2) NOT NULL, created_at DATETIME NOT NULL, \
     KEY (user_id))",
    "CREATE TABLE bid_history (id BIGINT PRIMARY KEY, user_id BIGINT, \
     amount DECIMAL(12,2), created_at DATETIME NOT NULL)",
    "CREATE TABLE categories (id INT PRIMARY KEY, name VARCHAR(40))",
];

const RULES: &str = r#"
tables:
  users: { shard_key: id }
  auctions: { shard_key: seller_id }
  bids: { shard_key: user_id }
  bid_history:
    shard_key: created_at
    shard_by: range
    ranges:
      - { below: "2025-01-01", shard: s0 }
      - { below: "2026-01-01", shard: s1 }
      - { shard: s2 }
  categories: { reference: true }
  sbtest1: { shard_key: id }
  logs:
    shard_key: at
    shard_by: range
    ranges:
      - { below: "2026-01-01", shard: s0 }
      - { below: "2100-01-01", shard: s1 }
      - { shard: s2 }
  tagged: { shard_key: region }
  stamps:
    shard_key: at
    shard_by: range
    ranges:
      - { below: "2025-01-01", shard: s0 }
      - { shard: s1 }
"#;

pub struct Cluster {
    pub server: RunningServer,
    pub addr: SocketAddr,
    /// Each shard's connection options (root, its database).
    pub shards: Vec<Opts>,
    pub dbs: Vec<String>,
    pub config: PathBuf,
    _dir: tempfile::TempDir,
    /// The server of its own shard s3 runs on, when started with `own`.
    pub own: Option<OwnServer>,
}

impl Cluster {
    /// Four shards `tandem_<name>_s0..3` (s3 on a server of its own when
    /// `own`), the schema created on each, Tandem serving them as database
    /// `app`.
    pub async fn start(name: &str, own: bool) -> Cluster {
        Self::start_with(name, own, "").await
    }

    /// `start`, with more keys of the cluster's YAML block (indented by
    /// four spaces, e.g. `    cross_shard_transactions: reject\n`).
    pub async fn start_with(name: &str, own: bool, cluster_extra: &str) -> Cluster {
        Self::start_prepared(Self::prepare(name, own, cluster_extra).await).await
    }

    /// Starts Tandem over what `prepare` made (its rules maybe edited).
    pub async fn start_prepared(
        (config, shards, dbs, dir, own): (
            PathBuf,
            Vec<Opts>,
            Vec<String>,
            tempfile::TempDir,
            Option<OwnServer>,
        ),
    ) -> Cluster {
        let cfg = tandem::config::load(&config).expect("cluster config is valid");
        let server = tandem::server::start(cfg).await.expect("tandem starts");
        let addr = server.addr;
        Cluster {
            server,
            addr,
            shards,
            dbs,
            config,
            _dir: dir,
            own,
        }
    }

    /// Fresh shard databases with the schema and a config serving them
    /// (`listen` and `admin` on port 0): (config path, shard options,
    /// shard databases, the config's directory, the own server).
    pub async fn prepare(
        name: &str,
        own: bool,
        cluster_extra: &str,
    ) -> (
        PathBuf,
        Vec<Opts>,
        Vec<String>,
        tempfile::TempDir,
        Option<OwnServer>,
    ) {
        common::init_logging();
        let own = if own {
            Some(OwnServer::start(&[], &[]).await)
        } else {
            None
        };
        let dbs: Vec<String> = (0..4).map(|i| format!("tandem_{name}_s{i}")).collect();
        // A failed earlier run may have left this cluster's XA branches
        // prepared, holding locks the drops below would wait for.
        let tag = tandem::shard_tools::xa::tag_of("app4", &format!("'{}'", dbs[0]));
        let mut root = Conn::new(common::direct_opts_at(common::MARIADB_PORT, "mysql"))
            .await
            .unwrap();
        let stale: Vec<mysql_async::Row> = root.query("XA RECOVER FORMAT='SQL'").await.unwrap();
        for r in stale {
            let xid =
                String::from_utf8_lossy(&r.get::<Vec<u8>, _>(3).unwrap_or_default()).into_owned();
            if xid.starts_with(&format!("'{tag}")) {
                let _ = root.query_drop(format!("XA ROLLBACK {xid}")).await;
            }
        }
        root.disconnect().await.unwrap();
        let mut shards = Vec::new();
        let mut urls = Vec::new();
        for (i, db) in dbs.iter().enumerate() {
            let port = match (&own, i) {
                (Some(o), 3) => o.port,
                _ => common::MARIADB_PORT,
            };
            if port == common::MARIADB_PORT {
                // Also forgets the rows Tandem keeps for it (sequences,
                // the recorded placement).
                common::fresh_database(db).await;
            }
            let mut root = Conn::new(common::direct_opts_at(port, "mysql"))
                .await
                .unwrap();
            root.query_drop(format!("DROP DATABASE IF EXISTS `{db}`"))
                .await
                .unwrap();
            root.query_drop(format!("CREATE DATABASE `{db}`"))
                .await
                .unwrap();
            root.query_drop(format!("USE `{db}`")).await.unwrap();
            for s in SCHEMA {
                root.query_drop(*s).await.unwrap();
            }
            root.disconnect().await.unwrap();
            shards.push(common::direct_opts_at(port, db));
            urls.push(format!("mysql://root@127.0.0.1:{port}/{db}"));
        }
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("rules")).unwrap();
        std::fs::write(dir.path().join("rules/app.yaml"), RULES).unwrap();
        let yaml = format!(
            r#"
listen: 127.0.0.1:0
admin: 127.0.0.1:0
users:
  - {{ name: {user}, password: {pass} }}
backends:
  s0: {{ kind: mysql, url: "{u0}" }}
  s1: {{ kind: mysql, url: "{u1}" }}
  s2: {{ kind: mysql, url: "{u2}" }}
  s3: {{ kind: mysql, url: "{u3}" }}
clusters:
  app4:
    database: app
    shards: [s0, s1, s2, s3]
    buckets: 4096
    merge_buffer: 64KiB
{cluster_extra}migration:
  primary: app4
  journal: {journal}
rules: {rules}
"#,
            user = common::USER,
            pass = common::PASSWORD,
            u0 = urls[0],
            u1 = urls[1],
            u2 = urls[2],
            u3 = urls[3],
            journal = dir.path().join("journal").display(),
            rules = dir.path().join("rules").display(),
        );
        let config = dir.path().join("tandem.yaml");
        std::fs::write(&config, &yaml).unwrap();
        (config, shards, dbs, dir, own)
    }

    pub async fn proxy(&self) -> Conn {
        Conn::new(proxy_builder(self.addr, Some("app")))
            .await
            .expect("connect through tandem")
    }

    pub async fn stop(self) {
        self.server.shutdown().await;
        for (o, db) in self.shards.iter().zip(&self.dbs) {
            if let Ok(mut c) = Conn::new(o.clone()).await {
                let _ = c
                    .query_drop(format!("DROP DATABASE IF EXISTS `{db}`"))
                    .await;
                let _ = c.disconnect().await;
            }
        }
        common::drop_databases(&[self.dbs[0].as_str()]).await;
    }
}

/// A statement's outcome as comparable text: rows (each value as SQL), or
/// the affected rows, or the error code. `prepared`: run as a prepared
/// statement (binary protocol).
async fn outcome_as(c: &mut Conn, sql: &str, ordered: bool, prepared: bool) -> String {
    let result = if prepared {
        c.exec::<Row, _, _>(sql, ()).await
    } else {
        c.query::<Row, _>(sql).await
    };
    match result {
        Ok(rows) => {
            let mut lines: Vec<String> = rows
                .into_iter()
                .map(|r| {
                    r.unwrap()
                        .into_iter()
                        .map(|v| v.as_sql(true))
                        .collect::<Vec<_>>()
                        .join("|")
                })
                .collect();
            if !ordered {
                lines.sort();
            }
            format!(
                "rows {} affected {}: {}",
                lines.len(),
                c.affected_rows(),
                lines.join(" / ")
            )
        }
        Err(mysql_async::Error::Server(e)) => format!("error {}", e.code),
        Err(e) => panic!("{sql}: {e}"),
    }
}

async fn outcome(c: &mut Conn, sql: &str, ordered: bool) -> String {
    outcome_as(c, sql, ordered, false).await
}

/// One deterministic workload: (statement, whether its answer is ordered).
fn workload(n: usize, seed: u64) -> Vec<(String, bool)> {
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let mut out: Vec<(String, bool)> = Vec::new();
    let (mut users, mut auctions, mut bids, mut hist, mut cats) = (0u64, 0u64, 0u64, 0u64, 0u64);
    let mut copies = 0u64;
    let names = ["ann", "Bob", "carl", "Dana", "eve", "Finn", "gus", "Hal"];
    let date = |r: &mut rand::rngs::StdRng| {
        format!(
            "{}-{:02}-{:02} {:02}:{:02}:{:02}",
            r.random_range(2024..2028),
            r.random_range(1..13),
            r.random_range(1..29),
            r.random_range(0..24),
            r.random_range(0..60),
            r.random_range(0..60)
        )
    };
    let money = |r: &mut rand::rngs::StdRng| {
        format!("{}.{:02}", r.random_range(0..1000), r.random_range(0..100))
    };
    // Some of every table first.
    for _ in 0..3 {
        cats += 1;
        out.push((
            format!("INSERT INTO categories VALUES ({cats}, 'cat{cats}')"),
            false,
        ));
    }
    while out.len() < n {
        let u = |r: &mut rand::rngs::StdRng| r.random_range(1..users.max(1) + 3);
        let pick = rng.random_range(0..125);
        let s = match pick {
            0..=9 => {
                let rows: Vec<String> = (0..rng.random_range(1..5))
                    .map(|_| {
                        users += 1;
                        format!(
                            "({users}, '{}', {})",
                            names[rng.random_range(0..names.len())],
                            money(&mut rng)
                        )
                    })
                    .collect();
                (format!("INSERT INTO users (id, name, balance) VALUES {}", rows.join(", ")), false)
            }
            10..=15 => {
                auctions += 1;
                let seller = u(&mut rng);
                (
                    format!(
                        "INSERT INTO auctions VALUES ({auctions}, {seller}, 'lot {auctions}', {})",
                        rng.random_range(1..cats + 2)
                    ),
                    false,
                )
            }
            16..=25 => {
                let rows: Vec<String> = (0..rng.random_range(1..4))
                    .map(|_| {
                        bids += 1;
                        format!(
                            "({bids}, {}, {}, {}, '{}')",
                            u(&mut rng),
                            rng.random_range(1..auctions + 2),
                            money(&mut rng),
                            date(&mut rng)
                        )
                    })
                    .collect();
                (
                    format!(
                        "INSERT INTO bids (id, user_id, auction_id, amount, created_at) VALUES {}",
                        rows.join(",")
                    ),
                    false,
                )
            }
            26..=30 => {
                hist += 1;
                (
                    format!(
                        "INSERT INTO bid_history VALUES ({hist}, {}, {}, '{}')",
                        u(&mut rng),
                        money(&mut rng),
                        date(&mut rng)
                    ),
                    false,
                )
            }
            31 => {
                cats += 1;
                (format!("INSERT INTO categories VALUES ({cats}, 'cat{cats}')"), false)
            }
            32..=39 => (format!("SELECT id, name, balance FROM users WHERE id = {}", u(&mut rng)), true),
            40..=44 => {
                let ks: Vec<String> = (0..rng.random_range(1..6)).map(|_| u(&mut rng).to_string()).collect();
                (
                    format!("SELECT id, name FROM users WHERE id IN ({}) ORDER BY id", ks.join(",")),
                    true,
                )
            }
            45..=48 => (
                format!(
                    "SELECT id, name, balance FROM users ORDER BY id LIMIT {} OFFSET {}",
                    rng.random_range(0..8),
                    rng.random_range(0..10)
                ),
                true,
            ),
            49..=51 => (
                format!(
                    "SELECT id, amount FROM bids WHERE amount > {} ORDER BY amount DESC, id LIMIT 7",
                    rng.random_range(0..900)
                ),
                true,
            ),
            52..=54 => (
                "SELECT COUNT(*), SUM(amount), MIN(amount), MAX(amount), MIN(created_at) FROM bids".into(),
                true,
            ),
            55..=56 => ("SELECT COUNT(*), SUM(balance), MIN(name), MAX(name) FROM users".into(), true),
            57..=60 => (
                format!(
                    "SELECT u.id, u.name, b.id, b.amount FROM users u JOIN bids b ON b.user_id = u.id \
                     WHERE u.id = {} ORDER BY b.id",
                    u(&mut rng)
                ),
                true,
            ),
            61..=63 => (
                format!(
                    "SELECT a.id, a.title, c.name FROM auctions a JOIN categories c ON c.id = a.category_id \
                     WHERE a.seller_id = {} ORDER BY a.id",
                    u(&mut rng)
                ),
                true,
            ),
            64..=66 => {
                let y = rng.random_range(2024..2028);
                (
                    format!(
                        "SELECT id, amount, created_at FROM bid_history WHERE created_at >= '{y}-03-01' \
                         AND created_at < '{y}-09-01' ORDER BY created_at, id"
                    ),
                    true,
                )
            }
            67..=68 => (
                format!("SELECT id, user_id FROM bid_history WHERE user_id = {}", u(&mut rng)),
                false,
            ),
            69..=74 => (
                format!("UPDATE users SET balance = balance + 1.25 WHERE id = {}", u(&mut rng)),
                false,
            ),
            75..=77 => (
                format!("UPDATE bids SET amount = amount + 1 WHERE amount < {}", rng.random_range(0..50)),
                false,
            ),
            78..=80 => (
                format!("DELETE FROM bids WHERE user_id = {} AND id % 3 = 0", u(&mut rng)),
                false,
            ),
            81..=82 => ("DELETE FROM bid_history WHERE amount > 985".into(), false),
            83..=84 => (
                format!(
                    "UPDATE categories SET name = CONCAT(name, 'x') WHERE id = {}",
                    rng.random_range(1..cats + 1)
                ),
                false,
            ),
            85..=86 => ("SELECT * FROM categories ORDER BY id".into(), true),
            87..=89 => (format!("SELECT * FROM bids WHERE user_id IN ({}, {})", u(&mut rng), u(&mut rng)), false),
            90..=92 => (
                format!("SELECT id FROM auctions WHERE seller_id = {} OR seller_id = {}", u(&mut rng), u(&mut rng)),
                false,
            ),
            93..=95 => (
                format!("UPDATE users SET name = 'Zed' WHERE name = '{}'", names[rng.random_range(0..names.len())]),
                false,
            ),
            96..=99 => ("SELECT COUNT(*) FROM bid_history WHERE created_at < '2025-06-01'".into(), true),
            // Groups that span shards, combined by the merge.
            100 => (
                "SELECT auction_id, COUNT(*), SUM(amount), MIN(amount), MAX(created_at), AVG(amount) \
                 FROM bids GROUP BY auction_id"
                    .into(),
                false,
            ),
            101 => (
                format!(
                    "SELECT auction_id, COUNT(*) AS n FROM bids GROUP BY auction_id HAVING n > {} \
                     ORDER BY n DESC, auction_id LIMIT {}",
                    rng.random_range(0..3),
                    rng.random_range(1..6)
                ),
                true,
            ),
            102 => ("SELECT name, COUNT(*), AVG(balance), SUM(balance) FROM users GROUP BY name ORDER BY name".into(), true),
            103 => (
                format!(
                    "SELECT DISTINCT auction_id FROM bids ORDER BY auction_id LIMIT {} OFFSET {}",
                    rng.random_range(1..10),
                    rng.random_range(0..4)
                ),
                true,
            ),
            104 => ("SELECT DISTINCT name FROM users".into(), false),
            105 => ("SELECT COUNT(DISTINCT auction_id), COUNT(*), AVG(amount) FROM bids".into(), true),
            106 => (
                format!(
                    "SELECT user_id, COUNT(*), SUM(amount) FROM bids GROUP BY user_id \
                     HAVING SUM(amount) > {} ORDER BY user_id",
                    rng.random_range(0..1500)
                ),
                true,
            ),
            107 => (
                "SELECT category_id, COUNT(*) FROM auctions GROUP BY category_id HAVING COUNT(*) >= 2".into(),
                false,
            ),
            108 => (
                "SELECT YEAR(created_at) AS y, COUNT(*), AVG(amount), MAX(amount) FROM bid_history \
                 GROUP BY y ORDER BY y"
                    .into(),
                true,
            ),
            109 => (
                format!("SELECT AVG(balance), MIN(balance), COUNT(*) FROM users WHERE id > {}", u(&mut rng)),
                true,
            ),
            110 => (
                format!(
                    "SELECT auction_id, COUNT(DISTINCT amount), SUM(DISTINCT amount), COUNT(*) FROM bids \
                     GROUP BY auction_id ORDER BY auction_id LIMIT {}",
                    rng.random_range(1..8)
                ),
                true,
            ),
            111 => ("SELECT AVG(amount), COUNT(DISTINCT user_id), MAX(id) FROM bids WHERE amount < 0".into(), true),
            112 => (
                "SELECT auction_id, MIN(amount), MAX(amount) FROM bids GROUP BY auction_id \
                 HAVING MAX(amount) > 500 OR COUNT(*) = 1"
                    .into(),
                false,
            ),
            113 => (
                "SELECT COUNT(*) AS n, AVG(amount) FROM bids GROUP BY auction_id ORDER BY n DESC, 2 LIMIT 3"
                    .into(),
                true,
            ),
            114 => (
                "SELECT DISTINCT b.auction_id, c.name FROM auctions a JOIN categories c ON c.id = a.category_id \
                 JOIN bids b ON b.user_id = a.seller_id ORDER BY 1, 2"
                    .into(),
                true,
            ),
            115 => ("SELECT u.name, SUM(b.amount) FROM users u JOIN bids b ON b.user_id = u.id GROUP BY u.name ORDER BY 1".into(), true),
            // INSERT … SELECT: the rows read across shards, each placed
            // by its key.
            116..=117 => {
                copies += 1;
                (
                    format!(
                        "INSERT INTO bid_history (id, user_id, amount, created_at) \
                         SELECT id + {copies} * 1000000, user_id, amount, created_at FROM bids WHERE amount > {}",
                        rng.random_range(500..1000)
                    ),
                    false,
                )
            }
            118 => {
                copies += 1;
                (
                    format!(
                        "INSERT INTO users (id, name, balance) SELECT id + {copies} * 1000000, \
                         CONCAT(name, '2'), balance FROM users WHERE id IN ({}, {})",
                        u(&mut rng),
                        u(&mut rng)
                    ),
                    false,
                )
            }
            119 => ("INSERT IGNORE INTO categories SELECT id, name FROM categories WHERE id < 3".into(), false),
            // NULL groups and negative values for the combined merges.
            121 => (
                format!("UPDATE auctions SET category_id = NULL WHERE id % {} = 0", rng.random_range(3..7)),
                false,
            ),
            122 => (
                format!("UPDATE bids SET amount = -amount WHERE id % {} = 1", rng.random_range(5..11)),
                false,
            ),
            123 => (
                "SELECT category_id, COUNT(*), AVG(id), MIN(title) FROM auctions GROUP BY category_id \
                 ORDER BY category_id DESC"
                    .into(),
                true,
            ),
            // Ordered on columns the SELECT does not return.
            _ => (
                format!(
                    "SELECT id FROM bids WHERE amount > {} ORDER BY amount DESC, user_id, id LIMIT {}",
                    rng.random_range(0..900),
                    rng.random_range(1..9)
                ),
                true,
            ),
        };
        out.push(s);
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sharded_workload_answers_as_one_database_and_rows_land_where_shard_of_says() {
    let cl = Cluster::start("cl_diff", true).await;
    let reference = "tandem_cl_diff_ref";
    common::fresh_database(reference).await;
    let mut r = Conn::new(direct_opts(reference)).await.unwrap();
    for s in SCHEMA {
        r.query_drop(*s).await.unwrap();
    }
    let mut t = cl.proxy().await;
    let statements = workload(2200, 7);
    let (mut compared, mut errors, mut rows) = (0, 0, 0);
    for (sql, ordered) in &statements {
        // Every third statement as a prepared statement (binary rows).
        let prepared = compared % 3 == 1;
        let via = outcome_as(&mut t, sql, *ordered, prepared).await;
        let direct = outcome_as(&mut r, sql, *ordered, prepared).await;
        assert_eq!(via, direct, "statement #{compared}: {sql}");
        compared += 1;
        errors += usize::from(via.starts_with("error"));
        rows += usize::from(via.starts_with("rows") && !via.starts_with("rows 0"));
    }
    // The workload means something: most statements succeed, many return rows.
    assert!(
        errors < compared / 20,
        "{errors} of {compared} statements failed"
    );
    assert!(
        rows > compared / 4,
        "only {rows} of {compared} statements returned rows"
    );
    eprintln!("{compared} statements compared: {rows} with rows, {errors} errors");
    // A transaction on one user's shard, committed and rolled back.
    for (end, k) in [("COMMIT", 2), ("ROLLBACK", 3)] {
        for c in [&mut t, &mut r] {
            c.query_drop("BEGIN").await.unwrap();
            c.query_drop(format!(
                "UPDATE users SET balance = balance - 5 WHERE id = {k}"
            ))
            .await
            .unwrap();
            c.query_drop(format!(
                "INSERT INTO bids (id, user_id, auction_id, amount, created_at) \
                 VALUES (100000{k}, {k}, 1, 5.00, '2026-01-01 00:00:00')"
            ))
            .await
            .unwrap();
            c.query_drop(end).await.unwrap();
        }
    }
    for table in ["users", "auctions", "bids", "bid_history", "categories"] {
        let sql = format!("SELECT * FROM {table} ORDER BY id");
        assert_eq!(
            outcome(&mut t, &sql, true).await,
            outcome(&mut r, &sql, true).await,
            "{table} through Tandem and in the reference database"
        );
    }
    assert!(compared >= 2000);

    // Every row on exactly the shard the shard function names; the
    // reference table whole on every shard.
    let cfg = tandem::config::load(&cl.config).unwrap();
    let cluster = cfg.cluster().unwrap().clone();
    use tandem::router::shard::{canon, shard_of, KeyType, Literal};
    let keyed = [
        ("users", "id", KeyType::Int),
        ("auctions", "seller_id", KeyType::Int),
        ("bids", "user_id", KeyType::Int),
        (
            "bid_history",
            "created_at",
            KeyType::Temporal { datetime: true },
        ),
    ];
    let mut checked = 0;
    for (i, o) in cl.shards.iter().enumerate() {
        let mut s = Conn::new(o.clone()).await.unwrap();
        for (table, key, ty) in &keyed {
            let keys: Vec<String> = s
                .query(format!("SELECT CAST({key} AS CHAR) FROM {table}"))
                .await
                .unwrap();
            let placement = &cluster.tables[*table].placement;
            for k in keys {
                let lit = match ty {
                    KeyType::Int => Literal::Number(k.clone()),
                    _ => Literal::Str(k.clone().into_bytes()),
                };
                let v = canon(ty, &lit).unwrap();
                assert_eq!(
                    shard_of(&cluster, placement, ty, &v).unwrap(),
                    i,
                    "{table} {key}={k}"
                );
                checked += 1;
            }
        }
        let cats: Vec<(i64, String)> = s
            .query("SELECT id, name FROM categories ORDER BY id")
            .await
            .unwrap();
        let want: Vec<(i64, String)> = r
            .query("SELECT id, name FROM categories ORDER BY id")
            .await
            .unwrap();
        assert_eq!(cats, want, "categories on shard {i}");
        s.disconnect().await.unwrap();
    }
    assert!(checked > 500, "{checked} rows checked");
    // The CLI agrees with the library for a user on each shard.
    let mut r2 = Conn::new(cl.shards[2].clone()).await.unwrap();
    let on2: Option<i64> = r2
        .query_first("SELECT id FROM users LIMIT 1")
        .await
        .unwrap();
    r2.disconnect().await.unwrap();
    let (code, stdout, stderr) = tandem_tool(
        "shard-of",
        &cl.config,
        &["users", &on2.unwrap().to_string()],
    );
    assert_eq!(code, 0, "{stderr}");
    assert!(
        stdout.contains("shard s2") && stdout.starts_with("bucket "),
        "{stdout}"
    );
    t.disconnect().await.unwrap();
    r.disconnect().await.unwrap();
    cl.stop().await;
    common::drop_databases(&[reference]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prepared_statements_route_by_their_bound_values() {
    let cl = Cluster::start("cl_prep", false).await;
    let reference = "tandem_cl_prep_ref";
    common::fresh_database(reference).await;
    let mut r = Conn::new(direct_opts(reference)).await.unwrap();
    for s in SCHEMA {
        r.query_drop(*s).await.unwrap();
    }
    let mut t = cl.proxy().await;
    use mysql_async::Value;
    let insert = "INSERT INTO users (id, name, balance) VALUES (?, ?, ?), (?, ?, ?)";
    let bids =
        "INSERT INTO bids (id, user_id, auction_id, amount, created_at) VALUES (?, ?, ?, ?, ?)";
    for c in [&mut t, &mut r] {
        for k in 0..20i64 {
            c.exec_drop(
                insert,
                (
                    2 * k + 1,
                    format!("n{k}"),
                    format!("{k}.25"),
                    2 * k + 2,
                    "Mixed",
                    Value::Double(k as f64 * 1.5),
                ),
            )
            .await
            .unwrap();
            c.exec_drop(
                bids,
                (
                    k + 1,
                    Value::UInt((k % 7 + 1) as u64),
                    Value::NULL,
                    format!("{}.{:02}", k * 3, k),
                    Value::Date(2025, (k % 12 + 1) as u8, 3, 4, 5, 6, 0),
                ),
            )
            .await
            .unwrap();
        }
    }
    let cases: Vec<(&str, Vec<Value>, bool)> = vec![
        ("SELECT id, name, balance FROM users WHERE id = ?", vec![Value::Int(7)], true),
        ("SELECT id, name FROM users WHERE id = ?", vec![Value::Bytes(b"8".to_vec())], true),
        ("SELECT id FROM users WHERE id IN (?, ?, ?) ORDER BY id", vec![Value::Int(1), Value::Int(20), Value::Int(33)], true),
        ("SELECT id, balance FROM users ORDER BY balance DESC, id LIMIT ? OFFSET ?", vec![Value::Int(5), Value::Int(3)], true),
        ("SELECT id, created_at FROM bids WHERE created_at >= ? ORDER BY created_at, id", vec![Value::Date(2025, 6, 1, 0, 0, 0, 0)], true),
        ("SELECT COUNT(*), SUM(amount), MIN(created_at), MAX(amount) FROM bids WHERE amount > ?", vec![Value::Bytes(b"3.5".to_vec())], true),
        ("SELECT COUNT(*), SUM(balance), MAX(id) FROM users", vec![], true),
        ("SELECT * FROM bids WHERE user_id = ? ORDER BY id", vec![Value::UInt(3)], true),
        ("SELECT name FROM users WHERE name = ?", vec![Value::Bytes(b"mixed".to_vec())], false),
        ("SELECT u.id, b.amount FROM users u JOIN bids b ON b.user_id = u.id WHERE u.id = ? ORDER BY b.id", vec![Value::Int(2)], true),
    ];
    for (sql, params, ordered) in &cases {
        let mut outs = Vec::new();
        for c in [&mut t, &mut r] {
            let rows: Vec<Row> = c
                .exec(*sql, params.clone())
                .await
                .unwrap_or_else(|e| panic!("{sql}: {e}"));
            let mut lines: Vec<String> = rows
                .into_iter()
                .map(|row| {
                    row.unwrap()
                        .into_iter()
                        .map(|v| v.as_sql(true))
                        .collect::<Vec<_>>()
                        .join("|")
                })
                .collect();
            if !ordered {
                lines.sort();
            }
            outs.push(lines);
        }
        assert_eq!(outs[0], outs[1], "{sql} {params:?}");
        assert!(
            !outs[0].is_empty() || sql.contains("WHERE name"),
            "{sql} returned no rows"
        );
    }
    // Writes with bound keys: on one shard, and on every shard.
    for c in [&mut t, &mut r] {
        c.exec_drop(
            "UPDATE users SET balance = balance + ? WHERE id = ?",
            (Value::Bytes(b"0.50".to_vec()), 5),
        )
        .await
        .unwrap();
        assert_eq!(c.affected_rows(), 1);
        c.exec_drop("DELETE FROM bids WHERE amount < ?", (Value::Double(10.0),))
            .await
            .unwrap();
    }
    for table in ["users", "bids"] {
        let sql = format!("SELECT * FROM {table} ORDER BY id");
        assert_eq!(
            outcome(&mut t, &sql, true).await,
            outcome(&mut r, &sql, true).await,
            "{table}"
        );
    }
    t.disconnect().await.unwrap();
    r.disconnect().await.unwrap();
    cl.stop().await;
    common::drop_databases(&[reference]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auto_increment_ids_stay_unique_across_shards() {
    let cl = Cluster::start("cl_ids", false).await;
    // Rows written before Tandem: the sequence starts above all of them.
    let mut s2 = Conn::new(cl.shards[2].clone()).await.unwrap();
    s2.query_drop(
        "INSERT INTO bids (id, user_id, amount, created_at) VALUES (500, 7, 1, '2025-01-01')",
    )
    .await
    .unwrap();
    s2.disconnect().await.unwrap();
    let mut t = cl.proxy().await;
    t.query_drop(
        "INSERT INTO bids (user_id, amount, created_at) VALUES          (1, 1, NOW()), (2, 2, NOW()), (3, 3, NOW()), (4, 4, NOW())",
    )
    .await
    .unwrap();
    let first = t.last_insert_id().unwrap();
    assert_eq!(
        first, 501,
        "the first id the statement got, above every shard's"
    );
    let lid: Option<u64> = t.query_first("SELECT LAST_INSERT_ID()").await.unwrap();
    assert_eq!(lid, Some(first));
    let ids: Vec<(u64, u64)> = t
        .query("SELECT user_id, id FROM bids WHERE id > 500 ORDER BY id")
        .await
        .unwrap();
    assert_eq!(
        ids,
        vec![(1, 501), (2, 502), (3, 503), (4, 504)],
        "consecutive, in row order"
    );
    // NULL and 0 ask for an id; an explicit id raises the sequence.
    t.query_drop("INSERT INTO bids VALUES (NULL, 9, 1, 5, NOW()), (0, 10, 1, 6, NOW())")
        .await
        .unwrap();
    assert_eq!(t.last_insert_id(), Some(505));
    t.query_drop("INSERT INTO bids (id, user_id, amount, created_at) VALUES (9000, 11, 1, NOW())")
        .await
        .unwrap();
    t.query_drop("INSERT INTO bids (user_id, amount, created_at) VALUES (12, 1, NOW())")
        .await
        .unwrap();
    assert_eq!(t.last_insert_id(), Some(9001));
    // INSERT … SELECT leaving the id out: consecutive ids from the
    // sequence, each row on its user's shard.
    t.query_drop(
        "INSERT INTO bids (user_id, amount, created_at) \
         SELECT user_id + 100, amount, created_at FROM bids WHERE id >= 9000 ORDER BY id",
    )
    .await
    .unwrap();
    assert_eq!(t.affected_rows(), 2);
    assert_eq!(t.last_insert_id(), Some(9002));
    let copied: Vec<(u64, u64)> = t
        .query("SELECT id, user_id FROM bids WHERE user_id > 100 AND user_id < 200 ORDER BY id")
        .await
        .unwrap();
    assert_eq!(copied, vec![(9002, 111), (9003, 112)]);
    // Prepared inserts, and sessions inserting at once: every id unique.
    let mut tasks = Vec::new();
    for w in 0..6u64 {
        let opts = proxy_builder(cl.addr, Some("app"));
        tasks.push(tokio::spawn(async move {
            let mut c = Conn::new(opts).await.unwrap();
            for i in 0..40u64 {
                c.exec_drop(
                    "INSERT INTO bids (user_id, amount, created_at) VALUES (?, ?, NOW())",
                    (w * 1000 + i, i),
                )
                .await
                .unwrap();
            }
            c.disconnect().await.unwrap();
        }));
    }
    for task in tasks {
        task.await.unwrap();
    }
    let (n, distinct): (u64, u64) = t
        .query_first("SELECT COUNT(*), COUNT(id) FROM bids")
        .await
        .unwrap()
        .unwrap();
    let mut all = Vec::new();
    for o in &cl.shards {
        let mut s = Conn::new(o.clone()).await.unwrap();
        let ids: Vec<u64> = s.query("SELECT id FROM bids").await.unwrap();
        all.extend(ids);
        s.disconnect().await.unwrap();
    }
    all.sort();
    let len = all.len();
    all.dedup();
    assert_eq!((n, distinct, len as u64), (251, 251, 251));
    assert_eq!(all.len(), len, "no id on two shards");
    t.disconnect().await.unwrap();
    cl.stop().await;
}

/// Runs sysbench `args` through the cluster; its stdout, or a panic with
/// its output.
async fn sysbench(cl: &Cluster, args: &[&str]) -> String {
    let mut cmd = std::process::Command::new("sysbench");
    cmd.args([
        "--db-driver=mysql",
        "--mysql-host=127.0.0.1",
        &format!("--mysql-port={}", cl.addr.port()),
        &format!("--mysql-user={}", common::USER),
        &format!("--mysql-password={}", common::PASSWORD),
        "--mysql-db=app",
        "--tables=1",
        "--table-size=3000",
    ])
    .args(args);
    let out = tokio::task::spawn_blocking(move || cmd.output().expect("sysbench is installed"))
        .await
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "sysbench {args:?}: {stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sysbench_prepares_and_runs_through_a_sharded_tandem() {
    common::raise_server_limits().await;
    let cl = Cluster::start("cl_sysbench", false).await;
    // prepare: CREATE TABLE and its index on every shard, 3000 rows whose
    // ids come from the global sequence.
    sysbench(&cl, &["oltp_read_write", "prepare"]).await;
    let mut counts = Vec::new();
    for o in &cl.shards {
        let mut s = Conn::new(o.clone()).await.unwrap();
        let n: Option<u64> = s.query_first("SELECT COUNT(*) FROM sbtest1").await.unwrap();
        counts.push(n.unwrap());
        s.disconnect().await.unwrap();
    }
    assert_eq!(counts.iter().sum::<u64>(), 3000, "{counts:?}");
    assert!(
        counts.iter().all(|&n| n > 500),
        "spread over the shards: {counts:?}"
    );
    // Its read/write mix: point selects, ranges that scatter (plain,
    // SUM, ORDER BY c, DISTINCT c), updates, deletes and inserts by id.
    // Statement by statement (--skip_trx; one thread for the
    // delete+insert pairs, which two threads may interleave on one
    // database too), then as sysbench's own transactions, each writing
    // rows of several shards (cross-shard commits), where deadlocks are
    // sysbench's ignored errors as on one database.
    for (args, transactions) in [
        (
            ["--threads=1", "--delete_inserts=1", "--skip_trx=on"],
            false,
        ),
        (
            ["--threads=4", "--delete_inserts=0", "--skip_trx=on"],
            false,
        ),
        (
            ["--threads=4", "--delete_inserts=1", "--skip_trx=off"],
            true,
        ),
    ] {
        let out = sysbench(
            &cl,
            &[
                "oltp_read_write",
                "--time=3",
                "--report-interval=0",
                args[0],
                args[1],
                args[2],
                "run",
            ],
        )
        .await;
        let count = |what: &str| {
            out.lines()
                .find(|l| l.trim_start().starts_with(what))
                .and_then(|l| l.split_whitespace().nth(what.split_whitespace().count()))
                .and_then(|n| n.parse::<u64>().ok())
        };
        if transactions {
            assert!(count("transactions:").is_some_and(|n| n > 0), "{out}");
        } else {
            assert_eq!(count("ignored errors:"), Some(0), "{out}");
        }
        assert!(out.contains("queries:"), "{out}");
    }
    let mut t = cl.proxy().await;
    let n: Option<u64> = t.query_first("SELECT COUNT(*) FROM sbtest1").await.unwrap();
    assert_eq!(n, Some(3000), "every delete was matched by its insert");
    t.disconnect().await.unwrap();
    cl.stop().await;
}

async fn expect_refused(c: &mut Conn, sql: &str, says: &str) {
    match c.query_drop(sql).await {
        Err(mysql_async::Error::Server(e)) => {
            assert_eq!(e.code, 1235, "{sql}: {}", e.message);
            assert!(e.message.contains(says), "{sql}: {}", e.message);
        }
        other => panic!("{sql}: expected a refusal, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn what_no_shard_can_answer_exactly_is_refused_with_the_reason() {
    let cl = Cluster::start("cl_refuse", false).await;
    let mut t = cl.proxy().await;
    t.query_drop("INSERT INTO users (id, name) VALUES (1, 'a'), (2, 'b'), (3, 'c'), (4, 'd')")
        .await
        .unwrap();
    t.query_drop("CREATE TABLE norule (id INT PRIMARY KEY)")
        .await
        .unwrap();
    expect_refused(&mut t, "SELECT * FROM norule", "`norule` has no rule").await;
    expect_refused(
        &mut t,
        "SELECT name, GROUP_CONCAT(id) FROM users GROUP BY name",
        "GROUP_CONCAT",
    )
    .await;
    expect_refused(
        &mut t,
        "SELECT u.id FROM users u JOIN bids b ON b.id = u.id",
        "not on their shard keys",
    )
    .await;
    expect_refused(
        &mut t,
        "SELECT * FROM users WHERE id IN (SELECT user_id FROM bids)",
        "subquery",
    )
    .await;
    expect_refused(
        &mut t,
        "INSERT INTO bids (user_id, amount, created_at) VALUES (LAST_INSERT_ID(), 2, NOW())",
        "must be a literal",
    )
    .await;
    expect_refused(&mut t, "UPDATE users SET id = 9 WHERE id = 1", "shard key").await;
    expect_refused(
        &mut t,
        "SELECT name FROM users GROUP BY name HAVING COUNT(*) > MAX(id)",
        "HAVING",
    )
    .await;
    // Groups sorted on an aggregate are buffered, up to merge_buffer
    // (64KiB here): 4,000 groups are more, and the read fails clearly; the
    // session goes on.
    for (i, o) in cl.shards.iter().enumerate() {
        let mut s = Conn::new(o.clone()).await.unwrap();
        s.query_drop(format!(
            "INSERT INTO bids (user_id, auction_id, amount, created_at) \
             SELECT seq, seq * 4 + {i}, 1, NOW() FROM seq_1_to_1000"
        ))
        .await
        .unwrap();
        s.disconnect().await.unwrap();
    }
    expect_refused(
        &mut t,
        "SELECT auction_id, COUNT(*) FROM bids GROUP BY auction_id ORDER BY COUNT(*) DESC LIMIT 3",
        "merge_buffer",
    )
    .await;
    // Ordered on the group, the same groups stream: nothing is held.
    let n: Vec<(u64, u64)> = t
        .query("SELECT auction_id, COUNT(*) FROM bids GROUP BY auction_id ORDER BY auction_id DESC LIMIT 2")
        .await
        .unwrap();
    assert_eq!(n, vec![(4003, 1), (4002, 1)]);
    expect_refused(
        &mut t,
        "SET @n = (SELECT COUNT(*) FROM users)",
        "SET that reads tables",
    )
    .await;
    let ids = crate::cluster_xa::users_on_distinct_shards(&cl.config, 2);
    let (a, b) = (ids[0].0, ids[1].0);
    // A transaction may write several shards (XA under the default
    // `cross_shard_transactions: xa`); ROLLBACK ends every branch.
    t.query_drop("BEGIN").await.unwrap();
    t.query_drop(format!("UPDATE users SET name = 'x' WHERE id = {a}"))
        .await
        .unwrap();
    t.query_drop(format!("UPDATE users SET name = 'y' WHERE id = {b}"))
        .await
        .unwrap();
    let seen: Vec<String> = t
        .query(format!(
            "SELECT name FROM users WHERE id IN ({a}, {b}) ORDER BY name"
        ))
        .await
        .unwrap();
    assert_eq!(seen, vec!["x", "y"], "the transaction sees its writes");
    t.query_drop("ROLLBACK").await.unwrap();
    let after: Vec<String> = t
        .query(format!("SELECT name FROM users WHERE id IN ({a}, {b})"))
        .await
        .unwrap();
    assert!(
        !after.iter().any(|n| n == "x" || n == "y"),
        "rolled back: {after:?}"
    );
    t.disconnect().await.unwrap();
    cl.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_multi_shard_write_commits_everywhere_or_nowhere() {
    let cl = Cluster::start("cl_atomic", false).await;
    let mut t = cl.proxy().await;
    t.query_drop(
        "INSERT INTO users (id, name) VALUES (1, 'a'), (2, 'b'), (3, 'c'), (4, 'd'), (5, 'e')",
    )
    .await
    .unwrap();
    assert_eq!(t.affected_rows(), 5);
    // Row 3 is a duplicate: one database refuses the whole statement.
    let e = t
        .query_drop("INSERT INTO users (id, name) VALUES (10, 'x'), (11, 'y'), (12, 'z'), (3, 'dup'), (13, 'w')")
        .await
        .unwrap_err();
    assert!(
        matches!(e, mysql_async::Error::Server(ref s) if s.code == 1062),
        "{e:?}"
    );
    let n: Option<i64> = t.query_first("SELECT COUNT(*) FROM users").await.unwrap();
    assert_eq!(n, Some(5), "no row of the refused insert on any shard");
    // A keyless update reports the rows of every shard, as ROW_COUNT().
    t.query_drop("UPDATE users SET balance = balance + 1")
        .await
        .unwrap();
    assert_eq!(t.affected_rows(), 5);
    let rc: Option<i64> = t.query_first("SELECT ROW_COUNT()").await.unwrap();
    assert_eq!(rc, Some(5));
    // DDL reaches every shard; a partial failure names the shards.
    t.query_drop("CREATE TABLE extra (id INT PRIMARY KEY)")
        .await
        .unwrap();
    for o in &cl.shards {
        let mut s = Conn::new(o.clone()).await.unwrap();
        let n: Option<i64> = s
            .query_first("SELECT COUNT(*) FROM information_schema.TABLES WHERE TABLE_SCHEMA = DATABASE() AND TABLE_NAME = 'extra'")
            .await
            .unwrap();
        assert_eq!(n, Some(1));
        s.disconnect().await.unwrap();
    }
    let mut s1 = Conn::new(cl.shards[1].clone()).await.unwrap();
    s1.query_drop("CREATE TABLE only_s1 (id INT)")
        .await
        .unwrap();
    s1.disconnect().await.unwrap();
    let e = t
        .query_drop("CREATE TABLE only_s1 (id INT)")
        .await
        .unwrap_err();
    let msg = e.to_string();
    assert!(
        msg.contains("failed on shard(s) s1") && msg.contains("applied on s0, s2, s3"),
        "{msg}"
    );
    // A table changed on one shard behind Tandem's back is drift: /status
    // and /metrics show it after the next check (DDL through Tandem wakes
    // it), check-config names it.
    let admin = cl.server.admin_addr.unwrap();
    let mut s2 = Conn::new(cl.shards[2].clone()).await.unwrap();
    s2.query_drop("ALTER TABLE categories ADD COLUMN note INT")
        .await
        .unwrap();
    s2.disconnect().await.unwrap();
    t.query_drop("CREATE TABLE wake (id INT PRIMARY KEY)")
        .await
        .unwrap();
    let mut seen = String::new();
    for _ in 0..100 {
        (_, _, seen) = common::http(admin, "GET", "/status").await;
        if seen.contains(r#""table":"categories""#) {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert!(
        seen.contains(r#""table":"categories","variants":[["s0","s1","s3"],["s2"]]"#),
        "{seen}"
    );
    let (_, _, metrics) = common::http(admin, "GET", "/metrics").await;
    assert!(
        metrics.contains("tandem_shard_schema_drift_tables 1"),
        "{metrics}"
    );
    let (code, _, err) = tandem_tool("check-config", &cl.config, &[]);
    assert_eq!(code, 1);
    assert!(
        err.contains("table `categories` differs between shards (s0, s1, s3 vs s2)"),
        "{err}"
    );
    // /status names the cluster; /metrics counts routes, merged rows and
    // each shard's answers.
    let (code, _, status) = common::http(admin, "GET", "/status").await;
    assert_eq!(code, 200);
    assert!(
        status.contains(r#""shards":["s0","s1","s2","s3"]"#),
        "{status}"
    );
    t.query_drop("SELECT * FROM users ORDER BY id")
        .await
        .unwrap();
    let (_, _, metrics) = common::http(admin, "GET", "/metrics").await;
    for want in [
        r#"tandem_shard_statements_total{route="all"}"#,
        r#"tandem_shard_statements_total{route="several"}"#,
        // The COUNT(*) row above and the five users.
        "tandem_shard_merged_rows_total 6",
        r#"tandem_shard_latency_seconds_count{shard="s3"}"#,
    ] {
        assert!(metrics.contains(want), "{want} in\n{metrics}");
    }
    // Session state reaches every shard the session uses.
    t.query_drop("SET @greeting = 'hi', time_zone = '+05:00'")
        .await
        .unwrap();
    for id in 1..=5 {
        let (g, tz): (String, String) = t
            .query_first(format!(
                "SELECT @greeting, @@time_zone FROM users WHERE id = {id}"
            ))
            .await
            .unwrap()
            .unwrap();
        assert_eq!((g.as_str(), tz.as_str()), ("hi", "+05:00"), "user {id}");
    }
    t.disconnect().await.unwrap();
    cl.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_config_and_route_explain_a_cluster() {
    let cl = Cluster::start("cl_tools", false).await;
    let (code, out, err) = tandem_tool("check-config", &cl.config, &[]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        out.contains("unique key PRIMARY (id) does not contain the shard key `seller_id`"),
        "{out}"
    );
    let (code, out, err) = tandem_tool(
        "route",
        &cl.config,
        &["SELECT id FROM users ORDER BY id DESC LIMIT 3 OFFSET 2"],
    );
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains("shards: s0, s1, s2, s3") && out.contains("LIMIT 5"),
        "{out}"
    );
    let (code, out, err) = tandem_tool(
        "route",
        &cl.config,
        &["SELECT name, AVG(balance) FROM users GROUP BY name ORDER BY 2 DESC"],
    );
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains("groups combined") && out.contains("SUM(balance), COUNT(balance) FROM"),
        "{out}"
    );
    let (code, _, err) = tandem_tool(
        "route",
        &cl.config,
        &["SELECT GROUP_CONCAT(name) FROM users"],
    );
    assert_eq!(code, 1);
    assert!(err.contains("GROUP_CONCAT"), "{err}");
    // A table without a rule fails check-config.
    let mut s0 = Conn::new(cl.shards[0].clone()).await.unwrap();
    s0.query_drop("CREATE TABLE stray (id INT PRIMARY KEY)")
        .await
        .unwrap();
    s0.disconnect().await.unwrap();
    let (code, out, err) = tandem_tool("check-config", &cl.config, &[]);
    assert_eq!(code, 1, "{out}");
    assert!(err.contains("table `stray` has no rule"), "{err}");
    // The placement is recorded: a restart that would place rows
    // differently (other bucket owners, other ranges) is refused.
    let text = std::fs::read_to_string(&cl.config).unwrap();
    for (from, to) in [
        ("buckets: 4096", "buckets: 1024"),
        ("shards: [s0, s1, s2, s3]", "shards: [s0, s2, s1, s3]"),
    ] {
        let edited = cl
            .config
            .with_file_name(format!("edited-{}.yaml", to.len()));
        std::fs::write(&edited, text.replace(from, to)).unwrap();
        let cfg = tandem::config::load(&edited).unwrap();
        let err = match tandem::server::start(cfg).await {
            Ok(_) => panic!("a server started with {to}"),
            Err(e) => e.to_string(),
        };
        assert!(err.contains("places rows differently"), "{err}");
    }
    cl.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn schema_questions_answer_under_the_clusters_name() {
    // The shards' databases are tandem_cl_meta_s0..3; clients see `app`.
    let cl = Cluster::start("cl_meta", false).await;
    let mut t = cl.proxy().await;
    let mut s0 = Conn::new(cl.shards[0].clone()).await.unwrap();
    let mut r = t.query_iter("SHOW TABLES").await.unwrap();
    let heading = r.columns_ref()[0].name_str().into_owned();
    let tables: Vec<String> = r.collect().await.unwrap();
    assert_eq!(heading, "Tables_in_app");
    let direct: Vec<String> = s0.query("SHOW TABLES").await.unwrap();
    assert_eq!(tables, direct);
    let from: Vec<String> = t.query("SHOW TABLES FROM app LIKE 'bid%'").await.unwrap();
    assert_eq!(from, vec!["bid_history", "bids"]);
    for q in [
        "DESCRIBE users",
        "SHOW COLUMNS FROM bids",
        "SHOW INDEX FROM bids",
        "SHOW CREATE TABLE categories",
    ] {
        let via: Vec<Row> = t.query(q).await.unwrap();
        let want: Vec<Row> = s0.query(q).await.unwrap();
        let show = |rows: Vec<Row>| -> Vec<Vec<String>> {
            rows.into_iter()
                .map(|r| r.unwrap().into_iter().map(|v| v.as_sql(true)).collect())
                .collect()
        };
        assert_eq!(show(via), show(want), "{q}");
    }
    let db: Option<String> = t.query_first("SELECT DATABASE()").await.unwrap();
    assert_eq!(db.as_deref(), Some("app"));
    let mut r = t
        .query_iter(
            "SELECT TABLE_SCHEMA, TABLE_NAME FROM information_schema.TABLES \
             WHERE TABLE_SCHEMA = 'app' ORDER BY TABLE_NAME",
        )
        .await
        .unwrap();
    assert_eq!(r.columns_ref()[0].schema_str(), "information_schema");
    let rows: Vec<(String, String)> = r.collect().await.unwrap();
    assert_eq!(rows.len(), direct.len());
    assert!(rows.iter().all(|(s, _)| s == "app"), "{rows:?}");
    let cols: Vec<(String, String)> = t
        .query(
            "SELECT COLUMN_NAME, DATA_TYPE FROM information_schema.COLUMNS \
             WHERE TABLE_SCHEMA = DATABASE() AND TABLE_NAME = 'users' ORDER BY ORDINAL_POSITION",
        )
        .await
        .unwrap();
    assert_eq!(cols[0], ("id".to_string(), "bigint".to_string()));
    // EXPLAIN: the plan on a shard the statement runs on.
    let plan: Vec<Row> = t
        .query("EXPLAIN SELECT * FROM users WHERE id = 7")
        .await
        .unwrap();
    assert_eq!(plan.len(), 1);
    s0.disconnect().await.unwrap();
    t.disconnect().await.unwrap();
    cl.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shard_key_left_to_its_default_is_pinned() {
    let cl = Cluster::start("cl_default", false).await;
    let mut t = cl.proxy().await;
    t.query_drop(
        "CREATE TABLE logs (id BIGINT PRIMARY KEY, at DATETIME NOT NULL DEFAULT CURRENT_TIMESTAMP, \
         msg VARCHAR(20))",
    )
    .await
    .unwrap();
    t.query_drop(
        "CREATE TABLE tagged (id BIGINT PRIMARY KEY, region VARCHAR(8) NOT NULL DEFAULT 'eu', \
         msg VARCHAR(20))",
    )
    .await
    .unwrap();
    // The default is evaluated once and every row placed by it: one
    // shard (s1's range holds today) has all rows, with the same value.
    t.query_drop("INSERT INTO logs (id, msg) VALUES (1, 'a'), (2, 'b'), (3, 'c')")
        .await
        .unwrap();
    assert_eq!(t.affected_rows(), 3);
    let mut per_shard = Vec::new();
    for o in &cl.shards {
        let mut s = Conn::new(o.clone()).await.unwrap();
        let n: Option<u64> = s.query_first("SELECT COUNT(*) FROM logs").await.unwrap();
        per_shard.push(n.unwrap());
        s.disconnect().await.unwrap();
    }
    assert_eq!(per_shard, vec![0, 3, 0, 0]);
    let at: Vec<String> = t
        .query("SELECT DISTINCT CAST(at AS CHAR) FROM logs")
        .await
        .unwrap();
    assert_eq!(at.len(), 1, "one pinned value: {at:?}");
    let (code, out, err) = tandem_tool("shard-of", &cl.config, &["logs", &at[0]]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("s1"), "{out}");
    // A constant default places the row as the value it will hold.
    t.query_drop("INSERT INTO tagged (id, msg) VALUES (7, 'x')")
        .await
        .unwrap();
    let (_, out, _) = tandem_tool("shard-of", &cl.config, &["tagged", "eu"]);
    let shard = out
        .split_whitespace()
        .find_map(|w| w.strip_prefix('s').and_then(|n| n.parse::<usize>().ok()))
        .expect("a shard name");
    let mut s = Conn::new(cl.shards[shard].clone()).await.unwrap();
    let region: Option<String> = s
        .query_first("SELECT region FROM tagged WHERE id = 7")
        .await
        .unwrap();
    assert_eq!(region.as_deref(), Some("eu"));
    s.disconnect().await.unwrap();
    let found: Option<String> = t
        .query_first("SELECT msg FROM tagged WHERE region = 'eu'")
        .await
        .unwrap();
    assert_eq!(found.as_deref(), Some("x"));
    // A TIMESTAMP key is placed by its UTC value: 03:00 on New Year's Day
    // at +05:00 is still 2024 in UTC, so s0's range.
    t.query_drop("CREATE TABLE stamps (id BIGINT PRIMARY KEY, at TIMESTAMP NOT NULL)")
        .await
        .unwrap();
    t.query_drop("SET time_zone = '+05:00'").await.unwrap();
    t.query_drop(
        "INSERT INTO stamps VALUES (1, '2025-01-01 03:00:00'), (2, '2025-01-01 06:00:00')",
    )
    .await
    .unwrap();
    let on = |i: usize| {
        let o = cl.shards[i].clone();
        async move {
            let mut s = Conn::new(o).await.unwrap();
            let ids: Vec<u64> = s.query("SELECT id FROM stamps ORDER BY id").await.unwrap();
            s.disconnect().await.unwrap();
            ids
        }
    };
    assert_eq!((on(0).await, on(1).await), (vec![1], vec![2]));
    let id: Option<u64> = t
        .query_first("SELECT id FROM stamps WHERE at = '2025-01-01 03:00:00'")
        .await
        .unwrap();
    assert_eq!(id, Some(1));
    // The same instant written in UTC after the zone changes.
    t.query_drop("SET time_zone = '+00:00'").await.unwrap();
    let id: Option<u64> = t
        .query_first("SELECT id FROM stamps WHERE at = '2024-12-31 22:00:00'")
        .await
        .unwrap();
    assert_eq!(id, Some(1));
    t.disconnect().await.unwrap();
    cl.stop().await;
}

/// Runs the `mariadb` CLI (LOCAL INFILE allowed) against the cluster:
/// (exit code, stdout, stderr).
fn cli(cl: &Cluster, sql: &str) -> (i32, String, String) {
    cli_with(cl, sql, "--local-infile=1")
}

fn cli_with(cl: &Cluster, sql: &str, local: &str) -> (i32, String, String) {
    let out = std::process::Command::new("mariadb")
        .args([
            local,
            "--protocol=TCP",
            "-h127.0.0.1",
            &format!("-P{}", cl.addr.port()),
            &format!("-u{}", common::USER),
            &format!("-p{}", common::PASSWORD),
            "app",
            "-e",
            sql,
        ])
        .output()
        .expect("the mariadb CLI runs");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn load_data_local_places_every_row_by_its_key() {
    let cl = Cluster::start("cl_load", false).await;
    let dir = tempfile::tempdir().unwrap();
    // Bids without ids (global ids given), one line with quotes and an
    // escaped separator, one NULL auction.
    let mut csv = String::new();
    for i in 1..=60u64 {
        csv.push_str(&format!(
            "{},{},{}.50,2025-0{}-0{} 10:00:00\n",
            i,
            i % 7,
            i,
            1 + i % 9,
            1 + i % 9
        ));
    }
    csv.push_str("61,\\N,1.00,2025-01-01 00:00:00\n");
    let file = dir.path().join("bids.csv");
    std::fs::write(&file, &csv).unwrap();
    let (code, _, err) = cli(
        &cl,
        &format!(
            "LOAD DATA LOCAL INFILE '{}' INTO TABLE bids FIELDS TERMINATED BY ',' \
             (user_id, auction_id, amount, created_at)",
            file.display()
        ),
    );
    assert_eq!(code, 0, "{err}");
    let mut t = cl.proxy().await;
    let (n, ids, total): (u64, u64, String) = t
        .query_first("SELECT COUNT(*), COUNT(DISTINCT id), SUM(amount) FROM bids")
        .await
        .unwrap()
        .unwrap();
    assert_eq!((n, ids), (61, 61));
    assert_eq!(total, format!("{}.00", (1..=60).sum::<u64>() + 30 + 1));
    let nulls: Option<u64> = t
        .query_first("SELECT COUNT(*) FROM bids WHERE auction_id IS NULL")
        .await
        .unwrap();
    assert_eq!(nulls, Some(1));
    // Every row on its user's shard.
    let cfg = tandem::config::load(&cl.config).unwrap();
    let c = cfg.cluster().unwrap().clone();
    for (i, o) in cl.shards.iter().enumerate() {
        let mut s = Conn::new(o.clone()).await.unwrap();
        let users: Vec<u64> = s.query("SELECT user_id FROM bids").await.unwrap();
        for u in users {
            let at = tandem::router::shard::shard_of(
                &c,
                &c.tables["bids"].placement,
                &tandem::router::shard::KeyType::Int,
                &tandem::router::shard::Canon::Int(u as i128),
            )
            .unwrap();
            assert_eq!(at, i, "user {u} on shard {i}");
        }
        s.disconnect().await.unwrap();
    }
    // IGNORE keeps the rows already there, as one database does.
    let users = dir.path().join("users.csv");
    std::fs::write(&users, "1\tann\t5.00\n2\tbob\t6.00\n1\tdup\t7.00\n").unwrap();
    let (code, _, err) = cli(
        &cl,
        &format!(
            "LOAD DATA LOCAL INFILE '{}' IGNORE INTO TABLE users; SELECT ROW_COUNT()",
            users.display()
        ),
    );
    assert_eq!(code, 0, "{err}");
    let names: Vec<(u64, String)> = t
        .query("SELECT id, name FROM users ORDER BY id")
        .await
        .unwrap();
    assert_eq!(names, vec![(1, "ann".to_string()), (2, "bob".to_string())]);
    // LOCAL without a modifier skips duplicates too (as IGNORE), as one
    // database does: the server cannot stop the client's file half-way.
    let (code, _, err) = cli(
        &cl,
        &format!(
            "LOAD DATA LOCAL INFILE '{}' INTO TABLE users",
            users.display()
        ),
    );
    assert_eq!(code, 0, "{err}");
    let again: Vec<(u64, String)> = t
        .query("SELECT id, name FROM users ORDER BY id")
        .await
        .unwrap();
    assert_eq!(again, names);
    // A client that cannot send files gets the server's refusal.
    let (code, _, err) = cli_with(
        &cl,
        &format!(
            "LOAD DATA LOCAL INFILE '{}' INTO TABLE users",
            users.display()
        ),
        "--local-infile=0",
    );
    assert_ne!(code, 0);
    assert!(err.contains("1148"), "{err}");
    // A file on the server's side is not the client's: refused.
    let (code, _, err) = cli(&cl, "LOAD DATA INFILE '/etc/hostname' INTO TABLE users");
    assert_ne!(code, 0);
    assert!(err.contains("LOCAL"), "{err}");
    t.disconnect().await.unwrap();
    cl.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn temporary_tables_are_the_sessions_own_on_every_shard() {
    let cl = Cluster::start("cl_temp", false).await;
    let mut t = cl.proxy().await;
    t.query_drop(
        "INSERT INTO users (id, name, balance) VALUES (1, 'a', 1), (2, 'b', 2), (3, 'c', 3), \
         (4, 'd', 4), (5, 'e', 5), (6, 'f', 6)",
    )
    .await
    .unwrap();
    // Created on every shard; rows written everywhere, read from one; a
    // join with a sharded table runs on each shard.
    t.query_drop("CREATE TEMPORARY TABLE picked (id BIGINT PRIMARY KEY, why VARCHAR(10))")
        .await
        .unwrap();
    t.query_drop("INSERT INTO picked VALUES (2, 'x'), (5, 'y'), (9, 'z')")
        .await
        .unwrap();
    assert_eq!(t.affected_rows(), 3);
    let n: Option<u64> = t.query_first("SELECT COUNT(*) FROM picked").await.unwrap();
    assert_eq!(n, Some(3));
    let joined: Vec<(u64, String, String)> = t
        .query("SELECT u.id, u.name, p.why FROM users u JOIN picked p ON p.id = u.id ORDER BY u.id")
        .await
        .unwrap();
    assert_eq!(
        joined,
        vec![(2, "b".into(), "x".into()), (5, "e".into(), "y".into())]
    );
    t.query_drop("INSERT INTO picked SELECT id, name FROM users WHERE id IN (1, 6)")
        .await
        .unwrap();
    let n: Option<u64> = t.query_first("SELECT COUNT(*) FROM picked").await.unwrap();
    assert_eq!(n, Some(5));
    // Another session does not see it.
    let mut other = cl.proxy().await;
    let e = other.query_drop("SELECT * FROM picked").await.unwrap_err();
    assert!(e.to_string().contains("picked"), "{e}");
    other.disconnect().await.unwrap();
    // Temporary-table DDL does not commit the open transaction.
    t.query_drop("BEGIN").await.unwrap();
    t.query_drop("UPDATE users SET name = 'zz' WHERE id = 1")
        .await
        .unwrap();
    t.query_drop("CREATE TEMPORARY TABLE scratch (i INT)")
        .await
        .unwrap();
    t.query_drop("ROLLBACK").await.unwrap();
    let name: Option<String> = t
        .query_first("SELECT name FROM users WHERE id = 1")
        .await
        .unwrap();
    assert_eq!(name.as_deref(), Some("a"));
    // CREATE … SELECT would copy each shard's own rows: refused.
    expect_refused(
        &mut t,
        "CREATE TEMPORARY TABLE copy SELECT * FROM users",
        "INSERT … SELECT",
    )
    .await;
    t.query_drop("DROP TEMPORARY TABLE picked, scratch")
        .await
        .unwrap();
    let e = t.query_drop("SELECT * FROM picked").await.unwrap_err();
    assert!(e.to_string().contains("picked"), "{e}");
    t.disconnect().await.unwrap();
    cl.stop().await;
}
