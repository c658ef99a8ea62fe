//! `INSERT … SELECT` without `ORDER BY` into a table with an
//! AUTO_INCREMENT column: the ids follow the order the SELECT reads its
//! rows in, which the secondary need not share (another plan, another
//! storage order), so the router refuses it
//! (`UnsafeReason::InsertSelectWithoutOrder`). When the SELECT reads one
//! table that has a unique key, the statement runs with `ORDER BY` that
//! key added, on both sides: the client left the order to the server,
//! which picks one; here Tandem picks the key's, which the secondary
//! follows too. A temporary source (carried to the secondary, see
//! `carry`) is ordered by its primary key.

use super::super::link::Link;
use super::super::SessionError;
use super::Capture;
use crate::mirror::runtime::Mirror;
use crate::router::determinism::UnsafeReason;
use crate::router::lexer::{Tok, Token};
use crate::router::{Class, Route, WriteKind};

/// Words that make a SELECT more than "rows of one table, filtered".
const NOT_PLAIN: &[&str] = &[
    "ORDER",
    "GROUP",
    "LIMIT",
    "UNION",
    "INTERSECT",
    "EXCEPT",
    "JOIN",
    "STRAIGHT_JOIN",
    "DISTINCT",
    "DISTINCTROW",
    "HAVING",
    "WINDOW",
    "INTO",
    "FOR",
    "LOCK",
    "OFFSET",
];

/// Where `ORDER BY` goes in `sql` and what it qualifies columns with:
/// (source table as written, qualifier, byte offset).
fn order_site(sql: &[u8], toks: &[Token]) -> Option<(String, String, usize)> {
    let first = toks.first()?;
    if !(first.is_word(sql, "INSERT") || first.is_word(sql, "REPLACE")) {
        return None;
    }
    let depths = crate::router::lexer::depths(toks);
    let top = |i: usize| depths[i] == 0;
    let select = (1..toks.len()).find(|&i| top(i) && toks[i].is_word(sql, "SELECT"))?;
    // The tail the ORDER BY goes before: ON DUPLICATE KEY UPDATE,
    // RETURNING, or the end.
    let tail = (select + 1..toks.len())
        .find(|&i| {
            top(i)
                && ((toks[i].is_word(sql, "ON")
                    && toks.get(i + 1).is_some_and(|t| t.is_word(sql, "DUPLICATE")))
                    || toks[i].is_word(sql, "RETURNING")
                    || toks[i].kind == Tok::Punct(b';'))
        })
        .unwrap_or(toks.len());
    if (select + 1..tail).any(|i| top(i) && NOT_PLAIN.iter().any(|w| toks[i].is_word(sql, w))) {
        return None;
    }
    let from = (select + 1..tail).find(|&i| top(i) && toks[i].is_word(sql, "FROM"))?;
    let mut i = from + 1;
    let mut table = toks.get(i)?.ident(sql)?;
    let mut bare = table.clone();
    if toks.get(i + 1).is_some_and(|t| t.kind == Tok::Punct(b'.')) {
        bare = toks.get(i + 2)?.ident(sql)?;
        table = format!("{table}.{bare}");
        i += 2;
    }
    i += 1;
    let mut qualifier = bare;
    if i < tail && toks[i].is_word(sql, "AS") {
        i += 1;
    }
    if i < tail && !toks[i].is_word(sql, "WHERE") && matches!(toks[i].kind, Tok::Word | Tok::Quoted)
    {
        qualifier = toks[i].ident(sql)?;
        i += 1;
    }
    // Nothing but a WHERE may follow the one table.
    if i < tail && !toks[i].is_word(sql, "WHERE") {
        return None;
    }
    let at = toks.get(tail).map_or(sql.len(), |t| t.start);
    Some((table, qualifier, at))
}

impl Capture {
    /// The statement with `ORDER BY` the source table's unique key, when
    /// that makes a refused `INSERT … SELECT` exact (see the module).
    pub(super) async fn ordered_insert_select(
        &mut self,
        cx: &mut Link<'_>,
        m: &Mirror,
        route: &Route,
        sql: &[u8],
    ) -> Result<Option<Vec<u8>>, SessionError> {
        if !matches!(
            route.class,
            Class::Write(WriteKind::Insert | WriteKind::Replace)
        ) || route.determinism.unsafe_reason != Some(UnsafeReason::InsertSelectWithoutOrder)
        {
            return Ok(None);
        }
        let mut toks = Vec::new();
        crate::router::lexer::tokenize(sql, &mut toks);
        let Some((source, qualifier, at)) = order_site(sql, &toks) else {
            return Ok(None);
        };
        let q = crate::sql::quote;
        let columns: Vec<String> = if self.is_temporary(&source) && !source.contains('.') {
            // Not in the catalog: its primary key from SHOW KEYS.
            let keys = format!("SHOW KEYS FROM {} WHERE Key_name = 'PRIMARY'", q(&source));
            let reply = self.own_read(cx, keys.as_bytes()).await?;
            let rows = super::vars::rows(&reply, cx.deprecate_eof()).unwrap_or_default();
            rows.iter()
                .filter_map(|r| r.get(4).cloned().flatten())
                .map(|c| String::from_utf8_lossy(&c).into_owned())
                .collect()
        } else {
            let one = Route {
                tables: vec![source.clone()],
                ..route.clone()
            };
            match self.table_facts(cx, m, &one).await?.key {
                Some(key) => key.columns.iter().map(|c| c.name.clone()).collect(),
                None => Vec::new(),
            }
        };
        if columns.is_empty() {
            return Ok(None);
        }
        let order: Vec<String> = columns
            .iter()
            .map(|c| format!("{}.{}", q(&qualifier), q(c)))
            .collect();
        let mut out = sql[..at].to_vec();
        while out.last().is_some_and(u8::is_ascii_whitespace) {
            out.pop();
        }
        out.extend_from_slice(format!(" ORDER BY {} ", order.join(", ")).as_bytes());
        out.extend_from_slice(sql[at..].trim_ascii_start());
        while out.last().is_some_and(u8::is_ascii_whitespace) {
            out.pop();
        }
        Ok(Some(out))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn site(sql: &str) -> Option<(String, String, String)> {
        let mut toks = Vec::new();
        crate::router::lexer::tokenize(sql.as_bytes(), &mut toks);
        order_site(sql.as_bytes(), &toks).map(|(t, q, at)| (t, q, sql[at..].to_string()))
    }

    #[test]
    fn the_order_goes_after_the_one_table_and_its_filter() {
        let s = |t: &str, q: &str, rest: &str| Some((t.into(), q.into(), rest.into()));
        assert_eq!(site("INSERT INTO a (v) SELECT v FROM t"), s("t", "t", ""));
        assert_eq!(
            site("INSERT INTO a (v) SELECT x.v FROM db.t AS x WHERE x.v > (SELECT 1)"),
            s("db.t", "x", "")
        );
        assert_eq!(
            site("INSERT INTO a (v) SELECT v FROM t u WHERE v > 1 ON DUPLICATE KEY UPDATE v = 1"),
            s("t", "u", "ON DUPLICATE KEY UPDATE v = 1")
        );
        for sql in [
            "INSERT INTO a (v) SELECT v FROM t ORDER BY v",
            "INSERT INTO a (v) SELECT v FROM t, u",
            "INSERT INTO a (v) SELECT v FROM t JOIN u ON 1",
            "INSERT INTO a (v) SELECT DISTINCT v FROM t",
            "INSERT INTO a (v) SELECT v FROM t GROUP BY v",
            "INSERT INTO a (v) SELECT v FROM t LIMIT 2",
            "INSERT INTO a (v) SELECT 1 UNION SELECT 2",
            "INSERT INTO a (v) (SELECT v FROM t)",
            "INSERT INTO a (v) SELECT 1",
        ] {
            assert_eq!(site(sql), None, "{sql}");
        }
    }
}
