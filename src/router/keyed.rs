//! Keyed writes: the shape of a single-table UPDATE or DELETE that capture
//! can restrict to an exact set of rows. Where which rows a write matches
//! depends on more than the rows it locks (READ COMMITTED, LIMIT without a
//! total order), the session first reads the keys of the rows the
//! statement's own WHERE, ORDER BY and LIMIT select, with a locking read,
//! and then runs — and journals — the statement with its WHERE replaced by
//! exactly those keys. Both servers then change the same rows in the same
//! way: the values come from the rows themselves, and the rows are named.
//!
//! This module only finds the parts of the text (by top-level tokens, so
//! strings, comments and subqueries never confuse it); `mirror::rowkey`
//! renders keys; capture runs the reads.

use super::lexer::{Tok, Token};
use super::WriteKind;
use std::ops::Range;

/// Where the parts of a keyable UPDATE/DELETE are in its text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyedShape {
    /// The table written, as (database, table), unquoted.
    pub table: (Option<String>, String),
    /// The table reference as written (name, partition, alias).
    pub table_ref: Range<usize>,
    /// The WHERE condition, without the keyword.
    pub condition: Option<Range<usize>>,
    /// Where the WHERE clause starts, or where one would go.
    pub where_at: usize,
    /// Where the clauses after WHERE start (ORDER BY, LIMIT, RETURNING).
    pub tail: usize,
    /// Where RETURNING starts, or the end.
    pub returning: usize,
    /// The end of the statement (before a trailing `;`).
    pub end: usize,
    /// The SET list (UPDATE) reads another row: a subquery.
    pub set_reads_rows: bool,
}

/// The shape of `sql` if it is a single-table UPDATE or DELETE (no WITH,
/// no join, no table list); None otherwise.
pub fn keyed_shape(sql: &[u8], toks: &[Token], kind: WriteKind) -> Option<KeyedShape> {
    let first = toks.first()?;
    let verb = match kind {
        WriteKind::Update => "UPDATE",
        WriteKind::Delete => "DELETE",
        _ => return None,
    };
    if !first.is_word(sql, verb) {
        return None;
    }
    // Depth of each token (inside parentheses or not).
    let mut depth = 0i32;
    let depths: Vec<i32> = toks
        .iter()
        .map(|t| match t.kind {
            Tok::Punct(b'(') => {
                depth += 1;
                depth - 1
            }
            Tok::Punct(b')') => {
                depth -= 1;
                depth
            }
            _ => depth,
        })
        .collect();
    let top = |i: usize, w: &str| depths[i] == 0 && toks[i].is_word(sql, w);
    let mut end_tok = toks.len();
    while end_tok > 0 && toks[end_tok - 1].kind == Tok::Punct(b';') {
        end_tok -= 1;
    }
    if toks[..end_tok]
        .iter()
        .enumerate()
        .any(|(i, t)| depths[i] == 0 && t.kind == Tok::Punct(b';'))
    {
        return None;
    }
    let mut i = 1;
    let modifiers: &[&str] = match kind {
        WriteKind::Update => &["LOW_PRIORITY", "IGNORE"],
        _ => &["LOW_PRIORITY", "QUICK", "IGNORE"],
    };
    while i < end_tok && modifiers.iter().any(|m| toks[i].is_word(sql, m)) {
        i += 1;
    }
    if kind == WriteKind::Delete {
        // `DELETE t1 FROM …` is the multi-table form.
        if i >= end_tok || !toks[i].is_word(sql, "FROM") {
            return None;
        }
        i += 1;
    }
    let ref_start = i;
    let stops: &[&str] = match kind {
        WriteKind::Update => &["SET"],
        _ => &["WHERE", "ORDER", "LIMIT", "RETURNING", "USING"],
    };
    let mut j = ref_start;
    while j < end_tok && !stops.iter().any(|s| top(j, s)) {
        let t = &toks[j];
        if depths[j] == 0
            && (t.kind == Tok::Punct(b',')
                || t.is_word(sql, "JOIN")
                || t.is_word(sql, "STRAIGHT_JOIN"))
        {
            return None;
        }
        j += 1;
    }
    if j == ref_start || (kind == WriteKind::Delete && j < end_tok && top(j, "USING")) {
        return None;
    }
    let table = table_name(sql, &toks[ref_start..j])?;
    let table_ref = toks[ref_start].start..toks[j - 1].end;
    let mut set_reads_rows = false;
    if kind == WriteKind::Update {
        if j >= end_tok {
            return None;
        }
        j += 1; // SET
        while j < end_tok && !(top(j, "WHERE") || top(j, "ORDER") || top(j, "LIMIT")) {
            set_reads_rows |= toks[j].is_word(sql, "SELECT");
            j += 1;
        }
    }
    let end = if end_tok == 0 {
        0
    } else {
        toks[end_tok - 1].end
    };
    let where_at = if j < end_tok { toks[j].start } else { end };
    let mut condition = None;
    if j < end_tok && top(j, "WHERE") {
        let c = j + 1;
        let mut k = c;
        while k < end_tok && !(top(k, "ORDER") || top(k, "LIMIT") || top(k, "RETURNING")) {
            k += 1;
        }
        if k == c {
            return None;
        }
        condition = Some(toks[c].start..toks[k - 1].end);
        j = k;
    }
    let tail = toks.get(j).filter(|_| j < end_tok).map_or(end, |t| t.start);
    let mut r = j;
    while r < end_tok && !top(r, "RETURNING") {
        r += 1;
    }
    let returning = toks.get(r).filter(|_| r < end_tok).map_or(end, |t| t.start);
    Some(KeyedShape {
        table,
        table_ref,
        condition,
        where_at,
        tail,
        returning,
        end,
        set_reads_rows,
    })
}

/// `t` or `db.t` at the start of a table reference.
fn table_name(sql: &[u8], toks: &[Token]) -> Option<(Option<String>, String)> {
    let a = toks.first()?.ident(sql)?;
    if toks.get(1).is_some_and(|t| t.kind == Tok::Punct(b'.')) {
        let b = toks.get(2)?.ident(sql)?;
        return Some((Some(a), b));
    }
    Some((None, a))
}

impl KeyedShape {
    /// The locking read of the key columns `select` of the rows the
    /// statement would change: its table, WHERE, ORDER BY and LIMIT.
    pub fn lock_read(&self, sql: &[u8], select: &str) -> Vec<u8> {
        let mut out = Vec::with_capacity(sql.len() + select.len() + 32);
        out.extend_from_slice(b"SELECT ");
        out.extend_from_slice(select.as_bytes());
        out.extend_from_slice(b" FROM ");
        out.extend_from_slice(&sql[self.table_ref.clone()]);
        if let Some(c) = &self.condition {
            out.extend_from_slice(b" WHERE ");
            out.extend_from_slice(&sql[c.clone()]);
        }
        if self.tail < self.returning {
            out.push(b' ');
            out.extend_from_slice(sql[self.tail..self.returning].trim_ascii_end());
        }
        out.extend_from_slice(b" FOR UPDATE");
        out
    }

    /// The statement with its WHERE condition replaced by `restriction`.
    pub fn restricted(&self, sql: &[u8], restriction: &str) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.where_at + restriction.len() + 16);
        out.extend_from_slice(sql[..self.where_at].trim_ascii_end());
        out.extend_from_slice(b" WHERE ");
        out.extend_from_slice(restriction.as_bytes());
        if self.tail < self.end {
            out.push(b' ');
            out.extend_from_slice(&sql[self.tail..self.end]);
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::router::lexer::tokenize;

    fn shape(sql: &str, kind: WriteKind) -> Option<KeyedShape> {
        let mut toks = Vec::new();
        tokenize(sql.as_bytes(), &mut toks);
        keyed_shape(sql.as_bytes(), &toks, kind)
    }

    fn both(sql: &str, kind: WriteKind) -> (String, String) {
        let s = shape(sql, kind).expect("keyable");
        let b = sql.as_bytes();
        (
            String::from_utf8(s.lock_read(b, "`id`")).unwrap(),
            String::from_utf8(s.restricted(b, "`id` IN (1,2)")).unwrap(),
        )
    }

    #[test]
    fn update_parts() {
        let (read, write) = both(
            "UPDATE jobs SET st = 'taken' WHERE st = 'queued' ORDER BY id LIMIT 2",
            WriteKind::Update,
        );
        assert_eq!(
            read,
            "SELECT `id` FROM jobs WHERE st = 'queued' ORDER BY id LIMIT 2 FOR UPDATE"
        );
        assert_eq!(
            write,
            "UPDATE jobs SET st = 'taken' WHERE `id` IN (1,2) ORDER BY id LIMIT 2"
        );
    }

    #[test]
    fn update_without_where_and_with_alias() {
        let (read, write) = both(
            "UPDATE LOW_PRIORITY d.jobs AS j SET j.n = (j.n + 1);",
            WriteKind::Update,
        );
        assert_eq!(read, "SELECT `id` FROM d.jobs AS j FOR UPDATE");
        assert_eq!(
            write,
            "UPDATE LOW_PRIORITY d.jobs AS j SET j.n = (j.n + 1) WHERE `id` IN (1,2)"
        );
        let s = shape("UPDATE `d`.`jobs` SET n = 1", WriteKind::Update).unwrap();
        assert_eq!(s.table, (Some("d".into()), "jobs".into()));
    }

    #[test]
    fn delete_parts() {
        let (read, write) = both(
            "DELETE FROM sessions WHERE expires < NOW() - INTERVAL 1 DAY LIMIT 100 RETURNING id",
            WriteKind::Delete,
        );
        assert_eq!(
            read,
            "SELECT `id` FROM sessions WHERE expires < NOW() - INTERVAL 1 DAY LIMIT 100 FOR UPDATE"
        );
        assert_eq!(
            write,
            "DELETE FROM sessions WHERE `id` IN (1,2) LIMIT 100 RETURNING id"
        );
    }

    #[test]
    fn where_inside_subqueries_and_strings_is_not_the_clause() {
        let (read, write) = both(
            "UPDATE t SET a = (SELECT MAX(x) FROM u WHERE u.k = 'WHERE') WHERE b IN (SELECT b FROM v ORDER BY b) /* LIMIT */",
            WriteKind::Update,
        );
        assert_eq!(
            read,
            "SELECT `id` FROM t WHERE b IN (SELECT b FROM v ORDER BY b) FOR UPDATE"
        );
        assert!(write.starts_with(
            "UPDATE t SET a = (SELECT MAX(x) FROM u WHERE u.k = 'WHERE') WHERE `id` IN (1,2)"
        ));
        assert!(
            shape("UPDATE t SET a = (SELECT 1) WHERE b = 1", WriteKind::Update)
                .unwrap()
                .set_reads_rows
        );
    }

    #[test]
    fn multi_table_and_other_forms_are_not_keyable() {
        for (sql, kind) in [
            (
                "UPDATE a JOIN b ON a.i = b.i SET a.x = 1",
                WriteKind::Update,
            ),
            ("UPDATE a, b SET a.x = b.x", WriteKind::Update),
            ("DELETE a FROM a JOIN b ON a.i = b.i", WriteKind::Delete),
            (
                "DELETE FROM a USING a, b WHERE a.i = b.i",
                WriteKind::Delete,
            ),
            ("WITH c AS (SELECT 1) UPDATE t SET x = 1", WriteKind::Update),
            ("UPDATE t SET x = 1; UPDATE t SET x = 2", WriteKind::Update),
            ("INSERT INTO t VALUES (1)", WriteKind::Insert),
        ] {
            assert_eq!(shape(sql, kind), None, "{sql}");
        }
    }
}
