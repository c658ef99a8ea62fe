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
/// `literal`. A select item without an alias keeps its column name (the
/// item's text as written) through an alias of the original text. None
/// when there is no such call.
pub fn rewrite_calls(sql: &[u8], tokens: &[Token], name: &str, literal: &str) -> Option<Vec<u8>> {
    let calls: Vec<usize> = calls_of(sql, tokens, name).collect();
    if calls.is_empty() {
        return None;
    }
    // After which token each alias goes, and the item's text.
    let mut aliases: Vec<(usize, (usize, usize))> = Vec::new();
    for &i in &calls {
        if let Some((first, last)) = unaliased_item(sql, tokens, i) {
            if !aliases.iter().any(|&(l, _)| l == last) {
                aliases.push((last, (tokens[first].start, tokens[last].end)));
            }
        }
    }
    let mut out = Vec::with_capacity(sql.len() + 32);
    let mut at = 0;
    let mut ci = calls.iter().peekable();
    for (t, tok) in tokens.iter().enumerate() {
        if ci.peek() == Some(&&t) {
            ci.next();
            out.extend_from_slice(&sql[at..tok.start]);
            out.extend_from_slice(literal.as_bytes());
            at = tokens[t + 2].end;
        }
        if let Some(&(_, (start, end))) = aliases.iter().find(|&&(l, _)| l == t) {
            out.extend_from_slice(&sql[at..tok.end.max(at)]);
            out.extend_from_slice(b" AS `");
            for &b in &sql[start..end] {
                if b == b'`' {
                    out.push(b'`');
                }
                out.push(b);
            }
            out.push(b'`');
            at = tok.end.max(at);
        }
    }
    out.extend_from_slice(&sql[at..]);
    Some(out)
}

/// Words that end a select list (or show the token is not in one).
const LIST_ENDS: &[&str] = &[
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
    "SET",
    "VALUES",
    "VALUE",
    "ON",
    "USING",
    "JOIN",
];

/// Select modifiers that come before the first item.
const MODIFIERS: &[&str] = &[
    "ALL",
    "DISTINCT",
    "DISTINCTROW",
    "HIGH_PRIORITY",
    "STRAIGHT_JOIN",
    "SQL_SMALL_RESULT",
    "SQL_BIG_RESULT",
    "SQL_BUFFER_RESULT",
    "SQL_CACHE",
    "SQL_NO_CACHE",
    "SQL_CALC_FOUND_ROWS",
];

/// Longest item text given as an alias (MariaDB's limit is 256).
const MAX_ALIAS: usize = 250;

/// The select item (first and last token) around token `at`, when it is
/// in a select list and has no alias of its own; None when it is not in
/// a select list, has an alias, or may have one (`expr word`).
fn unaliased_item(sql: &[u8], tokens: &[Token], at: usize) -> Option<(usize, usize)> {
    // Backwards to the SELECT whose list holds the token, at the lowest
    // parenthesis level met on the way.
    let (mut level, mut min) = (0i32, 0i32);
    let mut commas: Vec<(usize, i32)> = Vec::new();
    let mut select = None;
    for j in (0..at).rev() {
        let t = &tokens[j];
        match t.kind {
            Tok::Punct(b')') => level += 1,
            Tok::Punct(b'(') => {
                level -= 1;
                min = min.min(level);
            }
            Tok::Punct(b';') => return None,
            Tok::Punct(b',') => commas.push((j, level)),
            _ => {}
        }
        if level == min && t.kind == Tok::Word {
            if t.is_word(sql, "SELECT") {
                select = Some((j, level));
                break;
            }
            if LIST_ENDS.iter().any(|w| t.is_word(sql, w)) {
                return None;
            }
        }
    }
    let (sel, item_level) = select?;
    let mut first = commas
        .iter()
        .filter(|&&(_, l)| l == item_level)
        .map(|&(j, _)| j + 1)
        .next()
        .unwrap_or(sel + 1);
    if first == sel + 1 {
        while first < at && MODIFIERS.iter().any(|w| tokens[first].is_word(sql, w)) {
            first += 1;
        }
    }
    // Forwards to the item's end.
    let mut level = 0i32;
    let mut last = at;
    for (j, t) in tokens.iter().enumerate().skip(at) {
        match t.kind {
            Tok::Punct(b'(') => level += 1,
            Tok::Punct(b')') if level == item_level => break,
            Tok::Punct(b')') => level -= 1,
            Tok::Punct(b',' | b';') if level == item_level => break,
            Tok::Word if level == item_level && LIST_ENDS.iter().any(|w| t.is_word(sql, w)) => {
                break
            }
            _ => {}
        }
        last = j;
    }
    let item = &tokens[first..=last];
    let has_as = {
        let mut l = item_level;
        item.iter().any(|t| {
            match t.kind {
                Tok::Punct(b'(') => l += 1,
                Tok::Punct(b')') => l -= 1,
                _ => {}
            }
            l == item_level && t.is_word(sql, "AS")
        })
    };
    if has_as || tokens[last].end - tokens[first].start > MAX_ALIAS {
        return None;
    }
    let plain_end = match tokens[last].kind {
        Tok::Punct(b')') | Tok::Num | Tok::Str => true,
        Tok::Word | Tok::Quoted => {
            last > first && matches!(tokens[last - 1].kind, Tok::Punct(p) if p != b')')
        }
        _ => false,
    };
    plain_end.then_some((first, last))
}
