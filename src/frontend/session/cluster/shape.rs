//! A prepared read's shape: its text with the placeholders numbered
//! (`?1`, `?2`, …), parsed once. An execute routes the shape with its bound
//! values instead of parsing the rendered text again; when that names one
//! shard (a point select), the statement prepared there runs with the
//! client's packet. Anything else (several shards, a value the shape cannot
//! take) goes the way of the rendered text, so the shape only ever saves
//! work: both plans come from the same planner on the same values.

use super::ClusterSession;
use crate::router::lexer::{self, Token};
use crate::router::shard::route::{self, Merge, ShardPlan, Shards};
use crate::router::shard::Literal;
use sqlparser::ast::Statement;
use std::ops::Range;
use std::sync::Arc;

/// A prepared statement's text parsed with numbered placeholders.
pub(super) struct Shape {
    stmt: Statement,
    sql: Vec<u8>,
    toks: Vec<Token>,
}

impl Shape {
    /// The shape of `sql` whose placeholders are at `spans`; None: a
    /// statement the planner cannot parse (the text path answers it).
    pub fn of(sql: &[u8], spans: &[Range<usize>]) -> Option<Arc<Shape>> {
        let text = numbered(sql, spans);
        let stmt = route::parse(&text).ok()?;
        let mut toks = Vec::new();
        lexer::tokenize(&text, &mut toks);
        Some(Arc::new(Shape {
            stmt,
            sql: text,
            toks,
        }))
    }
}

/// `sql` with the placeholder at each span written `?1`, `?2`, ….
fn numbered(sql: &[u8], spans: &[Range<usize>]) -> Vec<u8> {
    let mut out = Vec::with_capacity(sql.len() + 2 * spans.len());
    let mut at = 0;
    for (i, s) in spans.iter().enumerate() {
        out.extend_from_slice(&sql[at..s.start]);
        out.extend_from_slice(format!("?{}", i + 1).as_bytes());
        at = s.end;
    }
    out.extend_from_slice(&sql[at..]);
    out
}

/// A bound value as `bound_literals` writes it (NULL, a number, a quoted
/// string), read as the server reads that literal. None: another form
/// (hex strings, …), which the text path plans.
pub(super) fn literal_of(text: &str, no_backslash_escapes: bool) -> Option<Literal> {
    if text == "NULL" {
        return Some(Literal::Null);
    }
    if text.starts_with('\'') {
        return crate::sql::string_value(text.as_bytes(), no_backslash_escapes).map(Literal::Str);
    }
    let digits = text.strip_prefix('-').unwrap_or(text);
    let plain = !digits.is_empty()
        && digits
            .bytes()
            .all(|c| c.is_ascii_digit() || matches!(c, b'.' | b'e' | b'E' | b'+' | b'-'))
        && digits.as_bytes()[0].is_ascii_digit();
    plain.then(|| Literal::Number(text.to_string()))
}

impl ClusterSession<'_> {
    /// The one shard a prepared read's bound values route it to, planned
    /// from its shape; None: not one shard, or not known from the shape.
    pub(super) async fn shape_shard(&mut self, id: u32, values: &[String]) -> Option<usize> {
        let nbe = self.no_backslash_escapes;
        let stmt = self.stmts.get_mut(&id)?;
        let shape = stmt
            .shape
            .get_or_insert_with(|| Shape::of(&stmt.sql, &stmt.param_spans))
            .clone()?;
        let params: Vec<Literal> = values
            .iter()
            .map(|v| literal_of(v, nbe))
            .collect::<Option<_>>()?;
        let facts = self.facts(&shape.sql).await.ok()?;
        let cfg = self.shared.config.load_full();
        let tz = self.time_zone(&facts).await.ok()?;
        let temp = self.with_temp(cfg.cluster()?);
        let cluster = &*temp;
        let plan = route::plan_parsed(
            &shape.stmt,
            &shape.sql,
            &shape.toks,
            cluster,
            &|t: &str| facts.get(t).cloned(),
            &params,
            tz,
        )
        .ok()?;
        let shard = match (&plan, &plan.shards) {
            (ShardPlan { write: true, .. }, _) => return None,
            (ShardPlan { merge, .. }, _) if *merge != Merge::Relay => return None,
            (_, Shards::Any) => self.last_shard,
            (_, Shards::Set(s)) if s.len() == 1 => s[0],
            _ => return None,
        };
        #[cfg(debug_assertions)]
        if let Some(stmt) = self.stmts.get(&id) {
            // The shape routes as the rendered text does.
            if let Some(text) = lexer::render_params(&stmt.sql, &stmt.param_spans, values) {
                let mut toks = Vec::new();
                lexer::tokenize(&text, &mut toks);
                let full = route::plan_in_zone(
                    &text,
                    &toks,
                    cluster,
                    &|t: &str| facts.get(t).cloned(),
                    tz,
                );
                assert_eq!(
                    full.map(|p| p.shards).ok(),
                    Some(plan.shards.clone()),
                    "{}",
                    String::from_utf8_lossy(&text)
                );
            }
        }
        self.count_route(&plan.shards, 1, cluster.shards.len());
        self.last_shard = shard;
        Some(shard)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn placeholders_are_numbered_in_order() {
        let sql = b"SELECT c FROM t WHERE id = ? AND k IN (?, ?)";
        let spans = lexer::param_spans(sql);
        assert_eq!(
            numbered(sql, &spans),
            b"SELECT c FROM t WHERE id = ?1 AND k IN (?2, ?3)".to_vec()
        );
    }

    #[test]
    fn bound_values_read_as_the_server_reads_their_literals() {
        let s = |t: &str, nbe| literal_of(t, nbe);
        assert_eq!(s("NULL", false), Some(Literal::Null));
        assert_eq!(s("-42", false), Some(Literal::Number("-42".into())));
        assert_eq!(s("1.5e3", false), Some(Literal::Number("1.5e3".into())));
        assert_eq!(s("'it''s'", false), Some(Literal::Str(b"it's".to_vec())));
        assert_eq!(
            s(r"'a\'b\\c\n'", false),
            Some(Literal::Str(b"a'b\\c\n".to_vec()))
        );
        assert_eq!(s(r"'a\b'", true), Some(Literal::Str(b"a\\b".to_vec())));
        assert_eq!(s("0x00ff", false), None);
        assert_eq!(s("'open", false), None);
    }
}
