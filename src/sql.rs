//! SQL text Tandem writes itself: quoted identifiers and string literals.
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

/// Quoted string literal (backslashes and quotes escaped; invalid UTF-8
/// replaced).
pub fn sql_literal(v: &[u8]) -> String {
    let s = String::from_utf8_lossy(v);
    format!("'{}'", s.replace('\\', "\\\\").replace('\'', "''"))
}
