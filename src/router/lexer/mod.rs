//! A small, allocation-light MySQL lexer for the hot path: statement digests
//! (literals normalized, so repeated shapes hit the route cache), splitting a
//! multi-statement packet, and the few token-level rewrites Tandem makes.
//! It never fails: unterminated strings or comments simply end the input.

mod connection_id;
mod rewrite;
pub use connection_id::{calls_connection_id, rewrite_calls, rewrite_connection_id};
pub use rewrite::{
    count_params, param_spans, pin_rewrite, rename_database, render_params, savepoint_name, Renamed,
};

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

/// Each token's parenthesis depth: 0 at the statement's top level; an
/// opening parenthesis has the depth outside it, its contents one more.
pub fn depths(toks: &[Token]) -> Vec<i32> {
    let mut depth = 0i32;
    let mut out = Vec::with_capacity(toks.len());
    for t in toks {
        if t.kind == Tok::Punct(b')') {
            depth -= 1;
        }
        out.push(depth);
        if t.kind == Tok::Punct(b'(') {
            depth += 1;
        }
    }
    out
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
            "SELECT CONCAT('a', 77) AS `CONCAT('a', CONNECTION_ID())`"
        );
        assert_eq!(
            rw("SELECT CONNECTION_ID() + 1, 2 * CONNECTION_ID() AS two, CONNECTION_ID() + t.x FROM t"),
            "SELECT 77 + 1 AS `CONNECTION_ID() + 1`, 2 * 77 AS two, 77 + t.x AS `CONNECTION_ID() + t.x` FROM t"
        );
        assert_eq!(
            rw("SELECT DISTINCT CONNECTION_ID() cid"),
            "SELECT DISTINCT 77 cid"
        );
        assert_eq!(
            rw("SELECT IF(CONNECTION_ID() > 0, 'y', 'n') FROM t WHERE a = CONNECTION_ID()"),
            "SELECT IF(77 > 0, 'y', 'n') AS `IF(CONNECTION_ID() > 0, 'y', 'n')` FROM t WHERE a = 77"
        );
        assert_eq!(
            rw("INSERT INTO t VALUES (CONNECTION_ID())"),
            "INSERT INTO t VALUES (77)"
        );
        assert_eq!(
            rw("SELECT a FROM t ORDER BY CONNECTION_ID()"),
            "SELECT a FROM t ORDER BY 77"
        );
        assert_eq!(rw("SELECT CONNECTION_ID() AS cid"), "SELECT 77 AS cid");
        assert_eq!(
            rw("SELECT x IN (1, CONNECTION_ID(), 2)"),
            "SELECT x IN (1, 77, 2) AS `x IN (1, CONNECTION_ID(), 2)`"
        );
        assert_eq!(
            rw("SELECT (SELECT CONNECTION_ID())"),
            "SELECT (SELECT 77 AS `CONNECTION_ID()`)"
        );
        assert_eq!(
            rw("SELECT * FROM (SELECT 1 + CONNECTION_ID()) d"),
            "SELECT * FROM (SELECT 1 + 77 AS `1 + CONNECTION_ID()`) d"
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
