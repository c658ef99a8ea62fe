//! What capture needs to know of the tables a write goes to
//! (`TableFacts`): whether it reads the clock or RAND(), whether its engine
//! has transactions, which columns have defaults no pin reproduces. Read
//! from the primary's information_schema and cached in the `Mirror` until
//! DDL passes.

use super::super::link::{query_packet, Link};
use super::super::SessionError;
use super::vars::{first_row, number, rows};
use super::Capture;
use crate::mirror::rowkey::{IndexColumn, RowKey};
use crate::mirror::runtime::{Mirror, TableFacts};
use crate::router::{Class, Route, WriteKind};
use crate::sql::sql_literal;

impl Capture {
    /// What writing to the route's tables involves (`TableFacts`, merged
    /// over the tables), from the primary's information_schema, cached per
    /// table until DDL passes. A table Tandem cannot name (no current
    /// database) reads the time and RAND(), as when in doubt.
    pub(super) async fn table_facts(
        &mut self,
        cx: &mut Link<'_>,
        m: &Mirror,
        route: &Route,
    ) -> Result<TableFacts, SessionError> {
        let current = cx.binding.conn().current_db.clone();
        let mut all = TableFacts::default();
        let merge = |f: TableFacts, all: &mut TableFacts| {
            all.reads_time |= f.reads_time;
            all.reads_rand |= f.reads_rand;
            if all.engine_without_transactions.is_none() {
                all.engine_without_transactions = f.engine_without_transactions;
            }
            all.unpinnable_defaults.extend(f.unpinnable_defaults);
            all.sequence_defaults.extend(f.sequence_defaults);
            all.auto_increment = all.auto_increment.take().or(f.auto_increment);
            all.triggers |= f.triggers;
            all.key = all.key.take().or(f.key);
        };
        for t in &route.tables {
            let (db, table) = match t.split_once('.') {
                Some((d, t)) => (Some(d.to_string()), t.to_string()),
                None => (current.clone(), t.clone()),
            };
            let Some(db) = db else {
                all.reads_time = true;
                all.reads_rand = true;
                all.triggers = true;
                continue;
            };
            if let Some(f) = m.table_facts(&db, &table) {
                merge(f, &mut all);
                continue;
            }
            let lit = |s: &str| sql_literal(s.as_bytes());
            let (d, t) = (lit(&db), lit(&table));
            let clock = [
                "CURRENT_TIMESTAMP",
                "NOW(",
                "CURDATE(",
                "CURRENT_DATE",
                "CURTIME(",
                "CURRENT_TIME",
                "UTC_",
                "UNIX_TIMESTAMP(",
                "SYSDATE(",
                "LOCALTIME",
            ]
            .iter()
            .map(|f| format!("UPPER(COLUMN_DEFAULT) LIKE '%{f}%'"))
            .collect::<Vec<_>>()
            .join(" OR ");
            let sql = format!(
                "SELECT (SELECT COUNT(*) FROM information_schema.COLUMNS WHERE TABLE_SCHEMA = {d} AND TABLE_NAME = {t} \
                 AND ({clock} OR UPPER(EXTRA) LIKE '%ON UPDATE%')), \
                 (SELECT COUNT(*) FROM information_schema.COLUMNS WHERE TABLE_SCHEMA = {d} AND TABLE_NAME = {t} \
                 AND UPPER(COLUMN_DEFAULT) LIKE '%RAND(%'), \
                 (SELECT COUNT(*) FROM information_schema.TRIGGERS WHERE EVENT_OBJECT_SCHEMA = {d} AND EVENT_OBJECT_TABLE = {t}), \
                 (SELECT ENGINE FROM information_schema.TABLES WHERE TABLE_SCHEMA = {d} AND TABLE_NAME = {t}), \
                 (SELECT GROUP_CONCAT(COLUMN_NAME SEPARATOR ',') FROM information_schema.COLUMNS \
                 WHERE TABLE_SCHEMA = {d} AND TABLE_NAME = {t} AND (UPPER(COLUMN_DEFAULT) LIKE '%UUID%' \
                 OR UPPER(COLUMN_DEFAULT) LIKE '%SYS_GUID%' OR UPPER(COLUMN_DEFAULT) LIKE '%NEXTVAL(%')), \
                 (SELECT MIN(COLUMN_NAME) FROM information_schema.COLUMNS \
                 WHERE TABLE_SCHEMA = {d} AND TABLE_NAME = {t} AND EXTRA LIKE '%auto_increment%'), \
                 (SELECT GROUP_CONCAT(CONCAT(COLUMN_NAME, CHAR(0), COLUMN_DEFAULT) SEPARATOR ',') \
                 FROM information_schema.COLUMNS WHERE TABLE_SCHEMA = {d} AND TABLE_NAME = {t} \
                 AND UPPER(COLUMN_DEFAULT) LIKE 'NEXTVAL(%)')"
            );
            // The unique indexes' columns, for keyed writes (`rowkey`):
            // the indexes and the columns' types in two plain queries that
            // name the table as constants, so information_schema opens that
            // one table (a join or a correlated subquery would open every
            // table of the server, or the one table once per row: slow,
            // and each a temporary table racing the DDL around it).
            let keys = format!(
                "SELECT INDEX_NAME, COLUMN_NAME FROM information_schema.STATISTICS \
                 WHERE TABLE_SCHEMA = {d} AND TABLE_NAME = {t} AND NON_UNIQUE = 0 AND SUB_PART IS NULL \
                 ORDER BY INDEX_NAME <> 'PRIMARY', INDEX_NAME, SEQ_IN_INDEX"
            );
            let types = format!(
                "SELECT COLUMN_NAME, DATA_TYPE, CHARACTER_SET_NAME, IS_NULLABLE FROM information_schema.COLUMNS \
                 WHERE TABLE_SCHEMA = {d} AND TABLE_NAME = {t}"
            );
            let generation = m.schema_generation(&db, &table);
            let mut replies = self
                .own_reads(
                    cx,
                    &[
                        &query_packet(sql.as_bytes()),
                        &query_packet(keys.as_bytes()),
                        &query_packet(types.as_bytes()),
                    ],
                )
                .await?
                .into_iter();
            let (Some(reply), Some(key_reply), Some(type_reply)) =
                (replies.next(), replies.next(), replies.next())
            else {
                unreachable!("own_reads answers every packet")
            };
            let row = first_row(&reply, cx.deprecate_eof()).unwrap_or_default();
            let text =
                |v: &Option<Vec<u8>>| v.as_ref().map(|v| String::from_utf8_lossy(v).into_owned());
            let types = rows(&type_reply, cx.deprecate_eof()).unwrap_or_default();
            let key = rows(&key_reply, cx.deprecate_eof()).and_then(|rows| {
                let columns: Option<Vec<IndexColumn>> = rows
                    .iter()
                    .map(|r| {
                        let column = text(r.get(1)?)?;
                        let ty = types.iter().find(|c| {
                            c.first().and_then(text).as_deref() == Some(column.as_str())
                        })?;
                        Some(IndexColumn {
                            index: text(r.first()?)?,
                            data_type: text(ty.get(1)?)?,
                            charset: text(ty.get(2)?),
                            nullable: text(ty.get(3)?)?.eq_ignore_ascii_case("YES"),
                            column,
                        })
                    })
                    .collect();
                RowKey::choose(&columns?)
            });
            // When in doubt, pin.
            let count = |i: usize| row.get(i).and_then(number);
            let triggers = count(2).is_none_or(|n| n > 0);
            let engine = row
                .get(3)
                .cloned()
                .flatten()
                .map(|e| String::from_utf8_lossy(&e).into_owned());
            let unpinnable_defaults = row
                .get(4)
                .cloned()
                .flatten()
                .map(|v| {
                    String::from_utf8_lossy(&v)
                        .split(',')
                        .map(str::to_string)
                        .collect()
                })
                .unwrap_or_default();
            if engine.is_none() {
                // Not in information_schema: no such table (the write will
                // fail), or one it could not open just now (a DDL holds
                // it; its columns then count 0). Pin everything, refuse to
                // key, and ask again next time.
                all.reads_time = true;
                all.reads_rand = true;
                all.triggers = true;
                continue;
            }
            let facts = TableFacts {
                reads_time: triggers || count(0).is_none_or(|n| n > 0),
                reads_rand: triggers || count(1).is_none_or(|n| n > 0),
                engine_without_transactions: engine.filter(|e| !has_transactions(e)),
                unpinnable_defaults,
                key,
                auto_increment: row
                    .get(5)
                    .cloned()
                    .flatten()
                    .map(|c| String::from_utf8_lossy(&c).into_owned()),
                triggers,
                sequence_defaults: row
                    .get(6)
                    .cloned()
                    .flatten()
                    .map(|v| {
                        String::from_utf8_lossy(&v)
                            .split(',')
                            .filter_map(|l| l.split_once('\0'))
                            .map(|(c, d)| (c.to_string(), d.to_string()))
                            .collect()
                    })
                    .unwrap_or_default(),
            };
            m.set_table_facts(&db, &table, facts.clone(), generation);
            merge(facts, &mut all);
        }
        // A key names one table's rows: asked of a one-table route only.
        // Callers take it from here, not from the cache, which a DDL
        // elsewhere may have emptied since (or never filled: facts read
        // across a DDL are not cached).
        if route.tables.len() != 1 {
            all.key = None;
        }
        Ok(all)
    }
}

/// Which of `columns` (defaults no pin reproduces) an INSERT or REPLACE may
/// leave to its default: one it does not name, or any when it says
/// DEFAULT. Other writes keep the rows' values or name what they set.
pub(super) fn defaults_taken(route: &Route, sql: &[u8], columns: &[String]) -> Option<String> {
    if columns.is_empty()
        || !matches!(
            route.class,
            Class::Write(WriteKind::Insert | WriteKind::Replace)
        )
    {
        return None;
    }
    let mut toks = Vec::new();
    crate::router::lexer::tokenize(sql, &mut toks);
    let says_default = toks.iter().any(|t| t.is_word(sql, "DEFAULT"));
    let named: Vec<String> = toks.iter().filter_map(|t| t.ident(sql)).collect();
    columns
        .iter()
        .find(|c| says_default || !named.iter().any(|n| n.eq_ignore_ascii_case(c)))
        .cloned()
}

/// Under `innodb_autoinc_lock_mode = 2` (interleaved) the ids an INSERT …
/// SELECT (or REPLACE … SELECT) takes may interleave with other sessions'
/// inserts, while replay with `SET INSERT_ID` gives it consecutive ones.
/// Why not, if the write leaves the auto-increment column `column` to the
/// server (does not name it).
pub(super) fn interleaved_ids(route: &Route, sql: &[u8], column: Option<&str>) -> Option<String> {
    let column = column?;
    if !matches!(
        route.class,
        Class::Write(WriteKind::Insert | WriteKind::Replace)
    ) {
        return None;
    }
    let mut toks = Vec::new();
    crate::router::lexer::tokenize(sql, &mut toks);
    if !toks.iter().any(|t| t.is_word(sql, "SELECT")) {
        return None;
    }
    let named = toks
        .iter()
        .filter_map(|t| t.ident(sql))
        .any(|n| n.eq_ignore_ascii_case(column));
    (!named).then(|| {
        format!(
            "the primary runs innodb_autoinc_lock_mode = 2, where the `{column}` values an INSERT … SELECT takes may interleave with other sessions' inserts, and replay would assign consecutive ones; name `{column}` in the column list with values from the SELECT"
        )
    })
}

/// Storage engines whose writes a ROLLBACK undoes.
fn has_transactions(engine: &str) -> bool {
    [
        "InnoDB",
        "XtraDB",
        "RocksDB",
        "TokuDB",
        "ndbcluster",
        "SEQUENCE",
    ]
    .iter()
    .any(|e| engine.eq_ignore_ascii_case(e))
}

impl Capture {
    /// Whether an `INSERT … SELECT` without ORDER BY (refused by the
    /// router: row order decides ids) is exact anyway: a plain INSERT (no
    /// IGNORE, no ON DUPLICATE KEY UPDATE: a duplicate fails the whole
    /// statement) into a table with no AUTO_INCREMENT column and no
    /// triggers inserts the same rows in any order.
    pub(super) async fn order_free_insert(
        &mut self,
        cx: &mut Link<'_>,
        m: &Mirror,
        route: &Route,
        sql: &[u8],
    ) -> Result<bool, SessionError> {
        if route.class != Class::Write(WriteKind::Insert)
            || route.determinism.unsafe_reason
                != Some(crate::router::determinism::UnsafeReason::InsertSelectWithoutOrder)
        {
            return Ok(false);
        }
        let mut toks = Vec::new();
        crate::router::lexer::tokenize(sql, &mut toks);
        if toks
            .iter()
            .any(|t| t.is_word(sql, "IGNORE") || t.is_word(sql, "DUPLICATE"))
        {
            return Ok(false);
        }
        let facts = self.table_facts(cx, m, route).await?;
        Ok(facts.auto_increment.is_none() && !facts.triggers)
    }
}
