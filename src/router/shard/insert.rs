//! The rows of an `INSERT … VALUES` in its text, so that a multi-row
//! insert can be split per shard by splicing: the text before the first
//! row, each row's `( … )`, and the text after the last (`ON DUPLICATE KEY
//! UPDATE …`). Found from top-level tokens, so strings, comments and
//! nested parentheses never confuse it.

use super::route::{
    literal, refuse, single_or, table_ref, Cx, Merge, Refusal, ShardPlan, Shards, Source, TableRef,
    R,
};
use super::{canon, shard_of, Literal};
use crate::router::lexer::{self, Tok, Token};
use sqlparser::ast::{AssignmentTarget, SetExpr, TableObject};
use std::collections::BTreeSet;
use std::ops::Range;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InsertRows {
    /// Where the first row starts.
    pub head_end: usize,
    /// Each row's text, parentheses included.
    pub rows: Vec<Range<usize>>,
    /// Where the text after the last row starts.
    pub tail_start: usize,
}

/// The rows of `sql`, an INSERT/REPLACE whose tokens are `toks`, or None
/// when it has no top-level VALUES list of parenthesized rows.
pub fn insert_rows(sql: &[u8], toks: &[Token]) -> Option<InsertRows> {
    let depths = lexer::depths(toks);
    let at = toks.iter().enumerate().position(|(i, t)| {
        depths[i] == 0 && (t.is_word(sql, "VALUES") || t.is_word(sql, "VALUE"))
    })?;
    let mut rows = Vec::new();
    let mut i = at + 1;
    loop {
        let open = toks.get(i)?;
        if open.kind != Tok::Punct(b'(') {
            // `VALUES ROW(…)` and anything else: not split.
            return None;
        }
        let mut j = i + 1;
        while j < toks.len() && !(depths[j] == 0 && toks[j].kind == Tok::Punct(b')')) {
            j += 1;
        }
        let close = toks.get(j)?;
        rows.push(open.start..close.end);
        match toks.get(j + 1) {
            Some(t) if t.kind == Tok::Punct(b',') => i = j + 2,
            next => {
                let tail_start = next.map_or(close.end, |_| close.end);
                return Some(InsertRows {
                    head_end: rows[0].start,
                    rows,
                    tail_start,
                });
            }
        }
    }
}

impl InsertRows {
    /// The statement with only the rows `keep` (indexes, in order).
    pub fn text_with(&self, sql: &[u8], keep: &[usize]) -> Vec<u8> {
        let mut out = Vec::with_capacity(sql.len());
        out.extend_from_slice(&sql[..self.head_end]);
        for (n, &r) in keep.iter().enumerate() {
            if n > 0 {
                out.push(b',');
            }
            out.extend_from_slice(&sql[self.rows[r].clone()]);
        }
        out.extend_from_slice(&sql[self.tail_start..]);
        out
    }
}

/// Planning an INSERT on a cluster: every row's shard from its key.
impl Cx<'_> {
    pub(super) fn insert(&self, i: &sqlparser::ast::Insert) -> R<ShardPlan> {
        let TableObject::TableName(name) = &i.table else {
            return refuse("INSERT into a table function");
        };
        let TableRef::Cluster(table, placement) = table_ref(self.cluster, name)? else {
            return refuse("an INSERT into another database from a cluster's tables");
        };
        let s = Source {
            facts: (self.facts)(&table),
            table,
            alias: None,
            placement,
            tz: self.tz,
        };
        let Some(key) = s.key() else {
            // A reference table fed from sharded ones.
            return refuse("INSERT … SELECT into a reference table from sharded tables");
        };
        let ty = s.key_type()?;
        let Some(facts) = s.facts.clone() else {
            return refuse(format!(
                "table `{}`: not found in the shards' schema",
                s.table
            ));
        };
        let columns: Vec<String> = if i.columns.is_empty() {
            facts.columns.clone()
        } else {
            i.columns
                .iter()
                .map(|c| {
                    c.0.last()
                        .and_then(|p| p.as_ident())
                        .map_or_else(String::new, |i| i.value.clone())
                })
                .collect()
        };
        let pos = |c: &str| columns.iter().position(|x| x.eq_ignore_ascii_case(c));
        let Some(key_at) = pos(key) else {
            return refuse(format!(
                "an INSERT into `{}` must give its shard key `{key}`",
                s.table
            ));
        };
        let auto_at = match &facts.auto_increment {
            Some(a) => match pos(a) {
                Some(p) => Some(p),
                None => {
                    return refuse(format!(
                        "an INSERT into sharded table `{}` that leaves its AUTO_INCREMENT \
                         column `{a}` to the shards (each shard would hand out the same ids; \
                         global ids are not built yet): give the id",
                        s.table
                    ))
                }
            },
            None => None,
        };
        if let Some(sqlparser::ast::OnInsert::DuplicateKeyUpdate(assignments)) = &i.on {
            for a in assignments {
                if let AssignmentTarget::ColumnName(c) = &a.target {
                    if c.0
                        .last()
                        .and_then(|p| p.as_ident())
                        .is_some_and(|id| id.value.eq_ignore_ascii_case(key))
                    {
                        return refuse("ON DUPLICATE KEY UPDATE of the shard key");
                    }
                }
            }
        }
        let rows = match i.source.as_deref().map(|q| q.body.as_ref()) {
            Some(SetExpr::Values(v)) => &v.rows,
            _ => return refuse("INSERT … SELECT or INSERT … SET into a sharded table"),
        };
        let mut per_row = Vec::with_capacity(rows.len());
        for (n, row) in rows.iter().enumerate() {
            let row = &row.content;
            if row.len() != columns.len() {
                return refuse(format!("row {}: column count does not match", n + 1));
            }
            if let Some(a) = auto_at {
                match literal(&row[a]) {
                    Some(Literal::Null) => {
                        return refuse(format!(
                            "row {}: NULL for AUTO_INCREMENT column asks the shard for an id \
                             (global ids are not built yet): give the id",
                            n + 1
                        ))
                    }
                    Some(Literal::Number(z))
                        if z.trim_start_matches(['+', '-'])
                            .bytes()
                            .all(|b| b == b'0' || b == b'.') =>
                    {
                        return refuse(format!(
                            "row {}: 0 for AUTO_INCREMENT column asks the shard for an id \
                             (global ids are not built yet): give the id",
                            n + 1
                        ))
                    }
                    Some(_) => {}
                    None => {
                        return refuse(format!(
                            "row {}: the AUTO_INCREMENT column's value must be a literal",
                            n + 1
                        ))
                    }
                }
            }
            let Some(lit) = literal(&row[key_at]) else {
                return refuse(format!(
                    "row {}: the shard key `{key}` must be a literal value",
                    n + 1
                ));
            };
            let shard = canon(&ty, &lit)
                .and_then(|c| shard_of(self.cluster, &s.placement.placement, &ty, &c))
                .map_err(|e| {
                    Refusal(format!(
                        "row {}: cannot place shard key `{key}`: {}",
                        n + 1,
                        e.reason()
                    ))
                })?;
            per_row.push(shard);
        }
        let shards: BTreeSet<usize> = per_row.iter().copied().collect();
        if shards.len() == 1 {
            return Ok(single_or(shards.into_iter().collect(), Merge::Relay, true));
        }
        let Some(split) = insert_rows(self.sql, self.toks) else {
            return refuse("this INSERT's rows cannot be split per shard");
        };
        if split.rows.len() != per_row.len() {
            return refuse("this INSERT's rows cannot be split per shard");
        }
        let texts = shards
            .iter()
            .map(|&sh| {
                let keep: Vec<usize> = (0..per_row.len()).filter(|&r| per_row[r] == sh).collect();
                (sh, split.text_with(self.sql, &keep))
            })
            .collect();
        Ok(ShardPlan {
            shards: Shards::Set(shards.into_iter().collect()),
            merge: Merge::Write {
                last: per_row.last().copied(),
            },
            texts: Some(texts),
            write: true,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rows(sql: &str) -> Option<InsertRows> {
        let mut toks = Vec::new();
        lexer::tokenize(sql.as_bytes(), &mut toks);
        insert_rows(sql.as_bytes(), &toks)
    }

    #[test]
    fn rows_are_found_past_strings_and_nested_parentheses() {
        let sql = "INSERT INTO t (a, b) VALUES (1, '),('), (2, f(3, 4)) ,(3,NULL) ON DUPLICATE KEY UPDATE b = VALUES(b)";
        let r = rows(sql).unwrap();
        assert_eq!(r.rows.len(), 3);
        let t = String::from_utf8(r.text_with(sql.as_bytes(), &[0, 2])).unwrap();
        assert_eq!(
            t,
            "INSERT INTO t (a, b) VALUES (1, '),('),(3,NULL) ON DUPLICATE KEY UPDATE b = VALUES(b)"
        );
        let t = String::from_utf8(r.text_with(sql.as_bytes(), &[1])).unwrap();
        assert_eq!(
            t,
            "INSERT INTO t (a, b) VALUES (2, f(3, 4)) ON DUPLICATE KEY UPDATE b = VALUES(b)"
        );
    }

    #[test]
    fn inserts_without_a_values_list_are_not_split() {
        assert_eq!(rows("INSERT INTO t SELECT * FROM u"), None);
        assert_eq!(rows("INSERT INTO t SET a = 1"), None);
        assert_eq!(rows("INSERT INTO t VALUES ROW(1)"), None);
    }
}
