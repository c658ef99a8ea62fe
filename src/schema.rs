//! Schema facts read from a MySQL/MariaDB backend's information_schema, for
//! the offline tools (verify, backfill). Engine-specific by nature.

use crate::config::Config;
use mysql_async::prelude::*;
use mysql_async::Conn;

/// Backquoted identifier.
pub fn quote(ident: &str) -> String {
    format!("`{}`", ident.replace('`', "``"))
}

/// The tables to work on: `wanted` (each must exist), or every base table
/// the rules mirror (Tandem's own `_tandem*` tables excluded).
pub async fn select_tables(
    p: &mut Conn,
    cfg: &Config,
    wanted: Option<&[String]>,
) -> Result<Result<Vec<String>, Vec<String>>, mysql_async::Error> {
    let all: Vec<String> = p
        .query(
            "SELECT TABLE_NAME FROM information_schema.TABLES
             WHERE TABLE_SCHEMA = DATABASE() AND TABLE_TYPE = 'BASE TABLE' ORDER BY TABLE_NAME",
        )
        .await?;
    Ok(match wanted {
        Some(w) => {
            let unknown: Vec<String> = w.iter().filter(|t| !all.contains(t)).cloned().collect();
            if unknown.is_empty() {
                Ok(w.to_vec())
            } else {
                Err(unknown)
            }
        }
        None => Ok(all
            .into_iter()
            .filter(|t| !t.starts_with("_tandem") && cfg.rules.mirrored(t))
            .collect()),
    })
}

/// Primary-key columns in key order (empty: no primary key).
pub async fn primary_key(c: &mut Conn, table: &str) -> Result<Vec<String>, mysql_async::Error> {
    c.exec(
        "SELECT COLUMN_NAME FROM information_schema.KEY_COLUMN_USAGE
         WHERE TABLE_SCHEMA = DATABASE() AND TABLE_NAME = ? AND CONSTRAINT_NAME = 'PRIMARY'
         ORDER BY ORDINAL_POSITION",
        (table,),
    )
    .await
}

/// All columns in table order.
pub async fn columns(c: &mut Conn, table: &str) -> Result<Vec<String>, mysql_async::Error> {
    c.exec(
        "SELECT COLUMN_NAME FROM information_schema.COLUMNS
         WHERE TABLE_SCHEMA = DATABASE() AND TABLE_NAME = ? ORDER BY ORDINAL_POSITION",
        (table,),
    )
    .await
}

/// The message for a table without a primary key.
pub fn no_primary_key(table: &str) -> String {
    format!("table {table} has no primary key; verify and backfill need one to walk it in chunks")
}
