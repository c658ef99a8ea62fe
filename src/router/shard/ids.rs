//! Global ids: an INSERT into a sharded table that leaves its
//! AUTO_INCREMENT column to the server (the column left out, or NULL or 0
//! given) would get the same id on several shards. Tandem gives those rows
//! ids from one sequence instead (`backend::sequence`), consecutive within
//! the statement as InnoDB gives a simple insert, and writes them into the
//! text before the statement is routed (so a table whose shard key is the
//! id is routed by it). Explicit ids raise the sequence's high-water mark.
//! This module finds what a statement needs and rewrites its text; pure.

use super::route::TableFacts;
use crate::config::{ClusterConfig, Placement};
use crate::router::lexer::{self, Tok, Token};
use sqlparser::ast::{Expr, SetExpr, Statement, TableObject, Value};
use sqlparser::dialect::MySqlDialect;
use sqlparser::parser::Parser;
use std::sync::Arc;

/// What an INSERT asks of the id sequence.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdNeed {
    pub table: String,
    pub column: String,
    /// Rows (by position) whose id the sequence gives.
    pub generated: Vec<usize>,
    /// The largest id given explicitly.
    pub explicit_max: Option<u64>,
    /// The column is absent from the column list (appended with the ids);
    /// otherwise its position in each row (NULL or 0 replaced).
    append: bool,
    at: usize,
}

/// The ids an INSERT … VALUES into a sharded table with an AUTO_INCREMENT
/// column needs (None: not such a statement, or nothing to give).
pub fn id_need(
    sql: &[u8],
    cluster: &ClusterConfig,
    facts: &dyn Fn(&str) -> Option<Arc<TableFacts>>,
) -> Option<IdNeed> {
    let text = std::str::from_utf8(sql).ok()?;
    let stmts = Parser::parse_sql(&MySqlDialect {}, text).ok()?;
    let [Statement::Insert(i)] = stmts.as_slice() else {
        return None;
    };
    let TableObject::TableName(name) = &i.table else {
        return None;
    };
    let table = name.0.last()?.as_ident()?.value.clone();
    let placement = &cluster.tables.get(&table)?.placement;
    if *placement == Placement::Reference {
        return None;
    }
    let f = facts(&table)?;
    let column = f.auto_increment.clone()?;
    let Some(SetExpr::Values(v)) = i.source.as_deref().map(|q| q.body.as_ref()) else {
        return None;
    };
    let listed: Vec<String> = i
        .columns
        .iter()
        .filter_map(|c| {
            c.0.last()
                .and_then(|p| p.as_ident())
                .map(|x| x.value.clone())
        })
        .collect();
    let (append, at) = if listed.is_empty() {
        (
            false,
            f.columns
                .iter()
                .position(|c| c.eq_ignore_ascii_case(&column))?,
        )
    } else {
        match listed.iter().position(|c| c.eq_ignore_ascii_case(&column)) {
            Some(p) => (false, p),
            None => (true, 0),
        }
    };
    let mut need = IdNeed {
        table,
        column,
        generated: Vec::new(),
        explicit_max: None,
        append,
        at,
    };
    for (r, row) in v.rows.iter().enumerate() {
        if append {
            need.generated.push(r);
            continue;
        }
        if let Some(Expr::Value(x)) = row.content.get(at) {
            match &x.value {
                Value::Null => need.generated.push(r),
                Value::Number(n, _) => match n.parse::<u64>() {
                    Ok(0) => need.generated.push(r),
                    Ok(k) => need.explicit_max = need.explicit_max.max(Some(k)),
                    Err(_) => {}
                },
                _ => {}
            }
        }
    }
    (!need.generated.is_empty() || need.explicit_max.is_some()).then_some(need)
}

/// `sql` with `ids` (one per generated row, in order) written in.
pub fn with_ids(sql: &[u8], toks: &[Token], need: &IdNeed, ids: &[u64]) -> Option<Vec<u8>> {
    let ids: Vec<String> = ids.iter().map(u64::to_string).collect();
    with_values(sql, toks, need, &ids)
}

/// `sql` (an INSERT … VALUES of `rows` rows with a column list) with
/// `column` appended to the list and `value` to every row: a shard key
/// left to its default, pinned.
pub fn append_column(
    sql: &[u8],
    toks: &[Token],
    column: &str,
    value: &str,
    rows: usize,
) -> Option<Vec<u8>> {
    let need = IdNeed {
        table: String::new(),
        column: column.to_string(),
        generated: (0..rows).collect(),
        explicit_max: None,
        append: true,
        at: 0,
    };
    with_values(sql, toks, &need, &vec![value.to_string(); rows])
}

fn with_values(sql: &[u8], toks: &[Token], need: &IdNeed, ids: &[String]) -> Option<Vec<u8>> {
    if ids.len() != need.generated.len() {
        return None;
    }
    if ids.is_empty() {
        return Some(sql.to_vec());
    }
    let rows = super::insert::insert_rows(sql, toks)?;
    let depths = lexer::depths(toks);
    // (byte position, bytes to insert, bytes replaced)
    let mut edits: Vec<(usize, String, usize)> = Vec::new();
    if need.append {
        let values = toks.iter().enumerate().position(|(i, t)| {
            depths[i] == 0 && (t.is_word(sql, "VALUES") || t.is_word(sql, "VALUE"))
        })?;
        let close = toks.get(values.checked_sub(1)?)?;
        if close.kind != Tok::Punct(b')') {
            return None;
        }
        edits.push((
            close.start,
            format!(", {}", crate::sql::quote(&need.column)),
            0,
        ));
    }
    for (&r, id) in need.generated.iter().zip(ids) {
        let range = rows.rows.get(r)?;
        if need.append {
            edits.push((range.end - 1, format!(", {id}"), 0));
            continue;
        }
        // The row's value at `at`: tokens inside the row's parentheses,
        // split by its top-level commas.
        let inner: Vec<usize> = (0..toks.len())
            .filter(|&i| toks[i].start > range.start && toks[i].end < range.end)
            .collect();
        let row_depth = depths[*inner.first()?];
        let mut item = 0;
        let mut span: Option<(usize, usize)> = None;
        for &i in &inner {
            if depths[i] == row_depth && toks[i].kind == Tok::Punct(b',') {
                item += 1;
                continue;
            }
            if item == need.at {
                span = Some(match span {
                    None => (toks[i].start, toks[i].end),
                    Some((s, _)) => (s, toks[i].end),
                });
            }
        }
        let (s, e) = span?;
        edits.push((s, id.to_string(), e - s));
    }
    edits.sort_by_key(|e| e.0);
    let mut out = Vec::with_capacity(sql.len() + 16 * ids.len());
    let mut at = 0;
    for (pos, text, replaced) in edits {
        out.extend_from_slice(sql.get(at..pos)?);
        out.extend_from_slice(text.as_bytes());
        at = pos + replaced;
    }
    out.extend_from_slice(sql.get(at..)?);
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::model::ScatterWrites;
    use crate::config::TablePlacement;

    fn setup() -> (ClusterConfig, impl Fn(&str) -> Option<Arc<TableFacts>>) {
        let mut c = ClusterConfig {
            name: "c".into(),
            database: "app".into(),
            shards: vec!["s0".into(), "s1".into()],
            owners: vec![0u16, 1].into(),
            tables: Default::default(),
            merge_buffer: 1 << 20,
            cross_shard: Default::default(),
        };
        c.tables.insert(
            "bids".into(),
            TablePlacement {
                placement: Placement::Hash {
                    key: "user_id".into(),
                },
                scatter_writes: ScatterWrites::Allow,
                key_updates: Default::default(),
            },
        );
        let facts = |t: &str| {
            (t == "bids").then(|| {
                Arc::new(TableFacts {
                    columns: vec!["id".into(), "user_id".into(), "amount".into()],
                    key_type: Some(super::super::KeyType::Int),
                    auto_increment: Some("id".into()),
                    key_default: None,
                })
            })
        };
        (c, facts)
    }

    fn rewrite(sql: &str, ids: &[u64]) -> (Option<IdNeed>, String) {
        let (c, facts) = setup();
        let need = id_need(sql.as_bytes(), &c, &facts);
        let mut toks = Vec::new();
        lexer::tokenize(sql.as_bytes(), &mut toks);
        let out = need
            .as_ref()
            .and_then(|n| with_ids(sql.as_bytes(), &toks, n, ids))
            .map(|t| String::from_utf8(t).unwrap())
            .unwrap_or_default();
        (need, out)
    }

    #[test]
    fn left_out_ids_are_appended_and_null_or_zero_replaced() {
        let (need, out) = rewrite(
            "INSERT INTO bids (user_id, amount) VALUES (1, 2), (3, f(4, 5))",
            &[10, 11],
        );
        assert_eq!(need.unwrap().generated, vec![0, 1]);
        assert_eq!(
            out,
            "INSERT INTO bids (user_id, amount, `id`) VALUES (1, 2, 10), (3, f(4, 5), 11)"
        );
        let (need, out) = rewrite(
            "INSERT INTO bids VALUES (NULL, 1, 2), (7, 1, 2), (0, 3, (4))",
            &[20, 21],
        );
        let need = need.unwrap();
        assert_eq!(
            (need.generated.clone(), need.explicit_max),
            (vec![0, 2], Some(7))
        );
        assert_eq!(
            out,
            "INSERT INTO bids VALUES (20, 1, 2), (7, 1, 2), (21, 3, (4))"
        );
        let (need, _) = rewrite("INSERT INTO bids (id, user_id) VALUES (99, 1)", &[]);
        assert_eq!(need.unwrap().explicit_max, Some(99));
        assert_eq!(rewrite("INSERT INTO other (a) VALUES (1)", &[]).0, None);
    }
}
