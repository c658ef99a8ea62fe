//! Mirror exactness: each case here once left the secondary different from
//! the primary without a word (issue 25). Every test writes through a
//! mirroring Tandem and compares both sides row for row.

use crate::common::mirror::*;
use crate::common::raw::RawClient;
use crate::common::*;
use mysql_async::prelude::*;
use tandem::protocol::response::Expect;

/// Session settings that change what a write stores travel with it:
/// `div_precision_increment` (the scale of a division) and
/// `group_concat_max_len` (where GROUP_CONCAT cuts).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn settings_that_change_a_writes_result_are_carried_to_the_secondary() {
    let env = MirrorEnv::start("carried", "").await;
    env.create_both("CREATE TABLE t (id INT PRIMARY KEY, d DECIMAL(40,30), s VARCHAR(200))")
        .await;
    env.create_both("CREATE TABLE src (id INT PRIMARY KEY, v VARCHAR(20))")
        .await;
    env.create_both("INSERT INTO src VALUES (1, 'alpha'), (2, 'beta'), (3, 'gamma')")
        .await;
    let mut c = env.proxy().await;
    c.query_drop("INSERT INTO t VALUES (1, 0, ''), (2, 0, '')")
        .await
        .unwrap();
    c.query_drop("SET SESSION div_precision_increment = 12")
        .await
        .unwrap();
    c.query_drop("UPDATE t SET d = 1 / 3 WHERE id = 1")
        .await
        .unwrap();
    // A cut GROUP_CONCAT warns; strict mode would make that an error.
    c.query_drop("SET SESSION group_concat_max_len = 7, sql_mode = ''")
        .await
        .unwrap();
    c.query_drop("UPDATE t SET s = (SELECT GROUP_CONCAT(v ORDER BY id) FROM src) WHERE id = 2")
        .await
        .unwrap();
    // The setting matters: with the server's default the primary would
    // have stored another value.
    let stored: String = c
        .query_first("SELECT CAST(d AS CHAR) FROM t WHERE id = 1")
        .await
        .unwrap()
        .unwrap();
    let mut fresh = mysql_async::Conn::new(direct_opts(&env.primary))
        .await
        .unwrap();
    let by_default: String = fresh
        .query_first("SELECT CAST(CAST(1 / 3 AS DECIMAL(40,30)) AS CHAR)")
        .await
        .unwrap()
        .unwrap();
    fresh.disconnect().await.unwrap();
    assert_ne!(stored, by_default);
    env.wait_caught_up().await;
    assert_same(&env.primary, &env.secondary, "t").await;
    drop(c);
    env.stop().await;
}

/// A SET inside a multi-statement packet changes the carried settings as a
/// SET alone does (here the time zone FROM_UNIXTIME renders in).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_set_inside_a_multi_statement_packet_refreshes_the_carried_settings() {
    let env = MirrorEnv::start("multiset", "").await;
    env.create_both("CREATE TABLE t (id INT PRIMARY KEY, dt DATETIME NULL)")
        .await;
    let mut c = env.proxy().await;
    // The first write reads the session's settings.
    c.query_drop("INSERT INTO t VALUES (1, NULL)")
        .await
        .unwrap();
    c.query_drop("SET time_zone = '+05:00'; SELECT 1")
        .await
        .unwrap();
    c.query_drop("UPDATE t SET dt = FROM_UNIXTIME(86400) WHERE id = 1")
        .await
        .unwrap();
    env.wait_caught_up().await;
    assert_same(&env.primary, &env.secondary, "t").await;
    drop(c);
    env.stop().await;
}

/// A DECIMAL parameter of a prepared write (as JDBC's setBigDecimal sends
/// it) is an exact number: replayed as a quoted string, the secondary
/// would compute with a DOUBLE.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn decimal_parameters_are_replayed_as_exact_numbers() {
    let env = MirrorEnv::start("decparam", "").await;
    env.create_both("CREATE TABLE t (id INT PRIMARY KEY, d DECIMAL(65,30))")
        .await;
    let mut raw = RawClient::login(env.server.addr, USER, PASSWORD, &env.primary).await;
    let ok = raw
        .query("INSERT INTO t VALUES (1, 1.0000000000000000000000000001)")
        .await;
    assert_eq!(ok[0][0], 0x00, "{ok:?}");
    let mut prep = vec![0x16];
    prep.extend_from_slice(b"UPDATE t SET d = d * ? WHERE id = 1");
    let prepared = raw.command(&prep, Expect::Prepare).await;
    assert_eq!(prepared[0][0], 0x00, "{prepared:?}");
    let mut exec = vec![0x17];
    exec.extend_from_slice(&prepared[0][1..5]);
    exec.push(0); // no cursor
    exec.extend_from_slice(&1u32.to_le_bytes());
    exec.push(0); // NULL bitmap of one parameter
    exec.push(1); // types follow
    exec.extend_from_slice(&[0xF6, 0x00]); // MYSQL_TYPE_NEWDECIMAL
    let value = b"3.3333333333333333333333333333";
    exec.push(value.len() as u8);
    exec.extend_from_slice(value);
    let ok = raw.command(&exec, Expect::ResultSet).await;
    assert_eq!(ok[0][0], 0x00, "{ok:?}");
    env.wait_caught_up().await;
    assert_same(&env.primary, &env.secondary, "t").await;
    env.stop().await;
}

/// Triggers, procedures and functions created through Tandem reach the
/// secondary (they name no table), and a mirrored write fires the
/// secondary's trigger as the primary's fired. An event would run on both
/// servers once mirrored: it follows `unsafe_writes` (here: refused).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn triggers_and_routines_created_through_tandem_reach_the_secondary() {
    let env = MirrorEnv::start("routines", "").await;
    env.create_both("CREATE TABLE t (id INT PRIMARY KEY, n INT NOT NULL DEFAULT 0)")
        .await;
    env.create_both(
        "CREATE TABLE audit (id INT AUTO_INCREMENT PRIMARY KEY, t_id INT NOT NULL, n INT NOT NULL)",
    )
    .await;
    let mut c = env.proxy().await;
    c.query_drop(
        "CREATE TRIGGER t_ai AFTER INSERT ON t FOR EACH ROW \
         INSERT INTO audit (t_id, n) VALUES (NEW.id, NEW.n)",
    )
    .await
    .unwrap();
    c.query_drop("CREATE PROCEDURE bump(IN x INT) BEGIN UPDATE t SET n = n + x; END")
        .await
        .unwrap();
    c.query_drop("CREATE FUNCTION twice(x INT) RETURNS INT DETERMINISTIC RETURN x * 2")
        .await
        .unwrap();
    c.query_drop("INSERT INTO t (id, n) VALUES (1, 5), (2, 7)")
        .await
        .unwrap();
    // Events are mirrored too, disabled on the secondary (see cutover.rs).
    c.query_drop("CREATE EVENT e ON SCHEDULE EVERY 1 HOUR STARTS '2030-01-01' DO DELETE FROM t")
        .await
        .unwrap();
    env.wait_caught_up().await;
    assert_same(&env.primary, &env.secondary, "t").await;
    assert_eq!(assert_same(&env.primary, &env.secondary, "audit").await, 2);
    let objects = |db: String| async move {
        let mut d = mysql_async::Conn::new(direct_opts(&db)).await.unwrap();
        let mut names: Vec<String> = d
            .query(format!(
                "SELECT TRIGGER_NAME FROM information_schema.TRIGGERS WHERE TRIGGER_SCHEMA = '{db}' \
                 UNION ALL SELECT ROUTINE_NAME FROM information_schema.ROUTINES WHERE ROUTINE_SCHEMA = '{db}' \
                 UNION ALL SELECT EVENT_NAME FROM information_schema.EVENTS WHERE EVENT_SCHEMA = '{db}'"
            ))
            .await
            .unwrap();
        names.sort();
        d.disconnect().await.unwrap();
        names
    };
    assert_eq!(
        objects(env.primary.clone()).await,
        ["bump", "e", "t_ai", "twice"]
    );
    assert_eq!(
        objects(env.secondary.clone()).await,
        ["bump", "e", "t_ai", "twice"]
    );
    // Dropping goes the same way.
    c.query_drop("DROP EVENT e").await.unwrap();
    c.query_drop("DROP TRIGGER t_ai").await.unwrap();
    c.query_drop("DROP PROCEDURE bump").await.unwrap();
    c.query_drop("DROP FUNCTION IF EXISTS twice").await.unwrap();
    env.wait_caught_up().await;
    assert!(objects(env.secondary.clone()).await.is_empty());
    drop(c);
    env.stop().await;
}

/// A write to a table without transactions (MyISAM here) is mirrored by
/// its effect (tests/it/effects.rs) when the tables it names have no
/// transactions either; an INSERT … SELECT from a table with transactions
/// runs staged (tests/it/staged.rs); another write that also reads a table
/// with transactions (whose rows the secondary would read at another
/// moment) or LIMITs by
/// storage order follows `unsafe_writes`
/// (here: refused, saying why), and transactional tables in the same
/// transaction go on as usual.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_to_tables_without_transactions_follow_unsafe_writes() {
    let env = MirrorEnv::start("myisam", "").await;
    env.create_both("CREATE TABLE m (id INT PRIMARY KEY, v INT) ENGINE=MyISAM")
        .await;
    env.create_both("CREATE TABLE i (id INT PRIMARY KEY, v INT) ENGINE=InnoDB")
        .await;
    let mut c = env.proxy().await;
    c.query_drop("INSERT INTO m VALUES (1, 1)").await.unwrap();
    c.query_drop("BEGIN").await.unwrap();
    c.query_drop("INSERT INTO i VALUES (1, 1)").await.unwrap();
    // An INSERT … SELECT runs staged: its VALUES name `m` alone.
    c.query_drop("INSERT INTO m SELECT id + 1, v FROM i")
        .await
        .unwrap();
    let err = c
        .query_drop("UPDATE m JOIN i ON i.id = m.id SET m.v = i.v + 1")
        .await
        .unwrap_err();
    assert!(
        err.to_string()
            .contains("MyISAM, which has no transactions"),
        "{err}"
    );
    assert!(err.to_string().contains("which has transactions"), "{err}");
    c.query_drop("UPDATE m SET v = 2 WHERE id = 1")
        .await
        .unwrap();
    let err = c.query_drop("DELETE FROM m LIMIT 1").await.unwrap_err();
    assert!(err.to_string().contains("storage order"), "{err}");
    c.query_drop("COMMIT").await.unwrap();
    env.wait_caught_up().await;
    assert_eq!(assert_same(&env.primary, &env.secondary, "m").await, 2);
    assert_eq!(assert_same(&env.primary, &env.secondary, "i").await, 1);
    drop(c);
    env.stop().await;
}

/// A column default that calls RAND() draws the same numbers on the
/// secondary: the session's seeds are pinned as for RAND() in the
/// statement.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rand_column_default_draws_the_same_values_on_the_secondary() {
    let env = MirrorEnv::start("randdefault", "").await;
    env.create_both("CREATE TABLE r (id INT PRIMARY KEY, x DOUBLE DEFAULT (RAND()))")
        .await;
    let mut c = env.proxy().await;
    c.query_drop("INSERT INTO r (id) VALUES (1), (2), (3)")
        .await
        .unwrap();
    c.query_drop("BEGIN").await.unwrap();
    c.query_drop("INSERT INTO r (id) VALUES (4)").await.unwrap();
    c.query_drop("COMMIT").await.unwrap();
    env.wait_caught_up().await;
    assert_eq!(assert_same(&env.primary, &env.secondary, "r").await, 4);
    drop(c);
    env.stop().await;
}

/// INSERT … RETURNING answers with rows; without CLIENT_DEPRECATE_EOF (as
/// PyMySQL connects) they end with an EOF packet, which carries no
/// generated id. Its ids are read back and pinned like any insert's: the
/// primary's counter is ahead of the secondary's here (a rolled-back
/// insert took an id on the primary only, as in any live database), and
/// the child rows referencing the returned ids must find their parents on
/// the secondary. Found by SQLAlchemy's suite through a mirroring Tandem
/// (the ORM inserts with RETURNING on MariaDB).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn insert_returning_replays_with_the_primarys_generated_ids() {
    use crate::common::raw::{default_caps, RawClient};
    let env = MirrorEnv::start("returning", "").await;
    env.create_both("CREATE TABLE a (id INT AUTO_INCREMENT PRIMARY KEY, v INT)")
        .await;
    env.create_both(
        "CREATE TABLE b (id INT AUTO_INCREMENT PRIMARY KEY, a_id INT, FOREIGN KEY (a_id) REFERENCES a (id))",
    )
    .await;
    let addr = env.server.addr;
    let mut c = RawClient::connect(
        (&addr.ip().to_string(), addr.port()),
        USER,
        PASSWORD,
        Some(&env.primary),
        default_caps(false),
        "mysql_native_password",
    )
    .await
    .unwrap();
    // The first column of a text result's rows: each row's first lenenc
    // string (short here), between the column block's EOF and the last EOF.
    let ids_of = |packets: Vec<Vec<u8>>| -> Vec<String> {
        assert_ne!(packets[0][0], 0xFF, "{packets:?}");
        let columns = packets[0][0] as usize;
        packets[columns + 2..packets.len() - 1]
            .iter()
            .map(|row| String::from_utf8(row[1..1 + row[0] as usize].to_vec()).unwrap())
            .collect()
    };
    let ok = |p: Vec<Vec<u8>>| assert_eq!(p[0][0], 0x00, "{p:?}");
    for (autocommit, v) in [(true, 1), (false, 10)] {
        ok(
            c.query(&format!("SET autocommit = {}", u8::from(autocommit)))
                .await,
        );
        ok(c.query("BEGIN").await);
        ok(c.query("INSERT INTO a (v) VALUES (0)").await);
        ok(c.query("ROLLBACK").await);
        let ids = ids_of(
            c.query(&format!(
                "INSERT INTO a (v) VALUES ({v}), ({}) RETURNING a.id, a.id AS id__1",
                v + 1
            ))
            .await,
        );
        for id in &ids {
            ok(c.query(&format!("INSERT INTO b (a_id) VALUES ({id})"))
                .await);
        }
        if !autocommit {
            ok(c.query("COMMIT").await);
        }
    }
    env.wait_caught_up().await;
    assert_eq!(assert_same(&env.primary, &env.secondary, "a").await, 4);
    assert_eq!(assert_same(&env.primary, &env.secondary, "b").await, 4);
    assert!(env.mirror().divergent().is_empty());
    drop(c);
    env.stop().await;
}

/// MySQL's multi-table `UPDATE a, b SET …` (which SQLAlchemy emits for
/// UPDATE … FROM on MariaDB) was refused as unparsable while mirroring;
/// it is read as the join it is and mirrored, in autocommit and in a
/// transaction.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn multi_table_updates_with_comma_joins_are_mirrored() {
    let env = MirrorEnv::start("commaupdate", "").await;
    env.create_both("CREATE TABLE users (id INT PRIMARY KEY, name VARCHAR(20))")
        .await;
    env.create_both("CREATE TABLE addresses (id INT PRIMARY KEY, user_id INT, email VARCHAR(40))")
        .await;
    let mut c = env.proxy().await;
    c.query_drop("INSERT INTO users VALUES (1, 'jack'), (2, 'ed')")
        .await
        .unwrap();
    c.query_drop("INSERT INTO addresses VALUES (1, 1, 'a'), (2, 2, 'b'), (3, 2, 'c')")
        .await
        .unwrap();
    c.query_drop(
        "UPDATE addresses, users SET addresses.email = users.name, users.name = 'x' \
         WHERE users.id = addresses.user_id AND users.name = 'ed'",
    )
    .await
    .unwrap();
    c.query_drop("BEGIN").await.unwrap();
    c.query_drop(
        "UPDATE addresses, users, addresses AS a1 SET addresses.email = CONCAT(users.name, a1.id) \
         WHERE users.id = a1.user_id AND a1.id = addresses.id AND users.id = 1",
    )
    .await
    .unwrap();
    c.query_drop("COMMIT").await.unwrap();
    env.wait_caught_up().await;
    assert_eq!(assert_same(&env.primary, &env.secondary, "users").await, 2);
    assert_eq!(
        assert_same(&env.primary, &env.secondary, "addresses").await,
        3
    );
    drop(c);
    env.stop().await;
}

/// DDL runs at the statement time Tandem pins, on both sides: a column
/// added with a clock default stamps the existing rows with the same time.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_column_added_with_a_clock_default_stamps_existing_rows_alike() {
    let env = MirrorEnv::start("ddltime", "").await;
    env.create_both("CREATE TABLE t (id INT PRIMARY KEY)").await;
    env.create_both("INSERT INTO t VALUES (1), (2), (3)").await;
    let mut c = env.proxy().await;
    c.query_drop(
        "ALTER TABLE t ADD COLUMN added TIMESTAMP(6) NOT NULL DEFAULT CURRENT_TIMESTAMP(6)",
    )
    .await
    .unwrap();
    env.wait_caught_up().await;
    assert_eq!(assert_same(&env.primary, &env.secondary, "t").await, 3);
    drop(c);
    env.stop().await;
}

/// Under READ COMMITTED an UPDATE or DELETE matches rows as other
/// transactions' commits left them when it ran, so replay in commit order
/// would change other rows: A takes the queued jobs, B inserts a queued job
/// and commits first; replayed in commit order, A also took B's job (the
/// issue's recipe, which left the secondary with job 100 'taken'). Keyed
/// writes name the rows A locked, so both servers agree — whether the level
/// is the session's or chosen for one transaction, for UPDATE and DELETE.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn read_committed_updates_and_deletes_change_the_same_rows_on_both_sides() {
    let env = MirrorEnv::start("readcommitted", "").await;
    env.create_both("CREATE TABLE jobs (id INT PRIMARY KEY, st VARCHAR(10), KEY (st))")
        .await;
    env.create_both("INSERT INTO jobs VALUES (1, 'queued'), (2, 'queued')")
        .await;
    let mut a = env.proxy().await;
    let mut b = env.proxy().await;
    a.query_drop("SET SESSION TRANSACTION ISOLATION LEVEL READ COMMITTED")
        .await
        .unwrap();
    a.query_drop("BEGIN").await.unwrap();
    a.query_drop("UPDATE jobs SET st = 'taken' WHERE st = 'queued'")
        .await
        .unwrap();
    assert_eq!(a.affected_rows(), 2);
    // No gap lock under READ COMMITTED: B's insert goes through at once.
    b.query_drop("INSERT INTO jobs VALUES (100, 'queued')")
        .await
        .unwrap();
    a.query_drop("COMMIT").await.unwrap();
    // The DELETE form, the level chosen for one transaction.
    b.query_drop("INSERT INTO jobs VALUES (3, 'old'), (4, 'old')")
        .await
        .unwrap();
    a.query_drop("SET SESSION TRANSACTION ISOLATION LEVEL REPEATABLE READ")
        .await
        .unwrap();
    a.query_drop("SET TRANSACTION ISOLATION LEVEL READ COMMITTED")
        .await
        .unwrap();
    a.query_drop("BEGIN").await.unwrap();
    a.query_drop("DELETE FROM jobs WHERE st = 'old'")
        .await
        .unwrap();
    b.query_drop("INSERT INTO jobs VALUES (5, 'old')")
        .await
        .unwrap();
    a.query_drop("COMMIT").await.unwrap();
    // Autocommit at READ UNCOMMITTED, and a write that matches nothing.
    a.query_drop("SET SESSION TRANSACTION ISOLATION LEVEL READ UNCOMMITTED")
        .await
        .unwrap();
    a.query_drop("UPDATE jobs SET st = 'done' WHERE st = 'taken'")
        .await
        .unwrap();
    assert_eq!(a.affected_rows(), 2);
    a.query_drop("DELETE FROM jobs WHERE st = 'none'")
        .await
        .unwrap();
    assert_eq!(a.affected_rows(), 0);
    env.wait_caught_up().await;
    let got: Vec<(i32, String)> = b
        .query("SELECT id, st FROM jobs ORDER BY id")
        .await
        .unwrap();
    assert_eq!(
        got,
        vec![
            (1, "done".to_string()),
            (2, "done".to_string()),
            (5, "old".to_string()),
            (100, "queued".to_string()),
        ]
    );
    assert_eq!(assert_same(&env.primary, &env.secondary, "jobs").await, 4);
    assert!(env.mirror().divergent().is_empty());
    drop((a, b));
    env.stop().await;
}

/// `SET TRANSACTION ISOLATION LEVEL` chooses the level of the next
/// transaction only until the server drops it: a COMMIT or ROLLBACK (even
/// with nothing open), `SET SESSION TRANSACTION …`, or a statement that
/// reads a table in autocommit mode. A session at READ COMMITTED whose
/// one-shot REPEATABLE READ was dropped so runs its next transaction at
/// READ COMMITTED; Tandem must not take it for REPEATABLE READ and replay
/// its UPDATE unkeyed (the randomized soak found this: B's row, moved into
/// A's range and committed first, was changed on the secondary only).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dropped_one_shot_isolation_level_is_not_taken_for_the_transactions() {
    let env = MirrorEnv::start("oneshot", "").await;
    env.create_both("CREATE TABLE jobs (id INT PRIMARY KEY, v INT NOT NULL)")
        .await;
    let mut a = env.proxy().await;
    let mut b = env.proxy().await;
    a.query_drop("SET SESSION TRANSACTION ISOLATION LEVEL READ COMMITTED")
        .await
        .unwrap();
    let droppers = [
        "ROLLBACK",
        "COMMIT",
        "SELECT COUNT(*) FROM jobs",
        "SET SESSION TRANSACTION ISOLATION LEVEL READ COMMITTED",
    ];
    for (i, dropper) in droppers.iter().enumerate() {
        // Each round's rows and range of its own.
        let (inside, outside, base) = (i * 10 + 1, i * 10 + 2, (i + 1) * 10_000);
        b.query_drop(format!(
            "INSERT INTO jobs VALUES ({inside}, {base} + 50), ({outside}, {base} + 10)"
        ))
        .await
        .unwrap();
        a.query_drop("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
            .await
            .unwrap();
        a.query_drop(*dropper).await.unwrap();
        a.query_drop("BEGIN").await.unwrap();
        a.query_drop(format!(
            "UPDATE jobs SET v = v + 1000 WHERE v BETWEEN {base} + 40 AND {base} + 60"
        ))
        .await
        .unwrap();
        assert_eq!(a.affected_rows(), 1, "after {dropper}");
        // At READ COMMITTED A holds no gap lock: B moves its row into
        // A's range and commits first.
        b.query_drop(format!(
            "UPDATE jobs SET v = {base} + 45 WHERE id = {outside}"
        ))
        .await
        .unwrap();
        a.query_drop("COMMIT").await.unwrap();
    }
    env.wait_caught_up().await;
    assert_eq!(assert_same(&env.primary, &env.secondary, "jobs").await, 8);
    assert!(env.mirror().divergent().is_empty());
    drop((a, b));
    env.stop().await;
}

/// Keys of every kind a key column may have travel exactly: a composite
/// key of a case-insensitive utf8mb4 string and a DATETIME, through a
/// server-side prepared statement, with the pinned time in the WHERE, on a
/// table whose trigger must fire once on each side.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keyed_writes_name_string_and_temporal_keys_exactly() {
    let env = MirrorEnv::start("keyedtypes", "").await;
    env.create_both(
        "CREATE TABLE s (who VARCHAR(20) COLLATE utf8mb4_general_ci NOT NULL, at DATETIME(6) NOT NULL, \
         n INT NOT NULL DEFAULT 0, PRIMARY KEY (who, at)) DEFAULT CHARSET = utf8mb4",
    )
    .await;
    env.create_both("CREATE TABLE audit (id INT AUTO_INCREMENT PRIMARY KEY, who VARCHAR(20))")
        .await;
    env.create_both(
        "CREATE TRIGGER s_upd AFTER UPDATE ON s FOR EACH ROW INSERT INTO audit (who) VALUES (NEW.who)",
    )
    .await;
    let mut c = env.proxy().await;
    c.query_drop("SET NAMES latin1").await.unwrap();
    c.query_drop("SET SESSION TRANSACTION ISOLATION LEVEL READ COMMITTED")
        .await
        .unwrap();
    c.exec_drop(
        "INSERT INTO s (who, at) VALUES (?, '2026-01-01 00:00:00.5'), (?, NOW(6)), ('o''brien', '2020-02-02')",
        ("Zoë", "zoe"),
    )
    .await
    .unwrap();
    c.exec_drop(
        "UPDATE s SET n = n + ? WHERE at <= NOW(6) AND who <> ?",
        (5, "nobody"),
    )
    .await
    .unwrap();
    assert_eq!(c.affected_rows(), 3);
    c.query_drop("DELETE FROM s WHERE who = 'O''BRIEN'")
        .await
        .unwrap();
    assert_eq!(c.affected_rows(), 1);
    env.wait_caught_up().await;
    assert_eq!(assert_same(&env.primary, &env.secondary, "s").await, 2);
    assert_eq!(assert_same(&env.primary, &env.secondary, "audit").await, 3);
    drop(c);
    env.stop().await;
}

/// A write that cannot be restricted to the rows it locks under READ
/// COMMITTED still follows `unsafe_writes` (here: refused, saying why): a
/// table without a key, a join, INSERT … SELECT, a SET reading another
/// table. REPEATABLE READ is untouched.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn read_committed_writes_that_cannot_be_keyed_follow_unsafe_writes() {
    let env = MirrorEnv::start("rcunkeyed", "").await;
    env.create_both("CREATE TABLE jobs (id INT PRIMARY KEY, st VARCHAR(10))")
        .await;
    env.create_both("CREATE TABLE heap (st VARCHAR(10))").await;
    env.create_both("INSERT INTO jobs VALUES (1, 'queued')")
        .await;
    env.create_both("INSERT INTO heap VALUES ('queued')").await;
    let mut a = env.proxy().await;
    a.query_drop("SET SESSION TRANSACTION ISOLATION LEVEL READ COMMITTED")
        .await
        .unwrap();
    for (sql, needle) in [
        (
            "UPDATE heap SET st = 'x' WHERE st = 'queued'",
            "no primary key",
        ),
        (
            "UPDATE jobs JOIN heap ON heap.st = jobs.st SET jobs.st = 'x'",
            "single-table",
        ),
        (
            "INSERT INTO heap SELECT st FROM jobs ORDER BY id",
            "under READ COMMITTED",
        ),
        (
            "UPDATE jobs SET st = (SELECT MAX(st) FROM heap) WHERE id = 1",
            "subquery",
        ),
    ] {
        let e = a.query_drop(sql).await.unwrap_err().to_string();
        assert!(
            e.contains(needle) && e.contains("unsafe_writes"),
            "{sql}: {e}"
        );
    }
    a.query_drop("INSERT INTO jobs VALUES (2, 'queued')")
        .await
        .unwrap();
    let mut c = env.proxy().await;
    c.query_drop("BEGIN").await.unwrap();
    c.query_drop("UPDATE heap SET st = 'done' WHERE st = 'queued'")
        .await
        .unwrap();
    c.query_drop("COMMIT").await.unwrap();
    env.wait_caught_up().await;
    assert_eq!(assert_same(&env.primary, &env.secondary, "jobs").await, 2);
    assert_eq!(assert_same(&env.primary, &env.secondary, "heap").await, 1);
    drop((a, c));
    env.stop().await;
}

/// Which rows `LIMIT` takes without ORDER BY, or among ties of ORDER BY,
/// depends on the access path: a secondary with an index the primary lacks
/// (common on the new side of a migration) would pick other rows. Keyed,
/// the write changes the rows the primary picked, on both sides.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn limit_writes_change_the_rows_the_primary_picked() {
    let env = MirrorEnv::start("limitkeyed", "").await;
    env.create_both("CREATE TABLE t (id INT PRIMARY KEY, v INT NOT NULL, grp INT NOT NULL, n INT NOT NULL DEFAULT 0)")
        .await;
    env.create_both(
        "INSERT INTO t VALUES (1, 9, 1, 0), (2, 1, 1, 0), (3, 5, 1, 0), (4, 7, 2, 0), (5, 3, 2, 0)",
    )
    .await;
    // Only the secondary can read t in v order.
    let mut s = mysql_async::Conn::new(direct_opts(&env.secondary))
        .await
        .unwrap();
    s.query_drop("ALTER TABLE t ADD KEY v_only (v, grp)")
        .await
        .unwrap();
    let mut c = env.proxy().await;
    c.query_drop("DELETE FROM t WHERE v > 0 LIMIT 1")
        .await
        .unwrap();
    c.query_drop("UPDATE t SET n = n + 1 WHERE v > 2 ORDER BY grp LIMIT 2")
        .await
        .unwrap();
    c.query_drop("BEGIN").await.unwrap();
    c.query_drop("UPDATE t SET n = n + 10 WHERE grp = 2 LIMIT 1")
        .await
        .unwrap();
    c.query_drop("COMMIT").await.unwrap();
    env.wait_caught_up().await;
    assert_eq!(assert_same(&env.primary, &env.secondary, "t").await, 4);
    drop((c, s));
    env.stop().await;
}

/// With the secondary in the primary's own server (as in these tests),
/// every database but the two URL databases is the same database on both:
/// a write to a third one would be applied twice. It follows
/// `unsafe_writes` (here: refused, saying why), whether the database is
/// named or current; writes to the primary's database go on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_to_a_third_database_on_a_shared_server_follow_unsafe_writes() {
    let env = MirrorEnv::start("thirddb", "").await;
    let third = format!("{}_third", env.primary);
    fresh_database(&third).await;
    let mut d = mysql_async::Conn::new(direct_opts(&third)).await.unwrap();
    d.query_drop("CREATE TABLE t (id INT PRIMARY KEY, n INT NOT NULL)")
        .await
        .unwrap();
    d.query_drop("INSERT INTO t VALUES (1, 0)").await.unwrap();
    env.create_both("CREATE TABLE t (id INT PRIMARY KEY, n INT NOT NULL)")
        .await;
    let mut c = env.proxy().await;
    let err = c
        .query_drop(format!("UPDATE {third}.t SET n = n + 1 WHERE id = 1"))
        .await
        .unwrap_err();
    assert!(
        err.to_string()
            .contains("which the secondary (next) shares with the primary"),
        "{err}"
    );
    c.query_drop(format!("USE {third}")).await.unwrap();
    let err = c
        .query_drop("UPDATE t SET n = n + 1 WHERE id = 1")
        .await
        .unwrap_err();
    assert!(
        err.to_string().contains(&format!("database `{third}`")),
        "{err}"
    );
    c.query_drop(format!("USE {}", env.primary)).await.unwrap();
    c.query_drop("INSERT INTO t VALUES (1, 1)").await.unwrap();
    env.wait_caught_up().await;
    let n: i32 = d
        .query_first("SELECT n FROM t WHERE id = 1")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(n, 0);
    assert_eq!(assert_same(&env.primary, &env.secondary, "t").await, 1);
    d.disconnect().await.unwrap();
    drop(c);
    drop_databases(&[&third]).await;
    env.stop().await;
}

/// A column default no pin reproduces (UUID()) would give the secondary
/// another value: an INSERT that leaves such a column to its default
/// follows `unsafe_writes` (here: refused, saying why), and one that
/// gives it a value (UUID() in the statement is pinned) is mirrored.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_insert_that_takes_a_uuid_default_follows_unsafe_writes() {
    let env = MirrorEnv::start("uuiddefault", "").await;
    env.create_both("CREATE TABLE u (id CHAR(36) PRIMARY KEY DEFAULT (UUID()), v INT)")
        .await;
    let mut c = env.proxy().await;
    for sql in [
        "INSERT INTO u (v) VALUES (1)",
        "INSERT INTO u VALUES (DEFAULT, 2)",
    ] {
        let err = c.query_drop(sql).await.unwrap_err();
        assert!(
            err.to_string()
                .contains("column `id` would take its default"),
            "{sql}: {err}"
        );
    }
    c.query_drop("INSERT INTO u (id, v) VALUES (UUID(), 3)")
        .await
        .unwrap();
    c.query_drop("UPDATE u SET v = v + 1").await.unwrap();
    env.wait_caught_up().await;
    assert_eq!(assert_same(&env.primary, &env.secondary, "u").await, 1);
    drop(c);
    env.stop().await;
}

/// A MariaDB sequence advances outside transactions: `SELECT NEXTVAL(s)`
/// moved it on the primary only, and after a cutover the secondary's
/// sequence would hand out the same ids again. Reads, DO, SET and prepared
/// reads that advance one now carry its position to the secondary (also
/// inside a transaction that rolls back: the primary's advance stays);
/// rows of INSERT … VALUES that call NEXTVAL get the primary's values
/// (taken first, written in), and so do rows that leave a column defaulting
/// to NEXTVAL out; SETVAL, NEXTVAL anywhere else and `DEFAULT` for such a
/// column follow `unsafe_writes` (here: refused, saying why). CREATE
/// SEQUENCE is mirrored as DDL.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sequences_advanced_by_reads_and_inserts_reach_the_secondary() {
    let env = MirrorEnv::start("sequences", "").await;
    env.create_both("CREATE TABLE t (id BIGINT PRIMARY KEY, v INT)")
        .await;
    let mut c = env.proxy().await;
    c.query_drop("CREATE SEQUENCE s").await.unwrap();
    c.query_drop("CREATE SEQUENCE s2 INCREMENT BY 5")
        .await
        .unwrap();
    let first: Option<i64> = c.query_first("SELECT NEXTVAL(s)").await.unwrap();
    assert_eq!(first, Some(1));
    c.query_drop("SELECT NEXT VALUE FOR s, NEXTVAL(s2)")
        .await
        .unwrap();
    c.query_drop("SET @id = NEXTVAL(s)").await.unwrap();
    c.query_drop("DO NEXTVAL(s2)").await.unwrap();
    c.exec_drop("SELECT NEXTVAL(s) + ?", (1,)).await.unwrap();
    c.query_drop("BEGIN").await.unwrap();
    c.query_drop("SELECT NEXTVAL(s)").await.unwrap();
    c.query_drop("ROLLBACK").await.unwrap();
    // Writes whose rows of VALUES call NEXTVAL: the values are taken
    // first and written in, on both sides.
    c.query_drop("INSERT INTO t VALUES (NEXTVAL(s), 1)")
        .await
        .unwrap();
    c.query_drop("INSERT INTO t VALUES (NEXTVAL(s), 2), (NEXTVAL(s2) + 1000, 3)")
        .await
        .unwrap();
    c.exec_drop("INSERT INTO t VALUES (NEXTVAL(s), ?)", (4,))
        .await
        .unwrap();
    c.query_drop("INSERT INTO t VALUES (NEXT VALUE FOR s, 7)")
        .await
        .unwrap();
    c.query_drop("BEGIN").await.unwrap();
    c.query_drop("INSERT INTO t VALUES (NEXTVAL(s), 5)")
        .await
        .unwrap();
    c.query_drop("ROLLBACK").await.unwrap();
    c.query_drop("CREATE TABLE d (id BIGINT NOT NULL DEFAULT NEXTVAL(s) PRIMARY KEY, v INT)")
        .await
        .unwrap();
    for sql in [
        "DO SETVAL(s, 100)",
        "INSERT INTO t VALUES (1, 1) ON DUPLICATE KEY UPDATE v = NEXTVAL(s)",
        "INSERT INTO t (id, v) SELECT NEXTVAL(s), 5 ORDER BY 1",
        "UPDATE t SET v = NEXTVAL(s) WHERE id = 6",
        "INSERT INTO d VALUES (DEFAULT, 3)",
    ] {
        let err = c.query_drop(sql).await.unwrap_err();
        assert!(
            err.to_string().contains("cannot be mirrored"),
            "{sql}: {err}"
        );
    }
    let last: Option<i64> = c.query_first("SELECT LASTVAL(s)").await.unwrap();
    assert_eq!(last, Some(10), "the rolled-back insert still took 10");
    // Rows that leave the sequence column to its default: written in as
    // NEXTVAL(s) per row, then pinned like any.
    c.query_drop("INSERT INTO d (v) VALUES (1), (2)")
        .await
        .unwrap();
    c.exec_drop("INSERT INTO d (v) VALUES (?)", (3,))
        .await
        .unwrap();
    env.wait_caught_up().await;
    for db in [&env.primary, &env.secondary] {
        let mut d = mysql_async::Conn::new(direct_opts(db)).await.unwrap();
        let next: Option<(i64, i64)> = d
            .query_first("SELECT NEXTVAL(s), NEXTVAL(s2)")
            .await
            .unwrap();
        assert_eq!(
            next,
            Some((14, 16)),
            "{db}: the next values after 13 and 11"
        );
        let ids: Vec<(i64, i64)> = d.query("SELECT id, v FROM t ORDER BY v").await.unwrap();
        assert_eq!(ids, [(6, 1), (7, 2), (1011, 3), (8, 4), (9, 7)], "{db}");
        let ids: Vec<(i64, i64)> = d.query("SELECT id, v FROM d ORDER BY v").await.unwrap();
        assert_eq!(ids, [(11, 1), (12, 2), (13, 3)], "{db}");
        d.disconnect().await.unwrap();
    }
    assert!(env.mirror().divergent().is_empty());
    drop(c);
    env.stop().await;
}

/// Writers that bypass Tandem never reach the journal. What the primary
/// shows of them at start (here: an enabled scheduled event) is in the
/// mirror's /status, and logged.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scheduled_events_on_the_primary_are_listed_as_writers_outside_tandem() {
    init_logging();
    let primary = "tandem_m_outside".to_string();
    let secondary = "tandem_m_outside_next".to_string();
    fresh_database(&primary).await;
    fresh_database(&secondary).await;
    let mut d = mysql_async::Conn::new(direct_opts(&primary)).await.unwrap();
    d.query_drop("CREATE TABLE t (id INT PRIMARY KEY)")
        .await
        .unwrap();
    d.query_drop(
        "CREATE EVENT nightly_purge ON SCHEDULE EVERY 1 DAY STARTS CURRENT_TIMESTAMP + INTERVAL 1 YEAR DO DELETE FROM t",
    )
    .await
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let yaml = mirror_yaml(
        &primary,
        &secondary,
        MARIADB_PORT,
        &dir.path().join("journal"),
        &dir.path().join("rules"),
        "",
    );
    let server = tandem::server::start(tandem::config::parse(&yaml).unwrap())
        .await
        .unwrap();
    let status = server
        .shared
        .mirror
        .load_full()
        .expect("mirroring")
        .status_json();
    // (Other databases on this shared server may have events of their own.)
    let events = status["writers_outside_tandem"]["events"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    assert!(
        events.contains(&serde_json::json!(format!("{primary}.nightly_purge"))),
        "{status}"
    );
    server.shutdown().await;
    d.disconnect().await.unwrap();
    drop_databases(&[&primary, &secondary]).await;
}

/// A statement that is not a write but calls a stored function whose body
/// writes (`SELECT f()`, `DO f()`, `SET @x = f()`) would write on the
/// primary only: it follows `unsafe_writes` (here: refused, saying why),
/// whatever the function declares (READS SQL DATA is advisory). Pure
/// functions run, and a write that calls a writing function is replayed
/// with it, so both sides agree.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reads_that_call_writing_functions_follow_unsafe_writes() {
    let env = MirrorEnv::start("writingfn", "").await;
    env.create_both("CREATE TABLE c (id INT PRIMARY KEY, n INT NOT NULL)")
        .await;
    env.create_both("INSERT INTO c VALUES (1, 0)").await;
    env.create_both("CREATE TABLE other (id INT PRIMARY KEY)")
        .await;
    env.create_both(
        "CREATE FUNCTION bump() RETURNS INT MODIFIES SQL DATA BEGIN UPDATE c SET n = n + 1 WHERE id = 1; RETURN 1; END",
    )
    .await;
    env.create_both("CREATE FUNCTION liar() RETURNS INT READS SQL DATA BEGIN RETURN bump(); END")
        .await;
    env.create_both("CREATE FUNCTION dbl(x INT) RETURNS INT DETERMINISTIC RETURN x * 2")
        .await;
    let mut c = env.proxy().await;
    for sql in [
        "SELECT bump()",
        "SELECT n, Liar() FROM c",
        "DO bump()",
        "SET @x = bump()",
        &format!("SELECT {}.bump()", env.primary),
    ] {
        let e = c.query_drop(sql).await.unwrap_err().to_string();
        assert!(e.contains("bump") || e.contains("liar"), "{sql}: {e}");
        assert!(e.contains("unsafe_writes"), "{sql}: {e}");
    }
    let e = c
        .exec_drop("SELECT bump() + ?", (1,))
        .await
        .unwrap_err()
        .to_string();
    assert!(e.contains("bump") && e.contains("unsafe_writes"), "{e}");
    let four: i32 = c.query_first("SELECT dbl(2)").await.unwrap().unwrap();
    assert_eq!(four, 4);
    c.query_drop("INSERT INTO other VALUES (bump())")
        .await
        .unwrap();
    env.wait_caught_up().await;
    assert_eq!(assert_same(&env.primary, &env.secondary, "c").await, 1);
    assert_eq!(assert_same(&env.primary, &env.secondary, "other").await, 1);
    let n: i32 = c
        .query_first("SELECT n FROM c WHERE id = 1")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(n, 1, "only the mirrored write ran bump()");
    drop(c);
    env.stop().await;
}

/// `INSERT … SELECT` without ORDER BY where row order decides the rows'
/// ids or which duplicate wins is ordered by its source's key; into a table with no
/// AUTO_INCREMENT column and no triggers, a plain INSERT (a duplicate
/// fails it whole) inserts the same rows in any order, and is mirrored
/// (text or prepared).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn insert_select_into_a_table_without_ids_is_mirrored() {
    let env = MirrorEnv::start("ins_sel", "").await;
    env.create_both("CREATE TABLE src (id INT AUTO_INCREMENT PRIMARY KEY, v INT)")
        .await;
    env.create_both("INSERT INTO src (v) SELECT seq FROM seq_1_to_20")
        .await;
    env.create_both("CREATE TABLE archive (id INT PRIMARY KEY, v INT)")
        .await;
    env.create_both("CREATE TABLE numbered (n INT AUTO_INCREMENT PRIMARY KEY, v INT)")
        .await;
    let mut c = env.proxy().await;
    c.query_drop("INSERT INTO archive SELECT id, v * 10 FROM src WHERE v > 5")
        .await
        .unwrap();
    c.query_drop("BEGIN").await.unwrap();
    c.query_drop("INSERT INTO archive (id, v) SELECT id + 100, v FROM src WHERE v <= 5")
        .await
        .unwrap();
    c.query_drop("COMMIT").await.unwrap();
    c.exec_drop(
        "INSERT INTO archive SELECT id + 200, v FROM src WHERE v > ?",
        (18,),
    )
    .await
    .unwrap();
    // Where the order matters (IGNORE and ON DUPLICATE KEY UPDATE decide
    // per row, ids follow it), the source's key orders it on both sides.
    for sql in [
        "INSERT IGNORE INTO archive SELECT id, v FROM src",
        "INSERT INTO archive SELECT id + 1000, v FROM src ON DUPLICATE KEY UPDATE v = 0",
        "INSERT INTO numbered (v) SELECT s.v FROM src AS s WHERE s.v % 2 = 0",
    ] {
        c.query_drop(sql).await.unwrap();
    }
    // Prepared too: run as its rendered text with the order added.
    c.exec_drop(
        "INSERT INTO numbered (v) SELECT v FROM src WHERE v % 2 = ?",
        (1,),
    )
    .await
    .unwrap();
    // (An INSERT … SELECT reserves ids in blocks: gaps between
    // statements, none inside one.)
    let numbered: Vec<i32> = c.query("SELECT v FROM numbered ORDER BY n").await.unwrap();
    assert_eq!(
        numbered,
        (1..=10)
            .map(|n| 2 * n)
            .chain((1..=10).map(|n| 2 * n - 1))
            .collect::<Vec<_>>(),
        "ids in the source key's order"
    );
    // Orders that no key of one table decides run staged (tests/it/staged.rs).
    env.wait_caught_up().await;
    assert_eq!(env.assert_same("archive").await, 47);
    assert_eq!(env.assert_same("numbered").await, 20);
    drop(c);
    env.stop().await;
}
