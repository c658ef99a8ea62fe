//! SQL-level prepared statements (`PREPARE name FROM '…'`, `EXECUTE
//! name`). An EXECUTE runs text Tandem saw only at PREPARE, so capture
//! remembers, per name, whether that text only reads: EXECUTE of a read
//! goes through; of anything else (or of text from a variable, which
//! Tandem cannot see) it follows `unsafe_writes`, since the values of the
//! `USING @vars` it would run with are not captured.

use super::Capture;
use crate::router::lexer::{Tok, Token};
use crate::router::{self, Class};

/// What a PREPARE / EXECUTE / DEALLOCATE statement means for capture.
pub(super) enum SqlPrepared {
    /// PREPARE `name`: whether its text only reads.
    Prepare(String, bool),
    Execute(String),
    Deallocate(String),
    Other,
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
        let reads = toks.get(2).is_some_and(|t| t.is_word(sql, "FROM"))
            && toks.get(3).is_some_and(|t| t.kind == Tok::Str)
            && toks.len() == 4
            && crate::sql::string_value(toks[3].text(sql), false)
                .is_some_and(|text| only_reads(&text));
        return SqlPrepared::Prepare(n, reads);
    }
    if first.is_word(sql, "EXECUTE") {
        return name(1).map_or(SqlPrepared::Other, SqlPrepared::Execute);
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
        self.sql_prepared.get(name).copied().unwrap_or(false)
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
        let reads = |sql| matches!(parse(sql), SqlPrepared::Prepare(_, true));
        assert!(reads("PREPARE s FROM 'SELECT * FROM t WHERE id = ?'"));
        assert!(reads("PREPARE `S` FROM \"SELECT 'it''s' FROM t\""));
        assert!(!reads("PREPARE s FROM 'UPDATE t SET n = n + 1'"));
        assert!(!reads("PREPARE s FROM @text"));
        assert!(!reads("PREPARE s FROM 'SELECT 1; DELETE FROM t'"));
        assert!(matches!(parse("EXECUTE s USING @a"), SqlPrepared::Execute(n) if n == "s"));
        assert!(matches!(parse("DEALLOCATE PREPARE S"), SqlPrepared::Deallocate(n) if n == "s"));
        assert!(matches!(parse("DROP PREPARE s"), SqlPrepared::Deallocate(n) if n == "s"));
    }
}
