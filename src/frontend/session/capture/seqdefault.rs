//! Columns that default to a sequence (`id INT DEFAULT NEXTVAL(s)`): an
//! INSERT that leaves one out would advance the sequence on each side on
//! its own, and the secondary's rows would get its values, not the
//! primary's. Such an INSERT is sent with the column written in, each row
//! calling the column's own default (what the server would have evaluated
//! for it, row by row); the NEXTVAL calls it then holds are pinned like any
//! (`sequences::pin_nextval`): taken first, written as literals.

use crate::router::lexer::{Tok, Token};

/// `sql` (`INSERT|REPLACE … t (columns) VALUES (…), (…) [ON DUPLICATE …]`)
/// with each column of `defaults` (name, default expression) it leaves out
/// written in; None when it leaves none out or has another form (no column
/// list, `SET`, `SELECT`: the callers' checks decide those).
pub(super) fn write_in(
    sql: &[u8],
    toks: &[Token],
    defaults: &[(String, String)],
) -> Option<Vec<u8>> {
    let first = toks.first()?;
    if !(first.is_word(sql, "INSERT") || first.is_word(sql, "REPLACE")) {
        return None;
    }
    let depths = crate::router::lexer::depths(toks);
    let v = (1..toks.len()).find(|&i| {
        depths[i] == 0 && (toks[i].is_word(sql, "VALUES") || toks[i].is_word(sql, "VALUE"))
    })?;
    // The column list: the parenthesised group just before VALUES.
    let close = v.checked_sub(1)?;
    if toks[close].kind != Tok::Punct(b')') {
        return None;
    }
    let open = (0..close)
        .rev()
        .find(|&i| depths[i] == 0 && toks[i].kind == Tok::Punct(b'('))?;
    let named: Vec<String> = (open + 1..close)
        .filter(|&i| depths[i] == 1)
        .filter_map(|i| toks[i].ident(sql))
        .collect();
    let missing: Vec<&(String, String)> = defaults
        .iter()
        .filter(|(c, _)| !named.iter().any(|n| n.eq_ignore_ascii_case(c)))
        .collect();
    if missing.is_empty() {
        return None;
    }
    // Each row's closing parenthesis, up to the first word at depth 0
    // (ON DUPLICATE KEY UPDATE, AS alias, RETURNING).
    let mut row_ends = Vec::new();
    let mut i = v + 1;
    while i < toks.len() {
        let t = &toks[i];
        if depths[i] == 0 {
            match t.kind {
                Tok::Punct(b'(') => {
                    let end = (i + 1..toks.len())
                        .find(|&j| depths[j] == 0 && toks[j].kind == Tok::Punct(b')'))?;
                    row_ends.push(toks[end].start);
                    i = end + 1;
                    continue;
                }
                Tok::Punct(b',') => {}
                _ => break,
            }
        }
        i += 1;
    }
    if row_ends.is_empty() {
        return None;
    }
    let columns: String = missing
        .iter()
        .map(|(c, _)| format!(", {}", crate::sql::quote(c)))
        .collect();
    let values: String = missing.iter().map(|(_, d)| format!(", {d}")).collect();
    let mut out = Vec::with_capacity(sql.len() + columns.len() + values.len() * row_ends.len());
    let mut at = 0;
    let cuts = std::iter::once((toks[close].start, columns.as_bytes()))
        .chain(row_ends.iter().map(|&e| (e, values.as_bytes())));
    for (pos, text) in cuts {
        out.extend_from_slice(&sql[at..pos]);
        out.extend_from_slice(text);
        at = pos;
    }
    out.extend_from_slice(&sql[at..]);
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(sql: &str) -> Option<String> {
        let mut toks = Vec::new();
        crate::router::lexer::tokenize(sql.as_bytes(), &mut toks);
        let d = [("id".to_string(), "nextval(`db`.`s`)".to_string())];
        write_in(sql.as_bytes(), &toks, &d).map(|v| String::from_utf8(v).unwrap())
    }

    #[test]
    fn a_left_out_sequence_column_is_written_in_per_row() {
        assert_eq!(
            run("INSERT INTO t (a, b) VALUES (1, (2)), (3, 4)").as_deref(),
            Some("INSERT INTO t (a, b, `id`) VALUES (1, (2), nextval(`db`.`s`)), (3, 4, nextval(`db`.`s`))")
        );
        assert_eq!(
            run("INSERT IGNORE t(a) VALUE (1) ON DUPLICATE KEY UPDATE a = VALUES(a)").as_deref(),
            Some("INSERT IGNORE t(a, `id`) VALUE (1, nextval(`db`.`s`)) ON DUPLICATE KEY UPDATE a = VALUES(a)")
        );
        // Named, or another form: left to the other checks.
        assert_eq!(run("INSERT INTO t (ID, a) VALUES (5, 1)"), None);
        assert_eq!(run("INSERT INTO t VALUES (5, 1)"), None);
        assert_eq!(run("INSERT INTO t SET a = 1"), None);
        assert_eq!(run("INSERT INTO t (a) SELECT 1"), None);
        assert_eq!(run("UPDATE t SET a = 1"), None);
    }
}
