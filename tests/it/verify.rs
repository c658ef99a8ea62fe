//! `tandem verify` against two real MariaDB databases: identical tables
//! (despite different DECIMAL/DATETIME scales) pass; changed, missing and
//! extra rows made behind Tandem's back are found with their keys, exit 1,
//! and --repair fixes them; a table without a primary key is refused.

use crate::common::*;
use mysql_async::prelude::*;
use mysql_async::Conn;

async fn fresh_db(name: &str) -> Conn {
    fresh_database(name).await;
    Conn::new(direct_opts(name)).await.unwrap()
}

async fn fill(c: &mut Conn, decimal_scale: u8, time_scale: u8) {
    c.query_drop(format!(
        "CREATE TABLE items (id INT PRIMARY KEY, name VARCHAR(40), price DECIMAL(12,{decimal_scale}),
         at DATETIME({time_scale}), f DOUBLE, b BLOB NULL, note VARCHAR(10) NULL)"
    ))
    .await
    .unwrap();
    c.query_drop(
        "INSERT INTO items SELECT seq, CONCAT('item-', seq), seq / 4, '2024-05-06 07:08:09.5' + INTERVAL seq SECOND,
         IF(seq % 100 = 0, -0.0, seq / 3), IF(seq % 7 = 0, NULL, UNHEX(HEX(seq))), IF(seq % 5 = 0, '', NULL)
         FROM seq_1_to_5000",
    )
    .await
    .unwrap();
    c.query_drop("CREATE TABLE pairs (a INT, b VARCHAR(10), v INT, PRIMARY KEY (a, b))")
        .await
        .unwrap();
    c.query_drop("INSERT INTO pairs SELECT seq % 50, CONCAT('k', seq), seq FROM seq_1_to_2000")
        .await
        .unwrap();
    c.query_drop("CREATE TABLE nopk (x INT)").await.unwrap();
}

fn run(cfg: &std::path::Path, args: &[&str]) -> (i32, String, String) {
    tandem_tool("verify", cfg, args)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verify_finds_and_repairs_differences() {
    let (pdb, sdb) = ("tandem_vfy_p", "tandem_vfy_s");
    let mut p = fresh_db(pdb).await;
    let mut s = fresh_db(sdb).await;
    fill(&mut p, 2, 3).await;
    fill(&mut s, 4, 6).await; // same values, wider scales
    let dir = tempfile::tempdir().unwrap();
    let cfg = two_database_config(dir.path(), pdb, sdb);
    let tables = ["--tables", "items,pairs", "--chunk-size", "700"];

    let (code, out, err) = run(&cfg, &tables);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("result: identical"), "{out}");

    // Differences made behind Tandem's back.
    s.query_drop("UPDATE items SET name = 'tampered' WHERE id = 42")
        .await
        .unwrap();
    s.query_drop("UPDATE items SET note = NULL WHERE id = 10")
        .await
        .unwrap(); // '' -> NULL
    s.query_drop("DELETE FROM items WHERE id = 4000")
        .await
        .unwrap();
    s.query_drop("INSERT INTO items (id, name) VALUES (0, 'before'), (99999, 'after')")
        .await
        .unwrap();
    s.query_drop("UPDATE pairs SET v = -1 WHERE a = 3 AND b = 'k3'")
        .await
        .unwrap();
    // The same report whether suspects or whole chunks are compared under
    // the primary's locks (`--locked`).
    for locked in [false, true] {
        let json = dir.path().join("report.json");
        let mut args = tables.to_vec();
        let json_s = json.display().to_string();
        args.extend(["--json", &json_s]);
        if locked {
            args.push("--locked");
        }
        let (code, out, _) = run(&cfg, &args);
        assert_eq!(code, 1, "{out}");
        assert!(out.contains("DIVERGENT"), "{out}");
        let report: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
        let items = &report["tables"][0];
        assert_eq!(items["table"], "items");
        assert_eq!(
            items["missing"],
            serde_json::json!(["4000"]),
            "locked {locked}"
        );
        assert_eq!(
            items["extra"],
            serde_json::json!(["0", "99999"]),
            "locked {locked}"
        );
        assert_eq!(
            items["changed"],
            serde_json::json!(["10", "42"]),
            "locked {locked}"
        );
        let pairs = &report["tables"][1];
        assert_eq!(
            pairs["changed"],
            serde_json::json!(["3,k3"]),
            "locked {locked}"
        );
        assert_eq!(report["identical"], false);
    }

    let mut args = tables.to_vec();
    args.push("--repair");
    let (code, out, err) = run(&cfg, &args);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("repaired"), "{out}");
    let (code, out, _) = run(&cfg, &tables);
    assert_eq!(code, 0, "{out}");
    let row: (String, Option<String>) = s
        .query_first("SELECT name, note FROM items WHERE id = 42")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(row.0, "item-42");

    // No primary key: refused with a clear message, exit 2.
    let (code, out, _) = run(&cfg, &["--tables", "nopk"]);
    assert_eq!(code, 2, "{out}");
    assert!(out.contains("has no primary key"), "{out}");
    // Unknown table: exit 2.
    let (code, _, err) = run(&cfg, &["--tables", "nope"]);
    assert_eq!(code, 2);
    assert!(err.contains("unknown table"), "{err}");

    p.disconnect().await.unwrap();
    s.disconnect().await.unwrap();
    drop_databases(&[pdb, sdb]).await;
}
