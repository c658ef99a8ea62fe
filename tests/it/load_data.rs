//! LOAD DATA LOCAL INFILE through a mirroring Tandem (the `mariadb` CLI as
//! the client): the rows reach the secondary exactly, and the primary ends
//! as a reference database loaded directly with the same files does.

use crate::common::mirror::MirrorEnv;
use crate::common::*;
use mysql_async::prelude::*;
use mysql_async::Conn;

/// Runs `sql` with the mariadb CLI on `port` (through Tandem when it is
/// the proxy's), LOCAL INFILE allowed.
fn cli(port: u16, user: &str, password: &str, db: &str, sql: &str) -> (i32, String, String) {
    let mut cmd = std::process::Command::new("mariadb");
    cmd.args([
        "--local-infile=1",
        "--protocol=TCP",
        "-h127.0.0.1",
        &format!("-P{port}"),
        &format!("-u{user}"),
        "-N",
        db,
        "-e",
        sql,
    ]);
    if !password.is_empty() {
        cmd.arg(format!("-p{password}"));
    }
    let out = cmd.output().expect("the mariadb CLI runs");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

const TABLE: &str = "CREATE TABLE bids (id INT AUTO_INCREMENT PRIMARY KEY, user_id INT NOT NULL,
    amount DECIMAL(10,2), note VARCHAR(20) NOT NULL DEFAULT 'none',
    created DATETIME(6) NOT NULL DEFAULT '2020-01-01 00:00:00', f FLOAT NULL,
    UNIQUE KEY u (user_id, amount))";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn load_data_local_is_mirrored_as_the_rows_it_wrote() {
    let env = MirrorEnv::start("loaddata", "").await;
    env.create_both(TABLE).await;
    let reference = "tandem_loaddata_ref";
    fresh_database(reference).await;
    let mut r = Conn::new(direct_opts(reference)).await.unwrap();
    r.query_drop(TABLE).await.unwrap();
    drop(r);
    let dir = tempfile::tempdir().unwrap();
    // Rows without ids, a quoted field with the separator, a NULL, a
    // duplicate of the row already there (IGNORE skips it), a SET.
    let first = dir.path().join("first.csv");
    let mut csv = String::from("1,1.50\n");
    for i in 2..=300 {
        csv.push_str(&format!("{i},{}.25\n", i % 17));
    }
    // A value the server converts (with a warning) as it parses the file.
    csv.push_str("7,\\N\n\"9\",\"3.75\"\n8001,not-a-number\n");
    std::fs::write(&first, &csv).unwrap();
    // Explicit ids replacing rows, and a row past every id so far.
    let second = dir.path().join("second.tsv");
    std::fs::write(&second, "5\t5000\t1.00\n6\t6000\t2.00\n900\t9000\t3.00\n").unwrap();
    // FLOATs whose text (six digits) is not their value.
    let floats = dir.path().join("floats.csv");
    std::fs::write(
        &floats,
        "60001,0,1.0000001\n60002,0,16777217\n60003,0,3.4028234e38\n",
    )
    .unwrap();
    let statements = [
        "INSERT INTO bids (user_id, amount) VALUES (1, 1.50)".to_string(),
        format!(
            "LOAD DATA LOCAL INFILE '{}' INTO TABLE bids FIELDS TERMINATED BY ',' (user_id, amount, f)",
            floats.display()
        ),
        format!(
            "LOAD DATA LOCAL INFILE '{}' IGNORE INTO TABLE bids FIELDS TERMINATED BY ',' \
             OPTIONALLY ENCLOSED BY '\"' (user_id, amount) SET note = CONCAT('u', user_id); \
             SELECT ROW_COUNT()",
            first.display()
        ),
        format!(
            "LOAD DATA LOCAL INFILE '{}' REPLACE INTO TABLE bids (id, user_id, amount)",
            second.display()
        ),
        // After the load, ids continue past the loaded ones.
        "INSERT INTO bids (user_id, amount) VALUES (77777, 0.01)".to_string(),
    ];
    let proxy_port = env.server.addr.port();
    let mut counts = Vec::new();
    for sql in &statements {
        let (code, out, err) = cli(proxy_port, USER, PASSWORD, &env.primary, sql);
        assert_eq!(code, 0, "{sql}: {err}");
        let (code, direct, err) = cli(MARIADB_PORT, "root", "", reference, sql);
        assert_eq!(code, 0, "{sql}: {err}");
        // The client's answers are the ones the database gives directly.
        assert_eq!(out, direct, "{sql}");
        counts.push(out);
    }
    assert_eq!(counts[2].trim(), "302", "303 lines, one a duplicate");
    // LOCAL implies IGNORE (the server cannot stop the client's file
    // half-way): a duplicate without a modifier is skipped, as directly.
    let dup = dir.path().join("dup.csv");
    std::fs::write(&dup, "8000,1.00\n1,1.50\n").unwrap();
    let sql = format!(
        "LOAD DATA LOCAL INFILE '{}' INTO TABLE bids FIELDS TERMINATED BY ',' (user_id, amount); \
         SELECT ROW_COUNT()",
        dup.display()
    );
    let (code, out, err) = cli(proxy_port, USER, PASSWORD, &env.primary, &sql);
    assert_eq!(code, 0, "{err}");
    let (_, direct, _) = cli(MARIADB_PORT, "root", "", reference, &sql);
    assert_eq!((out.trim(), direct.trim()), ("1", "1"));
    // A LOAD the server refuses writes nothing on either side, and the
    // client gets the server's error.
    let sql = format!(
        "LOAD DATA LOCAL INFILE '{}' INTO TABLE bids FIELDS TERMINATED BY ',' (user_id, nope)",
        dup.display()
    );
    let (code, _, err) = cli(proxy_port, USER, PASSWORD, &env.primary, &sql);
    assert_ne!(code, 0);
    assert!(err.contains("1054"), "{err}");
    let (_, _, direct_err) = cli(MARIADB_PORT, "root", "", reference, &sql);
    assert!(direct_err.contains("1054"), "{direct_err}");
    // Inside a transaction nothing of Tandem's staging commits it: a
    // ROLLBACK takes the loaded rows back with the rest, as directly.
    let txn = dir.path().join("txn.csv");
    std::fs::write(&txn, "4243,1.00\n4244,2.00\n").unwrap();
    let sql = format!(
        "BEGIN; INSERT INTO bids (user_id, amount) VALUES (4242, 4.20); \
         LOAD DATA LOCAL INFILE '{}' INTO TABLE bids FIELDS TERMINATED BY ',' (user_id, amount); \
         ROLLBACK; SELECT COUNT(*) FROM bids WHERE user_id BETWEEN 4242 AND 4244",
        txn.display()
    );
    let (code, out, err) = cli(proxy_port, USER, PASSWORD, &env.primary, &sql);
    assert_eq!(code, 0, "{err}");
    let (_, direct, _) = cli(MARIADB_PORT, "root", "", reference, &sql);
    assert_eq!((out.trim(), direct.trim()), ("0", "0"));

    // PyMySQL checks every sequence id, and sends the LOAD inside a
    // multi-statement packet: the same answers as from the database.
    let script = r#"
import sys, pymysql
from pymysql.constants import CLIENT
port, user, pw, db, path = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4], sys.argv[5]
c = pymysql.connect(host="127.0.0.1", port=int(port), user=user, password=pw, database=db,
                    local_infile=True, client_flag=CLIENT.MULTI_STATEMENTS, autocommit=True)
cur = c.cursor()
print(cur.execute(f"LOAD DATA LOCAL INFILE '{path}' INTO TABLE bids FIELDS TERMINATED BY ',' (user_id, amount)"))
cur.execute(f"LOAD DATA LOCAL INFILE '{path}' REPLACE INTO TABLE bids FIELDS TERMINATED BY ',' (user_id, amount); SELECT ROW_COUNT(); SELECT COUNT(*) FROM bids")
out = [cur.fetchall()]
while cur.nextset():
    out.append(cur.fetchall())
print(out)
"#;
    let py = dir.path().join("py.csv");
    std::fs::write(&py, "5000,1.00\n5001,2.00\n").unwrap();
    let args = |port: u16, user: &str, pw: &str, db: &str| {
        vec![
            port.to_string(),
            user.to_string(),
            pw.to_string(),
            db.to_string(),
            py.display().to_string(),
        ]
    };
    let (ok, through) = python(script, args(proxy_port, USER, PASSWORD, &env.primary)).await;
    assert!(ok, "{through}");
    let (ok, direct) = python(script, args(MARIADB_PORT, "root", "", reference)).await;
    assert!(ok, "{direct}");
    assert_eq!(through, direct);

    env.wait_caught_up().await;
    let n = env.assert_same("bids").await;
    assert_eq!(n, 310);
    // And the primary holds what the reference database holds. (Its ids
    // may differ: InnoDB reserves ids for a LOAD, whose row count it does
    // not know, in growing blocks, and for an INSERT … VALUES exactly; the
    // secondary has the primary's ids, above.)
    let content = "SELECT user_id, amount, note, created, CAST(f AS DOUBLE) FROM bids \
                   ORDER BY user_id, amount";
    let mut seen = Vec::new();
    for db in [env.primary.as_str(), reference] {
        let mut c = Conn::new(direct_opts(db)).await.unwrap();
        let r: Vec<mysql_async::Row> = c.query(content).await.unwrap();
        seen.push(r.into_iter().map(|r| r.unwrap()).collect::<Vec<_>>());
        c.disconnect().await.unwrap();
    }
    assert_eq!(seen[0], seen[1]);
    // No staging table is left behind in the session that loaded (a
    // temporary table is its connection's only; every row is a duplicate
    // by now, so nothing changes).
    let sql = format!(
        "LOAD DATA LOCAL INFILE '{}' INTO TABLE bids FIELDS TERMINATED BY ',' (user_id, amount); \
         SELECT COUNT(*) FROM _tandem_load_staging",
        dup.display()
    );
    let (code, _, err) = cli(proxy_port, USER, PASSWORD, &env.primary, &sql);
    assert_ne!(code, 0);
    assert!(err.contains("1146"), "{err}");
    drop_databases(&[reference]).await;
    env.stop().await;
}

/// Columns a LOAD leaves out take the target's defaults, as directly:
/// a sequence's next value and RAND() (which a staging table would drop
/// to NULL), pinned so the secondary has the primary's values; a
/// generated column left out of the list is computed by the target.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn columns_a_load_leaves_out_take_the_targets_defaults() {
    let env = MirrorEnv::start("loaddefaults", "").await;
    let schema = [
        "CREATE SEQUENCE sq",
        "CREATE TABLE seqd (id INT AUTO_INCREMENT PRIMARY KEY, v INT, \
         s INT DEFAULT (NEXT VALUE FOR sq), r DOUBLE DEFAULT (RAND()), \
         g INT AS (v * 2) PERSISTENT)",
    ];
    let reference = "tandem_loaddefaults_ref";
    fresh_database(reference).await;
    let mut r = Conn::new(direct_opts(reference)).await.unwrap();
    for ddl in schema {
        env.create_both(ddl).await;
        r.query_drop(ddl).await.unwrap();
    }
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("v.csv");
    std::fs::write(&file, "10\n20\n30\n").unwrap();
    let sql = format!(
        "LOAD DATA LOCAL INFILE '{}' INTO TABLE seqd (v)",
        file.display()
    );
    let (code, _, err) = cli(env.server.addr.port(), USER, PASSWORD, &env.primary, &sql);
    assert_eq!(code, 0, "{err}");
    let (code, _, err) = cli(MARIADB_PORT, "root", "", reference, &sql);
    assert_eq!(code, 0, "{err}");
    let read = "SELECT v, s, r IS NOT NULL, g FROM seqd ORDER BY v";
    let mut p = Conn::new(direct_opts(&env.primary)).await.unwrap();
    let through: Vec<(i32, Option<i32>, bool, i32)> = p.query(read).await.unwrap();
    let direct: Vec<(i32, Option<i32>, bool, i32)> = r.query(read).await.unwrap();
    assert_eq!(through, direct);
    assert_eq!(through[0], (10, Some(1), true, 20));
    env.wait_caught_up().await;
    assert_eq!(env.assert_same("seqd").await, 3);
    drop((p, r));
    drop_databases(&[reference]).await;
    env.stop().await;
}
