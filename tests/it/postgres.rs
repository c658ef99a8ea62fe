//! A PostgreSQL secondary, step one, real MariaDB → real PostgreSQL 15:
//! `tandem schema --to postgres`, `tandem backfill --create-tables` and
//! `tandem verify [--repair]`. Reading PostgreSQL directly must give back
//! the values MySQL gives (compared column by column through SQL on each
//! engine, not through Tandem's own canonical forms).

use crate::common::*;
use mysql_async::prelude::*;
use mysql_async::Conn;
use std::process::{Command, Stdio};
use std::time::Duration;

/// The role `scripts/setup.sh` creates.
const PG_URL: &str = "postgres://tandem:tandem@127.0.0.1:5432";

async fn pg(db: &str) -> tokio_postgres::Client {
    let (c, conn) = tokio_postgres::connect(
        &format!("host=127.0.0.1 port=5432 user=tandem password=tandem dbname={db}"),
        tokio_postgres::NoTls,
    )
    .await
    .expect("PostgreSQL on 127.0.0.1:5432 with role tandem (scripts/setup.sh)");
    tokio::spawn(conn);
    c
}

async fn fresh_pg_database(name: &str) {
    let c = pg("postgres").await;
    // One statement each: a multi-statement string runs as one transaction.
    c.batch_execute(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
        .await
        .unwrap();
    c.batch_execute(&format!("CREATE DATABASE {name}"))
        .await
        .unwrap();
}

/// A MariaDB database (utf8mb4) and a PostgreSQL one, and a config with
/// the PostgreSQL one as the secondary.
async fn setup(my: &str, pgdb: &str, dir: &std::path::Path) -> (Conn, std::path::PathBuf) {
    fresh_database(my).await;
    fresh_pg_database(pgdb).await;
    let mut p = Conn::new(direct_opts(my)).await.unwrap();
    p.query_drop(format!(
        "ALTER DATABASE `{my}` CHARACTER SET utf8mb4 COLLATE utf8mb4_general_ci"
    ))
    .await
    .unwrap();
    p.query_drop("SET NAMES utf8mb4").await.unwrap();
    let cfg = dir.join("pg.yaml");
    std::fs::write(
        &cfg,
        format!(
            "backends:\n  legacy: {{ kind: mysql, url: \"mysql://root@127.0.0.1:{MARIADB_PORT}/{my}\" }}\n  pg: {{ kind: postgres, url: \"{PG_URL}/{pgdb}\" }}\nmigration: {{ primary: legacy, secondary: pg, journal: {} }}\nrules: {}\n",
            dir.join("journal").display(),
            dir.join("rules").display()
        ),
    )
    .unwrap();
    (p, cfg)
}

const TYPES: &str = "CREATE TABLE types (
  id INT UNSIGNED NOT NULL AUTO_INCREMENT PRIMARY KEY,
  ti TINYINT, tb TINYINT(1), tu TINYINT UNSIGNED, si SMALLINT, su SMALLINT UNSIGNED,
  mi MEDIUMINT, mu MEDIUMINT UNSIGNED, ii INT, iu INT UNSIGNED, bi BIGINT, bu BIGINT UNSIGNED,
  yr YEAR, d1 DECIMAL(10,2), d65 DECIMAL(65,30), fl FLOAT, fl2 FLOAT(7,3), db DOUBLE,
  bt BIT(10), b64 BIT(64), ch CHAR(5), vc VARCHAR(20) COLLATE utf8mb4_bin, tx TEXT,
  bn BINARY(4), vb VARBINARY(10), bl BLOB, dt DATE, dtm DATETIME, dtm6 DATETIME(6),
  ts TIMESTAMP(3) NULL, ts0 TIMESTAMP NULL, tm TIME, tm6 TIME(6),
  en ENUM('b','a','it''s'), st SET('x','y','z'), js JSON,
  name VARCHAR(30) NOT NULL DEFAULT 'n',
  UNIQUE KEY uname (name), KEY kd (dt, dtm), KEY kpre (tx(10))
)";

/// Edge values of every mapped type; TIMESTAMPs written under several
/// session zones, around DST changes (as instants they must survive).
const ROWS: &[(&str, &str)] = &[
    ("+02:00", "(NULL, -128, 1, 255, -32768, 65535, -8388608, 16777215, -2147483648, 4294967295,
      -9223372036854775808, 18446744073709551615, 1901, -12345678.99,
      '-99999999999999999999999999999999999.999999999999999999999999999999', 3.14159274, 1234.567,
      2.718281828459045, b'1010101010', b'1111111111111111111111111111111111111111111111111111111111111111',
      'ab  ', 'trail  ', 'émoji 😀 ✓', 'a\\0', 'x\\0y', 'blob\\0\\1', '1000-01-01', '9999-12-31 23:59:59',
      '2024-03-31 02:30:00.123456', '2024-10-27 02:30:00.5', '2038-01-19 03:14:07', '-838:59:59',
      '838:59:59.999999', 'it''s', 'x,z', '{\"b\": 1, \"a\": [1, 2.50], \"b\": 2}', 'Alice')"),
    ("+00:00", "(NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL,
      NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL,
      NULL, NULL, NULL, NULL, NULL, 'bob')"),
    ("-08:00", "(NULL, 127, 0, 0, 32767, 0, 8388607, 0, 2147483647, 0, 9223372036854775807, 0, 2155,
      99999999.99, '99999999999999999999999999999999999.999999999999999999999999999999', -1.17549435e-38,
      -9999.999, -2.2250738585072014e-308, b'0', b'0', '', '', '', '', '', '', '2000-02-29',
      '1970-01-01 00:00:00', '1969-12-31 23:59:59.999999', '1970-01-01 00:00:01', '2024-11-03 01:30:00',
      '00:00:00', '-00:00:00.000001', 'b', '', '[]', 'carol')"),
    ("+05:30", "(NULL, 0, NULL, 1, 0, 1, 0, 1, 0, 1, 0, 1, 0, 0.01, 0.000000000000000000000000000001,
      3.402823e38, 0.001, 1e308, b'1', b'1000000000000000000000000000000000000000000000000000000000000000',
      'x', 'Ünïcödé', REPEAT('long ', 1000), 'abcd', '', 'x', '2024-02-29', '2000-01-01 00:00:00',
      '2000-01-01 00:00:00.000001', '2024-03-10 02:30:00.999', '2024-03-10 07:00:00', '-00:00:01',
      '123:45:06.5', 'a', 'x,y,z', '{\"k\": \"\\\\u00e9\", \"n\": null}', 'dave ')"),
];

/// Each column as text on MySQL and on PostgreSQL: independent of Tandem's
/// canonical forms (FLOAT and DOUBLE are compared as the binary values the
/// drivers return instead).
const SAME_TEXT: &[(&str, &str, &str)] = &[
    ("id", "CAST(id AS CHAR)", "id::text"),
    ("ti", "CAST(ti AS CHAR)", "ti::text"),
    ("tb", "CAST(tb AS CHAR)", "tb::text"),
    ("tu", "CAST(tu AS CHAR)", "tu::text"),
    ("si", "CAST(si AS CHAR)", "si::text"),
    ("su", "CAST(su AS CHAR)", "su::text"),
    ("mi", "CAST(mi AS CHAR)", "mi::text"),
    ("mu", "CAST(mu AS CHAR)", "mu::text"),
    ("ii", "CAST(ii AS CHAR)", "ii::text"),
    ("iu", "CAST(iu AS CHAR)", "iu::text"),
    ("bi", "CAST(bi AS CHAR)", "bi::text"),
    ("bu", "CAST(bu AS CHAR)", "bu::text"),
    ("yr", "CAST(yr + 0 AS CHAR)", "yr::text"),
    ("d1", "CAST(d1 AS CHAR)", "d1::text"),
    ("d65", "CAST(d65 AS CHAR)", "d65::text"),
    ("bt", "LPAD(BIN(bt), 10, '0')", "bt::text"),
    ("b64", "LPAD(BIN(b64), 64, '0')", "b64::text"),
    ("ch", "ch", "ch"),
    ("vc", "vc", "vc"),
    ("tx", "tx", "tx"),
    ("bn", "LOWER(HEX(bn))", "encode(bn, 'hex')"),
    ("vb", "LOWER(HEX(vb))", "encode(vb, 'hex')"),
    ("bl", "LOWER(HEX(bl))", "encode(bl, 'hex')"),
    (
        "dt",
        "DATE_FORMAT(dt, '%Y-%m-%d')",
        "to_char(dt, 'YYYY-MM-DD')",
    ),
    (
        "dtm",
        "DATE_FORMAT(dtm, '%Y-%m-%d %H:%i:%s')",
        "to_char(dtm, 'YYYY-MM-DD HH24:MI:SS')",
    ),
    (
        "dtm6",
        "DATE_FORMAT(dtm6, '%Y-%m-%d %H:%i:%s.%f')",
        "to_char(dtm6, 'YYYY-MM-DD HH24:MI:SS.US')",
    ),
    (
        "ts",
        "DATE_FORMAT(ts, '%Y-%m-%d %H:%i:%s.%f')",
        "to_char(ts, 'YYYY-MM-DD HH24:MI:SS.US')",
    ),
    (
        "ts0",
        "DATE_FORMAT(ts0, '%Y-%m-%d %H:%i:%s')",
        "to_char(ts0, 'YYYY-MM-DD HH24:MI:SS')",
    ),
    (
        "tm",
        "CAST(CAST(TIME_TO_SEC(tm) * 1000000 AS SIGNED) AS CHAR)",
        "(EXTRACT(EPOCH FROM tm) * 1000000)::bigint::text",
    ),
    (
        "tm6",
        "CAST(CAST(TIME_TO_SEC(tm6) * 1000000 AS SIGNED) AS CHAR)",
        "(EXTRACT(EPOCH FROM tm6) * 1000000)::bigint::text",
    ),
    ("en", "en", "en::text"),
    ("st", "st", "st"),
    ("js", "js", "js::text"),
    ("name", "name", "name"),
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_mapped_type_reads_back_from_postgres_as_mysql_gives_it() {
    let dir = tempfile::tempdir().unwrap();
    let (mut p, cfg) = setup("tandem_pg_types", "tandem_it_pg_types", dir.path()).await;
    p.query_drop(TYPES).await.unwrap();
    for (zone, row) in ROWS {
        p.query_drop(format!("SET time_zone = '{zone}'"))
            .await
            .unwrap();
        p.query_drop(format!("INSERT INTO types VALUES {row}"))
            .await
            .unwrap();
    }
    // A parent and a child with a foreign key: the child's name sorts first.
    p.query_drop(
        "CREATE TABLE zparent (id BIGINT PRIMARY KEY, label VARCHAR(10) NOT NULL DEFAULT 'p',
           created TIMESTAMP(6) NOT NULL DEFAULT CURRENT_TIMESTAMP(6) ON UPDATE CURRENT_TIMESTAMP(6));
         CREATE TABLE achild (id INT PRIMARY KEY, parent BIGINT NOT NULL,
           CONSTRAINT achild_parent FOREIGN KEY (parent) REFERENCES zparent (id) ON DELETE CASCADE);
         INSERT INTO zparent (id) VALUES (1), (2);
         INSERT INTO achild VALUES (10, 1), (11, 2), (12, 2)",
    )
    .await
    .unwrap();

    let (code, ddl, err) = tandem_tool("schema", &cfg, &["--to", "postgres"]);
    assert_eq!(code, 0, "{ddl}{err}");
    assert!(
        ddl.contains("CREATE TYPE \"public\".\"types_en_enum\" AS ENUM ('b', 'a', 'it''s')"),
        "{ddl}"
    );
    assert!(ddl.contains("\"bu\" NUMERIC(20,0) CHECK"), "{ddl}");
    assert!(ddl.contains("FOREIGN KEY (\"parent\") REFERENCES"), "{ddl}");

    let (code, out, err) = tandem_tool("backfill", &cfg, &["--create-tables"]);
    assert_eq!(code, 0, "{out}{err}");
    let (code, out, err) = tandem_tool("verify", &cfg, &[]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("result: identical"), "{out}");

    let pgc = pg("tandem_it_pg_types").await;
    // The same instants under every session zone (PostgreSQL's ISO
    // interval form: a POSIX '+05:30' would mean UTC-5:30).
    for zone in ["+00:00", "+05:30", "-08:00"] {
        p.query_drop(format!("SET time_zone = '{zone}'"))
            .await
            .unwrap();
        let pg_zone = format!("SET TIME ZONE INTERVAL '{zone}' HOUR TO MINUTE");
        pgc.batch_execute(&pg_zone).await.unwrap();
        for (col, my_expr, pg_expr) in SAME_TEXT {
            let mine: Vec<(u32, Option<Vec<u8>>)> = p
                .query(format!("SELECT id, {my_expr} FROM types ORDER BY id"))
                .await
                .unwrap();
            let theirs = pgc
                .query(
                    &format!("SELECT id, ({pg_expr})::text AS v FROM types ORDER BY 1"),
                    &[],
                )
                .await
                .unwrap();
            assert_eq!(mine.len(), theirs.len());
            for ((id, m), t) in mine.iter().zip(&theirs) {
                let t: Option<&str> = t.get(1);
                let m = m.as_ref().map(|b| String::from_utf8_lossy(b).into_owned());
                assert_eq!(m.as_deref(), t, "column {col}, id {id}, zone {zone}");
            }
        }
    }
    // Floats as the drivers hand them over (MySQL's text shows FLOAT with
    // six digits; the stored value is what must be the same).
    type Floats = (u32, Option<f32>, Option<f32>, Option<f64>);
    let floats: Vec<Floats> = p
        .exec("SELECT id, fl, fl2, db FROM types ORDER BY id", ())
        .await
        .unwrap();
    let theirs = pgc
        .query("SELECT id, fl, fl2, db FROM types ORDER BY id", &[])
        .await
        .unwrap();
    for ((id, fl, fl2, db), t) in floats.iter().zip(&theirs) {
        assert_eq!(*fl, t.get::<_, Option<f32>>(1), "fl id {id}");
        assert_eq!(*fl2, t.get::<_, Option<f32>>(2), "fl2 id {id}");
        assert_eq!(*db, t.get::<_, Option<f64>>(3), "db id {id}");
    }
    // The JSON text as written (MariaDB keeps it; jsonb would not).
    let js: String = pgc
        .query_one("SELECT js::text FROM types WHERE id = 1", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(js, "{\"b\": 1, \"a\": [1, 2.50], \"b\": 2}");

    // The identity continues after MySQL's AUTO_INCREMENT (before the
    // refused inserts below use up values, as they do in MySQL).
    let next: i64 = pgc
        .query_one("INSERT INTO types (name) VALUES ('eve') RETURNING id", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(next, 5);
    // Ranges MySQL refuses, PostgreSQL refuses too.
    for bad in [
        "UPDATE types SET tu = 256 WHERE id = 1",
        "UPDATE types SET iu = -1 WHERE id = 1",
        "UPDATE types SET bu = 18446744073709551616 WHERE id = 1",
        "UPDATE types SET st = 'x,w' WHERE id = 1",
        "UPDATE types SET tm = INTERVAL '839 hours' WHERE id = 1",
        "UPDATE types SET ch = 'ab ' WHERE id = 1",
    ] {
        assert!(pgc.execute(bad, &[]).await.is_err(), "{bad} was taken");
    }
    // A unique key on a case-insensitive column stays one on PostgreSQL
    // (PAD SPACE: trailing spaces do not count), and a lookup on the
    // folded value finds the row through that index.
    for dup in ["ALICE", "alice  ", "Dave"] {
        let e = pgc
            .execute("INSERT INTO types (name) VALUES ($1)", &[&dup])
            .await
            .unwrap_err();
        assert_eq!(
            e.code(),
            Some(&tokio_postgres::error::SqlState::UNIQUE_VIOLATION),
            "{dup}"
        );
    }
    let found: i64 = pgc
        .query_one(
            "SELECT id::bigint FROM types WHERE lower(rtrim(name::text, ' ')) = lower(rtrim($1, ' '))",
            &[&"aLiCe "],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(found, 1);
    // The foreign key came after the rows, and holds.
    assert!(pgc
        .execute("INSERT INTO achild VALUES (13, 99)", &[])
        .await
        .is_err());
    pgc.execute("DELETE FROM zparent WHERE id = 2", &[])
        .await
        .unwrap();
    let left: i64 = pgc
        .query_one("SELECT COUNT(*) FROM achild", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(left, 1, "ON DELETE CASCADE");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn what_postgres_cannot_hold_is_refused_with_the_row() {
    let dir = tempfile::tempdir().unwrap();
    let (mut p, cfg) = setup("tandem_pg_refuse", "tandem_it_pg_refuse", dir.path()).await;
    p.query_drop(
        "SET SESSION sql_mode = '';
         CREATE TABLE nul (id INT PRIMARY KEY, t VARCHAR(10));
         INSERT INTO nul VALUES (1, 'ok'), (2, 'a\\0b');
         CREATE TABLE zero (id INT PRIMARY KEY, d DATETIME);
         INSERT INTO zero VALUES (7, '0000-00-00 00:00:00');
         CREATE TABLE geo (id INT PRIMARY KEY, g GEOMETRY, v INT AS (id * 2) VIRTUAL);
         CREATE TABLE doc (id INT PRIMARY KEY, j JSON);
         INSERT INTO doc VALUES (1, '{\"b\": 1, \"a\": 2, \"a\": 3}')",
    )
    .await
    .unwrap();
    let (code, ddl, _) = tandem_tool("schema", &cfg, &["--to", "postgres"]);
    assert_eq!(code, 1, "{ddl}");
    assert!(ddl.contains("-- geo: NOT MAPPED"), "{ddl}");
    assert!(
        ddl.contains("type geometry has no PostgreSQL mapping"),
        "{ddl}"
    );
    assert!(ddl.contains("column v is generated"), "{ddl}");

    let (code, out, err) = tandem_tool("backfill", &cfg, &["--create-tables"]);
    assert_eq!(code, 2, "{out}{err}");
    assert!(
        out.contains("row with key (2): column t: the value holds a NUL character"),
        "{out}"
    );
    assert!(
        out.contains("row with key (7): column d: 0000-00-00 is a zero or zero-part date"),
        "{out}"
    );
    assert!(
        out.contains("geo") && out.contains("cannot be mapped"),
        "{out}"
    );
    // Nothing of a refused chunk is half-written.
    let pgc = pg("tandem_it_pg_refuse").await;
    let n: i64 = pgc
        .query_one("SELECT COUNT(*) FROM nul", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(n, 0);
    // And the server does not pretend to mirror into PostgreSQL.
    let (code, _, err) = tandem_tool("check-config", &cfg, &[]);
    assert_eq!(code, 1, "{err}");
    assert!(
        err.contains("cannot mirror writes into PostgreSQL yet"),
        "{err}"
    );
    assert!(err.contains("tandem backfill --create-tables"), "{err}");

    // Explicit per-table mappings take those values: NUL-holding text as
    // BYTEA, zero dates as -infinity, JSON as jsonb.
    std::fs::create_dir_all(dir.path().join("rules")).unwrap();
    std::fs::write(
        dir.path().join("rules/pg.yaml"),
        "tables:\n  nul: { postgres: { bytea_columns: [t] } }\n  zero: { postgres: { zero_dates: infinity } }\n  doc: { postgres: { jsonb: true } }\n",
    )
    .unwrap();
    pgc.batch_execute("DROP TABLE nul, zero, doc; DELETE FROM tandem.backfill_checkpoint")
        .await
        .unwrap();
    let tables = ["--tables", "nul,zero,doc"];
    let (code, ddl, err) = tandem_tool("schema", &cfg, &["--to", "postgres", tables[0], tables[1]]);
    assert_eq!(code, 0, "{ddl}{err}");
    assert!(
        ddl.contains("\"j\" JSONB") && ddl.contains("\"t\" BYTEA"),
        "{ddl}"
    );
    let (code, out, err) =
        tandem_tool("backfill", &cfg, &["--create-tables", tables[0], tables[1]]);
    assert_eq!(code, 0, "{out}{err}");
    let (code, out, err) = tandem_tool("verify", &cfg, &tables);
    assert_eq!(code, 0, "{out}{err}");
    let t: Vec<u8> = pgc
        .query_one("SELECT t FROM nul WHERE id = 2", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(t, b"a\0b");
    let d: String = pgc
        .query_one("SELECT d::text FROM zero WHERE id = 7", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(d, "-infinity");
    let j: String = pgc
        .query_one("SELECT j::text FROM doc WHERE id = 1", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(j, r#"{"a": 3, "b": 1}"#);
    // A planted difference in a remapped column is still found.
    pgc.batch_execute("UPDATE zero SET d = '2000-01-01' WHERE id = 7")
        .await
        .unwrap();
    let (code, out, _) = tandem_tool("verify", &cfg, &tables);
    assert_eq!(code, 1, "{out}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_backfill_resumes_after_kill_and_verify_repairs() {
    let dir = tempfile::tempdir().unwrap();
    let (mut p, cfg) = setup("tandem_pg_resume", "tandem_it_pg_resume", dir.path()).await;
    p.query_drop(
        "CREATE TABLE big (id INT PRIMARY KEY, k INT NOT NULL, c VARCHAR(60) NOT NULL,
           d DECIMAL(12,3), t DATETIME(6) NULL, f DOUBLE, UNIQUE KEY kc (c));
         INSERT INTO big SELECT seq, seq % 1000, CONCAT('row ', seq), seq / 7,
           IF(seq % 5 = 0, NULL, '2024-01-01 00:00:00.123456'), seq / 3 FROM seq_1_to_150000;
         CREATE TABLE tags (name VARCHAR(20) PRIMARY KEY, n INT);
         INSERT INTO tags SELECT CONCAT(CHAR(65 + seq % 26), '-', seq), seq FROM seq_1_to_3000",
    )
    .await
    .unwrap();
    let bin = env!("CARGO_BIN_EXE_tandem");
    let mut child = Command::new(bin)
        .args(["backfill", "--create-tables", "--config"])
        .arg(&cfg)
        .args(["--chunk-size", "2000", "--rate", "30000"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let pgc = pg("tandem_it_pg_resume").await;
    let mut copied = 0i64;
    for _ in 0..400 {
        tokio::time::sleep(Duration::from_millis(25)).await;
        copied = pgc
            .query_opt(
                "SELECT rows_copied FROM tandem.backfill_checkpoint WHERE table_name = 'big'",
                &[],
            )
            .await
            .ok()
            .flatten()
            .map_or(0, |r| r.get(0));
        if copied >= 20_000 {
            break;
        }
    }
    child.kill().unwrap();
    child.wait().unwrap();
    assert!(copied > 0 && copied < 150_000, "killed mid-way ({copied})");
    let (code, out, err) = tandem_tool("backfill", &cfg, &["--create-tables"]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("resumed from checkpoint"), "{out}");
    let n: i64 = pgc
        .query_one("SELECT COUNT(*) FROM big", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(n, 150_000);
    let (code, out, err) = tandem_tool("verify", &cfg, &[]);
    assert_eq!(code, 0, "{out}{err}");

    // Plant differences: a changed value, a missing row, an extra row, a
    // float one bit off.
    pgc.batch_execute(
        "UPDATE big SET d = d + 0.001 WHERE id = 777;
         DELETE FROM big WHERE id = 149999;
         INSERT INTO big VALUES (200001, 1, 'only here', NULL, NULL, NULL);
         UPDATE big SET f = f + 1e-12 WHERE id = 3;
         INSERT INTO tags VALUES ('only-pg', 1);
         UPDATE tags SET n = -1 WHERE name = 'B-1';
         DELETE FROM tags WHERE name = 'Z-25'",
    )
    .await
    .unwrap();
    let json = dir.path().join("report.json");
    let (code, out, err) = tandem_tool("verify", &cfg, &["--json", json.to_str().unwrap()]);
    assert_eq!(code, 1, "{out}{err}");
    let report: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    let t = &report["tables"][0];
    assert_eq!(t["missing"], serde_json::json!(["149999"]), "{report}");
    assert_eq!(t["extra"], serde_json::json!(["200001"]), "{report}");
    assert_eq!(t["changed"], serde_json::json!(["3", "777"]), "{report}");
    // String keys (looked up, not walked by range: collations order them
    // differently) find the same kinds of difference.
    let t = &report["tables"][1];
    assert_eq!(t["missing"], serde_json::json!(["Z-25"]), "{report}");
    assert_eq!(t["extra"], serde_json::json!(["only-pg"]), "{report}");
    assert_eq!(t["changed"], serde_json::json!(["B-1"]), "{report}");
    let (code, out, err) = tandem_tool("verify", &cfg, &["--repair"]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("repaired (4 rows)"), "{out}");
    assert!(out.contains("repaired (3 rows)"), "{out}");
    let (code, out, err) = tandem_tool("verify", &cfg, &[]);
    assert_eq!(code, 0, "{out}{err}");
}
