//! SQL text Tandem writes itself (quoted identifiers and string literals)
//! and the value of a string literal it reads.
//! Pure and dependency-free, so the router, the mirror and the offline tools
//! can all use it without depending on each other.

/// Backquoted identifier.
pub fn quote(ident: &str) -> String {
    format!("`{}`", ident.replace('`', "``"))
}

/// `db`.`table`, or `table` alone without a database, quoted.
pub fn qualified(db: Option<&str>, table: &str) -> String {
    match db {
        Some(db) => format!("{}.{}", quote(db), quote(table)),
        None => quote(table),
    }
}

/// The value of a quoted string literal ('…' or "…") as the server reads
/// it: doubled quotes undone and, unless `no_backslash_escapes`, backslash
/// escapes (`\0 \b \n \r \t \Z`; `\%` and `\_` stay as written, for
/// LIKE; any other character stands for itself). None for anything else:
/// an introducer, a hex literal, an unterminated or unpaired quote.
pub fn string_value(lit: &[u8], no_backslash_escapes: bool) -> Option<Vec<u8>> {
    let (&q, rest) = lit.split_first()?;
    if q != b'\'' && q != b'"' {
        return None;
    }
    let body = rest.strip_suffix(&[q])?;
    let mut out = Vec::with_capacity(body.len());
    let mut i = 0;
    while i < body.len() {
        match body[i] {
            b'\\' if !no_backslash_escapes => {
                let c = *body.get(i + 1)?;
                match c {
                    b'0' => out.push(0),
                    b'b' => out.push(0x08),
                    b'n' => out.push(b'\n'),
                    b'r' => out.push(b'\r'),
                    b't' => out.push(b'\t'),
                    b'Z' => out.push(0x1a),
                    b'%' | b'_' => out.extend_from_slice(&[b'\\', c]),
                    c => out.push(c),
                }
                i += 2;
            }
            c if c == q => {
                if body.get(i + 1) != Some(&q) {
                    return None;
                }
                out.push(q);
                i += 2;
            }
            c => {
                out.push(c);
                i += 1;
            }
        }
    }
    Some(out)
}

/// Quoted string literal (backslashes and quotes escaped; invalid UTF-8
/// replaced).
pub fn sql_literal(v: &[u8]) -> String {
    let s = String::from_utf8_lossy(v);
    format!("'{}'", s.replace('\\', "\\\\").replace('\'', "''"))
}

#[cfg(test)]
mod tests {
    use super::string_value;

    #[test]
    fn string_literals_read_as_the_server_reads_them() {
        let v = |s: &str, nbe| string_value(s.as_bytes(), nbe);
        assert_eq!(v("'it''s'", false), Some(b"it's".to_vec()));
        assert_eq!(v(r#""a\"b""#, false), Some(b"a\"b".to_vec()));
        assert_eq!(v(r"'a\'b\\c\n\%'", false), Some(b"a'b\\c\n\\%".to_vec()));
        assert_eq!(v(r"'a\b'", true), Some(b"a\\b".to_vec()));
        assert_eq!(v("'open", false), None);
        assert_eq!(v("X'61'", false), None);
        assert_eq!(v("'a'b'", false), None);
    }
}
