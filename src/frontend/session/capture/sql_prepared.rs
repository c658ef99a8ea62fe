//! SQL-level prepared statements (`PREPARE name FROM '…'`, `EXECUTE
//! name [USING …]`). An EXECUTE runs text Tandem saw only at PREPARE, so
//! capture remembers, per name, that text and whether it only reads:
//! EXECUTE of a read goes through; of a write it runs as the text with
//! each `?` replaced by its `USING` expression, parenthesized (`@a`,
//! `(@a + 1)`, `5`), through the whole capture path, where the user
//! variables it reads are carried to the secondary by value (see
//! `uservars`). The answer to a write is the same OK packet. Text from a
//! variable (`PREPARE s FROM @sql`), a `?` where an expression cannot
//! stand (`LIMIT ?`) or a count of values that does not match follow
//! `unsafe_writes`.

use super::Capture;
use crate::router::lexer::{Tok, Token};
use crate::router::{self, Class};

/// What a PREPARE / EXECUTE / DEALLOCATE statement means for capture.
pub(super) enum SqlPrepared {
    /// PREPARE `name`: whether its text only reads, and the text (None:
    /// from a variable).
    Prepare(String, bool, Option<Vec<u8>>),
    /// EXECUTE `name` with the texts of its USING expressions.
    Execute(String, Vec<Vec<u8>>),
    Deallocate(String),
    Other,
}

/// A statement prepared with PREPARE, as capture knows it.
pub(super) struct Prepared {
    pub reads: bool,
    pub text: Option<Vec<u8>>,
}

/// `text` with its `?` placeholders replaced by `values` (parenthesized);
/// Err: why it cannot be.
pub(super) fn substitute(text: &[u8], values: &[Vec<u8>]) -> Result<Vec<u8>, String> {
    let mut toks = Vec::new();
    crate::router::lexer::tokenize(text, &mut toks);
    let params: Vec<usize> = (0..toks.len())
        .filter(|&i| toks[i].kind == Tok::Param)
        .collect();
    if params.len() != values.len() {
        return Err(format!(
            "its EXECUTE gives {} values for {} placeholders",
            values.len(),
            params.len()
        ));
    }
    for &i in &params {
        let after_limit = (1..=3).any(|k| {
            i.checked_sub(k)
                .is_some_and(|j| toks[j].is_word(text, "LIMIT") || toks[j].is_word(text, "OFFSET"))
        });
        if after_limit {
            return Err("a placeholder of LIMIT takes no expression".into());
        }
    }
    let spans: Vec<std::ops::Range<usize>> =
        params.iter().map(|&i| toks[i].start..toks[i].end).collect();
    let values: Vec<String> = values
        .iter()
        .map(|v| format!("({})", String::from_utf8_lossy(v)))
        .collect();
    crate::router::lexer::render_params(text, &spans, &values)
        .ok_or_else(|| "its text could not be rendered".into())
}

pub(super) fn sql_prepared(sql: &[u8], toks: &[Token]) -> SqlPrepared {
    let name = |i: usize| {
        toks.get(i)
            .and_then(|t| t.ident(sql))
            .map(|n| n.to_ascii_lowercase())
    };
    let Some(first) = toks.first() else {
        return SqlPrepared::Other;
    };
    if first.is_word(sql, "PREPARE") {
        let Some(n) = name(1) else {
            return SqlPrepared::Other;
        };
        // PREPARE name FROM 'text' (text in a variable: not seen).
        let text = (toks.get(2).is_some_and(|t| t.is_word(sql, "FROM"))
            && toks.get(3).is_some_and(|t| t.kind == Tok::Str)
            && toks.len() == 4)
            .then(|| crate::sql::string_value(toks[3].text(sql), false))
            .flatten();
        let reads = text.as_deref().is_some_and(only_reads);
        return SqlPrepared::Prepare(n, reads, text);
    }
    if first.is_word(sql, "EXECUTE") {
        let Some(n) = name(1) else {
            return SqlPrepared::Other;
        };
        // USING a, b: each value's text, split at top-level commas.
        let mut values = Vec::new();
        if toks.get(2).is_some_and(|t| t.is_word(sql, "USING")) {
            let depths = crate::router::lexer::depths(toks);
            let mut start = None;
            for i in 3..toks.len() {
                let t = &toks[i];
                if depths[i] == 0 && t.kind == Tok::Punct(b',') {
                    values.push(sql[start.unwrap_or(t.start)..toks[i - 1].end].to_vec());
                    start = None;
                } else if start.is_none() {
                    start = Some(t.start);
                }
            }
            if let (Some(s), Some(last)) = (start, toks.last()) {
                values.push(sql[s..last.end].to_vec());
            }
        }
        return SqlPrepared::Execute(n, values);
    }
    if first.is_word(sql, "DEALLOCATE") || first.is_word(sql, "DROP") {
        return name(2).map_or(SqlPrepared::Other, SqlPrepared::Deallocate);
    }
    SqlPrepared::Other
}

/// Every statement of `text` is a read.
fn only_reads(text: &[u8]) -> bool {
    let c = router::classify(text);
    !c.statements.is_empty()
        && c.statements
            .iter()
            .all(|r| r.parsed && matches!(r.class, Class::Read { .. }))
}

impl Capture {
    /// Whether EXECUTE of `name` only reads (it was prepared here from
    /// text that only reads).
    pub(super) fn executes_a_read(&self, name: &str) -> bool {
        self.sql_prepared.get(name).is_some_and(|p| p.reads)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::router::lexer;

    fn parse(sql: &str) -> SqlPrepared {
        let mut toks = Vec::new();
        lexer::tokenize(sql.as_bytes(), &mut toks);
        sql_prepared(sql.as_bytes(), &toks)
    }

    #[test]
    fn prepared_text_is_judged_at_prepare() {
        let reads = |sql| matches!(parse(sql), SqlPrepared::Prepare(_, true, _));
        assert!(reads("PREPARE s FROM 'SELECT * FROM t WHERE id = ?'"));
        assert!(reads("PREPARE `S` FROM \"SELECT 'it''s' FROM t\""));
        assert!(!reads("PREPARE s FROM 'UPDATE t SET n = n + 1'"));
        assert!(!reads("PREPARE s FROM @text"));
        assert!(!reads("PREPARE s FROM 'SELECT 1; DELETE FROM t'"));
        assert!(
            matches!(parse("EXECUTE s USING @a, (@b + 1), 'x,y'"), SqlPrepared::Execute(n, v)
                if n == "s" && v == vec![b"@a".to_vec(), b"(@b + 1)".to_vec(), b"'x,y'".to_vec()])
        );
        assert!(matches!(parse("EXECUTE s"), SqlPrepared::Execute(_, v) if v.is_empty()));
        assert_eq!(
            substitute(
                b"UPDATE t SET n = n + ? WHERE id = ?",
                &[b"@a".to_vec(), b"2".to_vec()]
            )
            .unwrap(),
            b"UPDATE t SET n = n + (@a) WHERE id = (2)".to_vec()
        );
        assert!(substitute(b"DELETE FROM t LIMIT ?", &[b"@n".to_vec()]).is_err());
        assert!(substitute(b"DELETE FROM t WHERE id = ?", &[]).is_err());
        assert!(matches!(parse("DEALLOCATE PREPARE S"), SqlPrepared::Deallocate(n) if n == "s"));
        assert!(matches!(parse("DROP PREPARE s"), SqlPrepared::Deallocate(n) if n == "s"));
    }
}
