use super::*;

fn sh(sql: &str) -> Shape {
    let mut toks = Vec::new();
    shape_of(sql.as_bytes(), &mut toks)
}

fn t(name: &str) -> TableName {
    (None, name.to_string())
}

fn rows_info() -> TableInfo {
    TableInfo::Rows { pk: "id".into() }
}

fn acc(sql: &str, info: &TableInfo) -> Option<Vec<Access>> {
    let mut out = Vec::new();
    accesses(&sh(sql), info, 7, &mut out).map(|_| out)
}

#[test]
fn point_updates_and_deletes_are_single_rows() {
    assert_eq!(
        sh("UPDATE sbtest1 SET k=k+1 WHERE id=5012"),
        Shape::Single {
            table: t("sbtest1"),
            point: Some(("id".into(), vec![5012])),
            assigns: vec!["k".into()]
        }
    );
    assert_eq!(
        acc(
            "UPDATE `sbtest1` SET c='x, y', pad = 'z' WHERE `ID` = '42' LIMIT 1;",
            &rows_info()
        ),
        Some(vec![Access::Row(7, 42)])
    );
    assert_eq!(
        acc("DELETE FROM shop.orders WHERE id = 9", &rows_info()),
        Some(vec![Access::Row(7, 9)])
    );
    // The user variables a write reads, set before it: no table.
    assert_eq!(
        sh("SET @x = 41, @`y z` = _utf8mb4 X'C3A9' COLLATE utf8mb4_general_ci, @n = NULL"),
        Shape::UserVars
    );
    for sql in ["SET @x = @@hostname", "SET @x = f()", "SET @x = (SELECT 1)"] {
        assert_eq!(sh(sql), Shape::Unknown, "{sql}");
    }
    // Keyed writes name their rows with IN.
    assert_eq!(
        acc(
            "UPDATE t SET st = 'taken' WHERE `id` IN (3, 41) LIMIT 2",
            &rows_info()
        ),
        Some(vec![Access::Row(7, 3), Access::Row(7, 41)])
    );
    for sql in [
        "DELETE FROM t WHERE `id` IN (3, x)",
        "DELETE FROM t WHERE `id` IN (3",
        "DELETE FROM t WHERE `id` IN ()",
        "DELETE FROM t WHERE `id` IN (3) OR 1",
    ] {
        assert_eq!(
            acc(sql, &rows_info()),
            Some(vec![Access::Table(7)]),
            "{sql}"
        );
    }
    assert_eq!(
        sh("DELETE FROM shop.orders WHERE id = 9"),
        Shape::Single {
            table: (Some("shop".into()), "orders".into()),
            point: Some(("id".into(), vec![9])),
            assigns: vec![]
        }
    );
}

#[test]
fn anything_wider_than_one_known_row_is_the_whole_table() {
    let info = rows_info();
    for sql in [
        "UPDATE t SET id = id + 1 WHERE id = 3",
        "UPDATE t SET t.id = 4 WHERE id = 3",
        "UPDATE t SET x = 1 WHERE id = 3 OR id = 4",
        "UPDATE t SET x = 1 WHERE id > 3",
        "UPDATE t SET x = 1 WHERE other = 3",
        "UPDATE t SET x = 1 WHERE id = -3",
        "UPDATE t SET x = 1 WHERE id = 3.5",
        "UPDATE t SET x = 1 WHERE id = 3 ORDER BY x LIMIT 1",
        "UPDATE t SET x = 1",
        "DELETE FROM t",
        "DELETE FROM t ORDER BY id LIMIT 3",
        "INSERT INTO t (x) VALUES (1)",
        "INSERT INTO t (id, x) VALUES (1 + 1, 2)",
        "INSERT INTO t (id, x) VALUES (1, 2), (LAST_INSERT_ID(), 3)",
        "INSERT INTO t VALUES (1, 2)",
        "INSERT INTO t SET id = 1, x = 2",
    ] {
        assert_eq!(acc(sql, &info), Some(vec![Access::Table(7)]), "{sql}");
    }
    // Point writes of a table keyed otherwise.
    assert_eq!(
        acc("UPDATE t SET x = 1 WHERE id = 3", &TableInfo::Whole),
        Some(vec![Access::Table(7)])
    );
}

#[test]
fn inserts_name_every_row() {
    assert_eq!(
        acc(
            "INSERT INTO sbtest1 (id, k, c, pad) VALUES (4998, 5034, 'a(b', 'c'), ('5', CONCAT('x', 'y'), '', '')",
            &rows_info()
        ),
        Some(vec![Access::Row(7, 4998), Access::Row(7, 5)])
    );
    assert_eq!(
        acc("REPLACE INTO t (x, id) VALUES (NOW(6), 3)", &rows_info()),
        Some(vec![Access::Row(7, 3)])
    );
    assert_eq!(
        acc(
            "INSERT IGNORE INTO t (id, n) VALUES (3, 1) ON DUPLICATE KEY UPDATE n = n + VALUES(n)",
            &rows_info()
        ),
        Some(vec![Access::Row(7, 3)])
    );
}

#[test]
fn reads_joins_and_unknown_tables_are_barriers() {
    let info = rows_info();
    for sql in [
        "UPDATE t SET x = (SELECT MAX(y) FROM u) WHERE id = 1",
        "INSERT INTO t (id) SELECT id FROM u",
        "UPDATE t JOIN u ON t.id = u.id SET t.x = 1 WHERE t.id = 1",
        "UPDATE t, u SET t.x = 1 WHERE t.id = 1",
        "UPDATE t AS a SET x = 1 WHERE id = 1",
        "DELETE t FROM t JOIN u ON t.id = u.id",
        "DELETE FROM t USING t JOIN u",
        "UPDATE t SET x = 1 WHERE id = 1; DELETE FROM u",
        "UPDATE t SET x = ? WHERE id = 1",
        "CALL p()",
        "LOAD DATA INFILE 'f' INTO TABLE t",
        "",
    ] {
        assert_eq!(acc(sql, &info), None, "{sql}");
    }
    assert_eq!(
        acc("UPDATE t SET x = 1 WHERE id = 1", &TableInfo::Barrier),
        None
    );
}

#[test]
fn placement_keeps_conflicting_transactions_on_one_worker() {
    let mut f = InFlight::new(3);
    let a = WriteSet::Accesses(vec![Access::Row(1, 10)]);
    let b = WriteSet::Accesses(vec![Access::Row(1, 11)]);
    let whole = WriteSet::Accesses(vec![Access::Table(1)]);
    let other = WriteSet::Accesses(vec![Access::Table(2)]);
    assert_eq!(f.place(&a), Placement::Worker(0));
    f.add(0, &a);
    // An independent row joins the busiest worker with room…
    assert_eq!(f.place(&b), Placement::Worker(0));
    for i in 1..FILL as u64 {
        f.add(0, &WriteSet::Accesses(vec![Access::Row(9, i)]));
    }
    // … and once it is full, the least loaded one.
    assert_eq!(f.place(&b), Placement::Worker(1));
    f.add(1, &b);
    // The same row queues behind its holder.
    assert_eq!(f.place(&a), Placement::Worker(0));
    // The whole table conflicts with two workers: it waits.
    assert_eq!(f.place(&whole), Placement::Wait);
    // Independent: worker 0 is full, worker 1 has room.
    assert_eq!(f.place(&other), Placement::Worker(1));
    // A barrier waits for everything outside worker 0.
    assert_eq!(f.place(&WriteSet::Barrier), Placement::Wait);
    f.remove(1, &b);
    assert_eq!(f.place(&whole), Placement::Worker(0));
    assert_eq!(f.place(&WriteSet::Barrier), Placement::Worker(0));
    f.add(0, &WriteSet::Barrier);
    // Behind a barrier, everything goes to its worker.
    assert_eq!(f.place(&other), Placement::Worker(0));
    f.remove(0, &WriteSet::Barrier);
    f.remove(0, &a);
    for i in 1..FILL as u64 {
        f.remove(0, &WriteSet::Accesses(vec![Access::Row(9, i)]));
    }
    assert!(f.is_idle());
    assert!(f.rows.is_empty() && f.tables.is_empty());
}

#[test]
fn a_full_worker_makes_more_conflicting_work_wait() {
    let mut f = InFlight::new(2);
    for i in 0..CAP as u64 {
        f.add(0, &WriteSet::Accesses(vec![Access::Row(1, i)]));
    }
    assert_eq!(
        f.place(&WriteSet::Accesses(vec![Access::Row(1, 0)])),
        Placement::Wait
    );
    // Independent work still goes elsewhere.
    assert_eq!(
        f.place(&WriteSet::Accesses(vec![Access::Row(2, 0)])),
        Placement::Worker(1)
    );
    f.remove(0, &WriteSet::Accesses(vec![Access::Row(1, 5)]));
    assert_eq!(
        f.place(&WriteSet::Accesses(vec![Access::Row(1, 0)])),
        Placement::Worker(0)
    );
    assert!(f.overlaps(&WriteSet::Accesses(vec![Access::Table(1)])));
    assert!(!f.overlaps(&WriteSet::Accesses(vec![Access::Row(1, 5)])));
}

#[test]
fn one_worker_takes_everything_in_order() {
    let mut f = InFlight::new(1);
    for i in 0..(CAP as u64 + 5) {
        let ws = WriteSet::Accesses(vec![Access::Row(1, i % 3)]);
        assert_eq!(f.place(&ws), Placement::Worker(0));
        f.add(0, &ws);
    }
    assert_eq!(f.place(&WriteSet::Barrier), Placement::Worker(0));
}

#[test]
fn writes_that_may_carry_other_rows_values_span() {
    let rows = rows_info();
    let local = [
        "UPDATE t SET v = v + 1 WHERE id = 5",
        "UPDATE t SET v = 0 WHERE v > 10",
        "DELETE FROM t WHERE v > 10",
        "INSERT INTO t (id, v) VALUES (1, 2) ON DUPLICATE KEY UPDATE v = v + 1",
        "INSERT INTO t (v) VALUES (7)",
    ];
    for sql in local {
        assert!(!spans(&sh(sql), &rows), "{sql}");
    }
    let spanning = [
        "UPDATE t SET id = -id WHERE id > 10",
        "INSERT INTO t (id, v) SELECT id + 100, v FROM t",
        "UPDATE t SET v = (SELECT MAX(v) FROM u) WHERE id = 1",
        "UPDATE t JOIN u USING (id) SET t.v = u.v",
    ];
    for sql in spanning {
        assert!(spans(&sh(sql), &rows), "{sql}");
    }
    // Other unique keys are not known here: an update or an upsert may
    // meet them; a delete only removes rows.
    assert!(spans(
        &sh("UPDATE t SET v = 1 WHERE id = 5"),
        &TableInfo::Whole
    ));
    assert!(spans(
        &sh("INSERT INTO t (id, v) VALUES (1, 2)"),
        &TableInfo::Whole
    ));
    assert!(!spans(&sh("DELETE FROM t WHERE id = 5"), &TableInfo::Whole));
    assert!(spans(
        &sh("DELETE FROM t WHERE id = 5"),
        &TableInfo::Barrier
    ));
}
