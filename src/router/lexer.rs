//! A small, allocation-light MySQL lexer for the hot path: statement digests
//! (literals normalized, so repeated shapes hit the route cache), splitting a
//! multi-statement packet, and the few token-level rewrites Tandem makes.
//! It never fails: unterminated strings or comments simply end the input.

use xxhash_rust::xxh3::Xxh3;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tok {
    /// Keyword or unquoted identifier.
    Word,
    /// `backquoted` identifier.
    Quoted,
    /// String literal ('…' or "…"), including hex/bit literals.
    Str,
    Num,
    /// `?` placeholder.
    Param,
    /// @var or @@var.
    Var,
    Punct(u8),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Token {
    pub kind: Tok,
    pub start: usize,
    pub end: usize,
}

impl Token {
    pub fn text<'a>(&self, sql: &'a [u8]) -> &'a [u8] {
        &sql[self.start..self.end]
    }
    pub fn is_word(&self, sql: &[u8], w: &str) -> bool {
        self.kind == Tok::Word && self.text(sql).eq_ignore_ascii_case(w.as_bytes())
    }
    pub fn is_literal(&self) -> bool {
        matches!(self.kind, Tok::Str | Tok::Num)
    }
    /// The identifier a word or `backquoted` token names (quotes removed,
    /// doubled backquotes undone); None for other tokens.
    pub fn ident(&self, sql: &[u8]) -> Option<String> {
        if !matches!(self.kind, Tok::Word | Tok::Quoted) {
            return None;
        }
        let s = String::from_utf8_lossy(self.text(sql));
        Some(
            match s.strip_prefix('`').and_then(|s| s.strip_suffix('`')) {
                Some(inner) => inner.replace("``", "`"),
                None => s.into_owned(),
            },
        )
    }
}

/// Tokenizes `sql` into `out` (cleared first), skipping white space and
/// comments. The bodies of executable comments (`/*! … */`, `/*M! … */`) are
/// tokenized as code, as the server runs them.
pub fn tokenize(sql: &[u8], out: &mut Vec<Token>) {
    out.clear();
    let n = sql.len();
    let mut i = 0;
    while i < n {
        let c = sql[i];
        match c {
            b' ' | b'\t' | b'\n' | b'\r' | 0x0B | 0x0C => i += 1,
            b'#' => i = skip_line(sql, i),
            b'-' if sql.get(i + 1) == Some(&b'-')
                && sql.get(i + 2).is_none_or(|c| c.is_ascii_whitespace()) =>
            {
                i = skip_line(sql, i)
            }
            b'/' if sql.get(i + 1) == Some(&b'*') => {
                let exec = sql.get(i + 2) == Some(&b'!')
                    || (sql.get(i + 2) == Some(&b'M') && sql.get(i + 3) == Some(&b'!'));
                if exec {
                    // Skip the marker and the optional version number; the
                    // closing `*/` is skipped below as punctuation-free text.
                    i += if sql[i + 2] == b'M' { 4 } else { 3 };
                    while i < n && sql[i].is_ascii_digit() {
                        i += 1;
                    }
                } else {
                    i = match memchr::memmem::find(&sql[i + 2..], b"*/") {
                        Some(p) => i + 2 + p + 2,
                        None => n,
                    };
                }
            }
            b'*' if sql.get(i + 1) == Some(&b'/') => i += 2, // end of an executable comment
            b'\'' | b'"' => {
                let end = skip_quoted(sql, i, c);
                out.push(Token {
                    kind: Tok::Str,
                    start: i,
                    end,
                });
                i = end;
            }
            b'`' => {
                let end = skip_quoted(sql, i, b'`');
                out.push(Token {
                    kind: Tok::Quoted,
                    start: i,
                    end,
                });
                i = end;
            }
            b'0'..=b'9' => {
                let end = skip_number(sql, i);
                // 1abc is an identifier in MySQL; 0x1F / 0b01 are literals.
                if end < n && is_word_byte(sql[end]) && !sql[i..end].starts_with(b"0x") {
                    let end = skip_word(sql, end);
                    out.push(Token {
                        kind: Tok::Word,
                        start: i,
                        end,
                    });
                    i = end;
                } else {
                    out.push(Token {
                        kind: Tok::Num,
                        start: i,
                        end,
                    });
                    i = end;
                }
            }
            b'.' if sql.get(i + 1).is_some_and(|c| c.is_ascii_digit())
                && out
                    .last()
                    .is_none_or(|t| !matches!(t.kind, Tok::Word | Tok::Quoted)) =>
            {
                let end = skip_number(sql, i);
                out.push(Token {
                    kind: Tok::Num,
                    start: i,
                    end,
                });
                i = end;
            }
            b'?' => {
                out.push(Token {
                    kind: Tok::Param,
                    start: i,
                    end: i + 1,
                });
                i += 1;
            }
            b'@' => {
                let mut end = i + 1;
                if sql.get(end) == Some(&b'@') {
                    end += 1;
                }
                match sql.get(end) {
                    Some(q @ (b'\'' | b'"' | b'`')) => end = skip_quoted(sql, end, *q),
                    _ => {
                        while end < n && (is_word_byte(sql[end]) || sql[end] == b'.') {
                            end += 1;
                        }
                    }
                }
                out.push(Token {
                    kind: Tok::Var,
                    start: i,
                    end,
                });
                i = end;
            }
            // x'…', b'…', n'…' and _charset'…' prefixes: the prefix is a word,
            // the literal a string, which is what the digest needs.
            _ if is_word_byte(c) => {
                let end = skip_word(sql, i);
                let word = &sql[i..end];
                if sql.get(end) == Some(&b'\'')
                    && (word.eq_ignore_ascii_case(b"x")
                        || word.eq_ignore_ascii_case(b"b")
                        || word.eq_ignore_ascii_case(b"n"))
                {
                    let e = skip_quoted(sql, end, b'\'');
                    out.push(Token {
                        kind: Tok::Str,
                        start: i,
                        end: e,
                    });
                    i = e;
                } else {
                    out.push(Token {
                        kind: Tok::Word,
                        start: i,
                        end,
                    });
                    i = end;
                }
            }
            _ => {
                out.push(Token {
                    kind: Tok::Punct(c),
                    start: i,
                    end: i + 1,
                });
                i += 1;
            }
        }
    }
}

fn is_word_byte(c: u8) -> bool {
    c.is_ascii_alphanumeric() || c == b'_' || c == b'$' || c >= 0x80
}

fn skip_word(sql: &[u8], mut i: usize) -> usize {
    while i < sql.len() && is_word_byte(sql[i]) {
        i += 1;
    }
    i
}

fn skip_line(sql: &[u8], i: usize) -> usize {
    memchr::memchr(b'\n', &sql[i..]).map_or(sql.len(), |p| i + p + 1)
}

fn skip_quoted(sql: &[u8], start: usize, q: u8) -> usize {
    let mut i = start + 1;
    while i < sql.len() {
        let c = sql[i];
        if c == b'\\' && q != b'`' {
            i += 2;
        } else if c == q {
            if sql.get(i + 1) == Some(&q) {
                i += 2; // doubled quote
            } else {
                return i + 1;
            }
        } else {
            i += 1;
        }
    }
    sql.len()
}

fn skip_number(sql: &[u8], start: usize) -> usize {
    let n = sql.len();
    let mut i = start;
    if sql[i] == b'0' && matches!(sql.get(i + 1), Some(b'x' | b'X' | b'b' | b'B')) {
        i += 2;
        while i < n && sql[i].is_ascii_hexdigit() {
            i += 1;
        }
        return i;
    }
    while i < n && (sql[i].is_ascii_digit() || sql[i] == b'.') {
        i += 1;
    }
    if i < n && (sql[i] == b'e' || sql[i] == b'E') {
        let mut j = i + 1;
        if j < n && (sql[j] == b'+' || sql[j] == b'-') {
            j += 1;
        }
        if j < n && sql[j].is_ascii_digit() {
            i = j;
            while i < n && sql[i].is_ascii_digit() {
                i += 1;
            }
        }
    }
    i
}

/// Digest of a token range: literals and placeholders hash as `?`, so
/// `WHERE id = 1` and `WHERE id = 2` share a digest.
pub fn digest(sql: &[u8], tokens: &[Token]) -> u64 {
    let mut h = Xxh3::new();
    for t in tokens {
        match t.kind {
            Tok::Str | Tok::Num | Tok::Param => h.update(b"?"),
            _ => h.update(t.text(sql)),
        }
        h.update(b" ");
    }
    h.digest()
}

/// Splits the token list at top-level `;` into statement ranges (token index
/// ranges). A compound CREATE (procedure, function, trigger, event) is not
/// split: its body's semicolons belong to it.
pub fn split_statements(sql: &[u8], tokens: &[Token]) -> Vec<std::ops::Range<usize>> {
    let mut out = Vec::with_capacity(1);
    let mut start = 0;
    for (i, t) in tokens.iter().enumerate() {
        if t.kind == Tok::Punct(b';') {
            if i > start {
                if is_compound_create(sql, &tokens[start..]) {
                    break;
                }
                out.push(start..i);
            }
            start = i + 1;
        }
    }
    if start < tokens.len() {
        let end = if is_compound_create(sql, &tokens[start..]) {
            // Drop a trailing `;` of the compound statement, if any.
            tokens.len() - usize::from(tokens.last().is_some_and(|t| t.kind == Tok::Punct(b';')))
        } else {
            tokens.len()
        };
        out.push(start..end.max(start));
    }
    out
}

fn is_compound_create(sql: &[u8], toks: &[Token]) -> bool {
    toks.first().is_some_and(|t| t.is_word(sql, "CREATE"))
        && toks.iter().take(8).any(|t| {
            ["PROCEDURE", "FUNCTION", "TRIGGER", "EVENT"]
                .iter()
                .any(|w| t.is_word(sql, w))
        })
}

/// `KILL [HARD|SOFT] [CONNECTION|QUERY] <id>`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Kill {
    pub query_only: bool,
    pub id: u64,
}

/// Recognizes a KILL of a numeric id (not `KILL QUERY ID`, not `KILL USER`).
pub fn parse_kill(sql: &[u8], tokens: &[Token]) -> Option<Kill> {
    let mut it = tokens.iter().peekable();
    if !it.next()?.is_word(sql, "KILL") {
        return None;
    }
    if it
        .peek()
        .is_some_and(|t| t.is_word(sql, "HARD") || t.is_word(sql, "SOFT"))
    {
        it.next();
    }
    let mut query_only = false;
    if let Some(t) = it.peek() {
        if t.is_word(sql, "QUERY") {
            query_only = true;
            it.next();
        } else if t.is_word(sql, "CONNECTION") {
            it.next();
        }
    }
    let id_tok = it.next()?;
    if id_tok.kind != Tok::Num {
        return None;
    }
    let id = std::str::from_utf8(id_tok.text(sql)).ok()?.parse().ok()?;
    match it.next() {
        None => Some(Kill { query_only, id }),
        Some(t) if t.kind == Tok::Punct(b';') && it.next().is_none() => {
            Some(Kill { query_only, id })
        }
        _ => None,
    }
}

/// Whether the statement calls CONNECTION_ID().
pub fn calls_connection_id(sql: &[u8], tokens: &[Token]) -> bool {
    connection_id_calls(sql, tokens).next().is_some()
}

fn connection_id_calls<'a>(sql: &'a [u8], tokens: &'a [Token]) -> impl Iterator<Item = usize> + 'a {
    (0..tokens.len()).filter(move |&i| {
        tokens[i].is_word(sql, "CONNECTION_ID")
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
    let calls: Vec<usize> = connection_id_calls(sql, tokens).collect();
    if calls.is_empty() {
        return None;
    }
    let mut out = Vec::with_capacity(sql.len() + 32);
    let mut at = 0;
    for i in calls {
        let (start, end) = (tokens[i].start, tokens[i + 2].end);
        out.extend_from_slice(&sql[at..start]);
        out.extend_from_slice(id.to_string().as_bytes());
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

fn is_bare_select_item(sql: &[u8], tokens: &[Token], first: usize, last: usize) -> bool {
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

#[cfg(test)]
mod tests {
    use super::*;

    fn toks(sql: &str) -> Vec<Token> {
        let mut v = Vec::new();
        tokenize(sql.as_bytes(), &mut v);
        v
    }

    fn dig(sql: &str) -> u64 {
        digest(sql.as_bytes(), &toks(sql))
    }

    #[test]
    fn literals_normalize_in_digest() {
        assert_eq!(
            dig("SELECT * FROM t WHERE id = 1"),
            dig("SELECT * FROM t WHERE id=42")
        );
        assert_eq!(
            dig("SELECT 'a' FROM t -- c\n"),
            dig("SELECT \"it''s\\\" x\" /* c */ FROM t")
        );
        assert_eq!(dig("SELECT x'ff', 1.5e3"), dig("SELECT ?, ?"));
        assert_ne!(dig("SELECT * FROM t"), dig("SELECT * FROM u"));
        assert_ne!(dig("SELECT * FROM t1"), dig("SELECT * FROM t2"));
    }

    #[test]
    fn splits_multi_statements_but_not_routine_bodies() {
        let sql = "SELECT 1; INSERT INTO t VALUES (';'); ;";
        let t = toks(sql);
        assert_eq!(split_statements(sql.as_bytes(), &t).len(), 2);
        let body = "CREATE PROCEDURE p() BEGIN SELECT 1; SELECT 2; END";
        let t = toks(body);
        assert_eq!(split_statements(body.as_bytes(), &t), vec![0..t.len()]);
        let after =
            "SELECT 1; CREATE TRIGGER tr BEFORE INSERT ON t FOR EACH ROW BEGIN SET @a=1; END;";
        let t = toks(after);
        assert_eq!(split_statements(after.as_bytes(), &t).len(), 2);
    }

    #[test]
    fn executable_comments_are_code() {
        let sql = "/*!40101 SET NAMES utf8mb4 */";
        let t = toks(sql);
        assert!(t[0].is_word(sql.as_bytes(), "SET"));
        assert_eq!(t.len(), 3);
    }

    #[test]
    fn kill_forms() {
        let k = |s: &str| parse_kill(s.as_bytes(), &toks(s));
        assert_eq!(
            k("KILL 12"),
            Some(Kill {
                query_only: false,
                id: 12
            })
        );
        assert_eq!(
            k("kill query 7;"),
            Some(Kill {
                query_only: true,
                id: 7
            })
        );
        assert_eq!(
            k("KILL HARD CONNECTION 9"),
            Some(Kill {
                query_only: false,
                id: 9
            })
        );
        assert_eq!(k("KILL QUERY ID 3"), None);
        assert_eq!(k("KILL USER root"), None);
        assert_eq!(k("SELECT 1"), None);
    }

    #[test]
    fn connection_id_rewrite_keeps_column_names() {
        let rw = |s: &str| {
            String::from_utf8(rewrite_connection_id(s.as_bytes(), &toks(s), 77).unwrap()).unwrap()
        };
        assert_eq!(
            rw("SELECT CONNECTION_ID()"),
            "SELECT 77 AS `CONNECTION_ID()`"
        );
        assert_eq!(
            rw("select connection_id(), 1 from dual"),
            "select 77 AS `connection_id()`, 1 from dual"
        );
        assert_eq!(
            rw("SELECT * FROM t WHERE owner = CONNECTION_ID()"),
            "SELECT * FROM t WHERE owner = 77"
        );
        assert_eq!(
            rw("SELECT CONCAT('a', CONNECTION_ID())"),
            "SELECT CONCAT('a', 77)"
        );
        assert_eq!(rw("SELECT CONNECTION_ID() AS cid"), "SELECT 77 AS cid");
        assert_eq!(
            rw("SELECT x IN (1, CONNECTION_ID(), 2)"),
            "SELECT x IN (1, 77, 2)"
        );
        assert_eq!(
            rw("SELECT (SELECT CONNECTION_ID())"),
            "SELECT (SELECT 77 AS `CONNECTION_ID()`)"
        );
        let s = "SELECT 'CONNECTION_ID()'";
        assert!(rewrite_connection_id(s.as_bytes(), &toks(s), 1).is_none());
    }

    #[test]
    fn unterminated_input_does_not_panic() {
        for s in [
            "'abc", "`x", "/* never", "x'", "@'", "0x", "1e", "-- ", "/*!", "\\",
        ] {
            let t = toks(s);
            let _ = digest(s.as_bytes(), &t);
            let _ = split_statements(s.as_bytes(), &t);
        }
    }
}

/// Rewrites what the primary would evaluate differently from the secondary:
/// each `UUID()` call becomes a string literal from `uuid()` (the same text
/// then runs on both sides) and `SYSDATE(` becomes `NOW(` (which honours the
/// pinned statement time). Token positions only; the rest is kept byte for
/// byte. None when there is nothing to rewrite.
pub fn pin_rewrite(
    sql: &[u8],
    tokens: &[Token],
    mut uuid: impl FnMut() -> String,
) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(sql.len() + 64);
    let mut at = 0;
    let mut changed = false;
    let mut i = 0;
    while i < tokens.len() {
        let t = &tokens[i];
        let open = tokens
            .get(i + 1)
            .is_some_and(|n| n.kind == Tok::Punct(b'('));
        let close = tokens
            .get(i + 2)
            .is_some_and(|n| n.kind == Tok::Punct(b')'));
        if t.is_word(sql, "UUID") && open && close {
            out.extend_from_slice(&sql[at..t.start]);
            out.push(b'\'');
            out.extend_from_slice(uuid().as_bytes());
            out.push(b'\'');
            at = tokens[i + 2].end;
            changed = true;
            i += 3;
            continue;
        }
        if t.is_word(sql, "SYSDATE") && open {
            out.extend_from_slice(&sql[at..t.start]);
            out.extend_from_slice(b"NOW");
            at = t.end;
            changed = true;
        }
        i += 1;
    }
    if !changed {
        return None;
    }
    out.extend_from_slice(&sql[at..]);
    Some(out)
}

/// Number of `?` placeholders.
pub fn count_params(tokens: &[Token]) -> usize {
    tokens.iter().filter(|t| t.kind == Tok::Param).count()
}

/// Where the `?` placeholders of `sql` are, in order (for
/// [`render_params`]).
pub fn param_spans(sql: &[u8]) -> Vec<std::ops::Range<usize>> {
    let mut tokens = Vec::new();
    tokenize(sql, &mut tokens);
    tokens
        .iter()
        .filter(|t| t.kind == Tok::Param)
        .map(|t| t.start..t.end)
        .collect()
}

/// Replaces the placeholders at `spans` (from [`param_spans`]), in order,
/// with `values` (SQL literals). None when the counts differ.
pub fn render_params(
    sql: &[u8],
    spans: &[std::ops::Range<usize>],
    values: &[String],
) -> Option<Vec<u8>> {
    if spans.len() != values.len() {
        return None;
    }
    let extra: usize = values.iter().map(|v| v.len()).sum();
    let mut out = Vec::with_capacity(sql.len() + extra);
    let mut at = 0;
    for (span, v) in spans.iter().zip(values) {
        out.extend_from_slice(sql.get(at..span.start)?);
        out.extend_from_slice(v.as_bytes());
        at = span.end;
    }
    out.extend_from_slice(sql.get(at..)?);
    Some(out)
}

/// The name a SAVEPOINT / ROLLBACK TO / RELEASE SAVEPOINT statement names
/// (its last word or quoted identifier), unquoted.
pub fn savepoint_name(sql: &[u8], tokens: &[Token]) -> Option<String> {
    let name = tokens.iter().rev().find_map(|t| t.ident(sql))?;
    Some(name.to_ascii_lowercase())
}

/// What [`rename_database`] found.
#[derive(Debug, PartialEq, Eq)]
pub enum Renamed {
    /// No name is qualified with the database.
    Unchanged,
    Text(Vec<u8>),
    /// The name is also used for something else in the statement (a table,
    /// an alias or a column), so `name.x` could mean that instead.
    Ambiguous,
}

/// Renames the database `from` to `to` where it qualifies a name
/// (`from.t`, `from`.`t`, `from.t.c`, `from.f()`), at token positions; the
/// rest is kept byte for byte. Names compare exactly (database names are
/// case-sensitive on the servers Tandem targets).
///
/// `from.x` also reads as table-or-alias `from`, column `x`; that needs a
/// table or alias named `from` in the statement, written bare (`UPDATE
/// from …`, `… AS from`) or qualified (`db.from`). Any such use of the name
/// makes the result `Ambiguous` instead of guessing.
pub fn rename_database(sql: &[u8], tokens: &[Token], from: &str, to: &str) -> Renamed {
    let named = |t: &Token| t.ident(sql).is_some_and(|n| n == from);
    let dot = |i: usize| tokens.get(i).is_some_and(|t| t.kind == Tok::Punct(b'.'));
    let word = |i: usize| {
        tokens
            .get(i)
            .is_some_and(|t| matches!(t.kind, Tok::Word | Tok::Quoted))
    };
    let mut qualifiers = Vec::new();
    let mut other_use = false;
    for (i, t) in tokens.iter().enumerate() {
        if !named(t) {
            continue;
        }
        let after_dot = i > 0 && dot(i - 1);
        if !after_dot && dot(i + 1) && word(i + 2) {
            qualifiers.push(t);
        } else {
            other_use = true;
        }
    }
    if qualifiers.is_empty() {
        return Renamed::Unchanged;
    }
    if other_use {
        return Renamed::Ambiguous;
    }
    let mut out = Vec::with_capacity(sql.len() + qualifiers.len() * (to.len() + 2));
    let mut at = 0;
    for t in qualifiers {
        out.extend_from_slice(&sql[at..t.start]);
        out.extend_from_slice(crate::sql::quote(to).as_bytes());
        at = t.end;
    }
    out.extend_from_slice(&sql[at..]);
    Renamed::Text(out)
}

#[cfg(test)]
mod pin_tests {
    use super::*;

    fn toks(sql: &[u8]) -> Vec<Token> {
        let mut v = Vec::new();
        tokenize(sql, &mut v);
        v
    }

    #[test]
    fn uuid_and_sysdate_are_rewritten_at_token_positions_only() {
        let sql =
            b"INSERT INTO t (u, v, s, c) VALUES (UUID(), uuid( ), SYSDATE(6), 'UUID()') -- UUID()";
        let mut n = 0;
        let out = pin_rewrite(sql, &toks(sql), || {
            n += 1;
            format!("u{n}")
        })
        .unwrap();
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "INSERT INTO t (u, v, s, c) VALUES ('u1', 'u2', NOW(6), 'UUID()') -- UUID()"
        );
        let plain = b"INSERT INTO t (uuid) VALUES (1)";
        assert!(pin_rewrite(plain, &toks(plain), || unreachable!()).is_none());
    }

    #[test]
    fn params_are_rendered_in_order() {
        let sql = b"UPDATE t SET a = ?, b = '?' WHERE id = ?";
        let t = toks(sql);
        assert_eq!(count_params(&t), 2);
        let spans = param_spans(sql);
        let out = render_params(sql, &spans, &["'x'".into(), "7".into()]).unwrap();
        assert_eq!(out, b"UPDATE t SET a = 'x', b = '?' WHERE id = 7");
        assert!(render_params(sql, &spans, &["1".into()]).is_none());
    }

    #[test]
    fn savepoint_names() {
        for (sql, name) in [
            ("SAVEPOINT a1", "a1"),
            ("ROLLBACK TO SAVEPOINT `My Sp`", "my sp"),
            ("ROLLBACK WORK TO b", "b"),
            ("RELEASE SAVEPOINT C", "c"),
        ] {
            assert_eq!(
                savepoint_name(sql.as_bytes(), &toks(sql.as_bytes())).as_deref(),
                Some(name)
            );
        }
    }
    #[test]
    fn database_qualifiers_are_renamed_unless_the_name_means_something_else() {
        let r =
            |sql: &str| rename_database(sql.as_bytes(), &toks(sql.as_bytes()), "shop", "shop_next");
        let text = |sql: &str| match r(sql) {
            Renamed::Text(t) => String::from_utf8(t).unwrap(),
            other => panic!("{sql}: {other:?}"),
        };
        assert_eq!(
            text("UPDATE shop.t SET v = v + 1 WHERE shop.t.id = 1 AND s = 'shop.t'"),
            "UPDATE `shop_next`.t SET v = v + 1 WHERE `shop_next`.t.id = 1 AND s = 'shop.t'"
        );
        assert_eq!(
            text("INSERT INTO `shop` . `t` (a) SELECT shop.f(x) FROM other.u"),
            "INSERT INTO `shop_next` . `t` (a) SELECT `shop_next`.f(x) FROM other.u"
        );
        assert_eq!(
            text("CREATE TABLE shop.q (id INT)"),
            "CREATE TABLE `shop_next`.q (id INT)"
        );
        for unchanged in [
            "UPDATE t SET v = 1",
            "UPDATE shops.t SET v = 1",
            "UPDATE SHOP.t SET v = 1",
            "INSERT INTO t VALUES ('shop.t')",
            "UPDATE t SET shop = 1 WHERE other.shop = 2",
        ] {
            assert_eq!(r(unchanged), Renamed::Unchanged, "{unchanged}");
        }
        for ambiguous in [
            "UPDATE t AS shop SET shop.v = 1",
            "UPDATE shop SET shop.v = 1",
            "UPDATE other.shop SET shop.v = 1",
            "UPDATE shop.t SET shop = 1",
            "INSERT INTO shop.t SELECT shop.* FROM u shop",
        ] {
            assert_eq!(r(ambiguous), Renamed::Ambiguous, "{ambiguous}");
        }
    }
}
