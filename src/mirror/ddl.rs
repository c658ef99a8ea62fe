//! How a DDL's outcome is known when its answer is not: the definitions of
//! the tables it names, taken before it ran, against the same definitions
//! afterwards.
//!
//! A DDL writes no marker row (it commits implicitly, so it cannot), and
//! its answer can be lost (the backend connection cut, Tandem killed) or be
//! an error after a partial effect (`DROP TABLE a, b` drops `a` and fails
//! on `b`). The capture path therefore fingerprints the named tables'
//! `SHOW CREATE TABLE` before the DDL, under the table locks that order it
//! against the writes around it, and journals the fingerprint in the
//! intent's token. Whoever settles the intent without an answer (the
//! in-doubt resolver, start-up recovery) fingerprints the primary again:
//! a different definition means the DDL took effect there and is applied;
//! the same one means it did not and is skipped.

use mysql_async::prelude::Queryable;
use mysql_async::Conn;

/// The high bit marks a DDL intent's token; marker tokens never reach it.
pub const DDL_FLAG: u64 = 1 << 63;

/// The token of a DDL intent whose before-image was not taken (triggers,
/// routines, earlier builds): settled as applied when its answer is lost.
pub const UNCHECKED_DDL_TOKEN: u64 = u64::MAX;

/// Whether `token` belongs to a DDL intent.
pub fn is_ddl_token(token: u64) -> bool {
    token & DDL_FLAG != 0
}

/// The token of a DDL intent that carries the fingerprint of the named
/// tables' definitions before it ran.
pub fn checked_token(fingerprint: u64) -> u64 {
    let t = DDL_FLAG | (fingerprint & !DDL_FLAG);
    if t == UNCHECKED_DDL_TOKEN {
        t - 1
    } else {
        t
    }
}

/// A table's definition as `SHOW CREATE TABLE` gives it (None: no such
/// table), without the `AUTO_INCREMENT=` counter, which moves with every
/// insert and says nothing about the DDL.
pub fn normalize(def: Option<&[u8]>) -> Option<Vec<u8>> {
    let def = def?;
    const KEY: &[u8] = b" AUTO_INCREMENT=";
    let mut out = Vec::with_capacity(def.len());
    let mut at = 0;
    while let Some(i) = memchr::memmem::find(&def[at..], KEY) {
        let start = at + i;
        let digits = def[start + KEY.len()..]
            .iter()
            .take_while(|b| b.is_ascii_digit())
            .count();
        out.extend_from_slice(&def[at..start]);
        at = start + KEY.len() + digits;
        if digits == 0 {
            out.extend_from_slice(KEY);
        }
    }
    out.extend_from_slice(&def[at..]);
    Some(out)
}

/// One number for the definitions of the named tables, in order.
pub fn fingerprint(defs: &[Option<Vec<u8>>]) -> u64 {
    let mut h = xxhash_rust::xxh3::Xxh3::new();
    for d in defs {
        match d {
            Some(d) => {
                h.update(&[1]);
                h.update(&(d.len() as u64).to_le_bytes());
                h.update(d);
            }
            None => h.update(&[0]),
        }
    }
    h.digest()
}

/// A table named as the router names it (`t` or `db.t`, unquoted), quoted.
pub fn quoted_name(table: &str) -> String {
    table
        .split('.')
        .map(crate::sql::quote)
        .collect::<Vec<_>>()
        .join(".")
}

/// `SHOW CREATE TABLE` for a table named as the router names it.
pub fn show_create(table: &str) -> String {
    format!("SHOW CREATE TABLE {}", quoted_name(table))
}

/// `LOCK TABLES a WRITE, b WRITE`: what orders a DDL against the writes
/// around it (see `frontend::session::capture`).
pub fn lock_tables(tables: &[&String]) -> String {
    let list = tables
        .iter()
        .map(|t| format!("{} WRITE", quoted_name(t)))
        .collect::<Vec<_>>()
        .join(", ");
    format!("LOCK TABLES {list}")
}

/// The server's answer to `SHOW CREATE TABLE` means the table is not there
/// (as a table: a view answers with its own definition, which counts).
pub fn is_absent(code: u16) -> bool {
    matches!(code, 1146 | 1049 | 1046 | 1102 | 1103)
}

/// The normalized definitions of `tables` as `conn` (in database `db`)
/// sees them now.
pub async fn definitions(
    conn: &mut Conn,
    db: Option<&str>,
    tables: &[String],
) -> Result<Vec<Option<Vec<u8>>>, mysql_async::Error> {
    if let Some(db) = db {
        conn.query_drop(format!("USE {}", crate::sql::quote(db)))
            .await?;
    }
    let mut out = Vec::with_capacity(tables.len());
    for t in tables {
        let r: Result<Option<(Vec<u8>, Vec<u8>)>, _> = conn.query_first(show_create(t)).await;
        match r {
            Ok(row) => out.push(normalize(row.as_ref().map(|(_, d)| d.as_slice()))),
            Err(mysql_async::Error::Server(e)) if is_absent(e.code) => out.push(None),
            Err(e) => return Err(e),
        }
    }
    Ok(out)
}

/// Whether the DDL with this token took effect on the primary, judged from
/// the tables' definitions now; None when the token carries no
/// before-image (taken as applied, as before such tokens existed).
///
/// The DDL may still be running on a connection that was cut (a server
/// finishes an ALTER before it notices its client is gone): the tables
/// that exist are locked first, which waits for it.
pub async fn took_effect(
    conn: &mut Conn,
    token: u64,
    db: Option<&str>,
    tables: &[String],
) -> Result<Option<bool>, mysql_async::Error> {
    if token == UNCHECKED_DDL_TOKEN || !is_ddl_token(token) {
        return Ok(None);
    }
    let first = definitions(conn, db, tables).await?;
    let present: Vec<&String> = tables
        .iter()
        .zip(&first)
        .filter(|(_, d)| d.is_some())
        .map(|(t, _)| t)
        .collect();
    let locked = !present.is_empty()
        && conn
            .query_drop("SET SESSION lock_wait_timeout = 600")
            .await
            .is_ok()
        && match conn.query_drop(lock_tables(&present)).await {
            Ok(()) => true,
            // Dropped meanwhile, or not lockable: the definitions below
            // are read without the lock.
            Err(mysql_async::Error::Server(e)) => {
                tracing::warn!(code = e.code, error = %e.message, "cannot lock the tables of an in-doubt DDL; reading their definitions without the lock");
                false
            }
            Err(e) => return Err(e),
        };
    let now = definitions(conn, db, tables).await;
    if locked {
        conn.query_drop("UNLOCK TABLES").await?;
    }
    Ok(Some(checked_token(fingerprint(&now?)) != token))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_auto_increment_counter_is_not_part_of_a_definition() {
        let a = b"CREATE TABLE `t` (\n  `id` int NOT NULL AUTO_INCREMENT\n) ENGINE=InnoDB AUTO_INCREMENT=17 DEFAULT CHARSET=latin1";
        let b = b"CREATE TABLE `t` (\n  `id` int NOT NULL AUTO_INCREMENT\n) ENGINE=InnoDB AUTO_INCREMENT=4012 DEFAULT CHARSET=latin1";
        assert_eq!(normalize(Some(a)), normalize(Some(b)));
        let n = normalize(Some(a)).unwrap();
        assert!(memchr::memmem::find(&n, b"NOT NULL AUTO_INCREMENT\n").is_some());
        assert!(memchr::memmem::find(&n, b"=17").is_none());
        assert_eq!(normalize(None), None);
    }

    #[test]
    fn tokens_are_flagged_and_differ_by_definition() {
        let absent = checked_token(fingerprint(&[None]));
        let present = checked_token(fingerprint(&[Some(b"CREATE TABLE x".to_vec())]));
        assert!(is_ddl_token(absent) && is_ddl_token(present));
        assert_ne!(absent, present);
        assert_ne!(absent, UNCHECKED_DDL_TOKEN);
        assert!(!is_ddl_token(12345));
        assert_eq!(show_create("shop.my`t"), "SHOW CREATE TABLE `shop`.`my``t`");
    }
}
