//! `tandem backfill` against real MariaDB databases: resumable after
//! SIGKILL, compares rows already present, creates missing tables, refuses tables without
//! a primary key, and ends identical (checked with verify).

use crate::common::*;
use mysql_async::prelude::*;
use mysql_async::Conn;
use std::process::{Command, Stdio};
use std::time::Duration;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backfill_resumes_after_kill_and_ends_identical() {
    let (pdb, sdb) = ("tandem_bf_p", "tandem_bf_s");
    fresh_database(pdb).await;
    fresh_database(sdb).await;
    let mut p = Conn::new(direct_opts(pdb)).await.unwrap();
    let mut s = Conn::new(direct_opts(sdb)).await.unwrap();
    p.query_drop(
        "CREATE TABLE big (id INT PRIMARY KEY AUTO_INCREMENT, k INT NOT NULL, c VARCHAR(120) NOT NULL,
         d DECIMAL(10,2), b BLOB NULL, t DATETIME(6) NULL)",
    )
    .await
    .unwrap();
    p.query_drop(
        "INSERT INTO big SELECT seq, seq % 1000, CONCAT('it''s \\\\ \"row\" ', seq), seq / 7,
         IF(seq % 3 = 0, NULL, UNHEX(CONCAT('00FF', HEX(seq)))), IF(seq % 5 = 0, NULL, '2024-01-01 00:00:00.123456')
         FROM seq_1_to_200000",
    )
    .await
    .unwrap();
    p.query_drop("CREATE TABLE nopk (x INT)").await.unwrap();
    // The secondary has the table already, and one row that differs from
    // the primary's.
    let ddl: (String, String) = p
        .query_first("SHOW CREATE TABLE big")
        .await
        .unwrap()
        .unwrap();
    s.query_drop(ddl.1).await.unwrap();
    s.query_drop("INSERT INTO big (id, k, c) VALUES (5, -1, 'newer, from the mirror')")
        .await
        .unwrap();

    let dir = tempfile::tempdir().unwrap();
    let cfg = two_database_config(dir.path(), pdb, sdb);
    let bin = env!("CARGO_BIN_EXE_tandem");

    // Start, then SIGKILL once some chunks are committed.
    let mut child = Command::new(bin)
        .args(["backfill", "--config"])
        .arg(&cfg)
        .args(["--tables", "big", "--chunk-size", "2000", "--rate", "40000"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut copied = 0u64;
    for _ in 0..200 {
        tokio::time::sleep(Duration::from_millis(25)).await;
        copied = s
            .query_first("SELECT rows_copied FROM tandem.backfill_checkpoint WHERE db = DATABASE() AND table_name = 'big'")
            .await
            .ok()
            .flatten()
            .unwrap_or(0);
        if copied >= 20_000 {
            break;
        }
    }
    child.kill().unwrap();
    child.wait().unwrap();
    assert!(
        copied > 0 && copied < 200_000,
        "killed mid-way (copied {copied})"
    );

    let (code, text, err) = tandem_tool("backfill", &cfg, &["--tables", "big"]);
    assert_eq!(code, 0, "{text}{err}");
    assert!(text.contains("resumed from checkpoint"), "{text}");
    let read: u64 = text
        .split("read ")
        .nth(1)
        .and_then(|r| r.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap();
    assert!(
        read < 200_000,
        "the second run did not recopy everything ({read} rows read)"
    );

    // Row 5 was on the secondary before its copy (as a mirrored upsert of
    // a row not copied yet leaves one): its chunk was compared, not kept.
    let (kept, want): (String, String) = s
        .query_first(format!(
            "SELECT s.c, p.c FROM big s JOIN `{pdb}`.big p USING (id) WHERE id = 5"
        ))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        kept, want,
        "a row present before its copy is compared and fixed"
    );
    let (code, out, _) = tandem_tool("verify", &cfg, &["--tables", "big"]);
    assert_eq!(code, 0, "{out}");

    // A third run finds the checkpoint done and copies nothing.
    let (code, out, _) = tandem_tool("backfill", &cfg, &["--tables", "big"]);
    assert_eq!(code, 0);
    assert!(out.contains("read 0 rows"), "{out}");

    // --create-tables creates a missing table from the primary's schema.
    p.query_drop("CREATE TABLE small (id VARCHAR(10) PRIMARY KEY, v INT)")
        .await
        .unwrap();
    p.query_drop("INSERT INTO small VALUES ('a', 1), ('b', 2), ('c''q', 3)")
        .await
        .unwrap();
    let (code, out, _) = tandem_tool("backfill", &cfg, &["--tables", "small"]);
    assert_eq!(code, 2);
    assert!(out.contains("--create-tables"), "{out}");
    let (code, out, _) = tandem_tool("backfill", &cfg, &["--tables", "small", "--create-tables"]);
    assert_eq!(code, 0, "{out}");
    let n: Option<i64> = s.query_first("SELECT COUNT(*) FROM small").await.unwrap();
    assert_eq!(n, Some(3));

    // No primary key: refused with a clear message.
    let (code, out, _) = tandem_tool("backfill", &cfg, &["--tables", "nopk"]);
    assert_eq!(code, 2);
    assert!(out.contains("has no primary key"), "{out}");

    p.disconnect().await.unwrap();
    s.disconnect().await.unwrap();
    drop_databases(&[pdb, sdb]).await;
}
