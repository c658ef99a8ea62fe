//! `SQL -> Route` tables over real MySQL statements.

use super::*;

const R: Class = Class::Read { locking: false };
const RL: Class = Class::Read { locking: true };
const DDL: Class = Class::Ddl;
const OTHER: Class = Class::Other;
fn w(k: WriteKind) -> Class {
    Class::Write(k)
}
fn tx(o: TxnOp) -> Class {
    Class::Transaction(o)
}
fn ses(o: SessionOp) -> Class {
    Class::Session(o)
}
use SessionOp::*;
use WriteKind::*;

/// (sql, class, tables, parsed)
fn cases() -> Vec<(&'static str, Class, &'static [&'static str], bool)> {
    vec![
        // Reads
        ("SELECT 1", R, &[], true),
        ("select * from orders where id = 5", R, &["orders"], true),
        ("SELECT o.id, i.sku FROM orders o JOIN order_items i ON i.order_id = o.id", R, &["orders", "order_items"], true),
        ("SELECT * FROM shop.orders", R, &["shop.orders"], true),
        ("SELECT `id` FROM `order items`", R, &["order items"], true),
        ("SELECT COUNT(*) FROM t1 WHERE x IN (SELECT y FROM t2)", R, &["t1", "t2"], true),
        ("SELECT * FROM t FOR UPDATE", RL, &["t"], true),
        ("SELECT * FROM t WHERE id = 1 LOCK IN SHARE MODE", RL, &[], false),
        ("SELECT * FROM t FOR SHARE", RL, &["t"], true),
        ("WITH c AS (SELECT id FROM t) SELECT * FROM c", R, &["t", "c"], true),
        ("SELECT a FROM t1 UNION ALL SELECT b FROM t2", R, &["t1", "t2"], true),
        ("SELECT SQL_CALC_FOUND_ROWS * FROM t LIMIT 10", R, &["t"], true),
        ("SELECT FOUND_ROWS()", R, &[], true),
        ("SELECT NOW(), UUID(), RAND()", R, &[], true),
        ("SELECT @@version, @@session.sql_mode", R, &[], true),
        ("SELECT * FROM t ORDER BY id DESC LIMIT 5 OFFSET 10", R, &["t"], true),
        ("SELECT id FROM t GROUP BY id HAVING COUNT(*) > 1", R, &["t"], true),
        ("SELECT JSON_EXTRACT(doc, '$.a') FROM docs", R, &["docs"], true),
        ("SELECT * FROM t WHERE name LIKE 'a%'", R, &["t"], true),
        ("SELECT CAST(x AS CHAR) FROM t", R, &["t"], true),
        ("SELECT * FROM t1 LEFT JOIN t2 USING (id)", R, &["t1", "t2"], true),
        ("SELECT DATABASE()", R, &[], true),
        ("SELECT LAST_INSERT_ID()", R, &[], true),
        ("SELECT 1 FROM DUAL", R, &[], true),
        ("SELECT * FROM t WHERE id BETWEEN 1 AND 10", R, &["t"], true),
        ("SHOW TABLES", R, &[], true),
        ("SHOW DATABASES", R, &[], true),
        ("SHOW CREATE TABLE orders", R, &[], true),
        ("SHOW COLUMNS FROM orders", R, &[], true),
        ("SHOW VARIABLES LIKE 'max_allowed_packet'", R, &[], true),
        ("SHOW STATUS LIKE 'Threads%'", R, &[], true),
        ("SHOW PROCESSLIST", R, &[], true),
        ("SHOW FULL PROCESSLIST", R, &[], true),
        ("SHOW WARNINGS", R, &[], true),
        ("SHOW ENGINE INNODB STATUS", R, &[], true),
        ("SHOW INDEX FROM orders", R, &[], true),
        ("SHOW TABLE STATUS", R, &[], true),
        ("SHOW GRANTS", R, &[], true),
        ("EXPLAIN SELECT * FROM t", R, &[], true),
        ("DESCRIBE orders", R, &[], true),
        ("DESC orders", R, &[], true),
        ("SELECT * FROM t1 WHERE EXISTS (SELECT 1 FROM t2 WHERE t2.a = t1.a)", R, &["t1", "t2"], true),
        ("SELECT _binary'abc'", R, &[], true),
        ("(SELECT 1)", R, &[], true),
        // Writes
        ("INSERT INTO orders (customer, total) VALUES ('a', 10.5)", w(Insert), &["orders"], true),
        ("INSERT INTO orders VALUES (1, 'a'), (2, 'b')", w(Insert), &["orders"], true),
        ("insert into shop.orders set customer = 'x'", w(Insert), &["shop.orders"], true),
        ("INSERT IGNORE INTO t (a) VALUES (1)", w(Insert), &["t"], true),
        ("INSERT INTO t (a) VALUES (1) ON DUPLICATE KEY UPDATE a = a + 1", w(Insert), &["t"], true),
        ("INSERT INTO t (a) SELECT b FROM u", w(Insert), &["t"], true),
        ("INSERT INTO t (ts) VALUES (NOW(6))", w(Insert), &["t"], true),
        ("INSERT INTO t (a) VALUES (?)", w(Insert), &["t"], true),
        ("INSERT LOW_PRIORITY INTO t (a) VALUES (1)", w(Insert), &["t"], true),
        ("INSERT INTO t VALUES (1) RETURNING id", w(Insert), &["t"], true),
        ("REPLACE INTO t (id, a) VALUES (1, 2)", w(Replace), &["t"], true),
        ("REPLACE t SET id = 1", w(Replace), &["t"], true),
        ("UPDATE orders SET total = total + 1 WHERE id = 3", w(Update), &["orders"], true),
        ("UPDATE t1 JOIN t2 ON t1.id = t2.id SET t1.a = t2.b", w(Update), &["t1", "t2"], true),
        ("UPDATE a, b SET a.x = b.y WHERE a.id = b.a_id", w(Update), &["a", "b"], true),
        ("UPDATE a, b, a AS a1 SET a.x = (SELECT 1, 2) WHERE a1.id = a.id", w(Update), &["a", "b"], true),
        ("UPDATE t SET a = 1 ORDER BY id LIMIT 10", w(Update), &["t"], true),
        ("UPDATE LOW_PRIORITY IGNORE t SET a = 1", w(Update), &["t"], false),
        ("UPDATE t SET a = ? WHERE id = ?", w(Update), &["t"], true),
        ("DELETE FROM orders WHERE id = 3", w(Delete), &["orders"], true),
        ("DELETE FROM t ORDER BY id LIMIT 1", w(Delete), &["t"], true),
        ("DELETE t1 FROM t1 JOIN t2 ON t1.id = t2.id", w(Delete), &["t1"], true),
        ("DELETE QUICK FROM t WHERE a = 1", w(Delete), &["t"], true),
        ("DELETE FROM shop.t", w(Delete), &["shop.t"], true),
        ("LOAD DATA LOCAL INFILE '/tmp/x.csv' INTO TABLE t", w(LoadData), &["t"], false),
        ("LOAD DATA INFILE 'x' INTO TABLE t FIELDS TERMINATED BY ','", w(LoadData), &["t"], false),
        ("CALL refresh_totals(1)", w(Call), &[], true),
        ("CALL p()", w(Call), &[], true),
        // DDL
        ("CREATE TABLE t (id INT PRIMARY KEY AUTO_INCREMENT, a TEXT)", DDL, &["t"], true),
        ("CREATE TABLE IF NOT EXISTS shop.t (id BIGINT)", DDL, &["shop.t"], true),
        ("CREATE TEMPORARY TABLE tmp (id INT)", DDL, &["tmp"], true),
        ("CREATE TABLE t2 LIKE t1", DDL, &["t2"], true),
        ("CREATE TABLE t (ts TIMESTAMP(6) DEFAULT CURRENT_TIMESTAMP(6) ON UPDATE CURRENT_TIMESTAMP(6))", DDL, &["t"], true),
        ("ALTER TABLE t ADD COLUMN b INT", DDL, &["t"], true),
        ("ALTER TABLE t DROP COLUMN b", DDL, &["t"], true),
        ("ALTER TABLE t ADD INDEX idx_a (a)", DDL, &["t"], true),
        ("DROP TABLE t", DDL, &["t"], true),
        ("DROP TABLE IF EXISTS t1, t2", DDL, &["t1", "t2"], true),
        ("TRUNCATE TABLE t", DDL, &["t"], true),
        ("RENAME TABLE a TO b", DDL, &["a", "b"], true),
        ("CREATE INDEX idx ON t (a)", DDL, &["t"], true),
        ("DROP INDEX idx ON t", DDL, &["t"], true),
        ("CREATE VIEW v AS SELECT * FROM t", DDL, &["v", "t"], true),
        ("CREATE DATABASE shop2", DDL, &[], true),
        ("DROP DATABASE shop2", DDL, &[], true),
        ("CREATE PROCEDURE p() BEGIN SELECT 1; SELECT 2; END", DDL, &[], false),
        ("CREATE TRIGGER tr BEFORE INSERT ON t FOR EACH ROW SET NEW.a = 1", DDL, &[], false),
        ("DROP PROCEDURE IF EXISTS p", DDL, &[], true),
        ("CREATE USER 'u'@'%' IDENTIFIED BY 'p'", OTHER, &[], false),
        // Transactions
        ("BEGIN", tx(TxnOp::Begin), &[], true),
        ("START TRANSACTION", tx(TxnOp::Begin), &[], true),
        ("START TRANSACTION READ ONLY", tx(TxnOp::Begin), &[], true),
        ("start transaction with consistent snapshot", tx(TxnOp::Begin), &[], false),
        ("COMMIT", tx(TxnOp::Commit), &[], true),
        ("COMMIT WORK", tx(TxnOp::Commit), &[], true),
        ("ROLLBACK", tx(TxnOp::Rollback), &[], true),
        ("ROLLBACK TO SAVEPOINT s1", tx(TxnOp::RollbackToSavepoint), &[], true),
        ("ROLLBACK TO s1", tx(TxnOp::RollbackToSavepoint), &[], true),
        ("SAVEPOINT s1", tx(TxnOp::Savepoint), &[], true),
        ("RELEASE SAVEPOINT s1", tx(TxnOp::ReleaseSavepoint), &[], true),
        ("SET TRANSACTION ISOLATION LEVEL READ COMMITTED", tx(TxnOp::Other), &[], true),
        ("SET SESSION TRANSACTION ISOLATION LEVEL SERIALIZABLE", tx(TxnOp::Other), &[], true),
        ("XA START 'x'", tx(TxnOp::Other), &[], false),
        // Session
        ("SET autocommit = 0", ses(Set), &[], true),
        ("SET NAMES utf8mb4", ses(Set), &[], true),
        ("SET NAMES utf8mb4 COLLATE utf8mb4_unicode_ci", ses(Set), &[], true),
        ("SET @a = 1", ses(Set), &[], true),
        ("SET SESSION sql_mode = 'STRICT_ALL_TABLES'", ses(Set), &[], true),
        ("SET time_zone = '+00:00'", ses(Set), &[], true),
        ("SET @@session.foreign_key_checks = 0", ses(Set), &[], true),
        ("SET CHARACTER SET utf8mb4", ses(Set), &[], false),
        ("/*!40101 SET NAMES utf8mb4 */", ses(Set), &[], true),
        ("USE shop", ses(Use("shop".into())), &[], true),
        ("use `shop_next`", ses(Use("shop_next".into())), &[], true),
        ("KILL 5", ses(Kill), &[], true),
        ("KILL QUERY 5", ses(Kill), &[], true),
        ("PREPARE s FROM 'SELECT 1'", ses(PreparedSql), &[], false),
        ("EXECUTE s", ses(PreparedSql), &[], true),
        ("DEALLOCATE PREPARE s", ses(PreparedSql), &[], true),
        ("LOCK TABLES t WRITE", ses(LockTables), &[], true),
        ("UNLOCK TABLES", ses(UnlockTables), &[], true),
        // Other
        ("FLUSH PRIVILEGES", OTHER, &[], true),
        ("DO SLEEP(1)", OTHER, &[], false),
        ("ANALYZE TABLE t", OTHER, &[], true),
        ("OPTIMIZE TABLE t", OTHER, &[], false),
        ("GRANT SELECT ON shop.* TO 'u'@'%'", OTHER, &[], true),
        ("HANDLER t OPEN", OTHER, &[], false),
        ("", OTHER, &[], true),
        ("-- just a comment", OTHER, &[], true),
        ("THIS IS NOT SQL", OTHER, &[], false),
    ]
}

#[test]
fn sql_to_route_table() {
    let cases = cases();
    assert!(cases.len() >= 100, "only {} cases", cases.len());
    let mut failures = Vec::new();
    for (sql, class, tables, parsed) in cases {
        let got = classify(sql.as_bytes());
        let expected = Route {
            class: class.clone(),
            tables: tables.iter().map(|t| t.to_string()).collect(),
            parsed,
            // Determinism verdicts have their own table (determinism.rs),
            // schema objects theirs (below).
            determinism: got.statements[0].determinism.clone(),
            object: got.statements[0].object,
        };
        if got.statements != vec![expected.clone()] {
            failures.push(format!(
                "{sql:?}\n   expected {expected:?}\n   got      {:?}",
                got.statements
            ));
        }
    }
    assert!(
        failures.is_empty(),
        "{} mismatches:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

#[test]
fn multi_statement_packet_gives_one_route_each() {
    let c = classify(b"BEGIN; UPDATE t SET a = 1; COMMIT");
    let classes: Vec<_> = c.statements.iter().map(|r| r.class.clone()).collect();
    assert_eq!(
        classes,
        vec![tx(TxnOp::Begin), w(Update), tx(TxnOp::Commit)]
    );
}

#[test]
fn non_utf8_statements_still_classify() {
    let sql = b"INSERT INTO blobs (b) VALUES (_binary'\xff\xfe\x00\x01')";
    let c = classify(sql);
    assert_eq!(c.statements[0].class, w(Insert));
    assert_eq!(c.statements[0].tables, vec!["blobs".to_string()]);
}

#[test]
fn digest_cache_serves_repeated_shapes() {
    let router = Router::new(64);
    let mut scratch = Scratch::default();
    let a = router.route(b"SELECT * FROM t WHERE id = 1", &mut scratch);
    let b = router.route(b"SELECT * FROM t WHERE id = 99", &mut scratch);
    assert!(Arc::ptr_eq(&a, &b));
    assert_eq!(router.stats.cache_misses.load(Ordering::Relaxed), 1);
    assert_eq!(router.stats.cache_hits.load(Ordering::Relaxed), 1);
    router.route(b"NOT SQL AT ALL", &mut scratch);
    router.route(b"NOT SQL AT ALL", &mut scratch);
    assert_eq!(
        router.stats.unparsed.load(Ordering::Relaxed),
        2,
        "unparsed counted on hits too"
    );
}

#[test]
fn connection_id_is_flagged() {
    assert!(classify(b"SELECT CONNECTION_ID()").calls_connection_id);
    assert!(!classify(b"SELECT 'CONNECTION_ID()'").calls_connection_id);
}

#[test]
fn ddl_on_triggers_routines_and_events_names_the_object() {
    use SchemaObject::*;
    let cases: &[(&str, Option<SchemaObject>)] = &[
        ("CREATE TRIGGER tr BEFORE INSERT ON t FOR EACH ROW SET NEW.a = 1", Some(Trigger)),
        ("CREATE DEFINER = `root`@`localhost` TRIGGER tr AFTER UPDATE ON t FOR EACH ROW SET @x = 1", Some(Trigger)),
        ("CREATE DEFINER=root@localhost TRIGGER tr AFTER UPDATE ON t FOR EACH ROW SET @x = 1", Some(Trigger)),
        ("DROP TRIGGER IF EXISTS tr", Some(Trigger)),
        ("CREATE PROCEDURE p() BEGIN SELECT 1; SELECT 2; END", Some(Routine)),
        ("CREATE OR REPLACE PROCEDURE p(IN x INT) UPDATE t SET n = n + x", Some(Routine)),
        ("CREATE FUNCTION f(x INT) RETURNS INT DETERMINISTIC RETURN x * 2", Some(Routine)),
        ("CREATE AGGREGATE FUNCTION agg(x INT) RETURNS INT BEGIN RETURN 1; END", Some(Routine)),
        ("ALTER PROCEDURE p COMMENT 'x'", Some(Routine)),
        ("DROP FUNCTION IF EXISTS f", Some(Routine)),
        ("CREATE EVENT e ON SCHEDULE EVERY 1 HOUR DO DELETE FROM t", Some(Event)),
        ("ALTER EVENT e DISABLE", Some(Event)),
        ("DROP EVENT IF EXISTS e", Some(Event)),
        ("CREATE TABLE trigger_log (id INT PRIMARY KEY, trigger_name TEXT)", None),
        ("CREATE TABLE t (event INT, `function` INT)", None),
        ("CREATE VIEW v AS SELECT * FROM t", None),
        ("CREATE OR REPLACE VIEW procedure_v AS SELECT 1", None),
        ("ALTER TABLE t ADD COLUMN event INT", None),
        ("CREATE INDEX i ON t (a)", None),
        ("DROP TABLE t", None),
        ("CREATE DATABASE d", None),
    ];
    for (sql, want) in cases {
        let got = classify(sql.as_bytes());
        assert_eq!(got.statements[0].class, Class::Ddl, "{sql}");
        assert_eq!(got.statements[0].object, *want, "{sql}");
    }
}

#[test]
fn which_statements_may_commit_an_open_transaction() {
    let cases: &[(&str, bool)] = &[
        ("CREATE TABLE t (a INT)", true),
        ("ALTER TABLE t ADD COLUMN b INT", true),
        ("CREATE TEMPORARY TABLE t (a INT)", false),
        (
            "CREATE TEMPORARY TABLE IF NOT EXISTS t AS SELECT * FROM u",
            false,
        ),
        ("DROP TEMPORARY TABLE IF EXISTS t", false),
        ("DROP TABLE t", true),
        ("LOCK TABLES t WRITE", true),
        ("UNLOCK TABLES", true),
        ("SET autocommit = 1", true),
        ("SET autocommit = 0", false),
        ("SET autocommit := OFF", false),
        ("SET SESSION autocommit = false", false),
        ("SET @@autocommit = 0", false),
        ("SET @@session.autocommit = ON", true),
        ("SET autocommit = @x", true),
        ("SET autocommit = 0 + 1", true),
        ("SET autocommit = 0, sql_mode = ''", false),
        ("SET sql_mode = ''", false),
        ("DO 1", false),
        ("DO SLEEP(0)", false),
        ("HANDLER t OPEN", false),
        ("GET DIAGNOSTICS @n = NUMBER", false),
        ("SIGNAL SQLSTATE '45000'", false),
        ("/* only a comment */", false),
        ("SELECT 1", false),
        ("INSERT INTO t VALUES (1)", false),
        ("GRANT SELECT ON t TO u", true),
        ("OPTIMIZE TABLE t", true),
    ];
    for (sql, want) in cases {
        let mut toks = Vec::new();
        lexer::tokenize(sql.as_bytes(), &mut toks);
        let got = classify(sql.as_bytes());
        assert_eq!(
            may_commit_implicitly(&got.statements[0], sql.as_bytes(), &toks),
            *want,
            "{sql} ({:?})",
            got.statements[0].class
        );
    }
}

#[test]
fn a_with_clause_before_a_write_is_a_write() {
    for sql in [
        "WITH c AS (SELECT id FROM src) UPDATE t SET n = n + 1 WHERE id IN (SELECT id FROM c)",
        "WITH c AS (SELECT id FROM src) DELETE FROM t WHERE id IN (SELECT id FROM c)",
        "WITH RECURSIVE c (n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM c WHERE n < 3) DELETE FROM t WHERE id IN (SELECT n FROM c)",
    ] {
        let got = classify(sql.as_bytes());
        let r = &got.statements[0];
        assert!(r.is_write(), "{sql}: {r:?}");
        assert!(r.tables.iter().any(|t| t == "t"), "{sql}: {r:?}");
    }
    // A WITH clause before a SELECT stays a read.
    let got = classify(b"WITH c AS (SELECT id FROM t) SELECT * FROM c");
    assert!(matches!(got.statements[0].class, Class::Read { .. }));
}

/// DDL sqlparser cannot parse still names its tables (from its tokens),
/// or says it cannot tell.
#[test]
fn unparsed_ddl_names_its_tables_from_tokens() {
    let cases: &[(&str, Option<&[&str]>)] = &[
        ("ALTER TABLE shop.t ADD COLUMN c INT", Some(&["shop.t"])),
        (
            "ALTER ONLINE IGNORE TABLE `my t` ENGINE=InnoDB",
            Some(&["my t"]),
        ),
        (
            "CREATE OR REPLACE TABLE IF NOT EXISTS t (id INT)",
            Some(&["t"]),
        ),
        ("DROP TABLE IF EXISTS a, db.b", Some(&["a", "db.b"])),
        ("TRUNCATE t", Some(&["t"])),
        ("TRUNCATE TABLE db.t", Some(&["db.t"])),
        ("RENAME TABLE a TO b, c TO d", Some(&["a", "b", "c", "d"])),
        ("CREATE UNIQUE INDEX i ON t (c)", Some(&["t"])),
        ("ALTER SEQUENCE s RESTART 5", Some(&["s"])),
        ("DROP DATABASE x", Some(&[])),
        ("ALTER SERVER s OPTIONS (HOST 'h')", None),
    ];
    for (sql, want) in cases {
        let mut toks = Vec::new();
        lexer::tokenize(sql.as_bytes(), &mut toks);
        let got = classify::ddl_keyword_tables(sql.as_bytes(), &toks);
        let want = want.map(|w| w.iter().map(|s| s.to_string()).collect::<Vec<_>>());
        assert_eq!(got, want, "{sql}");
    }
}

/// Thousands of `JOIN`s without `ON` made sqlparser recurse until the
/// stack overflowed, which aborts the process: one client statement of
/// 40 KB (found by `make fuzz`) could stop Tandem. Past `MAX_JOINS` the
/// statement is classified from its keywords, as one sqlparser refuses.
#[test]
fn statements_with_thousands_of_joins_do_not_reach_the_parser() {
    let mut select = String::from("SELECT * FROM t0");
    let mut update = String::from("UPDATE ");
    for i in 1..50_000 {
        select.push_str(&format!(" JOIN t{i}"));
        update.push(',');
    }
    update.push_str("*t SET v = 1");
    // A thread with a runtime worker's stack.
    std::thread::Builder::new()
        .stack_size(8 << 20)
        .spawn(move || {
            let c = classify(select.as_bytes());
            assert!(matches!(c.statements[0].class, Class::Read { .. }));
            assert!(!c.statements[0].parsed);
            let c = classify(update.as_bytes());
            assert_eq!(c.statements[0].class, Class::Write(WriteKind::Update));
            assert!(!c.statements[0].parsed);
            // Ordinary joins still parse.
            let c = classify(b"SELECT * FROM a JOIN b ON a.id = b.id JOIN c");
            assert!(c.statements[0].parsed);
        })
        .unwrap()
        .join()
        .unwrap();
}

#[test]
fn next_value_for_in_a_write_is_read_as_nextval() {
    let c = classify(b"INSERT INTO t VALUES (NEXT VALUE FOR shop.s, 1), (NEXT VALUE FOR s, 2)");
    let r = &c.statements[0];
    assert!(r.parsed);
    assert_eq!(r.class, Class::Write(WriteKind::Insert));
    assert_eq!(r.tables, vec!["t".to_string()]);
    assert!(r.determinism.uses.nextval);
    assert_eq!(r.determinism.unsafe_reason, None);
}
