//! CONNECTION_ID(): whether a statement calls it, and the rewrite that answers
//! it with the session's Tandem id at token positions.

use super::*;

/// Whether the statement calls CONNECTION_ID().
pub fn calls_connection_id(sql: &[u8], tokens: &[Token]) -> bool {
    connection_id_calls(sql, tokens).next().is_some()
}

pub(super) fn connection_id_calls<'a>(
    sql: &'a [u8],
    tokens: &'a [Token],
) -> impl Iterator<Item = usize> + 'a {
    calls_of(sql, tokens, "CONNECTION_ID")
}

/// Token positions of `name()` calls without arguments.
fn calls_of<'a>(
    sql: &'a [u8],
    tokens: &'a [Token],
    name: &'a str,
) -> impl Iterator<Item = usize> + 'a {
    (0..tokens.len()).filter(move |&i| {
        tokens[i].is_word(sql, name)
            && tokens
                .get(i + 1)
                .is_some_and(|t| t.kind == Tok::Punct(b'('))
            && tokens
                .get(i + 2)
                .is_some_and(|t| t.kind == Tok::Punct(b')'))
    })
}

/// Replaces every `CONNECTION_ID()` call with the literal `id`, so clients see
/// Tandem's connection id (the one in the handshake, the one KILL takes)
/// exactly as on a direct connection. A bare select item keeps its column
/// name through an alias of the original text.
pub fn rewrite_connection_id(sql: &[u8], tokens: &[Token], id: u32) -> Option<Vec<u8>> {
    rewrite_calls(sql, tokens, "CONNECTION_ID", &id.to_string())
}

/// Replaces every argument-less call of `name` (`ROW_COUNT()`) with
/// `literal`; a bare select item keeps its column name through an alias of
/// the original text. None when there is no such call.
pub fn rewrite_calls(sql: &[u8], tokens: &[Token], name: &str, literal: &str) -> Option<Vec<u8>> {
    let calls: Vec<usize> = calls_of(sql, tokens, name).collect();
    if calls.is_empty() {
        return None;
    }
    let mut out = Vec::with_capacity(sql.len() + 32);
    let mut at = 0;
    for i in calls {
        let (start, end) = (tokens[i].start, tokens[i + 2].end);
        out.extend_from_slice(&sql[at..start]);
        out.extend_from_slice(literal.as_bytes());
        if is_bare_select_item(sql, tokens, i, i + 2) {
            out.extend_from_slice(b" AS `");
            for &b in &sql[start..end] {
                if b == b'`' {
                    out.push(b'`');
                }
                out.push(b);
            }
            out.push(b'`');
        }
        at = end;
    }
    out.extend_from_slice(&sql[at..]);
    Some(out)
}

pub(super) fn is_bare_select_item(sql: &[u8], tokens: &[Token], first: usize, last: usize) -> bool {
    // Find the innermost open parenthesis before `first`.
    let mut depth = 0i32;
    let mut ctx_start = 0;
    for j in (0..first).rev() {
        match tokens[j].kind {
            Tok::Punct(b')') => depth += 1,
            Tok::Punct(b'(') if depth == 0 => {
                ctx_start = j + 1;
                break;
            }
            Tok::Punct(b'(') => depth -= 1,
            _ => {}
        }
    }
    let in_select = tokens
        .get(ctx_start)
        .is_some_and(|t| t.is_word(sql, "SELECT"));
    let prev_ok = first > 0
        && (tokens[first - 1].kind == Tok::Punct(b',')
            || ["SELECT", "DISTINCT", "ALL"]
                .iter()
                .any(|w| tokens[first - 1].is_word(sql, w)));
    let next_ok = match tokens.get(last + 1) {
        None => true,
        Some(t) => {
            matches!(
                t.kind,
                Tok::Punct(b',') | Tok::Punct(b';') | Tok::Punct(b')')
            ) || [
                "FROM",
                "INTO",
                "WHERE",
                "UNION",
                "LIMIT",
                "ORDER",
                "GROUP",
                "HAVING",
                "FOR",
                "LOCK",
                "WINDOW",
                "EXCEPT",
                "INTERSECT",
            ]
            .iter()
            .any(|w| t.is_word(sql, w))
        }
    };
    in_select && prev_ok && next_ok
}
